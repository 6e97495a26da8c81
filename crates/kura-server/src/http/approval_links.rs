//! `/hooks/approvals/{token}`: the one-time links an `approval` step mails
//! to its approvers.
//!
//! The token (256 random bits, hex) is the credential; only its SHA-256 is
//! stored. `GET` shows what is asked and changes nothing (mail scanners
//! open links); `POST {"decision": "approve"|"reject"}` decides once. The
//! approver the link was sent to must still be an active member of the
//! team. Unknown, used or expired links and non-members are refused,
//! counted as `connect.approval.refused` events, and change nothing.

use axum::Json;
use axum::extract::{Path, State};
use axum::response::{IntoResponse, Response};
use kura_connect::steps::approval::{ApprovalError, Decide};
use kura_store::connect_approvals::{ApprovalLinkRecord, ApprovalRecord};
use kura_types::{Actor, SecurityEvent};
use serde_json::json;

use crate::http::AppState;
use crate::http::api::auth::Ctx;
use crate::http::api::body::ApiJson;
use crate::http::api::connect_approvals::{DecisionIn, approval_out, approves, refused};
use crate::http::api::error::{ApiError, approval_problem};

fn refuse(e: &ApprovalError) -> Response {
    approval_problem(e).into_response()
}

/// The link and its approval, or the refusal (recorded).
async fn open(
    state: &AppState,
    ctx: &Ctx,
    token: &str,
) -> Result<(ApprovalLinkRecord, ApprovalRecord), Response> {
    match state.connect.approval_link(token).await {
        Ok(found) => Ok(found),
        Err(e) => {
            if matches!(e, ApprovalError::NotFound) {
                refused(
                    state,
                    ctx,
                    None,
                    Actor::Anonymous,
                    "approval-link".into(),
                    "unknown link",
                )
                .await;
            }
            Err(refuse(&e))
        }
    }
}

/// `GET /hooks/approvals/{token}`: what the approver is asked.
pub async fn show(State(state): State<AppState>, ctx: Ctx, Path(token): Path<String>) -> Response {
    let (link, a) = match open(&state, &ctx, &token).await {
        Ok(found) => found,
        Err(r) => return r,
    };
    Json(json!({
        "approval": approval_out(&a),
        "approver": link.approver,
        "link_used": link.used_at.is_some(),
        "decide": "POST this URL with {\"decision\": \"approve\"} or {\"decision\": \"reject\"}",
    }))
    .into_response()
}

/// `POST /hooks/approvals/{token}`: decides, once.
pub async fn decide(
    State(state): State<AppState>,
    ctx: Ctx,
    Path(token): Path<String>,
    ApiJson(req): ApiJson<DecisionIn>,
) -> Response {
    let approve = match approves(&req) {
        Ok(a) => a,
        Err(e) => return e.into_response(),
    };
    let (link, a) = match open(&state, &ctx, &token).await {
        Ok(found) => found,
        Err(r) => return r,
    };
    let target = format!("approval:{}", a.id);
    if link.used_at.is_some() {
        let e = ApprovalError::LinkUsed;
        refused(
            &state,
            &ctx,
            Some(a.team),
            Actor::Anonymous,
            target,
            "link used before",
        )
        .await;
        return refuse(&e);
    }
    // The person the link was mailed to must still be an active member.
    let account = match state.identity_store.account_by_email(&link.approver).await {
        Ok(found) => found.filter(|acc| acc.status == "active"),
        Err(e) => return ApiError::Connect(e.into()).into_response(),
    };
    let member = match &account {
        Some(acc) => match state.identity_store.grants_of(acc.id).await {
            Ok(grants) => grants.iter().any(|g| g.team == Some(a.team)),
            Err(e) => return ApiError::Connect(e.into()).into_response(),
        },
        None => false,
    };
    let Some(account) = account.filter(|_| member) else {
        refused(
            &state,
            &ctx,
            Some(a.team),
            Actor::Anonymous,
            target,
            "the link's approver is not an active member of the team",
        )
        .await;
        return refuse(&ApprovalError::NotApprover);
    };
    let actor = Actor::Account {
        id: account.id.to_string(),
    };
    let decorate_ctx = ctx.clone();
    let decorate = move |e: SecurityEvent| decorate_ctx.decorate(e);
    let result = state
        .connect
        .decide(Decide {
            approval: a.id,
            approve,
            actor: actor.clone(),
            email: link.approver.clone(),
            comment: req.comment,
            token: Some(&token),
            decorate: &decorate,
        })
        .await;
    match result {
        Ok(a) => Json(approval_out(&a)).into_response(),
        Err(e) => {
            if !matches!(e, ApprovalError::Connect(_)) {
                refused(&state, &ctx, Some(a.team), actor, target, &e.to_string()).await;
            }
            refuse(&e)
        }
    }
}
