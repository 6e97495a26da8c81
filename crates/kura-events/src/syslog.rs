//! Syslog, domain side: RFC 5424 messages in RFC 5425 (TLS) frames, turned
//! into [`SecurityEvent`](kura_types::SecurityEvent)s and back.
//!
//! - [`parse`]: one RFC 5424 message (PRI, VERSION, TIMESTAMP, HOSTNAME,
//!   APP-NAME, PROCID, MSGID, STRUCTURED-DATA with its escapes, MSG with an
//!   optional BOM) into a [`SyslogMessage`]. The whole message must be UTF-8.
//! - [`FrameDecoder`]: the octet-counting framing of RFC 5425 (`LEN SP MSG`)
//!   over a byte stream. Non-transparent (newline) framing is refused, and an
//!   oversized frame is skipped without being buffered.
//! - [`normalize`] / [`ingest`]: a message into the event model, with the
//!   timestamp window of an [`IngestPolicy`]; the mapping is documented on
//!   [`normalize`].
//! - [`format_event`] / [`frame`]: a stored event as an RFC 5424 message and
//!   its octet-counted frame, for exports to a SIEM.
//!
//! Every refusal is a [`SyslogError`] whose [`SyslogError::reason`] is one of
//! a small fixed set ([`RejectReason`]) so listeners can count refusals by
//! reason. This module knows no sockets and no TLS; the listener and the
//! exporter live in `kura-server`.

mod format;
mod frame;
mod normalize;
mod parse;

pub use format::{ExportFormat, escape_param_value, format_event, frame};
pub use frame::{Frame, FrameDecoder, MAX_SKIPPABLE_FRAME};
pub use normalize::{
    DEFAULT_ACTION, IngestPolicy, KURA_SD_ID, Provenance, facility_name, ingest, normalize,
    severity_name,
};
pub use parse::{SdElement, SyslogMessage, parse};

/// Why a frame or message was refused, in a fixed set so listeners can keep
/// one counter per reason.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum RejectReason {
    /// Not RFC 5425 octet-counting framing (for example newline framing).
    Framing,
    /// The frame (or the event made from it) is larger than allowed.
    Oversized,
    /// The message is not valid UTF-8.
    InvalidUtf8,
    /// The RFC 5424 header is malformed (PRI, VERSION, a field's length or
    /// characters).
    Header,
    /// The timestamp is malformed, or too far in the future or the past.
    Timestamp,
    /// The structured data is malformed, or a Kura parameter in it is
    /// invalid.
    StructuredData,
}

impl RejectReason {
    /// Every reason, in a fixed order (for counters and metrics).
    pub const ALL: [RejectReason; 6] = [
        RejectReason::Framing,
        RejectReason::Oversized,
        RejectReason::InvalidUtf8,
        RejectReason::Header,
        RejectReason::Timestamp,
        RejectReason::StructuredData,
    ];

    /// The stable lowercase name used in counters and logs.
    pub fn as_str(self) -> &'static str {
        match self {
            RejectReason::Framing => "framing",
            RejectReason::Oversized => "oversized",
            RejectReason::InvalidUtf8 => "invalid_utf8",
            RejectReason::Header => "header",
            RejectReason::Timestamp => "timestamp",
            RejectReason::StructuredData => "structured_data",
        }
    }

    /// The position of this reason in [`RejectReason::ALL`].
    pub fn index(self) -> usize {
        self as usize
    }
}

impl std::fmt::Display for RejectReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A refused frame or message, with what was wrong.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SyslogError {
    /// The byte stream is not octet-counted frames.
    #[error("not RFC 5425 octet-counting framing (`LEN SP MSG`; newline framing is refused): {0}")]
    Framing(String),
    /// A frame longer than the limit.
    #[error("frame of {len} bytes exceeds the limit of {max} bytes")]
    Oversized {
        /// The frame's announced length.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// Bytes that are not UTF-8.
    #[error("message is not valid UTF-8 (first bad byte at offset {0})")]
    InvalidUtf8(usize),
    /// A malformed header field.
    #[error("malformed RFC 5424 header: {0}")]
    Header(String),
    /// A malformed or out-of-window timestamp.
    #[error("unacceptable timestamp: {0}")]
    Timestamp(String),
    /// Malformed structured data or an invalid Kura parameter.
    #[error("malformed structured data: {0}")]
    StructuredData(String),
}

impl SyslogError {
    /// The counter this refusal belongs to.
    pub fn reason(&self) -> RejectReason {
        match self {
            SyslogError::Framing(_) => RejectReason::Framing,
            SyslogError::Oversized { .. } => RejectReason::Oversized,
            SyslogError::InvalidUtf8(_) => RejectReason::InvalidUtf8,
            SyslogError::Header(_) => RejectReason::Header,
            SyslogError::Timestamp(_) => RejectReason::Timestamp,
            SyslogError::StructuredData(_) => RejectReason::StructuredData,
        }
    }
}

#[cfg(test)]
mod tests;
