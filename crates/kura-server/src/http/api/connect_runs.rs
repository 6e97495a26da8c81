//! `/api/v1/teams/{id}/flows/{flow}/runs`, `/api/v1/teams/{id}/runs…` and
//! `/api/v1/teams/{id}/flow-credentials…`: starting manual runs, run history
//! (filters by flow, status and time; each run with its steps), cancelling,
//! re-running from the start or from the failed step, and the credentials
//! flows authenticate with (secrets are taken once and never answered).

use axum::Json;
use axum::extract::{Path, Query, State};
use axum::response::{IntoResponse, Response};
use http::StatusCode;
use kura_connect::ConnectError;
use kura_connect::credentials::{CredentialKind, CredentialSettings};
use kura_identity::Action;
use kura_store::connect::{FlowCredentialRecord, RunFilter, RunRecord, RunStatus, StepRecord};
use kura_types::{FlowCredentialId, FlowId, RunId};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use zeroize::Zeroizing;

use super::auth::Auth;
use super::body::ApiJson;
use super::connect::{allow, audit, rfc3339};
use super::error::ApiError;
use super::parse_id;
use crate::http::AppState;

fn json_of(text: &str) -> Value {
    serde_json::from_str(text).unwrap_or(Value::Null)
}

/// A run as the API shows it.
pub(crate) fn run_out(r: &RunRecord) -> Value {
    serde_json::json!({
        "id": r.id.to_string(),
        "flow": r.flow.to_string(),
        "version": r.version,
        "status": r.status.as_str(),
        "trigger": r.trigger,
        "input": json_of(&r.input),
        "next_step": r.next_step,
        "steps_done": r.steps_done,
        "error": r.error,
        "takeovers": r.claims,
        "created_at": rfc3339(r.created_at),
        "started_at": r.started_at.map(rfc3339),
        "finished_at": r.finished_at.map(rfc3339),
    })
}

fn step_out(s: &StepRecord) -> Value {
    serde_json::json!({
        "seq": s.seq,
        "step": s.step,
        "status": s.status,
        "input": json_of(&s.input),
        "output": s.output.as_deref().map(json_of),
        "error": s.error,
        "attempts": s.attempts,
        "idempotency_key": s.idempotency_key,
        "started_at": rfc3339(s.started_at),
        "finished_at": s.finished_at.map(rfc3339),
        "duration_ms": s.finished_at.map(|f| (f - s.started_at).as_seconds_f64() * 1000.0),
    })
}

/// `POST …/flows/{flow}/runs`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StartRun {
    #[serde(default)]
    input: Value,
}

/// `POST /api/v1/teams/{id}/flows/{flow}/runs`: queues a manual run of the
/// newest version with an input document (the flow need not be enabled:
/// enabling governs triggers).
pub async fn start(
    State(state): State<AppState>,
    auth: Auth,
    Path((team, flow)): Path<(String, String)>,
    ApiJson(req): ApiJson<StartRun>,
) -> Result<Response, ApiError> {
    let team = allow(&state, &auth, Action::FlowsManage, &team).await?;
    let flow: FlowId = parse_id("flow", &flow)?;
    let record = state
        .connect
        .store()
        .flow(team, flow)
        .await
        .map_err(|e| ApiError::Connect(e.into()))?
        .ok_or(ApiError::Connect(ConnectError::NotFound("flow")))?;
    let run = state
        .connect
        .start_run(&record, "manual", req.input)
        .await
        .map_err(ApiError::Connect)?;
    Ok((StatusCode::ACCEPTED, Json(run_out(&run))).into_response())
}

/// Filters of `GET /api/v1/teams/{id}/runs`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RunQuery {
    flow: Option<String>,
    status: Option<String>,
    since: Option<String>,
    until: Option<String>,
    limit: Option<usize>,
}

fn time_filter(field: &str, v: Option<String>) -> Result<Option<time::OffsetDateTime>, ApiError> {
    v.map(|s| {
        time::OffsetDateTime::parse(&s, &time::format_description::well_known::Rfc3339).map_err(
            |_| ApiError::BadFilter {
                field: field.into(),
                message: "an RFC 3339 time".into(),
            },
        )
    })
    .transpose()
}

