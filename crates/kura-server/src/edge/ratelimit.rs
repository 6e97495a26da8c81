//! Token-bucket rate limits (GCRA, through `governor`): separate budgets for
//! sign-in, the Data API, the admin API and webhooks, each counted per
//! source address, per credential (account session or API token) and per
//! team.
//!
//! Limits live in memory, per node: a restart or a policy change starts
//! every bucket full. Credentials are keyed by a hash, never by the token.

use std::net::IpAddr;
use std::num::NonZeroU32;
use std::time::Duration;

use governor::clock::{Clock as _, DefaultClock};
use governor::middleware::StateInformationMiddleware;
use governor::state::keyed::DefaultKeyedStateStore;
use governor::{Quota, RateLimiter};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// The largest rate or burst a budget may have.
pub const MAX_PER_MINUTE: u32 = 1_000_000;

/// Which budget a request spends.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Family {
    /// Sign-in, MFA verification, first-operator set-up, invitation
    /// acceptance: what password guessing goes through.
    SignIn,
    /// `/fmi/…`: the Data API and OData.
    DataApi,
    /// `/api/v1/…` and everything else.
    AdminApi,
    /// `/hooks/…`: inbound webhooks of flows.
    Webhooks,
}

impl Family {
    /// Its name in headers and events.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::SignIn => "sign_in",
            Self::DataApi => "data_api",
            Self::AdminApi => "admin_api",
            Self::Webhooks => "webhooks",
        }
    }

    fn index(self) -> usize {
        match self {
            Self::SignIn => 0,
            Self::DataApi => 1,
            Self::AdminApi => 2,
            Self::Webhooks => 3,
        }
    }

    /// The family of a request.
    pub fn of(method: &http::Method, path: &str) -> Self {
        const SIGN_IN: &[&str] = &[
            "/api/v1/sessions",
            "/api/v1/sessions/mfa/totp",
            "/api/v1/sessions/mfa/recovery",
            "/api/v1/setup",
            "/api/v1/invitations/accept",
        ];
        if is_data_api(path) {
            // The Data API's own sign-in is `POST …/sessions` (python-fmrest
            // adds a trailing slash).
            if method == http::Method::POST
                && (path.ends_with("/sessions") || path.ends_with("/sessions/"))
            {
                return Self::SignIn;
            }
            return Self::DataApi;
        }
        if path.starts_with("/hooks/") {
            return Self::Webhooks;
        }
        if method == http::Method::POST && SIGN_IN.contains(&path) {
            return Self::SignIn;
        }
        Self::AdminApi
    }
}

/// Whether a path is the FileMaker Data API (`/hosts/{host}/fmi/…`, or
/// `/fmi/…`).
pub fn is_data_api(path: &str) -> bool {
    path.starts_with("/fmi/")
        || path
            .strip_prefix("/hosts/")
            .and_then(|rest| rest.split_once('/'))
            .is_some_and(|(_, rest)| rest.starts_with("fmi/"))
}

/// Who a bucket belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum KeyKind {
    /// The client's address.
    Source,
    /// The presented credential.
    Credential,
    /// The team the request is about.
    Team,
}

impl KeyKind {
    /// Its name in events.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Source => "source",
            Self::Credential => "credential",
            Self::Team => "team",
        }
    }

    fn index(self) -> usize {
        match self {
            Self::Source => 0,
            Self::Credential => 1,
            Self::Team => 2,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Key {
    Ip(IpAddr),
    Credential([u8; 16]),
    Team(Uuid),
}

/// One bucket's size: a sustained rate and the burst it may save up.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Budget {
    /// Requests per minute, sustained.
    pub per_minute: u32,
    /// Requests that may arrive at once.
    pub burst: u32,
}

/// The three buckets of one family.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FamilyBudgets {
    /// Per client address.
    pub per_source: Budget,
    /// Per credential (session or API token).
    pub per_credential: Budget,
    /// Per team named in the path.
    pub per_team: Budget,
}

/// Every family's budgets: the `rate_limits` policy.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RateLimitPolicy {
    /// Sign-in and MFA checks.
    pub sign_in: FamilyBudgets,
    /// The Data API.
    pub data_api: FamilyBudgets,
    /// The admin API and other routes.
    pub admin_api: FamilyBudgets,
    /// Inbound webhooks.
    pub webhooks: FamilyBudgets,
}

const fn budgets(source: (u32, u32), credential: (u32, u32), team: (u32, u32)) -> FamilyBudgets {
    FamilyBudgets {
        per_source: Budget {
            per_minute: source.0,
            burst: source.1,
        },
        per_credential: Budget {
            per_minute: credential.0,
            burst: credential.1,
        },
        per_team: Budget {
            per_minute: team.0,
            burst: team.1,
        },
    }
}

impl Default for RateLimitPolicy {
    /// The documented defaults (README, "Edge").
    fn default() -> Self {
        Self {
            sign_in: budgets((60, 20), (30, 10), (600, 100)),
            data_api: budgets((3000, 600), (3000, 600), (12000, 2000)),
            admin_api: budgets((1200, 300), (1200, 300), (6000, 1000)),
            webhooks: budgets((600, 120), (600, 120), (3000, 500)),
        }
    }
}

