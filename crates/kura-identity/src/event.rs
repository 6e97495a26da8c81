//! Descriptions of the security events Kura ID's decisions produce.
//!
//! Every service call returns [`Audited`]: the result plus the events that
//! describe it (decision 8: no event, no action). An event describing a
//! state change is appended to the event log by the store, in the same
//! transaction as the change (see [`kura_store::events::TxEvents`]), so the
//! change and its event commit together or not at all; it comes back marked
//! [`IdentityEvent::recorded`], with its stored form in [`Audited::recorded`]
//! for detection. The other events (failures and denials, where nothing
//! changed) are the caller's to record through the event pipeline before it
//! answers. Request facts ([`RequestFacts`]) reach the service through
//! [`crate::Identity::at`]. Events never carry passwords, codes, tokens or
//! secrets; token ids and session ids are safe to record.

use std::net::IpAddr;

use kura_types::{AccountId, ActionParseError, Actor, Outcome, SecurityEvent, TeamId};
use time::OffsetDateTime;

use crate::IdentityError;

/// Whether the described thing succeeded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventOutcome {
    /// It happened.
    Success,
    /// It was attempted and failed (bad credentials, expired token, …).
    Failure,
    /// The policy refused it.
    Denied,
}

impl EventOutcome {
    /// A stable name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Success => "success",
            Self::Failure => "failure",
            Self::Denied => "denied",
        }
    }
}

/// Every action name Kura ID emits. Stable: detection rules and exports
/// match on them.
pub const EVENT_ACTIONS: &[&str] = &[
    "account.created",
    "account.disabled",
    "account.enabled",
    "account.profile.changed",
    "auth.lockout.expired",
    "auth.lockout.started",
    "auth.mfa.enrolled",
    "auth.mfa.enrolment_started",
    "auth.mfa.failed",
    "auth.mfa.recovery_regenerated",
    "auth.mfa.recovery_used",
    "auth.mfa.removed",
    "auth.mfa.reset",
    "auth.mfa.verified",
    "auth.device.remembered",
    "auth.password.change_failed",
    "auth.password.changed",
    "auth.password.rehashed",
    "auth.password.reset",
    "auth.session.rejected",
    "auth.session.revoked",
    "auth.session.revoked_all",
    "auth.signin.failed",
    "auth.signin.succeeded",
    "auth.signin.throttled",
    "authz.denied",
    "invitation.accepted",
    "invitation.created",
    "invitation.rejected",
    "invitation.revoked",
    "operator.role.granted",
    "operator.role.revoked",
    "setup.first_operator.created",
    "setup.rejected",
    "team.created",
    "team.group.created",
    "team.group.member_added",
    "team.group.member_removed",
    "team.member.removed",
    "team.mfa_policy.changed",
    "team.operator_access.granted",
    "team.operator_access.revoked",
    "team.role.granted",
    "team.role.revoked",
    "token.created",
    "token.rejected",
    "token.revoked",
];

/// One security event, described.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdentityEvent {
    /// A stable dotted name, such as `auth.signin.failed`.
    pub action: &'static str,
    /// Success, failure or denial.
    pub outcome: EventOutcome,
    /// When (from the injected clock).
    pub time: OffsetDateTime,
    /// The account that acted, if known.
    pub actor: Option<AccountId>,
    /// The account acted upon, if another.
    pub subject: Option<AccountId>,
    /// The team concerned.
    pub team: Option<TeamId>,
    /// The source address of the request, if known.
    pub source: Option<IpAddr>,
    /// Further non-secret detail as name/value pairs (a reason, an id, an
    /// attempted email address, a count).
    pub details: Vec<(&'static str, String)>,
    /// Whether the store already appended it to the event log in the
    /// transaction of the state change it describes. The caller records only
    /// the events that are not.
    pub recorded: bool,
}

/// The facts of the request a service call serves, added to every event it
/// produces: the request id, the client's `User-Agent` and its address (an
/// event's own source address, when it has one, wins).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RequestFacts {
    /// The request id.
    pub request_id: Option<String>,
    /// The client's `User-Agent`.
    pub user_agent: Option<String>,
    /// The client's address.
    pub source: Option<IpAddr>,
}

