//! Syslog over TLS, network side (RFC 5425): the ingest listener and the
//! export client.
//!
//! - [`SyslogListener`]: accepts RFC 5424 messages in octet-counted frames
//!   from senders that present a client certificate signed by a configured
//!   CA (syslog has no tokens, so mutual TLS is its authentication), and
//!   records each one through the [`EventSink`](kura_events::EventSink)
//!   before reading the next. Refusals are counted by
//!   [`RejectReason`](kura_events::syslog::RejectReason).
//! - [`SyslogExporter`]: sends stored events to a syslog receiver (a SIEM, a
//!   central rsyslog) over TLS, verifying the receiver against a configured
//!   CA and optionally presenting a client certificate; it is a
//!   [`kura_events::ExportSink`] for the export runner.
//!
//! Parsing, normalisation and formatting are domain rules and live in
//! [`kura_events::syslog`]; this module only moves bytes.

mod export;
mod listener;

pub use export::{SyslogExportConfig, SyslogExporter};
pub use listener::{
    SyslogLimits, SyslogListener, SyslogListenerError, SyslogStats, SyslogStatsHandle,
};
