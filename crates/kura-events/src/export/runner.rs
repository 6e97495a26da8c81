//! [`Exporter`]: the task that moves one sink's cursor through the log.

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use kura_store::events::{EventLog, EventQuery, Order, Seq};
use kura_store::exports::ExportStore;
use kura_types::Clock;
use parking_lot::Mutex;
use tokio::sync::Notify;

use super::{Backoff, ExportError, ExportSink};

/// Tuning for an [`Exporter`].
#[derive(Debug, Clone, Copy)]
pub struct ExporterOptions {
    /// The most events per batch (clamped to the log's page limit).
    pub batch_size: usize,
    /// How often to look for new events when idle (a [`Exporter::waker`]
    /// notification looks at once).
    pub poll_interval: Duration,
    /// The waits between failed batches.
    pub backoff: Backoff,
}

impl Default for ExporterOptions {
    fn default() -> Self {
        Self {
            batch_size: 500,
            poll_interval: Duration::from_secs(1),
            backoff: Backoff::default(),
        }
    }
}

/// Counters of one exporter, for metrics and status pages.
#[derive(Debug, Default)]
pub struct ExportStats {
    exported: AtomicU64,
    failed: AtomicU64,
    cursor: AtomicU64,
    last_error: Mutex<Option<String>>,
}

impl ExportStats {
    /// Events delivered and acknowledged since start.
    pub fn exported(&self) -> u64 {
        self.exported.load(Ordering::Relaxed)
    }

    /// Batches that failed since start (each is retried).
    pub fn failed(&self) -> u64 {
        self.failed.load(Ordering::Relaxed)
    }

    /// The last acknowledged sequence number seen by this process (0: none).
    pub fn cursor(&self) -> Seq {
        self.cursor.load(Ordering::Relaxed)
    }

    /// The latest failure, cleared by the next success.
    pub fn last_error(&self) -> Option<String> {
        self.last_error.lock().clone()
    }
}

/// Exports the log to one sink: read after the cursor, deliver, advance.
#[derive(Debug, Clone)]
pub struct Exporter {
    sink: Arc<dyn ExportSink>,
    log: EventLog,
    cursors: Arc<dyn ExportStore>,
    clock: Arc<dyn Clock>,
    options: ExporterOptions,
    stats: Arc<ExportStats>,
    wake: Arc<Notify>,
}

impl Exporter {
    /// An exporter of `log` to `sink`, keeping its cursor in `cursors`
    /// under the sink's name.
    pub fn new(
        sink: Arc<dyn ExportSink>,
        log: EventLog,
        cursors: Arc<dyn ExportStore>,
        clock: Arc<dyn Clock>,
        options: ExporterOptions,
    ) -> Self {
        Self {
            sink,
            log,
            cursors,
            clock,
            options,
            stats: Arc::new(ExportStats::default()),
            wake: Arc::new(Notify::new()),
        }
    }

    /// The sink's name.
    pub fn name(&self) -> &str {
        self.sink.name()
    }

    /// The counters.
    pub fn stats(&self) -> Arc<ExportStats> {
        Arc::clone(&self.stats)
    }

    /// Notify this to make an idle exporter look for new events at once.
    pub fn waker(&self) -> Arc<Notify> {
        Arc::clone(&self.wake)
    }

    /// Exports one batch after the cursor; returns how many events it
    /// delivered (0: nothing new). The cursor moves only after the sink
    /// acknowledged the batch.
    pub async fn export_once(&self) -> Result<usize, ExportError> {
        let name = self.sink.name();
        let from = self.cursors.cursor(name).await?.map(|c| c.seq);
        let page = self
            .log
            .query(EventQuery {
                cursor: from,
                order: Order::OldestFirst,
                limit: self.options.batch_size.max(1),
                ..EventQuery::default()
            })
            .await?;
        let Some(last) = page.events.last().map(|e| e.seq) else {
            return Ok(0);
        };
        let count = page.events.len();
        let expected = from.unwrap_or(0) + 1;
        if let Some(first) = page.events.first().map(|e| e.seq)
            && first > expected
        {
            // Sequence numbers have no gaps; a jump means retention pruned
            // events before this sink exported them.
            tracing::warn!(
                exporter = name,
                missing_from = expected,
                missing_to = first - 1,
                "events were pruned before this exporter delivered them"
            );
        }
        if let Err(e) = self.sink.deliver(&page.events).await {
            self.stats.failed.fetch_add(1, Ordering::Relaxed);
            *self.stats.last_error.lock() = Some(e.to_string());
            return Err(e);
        }
        self.cursors
            .advance(name, from, last, count as u64, self.clock.now())
            .await?;
        self.stats
            .exported
            .fetch_add(count as u64, Ordering::Relaxed);
        self.stats.cursor.store(last, Ordering::Relaxed);
        *self.stats.last_error.lock() = None;
        Ok(count)
    }

    /// Exports until `shutdown` completes: batch after batch while there is
    /// a backlog, then one look per poll interval (or per wake-up), with
    /// back-off after failures. A batch in flight is finished, not
    /// abandoned, so a stop never leaves half a batch behind.
    pub async fn run(self, shutdown: impl Future<Output = ()> + Send) {
        tokio::pin!(shutdown);
        let mut failures: u32 = 0;
        loop {
            let wait = match self.export_once().await {
                Ok(0) => {
                    failures = 0;
                    self.options.poll_interval
                }
                Ok(_) => {
                    failures = 0;
                    Duration::ZERO
                }
                Err(e) => {
                    failures = failures.saturating_add(1);
                    let wait = self.options.backoff.delay(failures);
                    tracing::warn!(exporter = self.name(), error = %e, failures, retry_in = ?wait, "event export failed");
                    wait
                }
            };
            tokio::select! {
                biased;
                () = &mut shutdown => break,
                () = self.wake.notified(), if failures == 0 => {}
                () = tokio::time::sleep(wait) => {}
            }
        }
        tracing::info!(
            exporter = self.name(),
            exported = self.stats.exported(),
            "event exporter stopped"
        );
    }

    /// Runs the exporter on its own task.
    pub fn spawn(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> tokio::task::JoinHandle<()> {
        tokio::spawn(self.run(shutdown))
    }
}
