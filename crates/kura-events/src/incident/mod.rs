//! Incidents: the rules for running a security incident to closure.
//!
//! Alerts open or join incidents ([`IncidentService::handle_alert`]); people
//! triage, own, investigate, contain, resolve and close them. This module
//! holds the rules — severities and their response-time targets, the state
//! machine, when an alert joins an incident, which channels hear of which
//! severity — and [`IncidentService`], the API the HTTP layer calls. It knows
//! no SQL (storage is [`kura_store::incidents::IncidentStore`]) and no HTTP
//! routes.
//!
//! Every change to an incident is itself a security event (`incident.*`),
//! committed in the same transaction as the change; a refused change (an
//! invalid transition, a stale version) writes neither.
//!
//! # Severities and response-time targets
//!
//! | severity | meaning | acknowledge within | contain within | status updates every |
//! |---|---|---|---|---|
//! | SEV1 critical | active compromise of the platform or of many customers | 15 minutes | 4 hours | 30 minutes |
//! | SEV2 high | likely compromise of an account, key or team | 1 hour | 24 hours | 4 hours |
//! | SEV3 medium | an attack in progress that controls are holding | 4 hours | 3 days | 1 day |
//! | SEV4 low | worth a look | 1 day | 14 days | on change |
//!
//! "Acknowledge" means the incident left `open` (someone triaged it);
//! "contain" means it reached `contained` or `resolved`. [`Incident`]
//! carries the deadlines computed from these targets
//! ([`Severity::targets`]).
//!
//! # States
//!
//! ```text
//! open ──► triaged ──► investigating ──► contained ──► resolved ──► closed
//!             │              │  ▲              │          │  ▲
//!             │              │  └──────────────┘          │  │
//!             └──────────────┴─────────────────────────────┘  │
//!                            ▲                                 │
//!                            └──────── (reopen) ───────────────┘
//! ```
//!
//! | from | may move to |
//! |---|---|
//! | open | triaged |
//! | triaged | investigating, resolved (benign or false positive) |
//! | investigating | contained, resolved (nothing to contain) |
//! | contained | resolved, investigating (containment did not hold) |
//! | resolved | closed (after review), investigating (it came back) |
//! | closed | nothing: closed is final; a recurrence is a new incident |
//!
//! # Joining
//!
//! An alert joins the newest incident opened by the same rule about the same
//! subject in the same team that is not yet resolved and whose last alert is
//! at most [`JOIN_WINDOW`] older than the new one; otherwise it opens a new
//! incident with the alert's severity. A joining alert more severe than its
//! incident raises the incident's severity.

mod channels;
mod delivery;
mod email;
mod model;
mod notify;
mod service;

use std::fmt;
use std::str::FromStr;

use kura_store::StoreError;
use kura_types::IncidentId;
use time::{Duration, OffsetDateTime};

use crate::EventError;
pub use crate::detect::Severity;

pub use channels::{
    AddedChannel, ChannelInfo, ChannelOrigin, MAX_CHANNEL_NAME, NewWebhookChannel,
    check_channel_name,
};
pub use email::{EmailChannel, EmailConfig, EmailConfigError, SmtpSecurity};
pub use model::{
    AlertOutcome, Incident, IncidentDetail, IncidentList, IncidentListQuery, NewIncident,
};
pub use notify::{
    CommunicationPlan, DeliveryTry, NotificationChannel, NotificationMessage, NotificationPolicy,
    NotificationReport, Route, WebhookChannel,
};
pub use service::IncidentService;

/// How long after an incident's last alert another alert of the same rule
/// about the same subject still joins it.
pub const JOIN_WINDOW: Duration = Duration::hours(24);

/// The longest title.
pub const MAX_TITLE: usize = 200;
/// The longest note.
pub const MAX_NOTE: usize = 16 * 1024;

/// Actions of the events incidents record.
pub mod actions {
    /// An incident was opened (by a person or by an alert).
    pub const OPENED: &str = "incident.opened";
    /// An alert joined an existing incident.
    pub const ALERT_JOINED: &str = "incident.alert.joined";
    /// An incident's severity was raised by a joining alert.
    pub const SEVERITY_RAISED: &str = "incident.severity.raised";
    /// An incident moved to another state.
    pub const STATE_CHANGED: &str = "incident.state.changed";
    /// An incident was given an owner (or lost it).
    pub const ASSIGNED: &str = "incident.assigned";
    /// A note was added to an incident's timeline.
    pub const NOTE_ADDED: &str = "incident.note.added";
    /// A notification about an incident was delivered.
    pub const NOTIFICATION_DELIVERED: &str = "incident.notification.delivered";
    /// A notification about an incident gave up.
    pub const NOTIFICATION_FAILED: &str = "incident.notification.failed";
    /// A try of a notification failed; it is retried later.
    pub const NOTIFICATION_RETRYING: &str = "incident.notification.retrying";
    /// A security responder added a notification channel.
    pub const CHANNEL_ADDED: &str = "incident.channel.added";
    /// A security responder removed a notification channel.
    pub const CHANNEL_REMOVED: &str = "incident.channel.removed";
}

