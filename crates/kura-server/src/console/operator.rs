//! Operator pages: the incidents board (by state, filtered by severity),
//! opening an incident, the incident page (timeline, linked events, state
//! changes, notes) and the security event search. Incidents need
//! `IncidentsManage` on the platform and the event search
//! `PlatformEventsRead`, both asked through `Identity::check`; the
//! incident service records every change in the event log itself, and a
//! search records a `data.export` event as the API's does.

use axum::extract::{Path, Query, State};
use axum::response::{IntoResponse, Redirect, Response};
use http::StatusCode;
use kura_events::IncidentState;
use kura_events::incident::{IncidentListQuery, NewIncident, Severity};
use kura_identity::{Action, Resource};
use kura_types::{Actor, IncidentId, Outcome, SecurityEvent};
use maud::{Markup, html};
use serde::Deserialize;

use super::page::{self, Field, Nav};
use super::session::{SessionForm, Signed};
use crate::http::AppState;
use crate::http::api::auth::{finish, record_event};
use crate::http::api::error::ApiError;

async fn permit(state: &AppState, who: &Signed, action: Action) -> Result<(), ApiError> {
    let audited = state
        .identity
        .check(&who.principal, action, &Resource::Platform);
    finish(state, &who.ctx, audited).await
}

fn actor(who: &Signed) -> Actor {
    Actor::Account {
        id: who.principal.account.to_string(),
    }
}

fn actor_text(a: &Actor) -> String {
    match a {
        Actor::Account { id } => format!("account {id}"),
        Actor::Token { id } => format!("token {id}"),
        Actor::AppAccount { name, .. } => format!("app account {name}"),
        Actor::System { component } => format!("system {component}"),
        other => format!("{other:?}"),
    }
}

/// `?severity=&ok=`.
#[derive(Debug, Default, Deserialize)]
pub struct BoardQuery {
    #[serde(default)]
    severity: Option<String>,
}

/// The new-incident form.
#[derive(Debug, Default, Deserialize)]
pub struct NewIncidentForm {
    #[serde(default)]
    title: String,
    #[serde(default)]
    severity: String,
    #[serde(default)]
    note: String,
}

const SEVERITIES: &[&str] = &["sev1", "sev2", "sev3", "sev4"];

async fn board(
    state: &AppState,
    who: &Signed,
    severity: Option<Severity>,
    f: &NewIncidentForm,
    title_error: Option<&str>,
) -> Result<Markup, ApiError> {
    permit(state, who, Action::IncidentsManage).await?;
    let list = state
        .incidents
        .list(IncidentListQuery {
            severities: severity.into_iter().collect(),
            limit: 200,
            ..IncidentListQuery::default()
        })
        .await
        .map_err(ApiError::Incident)?;
    let columns = [
        IncidentState::Open,
        IncidentState::Triaged,
        IncidentState::Investigating,
        IncidentState::Contained,
        IncidentState::Resolved,
    ];
    let body = html! {
        header.page-head { h1 { "Incidents" } }
        form.inline-form.filters method="get" action="/console/operator/incidents" {
            div.field {
                label for="f-filter-severity" { "Severity" }
                select #f-filter-severity name="severity" {
                    option value="" { "All" }
                    @for s in SEVERITIES { option value=(s) selected[severity.map(|v| v.as_str()) == Some(*s)] { (s.to_uppercase()) } }
                }
            }
            button type="submit" { "Filter" }
        }
        div.board {
            @for col in columns {
                section.column aria-label=(col.as_str()) {
                    h2 { (col.as_str()) " " span.count { (list.incidents.iter().filter(|i| i.state == col).count()) } }
                    @let items: Vec<_> = list.incidents.iter().filter(|i| i.state == col).collect();
                    @if items.is_empty() { p.empty { "Nothing here." } }
                    @for i in items {
                        a.incident-card href={ "/console/operator/incidents/" (i.id) } {
                            span.sev.{ "sev-" (i.severity.as_str()) } { (i.severity.as_str().to_uppercase()) }
                            span.incident-title { (i.title) }
                            span.muted { "opened " (page::when(i.opened_at)) }
                        }
                    }
                }
            }
        }
        section.card #open-incident {
            h2 { "Open an incident" }
            form method="post" action="/console/operator/incidents" novalidate {
                (page::csrf(&who.csrf))
                (Field::new("title", "Title").value(&f.title).error(title_error).render())
                div.field {
                    label for="f-severity" { "Severity" }
                    select #f-severity name="severity" {
                        @for s in SEVERITIES { option value=(s) selected[f.severity == *s] { (s.to_uppercase()) } }
                    }
                }
                div.field {
                    label for="f-note" { "First note (optional)" }
                    textarea #f-note name="note" rows="3" { (f.note) }
                }
                button.primary type="submit" { "Open incident" }
            }
        }
    };
    Ok(page::shell(
        "Incidents",
        Nav::Incidents,
        &super::chrome(who),
        body,
    ))
}

