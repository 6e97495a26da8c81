//! Kura's security event pipeline, domain side.
//!
//! This crate owns how the rest of Kura emits and checks security events
//! (shared/DESIGN.md, decision 8):
//! - [`EventSink`]: the one interface every crate emits through
//!   (`record(event).await` returns once the event is durable; an error means
//!   the action must fail: no event, no action). [`LogSink`] is the real one,
//!   over the tamper-evident [`kura_store::events::EventLog`]; [`MemorySink`]
//!   is for other crates' tests.
//! - [`prepare`]: sanitise, size-check and encode an event for
//!   [`kura_store::events::append_in_tx`], so a state change and its event
//!   commit in one transaction.
//!   [`EventSink::observe`] then shows such events to the detection rules
//!   (Kura ID's changes reach the log this way).
//! - [`VerifyReport`]: the result of walking the hash chain and its signed
//!   checkpoints, with the human-readable text `kura events verify` prints.
//! - [`Detector`]: the detection rules of issue 4, each with a documented
//!   threshold, producing [`Alert`]s linked to the events that caused them.
//! - [`export`]: streaming exports to SIEMs. [`Exporter`] moves one
//!   [`ExportSink`]'s durable cursor through the log (at least once, never
//!   skipping); sinks for JSON lines files with rotation and signed webhooks
//!   live there, and the syslog exporter implements the same trait.
//! - [`incident`]: incidents with severities and response-time targets, a
//!   state machine, alert joining and a communication plan;
//!   [`IncidentService`] is the API for responders and the [`AlertHandler`]
//!   that turns alerts into incidents. Every incident change is an event in
//!   the same transaction.
//! - [`syslog`]: RFC 5424 messages in RFC 5425 octet-counted frames: the
//!   parser, frame decoder and normalisation into events for ingest (each
//!   refusal with a countable reason) and the formatter for syslog exports.
//!   The TLS listener and exporter that use it live in `kura-server`.
//!
//! The event model itself ([`kura_types::SecurityEvent`]) and its sanitiser
//! live in `kura-types`; the log's format and SQL in `kura-store`; signatures
//! in `kura-crypto`. This crate knows no SQL and no HTTP.
//!
//! # Wiring
//!
//! ```text
//! let log = EventLog::open(&storage, clock.clone(), EventLogOptions::default()).await?;
//! let sink = LogSink::with_detector(log.clone(), Detector::new());
//! let events: Arc<dyn EventSink> = Arc::new(sink.clone());
//! // handlers: events.record(SecurityEvent::new(clock.now(), actor, action, outcome)
//! //     .with_source(addr).with_request_id(id)).await?;
//! // GET /api/v1/events: log.query(EventQuery { team, cursor, .. }).await?
//! // kura events verify: println!("{}", sink.verify(VerifyOptions::default()).await?);
//! // checkpoint export: serde_json::to_string(&log.export_checkpoints().await?)
//! // incidents: let incidents = Arc::new(IncidentService::new(
//! //     Arc::new(SqliteIncidentStore::new(log.pool().clone())), clock.clone(), plan)
//! //     .with_channel(Arc::new(WebhookChannel::new(webhook_client))));
//! // let sink = sink.with_alert_handler(incidents.clone());
//! // tokio::spawn(incidents.clone().run_notifier(Duration::from_secs(5), shutdown()));
//! // exports: Exporter::new(Arc::new(JsonlSink::new(cfg, clock.clone())?), log.clone(),
//! //     Arc::new(SqliteExportStore::new(log.pool().clone())), clock.clone(),
//! //     ExporterOptions::default()).spawn(shutdown());
//! // retention: log.prune_older_than(Duration::days(400)).await?
//! ```

pub mod detect;
pub mod export;
pub mod incident;
mod report;
mod sink;
pub mod syslog;

pub use detect::{Alert, Detector, Severity, actions};
pub use export::{ExportError, ExportSink, Exporter};
pub use incident::{IncidentError, IncidentService, IncidentState};
pub use report::VerifyReport;
pub use sink::AlertHandler;
pub use sink::{EventError, EventSink, LogSink, MAX_EVENT_BYTES, MemorySink, event, prepare};

/// The public key type for [`VerifyOptions::trusted_keys`] and
/// [`CheckpointExport::verify`].
pub use kura_crypto::signing::PublicKey;
/// The log types callers need beside the sink, re-exported so they depend on
/// one crate for events.
pub use kura_store::events::{
    BreakKind, ChainBreak, Checkpoint, CheckpointExport, EventLog, EventLogOptions, EventPage,
    EventQuery, Order, PruneReport, StoredEvent, VerifyOptions,
};
