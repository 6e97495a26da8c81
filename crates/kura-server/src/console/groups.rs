//! A team's groups and roles: each group with its members and the team
//! roles it gives them, and the forms that create a group, add or remove a
//! member and grant or revoke a group's role. Every change is a Kura ID
//! call (`create_group`, `set_group_member`, `grant_team_role`,
//! `revoke_team_role`) that asks the policy for `MembersManage` and records
//! its events, exactly as the API's team handlers do; a refused change is
//! shown beside its form and changes nothing.

use std::collections::BTreeMap;

use axum::extract::{Path, Query, State};
use axum::response::{IntoResponse as _, Response};
use http::StatusCode;
use kura_identity::{Action, GrantSubject, Member, Resource, TeamRole};
use kura_types::{AccountId, GroupId, TeamId};
use maud::{Markup, html};
use serde::Deserialize;

use super::account::OkQuery;
use super::page::{self, Field, Nav};
use super::session::{SessionForm, Signed, done};
use crate::http::AppState;
use crate::http::api::auth::finish;
use crate::http::api::error::ApiError;

/// The roles a group can carry, in the order the form offers them.
const ROLES: &[TeamRole] = &[
    TeamRole::Member,
    TeamRole::Admin,
    TeamRole::Auditor,
    TeamRole::Billing,
    TeamRole::Owner,
];

/// What the forms kept and what was wrong.
#[derive(Debug, Default)]
struct Forms {
    name: String,
    name_error: Option<String>,
    /// An error from one group's forms.
    group_error: Option<(GroupId, String)>,
}

fn team_id(raw: &str) -> Result<TeamId, page::Missing> {
    raw.parse().map_err(|_| page::Missing("team"))
}

async fn groups_page(
    state: &AppState,
    who: &Signed,
    team: TeamId,
    ok: Option<&str>,
    forms: &Forms,
) -> Result<Markup, ApiError> {
    let audited = state.identity.team(&who.principal, team).await;
    let t = finish(state, &who.ctx, audited).await?;
    let audited = state.identity.group_details(&who.principal, team).await;
    let groups = finish(state, &who.ctx, audited).await?;
    let audited = state.identity.members(&who.principal, team).await;
    let members = finish(state, &who.ctx, audited).await?;
    let by_id: BTreeMap<AccountId, &Member> = members.iter().map(|m| (m.account.id, m)).collect();
    // Whether to offer the forms at all; each post asks the policy again.
    let can_manage = state
        .identity
        .check(&who.principal, Action::MembersManage, &Resource::Team(team))
        .into_parts()
        .0
        .is_ok();
    let base = format!("/console/teams/{team}/groups");
    let body = html! {
        (page::notice(ok))
        nav.crumbs aria-label="Breadcrumb" { a href={ "/console/teams/" (team) } { (t.name) } " / " span { "Groups and roles" } }
        header.page-head {
            h1 { "Groups and roles" }
            p.muted { "A group gives every account in it the group's team roles. Members get the roles granted to them directly and those of their groups." }
        }
        @if groups.is_empty() {
            section.card.empty #no-groups { p { "No groups yet." @if can_manage { " Create one below, then add members and give it roles." } } }
        }
        @for g in &groups {
            @let gbase = format!("{base}/{}", g.group.id);
            section.card.group id={ "group-" (g.group.id) } {
                h2 { (g.group.name) }
                @if let Some((_, e)) = forms.group_error.as_ref().filter(|(id, _)| *id == g.group.id) {
                    (page::form_error(Some(e.as_str())))
                }
                h3 { "Roles" }
                @if g.roles.is_empty() {
                    p.empty { "No roles: being in this group gives nothing yet." }
                } @else {
                    ul.plain.roles { @for r in &g.roles { li {
                        span.badge { (r.as_str()) }
                        @if can_manage {
                            form.inline method="post" action={ (gbase) "/roles" } {
                                (page::csrf(&who.csrf))
                                input type="hidden" name="role" value=(r.as_str());
                                input type="hidden" name="op" value="revoke";
                                button.danger.small type="submit" { "Revoke " (r.as_str()) }
                            }
                        }
                    } } }
                }
                h3 { "Members" }
                @if g.members.is_empty() {
                    p.empty { "Nobody is in this group yet." }
                } @else {
                    ul.plain.group-members { @for a in &g.members { li {
                        @match by_id.get(a) {
                            Some(m) => { (m.account.display_name) " · " span.muted { (m.account.email.as_str()) } }
                            None => { code { (a) } }
                        }
                        @if can_manage {
                            form.inline method="post" action={ (gbase) "/members" } {
                                (page::csrf(&who.csrf))
                                input type="hidden" name="account" value=(a);
                                input type="hidden" name="op" value="remove";
                                button.danger.small type="submit" { "Remove" }
                            }
                        }
                    } } }
                }
                @if can_manage {
                    @let outside: Vec<&Member> = members.iter().filter(|m| !g.members.contains(&m.account.id)).collect();
                    @if !outside.is_empty() {
                        form.inline-form method="post" action={ (gbase) "/members" } {
                            (page::csrf(&who.csrf))
                            input type="hidden" name="op" value="add";
                            div.field {
                                label for={ "f-add-" (g.group.id) } { "Add a team member" }
                                select id={ "f-add-" (g.group.id) } name="account" {
                                    @for m in &outside { option value=(m.account.id) { (m.account.display_name) " <" (m.account.email.as_str()) ">" } }
                                }
                            }
                            button type="submit" { "Add to " (g.group.name) }
                        }
                    }
                    @let missing: Vec<&TeamRole> = ROLES.iter().filter(|r| !g.roles.contains(r)).collect();
                    @if !missing.is_empty() {
                        form.inline-form method="post" action={ (gbase) "/roles" } {
                            (page::csrf(&who.csrf))
                            input type="hidden" name="op" value="grant";
                            div.field {
                                label for={ "f-role-" (g.group.id) } { "Give the group a role" }
                                select id={ "f-role-" (g.group.id) } name="role" {
                                    @for r in &missing { option value=(r.as_str()) { (r.as_str()) } }
                                }
                            }
                            button type="submit" { "Grant role" }
                        }
                    }
                }
            }
        }
        @if can_manage {
            section.card #new-group {
                h2 { "Create a group" }
                form.inline-form method="post" action=(base) novalidate {
                    (page::csrf(&who.csrf))
                    (Field::new("name", "Group name").value(&forms.name).error(forms.name_error.as_deref()).render())
                    button.primary type="submit" { "Create group" }
                }
            }
        }
    };
    Ok(page::shell(
        &format!("Groups · {}", t.name),
        Nav::Team,
        &super::chrome(who),
        body,
    ))
}

