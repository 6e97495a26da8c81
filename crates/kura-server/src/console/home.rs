//! Teams: the home page (my teams; operators create teams), a team's
//! overview (hosts and their apps, members, invitations) and the forms that
//! create hosts, apps and invitations. Host and app changes ask the policy
//! through `Identity::check` exactly as the API's `apps` handlers do, then
//! call `kura_apps`, then record the same security events.

use axum::extract::{Path, Query, State};
use axum::response::{IntoResponse as _, Response};
use http::StatusCode;
use kura_identity::{Action, Resource, TeamRole};
use kura_types::{Actor, HostId, Outcome, SecurityEvent, TeamId};
use maud::{Markup, html};
use serde::Deserialize;

use super::account::OkQuery;
use super::page::{self, Field, Nav};
use super::session::{SessionForm, Signed, done};
use crate::http::AppState;
use crate::http::api::auth::{finish, record_event};
use crate::http::api::error::ApiError;

/// `GET /console/`.
pub async fn show(State(state): State<AppState>, who: Signed) -> Response {
    let audited = state
        .identity
        .at(who.ctx.facts())
        .my_teams(&who.principal)
        .await;
    let teams = match finish(&state, &who.ctx, audited).await {
        Ok(t) => t,
        Err(e) => return page::api_error_page(&e),
    };
    page::respond(
        StatusCode::OK,
        home_page(
            &who,
            &teams,
            &NewTeam::default(),
            &TeamErrors::default(),
            None,
        ),
    )
}

/// The new-team form.
#[derive(Debug, Default, Deserialize)]
pub struct NewTeam {
    #[serde(default)]
    name: String,
    #[serde(default)]
    owner_email: String,
}

#[derive(Default)]
struct TeamErrors {
    name: Option<String>,
    owner_email: Option<String>,
    form: Option<String>,
}

