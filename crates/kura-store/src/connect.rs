//! The persistence boundary of Kura Connect: flows and their immutable
//! versions, runs and their per-step records, the per-team key-value store
//! and sealed credentials.
//!
//! The rules (what a flow document may say, how a run proceeds, how a
//! credential is sealed) live in `kura-connect`; this trait stores and
//! fetches. Runs are claimed with a lease (`lease_owner`, `lease_until`):
//! a worker that dies stops renewing, and once the lease has expired any
//! worker may claim the run again, so a PostgreSQL backend can claim with
//! `FOR UPDATE SKIP LOCKED` on the same columns. Every step's result and the
//! run's next position are written in one transaction, so a run is never
//! half-recorded.

use async_trait::async_trait;
use kura_types::{AppId, FlowCredentialId, FlowId, RunId, TeamId};
use time::OffsetDateTime;

use crate::StoreError;
use crate::events::EventRecord;

/// A flow (its current version's document is in [`FlowVersionRecord`]).
#[derive(Clone, PartialEq, Eq)]
pub struct FlowRecord {
    /// Its id.
    pub id: FlowId,
    /// Its team.
    pub team: TeamId,
    /// The name from its current document.
    pub name: String,
    /// Whether triggers start it.
    pub enabled: bool,
    /// The newest version (1 for a new flow).
    pub version: u32,
    /// The unguessable token of its webhook URL (`/hooks/{token}`).
    pub webhook_token: String,
    /// The HMAC-SHA256 key webhook signatures are checked with.
    pub webhook_secret: Vec<u8>,
    /// When it was created.
    pub created_at: OffsetDateTime,
    /// When it last changed.
    pub updated_at: OffsetDateTime,
}

impl std::fmt::Debug for FlowRecord {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FlowRecord")
            .field("id", &self.id)
            .field("team", &self.team)
            .field("name", &self.name)
            .field("enabled", &self.enabled)
            .field("version", &self.version)
            .field("webhook_token", &"[REDACTED]")
            .field("webhook_secret", &"[REDACTED]")
            .finish_non_exhaustive()
    }
}

/// One immutable version of a flow's document.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FlowVersionRecord {
    /// The flow.
    pub flow: FlowId,
    /// 1, 2, 3, …
    pub version: u32,
    /// The document as canonical JSON.
    pub document: String,
    /// Who saved it, as an actor key.
    pub created_by: String,
    /// When.
    pub created_at: OffsetDateTime,
}

/// A run's state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RunStatus {
    /// Waiting for a worker.
    Queued,
    /// A worker holds its lease.
    Running,
    /// Paused until `not_before` (a delay step).
    Waiting,
    /// Finished.
    Succeeded,
    /// A step failed for good.
    Failed,
    /// Cancelled through the API.
    Cancelled,
    /// Given up on: it kept losing its worker (see `dead_reason`).
    DeadLetter,
}

impl RunStatus {
    /// Every status.
    pub const ALL: [RunStatus; 7] = [
        RunStatus::Queued,
        RunStatus::Running,
        RunStatus::Waiting,
        RunStatus::Succeeded,
        RunStatus::Failed,
        RunStatus::Cancelled,
        RunStatus::DeadLetter,
    ];

    /// Its stable name.
    pub fn as_str(self) -> &'static str {
        match self {
            RunStatus::Queued => "queued",
            RunStatus::Running => "running",
            RunStatus::Waiting => "waiting",
            RunStatus::Succeeded => "succeeded",
            RunStatus::Failed => "failed",
            RunStatus::Cancelled => "cancelled",
            RunStatus::DeadLetter => "dead_letter",
        }
    }

    /// Parses a stable name.
    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|x| x.as_str() == s)
    }

    /// Whether the run is over.
    pub fn is_final(self) -> bool {
        matches!(
            self,
            RunStatus::Succeeded | RunStatus::Failed | RunStatus::Cancelled | RunStatus::DeadLetter
        )
    }
}

