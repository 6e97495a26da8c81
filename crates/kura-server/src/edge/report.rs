//! Security events for refused requests, aggregated so that a flood cannot
//! flood the log.
//!
//! Within one window (a minute, the WAF detection rule's window), the first
//! refusal of each (action, source address, rule, team) is recorded at once
//! and durably, with `count: 1`, before the refusal is answered. Repeats
//! are only counted; when the window closes each key that repeated gets one
//! summary event with `count` = the repeats and `aggregated: true`, so the
//! sum of `count` is every refusal. At most [`MAX_KEYS`] keys are tracked
//! per window; refusals beyond that are counted per action and summarised
//! in one event each (`distinct_keys_over_cap`). The log therefore takes at
//! most about 2 × [`MAX_KEYS`] + 4 edge events a minute whatever the attack
//! rate. Counts of a window that had not closed are lost if the process
//! dies; the first event of every key is not.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Arc;

use kura_events::EventSink;
use kura_types::{Action, Actor, Clock, Outcome, SecurityEvent, TeamId};
use parking_lot::Mutex;
use serde_json::{Value, json};
use time::OffsetDateTime;

/// Distinct keys tracked per window.
pub const MAX_KEYS: usize = 1000;
/// The window, in seconds.
pub const WINDOW_SECS: i64 = 60;

/// A request blocked by the platform firewall.
pub const FIREWALL_BLOCKED: &str = "edge.firewall.blocked";
/// A request blocked by the WAF.
pub const WAF_BLOCKED: &str = "edge.waf.blocked";
/// A WAF rule in detect-only mode matched.
pub const WAF_DETECTED: &str = "edge.waf.detected";
/// A request over its rate limit.
pub const RATE_LIMITED: &str = "edge.ratelimit.exceeded";

/// What was refused, for aggregation.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Refusal {
    /// One of the action constants above.
    pub action: &'static str,
    /// The client's address.
    pub source: Option<IpAddr>,
    /// The rule, list or budget that refused (`150`, `platform`, `admin_api.source`).
    pub rule: String,
    /// The team concerned.
    pub team: Option<TeamId>,
}

#[derive(Debug, Default)]
struct Window {
    started: Option<OffsetDateTime>,
    repeats: HashMap<Refusal, u64>,
    over_cap: HashMap<&'static str, u64>,
}

/// The aggregator.
#[derive(Debug)]
pub struct Reporter {
    sink: Arc<dyn EventSink>,
    clock: Arc<dyn Clock>,
    window: Mutex<Window>,
}

fn event(
    at: OffsetDateTime,
    action: &'static str,
    outcome: Outcome,
    source: Option<IpAddr>,
    team: Option<TeamId>,
) -> Option<SecurityEvent> {
    let action = Action::parse(action).ok()?;
    let mut e = SecurityEvent::new(
        at,
        Actor::System {
            component: "edge".into(),
        },
        action,
        outcome,
    );
    if let Some(ip) = source {
        e = e.with_source(ip);
    }
    if let Some(team) = team {
        e = e.with_team(team);
    }
    Some(e)
}

impl Reporter {
    /// An aggregator recording into `sink`.
    pub fn new(sink: Arc<dyn EventSink>, clock: Arc<dyn Clock>) -> Self {
        Self {
            sink,
            clock,
            window: Mutex::new(Window::default()),
        }
    }

    /// Counts one refusal; returns the event to record now when it is the
    /// first of its key in this window. `details` are added to that event.
    pub fn first_of(&self, refusal: Refusal) -> Option<Refusal> {
        let mut w = self.window.lock();
        if w.started.is_none() {
            w.started = Some(self.clock.now());
        }
        if let Some(n) = w.repeats.get_mut(&refusal) {
            *n += 1;
            return None;
        }
        if w.repeats.len() >= MAX_KEYS {
            *w.over_cap.entry(refusal.action).or_insert(0) += 1;
            return None;
        }
        w.repeats.insert(refusal.clone(), 0);
        Some(refusal)
    }