impl RequestFacts {
    /// Adds these facts to an event.
    pub fn apply(&self, mut e: SecurityEvent) -> SecurityEvent {
        if let Some(id) = &self.request_id {
            e = e.with_request_id(id.clone());
        }
        if let Some(ua) = &self.user_agent {
            e = e.with_user_agent(ua.clone());
        }
        if e.source.is_none()
            && let Some(ip) = self.source
        {
            e = e.with_source(ip);
        }
        e
    }
}

impl IdentityEvent {
    pub(crate) fn new(action: &'static str, outcome: EventOutcome, time: OffsetDateTime) -> Self {
        Self {
            action,
            outcome,
            time,
            actor: None,
            subject: None,
            team: None,
            source: None,
            details: Vec::new(),
            recorded: false,
        }
    }

    pub(crate) fn actor(mut self, a: AccountId) -> Self {
        self.actor = Some(a);
        self
    }

    pub(crate) fn subject(mut self, a: AccountId) -> Self {
        self.subject = Some(a);
        self
    }

    pub(crate) fn team(mut self, t: TeamId) -> Self {
        self.team = Some(t);
        self
    }

    pub(crate) fn source(mut self, s: Option<IpAddr>) -> Self {
        self.source = s;
        self
    }

    pub(crate) fn detail(mut self, name: &'static str, value: impl ToString) -> Self {
        self.details.push((name, value.to_string()));
        self
    }

    /// The event in the shared model of `kura-types`, ready for the event
    /// pipeline (which sanitises and chains it). The actor is the acting
    /// account, or anonymous (a failed sign-in); the target is the account
    /// acted upon, as `account:<id>`.
    pub fn to_security_event(&self) -> Result<SecurityEvent, ActionParseError> {
        let actor = match self.actor {
            Some(id) => Actor::Account { id: id.to_string() },
            None => Actor::Anonymous,
        };
        let outcome = match self.outcome {
            EventOutcome::Success => Outcome::Success,
            EventOutcome::Failure => Outcome::Failure,
            EventOutcome::Denied => Outcome::Denied,
        };
        let mut e = SecurityEvent::new(
            self.time,
            actor,
            kura_types::Action::parse(self.action)?,
            outcome,
        );
        if let Some(team) = self.team {
            e = e.with_team(team);
        }
        if let Some(subject) = self.subject {
            e = e.with_target(format!("account:{subject}"));
        }
        if let Some(source) = self.source {
            e = e.with_source(source);
        }
        for (name, value) in &self.details {
            e = e.with_detail(*name, value.clone());
        }
        Ok(e)
    }

    /// The value of a detail, if present.
    pub fn detail_value(&self, name: &str) -> Option<&str> {
        self.details
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, v)| v.as_str())
    }
}

/// A result with the security events that describe it. Record the events
/// that are not [`IdentityEvent::recorded`] yet, whether the result is `Ok`
/// or `Err`.
#[must_use = "the events must be recorded and the result handled"]
#[derive(Debug)]
pub struct Audited<T> {
    /// What happened.
    pub result: Result<T, IdentityError>,
    /// Every event of the call, in order.
    pub events: Vec<IdentityEvent>,
    /// The events the store already appended together with the state
    /// changes they describe, exactly as stored (for detection rules).
    pub recorded: Vec<SecurityEvent>,
}

impl<T> Audited<T> {
    /// Splits into the result, the events still to record, and the events
    /// already recorded (as stored).
    pub fn into_parts(
        self,
    ) -> (
        Result<T, IdentityError>,
        Vec<IdentityEvent>,
        Vec<SecurityEvent>,
    ) {
        let pending = self.events.into_iter().filter(|e| !e.recorded).collect();
        (self.result, pending, self.recorded)
    }

    /// The event names, in order (handy in tests and logs).
    pub fn actions(&self) -> Vec<&'static str> {
        self.events.iter().map(|e| e.action).collect()
    }
}

