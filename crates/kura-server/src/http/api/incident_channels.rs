//! `/api/v1/incident-channels`: the communication plan's notification
//! channels, for security responders (the same policy action as incidents).
//! Channels from the configuration file are listed but cannot be removed
//! here; responders add and remove their own. Adding a webhook channel
//! answers its signing secret once. Each change is an `incident.channel.*`
//! security event committed with it; a refused change writes neither.

use axum::Json;
use axum::extract::{Path, State};
use axum::response::{IntoResponse, Response};
use http::StatusCode;
use kura_events::incident::{ChannelInfo, NewWebhookChannel, Severity, SeverityParseError};
use serde::{Deserialize, Serialize};

use super::auth::Auth;
use super::body::ApiJson;
use super::error::ApiError;
use super::incidents::{actor, responder, rfc3339};
use crate::http::AppState;

#[derive(Debug, Serialize)]
struct ChannelOut {
    name: String,
    kind: String,
    target: String,
    min_severity: &'static str,
    origin: &'static str,
    created_by: Option<String>,
    created_at: Option<String>,
}

impl From<ChannelInfo> for ChannelOut {
    fn from(c: ChannelInfo) -> Self {
        Self {
            name: c.name,
            kind: c.kind,
            target: c.target,
            min_severity: c.min_severity.as_str(),
            origin: c.origin.as_str(),
            created_by: c.created_by,
            created_at: c.created_at.map(rfc3339),
        }
    }
}

#[derive(Debug, Serialize)]
struct ListOut {
    channels: Vec<ChannelOut>,
}

/// `GET /api/v1/incident-channels`.
pub async fn list(State(state): State<AppState>, auth: Auth) -> Result<Response, ApiError> {
    let service = responder(&state, &auth).await?;
    let channels = service.list_channels().await.map_err(ApiError::Incident)?;
    Ok(Json(ListOut {
        channels: channels.into_iter().map(ChannelOut::from).collect(),
    })
    .into_response())
}

/// `POST /api/v1/incident-channels`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AddChannel {
    name: String,
    kind: String,
    url: String,
    min_severity: String,
    timeout_secs: Option<u64>,
}

#[derive(Debug, Serialize)]
struct AddedOut {
    channel: ChannelOut,
    /// Shown only in this answer.
    secret: String,
}

/// `POST /api/v1/incident-channels`: adds a webhook channel and answers its
/// signing secret once.
pub async fn add(
    State(state): State<AppState>,
    auth: Auth,
    ApiJson(req): ApiJson<AddChannel>,
) -> Result<Response, ApiError> {
    let service = responder(&state, &auth).await?;
    if req.kind != "webhook" {
        return Err(ApiError::invalid(
            "kind",
            "the only channel kind is `webhook`",
        ));
    }
    let min_severity: Severity = req
        .min_severity
        .parse()
        .map_err(|e: SeverityParseError| ApiError::invalid("min_severity", e.to_string()))?;
    let added = service
        .add_webhook_channel(
            &actor(&auth.principal),
            NewWebhookChannel {
                name: req.name,
                url: req.url,
                min_severity,
                timeout_secs: req.timeout_secs,
            },
        )
        .await
        .map_err(ApiError::Incident)?;
    let out = AddedOut {
        channel: added.info.into(),
        secret: added.secret.as_str().to_owned(),
    };
    Ok((StatusCode::CREATED, Json(out)).into_response())
}

/// `DELETE /api/v1/incident-channels/{name}`.
pub async fn remove(
    State(state): State<AppState>,
    auth: Auth,
    Path(name): Path<String>,
) -> Result<Response, ApiError> {
    let service = responder(&state, &auth).await?;
    service
        .remove_channel(&actor(&auth.principal), &name)
        .await
        .map_err(ApiError::Incident)?;
    Ok(StatusCode::NO_CONTENT.into_response())
}