/// `GET /console/operator/incidents`.
pub async fn incidents(
    State(state): State<AppState>,
    who: Signed,
    Query(q): Query<BoardQuery>,
) -> Response {
    let severity = q
        .severity
        .as_deref()
        .filter(|s| !s.is_empty())
        .and_then(|s| s.parse().ok());
    match board(
        &state,
        &who,
        severity,
        &NewIncidentForm {
            severity: "sev3".into(),
            ..Default::default()
        },
        None,
    )
    .await
    {
        Ok(m) => page::respond(StatusCode::OK, m),
        Err(e) => page::api_error_page(&e),
    }
}

/// `POST /console/operator/incidents`.
pub async fn open_incident(
    State(state): State<AppState>,
    p: SessionForm<NewIncidentForm>,
) -> Response {
    if let Err(e) = permit(&state, &p.who, Action::IncidentsManage).await {
        return page::api_error_page(&e);
    }
    let f = p.form;
    let Ok(severity) = f.severity.parse::<Severity>() else {
        return page::error_page(
            StatusCode::BAD_REQUEST,
            "Unknown severity",
            "Choose SEV1 to SEV4; nothing was changed.",
        );
    };
    let note = Some(f.note.trim().to_owned()).filter(|n| !n.is_empty());
    let created = state
        .incidents
        .create(
            &actor(&p.who),
            NewIncident {
                title: f.title.trim().to_owned(),
                severity,
                team: None,
                owner: None,
                events: Vec::new(),
                note,
            },
        )
        .await;
    match created {
        Ok(i) => Redirect::to(&format!("/console/operator/incidents/{}", i.id)).into_response(),
        Err(e) => {
            let msg = page::message(&ApiError::Incident(e));
            match board(&state, &p.who, None, &f, Some(&msg)).await {
                Ok(m) => page::invalid(m),
                Err(e) => page::api_error_page(&e),
            }
        }
    }
}

fn incident_id(raw: &str) -> Result<IncidentId, page::Missing> {
    raw.parse().map_err(|_| page::Missing("incident"))
}

