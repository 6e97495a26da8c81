//! `/api/v1/teams/{team}/hosts…` and `/api/v1/teams/{team}/apps…`: a
//! team's hosts, hosted apps, app schema and app accounts.
//!
//! Every handler asks the policy function first (`HostsRead`/`HostsManage`
//! for hosts, `AppsRead`/`AppsOperate` for apps; another team's hosts and
//! apps are "not found"), then calls one `kura_apps::Apps` method, and
//! records a security event for each change before answering.

use axum::Json;
use axum::extract::{Path, Query, State};
use axum::response::{IntoResponse, Response};
use http::StatusCode;
use kura_apps::schema::Definition;
use kura_apps::{AppAccount, AppsError, NewAccountCredential};
use kura_identity::{Action, Resource};
use kura_store::{AppRecord, AppStatus, HostRecord};
use kura_types::{AccountId, Actor, AppId, HostId, Outcome, SecurityEvent, TeamId};
use secrecy::SecretString;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::auth::{Auth, finish, record_event};
use super::body::ApiJson;
use super::error::ApiError;
use super::parse_id;
use crate::http::AppState;

async fn allow(
    state: &AppState,
    auth: &Auth,
    action: Action,
    team: TeamId,
) -> Result<(), ApiError> {
    let audited = state
        .identity
        .check(&auth.principal, action, &Resource::Team(team));
    finish(state, &auth.ctx, audited).await
}

pub(super) async fn event(
    state: &AppState,
    auth: &Auth,
    team: TeamId,
    action: &str,
    target: String,
    details: &[(&str, String)],
) -> Result<(), ApiError> {
    let action = kura_types::Action::parse(action).map_err(|_| ApiError::EventNotRecorded)?;
    let mut e = SecurityEvent::new(
        state.clock.now(),
        Actor::Account {
            id: auth.principal.account.to_string(),
        },
        action,
        Outcome::Success,
    )
    .with_team(team)
    .with_target(target);
    for (k, v) in details {
        e = e.with_detail(*k, v.clone());
    }
    record_event(state, &auth.ctx, e).await
}

/// Tells the edge a host appeared, was renamed or went away, so requests
/// naming it meet its firewall and WAF settings at once. A failed reload
/// only delays that until the edge's periodic one.
async fn refresh_edge(state: &AppState) {
    if let Err(e) = state.edge.reload().await {
        tracing::error!(error = %e, "edge host names not reloaded");
    }
}

fn apps_err(e: AppsError) -> ApiError {
    ApiError::Apps(e)
}

fn rfc3339(t: time::OffsetDateTime) -> String {
    t.format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default()
}

#[derive(Debug, Serialize)]
struct HostOut {
    id: String,
    name: String,
    settings: Value,
    created_at: String,
    /// The Data API's base URL path for this host's apps.
    data_api: String,
}

impl From<HostRecord> for HostOut {
    fn from(h: HostRecord) -> Self {
        Self {
            data_api: format!("/hosts/{}/fmi/data/vLatest", h.name),
            id: h.id.to_string(),
            settings: serde_json::from_str(&h.settings).unwrap_or(Value::Null),
            name: h.name,
            created_at: rfc3339(h.created_at),
        }
    }
}

#[derive(Debug, Serialize)]
struct AppOut {
    id: String,
    host: String,
    name: String,
    status: &'static str,
    created_at: String,
}

impl From<AppRecord> for AppOut {
    fn from(a: AppRecord) -> Self {
        Self {
            id: a.id.to_string(),
            host: a.host.to_string(),
            name: a.name,
            status: status_name(a.status),
            created_at: rfc3339(a.created_at),
        }
    }
}

fn status_name(s: AppStatus) -> &'static str {
    match s {
        AppStatus::Open => "open",
        AppStatus::Closed => "closed",
    }
}

/// `POST /api/v1/teams/{team}/hosts`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewHost {
    name: String,
    #[serde(default)]
    settings: Option<Value>,
}