/// Collects events while a service call runs.
#[derive(Debug, Default)]
pub(crate) struct Events {
    list: Vec<IdentityEvent>,
    recorded: Vec<SecurityEvent>,
}

impl Events {
    /// An event for the caller to record.
    pub(crate) fn push(&mut self, e: IdentityEvent) {
        self.list.push(e);
    }

    /// Events the store recorded with a state change, and their stored form.
    pub(crate) fn recorded(&mut self, events: Vec<(IdentityEvent, SecurityEvent)>) {
        for (mut e, stored) in events {
            e.recorded = true;
            self.list.push(e);
            self.recorded.push(stored);
        }
    }

    pub(crate) fn finish<T>(self, result: Result<T, IdentityError>) -> Audited<T> {
        Audited {
            result,
            events: self.list,
            recorded: self.recorded,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Like rust-analyzer's tidy tests: every action name written in the
    /// service code is in [`EVENT_ACTIONS`], and every one parses as an
    /// action of the shared event model.
    #[test]
    fn every_emitted_action_is_catalogued_and_valid() {
        let sources = [
            include_str!("service/mod.rs"),
            include_str!("service/signin.rs"),
            include_str!("service/account.rs"),
            include_str!("service/mfa.rs"),
            include_str!("service/passkeys.rs"),
            include_str!("service/access.rs"),
            include_str!("service/operators.rs"),
            include_str!("service/invitations.rs"),
            include_str!("service/teams.rs"),
            include_str!("service/tokens.rs"),
            include_str!("service/devices.rs"),
            include_str!("service/directory.rs"),
        ];
        let mut found = std::collections::BTreeSet::new();
        for src in sources {
            for (i, _) in src.match_indices('"') {
                let rest = &src[i + 1..];
                let Some(end) = rest.find('"') else { continue };
                let lit = &rest[..end];
                let prefixes = [
                    "auth.",
                    "authz.",
                    "account.",
                    "team.",
                    "token.",
                    "invitation.",
                    "setup.",
                    "operator.",
                ];
                if prefixes.iter().any(|p| lit.starts_with(p))
                    && lit
                        .chars()
                        .all(|c| c.is_ascii_lowercase() || c == '.' || c == '_')
                    && lit.matches('.').count() >= 1
                    && !lit.ends_with('.')
                {
                    found.insert(lit);
                }
            }
        }
        // Policy action names (`team.read` …) share the `team.` prefix but
        // live in policy.rs, not in the service files; token kinds are not
        // dotted. What is left must be catalogued.
        for lit in &found {
            assert!(
                EVENT_ACTIONS.contains(lit),
                "{lit} is emitted but not in EVENT_ACTIONS"
            );
        }
        assert!(found.len() >= 30, "the scan found only {found:?}");
        for a in EVENT_ACTIONS {
            kura_types::Action::parse(a).unwrap();
        }
    }

    #[test]
    fn converts_to_the_shared_event_model() {
        let t = OffsetDateTime::UNIX_EPOCH;
        let actor = AccountId::new();
        let subject = AccountId::new();
        let team = TeamId::new();
        let e = IdentityEvent::new("auth.password.reset", EventOutcome::Success, t)
            .actor(actor)
            .subject(subject)
            .team(team)
            .source(Some("192.0.2.1".parse().unwrap()))
            .detail("sessions_revoked", 2);
        let s = e.to_security_event().unwrap();
        assert_eq!(s.action.as_str(), "auth.password.reset");
        assert_eq!(
            s.actor,
            Actor::Account {
                id: actor.to_string()
            }
        );
        assert_eq!(s.team, Some(team));
        assert_eq!(s.target, Some(format!("account:{subject}")));
        assert_eq!(s.outcome, Outcome::Success);
        assert_eq!(s.details["sessions_revoked"], "2");
        let anon = IdentityEvent::new("auth.signin.failed", EventOutcome::Failure, t);
        assert_eq!(anon.to_security_event().unwrap().actor, Actor::Anonymous);
    }
}
