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
use crate::passkeys::{PasskeyRecord, PasskeyUse};

/// What a factor proved, as the single-use change that uses it up.
#[derive(Debug, Clone)]
pub enum FactorProof {
    /// A password the caller verified: nothing to use up, but the sign-in's
    /// session and throttle reset still commit together.
    Password,
    /// A TOTP code of this time step: accepted only if the step is later
    /// than the last one accepted (compare-and-swap, so one code cannot be
    /// used twice even by racing requests).
    TotpStep(i64),
    /// The first code of the pending TOTP enrolment, at this step: confirms
    /// it (replacing a confirmed one) and replaces the recovery codes.
    TotpEnrolment {
        /// The code's time step.
        step: i64,
        /// The new recovery codes' hashes.
        recovery_hashes: Vec<TokenHash>,
    },
    /// An unused recovery code, used up.
    RecoveryCode(TokenHash),
    /// A verified assertion of one of the account's passkeys: its new
    /// signature counter and state.
    PasskeyUse {
        /// The credential it used.
        credential_id: String,
        /// What the assertion changes on it.
        change: PasskeyUse,
    },
    /// A newly registered passkey; with recovery codes when it is the
    /// account's first second factor (they replace any earlier ones).
    NewPasskey {
        /// The passkey.
        passkey: PasskeyRecord,
        /// The recovery codes' hashes, if any are issued with it.
        recovery_hashes: Option<Vec<TokenHash>>,
    },
    /// The token of a device remembered for the account and not expired:
    /// its use is recorded.
    RememberedDevice(TokenHash),
}

/// What a verified second factor does to a session.
#[derive(Debug, Clone)]
pub enum SessionChange {
    /// Nothing (no session is involved).
    None,
    /// A new session (a passwordless sign-in).
    Insert(SessionRecord),
    /// A live session records the verification: its stage, the factor's
    /// kind and when.
    Mark {
        /// The session.
        id: SessionId,
        /// Its stage from now on.
        stage: String,
        /// The kind of factor verified.
        method: String,
    },
    /// A live session is replaced by a new one (as
    /// [`CredentialStore::rotate_session`]).
    Rotate {
        /// The session replaced.
        old: SessionId,
        /// Its replacement.
        new: SessionRecord,
    },
}

/// One verified factor: the proof it uses up, the session change it
/// makes and the throttle counter its success resets, written together
/// (with the events) by [`CredentialStore::complete_factor`].
#[derive(Debug, Clone)]
pub struct FactorStep {
    /// Whose factor.
    pub account: AccountId,
    /// What it uses up.
    pub proof: FactorProof,
    /// What it does to a session.
    pub session: SessionChange,
    /// The failure counter the success forgets, if there is one.
    pub clear_throttle: Option<String>,
    /// When.
    pub now: OffsetDateTime,
}

/// What [`CredentialStore::complete_factor`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FactorOutcome {
    /// Everything was written; `recovery_codes_left` counts the unused codes
    /// after a recovery code was used.
    Done {
        /// Unused recovery codes left, for a recovery code.
        recovery_codes_left: Option<u64>,
    },
    /// The proof was not accepted (a time step already used, an unknown or
    /// used recovery code, a passkey or remembered device that is gone, no
    /// pending enrolment): nothing changed.
    Refused,
    /// The session to change is no longer live: nothing changed.
    SessionGone,
}

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
        events: TxEvents<()>,
    ) -> Result<(), StoreError>;

    /// Records use of a session (idle timeout restarts).
    async fn touch_session(&self, id: SessionId, now: OffsetDateTime) -> Result<(), StoreError>;

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

    /// Carries out a verified factor in one transaction: checks that
    /// the session to change is live, uses up the proof, changes the
    /// session, forgets the throttle counter and appends the events. A
    /// refused proof or a session that is gone changes nothing (the outcome
    /// says which); any error rolls everything back.
    async fn complete_factor(
        &self,
        step: FactorStep,
        events: TxEvents<FactorOutcome>,
    ) -> Result<FactorOutcome, StoreError>;

    /// Resets the account's second factors in one transaction: removes its
    /// TOTP credential, recovery codes and passkeys and, if there was any to
    /// remove, revokes all of its sessions. Says what it did.
    async fn reset_mfa(
        &self,
        account: AccountId,
        now: OffsetDateTime,
        events: TxEvents<MfaReset>,
    ) -> Result<MfaReset, StoreError>;

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
