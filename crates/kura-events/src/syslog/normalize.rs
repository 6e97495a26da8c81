//! From an RFC 5424 message to a [`SecurityEvent`].

use std::net::{IpAddr, SocketAddr};

use kura_types::{Action, Actor, Outcome, SecurityEvent};
use serde_json::{Map, Value};
use time::format_description::well_known::Rfc3339;
use time::{Duration, OffsetDateTime};

use super::parse::{SyslogMessage, parse, truncate};
use super::{SyslogError, frame::MAX_SKIPPABLE_FRAME};

/// The SD-ID of Kura's own structured-data element, in exports and in what
/// senders may use to describe an event precisely. 32473 is the private
/// enterprise number IANA reserves for documentation (RFC 5612); it stays
/// until Kura has a number of its own, and changing it is a breaking change
/// for senders and SIEM parsers.
pub const KURA_SD_ID: &str = "kura@32473";

/// The action of a message that names none.
pub const DEFAULT_ACTION: &str = "ingest.syslog.message";

/// What an ingest listener accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IngestPolicy {
    /// The largest frame accepted, in octets (default 64 KiB). At most
    /// [`MAX_SKIPPABLE_FRAME`] is meaningful.
    pub max_frame_bytes: usize,
    /// How far ahead of the receiver's clock a timestamp may be (default 10
    /// minutes): more is a wrong clock or a forgery.
    pub max_future: Duration,
    /// How old a timestamp may be (default 24 hours): older messages are
    /// replays or a queue that should be looked at, not silently backdated
    /// entries.
    pub max_age: Duration,
}

impl Default for IngestPolicy {
    fn default() -> Self {
        Self {
            max_frame_bytes: 64 * 1024,
            max_future: Duration::minutes(10),
            max_age: Duration::hours(24),
        }
    }
}

impl IngestPolicy {
    /// The frame limit, clamped to what the frame decoder can skip.
    pub fn frame_limit(&self) -> usize {
        self.max_frame_bytes.clamp(1, MAX_SKIPPABLE_FRAME)
    }
}

/// Where and when a message arrived, recorded in the event's details.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Provenance {
    /// The receiver's clock when the frame was read.
    pub received_at: OffsetDateTime,
    /// The sending peer (the relay, not necessarily the event's origin).
    pub peer: Option<SocketAddr>,
    /// SHA-256 (hex) of the peer's TLS client certificate.
    pub peer_certificate_sha256: Option<String>,
}

impl Provenance {
    /// A message received now from nobody in particular (tests, tools).
    pub fn at(received_at: OffsetDateTime) -> Self {
        Self {
            received_at,
            peer: None,
            peer_certificate_sha256: None,
        }
    }
}

/// Parses and normalises one frame's message: [`parse`] then [`normalize`].
pub fn ingest(
    message: &[u8],
    policy: &IngestPolicy,
    provenance: &Provenance,
) -> Result<SecurityEvent, SyslogError> {
    if message.len() > policy.frame_limit() {
        return Err(SyslogError::Oversized {
            len: message.len(),
            max: policy.frame_limit(),
        });
    }
    normalize(parse(message)?, policy, provenance)
}

/// Turns a parsed message into a security event.
///
/// The mapping:
/// - **time**: the message's TIMESTAMP, which must lie within
///   [`IngestPolicy::max_age`] before and [`IngestPolicy::max_future`] after
///   `provenance.received_at`; a NILVALUE timestamp takes the receive time.
/// - **actor**: `System { component: "<HOSTNAME>/<APP-NAME>" }`, `-` for a
///   NILVALUE, so the actor key reads `system:fw1.example/pf`.
/// - **action**: the `action` parameter of the `[kura@32473 …]` element if
///   present (it must be a valid action name, or the message is refused);
///   else MSGID if it is a valid action name (`edge.waf.blocked`); else
///   [`DEFAULT_ACTION`].
/// - **outcome**: the element's `outcome` parameter (`success`, `failure`,
///   `denied`; anything else is refused), else `success` — the sender
///   reports that the thing it describes happened.
/// - **source**: the element's `src` parameter (an IP address, or refused).
/// - **target**: the element's `target` parameter.
/// - **team**: never set. A syslog sender is platform-level; it cannot write
///   into a team's log, and `team` or `actor` parameters are kept only as
///   details.
/// - **details**: `ingest: "syslog"`, `facility` and `severity` (names such
///   as `auth` and `warning`), `hostname`, `app_name`, `procid`, `msgid`,
///   `message` (MSG without BOM or trailing newline), `structured_data` (an
///   object per SD-ID; a parameter named more than once becomes an array),
///   `received_at`, `peer` and `peer_certificate_sha256`. Absent fields are
///   omitted. The event sink sanitises these like every other detail.
pub fn normalize(
    msg: SyslogMessage,
    policy: &IngestPolicy,
    provenance: &Provenance,
) -> Result<SecurityEvent, SyslogError> {
    let now = provenance.received_at;
    let time = match msg.timestamp {
        Some(t) => {
            if t > now + policy.max_future {
                return Err(SyslogError::Timestamp(format!(
                    "{} is {} s ahead of the receiver's clock (at most {} s allowed)",
                    rfc3339(t),
                    (t - now).whole_seconds(),
                    policy.max_future.whole_seconds()
                )));
            }
            if t < now - policy.max_age {
                return Err(SyslogError::Timestamp(format!(
                    "{} is {} s old (at most {} s allowed)",
                    rfc3339(t),
                    (now - t).whole_seconds(),
                    policy.max_age.whole_seconds()
                )));
            }
            t
        }
        None => now,
    };

    let kura = msg.element(KURA_SD_ID);
    let kura_param = |name: &str| kura.and_then(|e| e.param(name));
    let action = match kura_param("action") {
        Some(a) => Action::parse(a).map_err(|e| SyslogError::StructuredData(e.to_string()))?,
        None => msg
            .msgid
            .as_deref()
            .and_then(|m| Action::parse(m).ok())
            .map_or_else(|| Action::parse(DEFAULT_ACTION), Ok)
            .map_err(|e| SyslogError::StructuredData(e.to_string()))?,
    };
    let outcome = match kura_param("outcome") {
        Some(o) => o
            .parse::<Outcome>()
            .map_err(|e| SyslogError::StructuredData(format!("{KURA_SD_ID}: {e}")))?,
        None => Outcome::Success,
    };
    let source = match kura_param("src") {
        Some(s) => Some(s.parse::<IpAddr>().map_err(|_| {
            SyslogError::StructuredData(format!(
                "{KURA_SD_ID}: src `{}` is not an IP address",
                truncate(s, 64)
            ))
        })?),
        None => None,
    };
    let target = kura_param("target").map(str::to_owned);

    let nil = |v: &Option<String>| v.clone().unwrap_or_else(|| "-".to_owned());
    let actor = Actor::System {
        component: format!("{}/{}", nil(&msg.hostname), nil(&msg.app_name)),
    };
    let mut event = SecurityEvent::new(time, actor, action, outcome);
    event.source = source;
    event.target = target;
    event.details = details(&msg, provenance);
    Ok(event)
}

