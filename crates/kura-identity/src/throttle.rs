//! Brute-force defence: failure counters per account and per source address
//! with growing delays and a temporary lockout that expires by itself.
//!
//! Counters live in the store (so several nodes share them); this module only
//! decides what a counter means. Account counters are keyed by the
//! normalised email that was typed, not by account id, so an unknown address
//! is throttled exactly like a real one and the responses cannot be told
//! apart.

use kura_store::ThrottleRecord;
use time::{Duration, OffsetDateTime};

/// Throttle settings for one kind of key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ThrottlePolicy {
    /// Failures older than this are forgotten.
    pub window: Duration,
    /// Failures allowed before delays start.
    pub free_failures: u32,
    /// The first delay; each further failure doubles it.
    pub base_delay: Duration,
    /// Delays never exceed this.
    pub max_delay: Duration,
    /// Failures that start a lockout.
    pub lockout_after: u32,
    /// How long a lockout lasts.
    pub lockout: Duration,
}

impl ThrottlePolicy {
    /// Per account (sign-in and MFA codes): after 3 failures, delays of 1 s,
    /// 2 s, 4 s … up to 60 s; 10 failures lock the account for 15 minutes.
    pub const ACCOUNT: Self = Self {
        window: Duration::minutes(15),
        free_failures: 3,
        base_delay: Duration::seconds(1),
        max_delay: Duration::seconds(60),
        lockout_after: 10,
        lockout: Duration::minutes(15),
    };

    /// Per source address: more lenient (many people may share one address)
    /// but catches one address spraying many accounts.
    pub const SOURCE: Self = Self {
        window: Duration::minutes(15),
        free_failures: 10,
        base_delay: Duration::seconds(1),
        max_delay: Duration::seconds(30),
        lockout_after: 50,
        lockout: Duration::minutes(15),
    };
}

/// What a counter says about a new attempt now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ThrottleState {
    /// Go ahead.
    Open,
    /// Wait until then (a growing delay after recent failures).
    Delayed(OffsetDateTime),
    /// Locked out until then.
    Locked(OffsetDateTime),
    /// A lockout ended; the counter should be cleared (and that recorded).
    LockoutExpired,
}

impl ThrottlePolicy {
    /// The delay after `failures` failures.
    pub fn delay_after(&self, failures: u32) -> Duration {
        if failures < self.free_failures {
            return Duration::ZERO;
        }
        let exp = (failures - self.free_failures).min(30);
        let factor = 1i64 << exp;
        let d = self
            .base_delay
            .checked_mul(i32::try_from(factor).unwrap_or(i32::MAX));
        d.map_or(self.max_delay, |d| d.min(self.max_delay))
    }

    /// Judges a counter at `now`.
    pub fn state(&self, record: Option<&ThrottleRecord>, now: OffsetDateTime) -> ThrottleState {
        let Some(r) = record else {
            return ThrottleState::Open;
        };
        if let Some(until) = r.locked_until {
            return if now < until {
                ThrottleState::Locked(until)
            } else {
                ThrottleState::LockoutExpired
            };
        }
        if now - r.last_failure_at >= self.window {
            return ThrottleState::Open;
        }
        let next = r.last_failure_at + self.delay_after(r.failures);
        if now < next {
            ThrottleState::Delayed(next)
        } else {
            ThrottleState::Open
        }
    }

    /// After a failure was counted: the lockout to start, if this failure
    /// reached the threshold.
    pub fn lockout_for(&self, record: &ThrottleRecord) -> Option<OffsetDateTime> {
        (record.locked_until.is_none() && record.failures >= self.lockout_after)
            .then(|| record.last_failure_at + self.lockout)
    }
}

/// The key of an account counter.
pub fn account_key(normalised_email: &str) -> String {
    format!("account:{normalised_email}")
}

/// The key of a source-address counter.
pub fn source_key(source: std::net::IpAddr) -> String {
    format!("source:{source}")
}

/// The key of an account's MFA-code counter.
pub fn mfa_key(account: kura_types::AccountId) -> String {
    format!("mfa:{account}")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(failures: u32, last: OffsetDateTime, locked: Option<OffsetDateTime>) -> ThrottleRecord {
        ThrottleRecord {
            key: "k".into(),
            failures,
            first_failure_at: last,
            last_failure_at: last,
            locked_until: locked,
        }
    }

    #[test]
    fn delays_grow_then_cap_and_lockouts_expire() {
        let p = ThrottlePolicy::ACCOUNT;
        assert_eq!(p.delay_after(2), Duration::ZERO);
        assert_eq!(p.delay_after(3), Duration::seconds(1));
        assert_eq!(p.delay_after(4), Duration::seconds(2));
        assert_eq!(p.delay_after(6), Duration::seconds(8));
        assert_eq!(p.delay_after(9), Duration::seconds(60));
        assert_eq!(p.delay_after(40), Duration::seconds(60));
        let t = OffsetDateTime::UNIX_EPOCH + Duration::days(20_000);
        assert_eq!(p.state(None, t), ThrottleState::Open);
        assert_eq!(p.state(Some(&rec(2, t, None)), t), ThrottleState::Open);
        assert_eq!(
            p.state(Some(&rec(4, t, None)), t + Duration::seconds(1)),
            ThrottleState::Delayed(t + Duration::seconds(2))
        );
        assert_eq!(
            p.state(Some(&rec(4, t, None)), t + Duration::seconds(2)),
            ThrottleState::Open
        );
        assert_eq!(p.lockout_for(&rec(9, t, None)), None);
        let until = p.lockout_for(&rec(10, t, None)).unwrap();
        assert_eq!(until, t + Duration::minutes(15));
        let locked = rec(10, t, Some(until));
        assert_eq!(p.lockout_for(&locked), None, "a lockout starts once");
        assert_eq!(
            p.state(Some(&locked), until - Duration::seconds(1)),
            ThrottleState::Locked(until)
        );
        assert_eq!(p.state(Some(&locked), until), ThrottleState::LockoutExpired);
        assert_eq!(
            p.state(Some(&rec(8, t, None)), t + Duration::minutes(15)),
            ThrottleState::Open,
            "old failures are forgotten"
        );
    }
}
