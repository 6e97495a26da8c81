//! Detection rules evaluated on the event stream.
//!
//! [`Detector::observe`] sees every recorded event in order and returns the
//! [`Alert`]s it causes, each linked to the events that caused it. State is
//! sliding windows in memory keyed by account or address; it starts empty
//! after a restart (a burst that straddles a restart is counted from the
//! restart on). Windows are measured on event time, not wall time.
//!
//! | rule | fires when | severity |
//! |---|---|---|
//! | `signin_failures_account` | [`SIGNIN_FAILURES_PER_ACCOUNT`] failed sign-ins against one target within [`SIGNIN_WINDOW`] | SEV3 |
//! | `signin_failures_source` | [`SIGNIN_FAILURES_PER_SOURCE`] failed sign-ins from one address within [`SIGNIN_WINDOW`] | SEV3 |
//! | `mfa_failed_after_password` | an MFA failure by an actor whose password was verified within [`MFA_WINDOW`] (the password is probably known to someone else) | SEV2 |
//! | `operator_new_source` | an operator signs in from an address never seen for them (their first sign-in only learns) | SEV3 |
//! | `privileged_role_granted` | an operator role or a team-owner role is granted | SEV2 |
//! | `master_key_rotated` / `data_key_destroyed` | a master-key rotation or a data-key destruction succeeds | SEV3 / SEV2 |
//! | `mass_export` | [`MASS_EXPORTS`] exports or deletions by one actor within [`MASS_WINDOW`], or one that reports at least [`MASS_ROWS`] rows | SEV2 |
//! | `waf_spike` | [`WAF_BLOCKS_PER_SOURCE`] WAF blocks of one address within [`WAF_WINDOW`] | SEV3 |
//!
//! After a windowed rule fires, its window for that key starts over, so a
//! continuing attack raises one alert per threshold's worth of events rather
//! than one per event.

use std::collections::{HashMap, HashSet, VecDeque};
use std::fmt;

use kura_types::{Action, Actor, EventId, Outcome, SecurityEvent, TeamId};
use serde_json::{Value, json};
use time::{Duration, OffsetDateTime};

use crate::EventError;

/// Action names the rules match on. Emitters use these constants.
pub mod actions {
    /// A sign-in attempt failed (wrong name or password).
    pub const SIGNIN_FAILED: &str = "auth.signin.failed";
    /// A sign-in completed.
    pub const SIGNIN_SUCCEEDED: &str = "auth.signin.succeeded";
    /// The password step of a sign-in succeeded (MFA may follow).
    pub const PASSWORD_VERIFIED: &str = "auth.password.verified";
    /// An MFA code was wrong.
    pub const MFA_FAILED: &str = "auth.mfa.failed";
    /// A role was granted; `details.role` names it.
    pub const ROLE_GRANTED: &str = "admin.role.granted";
    /// The master key was rotated.
    pub const MASTER_KEY_ROTATED: &str = "keys.master.rotated";
    /// An old master-key version's material was destroyed.
    pub const MASTER_KEY_RETIRED: &str = "keys.master.retired";
    /// The master-key file was sealed with a passphrase.
    pub const MASTER_KEY_SEALED: &str = "keys.master.sealed";
    /// The server started serving.
    pub const PLATFORM_STARTED: &str = "platform.started";
    /// A one-time setup link for the first operator was issued.
    pub const SETUP_LINK_ISSUED: &str = "platform.setup.link_issued";
    /// A data key was destroyed (crypto-shredding).
    pub const DATA_KEY_DESTROYED: &str = "keys.data_key.destroyed";
    /// Data was exported; `details.rows` may say how much.
    pub const DATA_EXPORT: &str = "data.export";
    /// Data was deleted in bulk; `details.rows` may say how much.
    pub const DATA_DELETE: &str = "data.delete";
    /// The WAF blocked a request.
    pub const WAF_BLOCKED: &str = "edge.waf.blocked";
    /// A detection rule fired.
    pub const ALERT_RAISED: &str = "detect.alert.raised";
}

