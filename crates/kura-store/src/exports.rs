//! The persistence boundary of SIEM exports: one durable cursor per export
//! sink and a record of delivery attempts.
//!
//! A cursor is the sequence number of the last event a sink acknowledged.
//! The exporter in `kura-events` reads the log after it, delivers, and only
//! then calls [`ExportStore::advance`], so a restart resumes exactly after
//! the last acknowledged batch (at least once: a batch delivered but not yet
//! recorded is delivered again, and its `seq` lets the receiver drop the
//! repeat). Advancing is a compare-and-swap on the previous position, so two
//! exporters that share a name cannot both move one cursor.

use async_trait::async_trait;
use time::OffsetDateTime;

use crate::StoreError;
use crate::events::Seq;

/// Where one sink stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ExportCursor {
    /// The last sequence number the sink acknowledged.
    pub seq: Seq,
    /// Events exported through this cursor since it was created.
    pub exported: u64,
    /// When it last moved.
    pub updated_at: OffsetDateTime,
}

/// One try at delivering something to an outside system (a batch of events
/// to a SIEM, a notification to a webhook).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeliveryAttempt {
    /// The sink or channel name.
    pub channel: String,
    /// What was being delivered (`events 41..=60`, `notification <id>`).
    pub subject: String,
    /// 1 for the first try of this delivery.
    pub attempt: u32,
    /// When it was made.
    pub at: OffsetDateTime,
    /// Whether the receiver acknowledged it.
    pub ok: bool,
    /// The HTTP status, when there was a response.
    pub status: Option<u16>,
    /// Why it failed.
    pub error: Option<String>,
}

/// Export cursors and delivery attempts, whatever the backend.
#[async_trait]
pub trait ExportStore: Send + Sync + std::fmt::Debug {
    /// The cursor of sink `name`, if it ever exported anything.
    async fn cursor(&self, name: &str) -> Result<Option<ExportCursor>, StoreError>;

    /// Moves the cursor of `name` from `from` (`None`: it has none yet) to
    /// `to`, adding `count` to its export counter. Fails with
    /// [`StoreError::Conflict`] and changes nothing if the cursor is not at
    /// `from` or `to` is not after it.
    async fn advance(
        &self,
        name: &str,
        from: Option<Seq>,
        to: Seq,
        count: u64,
        now: OffsetDateTime,
    ) -> Result<(), StoreError>;

    /// Records delivery attempts.
    async fn record_attempts(&self, attempts: Vec<DeliveryAttempt>) -> Result<(), StoreError>;

    /// The latest attempts on `channel`, newest first.
    async fn attempts(
        &self,
        channel: &str,
        limit: usize,
    ) -> Result<Vec<DeliveryAttempt>, StoreError>;
}