fn home_page(
    who: &Signed,
    teams: &[kura_identity::Team],
    f: &NewTeam,
    e: &TeamErrors,
    invite_link: Option<&str>,
) -> Markup {
    let operator = who.principal.kind == kura_identity::AccountKind::Operator;
    let body = html! {
        header.page-head { h1 { "Teams" } }
        @if let Some(link) = invite_link {
            section.card.callout role="status" {
                h2 { "Team created" }
                p { "Send this one-time link to the owner. It is shown only now." }
                p { code.secret #invite-link { (link) } }
            }
        }
        @if teams.is_empty() {
            section.card.empty {
                h2 { "No teams yet" }
                @if operator {
                    p { "You are not a member of any team. Create a team below: its owner gets an invitation link and runs the team's hosts and apps." }
                } @else {
                    p { "You are not a member of any team. Ask a team owner for an invitation." }
                }
            }
        } @else {
            ul.grid {
                @for t in teams {
                    li.card.team-card {
                        h2 { a href={ "/console/teams/" (t.id) } { (t.name) } }
                        p.muted { "Created " (page::when(t.created_at)) }
                    }
                }
            }
        }
        @if operator {
            section.card {
                h2 { "Create a team" }
                (page::form_error(e.form.as_deref()))
                form.inline-form method="post" action="/console/teams" novalidate {
                    (page::csrf(&who.csrf))
                    (Field::new("name", "Team name").value(&f.name).error(e.name.as_deref()).render())
                    (Field::new("owner_email", "Owner's email").kind("email").value(&f.owner_email).error(e.owner_email.as_deref()).render())
                    button.primary type="submit" { "Create team" }
                }
            }
        }
    };
    page::shell("Teams", Nav::Home, &super::chrome(who), body)
}

/// `POST /console/teams`.
pub async fn create_team(State(state): State<AppState>, p: SessionForm<NewTeam>) -> Response {
    let (who, f) = (p.who, p.form);
    let mut errors = TeamErrors::default();
    if f.name.trim().is_empty() {
        errors.name = Some("Enter a name for the team.".to_owned());
    }
    if f.owner_email.trim().is_empty() {
        errors.owner_email = Some("Enter the owner's email address.".to_owned());
    }
    let created = if errors.name.is_none() && errors.owner_email.is_none() {
        let audited = state
            .identity
            .at(who.ctx.facts())
            .create_team(&who.principal, f.name.trim(), f.owner_email.trim())
            .await;
        match finish(&state, &who.ctx, audited).await {
            Ok(c) => Some(c),
            Err(e) => {
                let msg = page::message(&e);
                match &e {
                    ApiError::Identity(kura_identity::IdentityError::InvalidAttribute(_)) => {
                        errors.owner_email = Some(msg)
                    }
                    ApiError::Identity(kura_identity::IdentityError::Conflict(_)) => {
                        errors.name = Some(msg)
                    }
                    _ => errors.form = Some(msg),
                }
                None
            }
        }
    } else {
        None
    };
    let audited = state
        .identity
        .at(who.ctx.facts())
        .my_teams(&who.principal)
        .await;
    let teams = match finish(&state, &who.ctx, audited).await {
        Ok(t) => t,
        Err(e) => return page::api_error_page(&e),
    };
    match created {
        Some(c) => {
            let link = invite_link(&c.owner_invitation);
            page::respond(
                StatusCode::CREATED,
                home_page(&who, &teams, &NewTeam::default(), &errors, Some(&link)),
            )
        }
        None => page::invalid(home_page(&who, &teams, &f, &errors, None)),
    }
}

fn invite_link(i: &kura_identity::IssuedInvitation) -> String {
    format!("/console/invitations/accept#{}", i.token.reveal())
}

// ----- a team -----

pub(super) async fn allow(
    state: &AppState,
    who: &Signed,
    action: Action,
    team: TeamId,
) -> Result<(), ApiError> {
    let audited = state
        .identity
        .check(&who.principal, action, &Resource::Team(team));
    finish(state, &who.ctx, audited).await
}

pub(super) async fn event(
    state: &AppState,
    who: &Signed,
    team: TeamId,
    action: &str,
    target: String,
    name: &str,
) -> Result<(), ApiError> {
    let action = kura_types::Action::parse(action).map_err(|_| ApiError::EventNotRecorded)?;
    let e = SecurityEvent::new(
        state.clock.now(),
        Actor::Account {
            id: who.principal.account.to_string(),
        },
        action,
        Outcome::Success,
    )
    .with_team(team)
    .with_target(target)
    .with_detail("name", name.to_owned());
    record_event(state, &who.ctx, e).await
}

/// The forms on a team's page, with what was typed and what was wrong.
#[derive(Debug, Default)]
struct TeamForms {
    host_name: String,
    host_error: Option<String>,
    app_name: String,
    app_host: String,
    app_error: Option<String>,
    invite_email: String,
    invite_error: Option<String>,
    invite_link: Option<String>,
    host_delete: Option<HostDelete>,
}

/// A refused host deletion: which host, what was typed, what was wrong.
#[derive(Debug)]
struct HostDelete {
    host: HostId,
    confirm: String,
    confirm_error: Option<String>,
    code_error: Option<String>,
}

async fn team_page(
    state: &AppState,
    who: &Signed,
    team: TeamId,
    ok: Option<&str>,
    forms: &TeamForms,
) -> Result<Markup, ApiError> {
    let audited = state
        .identity
        .at(who.ctx.facts())
        .team(&who.principal, team)
        .await;
    let t = finish(state, &who.ctx, audited).await?;
    allow(state, who, Action::HostsRead, team).await?;
    let hosts = state.apps.hosts(team).await.map_err(ApiError::Apps)?;
    let mut apps = Vec::new();
    for h in &hosts {
        let list = state.apps.apps(team, h.id).await.map_err(ApiError::Apps)?;
        apps.push(list);
    }
    let audited = state
        .identity
        .at(who.ctx.facts())
        .members(&who.principal, team)
        .await;
    let members = finish(state, &who.ctx, audited).await?;
    let can_manage_members = state
        .identity
        .check(&who.principal, Action::MembersManage, &Resource::Team(team))
        .into_parts()
        .0
        .is_ok();
    let invitations = if can_manage_members {
        let audited = state
            .identity
            .at(who.ctx.facts())
            .invitations(&who.principal, team)
            .await;
        finish(state, &who.ctx, audited).await?
    } else {
        Vec::new()
    };
    let base = format!("/console/teams/{team}");
    let app_count: usize = apps.iter().map(Vec::len).sum();
    let body = html! {
        (page::notice(ok))
        header.page-head {
            h1 { (t.name) }
            p.muted { "Team · created " (page::when(t.created_at)) " · " a href={ (base) "/security" } { "Security settings and events" } " · " a href={ (base) "/groups" } { "Groups and roles" } " · " a href={ (base) "/flows" } { "Flows" } }
        }
        ul.stats {
            li.card { span.stat { (hosts.len()) } " hosts" }
            li.card { span.stat { (app_count) } " apps" }
            li.card { span.stat { (members.len()) } " members" }
        }
        section.card #hosts {
            h2 { "Hosts and apps" }
            @if hosts.is_empty() {
                p.empty { "No hosts yet. A host is where the team's apps live; create one below." }
            }
            @for (h, list) in hosts.iter().zip(&apps) {
                @let refused = forms.host_delete.as_ref().filter(|d| d.host == h.id);
                @let confirm_name = format!("confirm-{}", h.id);
                @let code_name = format!("code-{}", h.id);
                article.host {
                    h3 { (h.name) }
                    p.muted { "Data API: " code { "/hosts/" (h.name) "/fmi/data/vLatest" } }
                    details.host-settings open[refused.is_some()] {
                        summary { "Rename or delete " (h.name) }
                        form.inline-form method="post" action={ (base) "/hosts/" (h.id) "/rename" } novalidate {
                            (page::csrf(&who.csrf))
                            (Field::new(&format!("rename-{}", h.id), "New name").value(&h.name).render())
                            button type="submit" { "Rename host" }
                        }
                        form.inline-form method="post" action={ (base) "/hosts/" (h.id) "/delete" } data-confirm-name=(h.name) novalidate {
                            (page::csrf(&who.csrf))
                            (Field::new(&confirm_name, "Type the host's name to delete it (it must have no apps)")
                                .value(refused.map_or("", |d| d.confirm.as_str()))
                                .error(refused.and_then(|d| d.confirm_error.as_deref())).render())
                            (super::stepup::code_field(&code_name, refused.and_then(|d| d.code_error.as_deref())).render())
                            button.danger type="submit" { "Delete host" }
                        }
                    }
                    @if list.is_empty() {
                        p.empty { "No apps on this host yet." }
                    } @else {
                        ul.apps { @for a in list { li { a.app-name href={ (base) "/apps/" (a.id) } { (a.name) } " " span.badge { (status(a.status)) } } } }
                    }
                }
            }
            form.inline-form method="post" action={ (base) "/hosts" } novalidate {
                (page::csrf(&who.csrf))
                (Field::new("name", "New host name").value(&forms.host_name).error(forms.host_error.as_deref())
                    .hint("Lower-case letters, digits and hyphens.").render())
                button.primary type="submit" { "Create host" }
            }
            @if !hosts.is_empty() {
                form.inline-form method="post" action={ (base) "/apps" } novalidate {
                    (page::csrf(&who.csrf))
                    div.field {
                        label for="f-host" { "Host" }
                        select #f-host name="host" {
                            @for h in &hosts { option value=(h.id) selected[forms.app_host == h.id.to_string()] { (h.name) } }
                        }
                    }
                    (Field::new("app_name", "New app name").value(&forms.app_name).error(forms.app_error.as_deref()).render())
                    button.primary type="submit" { "Create app" }
                }
            }
        }
        section.card #members {
            h2 { "Members" }
            div.table-wrap {
                table {
                    thead { tr { th scope="col" { "Name" } th scope="col" { "Email" } th scope="col" { "Roles" } th scope="col" { "Joined" } } }
                    tbody {
                        @for m in &members {
                            tr {
                                td data-label="Name" { (m.account.display_name) }
                                td data-label="Email" { (m.account.email.as_str()) }
                                td data-label="Roles" { @for r in &m.roles { span.badge { (r.as_str()) } " " } }
                                td data-label="Joined" { (page::when(m.joined_at)) }
                            }
                        }
                    }
                }
            }
            @if can_manage_members {
                h3 { "Invitations" }
                @if let Some(link) = &forms.invite_link {
                    p.alert.alert-ok role="status" { "Invitation created. Send this one-time link (shown only now): " code.secret #invite-link { (link) } }
                }
                @if invitations.is_empty() {
                    p.empty { "No open invitations." }
                } @else {
                    ul.plain { @for i in &invitations { li { (i.email) " · " span.badge { (i.role.as_str()) } " · expires " (page::when(i.expires_at)) } } }
                }
                form.inline-form method="post" action={ (base) "/invitations" } novalidate {
                    (page::csrf(&who.csrf))
                    (Field::new("email", "Invite by email").kind("email").value(&forms.invite_email).error(forms.invite_error.as_deref()).render())
                    div.field {
                        label for="f-role" { "Role" }
                        select #f-role name="role" {
                            option value="member" { "Member" }
                            option value="admin" { "Admin" }
                            option value="auditor" { "Auditor" }
                        }
                    }
                    button.primary type="submit" { "Invite" }
                }
            }
        }
    };
    Ok(page::shell(&t.name, Nav::Team, &super::chrome(who), body))
}

