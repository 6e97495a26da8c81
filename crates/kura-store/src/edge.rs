//! The persistence boundary of edge policies: the firewall lists, rate
//! limits and WAF rule modes operators change at run time.
//!
//! The rules (what a valid CIDR list is, which scopes may hold which kind)
//! live in `kura-server`'s edge; this trait only stores and fetches each
//! policy as the JSON text the server validated. Every change is written in
//! one transaction together with the security events that describe it, and
//! is compare-and-swap on the row's `version`, so a change decided on a
//! stale copy writes nothing.

use async_trait::async_trait;
use time::OffsetDateTime;

use kura_types::{HostId, TeamId};

use crate::StoreError;
use crate::events::EventRecord;

/// One stored policy: the JSON of one kind at one scope.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EdgePolicyRecord {
    /// `platform`, `team:<id>` or `host:<id>`.
    pub scope: String,
    /// `firewall`, `rate_limits` or `waf`.
    pub kind: String,
    /// The policy, as JSON text.
    pub body: String,
    /// Bumped by every replacement (1 for the first).
    pub version: u64,
    /// When it last changed.
    pub updated_at: OffsetDateTime,
    /// Who changed it, as an actor key.
    pub updated_by: String,
}

/// One change: replace (or, with `body` `None`, remove) the policy of one
/// kind at one scope, if it is still at `expected_version` (0: absent).
#[derive(Debug, Clone)]
pub struct EdgePolicyWrite {
    /// The scope.
    pub scope: String,
    /// The kind.
    pub kind: String,
    /// The new JSON, or `None` to remove the policy.
    pub body: Option<String>,
    /// The version the change was decided on; 0 when there was none.
    pub expected_version: u64,
    /// When.
    pub at: OffsetDateTime,
    /// Who, as an actor key.
    pub by: String,
    /// The security events describing the change, appended in the same
    /// transaction.
    pub events: Vec<EventRecord>,
}

/// A host as the edge sees it: the name the Data API's URLs carry, mapped
/// to the host's scope and its team's.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EdgeHost {
    /// Its name (unique across the platform, compared without case).
    pub name: String,
    /// Its id.
    pub id: HostId,
    /// The owning team.
    pub team: TeamId,
}

/// Edge policies, whatever the backend.
#[async_trait]
pub trait EdgeStore: Send + Sync + std::fmt::Debug {
    /// Every stored policy.
    async fn policies(&self) -> Result<Vec<EdgePolicyRecord>, StoreError>;

    /// Applies one change with its events, all or nothing; returns the new
    /// version (0 after a removal). Fails with [`StoreError::Conflict`] when
    /// the stored version is not `expected_version`.
    async fn write_policy(&self, change: EdgePolicyWrite) -> Result<u64, StoreError>;

    /// Every host's name, id and team, so that requests naming a host
    /// (`/hosts/{name}/…`) meet that host's and its team's policies.
    async fn hosts(&self) -> Result<Vec<EdgeHost>, StoreError>;
}
