//! Descriptions of the security events Kura ID's decisions produce.
//!
//! Kura ID does not write events itself (it does not depend on the event
//! pipeline). Every service call returns [`Audited`]: the result plus the
//! events that describe it, and the caller records those events before it
//! acknowledges the request (decision 8: no event, no action). Events never
//! carry passwords, codes, tokens or secrets; token ids and session ids are
//! safe to record.

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
/// whether the result is `Ok` or `Err`.
#[must_use = "the events must be recorded and the result handled"]
#[derive(Debug)]
pub struct Audited<T> {
    /// What happened.
    pub result: Result<T, IdentityError>,
    /// The events to record.
    pub events: Vec<IdentityEvent>,
}

impl<T> Audited<T> {
    /// Splits into the result and the events.
    pub fn into_parts(self) -> (Result<T, IdentityError>, Vec<IdentityEvent>) {
        (self.result, self.events)
    }

    /// The event names, in order (handy in tests and logs).
    pub fn actions(&self) -> Vec<&'static str> {
        self.events.iter().map(|e| e.action).collect()
    }
}

/// Collects events while a service call runs.
#[derive(Debug, Default)]
pub(crate) struct Events(pub(crate) Vec<IdentityEvent>);

impl Events {
    pub(crate) fn push(&mut self, e: IdentityEvent) {
        self.0.push(e);
    }

    pub(crate) fn finish<T>(self, result: Result<T, IdentityError>) -> Audited<T> {
        Audited {
            result,
            events: self.0,
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
