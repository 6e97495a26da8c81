//! The Kura ID persistence boundary.
//!
//! [`IdentityStore`] keeps accounts, credentials, teams, groups, role grants,
//! sessions, API tokens, MFA secrets, invitations and throttle counters. The
//! rules (who may do what, what a valid email is, when a session expires)
//! live in `kura-identity`; this trait only stores and fetches, and it does
//! every change that touches several rows in one transaction so a failure
//! leaves nothing half-written.
//!
//! Enumerations the domain owns (account status and kind, role names, token
//! kinds, session stages) cross this boundary as their stable text names and
//! are parsed back by the domain crate, so storage never needs to know them.

use async_trait::async_trait;
use kura_crypto::token::TokenHash;
use kura_types::{AccountId, ApiTokenId, GroupId, InvitationId, SessionId, TeamId};
use time::OffsetDateTime;

use crate::StoreError;
use crate::events::TxEvents;

/// An account row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccountRecord {
    /// Its id.
    pub id: AccountId,
    /// The normalised email address (unique).
    pub email: String,
    /// The name shown to people.
    pub display_name: String,
    /// An optional phone number.
    pub phone: Option<String>,
    /// `invited`, `active` or `disabled`.
    pub status: String,
    /// `operator` or `customer`.
    pub kind: String,
    /// When it was created.
    pub created_at: OffsetDateTime,
}

/// A role held by an account or a group; `team` is `None` for operator roles.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RoleGrant {
    /// The team the role applies in, or `None` for a platform (operator) role.
    pub team: Option<TeamId>,
    /// The role's stable name.
    pub role: String,
    /// The group the role comes through, if it is not held directly.
    pub via_group: Option<GroupId>,
}

/// Who receives a role grant.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GrantSubject {
    /// One account directly.
    Account(AccountId),
    /// Everyone in a group.
    Group(GroupId),
}

/// A team row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TeamRecord {
    /// Its id.
    pub id: TeamId,
    /// Its name.
    pub name: String,
    /// The team's MFA requirement, serialised by the domain crate.
    pub mfa_policy: String,
    /// When it was created.
    pub created_at: OffsetDateTime,
}

/// A group row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupRecord {
    /// Its id.
    pub id: GroupId,
    /// The team it belongs to.
    pub team: TeamId,
    /// Its name (unique within the team).
    pub name: String,
    /// When it was created.
    pub created_at: OffsetDateTime,
}

/// A session row. The token itself is never stored, only its hash.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionRecord {
    /// Its id (safe to show and to name in events).
    pub id: SessionId,
    /// SHA-256 of the bearer token.
    pub token_hash: TokenHash,
    /// The account it authenticates.
    pub account: AccountId,
    /// `mfa_pending`, `mfa_enrolment` or `complete`.
    pub stage: String,
    /// When it was created (sign-in time).
    pub created_at: OffsetDateTime,
    /// When it was last used (for the idle timeout).
    pub last_seen_at: OffsetDateTime,
    /// When it expires no matter what (absolute timeout).
    pub expires_at: OffsetDateTime,
    /// When a second factor was last verified in it.
    pub mfa_verified_at: Option<OffsetDateTime>,
    /// Which kind of second factor that was (`totp`, `recovery_code`, `passkey`).
    pub mfa_method: Option<String>,
    /// When it was revoked, if it was.
    pub revoked_at: Option<OffsetDateTime>,
    /// The source address it was created from.
    pub source: Option<String>,
}

/// Which sessions a credential change revokes in the same transaction.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SessionRevocation {
    /// None.
    None,
    /// All of the account's sessions.
    All,
    /// All but the one making the change.
    AllExcept(SessionId),
}

/// What a password change revoked.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PasswordSet {
    /// Sessions revoked.
    pub sessions_revoked: u64,
    /// Personal API tokens revoked.
    pub tokens_revoked: u64,
}

/// What an MFA reset removed and revoked.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct MfaReset {
    /// Whether a TOTP credential (with its recovery codes) was removed.
    pub totp_removed: bool,
    /// Passkeys removed.
    pub passkeys_removed: u64,
    /// Sessions revoked.
    pub sessions_revoked: u64,
}

impl MfaReset {
    /// Whether there was any second factor to remove.
    pub fn removed_any(&self) -> bool {
        self.totp_removed || self.passkeys_removed > 0
    }
}

/// A TOTP credential row. The secret is stored as raw bytes: the platform
/// database is a SQLCipher file encrypted with AES-256 under the platform data
/// key, which the KMS keeps wrapped, so the secret is encrypted at rest
/// without a second layer whose key would live next to it anyway.
#[derive(Clone, PartialEq, Eq)]
pub struct TotpRecord {
    /// The account.
    pub account: AccountId,
    /// The shared secret.
    pub secret: Vec<u8>,
    /// When enrolment was confirmed with a first valid code; `None` while pending.
    pub confirmed_at: Option<OffsetDateTime>,
    /// The last time step a code was accepted for (replay protection).
    pub last_used_step: Option<i64>,
    /// When the secret was created.
    pub created_at: OffsetDateTime,
}