/// Failed sign-ins against one account that raise an alert.
pub const SIGNIN_FAILURES_PER_ACCOUNT: usize = 5;
/// Failed sign-ins from one address that raise an alert.
pub const SIGNIN_FAILURES_PER_SOURCE: usize = 20;
/// The window for failed sign-ins.
pub const SIGNIN_WINDOW: Duration = Duration::minutes(10);
/// How long after a verified password an MFA failure is suspicious.
pub const MFA_WINDOW: Duration = Duration::minutes(10);
/// Exports or deletions by one actor that raise an alert.
pub const MASS_EXPORTS: usize = 10;
/// The window for exports and deletions.
pub const MASS_WINDOW: Duration = Duration::minutes(10);
/// Rows in one export or deletion that raise an alert on their own.
pub const MASS_ROWS: u64 = 100_000;
/// WAF blocks of one address that raise an alert.
pub const WAF_BLOCKS_PER_SOURCE: usize = 100;
/// The window for WAF blocks.
pub const WAF_WINDOW: Duration = Duration::minutes(1);
/// The most keys one window map tracks before idle keys are dropped.
const MAX_KEYS: usize = 50_000;

/// Incident severity, SEV1 (critical) to SEV4 (low).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Severity {
    /// Critical: active compromise of the platform or many customers.
    Sev1,
    /// High: likely compromise of an account, key or team.
    Sev2,
    /// Medium: an attack in progress that controls are holding.
    Sev3,
    /// Low: worth a look.
    Sev4,
}

impl fmt::Display for Severity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Severity::Sev1 => "sev1",
            Severity::Sev2 => "sev2",
            Severity::Sev3 => "sev3",
            Severity::Sev4 => "sev4",
        })
    }
}

/// A rule firing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Alert {
    /// The rule's name.
    pub rule: &'static str,
    /// How bad.
    pub severity: Severity,
    /// What it fired about (an account, an address, a key): alerts of one
    /// rule about one subject join one incident.
    pub subject: String,
    /// One sentence for a responder.
    pub summary: String,
    /// The events that caused it, oldest first.
    pub events: Vec<EventId>,
    /// The team concerned, if any.
    pub team: Option<TeamId>,
    /// The time of the event that tipped it.
    pub at: OffsetDateTime,
}

impl Alert {
    /// The `detect.alert.raised` event that records this alert in the log.
    pub fn to_event(&self) -> Result<SecurityEvent, EventError> {
        let action =
            Action::parse(actions::ALERT_RAISED).map_err(|e| EventError::Invalid(e.to_string()))?;
        let ids: Vec<Value> = self
            .events
            .iter()
            .map(|id| Value::String(id.to_string()))
            .collect();
        let mut event = SecurityEvent::new(
            self.at,
            Actor::System {
                component: "detect".into(),
            },
            action,
            Outcome::Success,
        )
        .with_target(format!("rule:{}", self.rule))
        .with_detail("rule", self.rule)
        .with_detail("severity", self.severity.to_string())
        .with_detail("subject", self.subject.clone())
        .with_detail("summary", self.summary.clone())
        .with_detail("events", json!(ids));
        event.team = self.team;
        Ok(event)
    }
}

/// A sliding window of events per key.
#[derive(Debug, Default)]
struct Windows {
    by_key: HashMap<String, VecDeque<(OffsetDateTime, EventId)>>,
}

impl Windows {
    /// Adds an event; returns the window's events if it reached `threshold`
    /// (and starts the window over).
    fn push(
        &mut self,
        key: String,
        event: &SecurityEvent,
        window: Duration,
        threshold: usize,
    ) -> Option<Vec<EventId>> {
        let horizon = event.time - window;
        if self.by_key.len() >= MAX_KEYS {
            self.by_key
                .retain(|_, q| q.back().is_some_and(|(t, _)| *t > horizon));
        }
        let q = self.by_key.entry(key).or_default();
        while q.front().is_some_and(|(t, _)| *t <= horizon) {
            q.pop_front();
        }
        q.push_back((event.time, event.id));
        if q.len() >= threshold {
            let ids = q.drain(..).map(|(_, id)| id).collect();
            return Some(ids);
        }
        None
    }

    /// Like `push`, for an event that stands for `weight` occurrences (an
    /// aggregated summary with a `count`); the alert lists each event once.
    fn push_weighted(
        &mut self,
        key: String,
        event: &SecurityEvent,
        window: Duration,
        threshold: usize,
        weight: usize,
    ) -> Option<Vec<EventId>> {
        let mut fired = None;
        for _ in 0..weight.clamp(1, threshold) {
            if let Some(ids) = self.push(key.clone(), event, window, threshold) {
                fired = Some(ids);
            }
        }
        fired.map(|mut ids: Vec<EventId>| {
            ids.dedup();
            ids
        })
    }
}

/// The rules and their state.
#[derive(Debug, Default)]
pub struct Detector {
    failures_by_account: Windows,
    failures_by_source: Windows,
    exports_by_actor: Windows,
    waf_by_source: Windows,
    password_verified: HashMap<String, (OffsetDateTime, EventId)>,
    operator_sources: HashMap<String, HashSet<String>>,
}