/// Response-time targets of one severity.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ResponseTargets {
    /// From opening to leaving `open`.
    pub acknowledge: Duration,
    /// From opening to `contained` (or `resolved`).
    pub contain: Duration,
    /// How often responders post a status update (`None`: on change).
    pub update_every: Option<Duration>,
}

impl Severity {
    /// Every severity, most severe first.
    pub const ALL: [Severity; 4] = [
        Severity::Sev1,
        Severity::Sev2,
        Severity::Sev3,
        Severity::Sev4,
    ];

    /// The stable lowercase name (`sev1` .. `sev4`).
    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Sev1 => "sev1",
            Severity::Sev2 => "sev2",
            Severity::Sev3 => "sev3",
            Severity::Sev4 => "sev4",
        }
    }

    /// The response-time targets (see the module documentation).
    pub fn targets(self) -> ResponseTargets {
        match self {
            Severity::Sev1 => ResponseTargets {
                acknowledge: Duration::minutes(15),
                contain: Duration::hours(4),
                update_every: Some(Duration::minutes(30)),
            },
            Severity::Sev2 => ResponseTargets {
                acknowledge: Duration::hours(1),
                contain: Duration::hours(24),
                update_every: Some(Duration::hours(4)),
            },
            Severity::Sev3 => ResponseTargets {
                acknowledge: Duration::hours(4),
                contain: Duration::days(3),
                update_every: Some(Duration::days(1)),
            },
            Severity::Sev4 => ResponseTargets {
                acknowledge: Duration::days(1),
                contain: Duration::days(14),
                update_every: None,
            },
        }
    }
}

/// A string that is not a severity.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("`{0}` is not a severity (expected sev1, sev2, sev3 or sev4)")]
pub struct SeverityParseError(String);

impl FromStr for Severity {
    type Err = SeverityParseError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Severity::ALL
            .into_iter()
            .find(|v| v.as_str().eq_ignore_ascii_case(s))
            .ok_or_else(|| SeverityParseError(s.chars().take(16).collect()))
    }
}

/// Where an incident stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum IncidentState {
    /// Raised, nobody has looked yet.
    Open,
    /// Someone looked and judged it real enough to work on.
    Triaged,
    /// Being investigated.
    Investigating,
    /// The damage is stopped from spreading.
    Contained,
    /// Fixed (or found benign); awaiting review.
    Resolved,
    /// Reviewed and done. Final.
    Closed,
}

impl IncidentState {
    /// Every state, in lifecycle order.
    pub const ALL: [IncidentState; 6] = [
        IncidentState::Open,
        IncidentState::Triaged,
        IncidentState::Investigating,
        IncidentState::Contained,
        IncidentState::Resolved,
        IncidentState::Closed,
    ];

    /// The stable lowercase name.
    pub fn as_str(self) -> &'static str {
        match self {
            IncidentState::Open => "open",
            IncidentState::Triaged => "triaged",
            IncidentState::Investigating => "investigating",
            IncidentState::Contained => "contained",
            IncidentState::Resolved => "resolved",
            IncidentState::Closed => "closed",
        }
    }

    /// The states this one may move to (see the module documentation).
    pub fn next(self) -> &'static [IncidentState] {
        use IncidentState::*;
        match self {
            Open => &[Triaged],
            Triaged => &[Investigating, Resolved],
            Investigating => &[Contained, Resolved],
            Contained => &[Resolved, Investigating],
            Resolved => &[Closed, Investigating],
            Closed => &[],
        }
    }

    /// Whether the incident is still being worked on (alerts may join it).
    pub fn is_active(self) -> bool {
        !matches!(self, IncidentState::Resolved | IncidentState::Closed)
    }

    /// Checks the move to `to`.
    pub fn check_transition(self, to: IncidentState) -> Result<(), IncidentError> {
        if self.next().contains(&to) {
            Ok(())
        } else {
            Err(IncidentError::InvalidTransition { from: self, to })
        }
    }
}