fn status(s: kura_store::AppStatus) -> &'static str {
    match s {
        kura_store::AppStatus::Open => "open",
        kura_store::AppStatus::Closed => "closed",
    }
}

fn team_id(raw: &str) -> Result<TeamId, page::Missing> {
    raw.parse().map_err(|_| page::Missing("team"))
}

/// `GET /console/teams/{team}`.
pub async fn team(
    State(state): State<AppState>,
    who: Signed,
    Path(team): Path<String>,
    Query(q): Query<OkQuery>,
) -> Response {
    let team = match team_id(&team) {
        Ok(t) => t,
        Err(r) => return r.into_response(),
    };
    match team_page(&state, &who, team, q.ok.as_deref(), &TeamForms::default()).await {
        Ok(m) => page::respond(StatusCode::OK, m),
        Err(e) => page::api_error_page(&e),
    }
}

async fn again(state: &AppState, who: &Signed, team: TeamId, forms: &TeamForms) -> Response {
    match team_page(state, who, team, None, forms).await {
        Ok(m) => page::invalid(m),
        Err(e) => page::api_error_page(&e),
    }
}

/// The new-host form.
#[derive(Debug, Default, Deserialize)]
pub struct NewHost {
    #[serde(default)]
    name: String,
}

/// `POST /console/teams/{team}/hosts`.
pub async fn create_host(
    State(state): State<AppState>,
    Path(team): Path<String>,
    p: SessionForm<NewHost>,
) -> Response {
    let team = match team_id(&team) {
        Ok(t) => t,
        Err(r) => return r.into_response(),
    };
    if let Err(e) = allow(&state, &p.who, Action::HostsManage, team).await {
        return page::api_error_page(&e);
    }
    let name = p.form.name.trim().to_owned();
    let result = state
        .apps
        .create_host(team, name.clone(), serde_json::json!({}))
        .await;
    match result {
        Ok(h) => match event(
            &state,
            &p.who,
            team,
            "host.created",
            h.id.to_string(),
            &h.name,
        )
        .await
        {
            Ok(()) => done(&format!("/console/teams/{team}"), "host-created"),
            Err(e) => page::api_error_page(&e),
        },
        Err(e) => {
            let forms = TeamForms {
                host_name: p.form.name,
                host_error: Some(page::message(&ApiError::Apps(e))),
                ..TeamForms::default()
            };
            again(&state, &p.who, team, &forms).await
        }
    }
}

