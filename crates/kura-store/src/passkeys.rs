//! The persistence boundary for WebAuthn passkeys and the state of
//! ceremonies in flight.
//!
//! [`PasskeyStore`] keeps registered credentials ([`PasskeyRecord`]) and the
//! server side of a registration or authentication ceremony between its two
//! requests ([`CeremonyRecord`]). Both carry the WebAuthn library's own
//! serialised form as opaque JSON text: this crate stores it and never reads
//! inside it, so it knows nothing about WebAuthn. What the rules need to see
//! (credential id, signature counter, backup flags) is kept in columns beside
//! it. A passkey is registered and used only as a verified second factor,
//! through [`crate::CredentialStore::complete_factor`], so its change
//! commits with the session change and events of that step.

use async_trait::async_trait;
use kura_types::AccountId;
use time::OffsetDateTime;

use crate::StoreError;
use crate::events::TxEvents;

/// A registered passkey row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PasskeyRecord {
    /// Its id (a UUID, safe to show).
    pub id: String,
    /// The account it signs in.
    pub account: AccountId,
    /// The credential id the authenticator chose, base64url (unique).
    pub credential_id: String,
    /// The name its owner gave it.
    pub name: String,
    /// The WebAuthn library's serialised credential (public key and flags).
    pub data: String,
    /// The last signature counter seen (0 for authenticators without one).
    pub counter: u32,
    /// Whether the authenticator said the credential may be backed up
    /// (synced between devices).
    pub backup_eligible: bool,
    /// Whether it said the credential is backed up now.
    pub backup_state: bool,
    /// When it was registered.
    pub created_at: OffsetDateTime,
    /// When it last signed in, if ever.
    pub last_used_at: Option<OffsetDateTime>,
}

/// What a successful assertion changes on a stored passkey.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PasskeyUse {
    /// The updated serialised credential.
    pub data: String,
    /// The new signature counter.
    pub counter: u32,
    /// The backup state the authenticator reported this time.
    pub backup_state: bool,
    /// When.
    pub at: OffsetDateTime,
}

/// A ceremony between its challenge and its answer. Each one is taken (and
/// deleted) once, so a challenge cannot be answered twice.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CeremonyRecord {
    /// Its id (random, handed to the client with the challenge).
    pub id: String,
    /// `registration`, `mfa` or `passwordless` (the domain's names).
    pub kind: String,
    /// The account, for ceremonies started by a signed-in account.
    pub account: Option<AccountId>,
    /// The session that started it, for ceremonies bound to one.
    pub session: Option<String>,
    /// The WebAuthn library's serialised ceremony state (holds the challenge).
    pub state: String,
    /// When it was started.
    pub created_at: OffsetDateTime,
    /// When its challenge stops being accepted.
    pub expires_at: OffsetDateTime,
}

/// Passkeys and ceremony state.
#[async_trait]
pub trait PasskeyStore: Send + Sync + std::fmt::Debug {
    /// The account's passkeys, oldest first.
    async fn passkeys_of(&self, account: AccountId) -> Result<Vec<PasskeyRecord>, StoreError>;

    /// Removes one of the account's passkeys; false if it has no such one.
    async fn delete_passkey(
        &self,
        account: AccountId,
        id: &str,
        events: TxEvents<bool>,
    ) -> Result<bool, StoreError>;

    /// Stores a ceremony's state, dropping ceremonies that have expired.
    async fn put_ceremony(
        &self,
        ceremony: CeremonyRecord,
        events: TxEvents<()>,
    ) -> Result<(), StoreError>;

    /// Takes (deletes and returns) a ceremony of `kind` that has not expired
    /// at `now`; `None` if it is unknown, of another kind, expired or taken.
    async fn take_ceremony(
        &self,
        id: &str,
        kind: &str,
        now: OffsetDateTime,
    ) -> Result<Option<CeremonyRecord>, StoreError>;
}