    /// Records the first refusal of a key, durably.
    pub async fn record_first(
        &self,
        refusal: &Refusal,
        request_id: Option<&str>,
        details: Vec<(&'static str, Value)>,
    ) -> Result<(), kura_events::EventError> {
        let outcome = if refusal.action == WAF_DETECTED {
            Outcome::Success
        } else {
            Outcome::Denied
        };
        let Some(mut e) = event(
            self.clock.now(),
            refusal.action,
            outcome,
            refusal.source,
            refusal.team,
        ) else {
            return Ok(());
        };
        e = e
            .with_detail("rule", refusal.rule.clone())
            .with_detail("count", 1);
        if let Some(id) = request_id {
            e = e.with_request_id(id);
        }
        for (k, v) in details {
            e = e.with_detail(k, v);
        }
        self.sink.record(e).await
    }

    /// Closes the window if it is over (or `force`), recording the summaries.
    /// Returns how many summary events were recorded.
    pub async fn flush(&self, force: bool) -> Result<usize, kura_events::EventError> {
        let now = self.clock.now();
        let closed = {
            let mut w = self.window.lock();
            let due = w
                .started
                .is_some_and(|s| (now - s).whole_seconds() >= WINDOW_SECS);
            if !(due || force) {
                return Ok(0);
            }
            std::mem::take(&mut *w)
        };
        let window_secs = closed.started.map_or(0, |s| (now - s).whole_seconds());
        let mut recorded = 0;
        for (r, n) in closed.repeats.into_iter().filter(|(_, n)| *n > 0) {
            let outcome = if r.action == WAF_DETECTED {
                Outcome::Success
            } else {
                Outcome::Denied
            };
            if let Some(e) = event(now, r.action, outcome, r.source, r.team) {
                let e = e
                    .with_detail("rule", r.rule)
                    .with_detail("count", n)
                    .with_detail("aggregated", true)
                    .with_detail("window_secs", window_secs);
                self.sink.record(e).await?;
                recorded += 1;
            }
        }
        for (action, n) in closed.over_cap {
            if let Some(e) = event(now, action, Outcome::Denied, None, None) {
                let e = e
                    .with_detail("count", n)
                    .with_detail("aggregated", true)
                    .with_detail("distinct_keys_over_cap", json!(true))
                    .with_detail("window_secs", window_secs);
                self.sink.record(e).await?;
                recorded += 1;
            }
        }
        Ok(recorded)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kura_events::MemorySink;
    use kura_types::ManualClock;

    #[tokio::test]
    async fn a_flood_becomes_one_event_plus_one_summary_per_key() {
        let sink = Arc::new(MemorySink::new());
        let clock = Arc::new(ManualClock::new(
            OffsetDateTime::UNIX_EPOCH + time::Duration::days(20000),
        ));
        let r = Reporter::new(sink.clone(), clock.clone());
        let refusal = |ip: &str| Refusal {
            action: WAF_BLOCKED,
            source: Some(ip.parse().unwrap()),
            rule: "150".into(),
            team: None,
        };
        for i in 0..10_000 {
            if let Some(first) = r.first_of(refusal("192.0.2.1")) {
                assert_eq!(i, 0);
                r.record_first(&first, Some("req-1"), vec![("location", json!("query"))])
                    .await
                    .unwrap();
            }
        }
        let first = r.first_of(refusal("192.0.2.2")).unwrap();
        r.record_first(&first, None, vec![]).await.unwrap();
        assert_eq!(r.flush(false).await.unwrap(), 0, "the window is still open");
        clock.advance(time::Duration::seconds(61));
        assert_eq!(
            r.flush(false).await.unwrap(),
            1,
            "only the repeating key gets a summary"
        );
        let events = sink.events();
        assert_eq!(events.len(), 3);
        let total: u64 = events
            .iter()
            .map(|e| e.details["count"].as_u64().unwrap())
            .sum();
        assert_eq!(total, 10_001, "counts add up to every refusal");
        assert_eq!(events[2].details["aggregated"], json!(true));
        assert!(
            r.first_of(refusal("192.0.2.1")).is_some(),
            "a new window starts over"
        );
    }

    #[tokio::test]
    async fn distinct_keys_are_capped() {
        let sink = Arc::new(MemorySink::new());
        let clock = Arc::new(ManualClock::new(OffsetDateTime::UNIX_EPOCH));
        let r = Reporter::new(sink.clone(), clock.clone());
        let mut firsts = 0;
        for i in 0..(MAX_KEYS as u32 + 500) {
            let ip = IpAddr::from(std::net::Ipv4Addr::from(0x0a00_0000 + i));
            if r.first_of(Refusal {
                action: FIREWALL_BLOCKED,
                source: Some(ip),
                rule: "platform".into(),
                team: None,
            })
            .is_some()
            {
                firsts += 1;
            }
        }
        assert_eq!(firsts, MAX_KEYS);
        assert_eq!(r.flush(true).await.unwrap(), 1);
        assert_eq!(sink.events()[0].details["count"], json!(500));
    }
}