/// The new-app form.
#[derive(Debug, Default, Deserialize)]
pub struct NewApp {
    #[serde(default)]
    host: String,
    #[serde(default)]
    app_name: String,
}

/// `POST /console/teams/{team}/apps`.
pub async fn create_app(
    State(state): State<AppState>,
    Path(team): Path<String>,
    p: SessionForm<NewApp>,
) -> Response {
    let team = match team_id(&team) {
        Ok(t) => t,
        Err(r) => return r.into_response(),
    };
    if let Err(e) = allow(&state, &p.who, Action::AppsOperate, team).await {
        return page::api_error_page(&e);
    }
    let name = p.form.app_name.trim().to_owned();
    let result = match p.form.host.parse::<HostId>() {
        Ok(host) => state.apps.create_app(team, host, name).await,
        Err(_) => Err(kura_apps::AppsError::invalid("host", "choose a host")),
    };
    match result {
        Ok(a) => match event(
            &state,
            &p.who,
            team,
            "app.created",
            a.id.to_string(),
            &a.name,
        )
        .await
        {
            Ok(()) => done(&format!("/console/teams/{team}"), "app-created"),
            Err(e) => page::api_error_page(&e),
        },
        Err(e) => {
            let forms = TeamForms {
                app_name: p.form.app_name,
                app_host: p.form.host,
                app_error: Some(page::message(&ApiError::Apps(e))),
                ..TeamForms::default()
            };
            again(&state, &p.who, team, &forms).await
        }
    }
}

