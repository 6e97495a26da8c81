//! `/api/v1/edge/…` and `/api/v1/teams/{id}/firewall|waf`: the edge's
//! policies. Platform policies (firewall, rate limits, WAF modes) are for
//! operators with the network admin role (`platform.edge.manage`, an
//! MFA-verified session); a team's firewall lists and WAF relaxations are
//! for its admins (`team.firewall.*`) and network admins.
//!
//! A change is validated whole (CIDRs, contradictions, budgets, rule ids),
//! refused when it would lock the requester out, and compare-and-swap on
//! the policy's `version` when the body names one. It is stored together
//! with its `edge.*.changed` security event in one transaction, then
//! applies at once, without a restart.

use axum::Json;
use axum::extract::{Path, State};
use kura_identity::{Action, Principal, Resource};
use kura_store::StoreError;
use kura_types::{Actor, Outcome, SecurityEvent, TeamId};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use super::auth::{Auth, Ctx, finish};
use super::body::ApiJson;
use super::error::ApiError;
use super::parse_id;
use crate::edge::firewall::{FirewallPolicy, FirewallRules};
use crate::edge::ratelimit::RateLimitPolicy;
use crate::edge::waf::{RuleId, WafPolicy};
use crate::edge::{Change, EdgeError, Kind, Scope};
use crate::http::AppState;

/// A policy as shown: its content and version (0: never set).
#[derive(Debug, Serialize)]
pub struct PolicyOut<T: Serialize> {
    pub(crate) scope: String,
    pub(crate) version: u64,
    pub(crate) updated_at: Option<String>,
    pub(crate) updated_by: Option<String>,
    #[serde(flatten)]
    pub(crate) policy: T,
}

/// One WAF rule, for the catalogue.
#[derive(Debug, Serialize)]
struct RuleOut {
    id: u16,
    name: &'static str,
    tenant_tunable: bool,
}

/// `GET /api/v1/edge` answer.
#[derive(Debug, Serialize)]
pub struct EdgeOut {
    firewall: PolicyOut<FirewallPolicy>,
    rate_limits: PolicyOut<RateLimitPolicy>,
    waf: PolicyOut<WafPolicy>,
    waf_rules: Vec<RuleOut>,
}

/// A body that replaces a policy, optionally naming the version it was
/// decided on.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Versioned<T> {
    /// The version read; a newer stored one refuses the change (409).
    #[serde(default)]
    pub(super) version: Option<u64>,
    #[serde(flatten)]
    pub(super) policy: T,
}

pub(crate) fn current<T: Serialize + serde::de::DeserializeOwned + Default>(
    state: &AppState,
    scope: Scope,
    kind: Kind,
) -> Result<PolicyOut<T>, ApiError> {
    let snapshot = state.edge.snapshot();
    let record = snapshot.record(scope, kind);
    let policy = match record {
        Some(r) => serde_json::from_str(&r.body).map_err(|e| {
            tracing::error!(error = %e, %scope, kind = kind.as_str(), "stored edge policy does not parse");
            ApiError::Internal
        })?,
        None => T::default(),
    };
    Ok(PolicyOut {
        scope: scope.to_string(),
        version: record.map_or(0, |r| r.version),
        updated_at: record.map(|r| {
            r.updated_at
                .format(&time::format_description::well_known::Rfc3339)
                .unwrap_or_default()
        }),
        updated_by: record.map(|r| r.updated_by.clone()),
        policy,
    })
}