impl std::fmt::Debug for TotpRecord {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TotpRecord")
            .field("account", &self.account)
            .field("secret", &"[REDACTED]")
            .field("confirmed_at", &self.confirmed_at)
            .field("last_used_step", &self.last_used_step)
            .finish()
    }
}

/// An API token row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiTokenRecord {
    /// Its id.
    pub id: ApiTokenId,
    /// SHA-256 of the token text.
    pub token_hash: TokenHash,
    /// The account that owns it (for service tokens, the creator).
    pub account: AccountId,
    /// The team a service token acts in.
    pub team: Option<TeamId>,
    /// `personal` or `service`.
    pub kind: String,
    /// The team role a service token holds.
    pub role: Option<String>,
    /// Its name.
    pub name: String,
    /// The scopes it is limited to.
    pub scopes: Vec<String>,
    /// When it was created.
    pub created_at: OffsetDateTime,
    /// When it stops working.
    pub expires_at: OffsetDateTime,
    /// When it was last used.
    pub last_used_at: Option<OffsetDateTime>,
    /// When it was revoked.
    pub revoked_at: Option<OffsetDateTime>,
}

/// An invitation row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InvitationRecord {
    /// Its id.
    pub id: InvitationId,
    /// SHA-256 of the invitation token.
    pub token_hash: TokenHash,
    /// The team it invites to.
    pub team: TeamId,
    /// The normalised email address invited.
    pub email: String,
    /// The team role the invitee receives.
    pub role: String,
    /// Who invited.
    pub invited_by: AccountId,
    /// When it was created.
    pub created_at: OffsetDateTime,
    /// When it stops working.
    pub expires_at: OffsetDateTime,
    /// When it was accepted.
    pub accepted_at: Option<OffsetDateTime>,
    /// When it was revoked.
    pub revoked_at: Option<OffsetDateTime>,
}

/// A failure counter for one throttle key (an email or a source address).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ThrottleRecord {
    /// The key, such as `account:alice@example.com` or `source:192.0.2.1`.
    pub key: String,
    /// Failures counted since the window started.
    pub failures: u32,
    /// The first failure of the window.
    pub first_failure_at: OffsetDateTime,
    /// The latest failure.
    pub last_failure_at: OffsetDateTime,
    /// Until when the key is locked out, if a lockout was started.
    pub locked_until: Option<OffsetDateTime>,
}

/// A member of a team, with the roles held directly.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemberRecord {
    /// The account.
    pub account: AccountRecord,
    /// When it joined.
    pub joined_at: OffsetDateTime,
}

/// Everything a new account starts with, written in one transaction.
#[derive(Debug, Clone)]
pub struct NewAccount {
    /// The account row.
    pub account: AccountRecord,
    /// Its password hash (PHC string), if it has one.
    pub password_phc: Option<String>,
    /// Roles it holds from the start (operator roles have `team: None`).
    pub grants: Vec<RoleGrant>,
    /// Teams it joins from the start.
    pub teams: Vec<TeamId>,
}

/// The first operator with everything its creation writes (see
/// [`IdentityStore::create_first_operator`]).
#[derive(Debug, Clone)]
pub struct FirstOperator {
    /// The hash of the one-time setup token presented.
    pub setup_token: TokenHash,
    /// The operator's account, password and roles.
    pub account: NewAccount,
    /// Its first session.
    pub session: SessionRecord,
    /// When.
    pub now: OffsetDateTime,
}

/// What [`IdentityStore::create_first_operator`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FirstOperatorOutcome {
    /// The operator exists, the token is used up, setup is marked complete
    /// and the session is stored.
    Created,
    /// Setup was already complete (or an operator exists): nothing changed.
    AlreadyComplete,
    /// The token is not valid (never [`crate::SetupTokenCheck::Valid`]):
    /// nothing changed.
    Token(crate::SetupTokenCheck),
}

/// Everything authentication needs to know about an account besides the
/// presented credential, read together (see
/// [`IdentityStore::session_facts`]).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AccountFacts {
    /// The account, if it exists.
    pub account: Option<AccountRecord>,
    /// Its roles, direct and through groups (as [`IdentityStore::grants_of`]).
    pub grants: Vec<RoleGrant>,
    /// Operator access to teams in force at the time asked about.
    pub operator_access: Vec<crate::OperatorAccessRecord>,
    /// The groups it is in.
    pub groups: Vec<GroupId>,
    /// The stored MFA requirement of every team it has a role in (directly,
    /// through a group, or through operator access).
    pub team_mfa_policies: std::collections::BTreeMap<TeamId, String>,
    /// Whether it has a confirmed TOTP authenticator.
    pub totp_confirmed: bool,
    /// Whether it has at least one passkey.
    pub has_passkey: bool,
}