/// The invitation form.
#[derive(Debug, Default, Deserialize)]
pub struct NewInvitation {
    #[serde(default)]
    email: String,
    #[serde(default)]
    role: String,
}

/// `POST /console/teams/{team}/invitations`.
pub async fn invite(
    State(state): State<AppState>,
    Path(team): Path<String>,
    p: SessionForm<NewInvitation>,
) -> Response {
    let team = match team_id(&team) {
        Ok(t) => t,
        Err(r) => return r.into_response(),
    };
    let Some(role) = TeamRole::parse(&p.form.role) else {
        return page::error_page(
            StatusCode::BAD_REQUEST,
            "Unknown role",
            "Choose one of the listed roles; nothing was changed.",
        );
    };
    let audited = state
        .identity
        .at(p.who.ctx.facts())
        .invite(&p.who.principal, team, p.form.email.trim(), role)
        .await;
    let mut forms = TeamForms::default();
    match finish(&state, &p.who.ctx, audited).await {
        Ok(i) => {
            forms.invite_link = Some(invite_link(&i));
            match team_page(&state, &p.who, team, Some("invited"), &forms).await {
                Ok(m) => page::respond(StatusCode::CREATED, m),
                Err(e) => page::api_error_page(&e),
            }
        }
        Err(e @ ApiError::Identity(kura_identity::IdentityError::Denied(_))) => {
            page::api_error_page(&e)
        }
        Err(e) => {
            forms.invite_email = p.form.email;
            forms.invite_error = Some(page::message(&e));
            again(&state, &p.who, team, &forms).await
        }
    }
}

/// `POST /console/teams/{team}/hosts/{host}/rename` (field `rename-<id>`).
pub async fn rename_host(
    State(state): State<AppState>,
    Path((team, host)): Path<(String, String)>,
    p: SessionForm<Vec<(String, String)>>,
) -> Response {
    let (Ok(team), Ok(host)) = (team.parse::<TeamId>(), host.parse::<HostId>()) else {
        return page::Missing("host").into_response();
    };
    if let Err(e) = allow(&state, &p.who, Action::HostsManage, team).await {
        return page::api_error_page(&e);
    }
    let key = format!("rename-{host}");
    let name = p
        .form
        .iter()
        .find(|(k, _)| *k == key)
        .map(|(_, v)| v.trim().to_owned())
        .unwrap_or_default();
    match state.apps.update_host(team, host, Some(name), None).await {
        Ok(h) => match event(
            &state,
            &p.who,
            team,
            "host.updated",
            h.id.to_string(),
            &h.name,
        )
        .await
        {
            Ok(()) => done(&format!("/console/teams/{team}"), "host-renamed"),
            Err(e) => page::api_error_page(&e),
        },
        Err(e) => page::error_page(
            StatusCode::UNPROCESSABLE_ENTITY,
            "Not renamed",
            &format!("{} Nothing was changed.", page::message(&ApiError::Apps(e))),
        ),
    }
}