/// Applies a validated change with its event.
pub(super) async fn store<T: Serialize>(
    state: &AppState,
    (principal, ctx): (&Principal, &Ctx),
    scope: Scope,
    kind: Kind,
    policy: &T,
    expected: Option<u64>,
    team: Option<TeamId>,
) -> Result<u64, ApiError> {
    let snapshot = state.edge.snapshot();
    let stored = snapshot.record(scope, kind).map_or(0, |r| r.version);
    if let Some(v) = expected
        && v != stored
    {
        return Err(ApiError::Conflict(format!(
            "the {} policy of {scope} is at version {stored}, not {v}; read it again and retry",
            kind.as_str()
        )));
    }
    let before: Value = snapshot
        .record(scope, kind)
        .and_then(|r| serde_json::from_str(&r.body).ok())
        .unwrap_or(Value::Null);
    let body = serde_json::to_string(policy).map_err(|_| ApiError::Internal)?;
    let action = kura_types::Action::parse(&format!("edge.{}.changed", kind.as_str()))
        .map_err(|_| ApiError::EventNotRecorded)?;
    let actor = Actor::Account {
        id: principal.account.to_string(),
    };
    let mut event = SecurityEvent::new(state.clock.now(), actor.clone(), action, Outcome::Success)
        .with_target(scope.to_string())
        .with_detail("scope", scope.to_string())
        .with_detail("before", before)
        .with_detail("after", serde_json::to_value(policy).unwrap_or(Value::Null))
        .with_detail("version", stored + 1);
    if let Some(team) = team {
        event = event.with_team(team);
    }
    let record = kura_events::prepare(ctx.decorate(event)).map_err(|e| {
        tracing::error!(error = %e, "edge change event not prepared");
        ApiError::EventNotRecorded
    })?;
    state
        .edge
        .write(Change {
            scope,
            kind,
            body: Some(body),
            expected_version: stored,
            by: actor.key(),
            at: state.clock.now(),
            events: vec![record],
        })
        .await
        .map_err(|e| match e {
            EdgeError::Store(StoreError::Conflict(m)) => ApiError::Conflict(m),
            other => {
                tracing::error!(error = %other, "edge policy not stored");
                ApiError::Internal
            }
        })
}

/// Refuses firewall lists that would shut out the requester: an operator
/// who cannot reach the platform cannot undo the change.
pub(super) fn lockout(ctx: &Ctx, rules: &FirewallRules) -> Result<(), ApiError> {
    if let Some(ip) = ctx.source
        && !rules.permits(Some(ip))
    {
        return Err(ApiError::Conflict(format!(
            "this change would block your own address {ip} and lock you out; allow it (or a range covering it) first"
        )));
    }
    Ok(())
}

pub(super) async fn require(
    state: &AppState,
    auth: &Auth,
    action: Action,
    resource: Resource,
) -> Result<(), ApiError> {
    let audited = state.identity.check(&auth.principal, action, &resource);
    finish(state, &auth.ctx, audited).await
}

async fn team_exists(state: &AppState, team: TeamId) -> Result<(), ApiError> {
    match state.identity_store.team(team).await {
        Ok(Some(_)) => Ok(()),
        Ok(None) => Err(ApiError::Identity(kura_identity::IdentityError::NotFound(
            "team",
        ))),
        Err(e) => {
            tracing::error!(error = %e, "team lookup failed");
            Err(ApiError::Internal)
        }
    }
}

/// `GET /api/v1/edge`.
pub async fn show(State(state): State<AppState>, auth: Auth) -> Result<Json<EdgeOut>, ApiError> {
    require(&state, &auth, Action::EdgeManage, Resource::Platform).await?;
    let mut rate_limits: PolicyOut<RateLimitPolicy> =
        current(&state, Scope::Platform, Kind::RateLimits)?;
    if rate_limits.version == 0 {
        rate_limits.policy = RateLimitPolicy::default();
    }
    Ok(Json(EdgeOut {
        firewall: current(&state, Scope::Platform, Kind::Firewall)?,
        rate_limits,
        waf: current(&state, Scope::Platform, Kind::Waf)?,
        waf_rules: RuleId::ALL
            .iter()
            .map(|r| RuleOut {
                id: r.id(),
                name: r.name(),
                tenant_tunable: r.tenant_tunable(),
            })
            .collect(),
    }))
}

/// Replaces the platform firewall lists: the policy check
/// (`platform.edge.manage`), validation (an invalid list answers
/// [`ApiError::Invalid`] for `firewall`), the lock-out refusal and the
/// compare-and-swap store with its event. The admin API and the console
/// both change the platform firewall through this one function.
pub(crate) async fn replace_platform_firewall(
    state: &AppState,
    principal: &Principal,
    ctx: &Ctx,
    wanted: &FirewallPolicy,
    expected: Option<u64>,
) -> Result<(u64, FirewallPolicy), ApiError> {
    let audited = state
        .identity
        .check(principal, Action::EdgeManage, &Resource::Platform);
    finish(state, ctx, audited).await?;
    let rules =
        FirewallRules::parse(wanted).map_err(|e| ApiError::invalid("firewall", e.to_string()))?;
    lockout(ctx, &rules)?;
    let policy = rules.to_policy();
    let version = store(
        state,
        (principal, ctx),
        Scope::Platform,
        Kind::Firewall,
        &policy,
        expected,
        None,
    )
    .await?;
    Ok((version, policy))
}