async fn incident_page(
    state: &AppState,
    who: &Signed,
    id: IncidentId,
    error: Option<&str>,
) -> Result<Markup, ApiError> {
    permit(state, who, Action::IncidentsManage).await?;
    let d = state.incidents.get(id).await.map_err(ApiError::Incident)?;
    let i = &d.incident;
    let next = i.state.next();
    let body = html! {
        nav.crumbs aria-label="Breadcrumb" { a href="/console/operator/incidents" { "Incidents" } " / " span { (i.title) } }
        header.page-head {
            h1 { (i.title) }
            p {
                span.sev.{ "sev-" (i.severity.as_str()) } { (i.severity.as_str().to_uppercase()) } " "
                span.badge #incident-state { (i.state.as_str()) } " "
                span.muted { "opened " (page::when(i.opened_at)) " · owner " (i.owner.as_deref().unwrap_or("nobody")) }
            }
        }
        (page::form_error(error))
        div.two-col {
            section.card #timeline {
                h2 { "Timeline" }
                @if d.timeline.is_empty() { p.empty { "No entries yet." } }
                ol.timeline {
                    @for t in &d.timeline {
                        li { span.muted { (page::when(t.at)) " · " (t.actor) " · " (t.kind) } p { (t.text) } }
                    }
                }
                form method="post" action={ "/console/operator/incidents/" (i.id) "/notes" } novalidate {
                    (page::csrf(&who.csrf))
                    div.field {
                        label for="f-note" { "Add a note" }
                        textarea #f-note name="note" rows="3" {}
                    }
                    button type="submit" { "Add note" }
                }
            }
            div {
                section.card #state {
                    h2 { "State" }
                    @if next.is_empty() {
                        p.muted { "Closed is final." }
                    } @else {
                        form method="post" action={ "/console/operator/incidents/" (i.id) "/transitions" } novalidate {
                            (page::csrf(&who.csrf))
                            div.field {
                                label for="f-to" { "Move to" }
                                select #f-to name="to" { @for s in next { option value=(s.as_str()) { (s.as_str()) } } }
                            }
                            div.field {
                                label for="f-tnote" { "Why (optional)" }
                                textarea #f-tnote name="note" rows="2" {}
                            }
                            button.primary type="submit" { "Change state" }
                        }
                    }
                }
                section.card #linked-events {
                    h2 { "Linked events" }
                    @if d.events.is_empty() { p.empty { "No events linked." } }
                    ul.plain {
                        @for e in &d.events {
                            li { code { (e.id) } @if let Some(s) = &e.stored { " " (s.event.action.as_str()) " · " (page::when(s.event.time)) } }
                        }
                    }
                }
            }
        }
    };
    Ok(page::shell(
        &i.title,
        Nav::Incidents,
        &super::chrome(who),
        body,
    ))
}

/// `GET /console/operator/incidents/{id}`.
pub async fn incident(
    State(state): State<AppState>,
    who: Signed,
    Path(id): Path<String>,
) -> Response {
    let id = match incident_id(&id) {
        Ok(i) => i,
        Err(r) => return r.into_response(),
    };
    match incident_page(&state, &who, id, None).await {
        Ok(m) => page::respond(StatusCode::OK, m),
        Err(e) => page::api_error_page(&e),
    }
}

/// The state-change form.
#[derive(Debug, Default, Deserialize)]
pub struct TransitionForm {
    #[serde(default)]
    to: String,
    #[serde(default)]
    note: String,
}

async fn after(
    state: &AppState,
    who: &Signed,
    id: IncidentId,
    r: Result<(), ApiError>,
) -> Response {
    match r {
        Ok(()) => Redirect::to(&format!("/console/operator/incidents/{id}")).into_response(),
        Err(e) => match incident_page(state, who, id, Some(&page::message(&e))).await {
            Ok(m) => page::invalid(m),
            Err(e) => page::api_error_page(&e),
        },
    }
}

/// `POST /console/operator/incidents/{id}/transitions`.
pub async fn transition(
    State(state): State<AppState>,
    Path(id): Path<String>,
    p: SessionForm<TransitionForm>,
) -> Response {
    let id = match incident_id(&id) {
        Ok(i) => i,
        Err(r) => return r.into_response(),
    };
    if let Err(e) = permit(&state, &p.who, Action::IncidentsManage).await {
        return page::api_error_page(&e);
    }
    let r = match p.form.to.parse::<IncidentState>() {
        Ok(to) => {
            let note = Some(p.form.note.trim().to_owned()).filter(|n| !n.is_empty());
            state
                .incidents
                .transition(&actor(&p.who), id, to, note)
                .await
                .map(|_| ())
                .map_err(ApiError::Incident)
        }
        Err(e) => Err(ApiError::invalid("to", e.to_string())),
    };
    after(&state, &p.who, id, r).await
}

/// The note form.
#[derive(Debug, Default, Deserialize)]
pub struct NoteForm {
    #[serde(default)]
    note: String,
}