/// Creates a host.
pub async fn create_host(
    State(state): State<AppState>,
    auth: Auth,
    Path(team): Path<String>,
    ApiJson(req): ApiJson<NewHost>,
) -> Result<Response, ApiError> {
    let team: TeamId = parse_id("team", &team)?;
    allow(&state, &auth, Action::HostsManage, team).await?;
    let host = state
        .apps
        .create_host(
            team,
            req.name,
            req.settings.unwrap_or_else(|| serde_json::json!({})),
        )
        .await
        .map_err(apps_err)?;
    refresh_edge(&state).await;
    event(
        &state,
        &auth,
        team,
        "host.created",
        host.id.to_string(),
        &[("name", host.name.clone())],
    )
    .await?;
    Ok((StatusCode::CREATED, Json(HostOut::from(host))).into_response())
}

/// A team's hosts.
pub async fn list_hosts(
    State(state): State<AppState>,
    auth: Auth,
    Path(team): Path<String>,
) -> Result<Response, ApiError> {
    let team: TeamId = parse_id("team", &team)?;
    allow(&state, &auth, Action::HostsRead, team).await?;
    let hosts = state.apps.hosts(team).await.map_err(apps_err)?;
    Ok(Json(hosts.into_iter().map(HostOut::from).collect::<Vec<_>>()).into_response())
}

/// One host.
pub async fn get_host(
    State(state): State<AppState>,
    auth: Auth,
    Path((team, host)): Path<(String, String)>,
) -> Result<Response, ApiError> {
    let team: TeamId = parse_id("team", &team)?;
    let host: HostId = parse_id("host", &host)?;
    allow(&state, &auth, Action::HostsRead, team).await?;
    let host = state.apps.host(team, host).await.map_err(apps_err)?;
    Ok(Json(HostOut::from(host)).into_response())
}

/// `PATCH /api/v1/teams/{team}/hosts/{host}`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HostChange {
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    settings: Option<Value>,
}

/// Renames a host or replaces its settings.
pub async fn update_host(
    State(state): State<AppState>,
    auth: Auth,
    Path((team, host)): Path<(String, String)>,
    ApiJson(req): ApiJson<HostChange>,
) -> Result<Response, ApiError> {
    let team: TeamId = parse_id("team", &team)?;
    let host: HostId = parse_id("host", &host)?;
    allow(&state, &auth, Action::HostsManage, team).await?;
    let updated = state
        .apps
        .update_host(team, host, req.name, req.settings)
        .await
        .map_err(apps_err)?;
    refresh_edge(&state).await;
    event(
        &state,
        &auth,
        team,
        "host.updated",
        host.to_string(),
        &[("name", updated.name.clone())],
    )
    .await?;
    Ok(Json(HostOut::from(updated)).into_response())
}

/// Deletes a host that has no apps.
pub async fn delete_host(
    State(state): State<AppState>,
    auth: Auth,
    Path((team, host)): Path<(String, String)>,
) -> Result<Response, ApiError> {
    let team: TeamId = parse_id("team", &team)?;
    let host: HostId = parse_id("host", &host)?;
    allow(&state, &auth, Action::HostsManage, team).await?;
    state.apps.delete_host(team, host).await.map_err(apps_err)?;
    refresh_edge(&state).await;
    event(&state, &auth, team, "host.deleted", host.to_string(), &[]).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// `POST /api/v1/teams/{team}/hosts/{host}/apps`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewApp {
    name: String,
    /// A definition to apply right away.
    #[serde(default)]
    definition: Option<Definition>,
}

