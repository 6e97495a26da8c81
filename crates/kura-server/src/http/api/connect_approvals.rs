//! `/api/v1/teams/{id}/approvals…`: the approvals Kura Connect runs wait
//! for — list, read, and decide.
//!
//! Reading needs `FlowsRead`. Deciding needs no flow privilege but two
//! facts: the caller is a member of the team (a role in it, directly or
//! through a group) and one of the step's named approvers (by the account's
//! e-mail address). A refused decision is recorded as a
//! `connect.approval.refused` event and changes nothing; an accepted one is
//! committed together with its `connect.approval.approved`/`rejected`
//! event.

use axum::Json;
use axum::extract::{Path, Query, State};
use axum::response::{IntoResponse, Response};
use kura_connect::steps::approval::{ApprovalError, Decide};
use kura_identity::Action;
use kura_store::connect_approvals::ApprovalRecord;
use kura_types::{Actor, ApprovalId, Outcome, SecurityEvent, TeamId};
use serde::Deserialize;
use serde_json::{Value, json};

use super::auth::{Auth, Ctx, record_event};
use super::body::ApiJson;
use super::connect::{allow, rfc3339};
use super::error::ApiError;
use super::parse_id;
use crate::http::AppState;

/// An approval as the API and the link page show it.
pub(crate) fn approval_out(a: &ApprovalRecord) -> Value {
    json!({
        "id": a.id.to_string(),
        "flow": a.flow.to_string(),
        "run": a.run.to_string(),
        "step": a.step,
        "approvers": a.approvers,
        "message": a.message,
        "status": a.status.as_str(),
        "decided_by": a.decided_by,
        "decided_via": a.decided_via,
        "comment": a.comment,
        "created_at": rfc3339(a.created_at),
        "expires_at": rfc3339(a.expires_at),
        "decided_at": a.decided_at.map(rfc3339),
    })
}

/// Query of `GET …/approvals`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListQuery {
    status: Option<String>,
}

/// `GET /api/v1/teams/{id}/approvals`: newest first; `status=pending` for
/// the open ones.
pub async fn list(
    State(state): State<AppState>,
    auth: Auth,
    Path(team): Path<String>,
    Query(q): Query<ListQuery>,
) -> Result<Response, ApiError> {
    let team = allow(&state, &auth, Action::FlowsRead, &team).await?;
    let pending_only = match q.status.as_deref() {
        None => false,
        Some("pending") => true,
        Some(_) => {
            return Err(ApiError::BadFilter {
                field: "status".into(),
                message: "only `pending` filters".into(),
            });
        }
    };
    let all = state
        .connect
        .store()
        .approvals(team, pending_only)
        .await
        .map_err(|e| ApiError::Connect(e.into()))?;
    Ok(
        Json(json!({ "approvals": all.iter().map(approval_out).collect::<Vec<_>>() }))
            .into_response(),
    )
}

/// `GET /api/v1/teams/{id}/approvals/{approval}`.
pub async fn get(
    State(state): State<AppState>,
    auth: Auth,
    Path((team, approval)): Path<(String, String)>,
) -> Result<Response, ApiError> {
    let team = allow(&state, &auth, Action::FlowsRead, &team).await?;
    let id: ApprovalId = parse_id("approval", &approval)?;
    let a = state
        .connect
        .approval(team, id)
        .await
        .map_err(ApiError::Approval)?;
    Ok(Json(approval_out(&a)).into_response())
}

/// The body of a decision.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DecisionIn {
    /// `approve` or `reject`.
    pub decision: String,
    /// A comment for the record.
    #[serde(default)]
    pub comment: Option<String>,
}

/// Parses `approve`/`reject`.
pub(crate) fn approves(d: &DecisionIn) -> Result<bool, ApiError> {
    match d.decision.as_str() {
        "approve" => Ok(true),
        "reject" => Ok(false),
        _ => Err(ApiError::invalid("decision", "`approve` or `reject`")),
    }
}

/// Records a refused decision (who, which approval, why).
pub(crate) async fn refused(
    state: &AppState,
    ctx: &Ctx,
    team: Option<TeamId>,
    actor: Actor,
    target: String,
    reason: &str,
) {
    let Ok(action) = kura_types::Action::parse("connect.approval.refused") else {
        return;
    };
    let mut e = SecurityEvent::new(state.clock.now(), actor, action, Outcome::Denied)
        .with_target(target)
        .with_detail("reason", reason.to_owned());
    if let Some(t) = team {
        e = e.with_team(t);
    }
    if let Err(err) = record_event(state, ctx, e).await {
        tracing::error!(error = ?err, "cannot record a refused approval decision");
    }
}

/// `POST /api/v1/teams/{id}/approvals/{approval}/decision`: approve or
/// reject as the signed-in approver.
pub async fn decide(
    State(state): State<AppState>,
    auth: Auth,
    Path((team, approval)): Path<(String, String)>,
    ApiJson(req): ApiJson<DecisionIn>,
) -> Result<Response, ApiError> {
    let team: TeamId = parse_id("id", &team)?;
    let id: ApprovalId = parse_id("approval", &approval)?;
    let approve = approves(&req)?;
    let actor = Actor::Account {
        id: auth.principal.account.to_string(),
    };
    let target = format!("approval:{id}");
    // Only members of the team decide; to anyone else its approvals do
    // not exist.
    if !auth.principal.team_roles.contains_key(&team) {
        refused(
            &state,
            &auth.ctx,
            Some(team),
            actor,
            target,
            "not a member of the team",
        )
        .await;
        return Err(ApiError::Approval(ApprovalError::NotFound));
    }
    // Another team's approval is not found.
    state
        .connect
        .approval(team, id)
        .await
        .map_err(ApiError::Approval)?;
    let account = state
        .identity_store
        .account(auth.principal.account)
        .await
        .map_err(|e| ApiError::Connect(e.into()))?
        .ok_or(ApiError::Internal)?;
    let ctx = auth.ctx.clone();
    let decorate = move |e: SecurityEvent| ctx.decorate(e);
    let result = state
        .connect
        .decide(Decide {
            approval: id,
            approve,
            actor: actor.clone(),
            email: account.email,
            comment: req.comment,
            token: None,
            decorate: &decorate,
        })
        .await;
    match result {
        Ok(a) => Ok(Json(approval_out(&a)).into_response()),
        Err(e) => {
            if !matches!(e, ApprovalError::Connect(_)) {
                refused(&state, &auth.ctx, Some(team), actor, target, &e.to_string()).await;
            }
            Err(ApiError::Approval(e))
        }
    }
}
