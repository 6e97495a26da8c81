//! Time as a dependency: code asks a [`Clock`] instead of calling `now()`, so
//! tests can move time forward to exercise expiry without sleeping.

use std::sync::Arc;
use std::sync::Mutex;

use time::{Duration, OffsetDateTime};

/// A source of the current UTC time.
pub trait Clock: Send + Sync + std::fmt::Debug + 'static {
    /// The current instant, in UTC.
    fn now(&self) -> OffsetDateTime;
}

/// The real wall clock.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> OffsetDateTime {
        OffsetDateTime::now_utc()
    }
}

/// A clock that only moves when told to; for tests of expiry and retention.
#[derive(Debug, Clone)]
pub struct ManualClock {
    now: Arc<Mutex<OffsetDateTime>>,
}

impl ManualClock {
    /// A clock frozen at `start`.
    pub fn new(start: OffsetDateTime) -> Self {
        Self {
            now: Arc::new(Mutex::new(start)),
        }
    }

    /// Moves the clock forward (or backward, for a negative duration).
    pub fn advance(&self, by: Duration) {
        let mut guard = match self.now.lock() {
            Ok(guard) => guard,
            Err(poisoned) => poisoned.into_inner(),
        };
        *guard += by;
    }
}

impl Clock for ManualClock {
    fn now(&self) -> OffsetDateTime {
        match self.now.lock() {
            Ok(guard) => *guard,
            Err(poisoned) => *poisoned.into_inner(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn manual_clock_moves_only_when_advanced() {
        let start = OffsetDateTime::UNIX_EPOCH + Duration::days(20_000);
        let clock = ManualClock::new(start);
        assert_eq!(clock.now(), start);
        clock.advance(Duration::minutes(61));
        assert_eq!(clock.now(), start + Duration::minutes(61));
        let shared = clock.clone();
        shared.advance(Duration::seconds(1));
        assert_eq!(clock.now(), start + Duration::seconds(3661));
    }
}