/// Creates an app (and applies its definition when one is given; if that
/// fails, the new app is deleted again).
pub async fn create_app(
    State(state): State<AppState>,
    auth: Auth,
    Path((team, host)): Path<(String, String)>,
    ApiJson(req): ApiJson<NewApp>,
) -> Result<Response, ApiError> {
    let team: TeamId = parse_id("team", &team)?;
    let host: HostId = parse_id("host", &host)?;
    allow(&state, &auth, Action::AppsOperate, team).await?;
    let app = state
        .apps
        .create_app(team, host, req.name)
        .await
        .map_err(apps_err)?;
    if let Some(def) = req.definition
        && let Err(e) = state.apps.apply(team, app.id, def, false, false).await
    {
        let _ = state.apps.delete_app(team, app.id).await;
        return Err(apps_err(e));
    }
    event(
        &state,
        &auth,
        team,
        "app.created",
        app.id.to_string(),
        &[("name", app.name.clone())],
    )
    .await?;
    Ok((StatusCode::CREATED, Json(AppOut::from(app))).into_response())
}

/// The apps on a host.
pub async fn list_apps(
    State(state): State<AppState>,
    auth: Auth,
    Path((team, host)): Path<(String, String)>,
) -> Result<Response, ApiError> {
    let team: TeamId = parse_id("team", &team)?;
    let host: HostId = parse_id("host", &host)?;
    allow(&state, &auth, Action::AppsRead, team).await?;
    let apps = state.apps.apps(team, host).await.map_err(apps_err)?;
    Ok(Json(apps.into_iter().map(AppOut::from).collect::<Vec<_>>()).into_response())
}

/// One app.
pub async fn get_app(
    State(state): State<AppState>,
    auth: Auth,
    Path((team, app)): Path<(String, String)>,
) -> Result<Response, ApiError> {
    let team: TeamId = parse_id("team", &team)?;
    let app: AppId = parse_id("app", &app)?;
    allow(&state, &auth, Action::AppsRead, team).await?;
    Ok(Json(AppOut::from(
        state.apps.app(team, app).await.map_err(apps_err)?,
    ))
    .into_response())
}

/// `PATCH /api/v1/teams/{team}/apps/{app}`: rename, close or reopen.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AppChange {
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    status: Option<String>,
}

/// Renames, closes or reopens an app.
pub async fn update_app(
    State(state): State<AppState>,
    auth: Auth,
    Path((team, app)): Path<(String, String)>,
    ApiJson(req): ApiJson<AppChange>,
) -> Result<Response, ApiError> {
    let team: TeamId = parse_id("team", &team)?;
    let id: AppId = parse_id("app", &app)?;
    allow(&state, &auth, Action::AppsOperate, team).await?;
    let status = match req.status.as_deref() {
        None => None,
        Some("open") => Some(AppStatus::Open),
        Some("closed") => Some(AppStatus::Closed),
        Some(other) => {
            return Err(ApiError::invalid(
                "status",
                format!("`{other}` is not `open` or `closed`"),
            ));
        }
    };
    if req.name.is_none() && status.is_none() {
        return Err(ApiError::invalid("name", "give a new name or a status"));
    }
    // Check both before changing either, so a bad name changes nothing.
    state.apps.app(team, id).await.map_err(apps_err)?;
    let mut app = None;
    if let Some(name) = req.name {
        let renamed = state
            .apps
            .rename_app(team, id, name)
            .await
            .map_err(apps_err)?;
        event(
            &state,
            &auth,
            team,
            "app.renamed",
            id.to_string(),
            &[("name", renamed.name.clone())],
        )
        .await?;
        app = Some(renamed);
    }
    if let Some(status) = status {
        let changed = state
            .apps
            .set_status(team, id, status)
            .await
            .map_err(apps_err)?;
        let action = if status == AppStatus::Open {
            "app.opened"
        } else {
            "app.closed"
        };
        event(&state, &auth, team, action, id.to_string(), &[]).await?;
        app = Some(changed);
    }
    match app {
        Some(app) => Ok(Json(AppOut::from(app)).into_response()),
        None => Err(ApiError::Internal),
    }
}

