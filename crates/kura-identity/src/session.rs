//! Session lifetime rules: idle and absolute timeouts, the short life of a
//! half-finished sign-in, and the step-up window.

use kura_store::SessionRecord;
use time::{Duration, OffsetDateTime};

use crate::policy::SessionStage;

/// Session timing, configurable per installation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SessionConfig {
    /// A session unused this long ends (default 30 minutes).
    pub idle_timeout: Duration,
    /// A session ends this long after sign-in, used or not (default 12 hours).
    pub absolute_timeout: Duration,
    /// A session still waiting for its second factor ends after this long
    /// (default 10 minutes).
    pub pending_timeout: Duration,
    /// Sensitive actions need an MFA check this recent (default 10 minutes).
    pub step_up_window: Duration,
}

impl Default for SessionConfig {
    fn default() -> Self {
        Self {
            idle_timeout: Duration::minutes(30),
            absolute_timeout: Duration::hours(12),
            pending_timeout: Duration::minutes(10),
            step_up_window: Duration::minutes(10),
        }
    }
}

/// Whether a stored session may still be used.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SessionValidity {
    /// It may.
    Valid,
    /// It was revoked (sign-out, password change, disable, admin action).
    Revoked,
    /// It was unused for longer than the idle timeout.
    IdleExpired,
    /// It outlived the absolute timeout.
    AbsoluteExpired,
    /// Sign-in was not finished in time.
    PendingExpired,
}

impl SessionValidity {
    /// A stable name for events.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Valid => "valid",
            Self::Revoked => "revoked",
            Self::IdleExpired => "idle_timeout",
            Self::AbsoluteExpired => "absolute_timeout",
            Self::PendingExpired => "sign_in_not_finished",
        }
    }
}

impl SessionConfig {
    /// Judges a stored session at `now`.
    pub fn validity(
        &self,
        s: &SessionRecord,
        stage: SessionStage,
        now: OffsetDateTime,
    ) -> SessionValidity {
        if s.revoked_at.is_some() {
            SessionValidity::Revoked
        } else if now >= s.expires_at {
            SessionValidity::AbsoluteExpired
        } else if stage != SessionStage::Complete && now >= s.created_at + self.pending_timeout {
            SessionValidity::PendingExpired
        } else if now >= s.last_seen_at + self.idle_timeout {
            SessionValidity::IdleExpired
        } else {
            SessionValidity::Valid
        }
    }

    /// Whether `at` is within the step-up window before `now`.
    pub fn is_recent(&self, at: Option<OffsetDateTime>, now: OffsetDateTime) -> bool {
        at.is_some_and(|t| t <= now && now - t <= self.step_up_window)
    }
}

#[cfg(test)]
mod tests {
    use kura_crypto::token::TokenHash;
    use kura_types::{AccountId, SessionId};

    use super::*;

    fn record(now: OffsetDateTime, cfg: &SessionConfig) -> SessionRecord {
        SessionRecord {
            id: SessionId::new(),
            token_hash: TokenHash::of("t"),
            account: AccountId::new(),
            stage: "complete".into(),
            created_at: now,
            last_seen_at: now,
            expires_at: now + cfg.absolute_timeout,
            mfa_verified_at: None,
            mfa_method: None,
            revoked_at: None,
            source: None,
        }
    }

    #[test]
    fn idle_absolute_and_pending_limits() {
        let cfg = SessionConfig::default();
        let t0 = OffsetDateTime::UNIX_EPOCH + Duration::days(20_000);
        let mut s = record(t0, &cfg);
        let c = SessionStage::Complete;
        assert_eq!(
            cfg.validity(&s, c, t0 + Duration::minutes(29)),
            SessionValidity::Valid
        );
        assert_eq!(
            cfg.validity(&s, c, t0 + Duration::minutes(30)),
            SessionValidity::IdleExpired
        );
        s.last_seen_at = t0 + Duration::hours(11) + Duration::minutes(50);
        assert_eq!(
            cfg.validity(&s, c, t0 + Duration::hours(12) - Duration::seconds(1)),
            SessionValidity::Valid
        );
        assert_eq!(
            cfg.validity(&s, c, t0 + Duration::hours(12)),
            SessionValidity::AbsoluteExpired
        );
        let p = record(t0, &cfg);
        assert_eq!(
            cfg.validity(&p, SessionStage::MfaPending, t0 + Duration::minutes(10)),
            SessionValidity::PendingExpired
        );
        s.revoked_at = Some(t0);
        assert_eq!(cfg.validity(&s, c, t0), SessionValidity::Revoked);
        assert!(cfg.is_recent(Some(t0), t0 + Duration::minutes(10)));
        assert!(!cfg.is_recent(Some(t0), t0 + Duration::minutes(10) + Duration::seconds(1)));
        assert!(!cfg.is_recent(None, t0));
    }
}
