//! The operators' platform overview: health (serving, storage, the master
//! key, open incidents) and every team with its hosts and apps. The page
//! needs `TeamsList` (Kura ID's `all_teams` asks the policy and records a
//! refusal); each further figure is shown only where the operator's roles
//! allow reading it (keys, incidents, a team's hosts and apps), the same
//! checks the pages for those figures make.

use std::sync::atomic::Ordering;

use axum::extract::State;
use axum::response::Response;
use http::StatusCode;
use kura_events::IncidentState;
use kura_events::incident::IncidentListQuery;
use kura_identity::{Action, Resource, Team};
use maud::{Markup, html};

use super::page::{self, Nav};
use super::session::Signed;
use crate::http::AppState;
use crate::http::api::auth::finish;
use crate::http::api::error::ApiError;

/// Whether the policy lets the operator do `action` on `resource` (no event:
/// this only decides what the page shows).
fn may(who: &Signed, state: &AppState, action: Action, resource: &Resource) -> bool {
    state
        .identity
        .check(&who.principal, action, resource)
        .into_parts()
        .0
        .is_ok()
}

/// One team's row: hosts and apps when the operator may read them.
struct Row {
    team: Team,
    counts: Option<(usize, usize)>,
}

fn internal(e: impl std::fmt::Display) -> ApiError {
    tracing::error!(error = %e, "platform overview failed");
    ApiError::Internal
}

async fn overview(state: &AppState, who: &Signed) -> Result<Markup, ApiError> {
    let audited = state.identity.all_teams(&who.principal).await;
    let teams = finish(state, &who.ctx, audited).await?;
    let mut rows = Vec::with_capacity(teams.len());
    for team in teams {
        let r = Resource::Team(team.id);
        let counts =
            if may(who, state, Action::HostsRead, &r) && may(who, state, Action::AppsRead, &r) {
                let hosts = state.apps.hosts(team.id).await.map_err(ApiError::Apps)?;
                let mut apps = 0;
                for h in &hosts {
                    apps += state
                        .apps
                        .apps(team.id, h.id)
                        .await
                        .map_err(ApiError::Apps)?
                        .len();
                }
                Some((hosts.len(), apps))
            } else {
                None
            };
        rows.push(Row { team, counts });
    }
    let serving = state.ready.load(Ordering::Acquire);
    let storage = state.platform.ping().await;
    if let Err(e) = &storage {
        tracing::error!(error = %e, "platform overview: storage does not answer");
    }
    let key = if may(who, state, Action::KeysRead, &Resource::Platform) {
        let kms = state.keys.kms();
        let versions = kms.versions().await.map_err(internal)?;
        Some((kms.provider().to_owned(), versions.len()))
    } else {
        None
    };
    let open_incidents = if may(who, state, Action::IncidentsManage, &Resource::Platform) {
        let list = state
            .incidents
            .list(IncidentListQuery {
                states: vec![
                    IncidentState::Open,
                    IncidentState::Triaged,
                    IncidentState::Investigating,
                    IncidentState::Contained,
                ],
                limit: 500,
                ..IncidentListQuery::default()
            })
            .await
            .map_err(ApiError::Incident)?;
        Some(list.incidents.len())
    } else {
        None
    };
    let hosts: usize = rows.iter().filter_map(|r| r.counts).map(|c| c.0).sum();
    let apps: usize = rows.iter().filter_map(|r| r.counts).map(|c| c.1).sum();
    let body = html! {
        header.page-head {
            h1 { "Platform" }
            p.muted { "Every team on this installation, and whether the platform is healthy." }
        }
        ul.stats {
            li.card { span.stat #team-count { (rows.len()) } " teams" }
            li.card { span.stat #host-count { (hosts) } " hosts" }
            li.card { span.stat #app-count { (apps) } " apps" }
        }
        section.card #health {
            h2 { "Health" }
            dl.record-fields {
                dt { "Serving" }
                dd #health-serving { @if serving { span.badge { "ready" } } @else { span.badge.outcome-failure { "shutting down" } } }
                dt { "Storage" }
                dd #health-storage {
                    (state.platform.backend()) " · "
                    @match &storage { Ok(()) => span.badge { "answers" }, Err(_) => span.badge.outcome-failure { "does not answer" } }
                }
                @if let Some((provider, versions)) = &key {
                    dt { "Master key" }
                    dd { (provider) " · " (versions) " version(s) · " a href="/console/operator/keys" { "Keys" } }
                }
                @if let Some(n) = open_incidents {
                    dt { "Incidents" }
                    dd #health-incidents { (n) " not yet resolved · " a href="/console/operator/incidents" { "Board" } }
                }
            }
        }
        section.card #teams {
            h2 { "Teams" }
            @if rows.is_empty() {
                p.empty { "No teams yet. Create one on the Teams page: its owner gets an invitation link." }
            } @else {
                div.table-wrap {
                    table {
                        caption.sr-only { "Every team with its hosts and apps" }
                        thead { tr { th scope="col" { "Team" } th scope="col" { "Created" } th scope="col" { "Hosts" } th scope="col" { "Apps" } } }
                        tbody {
                            @for r in &rows {
                                tr data-team=(r.team.id) {
                                    td data-label="Team" { a href={ "/console/teams/" (r.team.id) } { (r.team.name) } }
                                    td data-label="Created" { (page::when(r.team.created_at)) }
                                    @match r.counts {
                                        Some((h, a)) => { td data-label="Hosts" { (h) } td data-label="Apps" { (a) } }
                                        None => { td data-label="Hosts" { span.muted { "—" } } td data-label="Apps" { span.muted { "—" } } }
                                    }
                                }
                            }
                        }
                    }
                }
            }
        }
    };
    Ok(page::shell(
        "Platform",
        Nav::Platform,
        &super::chrome(who),
        body,
    ))
}

/// `GET /console/operator/platform`.
pub async fn show(State(state): State<AppState>, who: Signed) -> Response {
    match overview(&state, &who).await {
        Ok(m) => page::respond(StatusCode::OK, m),
        Err(e) => page::api_error_page(&e),
    }
}