/// Deletes an app and destroys its data key:
/// `DELETE /api/v1/teams/{team}/apps/{app}?confirm=<the app's name>`.
pub async fn delete_app(
    State(state): State<AppState>,
    auth: Auth,
    Path((team, app)): Path<(String, String)>,
    Query(query): Query<std::collections::HashMap<String, String>>,
) -> Result<Response, ApiError> {
    let team: TeamId = parse_id("team", &team)?;
    let id: AppId = parse_id("app", &app)?;
    allow(&state, &auth, Action::AppsOperate, team).await?;
    let record = state.apps.app(team, id).await.map_err(apps_err)?;
    if query.get("confirm") != Some(&record.name) {
        return Err(ApiError::invalid(
            "confirm",
            "type the app's name to delete it",
        ));
    }
    state.apps.delete_app(team, id).await.map_err(apps_err)?;
    event(
        &state,
        &auth,
        team,
        "app.deleted",
        id.to_string(),
        &[("name", record.name)],
    )
    .await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

#[derive(Debug, Serialize)]
struct SchemaOut {
    version: i64,
    definition: Definition,
}

/// The app's definition.
pub async fn get_schema(
    State(state): State<AppState>,
    auth: Auth,
    Path((team, app)): Path<(String, String)>,
) -> Result<Response, ApiError> {
    let team: TeamId = parse_id("team", &team)?;
    let id: AppId = parse_id("app", &app)?;
    allow(&state, &auth, Action::AppsRead, team).await?;
    let (version, definition) = state.apps.definition(team, id).await.map_err(apps_err)?;
    Ok(Json(SchemaOut {
        version,
        definition,
    })
    .into_response())
}

/// `PUT /api/v1/teams/{team}/apps/{app}/schema`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SchemaApply {
    definition: Definition,
    #[serde(default)]
    allow_data_loss: bool,
    #[serde(default)]
    dry_run: bool,
}

#[derive(Debug, Serialize)]
struct ApplyOut {
    version: i64,
    applied: bool,
    changes: Vec<String>,
}

/// Applies a definition (idempotent; data loss needs `allow_data_loss`).
pub async fn put_schema(
    State(state): State<AppState>,
    auth: Auth,
    Path((team, app)): Path<(String, String)>,
    ApiJson(req): ApiJson<SchemaApply>,
) -> Result<Response, ApiError> {
    let team: TeamId = parse_id("team", &team)?;
    let id: AppId = parse_id("app", &app)?;
    allow(&state, &auth, Action::AppsOperate, team).await?;
    let report = state
        .apps
        .apply(team, id, req.definition, req.allow_data_loss, req.dry_run)
        .await
        .map_err(apps_err)?;
    if report.applied {
        event(
            &state,
            &auth,
            team,
            "app.schema.applied",
            id.to_string(),
            &[
                ("version", report.version.to_string()),
                ("allow_data_loss", req.allow_data_loss.to_string()),
            ],
        )
        .await?;
    }
    Ok(Json(ApplyOut {
        version: report.version,
        applied: report.applied,
        changes: report.changes,
    })
    .into_response())
}

#[derive(Debug, Serialize)]
struct AccountOut {
    name: String,
    kind: String,
    kura_account: Option<String>,
    privilege_set: String,
    active: bool,
}

impl From<AppAccount> for AccountOut {
    fn from(a: AppAccount) -> Self {
        Self {
            name: a.name,
            kind: a.kind,
            kura_account: a.kura_account.map(|a| a.to_string()),
            privilege_set: a.privilege_set,
            active: a.active,
        }
    }
}

/// An app's accounts.
pub async fn list_accounts(
    State(state): State<AppState>,
    auth: Auth,
    Path((team, app)): Path<(String, String)>,
) -> Result<Response, ApiError> {
    let team: TeamId = parse_id("team", &team)?;
    let id: AppId = parse_id("app", &app)?;
    allow(&state, &auth, Action::AppsOperate, team).await?;
    let accounts = state.apps.accounts(team, id).await.map_err(apps_err)?;
    Ok(Json(
        accounts
            .into_iter()
            .map(AccountOut::from)
            .collect::<Vec<_>>(),
    )
    .into_response())
}