async fn again(
    state: &AppState,
    who: &Signed,
    team: TeamId,
    status: StatusCode,
    forms: &Forms,
) -> Response {
    match groups_page(state, who, team, None, forms).await {
        Ok(m) => page::respond(status, m),
        Err(e) => page::api_error_page(&e),
    }
}

/// `GET /console/teams/{team}/groups`.
pub async fn show(
    State(state): State<AppState>,
    who: Signed,
    Path(team): Path<String>,
    Query(q): Query<OkQuery>,
) -> Response {
    let team = match team_id(&team) {
        Ok(t) => t,
        Err(r) => return r.into_response(),
    };
    match groups_page(&state, &who, team, q.ok.as_deref(), &Forms::default()).await {
        Ok(m) => page::respond(StatusCode::OK, m),
        Err(e) => page::api_error_page(&e),
    }
}

/// The new-group form.
#[derive(Debug, Default, Deserialize)]
pub struct NewGroup {
    #[serde(default)]
    name: String,
}

/// A refusal that belongs on an error page rather than beside a form: the
/// person may not do this at all.
fn is_denial(e: &ApiError) -> bool {
    matches!(
        e,
        ApiError::Identity(kura_identity::IdentityError::Denied(_))
    )
}

/// `POST /console/teams/{team}/groups`.
pub async fn create(
    State(state): State<AppState>,
    Path(team): Path<String>,
    p: SessionForm<NewGroup>,
) -> Response {
    let team = match team_id(&team) {
        Ok(t) => t,
        Err(r) => return r.into_response(),
    };
    let name = p.form.name.trim();
    if name.is_empty() {
        let forms = Forms {
            name_error: Some("Enter a name for the group.".to_owned()),
            ..Forms::default()
        };
        return again(
            &state,
            &p.who,
            team,
            StatusCode::UNPROCESSABLE_ENTITY,
            &forms,
        )
        .await;
    }
    let audited = state
        .identity
        .create_group(&p.who.principal, team, name)
        .await;
    match finish(&state, &p.who.ctx, audited).await {
        Ok(_) => done(&format!("/console/teams/{team}/groups"), "group-created"),
        Err(e) if is_denial(&e) => page::api_error_page(&e),
        Err(e) => {
            let forms = Forms {
                name: p.form.name.clone(),
                name_error: Some(page::message(&e)),
                ..Forms::default()
            };
            again(
                &state,
                &p.who,
                team,
                StatusCode::UNPROCESSABLE_ENTITY,
                &forms,
            )
            .await
        }
    }
}

