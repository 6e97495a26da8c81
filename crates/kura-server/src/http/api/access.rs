//! Time-boxed operator access to a team: the team's owner lets an operator
//! in with one role for a while, lists who was let in, and ends it early.

use axum::Json;
use axum::extract::{Path, State};
use http::StatusCode;
use kura_identity::{OperatorAccess, TeamRole};
use kura_types::{AccountId, TeamId};
use serde::{Deserialize, Serialize};
use time::{Duration, OffsetDateTime};

use super::auth::{Auth, finish};
use super::body::ApiJson;
use super::error::ApiError;
use super::parse_id;
use crate::http::AppState;

/// One grant.
#[derive(Debug, Serialize)]
pub struct AccessOut {
    id: String,
    team_id: String,
    operator_id: String,
    role: TeamRole,
    reason: String,
    granted_by: String,
    #[serde(with = "time::serde::rfc3339")]
    granted_at: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339")]
    expires_at: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339::option")]
    revoked_at: Option<OffsetDateTime>,
    active: bool,
}

impl From<OperatorAccess> for AccessOut {
    fn from(a: OperatorAccess) -> Self {
        Self {
            id: a.id,
            team_id: a.team.to_string(),
            operator_id: a.operator.to_string(),
            role: a.role,
            reason: a.reason,
            granted_by: a.granted_by.to_string(),
            granted_at: a.granted_at,
            expires_at: a.expires_at,
            revoked_at: a.revoked_at,
            active: a.active,
        }
    }
}

/// `POST /api/v1/teams/{id}/operator-access`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Grant {
    operator_id: String,
    role: TeamRole,
    /// How long, in minutes.
    minutes: u32,
    reason: String,
}

/// Lets an operator act in the team for a while (team owners).
pub async fn grant(
    State(state): State<AppState>,
    auth: Auth,
    Path(id): Path<String>,
    ApiJson(req): ApiJson<Grant>,
) -> Result<(StatusCode, Json<AccessOut>), ApiError> {
    let team: TeamId = parse_id("id", &id)?;
    let operator: AccountId = parse_id("operator_id", &req.operator_id)?;
    let audited = state
        .identity
        .at(auth.ctx.facts())
        .grant_operator_access(
            &auth.principal,
            team,
            operator,
            req.role,
            Duration::minutes(i64::from(req.minutes)),
            &req.reason,
        )
        .await;
    let a = finish(&state, &auth.ctx, audited).await?;
    Ok((StatusCode::CREATED, Json(a.into())))
}

/// `GET /api/v1/teams/{id}/operator-access`: every grant, ended ones too.
pub async fn list(
    State(state): State<AppState>,
    auth: Auth,
    Path(id): Path<String>,
) -> Result<Json<Vec<AccessOut>>, ApiError> {
    let team: TeamId = parse_id("id", &id)?;
    let audited = state
        .identity
        .at(auth.ctx.facts())
        .operator_access(&auth.principal, team)
        .await;
    let all = finish(&state, &auth.ctx, audited).await?;
    Ok(Json(all.into_iter().map(AccessOut::from).collect()))
}

/// `DELETE /api/v1/teams/{id}/operator-access/{grant}`: ends a grant early.
pub async fn revoke(
    State(state): State<AppState>,
    auth: Auth,
    Path((id, grant)): Path<(String, String)>,
) -> Result<StatusCode, ApiError> {
    let team: TeamId = parse_id("id", &id)?;
    let audited = state
        .identity
        .at(auth.ctx.facts())
        .revoke_operator_access(&auth.principal, team, &grant)
        .await;
    finish(&state, &auth.ctx, audited).await?;
    Ok(StatusCode::NO_CONTENT)
}
