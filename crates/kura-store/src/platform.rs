//! The platform-state boundary.
//!
//! Everything above the storage layer talks to platform state through
//! [`PlatformStore`]. The embedded SQLCipher backend implements it today; a
//! PostgreSQL backend implements the same trait, chosen at run time, so no
//! caller changes when a deployment scales out.

use async_trait::async_trait;
use kura_crypto::WrappedKey;
use kura_crypto::token::TokenHash;
use kura_types::{DataKeyId, KeyScope};
use time::OffsetDateTime;

use crate::StoreError;

/// A data key as the registry stores it: only ever wrapped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredDataKey {
    /// Its id.
    pub id: DataKeyId,
    /// What it protects.
    pub scope: KeyScope,
    /// The key, wrapped by the KMS; `None` once destroyed (crypto-shredded).
    pub wrapped: Option<WrappedKey>,
    /// When it was created.
    pub created_at: OffsetDateTime,
    /// When it was destroyed, if it was.
    pub destroyed_at: Option<OffsetDateTime>,
}

/// What presenting a setup token found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SetupTokenCheck {
    /// The token is valid (and, when consuming, now used up).
    Valid,
    /// No such token was ever issued, or a newer one replaced it.
    Unknown,
    /// It was issued but its hour is over.
    Expired,
    /// It was already used.
    Used,
}

/// Platform state, whatever the backend.
#[async_trait]
pub trait PlatformStore: Send + Sync + std::fmt::Debug {
    /// The backend's name, for diagnostics.
    fn backend(&self) -> &'static str;

    /// Proves the store answers (for readiness checks).
    async fn ping(&self) -> Result<(), StoreError>;

    /// Registers a new data key. A scope has at most one key, ever: a
    /// destroyed scope's key is never replaced.
    async fn insert_data_key(&self, key: StoredDataKey) -> Result<(), StoreError>;

    /// The data key of one scope.
    async fn data_key(&self, scope: KeyScope) -> Result<Option<StoredDataKey>, StoreError>;

    /// Every registered data key, destroyed ones included.
    async fn data_keys(&self) -> Result<Vec<StoredDataKey>, StoreError>;

    /// Replaces a wrapped key with its re-wrapped form if it is still
    /// `expected`; returns whether it was replaced (compare-and-swap, so two
    /// concurrent rotations cannot lose a key).
    async fn replace_wrapped_key(
        &self,
        id: DataKeyId,
        expected: &WrappedKey,
        replacement: &WrappedKey,
    ) -> Result<bool, StoreError>;

    /// Destroys a scope's data key. Returns false if it was already gone.
    async fn destroy_data_key(
        &self,
        scope: KeyScope,
        at: OffsetDateTime,
    ) -> Result<bool, StoreError>;

    /// Issues a setup token, invalidating any earlier unused one.
    async fn issue_setup_token(
        &self,
        hash: &TokenHash,
        now: OffsetDateTime,
        expires_at: OffsetDateTime,
    ) -> Result<(), StoreError>;

    /// Checks a setup token; with `consume`, a valid token is used up in the
    /// same step, so two concurrent uses cannot both succeed.
    async fn check_setup_token(
        &self,
        hash: &TokenHash,
        now: OffsetDateTime,
        consume: bool,
    ) -> Result<SetupTokenCheck, StoreError>;

    /// A platform setting.
    async fn setting(&self, key: &str) -> Result<Option<String>, StoreError>;

    /// Sets a platform setting.
    async fn set_setting(
        &self,
        key: &str,
        value: &str,
        now: OffsetDateTime,
    ) -> Result<(), StoreError>;
}

/// The setting that records that the first operator exists.
pub const SETUP_COMPLETED: &str = "setup.completed_at";