fn is_operator(event: &SecurityEvent) -> bool {
    event.details.get("operator") == Some(&Value::Bool(true))
}

fn privileged_role(event: &SecurityEvent) -> Option<String> {
    let role = event
        .details
        .get("role")
        .and_then(Value::as_str)
        .map(str::to_owned)
        .or_else(|| event.target.clone())?;
    let lower = role.to_ascii_lowercase();
    (lower.starts_with("operator") || lower.contains("owner")).then_some(role)
}

impl Detector {
    /// A detector with empty state.
    pub fn new() -> Self {
        Self::default()
    }

    /// Evaluates every rule on one event.
    pub fn observe(&mut self, event: &SecurityEvent) -> Vec<Alert> {
        let mut alerts = Vec::new();
        let mut alert = |rule, severity, subject: String, summary: String, events: Vec<EventId>| {
            alerts.push(Alert {
                rule,
                severity,
                subject,
                summary,
                events,
                team: event.team,
                at: event.time,
            });
        };
        let action = event.action.as_str();
        let actor = event.actor.key();
        let source = event.source.map(|s| s.to_string());
        let success = event.outcome == Outcome::Success;
        match action {
            actions::SIGNIN_FAILED => {
                let target = event.target.clone().unwrap_or_else(|| actor.clone());
                if let Some(ids) = self.failures_by_account.push(
                    target.clone(),
                    event,
                    SIGNIN_WINDOW,
                    SIGNIN_FAILURES_PER_ACCOUNT,
                ) {
                    alert(
                        "signin_failures_account",
                        Severity::Sev3,
                        target.clone(),
                        format!(
                            "{} failed sign-ins against {target} within 10 minutes",
                            ids.len()
                        ),
                        ids,
                    );
                }
                if let Some(src) = &source
                    && let Some(ids) = self.failures_by_source.push(
                        src.clone(),
                        event,
                        SIGNIN_WINDOW,
                        SIGNIN_FAILURES_PER_SOURCE,
                    )
                {
                    alert(
                        "signin_failures_source",
                        Severity::Sev3,
                        src.clone(),
                        format!("{} failed sign-ins from {src} within 10 minutes", ids.len()),
                        ids,
                    );
                }
            }
            actions::PASSWORD_VERIFIED if success => {
                self.password_verified.insert(actor, (event.time, event.id));
            }
            actions::MFA_FAILED => {
                if let Some((at, id)) = self.password_verified.get(&actor).copied()
                    && event.time - at <= MFA_WINDOW
                {
                    alert(
                        "mfa_failed_after_password",
                        Severity::Sev2,
                        actor.clone(),
                        format!(
                            "{actor} failed MFA after a correct password; the password may be known to someone else"
                        ),
                        vec![id, event.id],
                    );
                }
            }
            actions::SIGNIN_SUCCEEDED if success && is_operator(event) => {
                if let Some(src) = source {
                    let seen = self.operator_sources.entry(actor.clone()).or_default();
                    if !seen.is_empty() && !seen.contains(&src) {
                        alert(
                            "operator_new_source",
                            Severity::Sev3,
                            actor.clone(),
                            format!(
                                "operator {actor} signed in from {src}, an address never seen for them"
                            ),
                            vec![event.id],
                        );
                    }
                    seen.insert(src);
                }
            }
            actions::ROLE_GRANTED if success => {
                if let Some(role) = privileged_role(event) {
                    alert(
                        "privileged_role_granted",
                        Severity::Sev2,
                        event.target.clone().unwrap_or_else(|| role.clone()),
                        format!("{actor} granted the privileged role {role}"),
                        vec![event.id],
                    );
                }
            }
            actions::MASTER_KEY_ROTATED if success => alert(
                "master_key_rotated",
                Severity::Sev3,
                "master-key".to_owned(),
                format!("{actor} rotated the master key"),
                vec![event.id],
            ),
            actions::DATA_KEY_DESTROYED if success => alert(
                "data_key_destroyed",
                Severity::Sev2,
                event
                    .target
                    .clone()
                    .unwrap_or_else(|| "(unnamed)".to_owned()),
                format!(
                    "{actor} destroyed data key {}",
                    event.target.as_deref().unwrap_or("(unnamed)")
                ),
                vec![event.id],
            ),
            actions::WAF_BLOCKED => {
                // The edge aggregates floods: one event per address and rule
                // a minute, then a summary whose `count` is the repeats.
                let weight = event
                    .details
                    .get("count")
                    .and_then(Value::as_u64)
                    .map_or(1, |n| usize::try_from(n).unwrap_or(usize::MAX));
                if let Some(src) = source
                    && let Some(ids) = self.waf_by_source.push_weighted(
                        src.clone(),
                        event,
                        WAF_WINDOW,
                        WAF_BLOCKS_PER_SOURCE,
                        weight,
                    )
                {
                    alert(
                        "waf_spike",
                        Severity::Sev3,
                        src.clone(),
                        format!(
                            "the WAF blocked at least {WAF_BLOCKS_PER_SOURCE} requests from {src} within a minute"
                        ),
                        ids,
                    );
                }
            }
            _ if success
                && (event.action.has_prefix(actions::DATA_EXPORT)
                    || event.action.has_prefix(actions::DATA_DELETE)) =>
            {
                let rows = event
                    .details
                    .get("rows")
                    .and_then(Value::as_u64)
                    .unwrap_or(0);
                if rows >= MASS_ROWS {
                    alert(
                        "mass_export",
                        Severity::Sev2,
                        actor.clone(),
                        format!("{actor} ran {action} over {rows} rows"),
                        vec![event.id],
                    );
                } else if let Some(ids) =
                    self.exports_by_actor
                        .push(actor.clone(), event, MASS_WINDOW, MASS_EXPORTS)
                {
                    alert(
                        "mass_export",
                        Severity::Sev2,
                        actor.clone(),
                        format!(
                            "{actor} ran {} exports or deletions within 10 minutes",
                            ids.len()
                        ),
                        ids,
                    );
                }
            }
            _ => {}
        }
        alerts
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::IpAddr;

    const T0: i64 = 1_750_000_000;

    /// One input event: seconds after T0, actor id, action, outcome, source,
    /// extra details.
    struct Ev(
        i64,
        &'static str,
        &'static str,
        Outcome,
        Option<&'static str>,
        Value,
    );

    fn ev(at: i64, actor: &'static str, action: &'static str) -> Ev {
        Ev(at, actor, action, Outcome::Success, None, json!({}))
    }

    fn build(e: &Ev) -> SecurityEvent {
        let mut event = SecurityEvent::new(
            OffsetDateTime::from_unix_timestamp(T0 + e.0).unwrap(),
            Actor::Account { id: e.1.into() },
            Action::parse(e.2).unwrap(),
            e.3,
        );
        if let Some(src) = e.4 {
            event.source = Some(src.parse::<IpAddr>().unwrap());
        }
        if let Value::Object(map) = &e.5 {
            event.details = map.clone();
        }
        event
    }

    /// Feeds `events` in order; returns (index of the tipping event, rule,
    /// number of linked events) for every alert.
    fn check(events: &[Ev], expected: &[(usize, &str, usize)]) {
        let mut d = Detector::new();
        let mut got = Vec::new();
        let built: Vec<SecurityEvent> = events.iter().map(build).collect();
        for (i, e) in built.iter().enumerate() {
            for a in d.observe(e) {
                assert_eq!(a.events.last(), Some(&e.id), "the tipping event is linked");
                got.push((i, a.rule, a.events.len()));
            }
        }
        let expected: Vec<(usize, &str, usize)> = expected.to_vec();
        assert_eq!(got, expected);
    }

    fn failed(at: i64, actor: &'static str, src: &'static str) -> Ev {
        Ev(
            at,
            actor,
            actions::SIGNIN_FAILED,
            Outcome::Failure,
            Some(src),
            json!({}),
        )
    }

    #[test]
    fn repeated_signin_failures_against_one_account() {
        let mut evs: Vec<Ev> = (0..5).map(|i| failed(i * 60, "ann", "192.0.2.1")).collect();
        check(&evs, &[(4, "signin_failures_account", 5)]);
        // Spread over more than ten minutes, they do not add up.
        evs = (0..5)
            .map(|i| failed(i * 200, "ann", "192.0.2.1"))
            .collect();
        check(&evs, &[]);
    }

    #[test]
    fn repeated_signin_failures_from_one_address() {
        let names = ["a", "b", "c", "d", "e"];
        let evs: Vec<Ev> = (0..20)
            .map(|i| failed(i, names[(i % 5) as usize], "198.51.100.9"))
            .collect();
        check(&evs, &[(19, "signin_failures_source", 20)]);
    }

    #[test]
    fn mfa_failure_after_a_correct_password() {
        let mfa = |at| {
            Ev(
                at,
                "ann",
                actions::MFA_FAILED,
                Outcome::Failure,
                None,
                json!({}),
            )
        };
        check(
            &[ev(0, "ann", actions::PASSWORD_VERIFIED), mfa(30)],
            &[(1, "mfa_failed_after_password", 2)],
        );
        check(&[ev(0, "ann", actions::PASSWORD_VERIFIED), mfa(3600)], &[]);
        check(&[ev(0, "bob", actions::PASSWORD_VERIFIED), mfa(30)], &[]);
    }

    #[test]
    fn operator_signin_from_a_new_address() {
        let signin = |at, src| {
            Ev(
                at,
                "op",
                actions::SIGNIN_SUCCEEDED,
                Outcome::Success,
                Some(src),
                json!({"operator": true}),
            )
        };
        check(
            &[
                signin(0, "192.0.2.1"),
                signin(10, "192.0.2.1"),
                signin(20, "203.0.113.5"),
                signin(30, "203.0.113.5"),
            ],
            &[(2, "operator_new_source", 1)],
        );
        // Customers are not tracked by this rule.
        let customer = |at, src| {
            Ev(
                at,
                "c",
                actions::SIGNIN_SUCCEEDED,
                Outcome::Success,
                Some(src),
                json!({}),
            )
        };
        check(&[customer(0, "192.0.2.1"), customer(1, "203.0.113.5")], &[]);
    }

    #[test]
    fn privileged_role_grants() {
        let grant = |role: &str| {
            Ev(
                0,
                "admin",
                actions::ROLE_GRANTED,
                Outcome::Success,
                None,
                json!({"role": role}),
            )
        };
        check(
            &[grant("operator.security_responder")],
            &[(0, "privileged_role_granted", 1)],
        );
        check(&[grant("team.owner")], &[(0, "privileged_role_granted", 1)]);
        check(&[grant("team.member")], &[]);
    }

    #[test]
    fn key_rotation_and_destruction() {
        check(
            &[
                ev(0, "op", actions::MASTER_KEY_ROTATED),
                ev(1, "op", actions::DATA_KEY_DESTROYED),
                Ev(
                    2,
                    "op",
                    actions::DATA_KEY_DESTROYED,
                    Outcome::Denied,
                    None,
                    json!({}),
                ),
            ],
            &[(0, "master_key_rotated", 1), (1, "data_key_destroyed", 1)],
        );
    }

    #[test]
    fn mass_export_or_deletion() {
        let evs: Vec<Ev> = (0..10)
            .map(|i| {
                ev(
                    i * 30,
                    "ann",
                    if i % 2 == 0 {
                        "data.export"
                    } else {
                        "data.delete.records"
                    },
                )
            })
            .collect();
        check(&evs, &[(9, "mass_export", 10)]);
        check(
            &[Ev(
                0,
                "ann",
                "data.export.csv",
                Outcome::Success,
                None,
                json!({"rows": 250_000}),
            )],
            &[(0, "mass_export", 1)],
        );
        check(&[ev(0, "ann", "data.exported_view.x")], &[]);
    }

    #[test]
    fn waf_blocks_spiking_from_one_address() {
        let block = |at, src| {
            Ev(
                at,
                "x",
                actions::WAF_BLOCKED,
                Outcome::Denied,
                Some(src),
                json!({}),
            )
        };
        let mut evs: Vec<Ev> = (0..99).map(|_| block(0, "192.0.2.66")).collect();
        evs.push(block(30, "192.0.2.67"));
        evs.push(block(59, "192.0.2.66"));
        check(&evs, &[(100, "waf_spike", 100)]);
        let slow: Vec<Ev> = (0..150).map(|i| block(i, "192.0.2.66")).collect();
        check(&slow, &[]);
    }

    #[test]
    fn aggregated_waf_blocks_count_with_their_weight() {
        let counted = |at, n: u64| {
            Ev(
                at,
                "x",
                actions::WAF_BLOCKED,
                Outcome::Denied,
                Some("192.0.2.66"),
                json!({ "count": n }),
            )
        };
        // The edge's first event, then its summary of 99 repeats.
        check(&[counted(0, 1), counted(59, 99)], &[(1, "waf_spike", 2)]);
        check(&[counted(0, 1), counted(59, 50)], &[]);
    }

    #[test]
    fn alerts_become_linked_events() {
        let mut d = Detector::new();
        let e = build(&ev(0, "op", actions::MASTER_KEY_ROTATED));
        let alert = d.observe(&e).remove(0);
        let event = alert.to_event().unwrap();
        assert_eq!(event.action.as_str(), actions::ALERT_RAISED);
        assert_eq!(event.details["events"], json!([e.id.to_string()]));
        assert_eq!(event.details["severity"], json!("sev3"));
    }
}
