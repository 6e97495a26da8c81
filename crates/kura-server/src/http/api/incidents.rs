//! `/api/v1/incidents`: security incidents for responders. Operators with
//! the security responder role see and run every incident; the policy has
//! no team-scoped incident rule, so everyone else is refused (403) with an
//! `authz.denied` event.
//!
//! Handlers call one `IncidentService` method each with the principal as the
//! acting [`Actor`]; the service commits every change together with its
//! `incident.*` security event, and a refused change (an invalid transition)
//! writes neither.

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::Json;
use axum::extract::{Path, Query, State};
use axum::response::{IntoResponse, Response};
use http::StatusCode;
use kura_events::incident::{Incident, IncidentDetail, IncidentListQuery, NewIncident, Severity};
use kura_events::{IncidentService, IncidentState};
use kura_identity::{Action, Principal, Resource};
use kura_types::{Actor, EventId, IncidentId, SecurityEvent, TeamId};
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use super::auth::{Auth, finish};
use super::body::ApiJson;
use super::error::ApiError;
use super::parse_id;
use crate::http::AppState;

/// The most events one request may link.
const MAX_LINKED_EVENTS: usize = 500;

const FILTERS: &[&str] = &["state", "severity", "team", "cursor", "limit"];

fn bad(field: impl Into<String>, message: impl Into<String>) -> ApiError {
    ApiError::BadFilter {
        field: field.into(),
        message: message.into(),
    }
}

/// Asks the policy whether the principal may work on incidents (recording
/// the denial if not) and hands back the service.
pub(super) async fn responder(
    state: &AppState,
    auth: &Auth,
) -> Result<Arc<IncidentService>, ApiError> {
    let audited = state.identity.check(
        &auth.principal,
        Action::IncidentsManage,
        &Resource::Platform,
    );
    finish(state, &auth.ctx, audited).await?;
    Ok(Arc::clone(&state.incidents))
}

pub(super) fn actor(p: &Principal) -> Actor {
    Actor::Account {
        id: p.account.to_string(),
    }
}

pub(super) fn rfc3339(t: OffsetDateTime) -> String {
    t.format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default()
}

#[derive(Debug, Serialize)]
struct IncidentOut {
    id: String,
    title: String,
    severity: &'static str,
    state: &'static str,
    /// The states it may move to next.
    next_states: Vec<&'static str>,
    owner: Option<String>,
    team: Option<String>,
    rule: Option<String>,
    subject: Option<String>,
    opened_at: String,
    updated_at: String,
    last_alert_at: Option<String>,
    version: u64,
    acknowledge_by: String,
    contain_by: String,
}

impl From<Incident> for IncidentOut {
    fn from(i: Incident) -> Self {
        Self {
            id: i.id.to_string(),
            title: i.title,
            severity: i.severity.as_str(),
            state: i.state.as_str(),
            next_states: i.state.next().iter().map(|s| s.as_str()).collect(),
            owner: i.owner,
            team: i.team.map(|t| t.to_string()),
            rule: i.rule,
            subject: i.subject,
            opened_at: rfc3339(i.opened_at),
            updated_at: rfc3339(i.updated_at),
            last_alert_at: i.last_alert_at.map(rfc3339),
            version: i.version,
            acknowledge_by: rfc3339(i.acknowledge_by),
            contain_by: rfc3339(i.contain_by),
        }
    }
}

#[derive(Debug, Serialize)]
struct TimelineOut {
    at: String,
    actor: String,
    kind: String,
    text: String,
}

#[derive(Debug, Serialize)]
struct AlertOut {
    id: String,
    rule: String,
    severity: String,
    subject: String,
    summary: String,
    team: Option<String>,
    raised_at: String,
    events: Vec<String>,
}

#[derive(Debug, Serialize)]
struct LinkedEventOut {
    id: String,
    /// Its position in the log, unless retention pruned it.
    seq: Option<u64>,
    /// The event, unless retention pruned it.
    event: Option<SecurityEvent>,
}

#[derive(Debug, Serialize)]
struct NotificationOut {
    id: String,
    channel: String,
    reason: String,
    severity: String,
    text: String,
    created_at: String,
    status: String,
    attempts: u32,
    last_attempt_at: Option<String>,
    last_error: Option<String>,
    delivered_at: Option<String>,
    next_attempt_at: Option<String>,
    /// Every try, oldest first.
    tries: Vec<TryOut>,
}

#[derive(Debug, Serialize)]
struct TryOut {
    attempt: u32,
    at: String,
    ok: bool,
    status: Option<u16>,
    error: Option<String>,
}

#[derive(Debug, Serialize)]
struct DetailOut {
    incident: IncidentOut,
    timeline: Vec<TimelineOut>,
    alerts: Vec<AlertOut>,
    events: Vec<LinkedEventOut>,
    notifications: Vec<NotificationOut>,
}