/// A refused budget.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("rate_limits.{field}: {message}")]
pub struct RateLimitError {
    /// Which value.
    pub field: String,
    /// What is wrong.
    pub message: String,
}

impl RateLimitPolicy {
    fn family(&self, f: Family) -> &FamilyBudgets {
        match f {
            Family::SignIn => &self.sign_in,
            Family::DataApi => &self.data_api,
            Family::AdminApi => &self.admin_api,
            Family::Webhooks => &self.webhooks,
        }
    }

    /// Checks every budget: rates and bursts between 1 and
    /// [`MAX_PER_MINUTE`].
    pub fn validate(&self) -> Result<(), RateLimitError> {
        for family in [
            Family::SignIn,
            Family::DataApi,
            Family::AdminApi,
            Family::Webhooks,
        ] {
            let b = self.family(family);
            for (kind, budget) in [
                ("per_source", b.per_source),
                ("per_credential", b.per_credential),
                ("per_team", b.per_team),
            ] {
                for (name, value) in [("per_minute", budget.per_minute), ("burst", budget.burst)] {
                    if value == 0 || value > MAX_PER_MINUTE {
                        return Err(RateLimitError {
                            field: format!("{}.{kind}.{name}", family.as_str()),
                            message: format!("must be between 1 and {MAX_PER_MINUTE}, not {value}"),
                        });
                    }
                }
            }
        }
        Ok(())
    }
}

type Keyed =
    RateLimiter<Key, DefaultKeyedStateStore<Key>, DefaultClock, StateInformationMiddleware>;

/// What the limiter decided.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// Within budget; the tightest bucket's figures, for `RateLimit` headers.
    Allowed {
        /// The family.
        family: Family,
        /// The tightest bucket's burst.
        limit: u32,
        /// What is left of it.
        remaining: u32,
        /// Seconds until it is full again.
        reset_secs: u64,
        /// Its sustained rate per minute.
        per_minute: u32,
    },
    /// Over budget.
    Limited {
        /// The family.
        family: Family,
        /// Which bucket ran dry.
        kind: KeyKind,
        /// Seconds until a request would pass (at least 1).
        retry_after_secs: u64,
        /// The bucket's burst.
        limit: u32,
        /// Its sustained rate per minute.
        per_minute: u32,
    },
}

/// What a request is counted against.
#[derive(Debug, Clone, Copy, Default)]
pub struct RateKeys {
    /// The client's address.
    pub source: Option<IpAddr>,
    /// A hash of the presented credential.
    pub credential: Option<[u8; 16]>,
    /// The team in the path.
    pub team: Option<Uuid>,
}

/// The limiters of one policy.
pub struct RateLimits {
    policy: RateLimitPolicy,
    limiters: Vec<Keyed>,
    clock: DefaultClock,
}

impl std::fmt::Debug for RateLimits {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RateLimits")
            .field("policy", &self.policy)
            .finish_non_exhaustive()
    }
}

fn quota(b: Budget) -> Quota {
    let rate = NonZeroU32::new(b.per_minute).unwrap_or(NonZeroU32::MIN);
    let burst = NonZeroU32::new(b.burst).unwrap_or(NonZeroU32::MIN);
    Quota::per_minute(rate).allow_burst(burst)
}

impl RateLimits {
    /// Fresh limiters for a validated policy.
    pub fn new(policy: RateLimitPolicy) -> Self {
        let clock = DefaultClock::default();
        let mut limiters = Vec::with_capacity(12);
        for family in [
            Family::SignIn,
            Family::DataApi,
            Family::AdminApi,
            Family::Webhooks,
        ] {
            let b = policy.family(family);
            for budget in [b.per_source, b.per_credential, b.per_team] {
                limiters.push(
                    RateLimiter::keyed(quota(budget))
                        .with_middleware::<StateInformationMiddleware>(),
                );
            }
        }
        Self {
            policy,
            limiters,
            clock,
        }
    }

    /// The policy in force.
    pub fn policy(&self) -> &RateLimitPolicy {
        &self.policy
    }

    fn budget(&self, family: Family, kind: KeyKind) -> Budget {
        let b = self.policy.family(family);
        match kind {
            KeyKind::Source => b.per_source,
            KeyKind::Credential => b.per_credential,
            KeyKind::Team => b.per_team,
        }
    }