impl fmt::Display for IncidentState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A string that is not an incident state.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "`{0}` is not an incident state (expected open, triaged, investigating, contained, resolved or closed)"
)]
pub struct StateParseError(String);

impl FromStr for IncidentState {
    type Err = StateParseError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        IncidentState::ALL
            .into_iter()
            .find(|v| v.as_str().eq_ignore_ascii_case(s))
            .ok_or_else(|| StateParseError(s.chars().take(32).collect()))
    }
}

fn list(states: &[IncidentState]) -> String {
    if states.is_empty() {
        return "none (closed is final)".into();
    }
    states
        .iter()
        .map(|s| s.as_str())
        .collect::<Vec<_>>()
        .join(", ")
}

/// Why an incident operation was refused or failed. Every refusal changes
/// nothing and records no event.
#[derive(Debug, thiserror::Error)]
pub enum IncidentError {
    /// No such incident.
    #[error("incident {0} not found")]
    NotFound(IncidentId),
    /// The state machine does not allow this move.
    #[error("an incident cannot move from {from} to {to}; from {from} it may move to {}", list(.from.next()))]
    InvalidTransition {
        /// The current state.
        from: IncidentState,
        /// The requested state.
        to: IncidentState,
    },
    /// The request itself is unacceptable (empty title, oversized note).
    #[error("{0}")]
    Invalid(String),
    /// The incident changed while this change was being decided; reload and
    /// retry.
    #[error("incident {0} changed meanwhile; reload it and try again")]
    Conflict(IncidentId),
    /// No notification channel of that name was added through the API.
    #[error("no notification channel named `{0}` was added through the API")]
    ChannelNotFound(String),
    /// A channel of that name exists already.
    #[error("a notification channel named `{0}` exists already")]
    ChannelExists(String),
    /// The channel comes from the configuration file, which owns it.
    #[error("notification channel `{0}` comes from the configuration file; change it there")]
    ChannelFixed(String),
    /// The change's security event could not be prepared.
    #[error(transparent)]
    Event(#[from] EventError),
    /// Storage failed (or holds something this build cannot read).
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// The deadlines of an incident opened at `opened_at` with `severity`.
pub fn deadlines(
    severity: Severity,
    opened_at: OffsetDateTime,
) -> (OffsetDateTime, OffsetDateTime) {
    let t = severity.targets();
    (opened_at + t.acknowledge, opened_at + t.contain)
}

#[cfg(test)]
mod tests {
    use super::*;
    use IncidentState::*;

    #[test]
    fn the_state_machine_allows_exactly_the_documented_moves() {
        let allowed = [
            (Open, Triaged),
            (Triaged, Investigating),
            (Triaged, Resolved),
            (Investigating, Contained),
            (Investigating, Resolved),
            (Contained, Resolved),
            (Contained, Investigating),
            (Resolved, Closed),
            (Resolved, Investigating),
        ];
        for from in IncidentState::ALL {
            for to in IncidentState::ALL {
                assert_eq!(
                    from.check_transition(to).is_ok(),
                    allowed.contains(&(from, to)),
                    "{from} -> {to}"
                );
            }
        }
        let err = Open.check_transition(Closed).unwrap_err().to_string();
        assert_eq!(
            err,
            "an incident cannot move from open to closed; from open it may move to triaged"
        );
        let err = Closed.check_transition(Open).unwrap_err().to_string();
        assert!(err.contains("closed is final"), "{err}");
    }

    #[test]
    fn names_round_trip_and_targets_tighten_with_severity() {
        for s in IncidentState::ALL {
            assert_eq!(s.as_str().parse::<IncidentState>().unwrap(), s);
        }
        for s in Severity::ALL {
            assert_eq!(s.as_str().parse::<Severity>().unwrap(), s);
            assert_eq!(s.to_string(), s.as_str());
        }
        assert!("sev5".parse::<Severity>().is_err());
        assert!("reopened".parse::<IncidentState>().is_err());
        for pair in Severity::ALL.windows(2) {
            let (a, b) = (pair[0].targets(), pair[1].targets());
            assert!(a.acknowledge < b.acknowledge && a.contain < b.contain);
        }
        assert_eq!(Severity::Sev1.targets().acknowledge, Duration::minutes(15));
        assert_eq!(Severity::Sev1.targets().contain, Duration::hours(4));
    }
}