/// Kura ID state, whatever the backend.
#[async_trait]
pub trait IdentityStore:
    crate::CredentialStore
    + crate::TeamStore
    + crate::PasskeyStore
    + crate::OperatorAccessStore
    + Send
    + Sync
    + std::fmt::Debug
{
    // ----- accounts and passwords -----

    /// Creates an account with its password, memberships and roles.
    /// Fails with [`StoreError::Conflict`] when the email is taken.
    async fn create_account(&self, new: NewAccount, events: TxEvents<()>)
    -> Result<(), StoreError>;

    /// Finishes first-run setup in one transaction: unless setup is
    /// complete or an operator exists, and if the setup token is valid,
    /// uses the token up, creates the operator, marks setup complete
    /// ([`crate::SETUP_COMPLETED`]) and stores its session, with the events.
    /// Two racing calls cannot both create an operator: the second finds
    /// setup complete. Any outcome but `Created` changes nothing.
    async fn create_first_operator(
        &self,
        first: FirstOperator,
        events: TxEvents<FirstOperatorOutcome>,
    ) -> Result<FirstOperatorOutcome, StoreError>;

    /// One account by id.
    async fn account(&self, id: AccountId) -> Result<Option<AccountRecord>, StoreError>;

    /// One account by normalised email.
    async fn account_by_email(&self, email: &str) -> Result<Option<AccountRecord>, StoreError>;

    /// Changes an account's display name and phone number.
    async fn update_profile(
        &self,
        id: AccountId,
        display_name: &str,
        phone: Option<&str>,
        now: OffsetDateTime,
        events: TxEvents<()>,
    ) -> Result<(), StoreError>;

    /// Counts accounts of a kind (`operator` or `customer`).
    async fn count_accounts(&self, kind: &str) -> Result<u64, StoreError>;

    /// Changes an account's status; with `revoke_sessions`, all of its
    /// sessions and API tokens are revoked in the same transaction.
    async fn set_account_status(
        &self,
        id: AccountId,
        status: &str,
        revoke_sessions: bool,
        now: OffsetDateTime,
        events: TxEvents<()>,
    ) -> Result<(), StoreError>;

    /// The account's password hash.
    async fn password_hash(&self, id: AccountId) -> Result<Option<String>, StoreError>;

    /// Replaces the password hash, revokes sessions as asked and, unless
    /// `revoke` is [`SessionRevocation::None`], the account's personal API
    /// tokens (service tokens belong to their team and stay), in one
    /// transaction. Returns how many sessions and tokens were revoked.
    async fn set_password(
        &self,
        id: AccountId,
        phc: &str,
        revoke: SessionRevocation,
        now: OffsetDateTime,
        events: TxEvents<PasswordSet>,
    ) -> Result<PasswordSet, StoreError>;

    /// Replaces the hash only if it is still `expected` (re-hash on sign-in
    /// must not overwrite a password changed meanwhile).
    async fn rehash_password(
        &self,
        id: AccountId,
        expected: &str,
        phc: &str,
        now: OffsetDateTime,
        events: TxEvents<bool>,
    ) -> Result<bool, StoreError>;

    // ----- roles -----

    /// Every role the account holds, directly or through its groups.
    async fn grants_of(&self, id: AccountId) -> Result<Vec<RoleGrant>, StoreError>;

    /// The roles a group carries (with `via_group` set to it).
    async fn grants_of_group(&self, group: GroupId) -> Result<Vec<RoleGrant>, StoreError>;

    /// Grants a role. Granting a role already held is not an error.
    async fn grant_role(
        &self,
        subject: GrantSubject,
        team: Option<TeamId>,
        role: &str,
        granted_by: Option<AccountId>,
        now: OffsetDateTime,
        events: TxEvents<()>,
    ) -> Result<(), StoreError>;

    /// A session by token hash with everything authentication needs about
    /// its account, read in one read transaction on one connection (so the
    /// parts agree with each other, and the request costs one trip to the
    /// database instead of one per part). Nothing is cached: a revocation
    /// is seen by the very next request. `None` if no session has the hash.
    async fn session_facts(
        &self,
        hash: &TokenHash,
        now: OffsetDateTime,
    ) -> Result<Option<(SessionRecord, AccountFacts)>, StoreError>;

    /// An account's facts alone (a sign-in deciding whether a second factor
    /// is due), read as in [`IdentityStore::session_facts`].
    async fn account_facts(
        &self,
        id: AccountId,
        now: OffsetDateTime,
    ) -> Result<AccountFacts, StoreError>;

    /// An API token by hash with its account's facts, as
    /// [`IdentityStore::session_facts`].
    async fn api_token_facts(
        &self,
        hash: &TokenHash,
        now: OffsetDateTime,
    ) -> Result<Option<(ApiTokenRecord, AccountFacts)>, StoreError>;

    /// Revokes a role; returns whether it was held.
    async fn revoke_role(
        &self,
        subject: GrantSubject,
        team: Option<TeamId>,
        role: &str,
        events: TxEvents<bool>,
    ) -> Result<bool, StoreError>;
}