/// The add/remove-member form.
#[derive(Debug, Default, Deserialize)]
pub struct MemberForm {
    #[serde(default)]
    account: String,
    #[serde(default)]
    op: String,
}

fn ids(team: &str, group: &str) -> Result<(TeamId, GroupId), page::Missing> {
    match (team.parse(), group.parse()) {
        (Ok(t), Ok(g)) => Ok((t, g)),
        _ => Err(page::Missing("group")),
    }
}

/// Shows the group's form again with `e` (or the error page for a denial).
async fn refused(
    state: &AppState,
    who: &Signed,
    team: TeamId,
    group: GroupId,
    e: ApiError,
) -> Response {
    if is_denial(&e) {
        return page::api_error_page(&e);
    }
    let status = match &e {
        ApiError::Identity(kura_identity::IdentityError::NotFound(_)) => StatusCode::NOT_FOUND,
        ApiError::Identity(kura_identity::IdentityError::LastOwner) => StatusCode::CONFLICT,
        _ => StatusCode::UNPROCESSABLE_ENTITY,
    };
    let forms = Forms {
        group_error: Some((group, format!("{} Nothing was changed.", page::message(&e)))),
        ..Forms::default()
    };
    again(state, who, team, status, &forms).await
}

fn bad_choice(what: &str) -> Response {
    page::error_page(
        StatusCode::BAD_REQUEST,
        "The form could not be read",
        &format!("Choose one of the listed {what}; nothing was changed."),
    )
}

/// `POST /console/teams/{team}/groups/{group}/members` (`op` = `add` or
/// `remove`).
pub async fn members(
    State(state): State<AppState>,
    Path((team, group)): Path<(String, String)>,
    p: SessionForm<MemberForm>,
) -> Response {
    let (team, group) = match ids(&team, &group) {
        Ok(v) => v,
        Err(r) => return r.into_response(),
    };
    let Ok(account) = p.form.account.parse::<AccountId>() else {
        return bad_choice("members");
    };
    let (add, ok) = match p.form.op.as_str() {
        "add" => (true, "group-member-added"),
        "remove" => (false, "group-member-removed"),
        _ => return bad_choice("actions"),
    };
    let audited = state
        .identity
        .set_group_member(&p.who.principal, team, group, account, add)
        .await;
    match finish(&state, &p.who.ctx, audited).await {
        Ok(()) => done(&format!("/console/teams/{team}/groups"), ok),
        Err(e) => refused(&state, &p.who, team, group, e).await,
    }
}

/// The grant/revoke-role form.
#[derive(Debug, Default, Deserialize)]
pub struct RoleForm {
    #[serde(default)]
    role: String,
    #[serde(default)]
    op: String,
}

/// `POST /console/teams/{team}/groups/{group}/roles` (`op` = `grant` or
/// `revoke`).
pub async fn roles(
    State(state): State<AppState>,
    Path((team, group)): Path<(String, String)>,
    p: SessionForm<RoleForm>,
) -> Response {
    let (team, group) = match ids(&team, &group) {
        Ok(v) => v,
        Err(r) => return r.into_response(),
    };
    let Some(role) = TeamRole::parse(&p.form.role) else {
        return bad_choice("roles");
    };
    let subject = GrantSubject::Group(group);
    let audited = match p.form.op.as_str() {
        "grant" => {
            state
                .identity
                .grant_team_role(&p.who.principal, team, subject, role)
                .await
        }
        "revoke" => {
            state
                .identity
                .revoke_team_role(&p.who.principal, team, subject, role)
                .await
        }
        _ => return bad_choice("actions"),
    };
    let ok = if p.form.op == "grant" {
        "group-role-granted"
    } else {
        "group-role-revoked"
    };
    match finish(&state, &p.who.ctx, audited).await {
        Ok(()) => done(&format!("/console/teams/{team}/groups"), ok),
        Err(e) => refused(&state, &p.who, team, group, e).await,
    }
}
