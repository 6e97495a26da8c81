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

/// Kura ID state, whatever the backend.
#[async_trait]
pub trait IdentityStore:
    crate::PasskeyStore + crate::OperatorAccessStore + Send + Sync + std::fmt::Debug
{
    // ----- accounts and passwords -----

    /// Creates an account with its password, memberships and roles.
    /// Fails with [`StoreError::Conflict`] when the email is taken.
    async fn create_account(&self, new: NewAccount) -> Result<(), StoreError>;

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
    ) -> Result<PasswordSet, StoreError>;

    /// Replaces the hash only if it is still `expected` (re-hash on sign-in
    /// must not overwrite a password changed meanwhile).
    async fn rehash_password(
        &self,
        id: AccountId,
        expected: &str,
        phc: &str,
        now: OffsetDateTime,
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
    ) -> Result<(), StoreError>;

    /// Revokes a role; returns whether it was held.
    async fn revoke_role(
        &self,
        subject: GrantSubject,
        team: Option<TeamId>,
        role: &str,
    ) -> Result<bool, StoreError>;

    // ----- teams, members, groups -----

    /// Creates a team, with its first owner (membership and owner grant)
    /// and/or an invitation for its first owner, in one transaction.
    async fn create_team(
        &self,
        team: TeamRecord,
        owner: Option<AccountId>,
        invitation: Option<InvitationRecord>,
    ) -> Result<(), StoreError>;

    /// One team.
    async fn team(&self, id: TeamId) -> Result<Option<TeamRecord>, StoreError>;

    /// The teams an account belongs to.
    async fn teams_of(&self, id: AccountId) -> Result<Vec<TeamRecord>, StoreError>;

    /// Sets a team's serialised MFA requirement.
    async fn set_team_mfa_policy(&self, id: TeamId, policy: &str) -> Result<(), StoreError>;

    /// Adds a member with a role (membership and grant in one transaction).
    async fn add_member(
        &self,
        team: TeamId,
        account: AccountId,
        role: &str,
        now: OffsetDateTime,
    ) -> Result<(), StoreError>;

    /// Removes a member with its roles and group memberships in that team;
    /// returns whether it was a member.
    async fn remove_member(&self, team: TeamId, account: AccountId) -> Result<bool, StoreError>;

    /// The team's members.
    async fn members(&self, team: TeamId) -> Result<Vec<MemberRecord>, StoreError>;

    /// Creates a group. Fails with [`StoreError::Conflict`] on a duplicate name.
    async fn create_group(&self, group: GroupRecord) -> Result<(), StoreError>;

    /// One group.
    async fn group(&self, id: GroupId) -> Result<Option<GroupRecord>, StoreError>;

    /// The team's groups.
    async fn groups(&self, team: TeamId) -> Result<Vec<GroupRecord>, StoreError>;

    /// Adds a team member to a group.
    async fn add_group_member(
        &self,
        group: GroupId,
        account: AccountId,
        now: OffsetDateTime,
    ) -> Result<(), StoreError>;

    /// Removes an account from a group; returns whether it was in it.
    async fn remove_group_member(
        &self,
        group: GroupId,
        account: AccountId,
    ) -> Result<bool, StoreError>;

    /// The groups (of any team) an account is in.
    async fn groups_of(&self, account: AccountId) -> Result<Vec<GroupId>, StoreError>;

    // ----- invitations -----

    /// Stores a new invitation.
    async fn create_invitation(&self, invitation: InvitationRecord) -> Result<(), StoreError>;

    /// One invitation by id.
    async fn invitation(&self, id: InvitationId) -> Result<Option<InvitationRecord>, StoreError>;

    /// The team's invitations that are neither accepted nor revoked
    /// (expired ones included; the caller judges expiry).
    async fn open_invitations(&self, team: TeamId) -> Result<Vec<InvitationRecord>, StoreError>;

    /// One invitation by its token hash.
    async fn invitation_by_hash(
        &self,
        hash: &TokenHash,
    ) -> Result<Option<InvitationRecord>, StoreError>;

    /// Accepts an invitation: marks it used (only if still unused and not
    /// revoked), optionally creates the invitee's account, adds the
    /// membership and the role, all in one transaction. Returns false, and
    /// changes nothing, if it was already used or revoked.
    async fn accept_invitation(
        &self,
        id: InvitationId,
        account: AccountId,
        new_account: Option<NewAccount>,
        now: OffsetDateTime,
    ) -> Result<bool, StoreError>;

    /// Revokes an unused invitation; returns whether it was open.
    async fn revoke_invitation(
        &self,
        id: InvitationId,
        now: OffsetDateTime,
    ) -> Result<bool, StoreError>;

    // ----- sessions -----

    /// Stores a new session.
    async fn insert_session(&self, session: SessionRecord) -> Result<(), StoreError>;

    /// One session by its token hash (revoked ones included).
    async fn session_by_hash(&self, hash: &TokenHash) -> Result<Option<SessionRecord>, StoreError>;

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
    ) -> Result<(), StoreError>;

    /// Replaces a session by a new one in one transaction (a new token when
    /// sign-in advances a stage, so a token seen before MFA is worthless
    /// after it). Returns false, inserting nothing, if `old` is not live.
    async fn rotate_session(
        &self,
        old: SessionId,
        new: SessionRecord,
        now: OffsetDateTime,
    ) -> Result<bool, StoreError>;

    /// Revokes one session; returns whether it was live.
    async fn revoke_session(&self, id: SessionId, now: OffsetDateTime) -> Result<bool, StoreError>;

    /// Revokes an account's sessions (except one, if given); returns how many.
    async fn revoke_sessions_of(
        &self,
        account: AccountId,
        except: Option<SessionId>,
        now: OffsetDateTime,
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
    ) -> Result<(), StoreError>;

    /// Confirms the pending secret at `step` and replaces the recovery codes
    /// with `recovery_hashes`, in one transaction.
    async fn confirm_totp(
        &self,
        account: AccountId,
        step: i64,
        recovery_hashes: &[TokenHash],
        now: OffsetDateTime,
    ) -> Result<(), StoreError>;

    /// Accepts `step` only if it is later than the last accepted step
    /// (compare-and-swap, so one code cannot be used twice even concurrently).
    async fn advance_totp_step(&self, account: AccountId, step: i64) -> Result<bool, StoreError>;

    /// Removes the TOTP credential and the recovery codes.
    async fn delete_totp(&self, account: AccountId) -> Result<bool, StoreError>;

    /// Uses up a recovery code; returns false if it is unknown or used.
    async fn use_recovery_code(
        &self,
        account: AccountId,
        hash: &TokenHash,
        now: OffsetDateTime,
    ) -> Result<bool, StoreError>;

    /// Replaces all recovery codes.
    async fn replace_recovery_codes(
        &self,
        account: AccountId,
        hashes: &[TokenHash],
        now: OffsetDateTime,
    ) -> Result<(), StoreError>;

    /// How many unused recovery codes the account has.
    async fn recovery_codes_left(&self, account: AccountId) -> Result<u64, StoreError>;

    // ----- API tokens -----

    /// Stores a new API token.
    async fn insert_api_token(&self, token: ApiTokenRecord) -> Result<(), StoreError>;

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
    ) -> Result<(), StoreError>;

    /// Forgets a key's failures (after a success or an expired lockout).
    async fn throttle_clear(&self, key: &str) -> Result<(), StoreError>;
}