/// `POST /api/v1/teams/{team}/apps/{app}/accounts`: an app-local account
/// (`password`), a Kura ID account of the team (`kura_account`), or a
/// service account for the team's Kura Connect flows (`"service": true`;
/// it cannot sign in).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewAppAccount {
    name: String,
    #[serde(default)]
    password: Option<SecretString>,
    #[serde(default)]
    kura_account: Option<String>,
    #[serde(default)]
    service: bool,
    privilege_set: String,
}

/// Creates an app account.
pub async fn create_account(
    State(state): State<AppState>,
    auth: Auth,
    Path((team, app)): Path<(String, String)>,
    ApiJson(req): ApiJson<NewAppAccount>,
) -> Result<Response, ApiError> {
    let team: TeamId = parse_id("team", &team)?;
    let id: AppId = parse_id("app", &app)?;
    allow(&state, &auth, Action::AppsOperate, team).await?;
    let credential = match (req.password, req.kura_account, req.service) {
        (None, None, true) => NewAccountCredential::Service,
        (Some(p), None, false) => NewAccountCredential::Password(p),
        (None, Some(a), false) => {
            let account: AccountId = parse_id("kura_account", &a)?;
            let audited = state
                .identity
                .at(auth.ctx.facts())
                .members(&auth.principal, team)
                .await;
            let members = finish(&state, &auth.ctx, audited).await?;
            if !members.iter().any(|m| m.account.id == account) {
                return Err(ApiError::invalid(
                    "kura_account",
                    "not a member of this team",
                ));
            }
            NewAccountCredential::KuraId(account)
        }
        _ => {
            return Err(ApiError::invalid(
                "password",
                "give exactly one of `password` (an app-local account), `kura_account` or `\"service\": true`",
            ));
        }
    };
    let created = state
        .apps
        .create_account(team, id, req.name, credential, req.privilege_set)
        .await
        .map_err(apps_err)?;
    event(
        &state,
        &auth,
        team,
        "app.account.created",
        id.to_string(),
        &[
            ("account", created.name.clone()),
            ("privilege_set", created.privilege_set.clone()),
        ],
    )
    .await?;
    Ok((StatusCode::CREATED, Json(AccountOut::from(created))).into_response())
}

/// `PATCH /api/v1/teams/{team}/apps/{app}/accounts/{name}`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AccountChange {
    #[serde(default)]
    privilege_set: Option<String>,
    #[serde(default)]
    active: Option<bool>,
}

/// Changes an app account's privilege set or whether it may sign in.
pub async fn update_account(
    State(state): State<AppState>,
    auth: Auth,
    Path((team, app, name)): Path<(String, String, String)>,
    ApiJson(req): ApiJson<AccountChange>,
) -> Result<Response, ApiError> {
    let team: TeamId = parse_id("team", &team)?;
    let id: AppId = parse_id("app", &app)?;
    allow(&state, &auth, Action::AppsOperate, team).await?;
    let updated = state
        .apps
        .update_account(team, id, &name, req.privilege_set, req.active)
        .await
        .map_err(apps_err)?;
    event(
        &state,
        &auth,
        team,
        "app.account.updated",
        id.to_string(),
        &[
            ("account", updated.name.clone()),
            ("privilege_set", updated.privilege_set.clone()),
            ("active", updated.active.to_string()),
        ],
    )
    .await?;
    Ok(Json(AccountOut::from(updated)).into_response())
}

/// Deletes an app account.
pub async fn delete_account(
    State(state): State<AppState>,
    auth: Auth,
    Path((team, app, name)): Path<(String, String, String)>,
) -> Result<Response, ApiError> {
    let team: TeamId = parse_id("team", &team)?;
    let id: AppId = parse_id("app", &app)?;
    allow(&state, &auth, Action::AppsOperate, team).await?;
    state
        .apps
        .delete_account(team, id, &name)
        .await
        .map_err(apps_err)?;
    event(
        &state,
        &auth,
        team,
        "app.account.deleted",
        id.to_string(),
        &[("account", name)],
    )
    .await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}