impl From<IncidentDetail> for DetailOut {
    fn from(d: IncidentDetail) -> Self {
        let attempts = d.attempts;
        let tries = |id| {
            attempts
                .iter()
                .filter(|a| a.notification == id)
                .map(|a| TryOut {
                    attempt: a.attempt,
                    at: rfc3339(a.at),
                    ok: a.ok,
                    status: a.status,
                    error: a.error.clone(),
                })
                .collect()
        };
        Self {
            incident: d.incident.into(),
            timeline: d
                .timeline
                .into_iter()
                .map(|t| TimelineOut {
                    at: rfc3339(t.at),
                    actor: t.actor,
                    kind: t.kind,
                    text: t.text,
                })
                .collect(),
            alerts: d
                .alerts
                .into_iter()
                .map(|a| AlertOut {
                    id: a.id.to_string(),
                    rule: a.rule,
                    severity: a.severity,
                    subject: a.subject,
                    summary: a.summary,
                    team: a.team.map(|t| t.to_string()),
                    raised_at: rfc3339(a.raised_at),
                    events: a.events.iter().map(ToString::to_string).collect(),
                })
                .collect(),
            events: d
                .events
                .into_iter()
                .map(|e| LinkedEventOut {
                    id: e.id.to_string(),
                    seq: e.stored.as_ref().map(|s| s.seq),
                    event: e.stored.map(|s| s.event),
                })
                .collect(),
            notifications: d
                .notifications
                .into_iter()
                .map(|n| NotificationOut {
                    tries: tries(n.id),
                    next_attempt_at: n.next_attempt_at.map(rfc3339),
                    id: n.id.to_string(),
                    channel: n.channel,
                    reason: n.reason,
                    severity: n.severity,
                    text: n.text,
                    created_at: rfc3339(n.created_at),
                    status: n.status,
                    attempts: n.attempts,
                    last_attempt_at: n.last_attempt_at.map(rfc3339),
                    last_error: n.last_error,
                    delivered_at: n.delivered_at.map(rfc3339),
                })
                .collect(),
        }
    }
}

#[derive(Debug, Serialize)]
struct PageOut {
    incidents: Vec<IncidentOut>,
    next_cursor: Option<String>,
}

fn parse_list(params: &BTreeMap<String, String>) -> Result<IncidentListQuery, ApiError> {
    if let Some(unknown) = params.keys().find(|k| !FILTERS.contains(&k.as_str())) {
        return Err(bad(
            unknown.clone(),
            format!("unknown filter; known: {}", FILTERS.join(", ")),
        ));
    }
    let p = |k: &str| params.get(k).map(String::as_str);
    let mut q = IncidentListQuery::default();
    // Several states or severities are comma-separated.
    if let Some(raw) = p("state") {
        q.states = raw
            .split(',')
            .map(|s| s.trim().parse::<IncidentState>())
            .collect::<Result<_, _>>()
            .map_err(|e| bad("state", e.to_string()))?;
    }
    if let Some(raw) = p("severity") {
        q.severities = raw
            .split(',')
            .map(|s| s.trim().parse::<Severity>())
            .collect::<Result<_, _>>()
            .map_err(|e| bad("severity", e.to_string()))?;
    }
    q.team = p("team")
        .map(|t| {
            t.parse::<TeamId>()
                .map_err(|_| bad("team", "must be a team id"))
        })
        .transpose()?;
    q.cursor = p("cursor")
        .map(|c| {
            c.parse::<IncidentId>()
                .map_err(|_| bad("cursor", "must be a cursor from next_cursor"))
        })
        .transpose()?;
    q.limit = match p("limit") {
        None => 50,
        Some(l) => l
            .parse::<usize>()
            .ok()
            .filter(|n| (1..=500).contains(n))
            .ok_or_else(|| bad("limit", "must be between 1 and 500"))?,
    };
    Ok(q)
}

/// `GET /api/v1/incidents`.
pub async fn list(
    State(state): State<AppState>,
    auth: Auth,
    Query(params): Query<BTreeMap<String, String>>,
) -> Result<Response, ApiError> {
    let query = parse_list(&params)?;
    let service = responder(&state, &auth).await?;
    let page = service.list(query).await.map_err(ApiError::Incident)?;
    Ok(Json(PageOut {
        incidents: page.incidents.into_iter().map(IncidentOut::from).collect(),
        next_cursor: page.next_cursor.map(|c| c.to_string()),
    })
    .into_response())
}

/// `POST /api/v1/incidents`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateIncident {
    title: String,
    severity: String,
    team: Option<String>,
    owner: Option<String>,
    #[serde(default)]
    events: Vec<String>,
    note: Option<String>,
}

