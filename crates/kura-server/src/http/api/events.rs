//! `GET /api/v1/events`: the security event log, filtered, paged by cursor,
//! as JSON or CSV. Operators with the security responder role see every
//! team's events; a team's owners and auditors see only their team's (the
//! `team` filter is then required). The export itself is a `data.export`
//! security event, recorded before any data leaves.

use std::collections::BTreeMap;
use std::net::IpAddr;

use axum::Json;
use axum::extract::{Query, State};
use axum::response::{IntoResponse, Response};
use http::{HeaderMap, HeaderValue, header};
use kura_events::{EventQuery, Order, StoredEvent};
use kura_identity::{Action, Resource, authorize};
use kura_types::{Actor, Outcome, SecurityEvent, TeamId};
use serde::Serialize;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use super::auth::{Auth, finish, record_event};
use super::error::ApiError;
use super::parse_id;
use crate::http::AppState;

const FILTERS: &[&str] = &[
    "since",
    "until",
    "team",
    "actor",
    "action",
    "outcome",
    "source",
    "request_id",
    "cursor",
    "limit",
    "order",
    "format",
];

#[derive(Debug, PartialEq, Eq)]
enum Format {
    Json,
    Csv,
}

fn bad(field: impl Into<String>, message: impl Into<String>) -> ApiError {
    ApiError::BadFilter {
        field: field.into(),
        message: message.into(),
    }
}

fn time_param(field: &str, raw: &str) -> Result<OffsetDateTime, ApiError> {
    OffsetDateTime::parse(raw, &Rfc3339).map_err(|_| bad(field, "must be an RFC 3339 timestamp"))
}

fn parse_query(
    params: &BTreeMap<String, String>,
    headers: &HeaderMap,
) -> Result<(EventQuery, Format), ApiError> {
    if let Some(unknown) = params.keys().find(|k| !FILTERS.contains(&k.as_str())) {
        return Err(bad(
            unknown.clone(),
            format!("unknown filter; known: {}", FILTERS.join(", ")),
        ));
    }
    let p = |k: &str| params.get(k).map(String::as_str);
    let mut q = EventQuery {
        order: Order::OldestFirst,
        limit: 100,
        ..EventQuery::default()
    };
    q.since = p("since").map(|s| time_param("since", s)).transpose()?;
    q.until = p("until").map(|s| time_param("until", s)).transpose()?;
    if let (Some(since), Some(until)) = (q.since, q.until)
        && since > until
    {
        return Err(bad("until", "must not be before since"));
    }
    q.team = p("team")
        .map(|t| parse_id::<TeamId>("team", t).map_err(|_| bad("team", "must be a team id")))
        .transpose()?;
    q.actor = p("actor").map(str::to_owned);
    if let Some(action) = p("action") {
        let valid = !action.is_empty()
            && action.len() <= 128
            && action.split('.').all(|seg| {
                !seg.is_empty()
                    && seg
                        .chars()
                        .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
            });
        if !valid {
            return Err(bad(
                "action",
                "must be a dotted lowercase action prefix such as auth.signin",
            ));
        }
        q.action_prefix = Some(action.to_owned());
    }
    q.outcome = p("outcome")
        .map(|o| {
            o.parse::<Outcome>()
                .map_err(|_| bad("outcome", "must be success, failure or denied"))
        })
        .transpose()?;
    q.source = p("source")
        .map(|s| {
            s.parse::<IpAddr>()
                .map_err(|_| bad("source", "must be an IP address"))
        })
        .transpose()?;
    q.request_id = p("request_id").map(str::to_owned);
    q.cursor = p("cursor")
        .map(|c| {
            c.parse::<u64>()
                .map_err(|_| bad("cursor", "must be a cursor from next_cursor"))
        })
        .transpose()?;
    if let Some(l) = p("limit") {
        let n = l
            .parse::<usize>()
            .ok()
            .filter(|n| (1..=1000).contains(n))
            .ok_or_else(|| bad("limit", "must be between 1 and 1000"))?;
        q.limit = n;
    }
    q.order = match p("order") {
        None | Some("oldest_first") => Order::OldestFirst,
        Some("newest_first") => Order::NewestFirst,
        Some(_) => {
            return Err(bad("order", "must be oldest_first or newest_first"));
        }
    };
    let accept_csv = headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.contains("text/csv"));
    let format = match p("format") {
        Some("csv") => Format::Csv,
        Some("json") => Format::Json,
        None if accept_csv => Format::Csv,
        None => Format::Json,
        Some(_) => return Err(bad("format", "must be json or csv")),
    };
    Ok((q, format))
}

#[derive(Debug, Serialize)]
struct EventOut {
    seq: u64,
    #[serde(flatten)]
    event: SecurityEvent,
}

#[derive(Debug, Serialize)]
struct PageOut {
    events: Vec<EventOut>,
    next_cursor: Option<String>,
}

/// One CSV field: quoted when needed, and defused against spreadsheet
/// formula injection.
fn csv_field(raw: &str) -> String {
    let defused = if raw.starts_with(['=', '+', '-', '@', '\t', '\r']) {
        format!("'{raw}")
    } else {
        raw.to_owned()
    };
    if defused.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", defused.replace('"', "\"\""))
    } else {
        defused
    }
}

