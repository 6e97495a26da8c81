//! The persistence boundary for what proves who someone is, once they have
//! an account: sessions, TOTP secrets and recovery codes, API tokens, and
//! the throttle counters of failed attempts.
//!
//! [`CredentialStore`] is part of [`crate::IdentityStore`] (a supertrait),
//! split out so each file stays about one concern. The record types live
//! beside the rest of Kura ID's in `identity`.

use async_trait::async_trait;
use kura_crypto::token::TokenHash;
use kura_types::{AccountId, ApiTokenId, SessionId};
use time::OffsetDateTime;

use crate::StoreError;
use crate::events::TxEvents;
use crate::identity::{ApiTokenRecord, MfaReset, SessionRecord, ThrottleRecord, TotpRecord};

/// Sessions, second factors, API tokens and throttling.
#[async_trait]
pub trait CredentialStore: Send + Sync + std::fmt::Debug {
    // ----- sessions -----

    /// Stores a new session.
    async fn insert_session(
        &self,
        session: SessionRecord,
        events: TxEvents<()>,
    ) -> Result<(), StoreError>;

    /// One session by its token hash (revoked ones included).
    async fn session_by_hash(&self, hash: &TokenHash) -> Result<Option<SessionRecord>, StoreError>;

    /// Remembers a device for `account` until `expires_at` by the hash of
    /// its cookie's token. Revoking the account's sessions forgets it.
    async fn remember_device(
        &self,
        account: AccountId,
        hash: &TokenHash,
        now: OffsetDateTime,
        expires_at: OffsetDateTime,
    ) -> Result<(), StoreError>;

    /// The account a remembered device's token hash stands for, unless it
    /// has expired by `now` or was forgotten.
    async fn remembered_device(
        &self,
        hash: &TokenHash,
        now: OffsetDateTime,
    ) -> Result<Option<AccountId>, StoreError>;

    /// Records use of a session (idle timeout restarts).
    async fn touch_session(&self, id: SessionId, now: OffsetDateTime) -> Result<(), StoreError>;

    /// Records a second-factor verification (of kind `method`) and the new
    /// stage.
    async fn set_session_mfa(
        &self,
        id: SessionId,
        stage: &str,
        method: &str,
        verified_at: OffsetDateTime,
        events: TxEvents<()>,
    ) -> Result<(), StoreError>;

    /// Replaces a session by a new one in one transaction (a new token when
    /// sign-in advances a stage, so a token seen before MFA is worthless
    /// after it). Returns false, inserting nothing, if `old` is not live.
    async fn rotate_session(
        &self,
        old: SessionId,
        new: SessionRecord,
        now: OffsetDateTime,
        events: TxEvents<bool>,
    ) -> Result<bool, StoreError>;

    /// Revokes one session; returns whether it was live.
    async fn revoke_session(
        &self,
        id: SessionId,
        now: OffsetDateTime,
        events: TxEvents<bool>,
    ) -> Result<bool, StoreError>;

    /// Revokes an account's sessions (except one, if given); returns how many.
    async fn revoke_sessions_of(
        &self,
        account: AccountId,
        except: Option<SessionId>,
        now: OffsetDateTime,
        events: TxEvents<u64>,
    ) -> Result<u64, StoreError>;

    /// The account's sessions that are not revoked.
    async fn sessions_of(&self, account: AccountId) -> Result<Vec<SessionRecord>, StoreError>;

    // ----- MFA -----

    /// The account's confirmed TOTP credential (`confirmed`), or its pending
    /// enrolment (`!confirmed`).
    async fn totp(
        &self,
        account: AccountId,
        confirmed: bool,
    ) -> Result<Option<TotpRecord>, StoreError>;

    /// Stores a pending TOTP secret, replacing an earlier pending one; a
    /// confirmed credential is kept until the new one is confirmed.
    async fn put_pending_totp(
        &self,
        account: AccountId,
        secret: &[u8],
        now: OffsetDateTime,
        events: TxEvents<()>,
    ) -> Result<(), StoreError>;

    /// Confirms the pending secret at `step` and replaces the recovery codes
    /// with `recovery_hashes`, in one transaction.
    async fn confirm_totp(
        &self,
        account: AccountId,
        step: i64,
        recovery_hashes: &[TokenHash],
        now: OffsetDateTime,
        events: TxEvents<()>,
    ) -> Result<(), StoreError>;

    /// Accepts `step` only if it is later than the last accepted step
    /// (compare-and-swap, so one code cannot be used twice even concurrently).
    async fn advance_totp_step(&self, account: AccountId, step: i64) -> Result<bool, StoreError>;

    /// Resets the account's second factors in one transaction: removes its
    /// TOTP credential, recovery codes and passkeys and, if there was any to
    /// remove, revokes all of its sessions. Says what it did.
    async fn reset_mfa(
        &self,
        account: AccountId,
        now: OffsetDateTime,
        events: TxEvents<MfaReset>,
    ) -> Result<MfaReset, StoreError>;

    /// Uses up a recovery code; returns how many unused codes are left, or
    /// `None` (changing nothing) if it is unknown or used.
    async fn use_recovery_code(
        &self,
        account: AccountId,
        hash: &TokenHash,
        now: OffsetDateTime,
        events: TxEvents<Option<u64>>,
    ) -> Result<Option<u64>, StoreError>;

    /// Replaces all recovery codes.
    async fn replace_recovery_codes(
        &self,
        account: AccountId,
        hashes: &[TokenHash],
        now: OffsetDateTime,
        events: TxEvents<()>,
    ) -> Result<(), StoreError>;

    /// How many unused recovery codes the account has.
    async fn recovery_codes_left(&self, account: AccountId) -> Result<u64, StoreError>;

    // ----- API tokens -----

    /// Stores a new API token.
    async fn insert_api_token(
        &self,
        token: ApiTokenRecord,
        events: TxEvents<()>,
    ) -> Result<(), StoreError>;

    /// One API token by hash.
    async fn api_token_by_hash(
        &self,
        hash: &TokenHash,
    ) -> Result<Option<ApiTokenRecord>, StoreError>;

    /// One API token by id.
    async fn api_token(&self, id: ApiTokenId) -> Result<Option<ApiTokenRecord>, StoreError>;

    /// Records use of a token.
    async fn touch_api_token(&self, id: ApiTokenId, now: OffsetDateTime) -> Result<(), StoreError>;

    /// Revokes a token; returns whether it was live.
    async fn revoke_api_token(
        &self,
        id: ApiTokenId,
        now: OffsetDateTime,
        events: TxEvents<bool>,
    ) -> Result<bool, StoreError>;

    /// Tokens owned by an account.
    async fn api_tokens_of(&self, account: AccountId) -> Result<Vec<ApiTokenRecord>, StoreError>;

    // ----- throttling -----

    /// The counter of a key.
    async fn throttle(&self, key: &str) -> Result<Option<ThrottleRecord>, StoreError>;

    /// Counts a failure atomically. A counter whose last failure is before
    /// `window_start` starts again from one.
    async fn throttle_failure(
        &self,
        key: &str,
        now: OffsetDateTime,
        window_start: OffsetDateTime,
    ) -> Result<ThrottleRecord, StoreError>;

    /// Sets (or clears) a key's lockout.
    async fn throttle_lock(
        &self,
        key: &str,
        until: Option<OffsetDateTime>,
        events: TxEvents<()>,
    ) -> Result<(), StoreError>;

    /// Forgets a key's failures (after a success or an expired lockout).
    async fn throttle_clear(&self, key: &str, events: TxEvents<()>) -> Result<(), StoreError>;
}