/// `POST /console/operator/incidents/{id}/notes`.
pub async fn add_note(
    State(state): State<AppState>,
    Path(id): Path<String>,
    p: SessionForm<NoteForm>,
) -> Response {
    let id = match incident_id(&id) {
        Ok(i) => i,
        Err(r) => return r.into_response(),
    };
    if let Err(e) = permit(&state, &p.who, Action::IncidentsManage).await {
        return page::api_error_page(&e);
    }
    let r = state
        .incidents
        .add_note(&actor(&p.who), id, &p.form.note)
        .await
        .map(|_| ())
        .map_err(ApiError::Incident);
    after(&state, &p.who, id, r).await
}

/// `?action=&outcome=`.
#[derive(Debug, Default, Deserialize)]
pub struct EventSearch {
    #[serde(default)]
    action: String,
    #[serde(default)]
    outcome: String,
}

/// `GET /console/operator/events`: the newest 100 matching events.
pub async fn events(
    State(state): State<AppState>,
    who: Signed,
    Query(q): Query<EventSearch>,
) -> Response {
    if let Err(e) = permit(&state, &who, Action::PlatformEventsRead).await {
        return page::api_error_page(&e);
    }
    let outcome = match q.outcome.as_str() {
        "success" => Some(Outcome::Success),
        "failure" => Some(Outcome::Failure),
        "denied" => Some(Outcome::Denied),
        _ => None,
    };
    let action = Some(q.action.trim().to_owned()).filter(|a| !a.is_empty());
    let Ok(export) = kura_types::Action::parse("data.export") else {
        return page::api_error_page(&ApiError::EventNotRecorded);
    };
    let mut e = SecurityEvent::new(state.clock.now(), actor(&who), export, Outcome::Success)
        .with_target("events")
        .with_detail("format", "console");
    if let Some(a) = &action {
        e = e.with_detail("filter.action", a.clone());
    }
    if let Err(err) = record_event(&state, &who.ctx, e).await {
        return page::api_error_page(&err);
    }
    let query = kura_events::EventQuery {
        action_prefix: action.clone(),
        outcome,
        order: kura_events::Order::NewestFirst,
        limit: 100,
        ..kura_events::EventQuery::default()
    };
    let page_of = match state.event_log.query(query).await {
        Ok(p) => p,
        Err(err) => {
            tracing::error!(error = %err, "event query failed");
            return page::api_error_page(&ApiError::Internal);
        }
    };
    let body = html! {
        header.page-head { h1 { "Security events" } p.muted { "The newest 100 matching events from the tamper-evident log." } }
        form.inline-form.filters method="get" action="/console/operator/events" {
            (Field::new("action", "Action starts with").value(&q.action).hint("For example auth. or app.").render())
            div.field {
                label for="f-outcome" { "Outcome" }
                select #f-outcome name="outcome" {
                    option value="" { "Any" }
                    @for o in ["success", "failure", "denied"] { option value=(o) selected[q.outcome == o] { (o) } }
                }
            }
            button.primary type="submit" { "Search" }
        }
        section.card {
            @if page_of.events.is_empty() {
                p.empty { "No events match." }
            } @else {
                div.table-wrap {
                    table #events {
                        thead { tr { th scope="col" { "Time" } th scope="col" { "Action" } th scope="col" { "Outcome" } th scope="col" { "Actor" } th scope="col" { "Source" } } }
                        tbody {
                            @for s in &page_of.events {
                                tr {
                                    td data-label="Time" { (page::when(s.event.time)) }
                                    td data-label="Action" { code { (s.event.action.as_str()) } }
                                    td data-label="Outcome" { span.badge.{ "outcome-" (s.event.outcome.as_str()) } { (s.event.outcome.as_str()) } }
                                    td data-label="Actor" { (actor_text(&s.event.actor)) }
                                    td data-label="Source" { (s.event.source.map(|s| s.to_string()).unwrap_or_default()) }
                                }
                            }
                        }
                    }
                }
            }
        }
    };
    page::respond(
        StatusCode::OK,
        page::shell("Security events", Nav::Events, &super::chrome(&who), body),
    )
}