    /// Spends one request from every bucket that applies.
    pub fn check(&self, family: Family, keys: RateKeys) -> Decision {
        let candidates = [
            (KeyKind::Source, keys.source.map(Key::Ip)),
            (KeyKind::Credential, keys.credential.map(Key::Credential)),
            (KeyKind::Team, keys.team.map(Key::Team)),
        ];
        let mut tightest: Option<(u32, u32, Budget)> = None;
        for (kind, key) in candidates {
            let Some(key) = key else { continue };
            let Some(limiter) = self.limiters.get(family.index() * 3 + kind.index()) else {
                continue;
            };
            let budget = self.budget(family, kind);
            match limiter.check_key(&key) {
                Ok(snapshot) => {
                    let remaining = snapshot.remaining_burst_capacity();
                    if tightest.is_none_or(|(_, r, _)| remaining < r) {
                        tightest = Some((budget.burst, remaining, budget));
                    }
                }
                Err(not_until) => {
                    let wait = not_until.wait_time_from(self.clock.now());
                    return Decision::Limited {
                        family,
                        kind,
                        retry_after_secs: (wait.as_secs() + u64::from(wait.subsec_nanos() > 0))
                            .max(1),
                        limit: budget.burst,
                        per_minute: budget.per_minute,
                    };
                }
            }
        }
        let (limit, remaining, budget) =
            tightest.unwrap_or((0, 0, self.budget(family, KeyKind::Source)));
        Decision::Allowed {
            family,
            limit,
            remaining,
            reset_secs: refill_secs(budget, limit.saturating_sub(remaining)),
            per_minute: budget.per_minute,
        }
    }

    /// Forgets buckets that are full again, so memory follows the active
    /// clients rather than every address ever seen.
    pub fn forget_idle(&self) {
        for l in &self.limiters {
            l.retain_recent();
            l.shrink_to_fit();
        }
    }

    /// Buckets held in memory.
    pub fn buckets(&self) -> usize {
        self.limiters.iter().map(|l| l.len()).sum()
    }
}

/// Seconds to refill `missing` requests at `budget`'s rate.
fn refill_secs(budget: Budget, missing: u32) -> u64 {
    if budget.per_minute == 0 {
        return 0;
    }
    let d = Duration::from_secs(60) * missing / budget.per_minute;
    d.as_secs() + u64::from(d.subsec_nanos() > 0)
}

/// The key of a credential: the first half of its SHA-256.
pub fn credential_key(credential: &[u8]) -> [u8; 16] {
    let digest = kura_crypto::digest::sha256(credential);
    let mut out = [0u8; 16];
    out.copy_from_slice(&digest[..16]);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tiny() -> RateLimitPolicy {
        let mut p = RateLimitPolicy::default();
        p.admin_api.per_source = Budget {
            per_minute: 60,
            burst: 3,
        };
        p
    }

    #[test]
    fn a_bucket_runs_dry_after_its_burst_and_says_when_to_retry() {
        let limits = RateLimits::new(tiny());
        let keys = RateKeys {
            source: Some("192.0.2.1".parse().unwrap()),
            ..RateKeys::default()
        };
        for expected_left in [2, 1, 0] {
            match limits.check(Family::AdminApi, keys) {
                Decision::Allowed {
                    remaining, limit, ..
                } => {
                    assert_eq!((remaining, limit), (expected_left, 3));
                }
                other => panic!("{other:?}"),
            }
        }
        match limits.check(Family::AdminApi, keys) {
            Decision::Limited {
                retry_after_secs,
                kind,
                ..
            } => {
                assert_eq!(kind, KeyKind::Source);
                assert!(
                    (1..=1).contains(&retry_after_secs),
                    "one per second refills"
                );
            }
            other => panic!("{other:?}"),
        }
        // Another address and another family have their own buckets.
        let other = RateKeys {
            source: Some("192.0.2.2".parse().unwrap()),
            ..RateKeys::default()
        };
        assert!(matches!(
            limits.check(Family::AdminApi, other),
            Decision::Allowed { .. }
        ));
        assert!(matches!(
            limits.check(Family::DataApi, keys),
            Decision::Allowed { .. }
        ));
        assert!(limits.buckets() >= 2);
    }

    #[test]
    fn families_follow_the_path() {
        use http::Method;
        assert_eq!(
            Family::of(&Method::POST, "/api/v1/sessions"),
            Family::SignIn
        );
        assert_eq!(
            Family::of(&Method::GET, "/api/v1/sessions"),
            Family::AdminApi
        );
        assert_eq!(
            Family::of(&Method::POST, "/fmi/data/vLatest/databases/x/sessions"),
            Family::SignIn
        );
        assert_eq!(
            Family::of(
                &Method::GET,
                "/fmi/data/vLatest/databases/x/layouts/y/records"
            ),
            Family::DataApi
        );
        assert_eq!(Family::of(&Method::POST, "/hooks/abc"), Family::Webhooks);
    }

    #[test]
    fn zero_and_huge_budgets_are_refused() {
        let mut p = RateLimitPolicy::default();
        p.data_api.per_team.burst = 0;
        let e = p.validate().unwrap_err();
        assert_eq!(e.field, "data_api.per_team.burst");
        let mut p = RateLimitPolicy::default();
        p.sign_in.per_source.per_minute = MAX_PER_MINUTE + 1;
        assert!(p.validate().is_err());
        assert!(RateLimitPolicy::default().validate().is_ok());
    }
}
