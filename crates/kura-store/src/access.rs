//! The persistence boundary for time-boxed operator access to a team: a
//! team owner lets one operator act in the team with one team role until a
//! deadline. The rules (who may grant, which roles, how long) live in
//! `kura-identity`; this only stores, lists and revokes.

use async_trait::async_trait;
use kura_types::{AccountId, TeamId};
use time::OffsetDateTime;

use crate::StoreError;
use crate::events::TxEvents;

/// One grant of operator access.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OperatorAccessRecord {
    /// Its id (a UUID).
    pub id: String,
    /// The team.
    pub team: TeamId,
    /// The operator account let in.
    pub operator: AccountId,
    /// The team role it acts with (stable name).
    pub role: String,
    /// Why (shown to the team and recorded).
    pub reason: String,
    /// The team owner who granted it.
    pub granted_by: AccountId,
    /// When.
    pub granted_at: OffsetDateTime,
    /// When it ends by itself.
    pub expires_at: OffsetDateTime,
    /// When it was ended early, if it was.
    pub revoked_at: Option<OffsetDateTime>,
}

impl OperatorAccessRecord {
    /// Whether it is in force at `now`.
    pub fn is_active(&self, now: OffsetDateTime) -> bool {
        self.revoked_at.is_none() && now < self.expires_at
    }
}

/// Operator access grants.
#[async_trait]
pub trait OperatorAccessStore: Send + Sync + std::fmt::Debug {
    /// Stores a new grant.
    async fn insert_operator_access(
        &self,
        grant: OperatorAccessRecord,
        events: TxEvents<()>,
    ) -> Result<(), StoreError>;

    /// The grants in force for an operator at `now`.
    async fn active_operator_access(
        &self,
        operator: AccountId,
        now: OffsetDateTime,
    ) -> Result<Vec<OperatorAccessRecord>, StoreError>;

    /// Every grant of a team, newest first (ended ones too: they are the
    /// team's record of who was let in).
    async fn operator_access_of_team(
        &self,
        team: TeamId,
    ) -> Result<Vec<OperatorAccessRecord>, StoreError>;

    /// Ends a grant of the team early; false if there is no such grant in
    /// force.
    async fn revoke_operator_access(
        &self,
        team: TeamId,
        id: &str,
        now: OffsetDateTime,
        events: TxEvents<bool>,
    ) -> Result<bool, StoreError>;
}
