//! `POST /api/v1/events/ingest`: security events from systems outside Kura
//! (a firewall, a host agent) over HTTPS, normalised into the one event
//! model and chained into the same log.
//!
//! Only a team's service token with the `events:ingest` scope may ingest
//! (the policy function says so: `team.events.ingest`). Every event is
//! written as that token's team: a body that names a team is refused, so a
//! token of one team can never write events as another. The actor is always
//! `System { component: "ingest:<token id>" }`; what the sender says about
//! its own actor is kept as the `external_actor` detail.
//!
//! A batch (a JSON array of at most [`MAX_BATCH`] events, at most
//! [`MAX_BODY_BYTES`]) is validated whole before anything is recorded: one
//! bad event refuses the batch with 422 naming it, and nothing is written.
//! Times more than [`MAX_FUTURE`] ahead of the server's clock or older than
//! [`MAX_AGE`] are refused (a wrong clock, a replay or a forgery). Every
//! refusal is counted by reason in the `kura_event_ingest_rejected` metric.

use std::net::IpAddr;

use axum::body::Bytes;
use axum::extract::{FromRequest, Request, State};
use axum::response::{IntoResponse, Response};
use http::{StatusCode, header};
use kura_identity::{Action, Credential, DenyReason, IdentityError, Resource};
use kura_types::{Actor, Outcome, SecurityEvent, TeamId};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use time::format_description::well_known::Rfc3339;
use time::{Duration, OffsetDateTime};

use super::auth::{Auth, finish, record_event};
use super::error::ApiError;
use crate::http::AppState;

/// The most events one request may carry.
pub const MAX_BATCH: usize = 500;
/// The largest body accepted.
pub const MAX_BODY_BYTES: usize = 1024 * 1024;
/// How far ahead of the server's clock an event's time may be.
pub const MAX_FUTURE: Duration = Duration::minutes(10);
/// How old an event may be.
pub const MAX_AGE: Duration = Duration::hours(24);
/// The longest `actor`, `target` or `user_agent` text kept.
const MAX_TEXT: usize = 512;

/// Why an ingest request was refused, one counter each.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rejection {
    /// No usable credential.
    Unauthenticated,
    /// Not a service token with the ingest scope.
    Forbidden,
    /// Not `application/json`.
    MediaType,
    /// Larger than [`MAX_BODY_BYTES`].
    TooLarge,
    /// Not well-formed JSON.
    Malformed,
    /// Not an array, empty, or more than [`MAX_BATCH`] events.
    Batch,
    /// An event names a team.
    Team,
    /// An event has a missing, unknown or mistyped field.
    Field,
    /// An event's action is not a valid action name.
    Action,
    /// An event's outcome is not success, failure or denied.
    Outcome,
    /// An event's time is not RFC 3339.
    Time,
    /// An event's time is too far ahead.
    Future,
    /// An event's time is too old.
    Stale,
    /// An event's source is not an IP address.
    Source,
    /// An event is too large for the log once encoded.
    Oversized,
}

impl Rejection {
    /// The stable label used in the metric.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Unauthenticated => "unauthenticated",
            Self::Forbidden => "forbidden",
            Self::MediaType => "media_type",
            Self::TooLarge => "too_large",
            Self::Malformed => "malformed",
            Self::Batch => "batch",
            Self::Team => "team",
            Self::Field => "field",
            Self::Action => "action",
            Self::Outcome => "outcome",
            Self::Time => "time",
            Self::Future => "future",
            Self::Stale => "stale",
            Self::Source => "source",
            Self::Oversized => "oversized",
        }
    }
}

/// One event as an outside system sends it.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ExternalEvent {
    time: String,
    action: String,
    outcome: String,
    actor: Option<String>,
    target: Option<String>,
    source: Option<String>,
    user_agent: Option<String>,
    details: Option<Map<String, Value>>,
}

#[derive(Debug, Serialize)]
struct Accepted {
    accepted: usize,
}

type Refusal = (Rejection, ApiError);

fn refuse(reason: Rejection, field: String, message: impl Into<String>) -> Refusal {
    (reason, ApiError::invalid(field, message))
}

fn clip(text: String) -> String {
    if text.chars().count() > MAX_TEXT {
        text.chars().take(MAX_TEXT).collect()
    } else {
        text
    }
}