/// `GET /api/v1/teams/{id}/runs`: newest first.
pub async fn list(
    State(state): State<AppState>,
    auth: Auth,
    Path(team): Path<String>,
    Query(q): Query<RunQuery>,
) -> Result<Response, ApiError> {
    let team = allow(&state, &auth, Action::FlowsRead, &team).await?;
    let flow = q
        .flow
        .map(|f| {
            f.parse::<FlowId>().map_err(|_| ApiError::BadFilter {
                field: "flow".into(),
                message: "not a flow id".into(),
            })
        })
        .transpose()?;
    let status = q
        .status
        .map(|s| {
            RunStatus::parse(&s).ok_or_else(|| ApiError::BadFilter {
                field: "status".into(),
                message: "queued, running, waiting, succeeded, failed, cancelled or dead_letter"
                    .into(),
            })
        })
        .transpose()?;
    let runs = state
        .connect
        .store()
        .runs(
            team,
            RunFilter {
                flow,
                status,
                since: time_filter("since", q.since)?,
                until: time_filter("until", q.until)?,
                limit: q.limit.unwrap_or(0),
            },
        )
        .await
        .map_err(|e| ApiError::Connect(e.into()))?;
    Ok(
        Json(serde_json::json!({ "runs": runs.iter().map(run_out).collect::<Vec<_>>() }))
            .into_response(),
    )
}

async fn team_run(
    state: &AppState,
    team: kura_types::TeamId,
    run: &str,
) -> Result<RunRecord, ApiError> {
    let run: RunId = parse_id("run", run)?;
    state
        .connect
        .store()
        .run(run)
        .await
        .map_err(|e| ApiError::Connect(e.into()))?
        .filter(|r| r.team == team)
        .ok_or(ApiError::Connect(ConnectError::NotFound("run")))
}

/// `GET /api/v1/teams/{id}/runs/{run}`: the run with every step record.
pub async fn get(
    State(state): State<AppState>,
    auth: Auth,
    Path((team, run)): Path<(String, String)>,
) -> Result<Response, ApiError> {
    let team = allow(&state, &auth, Action::FlowsRead, &team).await?;
    let run = team_run(&state, team, &run).await?;
    let steps = state
        .connect
        .store()
        .steps(run.id)
        .await
        .map_err(|e| ApiError::Connect(e.into()))?;
    let mut out = run_out(&run);
    out["context"] = json_of(&run.context);
    out["response"] = run.response.as_deref().map(json_of).unwrap_or(Value::Null);
    out["steps"] = steps.iter().map(step_out).collect::<Vec<_>>().into();
    Ok(Json(out).into_response())
}

/// `POST /api/v1/teams/{id}/runs/{run}/cancel`.
pub async fn cancel(
    State(state): State<AppState>,
    auth: Auth,
    Path((team, run)): Path<(String, String)>,
) -> Result<Response, ApiError> {
    let team = allow(&state, &auth, Action::FlowsManage, &team).await?;
    let run = team_run(&state, team, &run).await?;
    let decorate = |e| auth.ctx.decorate(e);
    let cancelled = state
        .connect
        .cancel_run(team, run.id, run.flow, &audit(&auth, &decorate))
        .await
        .map_err(ApiError::Connect)?;
    if !cancelled {
        return Err(ApiError::Conflict(format!(
            "the run is already {}",
            run.status.as_str()
        )));
    }
    let run = team_run(&state, team, &run.id.to_string()).await?;
    Ok(Json(run_out(&run)).into_response())
}

/// `POST …/runs/{run}/rerun`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Rerun {
    /// `start` or `failed_step`.
    from: String,
}

/// `POST /api/v1/teams/{id}/runs/{run}/rerun`: a new run from the start
/// or from the failed step.
pub async fn rerun(
    State(state): State<AppState>,
    auth: Auth,
    Path((team, run)): Path<(String, String)>,
    ApiJson(req): ApiJson<Rerun>,
) -> Result<Response, ApiError> {
    let team = allow(&state, &auth, Action::FlowsManage, &team).await?;
    let old = team_run(&state, team, &run).await?;
    let from_failed = match req.from.as_str() {
        "start" => false,
        "failed_step" => true,
        _ => return Err(ApiError::invalid("from", "`start` or `failed_step`")),
    };
    let run = state
        .connect
        .rerun(team, old.id, from_failed)
        .await
        .map_err(ApiError::Connect)?;
    Ok((StatusCode::ACCEPTED, Json(run_out(&run))).into_response())
}

#[derive(Debug, Serialize)]
struct CredentialOut {
    id: String,
    name: String,
    kind: String,
    settings: Value,
    created_by: String,
    created_at: String,
}