fn details(msg: &SyslogMessage, provenance: &Provenance) -> Map<String, Value> {
    let mut d = Map::new();
    d.insert("ingest".into(), "syslog".into());
    d.insert("facility".into(), facility_name(msg.facility).into());
    d.insert("severity".into(), severity_name(msg.severity).into());
    let fields = [
        ("hostname", &msg.hostname),
        ("app_name", &msg.app_name),
        ("procid", &msg.procid),
        ("msgid", &msg.msgid),
    ];
    for (key, value) in fields {
        if let Some(v) = value {
            d.insert(key.into(), v.clone().into());
        }
    }
    if let Some(text) = &msg.msg {
        // Relays commonly append the newline of their line-based templates.
        let text = text.strip_suffix('\n').unwrap_or(text);
        let text = text.strip_suffix('\r').unwrap_or(text);
        if !text.is_empty() {
            d.insert("message".into(), text.into());
        }
    }
    if !msg.structured_data.is_empty() {
        let mut sd = Map::new();
        for element in &msg.structured_data {
            let mut params = Map::new();
            for (name, value) in &element.params {
                match params.get_mut(name) {
                    None => {
                        params.insert(name.clone(), Value::String(value.clone()));
                    }
                    Some(Value::Array(values)) => values.push(Value::String(value.clone())),
                    Some(first) => {
                        let prior = first.take();
                        *first = Value::Array(vec![prior, Value::String(value.clone())]);
                    }
                }
            }
            sd.insert(element.id.clone(), Value::Object(params));
        }
        d.insert("structured_data".into(), Value::Object(sd));
    }
    d.insert("received_at".into(), rfc3339(provenance.received_at).into());
    if let Some(peer) = provenance.peer {
        d.insert("peer".into(), peer.to_string().into());
    }
    if let Some(fp) = &provenance.peer_certificate_sha256 {
        d.insert("peer_certificate_sha256".into(), fp.clone().into());
    }
    d
}

fn rfc3339(t: OffsetDateTime) -> String {
    t.format(&Rfc3339).unwrap_or_else(|_| t.to_string())
}

/// The RFC 5424 name of a facility code (`kern`, `user`, … `local7`).
pub fn facility_name(code: u8) -> &'static str {
    const NAMES: [&str; 24] = [
        "kern",
        "user",
        "mail",
        "daemon",
        "auth",
        "syslog",
        "lpr",
        "news",
        "uucp",
        "cron",
        "authpriv",
        "ftp",
        "ntp",
        "security",
        "console",
        "solaris-cron",
        "local0",
        "local1",
        "local2",
        "local3",
        "local4",
        "local5",
        "local6",
        "local7",
    ];
    NAMES.get(usize::from(code)).copied().unwrap_or("unknown")
}

/// The RFC 5424 name of a severity code (`emergency` … `debug`).
pub fn severity_name(code: u8) -> &'static str {
    const NAMES: [&str; 8] = [
        "emergency",
        "alert",
        "critical",
        "error",
        "warning",
        "notice",
        "informational",
        "debug",
    ];
    NAMES.get(usize::from(code)).copied().unwrap_or("unknown")
}

/// The code of a severity name, the inverse of [`severity_name`].
pub(super) fn severity_code(name: &str) -> Option<u8> {
    (0..8u8).find(|&c| severity_name(c) == name)
}
