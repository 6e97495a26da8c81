//! `/api/v1/teams/{id}/flows…`: a team's Kura Connect flows — create
//! (also the import of an exported document, JSON or YAML), list, read any
//! version, save a new version, enable, disable, export, delete, metrics —
//! and the flow document's JSON Schema.
//!
//! Every handler asks the policy first (`FlowsRead`/`FlowsManage`; another
//! team's flows are "not found") and calls `kura_connect::Connect` with an
//! [`Audit`] of the caller: each change's `connect.*` security event is
//! committed in the change's own transaction (no event, no change).

use axum::Json;
use axum::extract::{Path, Query, State};
use axum::response::{IntoResponse, Response};
use http::StatusCode;
use kura_connect::audit::Audit;
use kura_connect::document::FlowDocument;
use kura_connect::validate::{Format, parse_text};
use kura_connect::{SaveError, SavedFlow};
use kura_identity::{Action, Resource};
use kura_store::connect::FlowRecord;
use kura_types::{Actor, FlowId, SecurityEvent, TeamId};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::auth::{Auth, finish};
use super::body::ApiJson;
use super::error::ApiError;
use super::parse_id;
use crate::http::AppState;

/// Asks the policy for `action` on the team named in the path; another
/// team's flows answer "not found" further on, as they are not in this one.
pub(crate) async fn allow(
    state: &AppState,
    auth: &Auth,
    action: Action,
    team: &str,
) -> Result<TeamId, ApiError> {
    let team: TeamId = parse_id("id", team)?;
    let audited = state
        .identity
        .check(&auth.principal, action, &Resource::Team(team));
    finish(state, &auth.ctx, audited).await?;
    Ok(team)
}

/// The caller as Connect records its changes' events (committed with the
/// change), completed by `decorate` (the request's facts).
pub(crate) fn audit<'a>(
    auth: &Auth,
    decorate: &'a (dyn Fn(SecurityEvent) -> SecurityEvent + Sync),
) -> Audit<'a> {
    Audit {
        actor: Actor::Account {
            id: auth.principal.account.to_string(),
        },
        decorate,
    }
}

/// A time as RFC 3339 text.
pub(crate) fn rfc3339(t: time::OffsetDateTime) -> String {
    t.format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default()
}

#[derive(Debug, Serialize)]
struct FlowOut {
    id: String,
    name: String,
    enabled: bool,
    version: u32,
    webhook_url: String,
    created_at: String,
    updated_at: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    document: Option<FlowDocument>,
}

fn flow_out(f: &FlowRecord, document: Option<FlowDocument>) -> FlowOut {
    FlowOut {
        id: f.id.to_string(),
        name: f.name.clone(),
        enabled: f.enabled,
        version: f.version,
        webhook_url: format!("/hooks/{}", f.webhook_token),
        created_at: rfc3339(f.created_at),
        updated_at: rfc3339(f.updated_at),
        document,
    }
}

/// A flow document in a request: JSON (`document`) or YAML text (`yaml`).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DocumentIn {
    document: Option<Value>,
    yaml: Option<String>,
}

fn document_value(req: DocumentIn) -> Result<Value, ApiError> {
    match (req.document, req.yaml) {
        (Some(v), None) => Ok(v),
        (None, Some(text)) => parse_text(&text, Format::Yaml).map_err(ApiError::Document),
        _ => Err(ApiError::invalid(
            "document",
            "send the flow as `document` (JSON) or as `yaml` (text), one of them",
        )),
    }
}

fn save_err(e: SaveError) -> ApiError {
    match e {
        SaveError::Invalid(errors) => ApiError::Document(errors),
        SaveError::Other(e) => ApiError::Connect(e),
    }
}

#[derive(Debug, Serialize)]
struct CreatedOut {
    flow: FlowOut,
    /// The HMAC-SHA256 key for `X-Kura-Signature`, shown only here.
    webhook_secret: String,
}