/// `PUT /api/v1/edge/firewall`.
pub async fn set_platform_firewall(
    State(state): State<AppState>,
    auth: Auth,
    ApiJson(body): ApiJson<Versioned<FirewallPolicy>>,
) -> Result<Json<Value>, ApiError> {
    let (version, policy) = replace_platform_firewall(
        &state,
        &auth.principal,
        &auth.ctx,
        &body.policy,
        body.version,
    )
    .await?;
    Ok(Json(
        json!({"scope": "platform", "version": version, "allow": policy.allow, "deny": policy.deny}),
    ))
}

/// `PUT /api/v1/edge/rate-limits`.
pub async fn set_rate_limits(
    State(state): State<AppState>,
    auth: Auth,
    ApiJson(body): ApiJson<Versioned<RateLimitPolicy>>,
) -> Result<Json<Value>, ApiError> {
    require(&state, &auth, Action::EdgeManage, Resource::Platform).await?;
    body.policy
        .validate()
        .map_err(|e| ApiError::invalid(format!("rate_limits.{}", e.field), e.message))?;
    let version = store(
        &state,
        (&auth.principal, &auth.ctx),
        Scope::Platform,
        Kind::RateLimits,
        &body.policy,
        body.version,
        None,
    )
    .await?;
    Ok(Json(
        json!({"scope": "platform", "version": version, "policy": body.policy}),
    ))
}

/// `PUT /api/v1/edge/waf`.
pub async fn set_platform_waf(
    State(state): State<AppState>,
    auth: Auth,
    ApiJson(body): ApiJson<Versioned<WafPolicy>>,
) -> Result<Json<Value>, ApiError> {
    require(&state, &auth, Action::EdgeManage, Resource::Platform).await?;
    body.policy
        .modes(false)
        .map_err(|e| ApiError::invalid("rules", e.to_string()))?;
    let version = store(
        &state,
        (&auth.principal, &auth.ctx),
        Scope::Platform,
        Kind::Waf,
        &body.policy,
        body.version,
        None,
    )
    .await?;
    Ok(Json(
        json!({"scope": "platform", "version": version, "rules": body.policy.rules}),
    ))
}

/// `GET /api/v1/teams/{id}/firewall`.
pub async fn team_firewall(
    State(state): State<AppState>,
    auth: Auth,
    Path(id): Path<String>,
) -> Result<Json<PolicyOut<FirewallPolicy>>, ApiError> {
    let team: TeamId = parse_id("id", &id)?;
    require(&state, &auth, Action::FirewallRead, Resource::Team(team)).await?;
    team_exists(&state, team).await?;
    Ok(Json(current(&state, Scope::Team(team), Kind::Firewall)?))
}

/// `PUT /api/v1/teams/{id}/firewall`.
pub async fn set_team_firewall(
    State(state): State<AppState>,
    auth: Auth,
    Path(id): Path<String>,
    ApiJson(body): ApiJson<Versioned<FirewallPolicy>>,
) -> Result<Json<Value>, ApiError> {
    let team: TeamId = parse_id("id", &id)?;
    require(&state, &auth, Action::FirewallManage, Resource::Team(team)).await?;
    team_exists(&state, team).await?;
    let rules = FirewallRules::parse(&body.policy)
        .map_err(|e| ApiError::invalid("firewall", e.to_string()))?;
    lockout(&auth.ctx, &rules)?;
    let policy = rules.to_policy();
    let scope = Scope::Team(team);
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

/// `GET /api/v1/teams/{id}/waf`.
pub async fn team_waf(
    State(state): State<AppState>,
    auth: Auth,
    Path(id): Path<String>,
) -> Result<Json<PolicyOut<WafPolicy>>, ApiError> {
    let team: TeamId = parse_id("id", &id)?;
    require(&state, &auth, Action::FirewallRead, Resource::Team(team)).await?;
    team_exists(&state, team).await?;
    Ok(Json(current(&state, Scope::Team(team), Kind::Waf)?))
}

/// `PUT /api/v1/teams/{id}/waf`: relax content rules for the team's
/// requests (false positives); platform rules cannot be touched here.
pub async fn set_team_waf(
    State(state): State<AppState>,
    auth: Auth,
    Path(id): Path<String>,
    ApiJson(body): ApiJson<Versioned<WafPolicy>>,
) -> Result<Json<Value>, ApiError> {
    let team: TeamId = parse_id("id", &id)?;
    require(&state, &auth, Action::FirewallManage, Resource::Team(team)).await?;
    team_exists(&state, team).await?;
    body.policy
        .modes(true)
        .map_err(|e| ApiError::invalid("rules", e.to_string()))?;
    let scope = Scope::Team(team);
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
