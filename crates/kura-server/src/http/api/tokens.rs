//! Personal and service API tokens.

use std::collections::BTreeSet;

use axum::Json;
use axum::extract::{Path, State};
use axum::response::{IntoResponse, Response};
use http::StatusCode;
use kura_identity::{ApiTokenKind, NewApiToken, TeamRole};
use kura_types::{ApiTokenId, TeamId};
use secrecy::ExposeSecret as _;
use serde::{Deserialize, Serialize};
use time::{Duration, OffsetDateTime};

use super::auth::{Auth, finish};
use super::body::ApiJson;
use super::error::ApiError;
use super::parse_id;
use crate::http::AppState;

/// `POST /api/v1/tokens`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewToken {
    name: String,
    kind: ApiTokenKind,
    scopes: BTreeSet<String>,
    /// Lifetime in days.
    expires_in_days: u32,
    /// For a service token: its team.
    team_id: Option<String>,
    /// For a service token: its role in the team.
    role: Option<TeamRole>,
}

#[derive(Debug, Serialize)]
struct Issued {
    id: String,
    #[serde(with = "time::serde::rfc3339")]
    expires_at: OffsetDateTime,
    /// The token, shown once.
    token: String,
}

/// Creates a token; its secret is shown once.
pub async fn create(
    State(state): State<AppState>,
    auth: Auth,
    ApiJson(req): ApiJson<NewToken>,
) -> Result<Response, ApiError> {
    let service = match (req.team_id, req.role) {
        (Some(team), Some(role)) => Some((parse_id::<TeamId>("team_id", &team)?, role)),
        (None, None) => None,
        (Some(_), None) => return Err(ApiError::invalid("role", "required with team_id")),
        (None, Some(_)) => return Err(ApiError::invalid("team_id", "required with role")),
    };
    let new = NewApiToken {
        name: req.name,
        kind: req.kind,
        scopes: req.scopes,
        lifetime: Duration::days(i64::from(req.expires_in_days)),
        service,
    };
    let audited = state
        .identity
        .at(auth.ctx.facts())
        .create_api_token(&auth.principal, new)
        .await;
    let t = finish(&state, &auth.ctx, audited).await?;
    let body = Issued {
        id: t.id.to_string(),
        expires_at: t.expires_at,
        token: t.token.expose_secret().to_owned(),
    };
    Ok((StatusCode::CREATED, Json(body)).into_response())
}

#[derive(Debug, Serialize)]
pub struct TokenOut {
    id: String,
    name: String,
    kind: ApiTokenKind,
    team_id: Option<String>,
    scopes: BTreeSet<String>,
    #[serde(with = "time::serde::rfc3339")]
    created_at: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339")]
    expires_at: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339::option")]
    last_used_at: Option<OffsetDateTime>,
    #[serde(with = "time::serde::rfc3339::option")]
    revoked_at: Option<OffsetDateTime>,
}

/// My tokens (never their secrets).
pub async fn list(
    State(state): State<AppState>,
    auth: Auth,
) -> Result<Json<Vec<TokenOut>>, ApiError> {
    let audited = state
        .identity
        .at(auth.ctx.facts())
        .api_tokens(&auth.principal)
        .await;
    let list = finish(&state, &auth.ctx, audited).await?;
    Ok(Json(
        list.into_iter()
            .map(|t| TokenOut {
                id: t.id.to_string(),
                name: t.name,
                kind: t.kind,
                team_id: t.team.map(|t| t.to_string()),
                scopes: t.scopes,
                created_at: t.created_at,
                expires_at: t.expires_at,
                last_used_at: t.last_used_at,
                revoked_at: t.revoked_at,
            })
            .collect(),
    ))
}

/// Revokes one of my tokens.
pub async fn revoke(
    State(state): State<AppState>,
    auth: Auth,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    let id: ApiTokenId = parse_id("id", &id)?;
    let audited = state
        .identity
        .at(auth.ctx.facts())
        .revoke_api_token(&auth.principal, id)
        .await;
    finish(&state, &auth.ctx, audited).await?;
    Ok(StatusCode::NO_CONTENT)
}