/// `POST /console/teams/{team}/hosts/{host}/delete`: only with the name
/// typed exactly (field `confirm-<id>`) and a fresh authenticator code
/// (field `code-<id>`, step-up). The name is checked first, so a mistyped
/// name does not spend a code; either refusal shows the team page again
/// with the error beside its field.
pub async fn delete_host(
    State(state): State<AppState>,
    Path((team, host)): Path<(String, String)>,
    p: SessionForm<Vec<(String, String)>>,
) -> Response {
    let (Ok(team), Ok(host)) = (team.parse::<TeamId>(), host.parse::<HostId>()) else {
        return page::Missing("host").into_response();
    };
    if let Err(e) = allow(&state, &p.who, Action::HostsManage, team).await {
        return page::api_error_page(&e);
    }
    let record = match state.apps.host(team, host).await {
        Ok(h) => h,
        Err(e) => return page::api_error_page(&ApiError::Apps(e)),
    };
    let value = |key: String| {
        p.form
            .iter()
            .find(|(k, _)| *k == key)
            .map(|(_, v)| v.clone())
            .unwrap_or_default()
    };
    let typed = value(format!("confirm-{host}"));
    let mut refused = HostDelete {
        host,
        confirm: typed.clone(),
        confirm_error: None,
        code_error: None,
    };
    if typed != record.name {
        refused.confirm_error = Some("Type the host's name exactly to delete it.".to_owned());
        let forms = TeamForms {
            host_delete: Some(refused),
            ..TeamForms::default()
        };
        return again(&state, &p.who, team, &forms).await;
    }
    // A host that still serves apps cannot go; say so before a code is spent.
    match state.apps.apps(team, host).await {
        Ok(apps) if !apps.is_empty() => {
            refused.confirm_error = Some(format!(
                "{} still serves {} app(s): delete or move them first.",
                record.name,
                apps.len()
            ));
            let forms = TeamForms {
                host_delete: Some(refused),
                ..TeamForms::default()
            };
            return match team_page(&state, &p.who, team, None, &forms).await {
                Ok(m) => page::respond(StatusCode::CONFLICT, m),
                Err(e) => page::api_error_page(&e),
            };
        }
        Ok(_) => {}
        Err(e) => return page::api_error_page(&ApiError::Apps(e)),
    }
    if let Err((status, message)) =
        super::stepup::step_up(&state, &p.who, &value(format!("code-{host}"))).await
    {
        refused.code_error = Some(message);
        let forms = TeamForms {
            host_delete: Some(refused),
            ..TeamForms::default()
        };
        return match team_page(&state, &p.who, team, None, &forms).await {
            Ok(m) => page::respond(status, m),
            Err(e) => page::api_error_page(&e),
        };
    }
    match state.apps.delete_host(team, host).await {
        Ok(()) => match event(
            &state,
            &p.who,
            team,
            "host.deleted",
            host.to_string(),
            &record.name,
        )
        .await
        {
            Ok(()) => done(&format!("/console/teams/{team}"), "host-deleted"),
            Err(e) => page::api_error_page(&e),
        },
        Err(e) => page::error_page(
            StatusCode::CONFLICT,
            "Not deleted",
            &format!("{} Nothing was changed.", page::message(&ApiError::Apps(e))),
        ),
    }
}