fn csv(events: &[StoredEvent], next_cursor: Option<u64>) -> String {
    let mut out = String::from(
        "seq,time,action,outcome,actor,team,target,source,request_id,user_agent,details\n",
    );
    for s in events {
        let e = &s.event;
        let time = e.time.format(&Rfc3339).unwrap_or_default();
        let details = serde_json::to_string(&e.details).unwrap_or_default();
        let fields = [
            s.seq.to_string(),
            time,
            e.action.as_str().to_owned(),
            e.outcome.as_str().to_owned(),
            e.actor.key(),
            e.team.map(|t| t.to_string()).unwrap_or_default(),
            e.target.clone().unwrap_or_default(),
            e.source.map(|s| s.to_string()).unwrap_or_default(),
            e.request_id.clone().unwrap_or_default(),
            e.user_agent.clone().unwrap_or_default(),
            details,
        ];
        let line: Vec<String> = fields.iter().map(|f| csv_field(f)).collect();
        out.push_str(&line.join(","));
        out.push('\n');
    }
    if let Some(c) = next_cursor {
        // The cursor travels in a header for CSV; this comment row keeps a
        // saved file self-describing without breaking CSV readers that
        // skip it.
        out.push_str(&format!("# next_cursor={c}\n"));
    }
    out
}

/// `GET /api/v1/events`.
pub async fn list(
    State(state): State<AppState>,
    auth: Auth,
    headers: HeaderMap,
    Query(params): Query<BTreeMap<String, String>>,
) -> Result<Response, ApiError> {
    let (mut query, format) = parse_query(&params, &headers)?;
    let p = &auth.principal;
    // The one policy function decides: the whole log for those allowed to
    // read platform events, otherwise one team's events for those allowed
    // to read that team's.
    if !authorize(p, Action::PlatformEventsRead, &Resource::Platform).is_allowed() {
        let audited = match query.team {
            Some(team) => {
                state
                    .identity
                    .check(p, Action::SecurityEventsRead, &Resource::Team(team))
            }
            None => state
                .identity
                .check(p, Action::PlatformEventsRead, &Resource::Platform),
        };
        finish(&state, &auth.ctx, audited).await?;
    }
    let log = state.event_log.clone();
    let mut export = SecurityEvent::new(
        state.clock.now(),
        Actor::Account {
            id: p.account.to_string(),
        },
        kura_types::Action::parse("data.export").map_err(|_| ApiError::EventNotRecorded)?,
        Outcome::Success,
    )
    .with_target("events")
    .with_detail("format", if format == Format::Csv { "csv" } else { "json" });
    for (k, v) in &params {
        export = export.with_detail(format!("filter.{k}"), v.clone());
    }
    if let Some(team) = query.team {
        export = export.with_team(team);
    }
    record_event(&state, &auth.ctx, export).await?;
    if query.limit == 0 {
        query.limit = 100;
    }
    let page = log.query(query).await.map_err(|e| {
        tracing::error!(error = %e, "event query failed");
        ApiError::Internal
    })?;
    match format {
        Format::Json => Ok(Json(PageOut {
            next_cursor: page.next_cursor.map(|c| c.to_string()),
            events: page
                .events
                .into_iter()
                .map(|s| EventOut {
                    seq: s.seq,
                    event: s.event,
                })
                .collect(),
        })
        .into_response()),
        Format::Csv => {
            let body = csv(&page.events, page.next_cursor);
            let mut response = body.into_response();
            response.headers_mut().insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("text/csv; charset=utf-8"),
            );
            if let Some(c) = page.next_cursor
                && let Ok(v) = HeaderValue::from_str(&c.to_string())
            {
                response.headers_mut().insert("x-next-cursor", v);
            }
            Ok(response)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn q(pairs: &[(&str, &str)]) -> Result<(EventQuery, Format), ApiError> {
        let params = pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        parse_query(&params, &HeaderMap::new())
    }

    fn field(r: Result<(EventQuery, Format), ApiError>) -> String {
        match r {
            Err(ApiError::BadFilter { field, .. }) => field,
            other => format!("{other:?}"),
        }
    }

    #[test]
    fn invalid_filters_are_named() {
        assert_eq!(field(q(&[("since", "yesterday")])), "since");
        assert_eq!(field(q(&[("until", "2026-13-01T00:00:00Z")])), "until");
        assert_eq!(field(q(&[("team", "x")])), "team");
        assert_eq!(field(q(&[("outcome", "maybe")])), "outcome");
        assert_eq!(field(q(&[("source", "localhost")])), "source");
        assert_eq!(field(q(&[("cursor", "-1")])), "cursor");
        assert_eq!(field(q(&[("limit", "0")])), "limit");
        assert_eq!(field(q(&[("action", "Auth..")])), "action");
        assert_eq!(field(q(&[("colour", "red")])), "colour");
        assert_eq!(field(q(&[("format", "xml")])), "format");
        let (query, format) = q(&[
            ("since", "2026-01-01T00:00:00Z"),
            ("action", "auth"),
            ("outcome", "failure"),
            ("source", "127.0.0.1"),
            ("format", "csv"),
        ])
        .unwrap();
        assert_eq!(query.action_prefix.as_deref(), Some("auth"));
        assert_eq!(query.outcome, Some(Outcome::Failure));
        assert_eq!(format, Format::Csv);
    }

    #[test]
    fn csv_fields_are_quoted_and_defused() {
        assert_eq!(csv_field("plain"), "plain");
        assert_eq!(csv_field("a,b"), "\"a,b\"");
        assert_eq!(csv_field("say \"hi\""), "\"say \"\"hi\"\"\"");
        assert_eq!(csv_field("=cmd()"), "'=cmd()");
        assert_eq!(csv_field("line\nbreak"), "\"line\nbreak\"");
    }
}