/// `POST /api/v1/teams/{id}/flows`: creates a flow (disabled) from a
/// document; also imports an exported one.
pub async fn create(
    State(state): State<AppState>,
    auth: Auth,
    Path(team): Path<String>,
    ApiJson(req): ApiJson<DocumentIn>,
) -> Result<Response, ApiError> {
    let team = allow(&state, &auth, Action::FlowsManage, &team).await?;
    let value = document_value(req)?;
    let decorate = |e| auth.ctx.decorate(e);
    let SavedFlow { flow, document } = state
        .connect
        .create_flow(team, &audit(&auth, &decorate), value)
        .await
        .map_err(save_err)?;
    let out = CreatedOut {
        webhook_secret: hex::encode(&flow.webhook_secret),
        flow: flow_out(&flow, Some(document)),
    };
    Ok((StatusCode::CREATED, Json(out)).into_response())
}

#[derive(Debug, Serialize)]
struct ListOut {
    flows: Vec<FlowOut>,
}

/// `GET /api/v1/teams/{id}/flows`.
pub async fn list(
    State(state): State<AppState>,
    auth: Auth,
    Path(team): Path<String>,
) -> Result<Response, ApiError> {
    let team = allow(&state, &auth, Action::FlowsRead, &team).await?;
    let flows = state
        .connect
        .store()
        .flows(team)
        .await
        .map_err(|e| ApiError::Connect(e.into()))?;
    Ok(Json(ListOut {
        flows: flows.iter().map(|f| flow_out(f, None)).collect(),
    })
    .into_response())
}

/// Query of `GET …/flows/{flow}` and `…/export`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VersionQuery {
    version: Option<u32>,
    format: Option<String>,
}

/// `GET /api/v1/teams/{id}/flows/{flow}`: the flow with its newest (or the
/// asked) version's document.
pub async fn get(
    State(state): State<AppState>,
    auth: Auth,
    Path((team, flow)): Path<(String, String)>,
    Query(q): Query<VersionQuery>,
) -> Result<Response, ApiError> {
    let team = allow(&state, &auth, Action::FlowsRead, &team).await?;
    let flow: FlowId = parse_id("flow", &flow)?;
    let (record, version, doc) = state
        .connect
        .flow(team, flow, q.version)
        .await
        .map_err(ApiError::Connect)?;
    let mut out =
        serde_json::to_value(flow_out(&record, Some(doc))).map_err(|_| ApiError::Internal)?;
    out["document_version"] = version.version.into();
    out["saved_by"] = version.created_by.into();
    out["saved_at"] = rfc3339(version.created_at).into();
    Ok(Json(out).into_response())
}

/// `PUT /api/v1/teams/{id}/flows/{flow}`: saves a new version.
pub async fn update(
    State(state): State<AppState>,
    auth: Auth,
    Path((team, flow)): Path<(String, String)>,
    ApiJson(req): ApiJson<DocumentIn>,
) -> Result<Response, ApiError> {
    let team = allow(&state, &auth, Action::FlowsManage, &team).await?;
    let flow: FlowId = parse_id("flow", &flow)?;
    let value = document_value(req)?;
    let decorate = |e| auth.ctx.decorate(e);
    let SavedFlow { flow, document } = state
        .connect
        .update_flow(team, flow, &audit(&auth, &decorate), value)
        .await
        .map_err(save_err)?;
    Ok(Json(flow_out(&flow, Some(document))).into_response())
}

/// `GET /api/v1/teams/{id}/flows/{flow}/versions`.
pub async fn versions(
    State(state): State<AppState>,
    auth: Auth,
    Path((team, flow)): Path<(String, String)>,
) -> Result<Response, ApiError> {
    let team = allow(&state, &auth, Action::FlowsRead, &team).await?;
    let flow: FlowId = parse_id("flow", &flow)?;
    let versions = state
        .connect
        .store()
        .versions(team, flow)
        .await
        .map_err(|e| ApiError::Connect(e.into()))?;
    if versions.is_empty() {
        return Err(ApiError::Connect(kura_connect::ConnectError::NotFound(
            "flow",
        )));
    }
    let out: Vec<Value> = versions
        .iter()
        .map(|v| {
            serde_json::json!({
                "version": v.version, "saved_by": v.created_by, "saved_at": rfc3339(v.created_at),
            })
        })
        .collect();
    Ok(Json(serde_json::json!({ "versions": out })).into_response())
}

