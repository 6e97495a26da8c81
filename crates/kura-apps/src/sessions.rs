//! Data API sessions: bearer tokens (stored only as hashes) bound to one
//! app and app account, expiring 15 minutes after their last use, with the
//! session's global field values.

use std::collections::HashMap;
use std::sync::Arc;

use kura_crypto::token::{SecretToken, TokenHash};
use kura_store::app_data::Cell;
use kura_types::{AppId, Clock};
use parking_lot::Mutex;
use time::{Duration, OffsetDateTime};

use crate::error::FmError;

/// FileMaker's idle timeout.
pub const IDLE_TIMEOUT: Duration = Duration::minutes(15);
/// Open sessions per app at most.
pub const MAX_SESSIONS_PER_APP: usize = 1_000;

/// One session.
#[derive(Debug, Clone)]
pub struct FmSession {
    /// The app.
    pub app: AppId,
    /// The app account.
    pub account: String,
    /// Its privilege set at sign-in.
    pub privilege_set: String,
    /// Last use.
    pub last_used: OffsetDateTime,
    /// Global field values (field id → value).
    pub globals: HashMap<u32, Cell>,
}

/// Every open session.
#[derive(Debug, Clone)]
pub struct Sessions {
    map: Arc<Mutex<HashMap<TokenHash, FmSession>>>,
    clock: Arc<dyn Clock>,
}

impl Sessions {
    /// No sessions yet.
    pub fn new(clock: Arc<dyn Clock>) -> Self {
        Self {
            map: Arc::new(Mutex::new(HashMap::new())),
            clock,
        }
    }

    fn sweep(map: &mut HashMap<TokenHash, FmSession>, now: OffsetDateTime) {
        map.retain(|_, s| now - s.last_used < IDLE_TIMEOUT);
    }

    /// Opens a session; the token is returned once, in the clear.
    pub fn open(
        &self,
        app: AppId,
        account: String,
        privilege_set: String,
    ) -> Result<SecretToken, FmError> {
        let now = self.clock.now();
        let token = SecretToken::generate().map_err(|_| FmError::code(-1))?;
        let mut map = self.map.lock();
        let open = map.values().filter(|s| s.app == app).count();
        if open >= MAX_SESSIONS_PER_APP {
            Self::sweep(&mut map, now);
            if map.values().filter(|s| s.app == app).count() >= MAX_SESSIONS_PER_APP {
                return Err(FmError::code(956));
            }
        }
        map.insert(
            token.hash(),
            FmSession {
                app,
                account,
                privilege_set,
                last_used: now,
                globals: HashMap::new(),
            },
        );
        Ok(token)
    }

    /// The live session of a token for `app`, renewing it. An unknown,
    /// expired or other-app token is FileMaker's 952.
    pub fn touch(&self, token: &str, app: AppId) -> Result<FmSession, FmError> {
        let now = self.clock.now();
        let hash = TokenHash::of(token);
        let mut map = self.map.lock();
        match map.get_mut(&hash) {
            Some(s) if s.app == app && now - s.last_used < IDLE_TIMEOUT => {
                s.last_used = now;
                Ok(s.clone())
            }
            Some(s) if now - s.last_used >= IDLE_TIMEOUT => {
                map.remove(&hash);
                Err(FmError::code(952))
            }
            _ => Err(FmError::code(952)),
        }
    }

    /// Whether a token names a live session (any app).
    pub fn is_live(&self, token: &str) -> bool {
        let now = self.clock.now();
        self.map
            .lock()
            .get(&TokenHash::of(token))
            .is_some_and(|s| now - s.last_used < IDLE_TIMEOUT)
    }

    /// Sets global field values of a session.
    pub fn set_globals(&self, token: &str, values: Vec<(u32, Cell)>) -> Result<(), FmError> {
        let mut map = self.map.lock();
        let s = map
            .get_mut(&TokenHash::of(token))
            .ok_or_else(|| FmError::code(952))?;
        for (id, cell) in values {
            s.globals.insert(id, cell);
        }
        Ok(())
    }

    /// Ends a session; false when there was none for that app.
    pub fn close(&self, token: &str, app: AppId) -> bool {
        let mut map = self.map.lock();
        let hash = TokenHash::of(token);
        if map.get(&hash).is_some_and(|s| s.app == app) {
            map.remove(&hash);
            true
        } else {
            false
        }
    }

    /// Ends every session of an app (closed, deleted, schema replaced) or
    /// of one of its accounts.
    pub fn close_all(&self, app: AppId, account: Option<&str>) {
        self.map.lock().retain(|_, s| {
            s.app != app || account.is_some_and(|a| !s.account.eq_ignore_ascii_case(a))
        });
    }
}
