//! A team's security page: the MFA requirement switch (owners) and the
//! team's security events (auditors and owners). The switch calls
//! `Identity::set_team_mfa_policy` like `PUT /api/v1/teams/{id}/mfa-policy`;
//! reading events asks `SecurityEventsRead` on the team and records a
//! `data.export` event, as `GET /api/v1/events?team=` does.

use axum::extract::{Path, Query, State};
use axum::response::{IntoResponse as _, Response};
use http::StatusCode;
use kura_identity::{Action, MfaStrength, Resource, TeamMfaPolicy};
use kura_types::{Actor, Outcome, SecurityEvent, TeamId};
use maud::html;
use serde::Deserialize;

use super::account::OkQuery;
use super::page::{self, Nav};
use super::session::{SessionForm, Signed, done};
use crate::http::AppState;
use crate::http::api::auth::{finish, record_event};
use crate::http::api::error::ApiError;

fn policy_name(p: &TeamMfaPolicy) -> &'static str {
    match p {
        TeamMfaPolicy::None => "none",
        TeamMfaPolicy::AllMembers {
            strength: MfaStrength::Any,
        } => "all",
        TeamMfaPolicy::AllMembers {
            strength: MfaStrength::PasskeyOnly,
        } => "all-passkey",
        TeamMfaPolicy::Groups { .. } => "groups",
    }
}

/// `GET /console/teams/{team}/security`.
pub async fn show(
    State(state): State<AppState>,
    who: Signed,
    Path(team): Path<String>,
    Query(q): Query<OkQuery>,
) -> Response {
    let Ok(team) = team.parse::<TeamId>() else {
        return page::Missing("team").into_response();
    };
    match render(&state, &who, team, q.ok.as_deref()).await {
        Ok(r) => r,
        Err(e) => page::api_error_page(&e),
    }
}

async fn render(
    state: &AppState,
    who: &Signed,
    team: TeamId,
    ok: Option<&str>,
) -> Result<Response, ApiError> {
    let audited = state
        .identity
        .at(who.ctx.facts())
        .team(&who.principal, team)
        .await;
    let t = finish(state, &who.ctx, audited).await?;
    let can_manage = state
        .identity
        .check(&who.principal, Action::TeamManage, &Resource::Team(team))
        .into_parts()
        .0
        .is_ok();
    let audited = state.identity.check(
        &who.principal,
        Action::SecurityEventsRead,
        &Resource::Team(team),
    );
    let events = match finish(state, &who.ctx, audited).await {
        Ok(()) => {
            let action =
                kura_types::Action::parse("data.export").map_err(|_| ApiError::EventNotRecorded)?;
            let e = SecurityEvent::new(
                state.clock.now(),
                Actor::Account {
                    id: who.principal.account.to_string(),
                },
                action,
                Outcome::Success,
            )
            .with_team(team)
            .with_target("events")
            .with_detail("format", "console");
            record_event(state, &who.ctx, e).await?;
            let query = kura_events::EventQuery {
                team: Some(team),
                order: kura_events::Order::NewestFirst,
                limit: 50,
                ..kura_events::EventQuery::default()
            };
            let page_of = state.event_log.query(query).await.map_err(|e| {
                tracing::error!(error = %e, "event query failed");
                ApiError::Internal
            })?;
            Some(page_of.events)
        }
        Err(ApiError::Identity(kura_identity::IdentityError::Denied(_))) => None,
        Err(e) => return Err(e),
    };
    let current = policy_name(&t.mfa_policy);
    let body = html! {
        (page::notice(ok))
        nav.crumbs aria-label="Breadcrumb" { a href={ "/console/teams/" (team) } { (t.name) } " / " span { "Security" } }
        header.page-head { h1 { "Security" } }
        section.card #mfa-policy {
            h2 { "Second factor requirement" }
            @if current == "groups" {
                p.muted { "The team requires MFA for chosen groups (set through the API)." }
            }
            @if can_manage {
                form method="post" action={ "/console/teams/" (team) "/mfa-policy" } {
                    (page::csrf(&who.csrf))
                    fieldset.choices {
                        legend { "Who must use a second factor" }
                        @for (value, label) in [("none", "Nobody is required (operators always are)"), ("all", "Every member, any second factor"), ("all-passkey", "Every member, passkeys only (phishing-resistant)")] {
                            label.check { input type="radio" name="policy" value=(value) checked[current == value]; " " (label) }
                        }
                    }
                    button.primary type="submit" { "Save requirement" }
                }
            } @else {
                p { "Current requirement: " strong #mfa-current { (current) } }
            }
        }
        section.card #team-events {
            h2 { "Security events" }
            @match &events {
                None => p.empty { "Your role does not include reading the team's security events (auditors and owners do)." },
                Some(list) if list.is_empty() => p.empty { "No events yet." },
                Some(list) => div.table-wrap {
                    table {
                        thead { tr { th scope="col" { "Time" } th scope="col" { "Action" } th scope="col" { "Outcome" } th scope="col" { "Target" } } }
                        tbody {
                            @for s in list {
                                tr {
                                    td data-label="Time" { (page::when(s.event.time)) }
                                    td data-label="Action" { code { (s.event.action.as_str()) } }
                                    td data-label="Outcome" { span.badge.{ "outcome-" (s.event.outcome.as_str()) } { (s.event.outcome.as_str()) } }
                                    td data-label="Target" { (s.event.target.as_deref().unwrap_or("")) }
                                }
                            }
                        }
                    }
                },
            }
        }
    };
    Ok(page::respond(
        StatusCode::OK,
        page::shell("Security", Nav::Team, &super::chrome(who), body),
    ))
}

/// The requirement form.
#[derive(Debug, Default, Deserialize)]
pub struct PolicyForm {
    #[serde(default)]
    policy: String,
}

/// `POST /console/teams/{team}/mfa-policy`.
pub async fn set_policy(
    State(state): State<AppState>,
    Path(team): Path<String>,
    p: SessionForm<PolicyForm>,
) -> Response {
    let Ok(team) = team.parse::<TeamId>() else {
        return page::Missing("team").into_response();
    };
    let policy = match p.form.policy.as_str() {
        "none" => TeamMfaPolicy::None,
        "all" => TeamMfaPolicy::AllMembers {
            strength: MfaStrength::Any,
        },
        "all-passkey" => TeamMfaPolicy::AllMembers {
            strength: MfaStrength::PasskeyOnly,
        },
        _ => {
            return page::error_page(
                StatusCode::BAD_REQUEST,
                "Unknown requirement",
                "Choose one of the listed requirements; nothing was changed.",
            );
        }
    };
    let audited = state
        .identity
        .at(p.who.ctx.facts())
        .set_team_mfa_policy(&p.who.principal, team, policy)
        .await;
    match finish(&state, &p.who.ctx, audited).await {
        Ok(()) => done(
            &format!("/console/teams/{team}/security"),
            "mfa-policy-saved",
        ),
        Err(e) => page::api_error_page(&e),
    }
}