/// A run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunRecord {
    /// Its id.
    pub id: RunId,
    /// The team.
    pub team: TeamId,
    /// The flow.
    pub flow: FlowId,
    /// The flow version it runs.
    pub version: u32,
    /// Its state.
    pub status: RunStatus,
    /// `webhook`, `manual`, `schedule`, `rerun`.
    pub trigger: String,
    /// The trigger's input document (JSON).
    pub input: String,
    /// The run's context so far: step outputs by step id (JSON).
    pub context: String,
    /// The step to run next (`None`: the run has not started or is over).
    pub next_step: Option<String>,
    /// How many steps have been recorded.
    pub steps_done: u32,
    /// The body a `respond` step produced (JSON), for a waiting webhook.
    pub response: Option<String>,
    /// Why it failed, was cancelled or dead-lettered.
    pub error: Option<String>,
    /// How many times it was taken over from a worker whose lease ran out
    /// (a worker that stopped or hung mid-run); too many make it dead letter.
    pub claims: u32,
    /// The worker holding it.
    pub lease_owner: Option<String>,
    /// Until when.
    pub lease_until: Option<OffsetDateTime>,
    /// Not to be run before this time (delays, retries).
    pub not_before: OffsetDateTime,
    /// When it was created.
    pub created_at: OffsetDateTime,
    /// When it first ran.
    pub started_at: Option<OffsetDateTime>,
    /// When it ended.
    pub finished_at: Option<OffsetDateTime>,
}

/// A new run.
#[derive(Debug, Clone)]
pub struct NewRun {
    /// Its id.
    pub id: RunId,
    /// The team.
    pub team: TeamId,
    /// The flow.
    pub flow: FlowId,
    /// The version to run.
    pub version: u32,
    /// How it was started.
    pub trigger: String,
    /// The input (JSON).
    pub input: String,
    /// The starting context (JSON; `{}` for a fresh run, earlier outputs for
    /// a re-run from a failed step).
    pub context: String,
    /// The first step.
    pub first_step: Option<String>,
    /// When.
    pub at: OffsetDateTime,
}

/// A run executed whole in memory, to be recorded finished with its steps
/// ([`ConnectStore::insert_finished_run`]).
#[derive(Debug, Clone)]
pub struct FinishedRun {
    /// The run as it was started (queued from this if the team is at its
    /// concurrency limit).
    pub new: NewRun,
    /// How it ended (a final status).
    pub status: RunStatus,
    /// The context at the end (JSON).
    pub context: String,
    /// A `respond` body (JSON).
    pub response: Option<String>,
    /// Why it failed.
    pub error: Option<String>,
    /// Its step records, in order (`seq` from 1).
    pub steps: Vec<StepRecord>,
    /// When it ended.
    pub finished_at: OffsetDateTime,
}

/// One executed step of a run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StepRecord {
    /// The run.
    pub run: RunId,
    /// 1 for the first recorded step.
    pub seq: u32,
    /// The step's id in the document.
    pub step: String,
    /// `succeeded`, `failed` (continued or branched), `started` (a side
    /// effect in flight when its worker stopped).
    pub status: String,
    /// What the step was given (JSON, secrets redacted).
    pub input: String,
    /// What it produced (JSON, secrets redacted).
    pub output: Option<String>,
    /// Why it failed.
    pub error: Option<String>,
    /// Tries made.
    pub attempts: u32,
    /// The idempotency key sent with a side-effecting call.
    pub idempotency_key: Option<String>,
    /// When it started.
    pub started_at: OffsetDateTime,
    /// When it ended.
    pub finished_at: Option<OffsetDateTime>,
}

/// How a run moves on after a step, written with the step's record.
#[derive(Debug, Clone)]
pub struct RunAdvance {
    /// The run.
    pub run: RunId,
    /// The worker that must still hold the lease.
    pub owner: String,
    /// The step's record.
    pub step: StepRecord,
    /// The new context (JSON).
    pub context: String,
    /// The next step (`None` with a final status).
    pub next_step: Option<String>,
    /// The new status.
    pub status: RunStatus,
    /// Not before (for `Waiting`).
    pub not_before: Option<OffsetDateTime>,
    /// A `respond` body.
    pub response: Option<String>,
    /// The error of a failed run.
    pub error: Option<String>,
    /// The lease's new end, for a run that stays `Running`.
    pub lease_until: Option<OffsetDateTime>,
    /// When.
    pub at: OffsetDateTime,
}