fn credential_out(c: &FlowCredentialRecord) -> CredentialOut {
    CredentialOut {
        id: c.id.to_string(),
        name: c.name.clone(),
        kind: c.kind.clone(),
        settings: json_of(&c.settings),
        created_by: c.created_by.clone(),
        created_at: rfc3339(c.created_at),
    }
}

/// `POST /api/v1/teams/{id}/flow-credentials`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewCredential {
    name: String,
    kind: String,
    secret: Zeroizing<String>,
    username: Option<String>,
    header: Option<String>,
    host: Option<String>,
    port: Option<u16>,
    security: Option<kura_connect::steps::email::SmtpSecurity>,
    from: Option<String>,
    client_id: Option<String>,
    auth_url: Option<String>,
    token_url: Option<String>,
    #[serde(default)]
    scopes: Vec<String>,
}

impl std::fmt::Debug for NewCredential {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NewCredential")
            .field("name", &self.name)
            .field("kind", &self.kind)
            .field("secret", &"[REDACTED]")
            .finish_non_exhaustive()
    }
}

/// `POST /api/v1/teams/{id}/flow-credentials`: seals the secret under the
/// team's data key; the answer never contains it.
pub async fn create_credential(
    State(state): State<AppState>,
    auth: Auth,
    Path(team): Path<String>,
    ApiJson(req): ApiJson<NewCredential>,
) -> Result<Response, ApiError> {
    let team = allow(&state, &auth, Action::FlowCredentialsManage, &team).await?;
    let kind = CredentialKind::parse(&req.kind)
        .ok_or_else(|| ApiError::invalid("kind", "bearer, basic, header, smtp or oauth2"))?;
    let decorate = |e| auth.ctx.decorate(e);
    let record = state
        .connect
        .create_credential(
            team,
            &audit(&auth, &decorate),
            &req.name,
            kind,
            CredentialSettings {
                username: req.username,
                header: req.header,
                host: req.host,
                port: req.port,
                security: req.security,
                from: req.from,
                client_id: req.client_id,
                auth_url: req.auth_url,
                token_url: req.token_url,
                scopes: req.scopes,
            },
            req.secret,
        )
        .await
        .map_err(ApiError::Connect)?;
    Ok((StatusCode::CREATED, Json(credential_out(&record))).into_response())
}

/// `GET /api/v1/teams/{id}/flow-credentials`: names and kinds only.
pub async fn list_credentials(
    State(state): State<AppState>,
    auth: Auth,
    Path(team): Path<String>,
) -> Result<Response, ApiError> {
    let team = allow(&state, &auth, Action::FlowsRead, &team).await?;
    let all = state
        .connect
        .store()
        .credentials(team)
        .await
        .map_err(|e| ApiError::Connect(e.into()))?;
    Ok(Json(serde_json::json!({
        "credentials": all.iter().map(credential_out).collect::<Vec<_>>(),
    }))
    .into_response())
}

/// `DELETE /api/v1/teams/{id}/flow-credentials/{credential}`.
pub async fn delete_credential(
    State(state): State<AppState>,
    auth: Auth,
    Path((team, credential)): Path<(String, String)>,
) -> Result<Response, ApiError> {
    let team = allow(&state, &auth, Action::FlowCredentialsManage, &team).await?;
    let id: FlowCredentialId = parse_id("credential", &credential)?;
    let decorate = |e| auth.ctx.decorate(e);
    state
        .connect
        .delete_credential(team, id, &audit(&auth, &decorate))
        .await
        .map_err(ApiError::Connect)?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// `POST /api/v1/teams/{id}/flow-credentials/{credential}/authorize`:
/// starts an OAuth 2.0 authorisation of an `oauth2` credential; answers the
/// provider URL to open (with state and PKCE), valid for ten minutes.
pub async fn authorize_credential(
    State(state): State<AppState>,
    auth: Auth,
    Path((team, credential)): Path<(String, String)>,
) -> Result<Response, ApiError> {
    let team = allow(&state, &auth, Action::FlowCredentialsManage, &team).await?;
    let id: FlowCredentialId = parse_id("credential", &credential)?;
    let decorate = |e| auth.ctx.decorate(e);
    let url = state
        .connect
        .oauth_authorize(team, id, &audit(&auth, &decorate))
        .await
        .map_err(ApiError::Connect)?;
    Ok(Json(serde_json::json!({ "authorize_url": url })).into_response())
}