/// `POST /api/v1/incidents`: opens an incident by hand.
pub async fn create(
    State(state): State<AppState>,
    auth: Auth,
    ApiJson(req): ApiJson<CreateIncident>,
) -> Result<Response, ApiError> {
    let service = responder(&state, &auth).await?;
    let severity: Severity =
        req.severity
            .parse()
            .map_err(|e: kura_events::incident::SeverityParseError| {
                ApiError::invalid("severity", e.to_string())
            })?;
    let team = req
        .team
        .as_deref()
        .map(|t| parse_id::<TeamId>("team", t))
        .transpose()?;
    if req.events.len() > MAX_LINKED_EVENTS {
        return Err(ApiError::invalid(
            "events",
            format!("at most {MAX_LINKED_EVENTS} events"),
        ));
    }
    let events = req
        .events
        .iter()
        .enumerate()
        .map(|(i, e)| parse_id::<EventId>(&format!("events[{i}]"), e))
        .collect::<Result<Vec<_>, _>>()?;
    let incident = service
        .create(
            &actor(&auth.principal),
            NewIncident {
                title: req.title,
                severity,
                team,
                owner: req.owner,
                events,
                note: req.note,
            },
        )
        .await
        .map_err(ApiError::Incident)?;
    Ok((StatusCode::CREATED, Json(IncidentOut::from(incident))).into_response())
}

/// `GET /api/v1/incidents/{id}`.
pub async fn get(
    State(state): State<AppState>,
    auth: Auth,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let id = parse_id::<IncidentId>("id", &id)?;
    let service = responder(&state, &auth).await?;
    let detail = service.get(id).await.map_err(ApiError::Incident)?;
    Ok(Json(DetailOut::from(detail)).into_response())
}

/// `PUT /api/v1/incidents/{id}/owner`: `owner` null unassigns.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SetOwner {
    owner: Option<String>,
}

/// `PUT /api/v1/incidents/{id}/owner`.
pub async fn set_owner(
    State(state): State<AppState>,
    auth: Auth,
    Path(id): Path<String>,
    ApiJson(req): ApiJson<SetOwner>,
) -> Result<Response, ApiError> {
    let id = parse_id::<IncidentId>("id", &id)?;
    let service = responder(&state, &auth).await?;
    let incident = service
        .assign(&actor(&auth.principal), id, req.owner)
        .await
        .map_err(ApiError::Incident)?;
    Ok(Json(IncidentOut::from(incident)).into_response())
}

/// `POST /api/v1/incidents/{id}/transitions`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Transition {
    state: String,
    note: Option<String>,
}

/// `POST /api/v1/incidents/{id}/transitions`: a move the state machine does
/// not allow is a 409 naming the allowed next states, and changes nothing.
pub async fn transition(
    State(state): State<AppState>,
    auth: Auth,
    Path(id): Path<String>,
    ApiJson(req): ApiJson<Transition>,
) -> Result<Response, ApiError> {
    let id = parse_id::<IncidentId>("id", &id)?;
    let service = responder(&state, &auth).await?;
    let to: IncidentState =
        req.state
            .parse()
            .map_err(|e: kura_events::incident::StateParseError| {
                ApiError::invalid("state", e.to_string())
            })?;
    let incident = service
        .transition(&actor(&auth.principal), id, to, req.note)
        .await
        .map_err(ApiError::Incident)?;
    Ok(Json(IncidentOut::from(incident)).into_response())
}

/// `POST /api/v1/incidents/{id}/notes`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Note {
    text: String,
}

/// `POST /api/v1/incidents/{id}/notes`.
pub async fn add_note(
    State(state): State<AppState>,
    auth: Auth,
    Path(id): Path<String>,
    ApiJson(req): ApiJson<Note>,
) -> Result<Response, ApiError> {
    let id = parse_id::<IncidentId>("id", &id)?;
    let service = responder(&state, &auth).await?;
    service
        .add_note(&actor(&auth.principal), id, &req.text)
        .await
        .map_err(ApiError::Incident)?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn field(pairs: &[(&str, &str)]) -> String {
        let params = pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        match parse_list(&params) {
            Err(ApiError::BadFilter { field, .. }) => field,
            other => format!("{other:?}"),
        }
    }

    #[test]
    fn invalid_filters_are_named() {
        assert_eq!(field(&[("state", "reopened")]), "state");
        assert_eq!(field(&[("severity", "sev9")]), "severity");
        assert_eq!(field(&[("team", "x")]), "team");
        assert_eq!(field(&[("cursor", "x")]), "cursor");
        assert_eq!(field(&[("limit", "0")]), "limit");
        assert_eq!(field(&[("colour", "red")]), "colour");
        let params = [("state", "open,triaged"), ("severity", "sev1")]
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        let q = parse_list(&params).unwrap();
        assert_eq!(q.states, [IncidentState::Open, IncidentState::Triaged]);
        assert_eq!(q.severities, [Severity::Sev1]);
        assert_eq!(q.limit, 50);
    }
}
