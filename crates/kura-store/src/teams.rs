//! The persistence boundary for teams: their members, groups and
//! invitations.
//!
//! [`TeamStore`] is part of [`crate::IdentityStore`] (a supertrait), split
//! out so each file stays about one concern; role grants, which join
//! accounts and groups to teams, stay in `identity`.

use async_trait::async_trait;
use kura_crypto::token::TokenHash;
use kura_types::{AccountId, GroupId, InvitationId, TeamId};
use time::OffsetDateTime;

use crate::StoreError;
use crate::events::TxEvents;
use crate::identity::{GroupRecord, InvitationRecord, MemberRecord, NewAccount, TeamRecord};

/// Teams, members, groups and invitations.
#[async_trait]
pub trait TeamStore: Send + Sync + std::fmt::Debug {
    // ----- teams, members, groups -----

    /// Creates a team, with its first owner (membership and owner grant)
    /// and/or an invitation for its first owner, in one transaction.
    async fn create_team(
        &self,
        team: TeamRecord,
        owner: Option<AccountId>,
        invitation: Option<InvitationRecord>,
        events: TxEvents<()>,
    ) -> Result<(), StoreError>;

    /// One team.
    async fn team(&self, id: TeamId) -> Result<Option<TeamRecord>, StoreError>;

    /// The teams an account belongs to.
    async fn teams_of(&self, id: AccountId) -> Result<Vec<TeamRecord>, StoreError>;

    /// Every team on the platform, by name (the operators' overview).
    async fn all_teams(&self) -> Result<Vec<TeamRecord>, StoreError>;

    /// Sets a team's serialised MFA requirement.
    async fn set_team_mfa_policy(
        &self,
        id: TeamId,
        policy: &str,
        events: TxEvents<()>,
    ) -> Result<(), StoreError>;

    /// Adds a member with a role (membership and grant in one transaction).
    async fn add_member(
        &self,
        team: TeamId,
        account: AccountId,
        role: &str,
        now: OffsetDateTime,
        events: TxEvents<()>,
    ) -> Result<(), StoreError>;

    /// Removes a member with its roles and group memberships in that team;
    /// returns whether it was a member.
    async fn remove_member(
        &self,
        team: TeamId,
        account: AccountId,
        events: TxEvents<bool>,
    ) -> Result<bool, StoreError>;

    /// The team's members.
    async fn members(&self, team: TeamId) -> Result<Vec<MemberRecord>, StoreError>;

    /// Creates a group. Fails with [`StoreError::Conflict`] on a duplicate name.
    async fn create_group(
        &self,
        group: GroupRecord,
        events: TxEvents<()>,
    ) -> Result<(), StoreError>;

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
        events: TxEvents<()>,
    ) -> Result<(), StoreError>;

    /// Removes an account from a group; returns whether it was in it.
    async fn remove_group_member(
        &self,
        group: GroupId,
        account: AccountId,
        events: TxEvents<bool>,
    ) -> Result<bool, StoreError>;

    /// The accounts in a group, in the order they were added.
    async fn group_members(&self, group: GroupId) -> Result<Vec<AccountId>, StoreError>;

    /// The groups (of any team) an account is in.
    async fn groups_of(&self, account: AccountId) -> Result<Vec<GroupId>, StoreError>;

    // ----- invitations -----

    /// Stores a new invitation.
    async fn create_invitation(
        &self,
        invitation: InvitationRecord,
        events: TxEvents<()>,
    ) -> Result<(), StoreError>;

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
        events: TxEvents<bool>,
    ) -> Result<bool, StoreError>;

    /// Revokes an unused invitation; returns whether it was open.
    async fn revoke_invitation(
        &self,
        id: InvitationId,
        now: OffsetDateTime,
        events: TxEvents<bool>,
    ) -> Result<bool, StoreError>;
}
