//! `/api/v1/teams/{id}/hosts/{host}/firewall|waf`: one host's allow and
//! deny lists and its WAF relaxations, for the owning team's admins
//! (`team.firewall.*`) and network admins.
//!
//! A host of another team (or no host) is "not found", whoever asks. The
//! settings apply to every request naming the host: the admin API's
//! `…/hosts/{id}/…` and the Data API's `/hosts/{name}/fmi/…` (the edge maps
//! names to hosts and reloads the map when a host is created, renamed or
//! deleted). Validation, versioning and the `edge.*.changed` events are
//! those of the team scope (see `edge`).

use axum::Json;
use axum::extract::{Path, State};
use kura_identity::{Action, Resource};
use kura_types::{HostId, TeamId};
use serde_json::{Value, json};

use super::auth::Auth;
use super::body::ApiJson;
use super::edge::{PolicyOut, Versioned, current, lockout, require, store};
use super::error::ApiError;
use super::parse_id;
use crate::edge::firewall::{FirewallPolicy, FirewallRules};
use crate::edge::waf::WafPolicy;
use crate::edge::{Kind, Scope};
use crate::http::AppState;

/// Parses the path, asks the policy, and checks the host is the team's.
async fn host_scope(
    state: &AppState,
    auth: &Auth,
    team: &str,
    host: &str,
    action: Action,
) -> Result<(TeamId, Scope), ApiError> {
    let team: TeamId = parse_id("id", team)?;
    let host: HostId = parse_id("host", host)?;
    require(state, auth, action, Resource::Team(team)).await?;
    state.apps.host(team, host).await.map_err(ApiError::Apps)?;
    Ok((team, Scope::Host(host)))
}

/// `GET /api/v1/teams/{id}/hosts/{host}/firewall`.
pub async fn host_firewall(
    State(state): State<AppState>,
    auth: Auth,
    Path((team, host)): Path<(String, String)>,
) -> Result<Json<PolicyOut<FirewallPolicy>>, ApiError> {
    let (_, scope) = host_scope(&state, &auth, &team, &host, Action::FirewallRead).await?;
    Ok(Json(current(&state, scope, Kind::Firewall)?))
}

/// `PUT /api/v1/teams/{id}/hosts/{host}/firewall`.
pub async fn set_host_firewall(
    State(state): State<AppState>,
    auth: Auth,
    Path((team, host)): Path<(String, String)>,
    ApiJson(body): ApiJson<Versioned<FirewallPolicy>>,
) -> Result<Json<Value>, ApiError> {
    let (team, scope) = host_scope(&state, &auth, &team, &host, Action::FirewallManage).await?;
    let rules = FirewallRules::parse(&body.policy)
        .map_err(|e| ApiError::invalid("firewall", e.to_string()))?;
    lockout(&auth.ctx, &rules)?;
    let policy = rules.to_policy();
    let version = store(
        &state,
        (&auth.principal, &auth.ctx),
        scope,
        Kind::Firewall,
        &policy,
        body.version,
        Some(team),
    )
    .await?;
    Ok(Json(
        json!({"scope": scope.to_string(), "version": version, "allow": policy.allow, "deny": policy.deny}),
    ))
}

/// `GET /api/v1/teams/{id}/hosts/{host}/waf`.
pub async fn host_waf(
    State(state): State<AppState>,
    auth: Auth,
    Path((team, host)): Path<(String, String)>,
) -> Result<Json<PolicyOut<WafPolicy>>, ApiError> {
    let (_, scope) = host_scope(&state, &auth, &team, &host, Action::FirewallRead).await?;
    Ok(Json(current(&state, scope, Kind::Waf)?))
}

/// `PUT /api/v1/teams/{id}/hosts/{host}/waf`: turn content rules off (or to
/// detect-only) for one host's requests; platform rules stay as they are.
pub async fn set_host_waf(
    State(state): State<AppState>,
    auth: Auth,
    Path((team, host)): Path<(String, String)>,
    ApiJson(body): ApiJson<Versioned<WafPolicy>>,
) -> Result<Json<Value>, ApiError> {
    let (team, scope) = host_scope(&state, &auth, &team, &host, Action::FirewallManage).await?;
    body.policy
        .modes(true)
        .map_err(|e| ApiError::invalid("rules", e.to_string()))?;
    let version = store(
        &state,
        (&auth.principal, &auth.ctx),
        scope,
        Kind::Waf,
        &body.policy,
        body.version,
        Some(team),
    )
    .await?;
    Ok(Json(
        json!({"scope": scope.to_string(), "version": version, "rules": body.policy.rules}),
    ))
}