/// Filters for [`ConnectStore::runs`].
#[derive(Debug, Clone, Default)]
pub struct RunFilter {
    /// Only this flow's runs.
    pub flow: Option<FlowId>,
    /// Only runs in this state.
    pub status: Option<RunStatus>,
    /// Only runs created at or after.
    pub since: Option<OffsetDateTime>,
    /// Only runs created before.
    pub until: Option<OffsetDateTime>,
    /// Page size, 1..=500; 0 means 50.
    pub limit: usize,
}

/// Run counts and latency of one flow.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct FlowMetrics {
    /// Runs recorded.
    pub runs: u64,
    /// Succeeded.
    pub succeeded: u64,
    /// Failed or dead-lettered.
    pub failed: u64,
    /// Mean duration of finished runs, in milliseconds.
    pub mean_ms: f64,
    /// Longest finished run, in milliseconds.
    pub max_ms: f64,
}

/// A stored credential. `sealed` is the secret, sealed under the team's
/// data key by `kura-connect`; it never leaves through an API.
#[derive(Clone, PartialEq, Eq)]
pub struct FlowCredentialRecord {
    /// Its id.
    pub id: FlowCredentialId,
    /// The team.
    pub team: TeamId,
    /// The name flows refer to it by.
    pub name: String,
    /// `bearer`, `basic` or `header`.
    pub kind: String,
    /// Non-secret settings (JSON: a header name, a user name).
    pub settings: String,
    /// The sealed secret.
    pub sealed: Vec<u8>,
    /// Who created it, as an actor key.
    pub created_by: String,
    /// When.
    pub created_at: OffsetDateTime,
}

impl std::fmt::Debug for FlowCredentialRecord {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FlowCredentialRecord")
            .field("id", &self.id)
            .field("team", &self.team)
            .field("name", &self.name)
            .field("kind", &self.kind)
            .field("sealed", &"[REDACTED]")
            .finish_non_exhaustive()
    }
}

/// A scheduled flow's next fire time.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScheduleRecord {
    /// The flow.
    pub flow: FlowId,
    /// Its team.
    pub team: TeamId,
    /// The cron expression.
    pub cron: String,
    /// The IANA time zone.
    pub timezone: String,
    /// When it fires next.
    pub next_fire_at: OffsetDateTime,
}

/// An enabled flow's place in a hosted app's change outbox (its app-event
/// trigger).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AppSubscriptionRecord {
    /// The flow.
    pub flow: FlowId,
    /// Its team.
    pub team: TeamId,
    /// The app whose outbox it follows.
    pub app: AppId,
    /// The last outbox entry handled (runs queued for it, or skipped).
    pub cursor: i64,
}

