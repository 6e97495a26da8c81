//! Streaming exports of the security event log to outside systems (SIEMs).
//!
//! An [`Exporter`] drives one [`ExportSink`]: it reads the log after the
//! sink's durable cursor (oldest first), hands the batch to the sink, and
//! moves the cursor only after the sink acknowledged it. A restart resumes
//! after the last acknowledged batch, so no event is missed; a batch that
//! was delivered but whose cursor move was lost (a crash between the two) is
//! delivered again, so receivers see every event at least once and drop
//! repeats by `seq`.
//!
//! Sinks here: [`JsonlSink`] (JSON lines files with size and age rotation)
//! and [`WebhookSink`] (batches POSTed with an HMAC-SHA256 signature,
//! retried with exponential back-off and jitter). The syslog exporter in
//! `kura-server` implements the same trait. Every sink writes each event as
//! its [`export_record`]: the canonical JSON of the event with its `seq`
//! and chain `hash`, so a receiver can check the copy against the chain and
//! the signed checkpoints.
//!
//! Cursors and delivery attempts are stored through
//! [`kura_store::exports::ExportStore`].

mod jsonl;
mod runner;
mod webhook;

use std::time::Duration;

use async_trait::async_trait;
use kura_store::StoreError;
use kura_store::events::StoredEvent;

pub use jsonl::{JsonlConfig, JsonlSink};
pub use runner::{ExportStats, Exporter, ExporterOptions};
pub use webhook::{
    DELIVERY_HEADER, RetryPolicy, SIGNATURE_HEADER, SignatureError, WebhookClient, WebhookConfig,
    WebhookOutcome, WebhookSink, signature_header, verify_signature,
};

/// Why a batch was not exported.
#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    /// The sink is configured in a way that cannot work.
    #[error("export `{sink}` is misconfigured: {detail}")]
    Config {
        /// The sink.
        sink: String,
        /// What is wrong.
        detail: String,
    },
    /// The receiver did not acknowledge the batch; it will be retried.
    #[error("export `{sink}` failed: {detail}")]
    Delivery {
        /// The sink.
        sink: String,
        /// What went wrong.
        detail: String,
    },
    /// An event could not be encoded for export.
    #[error("an event cannot be exported: {0}")]
    Encode(String),
    /// Reading the log or moving the cursor failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl ExportError {
    /// A delivery failure of `sink`, for sink implementations (such as the
    /// syslog exporter) that map their own errors.
    pub fn delivery(sink: impl Into<String>, detail: impl std::fmt::Display) -> Self {
        Self::Delivery {
            sink: sink.into(),
            detail: detail.to_string(),
        }
    }
}

/// Somewhere events are exported to. `deliver` returns `Ok` only once the
/// receiver has the whole batch (acknowledged, or written and synced); on
/// error the runner retries the same batch later.
#[async_trait]
pub trait ExportSink: Send + Sync + std::fmt::Debug {
    /// The sink's name: the key of its cursor, and its name in logs and
    /// metrics. Unique per installation.
    fn name(&self) -> &str;

    /// Delivers a batch, oldest first. Never called with an empty batch.
    async fn deliver(&self, batch: &[StoredEvent]) -> Result<(), ExportError>;
}

/// One exported event as JSON text (no trailing newline):
/// `{"seq":N,"hash":"<64 hex>","event":<canonical event JSON>}`. The event is
/// embedded as the exact canonical bytes the chain commits to.
pub fn export_record(stored: &StoredEvent) -> Result<String, ExportError> {
    let body = stored
        .event
        .canonical_json()
        .map_err(|e| ExportError::Encode(e.to_string()))?;
    let body = String::from_utf8(body).map_err(|e| ExportError::Encode(e.to_string()))?;
    Ok(format!(
        "{{\"seq\":{},\"hash\":\"{}\",\"event\":{body}}}",
        stored.seq,
        hex::encode(stored.hash)
    ))
}

/// Exponential back-off with jitter: the n-th wait is drawn uniformly from
/// the upper half of `min(max, initial * 2^(n-1))`, so retries of many
/// clients spread out instead of arriving together.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backoff {
    /// The first wait (before jitter).
    pub initial: Duration,
    /// The longest wait.
    pub max: Duration,
}

impl Default for Backoff {
    fn default() -> Self {
        Self {
            initial: Duration::from_secs(1),
            max: Duration::from_secs(300),
        }
    }
}

impl Backoff {
    /// The wait before retry number `failures` (1 after the first failure).
    pub fn delay(&self, failures: u32) -> Duration {
        let shift = failures.saturating_sub(1).min(30);
        let full = self
            .initial
            .saturating_mul(1u32 << shift)
            .min(self.max.max(self.initial));
        let half = full / 2;
        // Randomness comes from the one CSPRNG; if it fails, wait the full
        // delay rather than not at all.
        match kura_crypto::random::array::<8>() {
            Ok(bytes) => {
                let nanos = u64::try_from(half.as_nanos()).unwrap_or(u64::MAX);
                let r = u64::from_le_bytes(bytes);
                half + Duration::from_nanos(if nanos == 0 { 0 } else { r % (nanos + 1) })
            }
            Err(_) => full,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kura_types::{Action, Actor, Outcome, SecurityEvent};

    #[test]
    fn backoff_doubles_with_jitter_in_the_upper_half_and_is_capped() {
        let b = Backoff {
            initial: Duration::from_millis(100),
            max: Duration::from_secs(1),
        };
        for (failures, full) in [
            (1, 100),
            (2, 200),
            (3, 400),
            (4, 800),
            (5, 1000),
            (40, 1000),
        ] {
            for _ in 0..20 {
                let d = b.delay(failures);
                let full = Duration::from_millis(full);
                assert!(d >= full / 2 && d <= full, "{failures}: {d:?}");
            }
        }
    }

    #[test]
    fn records_embed_the_canonical_event_with_seq_and_hash() {
        let event = SecurityEvent::new(
            time::OffsetDateTime::UNIX_EPOCH,
            Actor::Anonymous,
            Action::parse("auth.signin.failed").unwrap(),
            Outcome::Failure,
        );
        let stored = StoredEvent {
            seq: 7,
            hash: [0xab; 32],
            event: event.clone(),
        };
        let line = export_record(&stored).unwrap();
        let canonical = String::from_utf8(event.canonical_json().unwrap()).unwrap();
        assert_eq!(
            line,
            format!(
                "{{\"seq\":7,\"hash\":\"{}\",\"event\":{canonical}}}",
                "ab".repeat(32)
            )
        );
        let v: serde_json::Value = serde_json::from_str(&line).unwrap();
        assert_eq!(v["seq"], 7);
        assert_eq!(
            SecurityEvent::from_json(v["event"].to_string().as_bytes()).unwrap(),
            event
        );
    }
}