async fn set_enabled(
    state: AppState,
    auth: Auth,
    team: String,
    flow: String,
    enabled: bool,
) -> Result<Response, ApiError> {
    let team = allow(&state, &auth, Action::FlowsManage, &team).await?;
    let flow: FlowId = parse_id("flow", &flow)?;
    let decorate = |e| auth.ctx.decorate(e);
    let record = state
        .connect
        .set_enabled(team, flow, enabled, &audit(&auth, &decorate))
        .await
        .map_err(ApiError::Connect)?;
    Ok(Json(flow_out(&record, None)).into_response())
}

/// `POST /api/v1/teams/{id}/flows/{flow}/enable`.
pub async fn enable(
    State(state): State<AppState>,
    auth: Auth,
    Path((team, flow)): Path<(String, String)>,
) -> Result<Response, ApiError> {
    set_enabled(state, auth, team, flow, true).await
}

/// `POST /api/v1/teams/{id}/flows/{flow}/disable`.
pub async fn disable(
    State(state): State<AppState>,
    auth: Auth,
    Path((team, flow)): Path<(String, String)>,
) -> Result<Response, ApiError> {
    set_enabled(state, auth, team, flow, false).await
}

/// `DELETE /api/v1/teams/{id}/flows/{flow}`: the flow, its versions and runs.
pub async fn delete(
    State(state): State<AppState>,
    auth: Auth,
    Path((team, flow)): Path<(String, String)>,
) -> Result<Response, ApiError> {
    let team = allow(&state, &auth, Action::FlowsManage, &team).await?;
    let flow: FlowId = parse_id("flow", &flow)?;
    let decorate = |e| auth.ctx.decorate(e);
    state
        .connect
        .delete_flow(team, flow, &audit(&auth, &decorate))
        .await
        .map_err(ApiError::Connect)?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// `GET /api/v1/teams/{id}/flows/{flow}/export`: the document, as JSON or
/// (`format=yaml`) YAML, ready for `POST …/flows`.
pub async fn export(
    State(state): State<AppState>,
    auth: Auth,
    Path((team, flow)): Path<(String, String)>,
    Query(q): Query<VersionQuery>,
) -> Result<Response, ApiError> {
    let team = allow(&state, &auth, Action::FlowsRead, &team).await?;
    let flow: FlowId = parse_id("flow", &flow)?;
    let (_, _, doc) = state
        .connect
        .flow(team, flow, q.version)
        .await
        .map_err(ApiError::Connect)?;
    match q.format.as_deref() {
        None | Some("json") => Ok(Json(doc).into_response()),
        Some("yaml") => {
            let text = kura_connect::validate::to_yaml(&doc).map_err(|_| ApiError::Internal)?;
            Ok(([(http::header::CONTENT_TYPE, "application/yaml")], text).into_response())
        }
        Some(_) => Err(ApiError::BadFilter {
            field: "format".into(),
            message: "json or yaml".into(),
        }),
    }
}

/// `GET /api/v1/teams/{id}/flows/{flow}/metrics`.
pub async fn metrics(
    State(state): State<AppState>,
    auth: Auth,
    Path((team, flow)): Path<(String, String)>,
) -> Result<Response, ApiError> {
    let team = allow(&state, &auth, Action::FlowsRead, &team).await?;
    let flow: FlowId = parse_id("flow", &flow)?;
    state
        .connect
        .store()
        .flow(team, flow)
        .await
        .map_err(|e| ApiError::Connect(e.into()))?
        .ok_or(ApiError::Connect(kura_connect::ConnectError::NotFound(
            "flow",
        )))?;
    let m = state
        .connect
        .store()
        .metrics(team, flow)
        .await
        .map_err(|e| ApiError::Connect(e.into()))?;
    Ok(Json(serde_json::json!({
        "runs": m.runs, "succeeded": m.succeeded, "failed": m.failed,
        "mean_ms": m.mean_ms, "max_ms": m.max_ms,
    }))
    .into_response())
}

/// `GET /api/v1/connect/flow-schema.json`: the flow document's JSON Schema.
pub async fn schema() -> Response {
    Json(kura_connect::document::schema()).into_response()
}