/// Kura Connect's state.
#[async_trait]
pub trait ConnectStore:
    crate::connect_approvals::ApprovalStore
    + crate::connect_oauth::OAuthStore
    + Send
    + Sync
    + std::fmt::Debug
{
    /// Creates a flow with its first version and the events describing it
    /// (appended in the same transaction, like every `events` below).
    async fn create_flow(
        &self,
        flow: FlowRecord,
        version: FlowVersionRecord,
        events: Vec<EventRecord>,
    ) -> Result<(), StoreError>;

    /// Adds the next version of a team's flow; fails with
    /// [`StoreError::Conflict`] if `expected` is no longer the newest.
    async fn add_version(
        &self,
        team: TeamId,
        version: FlowVersionRecord,
        name: String,
        expected: u32,
        events: Vec<EventRecord>,
    ) -> Result<(), StoreError>;

    /// A team's flow.
    async fn flow(&self, team: TeamId, id: FlowId) -> Result<Option<FlowRecord>, StoreError>;

    /// The flow behind a webhook token.
    async fn flow_by_token(&self, token: &str) -> Result<Option<FlowRecord>, StoreError>;

    /// A team's flows, by name.
    async fn flows(&self, team: TeamId) -> Result<Vec<FlowRecord>, StoreError>;

    /// One version of a team's flow.
    async fn version(
        &self,
        team: TeamId,
        id: FlowId,
        version: u32,
    ) -> Result<Option<FlowVersionRecord>, StoreError>;

    /// Every version's number, author and time (documents left out).
    async fn versions(
        &self,
        team: TeamId,
        id: FlowId,
    ) -> Result<Vec<FlowVersionRecord>, StoreError>;

    /// Enables or disables a flow; false if there is no such flow.
    async fn set_enabled(
        &self,
        team: TeamId,
        id: FlowId,
        enabled: bool,
        at: OffsetDateTime,
        events: Vec<EventRecord>,
    ) -> Result<bool, StoreError>;

    /// Deletes a flow, its versions and its runs; false if there was none.
    async fn delete_flow(
        &self,
        team: TeamId,
        id: FlowId,
        events: Vec<EventRecord>,
    ) -> Result<bool, StoreError>;

    /// Sets (or with `None` removes) a flow's schedule.
    async fn set_schedule(
        &self,
        flow: FlowId,
        schedule: Option<ScheduleRecord>,
    ) -> Result<(), StoreError>;

    /// Schedules of enabled flows due at `now`.
    async fn due_schedules(&self, now: OffsetDateTime) -> Result<Vec<ScheduleRecord>, StoreError>;

    /// Fires a schedule: moves `next_fire_at` from `due.next_fire_at` to
    /// `next` and queues `run`, in one transaction, only if no one fired it
    /// first (compare-and-swap on the fire time); answers whether it fired.
    /// So a schedule fires once per fire time across restarts and nodes.
    async fn fire_schedule(
        &self,
        due: &ScheduleRecord,
        next: OffsetDateTime,
        run: NewRun,
    ) -> Result<bool, StoreError>;

    /// Sets (or with `None` removes) a flow's app-event subscription.
    async fn set_app_subscription(
        &self,
        flow: FlowId,
        subscription: Option<AppSubscriptionRecord>,
    ) -> Result<(), StoreError>;

    /// A flow's app-event subscription.
    async fn app_subscription(
        &self,
        flow: FlowId,
    ) -> Result<Option<AppSubscriptionRecord>, StoreError>;

    /// The subscriptions of enabled flows.
    async fn app_subscriptions(&self) -> Result<Vec<AppSubscriptionRecord>, StoreError>;

    /// Moves a subscription's cursor from `from.cursor` to `to` and queues
    /// `runs`, in one transaction, only if the cursor has not moved
    /// (compare-and-swap); answers whether it did. Outbox entries are
    /// therefore turned into runs once, across restarts and nodes.
    async fn deliver_app_events(
        &self,
        from: &AppSubscriptionRecord,
        to: i64,
        runs: Vec<NewRun>,
    ) -> Result<bool, StoreError>;

    /// Extends the lease of a run `owner` holds (a long step's progress);
    /// answers whether it still holds it.
    async fn renew_lease(
        &self,
        run: RunId,
        owner: &str,
        lease_until: OffsetDateTime,
    ) -> Result<bool, StoreError>;

    /// Queues a run.
    async fn insert_run(&self, run: NewRun) -> Result<(), StoreError>;

    /// Inserts a run already claimed by `owner` when its team has fewer
    /// than `team_limit` live running runs (checked in the same
    /// transaction), else queued; answers whether it is claimed. A webhook
    /// runs its flow this way in the request, and no worker can take it
    /// first.
    async fn insert_claimed_run(
        &self,
        run: NewRun,
        owner: &str,
        lease_until: OffsetDateTime,
        team_limit: u32,
    ) -> Result<bool, StoreError>;

    /// Records a run that was executed whole in memory — only steps
    /// without side effects, so running it again would do nothing twice —
    /// as finished, with all its step records, in one transaction. The
    /// team's concurrency limit is checked in the same transaction as for
    /// [`ConnectStore::insert_claimed_run`]: at the limit the run is queued
    /// from its start instead (its in-memory result discarded) and the
    /// answer is false.
    async fn insert_finished_run(
        &self,
        run: FinishedRun,
        team_limit: u32,
    ) -> Result<bool, StoreError>;

    /// Claims the oldest runnable run: queued or waiting and due, or
    /// running with an expired lease, of a team with fewer than
    /// `team_limit` live running runs. `only` restricts it to one run.
    async fn claim_run(
        &self,
        owner: &str,
        now: OffsetDateTime,
        lease_until: OffsetDateTime,
        team_limit: u32,
        only: Option<RunId>,
    ) -> Result<Option<RunRecord>, StoreError>;

    /// Records a step as started (before a side effect), if the worker
    /// still holds the run.
    async fn start_step(&self, owner: &str, step: StepRecord) -> Result<bool, StoreError>;

    /// Records a finished step and moves the run on in one transaction.
    /// Returns false (writing nothing) if the worker no longer holds the
    /// run (its lease passed to another, or it was cancelled).
    async fn advance(&self, advance: RunAdvance) -> Result<bool, StoreError>;

    /// Ends a run the worker holds without a step (dead letter).
    async fn finish_run(
        &self,
        run: RunId,
        owner: Option<&str>,
        status: RunStatus,
        error: &str,
        at: OffsetDateTime,
    ) -> Result<bool, StoreError>;

    /// Cancels a team's run that is not over; false if it is over or absent.
    async fn cancel_run(
        &self,
        team: TeamId,
        run: RunId,
        at: OffsetDateTime,
        events: Vec<EventRecord>,
    ) -> Result<bool, StoreError>;

    /// A run (any team; callers check the team).
    async fn run(&self, run: RunId) -> Result<Option<RunRecord>, StoreError>;

    /// A team's runs, newest first.
    async fn runs(&self, team: TeamId, filter: RunFilter) -> Result<Vec<RunRecord>, StoreError>;

    /// A run's step records, in order.
    async fn steps(&self, run: RunId) -> Result<Vec<StepRecord>, StoreError>;

    /// The record of a step that was started but not finished (a resumed
    /// run sends the same idempotency key again).
    async fn started_step(&self, run: RunId, step: &str) -> Result<Option<StepRecord>, StoreError>;

    /// Run counts and latency of a flow.
    async fn metrics(&self, team: TeamId, flow: FlowId) -> Result<FlowMetrics, StoreError>;

    /// Deletes finished runs that ended before `before`; returns how many.
    async fn prune_runs(&self, before: OffsetDateTime) -> Result<u64, StoreError>;

    /// A value of a team's key-value store.
    async fn kv_get(&self, team: TeamId, key: &str) -> Result<Option<String>, StoreError>;

    /// Sets a value of a team's key-value store.
    async fn kv_set(
        &self,
        team: TeamId,
        key: &str,
        value: &str,
        at: OffsetDateTime,
    ) -> Result<(), StoreError>;

    /// Stores a credential; [`StoreError::Conflict`] if the name is taken.
    async fn create_credential(
        &self,
        credential: FlowCredentialRecord,
        events: Vec<EventRecord>,
    ) -> Result<(), StoreError>;

    /// A team's credentials.
    async fn credentials(&self, team: TeamId) -> Result<Vec<FlowCredentialRecord>, StoreError>;

    /// A team's credential by name.
    async fn credential(
        &self,
        team: TeamId,
        name: &str,
    ) -> Result<Option<FlowCredentialRecord>, StoreError>;

    /// Deletes a team's credential; false if there was none.
    async fn delete_credential(
        &self,
        team: TeamId,
        id: FlowCredentialId,
        events: Vec<EventRecord>,
    ) -> Result<Option<String>, StoreError>;
}
