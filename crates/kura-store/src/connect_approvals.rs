//! The persistence boundary of Kura Connect's approval steps: a run that
//! waits for a person's decision, the one-time links sent to approvers
//! (stored as SHA-256 hashes only), and the decision written together with
//! the run's wake-up and the security events that describe it.
//!
//! Who may decide is the server's and `kura-connect`'s to ask; this trait
//! stores and answers, and makes each decision a compare-and-swap so two
//! decisions (or a decision racing the timeout) cannot both win.

use async_trait::async_trait;
use kura_types::{ApprovalId, FlowId, RunId, TeamId};
use time::OffsetDateTime;

use crate::StoreError;
use crate::events::EventRecord;

/// Where an approval stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ApprovalStatus {
    /// Waiting for a decision.
    Pending,
    /// Approved.
    Approved,
    /// Rejected.
    Rejected,
    /// Nobody decided in time.
    TimedOut,
}

impl ApprovalStatus {
    /// Its stable name.
    pub fn as_str(self) -> &'static str {
        match self {
            ApprovalStatus::Pending => "pending",
            ApprovalStatus::Approved => "approved",
            ApprovalStatus::Rejected => "rejected",
            ApprovalStatus::TimedOut => "timed_out",
        }
    }

    /// Parses a stable name.
    pub fn parse(s: &str) -> Option<Self> {
        [
            ApprovalStatus::Pending,
            ApprovalStatus::Approved,
            ApprovalStatus::Rejected,
            ApprovalStatus::TimedOut,
        ]
        .into_iter()
        .find(|x| x.as_str() == s)
    }
}

/// One approval: a run paused at an approval step.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApprovalRecord {
    /// Its id.
    pub id: ApprovalId,
    /// The team.
    pub team: TeamId,
    /// The flow.
    pub flow: FlowId,
    /// The paused run.
    pub run: RunId,
    /// The approval step's id in the flow document.
    pub step: String,
    /// The e-mail addresses of the people who may decide (lower case).
    pub approvers: Vec<String>,
    /// What is asked (rendered).
    pub message: String,
    /// Where it stands.
    pub status: ApprovalStatus,
    /// Who decided (an actor key such as `account:<id>`), or `system` for
    /// a timeout.
    pub decided_by: Option<String>,
    /// How: `api` or `link`, or `timeout`.
    pub decided_via: Option<String>,
    /// The decider's comment.
    pub comment: Option<String>,
    /// When it was opened.
    pub created_at: OffsetDateTime,
    /// When the timeout path is taken.
    pub expires_at: OffsetDateTime,
    /// When it was decided.
    pub decided_at: Option<OffsetDateTime>,
    /// Whether the run has taken the decision's path (a later visit of the
    /// same step opens a new approval).
    pub closed: bool,
}

/// A one-time link's stored half: the token's SHA-256 and whom it was
/// sent to.
#[derive(Clone, PartialEq, Eq)]
pub struct ApprovalLinkRecord {
    /// SHA-256 of the token in the link.
    pub token_hash: [u8; 32],
    /// The approval.
    pub approval: ApprovalId,
    /// The approver's e-mail address the link was sent to.
    pub approver: String,
    /// When the link stops working (the approval's timeout).
    pub expires_at: OffsetDateTime,
    /// When it was used.
    pub used_at: Option<OffsetDateTime>,
}

impl std::fmt::Debug for ApprovalLinkRecord {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ApprovalLinkRecord")
            .field("approval", &self.approval)
            .field("approver", &self.approver)
            .field("expires_at", &self.expires_at)
            .field("used_at", &self.used_at)
            .finish_non_exhaustive()
    }
}

/// A decision to record.
#[derive(Debug, Clone)]
pub struct ApprovalDecision {
    /// The approval.
    pub approval: ApprovalId,
    /// `Approved` or `Rejected`.
    pub status: ApprovalStatus,
    /// Who decided, as an actor key.
    pub by: String,
    /// `api` or `link`.
    pub via: String,
    /// An optional comment.
    pub comment: Option<String>,
    /// The link used, which is spent by this decision (`None` through the
    /// API).
    pub link: Option<[u8; 32]>,
    /// When.
    pub at: OffsetDateTime,
    /// The security events describing the decision, committed with it.
    pub events: Vec<EventRecord>,
}

/// What became of a decision.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DecisionOutcome {
    /// Recorded; the run is due again.
    Recorded,
    /// No such approval (or link).
    NotFound,
    /// Already decided, timed out, or its run no longer waits.
    NotPending,
    /// Its time is up (the timeout path will be taken).
    Expired,
    /// The link was used before.
    LinkUsed,
}

/// Approvals' state.
#[async_trait]
pub trait ApprovalStore: Send + Sync {
    /// Opens an approval with its links and the events describing it, if
    /// `owner` still holds the run.
    async fn open_approval(
        &self,
        owner: &str,
        approval: ApprovalRecord,
        links: Vec<ApprovalLinkRecord>,
        events: Vec<EventRecord>,
    ) -> Result<bool, StoreError>;

    /// The newest approval of a run's step that the run has not yet moved
    /// past.
    async fn open_approval_of_step(
        &self,
        run: RunId,
        step: &str,
    ) -> Result<Option<ApprovalRecord>, StoreError>;

    /// An approval (any team; callers check the team).
    async fn approval(&self, id: ApprovalId) -> Result<Option<ApprovalRecord>, StoreError>;

    /// A team's approvals, newest first, optionally only pending ones.
    async fn approvals(
        &self,
        team: TeamId,
        pending_only: bool,
    ) -> Result<Vec<ApprovalRecord>, StoreError>;

    /// The link behind a token hash.
    async fn approval_link(
        &self,
        token_hash: [u8; 32],
    ) -> Result<Option<ApprovalLinkRecord>, StoreError>;

    /// Records a decision with its events in one transaction: only while
    /// the approval is pending, before it expires, while its run waits (or
    /// is pausing at the step), and (through a link) while the link is
    /// unused; a waiting run is made due at once. Anything else records
    /// nothing.
    async fn decide(&self, decision: ApprovalDecision) -> Result<DecisionOutcome, StoreError>;

    /// Marks a pending approval past its time as timed out, with its events;
    /// false if it was decided first.
    async fn time_out_approval(
        &self,
        id: ApprovalId,
        at: OffsetDateTime,
        events: Vec<EventRecord>,
    ) -> Result<bool, StoreError>;

    /// Makes a waiting run due at `at` (a decision that came while the run
    /// was pausing); false if it is not waiting.
    async fn wake_waiting_run(&self, run: RunId, at: OffsetDateTime) -> Result<bool, StoreError>;

    /// Marks an approval as taken (its run moved on along its path).
    async fn close_approval(&self, id: ApprovalId) -> Result<(), StoreError>;
}