/// Turns one sent event into a security event of `team`, or says why not.
fn normalize(
    i: usize,
    raw: Value,
    team: TeamId,
    actor: &Actor,
    now: OffsetDateTime,
) -> Result<SecurityEvent, Refusal> {
    let at = |f: &str| format!("[{i}].{f}");
    if raw.get("team").is_some() {
        return Err(refuse(
            Rejection::Team,
            at("team"),
            "events are always written as the token's team; do not send a team",
        ));
    }
    let e: ExternalEvent = serde_path_to_error::deserialize(raw).map_err(|e| {
        let path = e.path().to_string();
        let field = if path == "." {
            format!("[{i}]")
        } else {
            at(&path)
        };
        let message = e.into_inner().to_string();
        refuse(Rejection::Field, field, message)
    })?;
    let time = OffsetDateTime::parse(&e.time, &Rfc3339)
        .map_err(|_| refuse(Rejection::Time, at("time"), "must be an RFC 3339 timestamp"))?;
    if time > now + MAX_FUTURE {
        return Err(refuse(
            Rejection::Future,
            at("time"),
            format!(
                "is {} s ahead of the server's clock (at most {} s allowed)",
                (time - now).whole_seconds(),
                MAX_FUTURE.whole_seconds()
            ),
        ));
    }
    if time < now - MAX_AGE {
        return Err(refuse(
            Rejection::Stale,
            at("time"),
            format!(
                "is {} s old (at most {} s allowed)",
                (now - time).whole_seconds(),
                MAX_AGE.whole_seconds()
            ),
        ));
    }
    let action = kura_types::Action::parse(&e.action)
        .map_err(|err| refuse(Rejection::Action, at("action"), err.to_string()))?;
    let outcome: Outcome = e
        .outcome
        .parse()
        .map_err(|err: kura_types::OutcomeParseError| {
            refuse(Rejection::Outcome, at("outcome"), err.to_string())
        })?;
    let mut event = SecurityEvent::new(time, actor.clone(), action, outcome).with_team(team);
    if let Some(source) = e.source {
        let ip = source
            .parse::<IpAddr>()
            .map_err(|_| refuse(Rejection::Source, at("source"), "must be an IP address"))?;
        event = event.with_source(ip);
    }
    if let Some(target) = e.target {
        event = event.with_target(clip(target));
    }
    if let Some(ua) = e.user_agent {
        event = event.with_user_agent(clip(ua));
    }
    if let Some(details) = e.details {
        event.details = details;
    }
    // Kura's own provenance facts win over anything the sender named alike.
    event = event.with_detail("ingest", "https");
    if let Some(external) = e.actor {
        event = event.with_detail("external_actor", clip(external));
    }
    // The log refuses oversized events; find out now, before any is written.
    kura_events::prepare(event.clone())
        .map_err(|err| refuse(Rejection::Oversized, format!("[{i}]"), err.to_string()))?;
    Ok(event)
}

/// Validates a whole body into events of `team`; nothing is recorded here.
fn validate(
    bytes: &[u8],
    team: TeamId,
    actor: &Actor,
    now: OffsetDateTime,
) -> Result<Vec<SecurityEvent>, Refusal> {
    let value: Value = serde_json::from_slice(bytes)
        .map_err(|e| (Rejection::Malformed, ApiError::Malformed(e.to_string())))?;
    let Value::Array(items) = value else {
        return Err(refuse(
            Rejection::Batch,
            "body".into(),
            "must be a JSON array of events",
        ));
    };
    if items.is_empty() || items.len() > MAX_BATCH {
        return Err(refuse(
            Rejection::Batch,
            "body".into(),
            format!("must hold 1 to {MAX_BATCH} events, not {}", items.len()),
        ));
    }
    items
        .into_iter()
        .enumerate()
        .map(|(i, raw)| normalize(i, raw, team, actor, now))
        .collect()
}

