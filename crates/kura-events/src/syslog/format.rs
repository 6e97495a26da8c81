//! From a stored [`SecurityEvent`] to an RFC 5424 message, for exports.

use std::fmt::Write as _;

use kura_store::events::StoredEvent;
use kura_types::{Outcome, SecurityEvent};
use time::OffsetDateTime;

use super::normalize::{KURA_SD_ID, severity_code};
use crate::export::{ExportError, export_record};

/// The fixed parts of exported messages.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExportFormat {
    /// HOSTNAME: this Kura's name as the SIEM should see it.
    pub hostname: String,
    /// APP-NAME (default `kura`).
    pub app_name: String,
    /// The facility code (default 10, `authpriv`: security and authorisation
    /// messages that should not go to world-readable logs).
    pub facility: u8,
}

impl Default for ExportFormat {
    fn default() -> Self {
        Self {
            hostname: "-".into(),
            app_name: "kura".into(),
            facility: 10,
        }
    }
}

/// Formats one stored event as an RFC 5424 message (no framing, no trailing
/// newline).
///
/// ```text
/// <PRI>1 TIMESTAMP HOSTNAME APP-NAME - MSGID [kura@32473 seq="…" hash="…"
///   id="…" action="…" outcome="…" actor="…" team="…" target="…" src="…"
///   request_id="…" user_agent="…"] BOM{"seq":…,"hash":"…","event":{…}}
/// ```
///
/// - PRI: the configured facility; severity `alert` for detection alerts,
///   the original severity for events ingested from syslog, `warning` for
///   failures and denials, `notice` otherwise.
/// - TIMESTAMP: the event time in UTC, to the microsecond (RFC 5424 allows
///   six fractional digits).
/// - MSGID: the action if it fits RFC 5424's 32 characters, else `-`; the
///   `action` parameter always holds it in full.
/// - The `[kura@32473 …]` element holds the fields a SIEM indexes, escaped
///   as section 6.3.3 requires; absent optional fields are left out.
/// - MSG: the same [`export_record`] every export sink writes (the
///   canonical event JSON, already sanitised when it was recorded, with its
///   `seq` and chain `hash`), so a receiver can check the copy against the
///   chain and its signed checkpoints. It starts with a BOM, as RFC 5424
///   asks of UTF-8 messages.
pub fn format_event(stored: &StoredEvent, format: &ExportFormat) -> Result<String, ExportError> {
    let record = export_record(stored)?;
    let event = &stored.event;
    let severity = export_severity(event);
    let pri = u16::from(format.facility.min(23)) * 8 + u16::from(severity);
    let action = event.action.as_str();
    let msgid = if action.len() <= 32 { action } else { "-" };
    let mut out = format!(
        "<{pri}>1 {} {} {} - {msgid} [{KURA_SD_ID}",
        timestamp(event.time),
        header_field(&format.hostname, 255),
        header_field(&format.app_name, 48),
    );
    let mut param = |name: &str, value: &str| {
        let _ = write!(out, " {name}=\"{}\"", escape_param_value(value));
    };
    param("seq", &stored.seq.to_string());
    param("hash", &hex::encode(stored.hash));
    param("id", &event.id.to_string());
    param("action", action);
    param("outcome", event.outcome.as_str());
    param("actor", &event.actor.key());
    if let Some(team) = &event.team {
        param("team", &team.to_string());
    }
    if let Some(target) = &event.target {
        param("target", target);
    }
    if let Some(src) = &event.source {
        param("src", &src.to_string());
    }
    if let Some(id) = &event.request_id {
        param("request_id", id);
    }
    if let Some(ua) = &event.user_agent {
        param("user_agent", ua);
    }
    out.push_str("] \u{feff}");
    out.push_str(&record);
    Ok(out)
}

/// Wraps a message in RFC 5425 octet-counting framing: `LEN SP MSG`.
pub fn frame(message: &str) -> Vec<u8> {
    let mut out = format!("{} ", message.len()).into_bytes();
    out.extend_from_slice(message.as_bytes());
    out
}

/// Escapes a PARAM-VALUE: `"`, `\` and `]` get a backslash (RFC 5424,
/// section 6.3.3).
pub fn escape_param_value(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for c in value.chars() {
        if matches!(c, '"' | '\\' | ']') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

fn export_severity(event: &SecurityEvent) -> u8 {
    if event.action.has_prefix("detect.alert") {
        return 1;
    }
    let ingested = event.details.get("ingest").and_then(|v| v.as_str()) == Some("syslog");
    if ingested
        && let Some(code) = event
            .details
            .get("severity")
            .and_then(|v| v.as_str())
            .and_then(severity_code)
    {
        return code;
    }
    match event.outcome {
        Outcome::Success => 5,
        Outcome::Failure | Outcome::Denied => 4,
    }
}

fn timestamp(t: OffsetDateTime) -> String {
    let t = t.to_offset(time::UtcOffset::UTC);
    format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:06}Z",
        t.year(),
        u8::from(t.month()),
        t.day(),
        t.hour(),
        t.minute(),
        t.second(),
        t.microsecond()
    )
}

/// A header field that is always valid: printable US-ASCII only (others
/// become `_`), at most `max` characters, `-` when empty.
fn header_field(value: &str, max: usize) -> String {
    let cleaned: String = value
        .chars()
        .take(max)
        .map(|c| if c.is_ascii_graphic() { c } else { '_' })
        .collect();
    if cleaned.is_empty() {
        "-".into()
    } else {
        cleaned
    }
}