/// `POST /api/v1/events/ingest`: answers 202 with the count once the whole
/// batch is durable; the batch commits in one transaction, so a failure
/// leaves none of it in the log.
pub async fn ingest(
    State(state): State<AppState>,
    auth: Result<Auth, ApiError>,
    req: Request,
) -> Result<Response, ApiError> {
    let count = |reason: Rejection| state.metrics.ingest_rejected(reason.as_str());
    let auth = auth.inspect_err(|_| count(Rejection::Unauthenticated))?;
    let p = &auth.principal;
    let (token, team) = match &p.credential {
        Credential::ApiToken {
            id,
            service_team: Some(team),
            ..
        } => (*id, *team),
        _ => {
            // Sessions and personal tokens have no team of their own to
            // write as; refuse them before looking at the body.
            count(Rejection::Forbidden);
            let reason = DenyReason::ServiceTokenRequired;
            let denied = SecurityEvent::new(
                state.clock.now(),
                Actor::Account {
                    id: p.account.to_string(),
                },
                kura_types::Action::parse("authz.denied")
                    .map_err(|_| ApiError::EventNotRecorded)?,
                Outcome::Denied,
            )
            .with_detail("action", Action::EventsIngest.as_str())
            .with_detail("reason", reason.as_str());
            record_event(&state, &auth.ctx, denied).await?;
            return Err(ApiError::Identity(IdentityError::Denied(reason)));
        }
    };
    let audited = state
        .identity
        .check(p, Action::EventsIngest, &Resource::Team(team));
    finish(&state, &auth.ctx, audited)
        .await
        .inspect_err(|_| count(Rejection::Forbidden))?;

    let json = req
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|v| v.trim().eq_ignore_ascii_case("application/json"));
    if !json {
        count(Rejection::MediaType);
        return Err(ApiError::UnsupportedMediaType);
    }
    let bytes = Bytes::from_request(req, &state).await.map_err(|e| {
        if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
            count(Rejection::TooLarge);
            ApiError::TooLarge
        } else {
            count(Rejection::Malformed);
            ApiError::Malformed("the body could not be read".into())
        }
    })?;
    let actor = Actor::System {
        component: format!("ingest:{token}"),
    };
    let events = validate(&bytes, team, &actor, state.clock.now()).map_err(|(reason, e)| {
        count(reason);
        tracing::info!(reason = reason.as_str(), %team, "ingest batch refused");
        e
    })?;
    let accepted = events.len();
    // The request id and user agent join the events to the access log; the
    // sender's own source address is kept as it sent it.
    let events = events
        .into_iter()
        .map(|event| {
            let mut event = event.with_detail("token", token.to_string());
            if let Some(peer) = auth.ctx.source {
                event = event.with_detail("peer", peer.to_string());
            }
            if let Some(id) = &auth.ctx.request_id {
                event = event.with_request_id(id.clone());
            }
            event
        })
        .collect();
    // One transaction for the whole batch: all of it is in the log, next to
    // each other, or none of it.
    state.events.record_all(events).await.map_err(|e| {
        tracing::error!(error = %e, "ingested batch not recorded");
        ApiError::EventNotRecorded
    })?;
    state.metrics.ingest_accepted(accepted);
    Ok((StatusCode::ACCEPTED, axum::Json(Accepted { accepted })).into_response())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn check(body: Value) -> Result<usize, (Rejection, String)> {
        let now = OffsetDateTime::now_utc();
        let actor = Actor::System {
            component: "ingest:test".into(),
        };
        let bytes = serde_json::to_vec(&body).unwrap();
        validate(&bytes, TeamId::new(), &actor, now)
            .map(|v| v.len())
            .map_err(|(r, e)| match e {
                ApiError::Invalid { field, .. } => (r, field),
                other => (r, format!("{other:?}")),
            })
    }

    fn good() -> Value {
        let now = OffsetDateTime::now_utc().format(&Rfc3339).unwrap();
        json!({ "time": now, "action": "edge.waf.blocked", "outcome": "denied", "source": "192.0.2.7" })
    }

    fn with(field: &str, value: Value) -> Value {
        let mut e = good();
        e[field] = value;
        e
    }

    #[test]
    fn a_batch_is_refused_whole_with_the_event_and_reason_named() {
        assert_eq!(check(json!([good(), good()])), Ok(2));
        let old = (OffsetDateTime::now_utc() - Duration::hours(25))
            .format(&Rfc3339)
            .unwrap();
        let ahead = (OffsetDateTime::now_utc() + Duration::minutes(11))
            .format(&Rfc3339)
            .unwrap();
        let cases = [
            (with("team", json!("x")), Rejection::Team, "[1].team"),
            (
                with("action", json!("Bad Action")),
                Rejection::Action,
                "[1].action",
            ),
            (
                with("outcome", json!("maybe")),
                Rejection::Outcome,
                "[1].outcome",
            ),
            (
                with("time", json!("yesterday")),
                Rejection::Time,
                "[1].time",
            ),
            (with("time", json!(old)), Rejection::Stale, "[1].time"),
            (with("time", json!(ahead)), Rejection::Future, "[1].time"),
            (
                with("source", json!("fw1")),
                Rejection::Source,
                "[1].source",
            ),
            (with("colour", json!("red")), Rejection::Field, "[1].colour"),
            (with("target", json!(7)), Rejection::Field, "[1].target"),
        ];
        for (bad, reason, field) in cases {
            assert_eq!(
                check(json!([good(), bad])),
                Err((reason, field.to_owned())),
                "{reason:?}"
            );
        }
        let many: Vec<Value> = (0..=MAX_BATCH).map(|_| good()).collect();
        assert_eq!(check(json!(many)).unwrap_err().0, Rejection::Batch);
        assert_eq!(check(json!([])).unwrap_err().0, Rejection::Batch);
        assert_eq!(check(json!({"a": 1})).unwrap_err().0, Rejection::Batch);
        let huge = with("details", json!({ "blob": "x".repeat(70 * 1024) }));
        assert_eq!(check(json!([huge])).unwrap_err().0, Rejection::Oversized);
    }
}
