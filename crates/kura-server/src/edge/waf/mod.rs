//! The WAF: request inspection with numbered rules, each in block,
//! detect-only or off mode.
//!
//! Rules (ids are stable; events and the API use them):
//!
//! | id  | name                  | what it refuses |
//! |-----|-----------------------|-----------------|
//! | 100 | `limits.url`          | a request target over 8 KiB (414) |
//! | 101 | `limits.header_size`  | a header over 8 KiB, or 64 KiB of headers (431) |
//! | 102 | `limits.header_count` | more than 64 headers (431) |
//! | 103 | `limits.body`         | a body over its route family's limit (413) |
//! | 104 | `limits.multipart`    | a multipart body with more than 64 parts |
//! | 110 | `protocol.content_type` | an API body without a parseable media type |
//! | 111 | `protocol.charset`    | a charset other than UTF-8 |
//! | 120 | `protocol.smuggling`  | `Content-Length` with `Transfer-Encoding`, differing lengths, or a coding other than `chunked` |
//! | 130 | `encoding.nul`        | NUL bytes in the target or headers |
//! | 131 | `encoding.malformed`  | bad percent-encoding, `%u` escapes, non-UTF-8 (overlong) sequences |
//! | 132 | `encoding.double`     | double-encoded `.`, `/`, `\` or NUL |
//! | 140 | `traversal`           | `..` path segments or values climbing directories |
//! | 150 | `injection.sql`       | SQL injection signatures |
//! | 160 | `injection.script`    | script (XSS) injection signatures |
//!
//! Query strings, form fields (urlencoded and multipart: names, file names
//! and text values, not file contents), JSON string values (keys
//! included), and the `User-Agent` and `Referer` headers are decoded
//! before the signatures look at them. Rules 110 and above may be
//! relaxed per team and per host; the size and protocol rules (100–132)
//! are the platform's alone.

mod encoding;
mod json;
mod multipart;
pub mod signatures;

use std::collections::BTreeMap;

use http::{HeaderMap, Method, StatusCode, header};
use serde::{Deserialize, Serialize};

pub use signatures::Signatures;

/// A WAF rule.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum RuleId {
    /// 100.
    UrlTooLong,
    /// 101.
    HeaderTooLarge,
    /// 102.
    TooManyHeaders,
    /// 103.
    BodyTooLarge,
    /// 104.
    TooManyParts,
    /// 110.
    ContentType,
    /// 111.
    Charset,
    /// 120.
    Smuggling,
    /// 130.
    NulByte,
    /// 131.
    BadEncoding,
    /// 132.
    DoubleEncoding,
    /// 140.
    PathTraversal,
    /// 150.
    SqlInjection,
    /// 160.
    ScriptInjection,
}

impl RuleId {
    /// Every rule, in id order.
    pub const ALL: [RuleId; 14] = [
        Self::UrlTooLong,
        Self::HeaderTooLarge,
        Self::TooManyHeaders,
        Self::BodyTooLarge,
        Self::TooManyParts,
        Self::ContentType,
        Self::Charset,
        Self::Smuggling,
        Self::NulByte,
        Self::BadEncoding,
        Self::DoubleEncoding,
        Self::PathTraversal,
        Self::SqlInjection,
        Self::ScriptInjection,
    ];

    /// The rule's number.
    pub fn id(self) -> u16 {
        match self {
            Self::UrlTooLong => 100,
            Self::HeaderTooLarge => 101,
            Self::TooManyHeaders => 102,
            Self::BodyTooLarge => 103,
            Self::TooManyParts => 104,
            Self::ContentType => 110,
            Self::Charset => 111,
            Self::Smuggling => 120,
            Self::NulByte => 130,
            Self::BadEncoding => 131,
            Self::DoubleEncoding => 132,
            Self::PathTraversal => 140,
            Self::SqlInjection => 150,
            Self::ScriptInjection => 160,
        }
    }

    /// The rule's name.
    pub fn name(self) -> &'static str {
        match self {
            Self::UrlTooLong => "limits.url",
            Self::HeaderTooLarge => "limits.header_size",
            Self::TooManyHeaders => "limits.header_count",
            Self::BodyTooLarge => "limits.body",
            Self::TooManyParts => "limits.multipart",
            Self::ContentType => "protocol.content_type",
            Self::Charset => "protocol.charset",
            Self::Smuggling => "protocol.smuggling",
            Self::NulByte => "encoding.nul",
            Self::BadEncoding => "encoding.malformed",
            Self::DoubleEncoding => "encoding.double",
            Self::PathTraversal => "traversal",
            Self::SqlInjection => "injection.sql",
            Self::ScriptInjection => "injection.script",
        }
    }

    /// The rule with this number.
    pub fn from_id(id: u16) -> Option<Self> {
        Self::ALL.into_iter().find(|r| r.id() == id)
    }

    /// Whether teams and hosts may relax it (the content rules); the size,
    /// protocol and encoding rules protect the platform itself.
    pub fn tenant_tunable(self) -> bool {
        self.id() >= 110
            && !matches!(
                self,
                Self::Smuggling | Self::NulByte | Self::BadEncoding | Self::DoubleEncoding
            )
    }

    /// The status a blocked request gets.
    pub fn status(self) -> StatusCode {
        match self {
            Self::UrlTooLong => StatusCode::URI_TOO_LONG,
            Self::HeaderTooLarge | Self::TooManyHeaders => {
                StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE
            }
            Self::BodyTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            Self::ContentType | Self::Charset => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            _ => StatusCode::FORBIDDEN,
        }
    }

    fn index(self) -> usize {
        Self::ALL.iter().position(|r| *r == self).unwrap_or(0)
    }
}

/// What a rule does when it matches.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Mode {
    /// Refuse the request (and record it).
    Block,
    /// Let it through, but record the match.
    Detect,
    /// Do not run the rule.
    Off,
}

impl Mode {
    /// Its name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Block => "block",
            Self::Detect => "detect",
            Self::Off => "off",
        }
    }
}

/// The `waf` policy of one scope: modes by rule number. Rules not named
/// keep the mode of the next wider scope (platform: block).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WafPolicy {
    /// Rule number (as a string, JSON keys being strings) to mode.
    #[serde(default)]
    pub rules: BTreeMap<String, Mode>,
}

/// Why a WAF policy was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WafPolicyError {
    /// No such rule.
    #[error("`{0}` is not a WAF rule id (ids: 100-104, 110, 111, 120, 130-132, 140, 150, 160)")]
    UnknownRule(String),
    /// A tenant tried to relax a platform rule.
    #[error(
        "rule {0} protects the platform itself; only a network admin can change it, at platform scope"
    )]
    PlatformOnly(u16),
}

impl WafPolicy {
    /// Parses the rule numbers; `tenant` scopes may only name tunable rules.
    pub fn modes(&self, tenant: bool) -> Result<Vec<(RuleId, Mode)>, WafPolicyError> {
        let mut out = Vec::with_capacity(self.rules.len());
        for (key, mode) in &self.rules {
            let rule = key
                .trim()
                .parse::<u16>()
                .ok()
                .and_then(RuleId::from_id)
                .ok_or_else(|| WafPolicyError::UnknownRule(key.chars().take(32).collect()))?;
            if tenant && !rule.tenant_tunable() {
                return Err(WafPolicyError::PlatformOnly(rule.id()));
            }
            out.push((rule, *mode));
        }
        Ok(out)
    }
}

/// Modes of every rule for one request, after layering the scopes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Modes([Mode; 14]);

impl Default for Modes {
    fn default() -> Self {
        Self([Mode::Block; 14])
    }
}

impl Modes {
    /// The mode of `rule`.
    pub fn get(&self, rule: RuleId) -> Mode {
        self.0.get(rule.index()).copied().unwrap_or(Mode::Block)
    }

    /// Overrides with a narrower scope's modes.
    pub fn apply(&mut self, overrides: &[(RuleId, Mode)]) {
        for (rule, mode) in overrides {
            if let Some(slot) = self.0.get_mut(rule.index()) {
                *slot = *mode;
            }
        }
    }
}

/// Size limits.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Longest request target (path and query), bytes.
    pub url: usize,
    /// Longest header value, bytes.
    pub header: usize,
    /// Most header bytes in all.
    pub headers_total: usize,
    /// Most headers.
    pub header_count: usize,
    /// Most multipart parts.
    pub multipart_parts: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            url: 8 * 1024,
            header: 8 * 1024,
            headers_total: 64 * 1024,
            header_count: 64,
            multipart_parts: 64,
        }
    }
}

/// One rule that matched, and where.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Finding {
    /// The rule.
    pub rule: RuleId,
    /// `target`, `path`, `query`, `headers` or `body`.
    pub location: &'static str,
    /// What the rule's mode made of it.
    pub mode: Mode,
}

/// The request as the WAF sees it.
#[derive(Debug, Clone, Copy)]
pub struct RequestView<'a> {
    /// The method.
    pub method: &'a Method,
    /// The raw (still encoded) path.
    pub path: &'a str,
    /// The raw query, if any.
    pub query: Option<&'a str>,
    /// The headers.
    pub headers: &'a HeaderMap,
    /// Whether the path is an API (`/api/`, `/fmi/`, `/hooks/`), where
    /// bodies must declare their type.
    pub api: bool,
}

/// The inspection engine.
#[derive(Debug, Clone)]
pub struct Waf {
    signatures: Signatures,
    limits: Limits,
}

/// Collects findings; stops at the first blocking one.
struct Report {
    modes: Modes,
    findings: Vec<Finding>,
}

impl Report {
    fn on(&self, rule: RuleId) -> bool {
        self.modes.get(rule) != Mode::Off
    }

    /// Records a match; true when it blocks (inspection can stop).
    fn hit(&mut self, rule: RuleId, location: &'static str) -> bool {
        let mode = self.modes.get(rule);
        if mode == Mode::Off || self.findings.iter().any(|f| f.rule == rule) {
            return false;
        }
        self.findings.push(Finding {
            rule,
            location,
            mode,
        });
        mode == Mode::Block
    }
}

/// The outcome of one inspection.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Verdict {
    /// Every match (block and detect).
    pub findings: Vec<Finding>,
}

impl Verdict {
    /// The blocking match, if any.
    pub fn blocked(&self) -> Option<Finding> {
        self.findings
            .iter()
            .copied()
            .find(|f| f.mode == Mode::Block)
    }
}

impl Waf {
    /// An engine with `limits`.
    pub fn new(limits: Limits) -> Result<Self, regex::Error> {
        Ok(Self {
            signatures: Signatures::new()?,
            limits,
        })
    }

    /// Inspects the request line and headers (before the body is read).
    pub fn inspect_head(&self, view: RequestView<'_>, modes: Modes) -> Verdict {
        let mut r = Report {
            modes,
            findings: Vec::new(),
        };
        let _ = self.head(view, &mut r);
        Verdict {
            findings: r.findings,
        }
    }

    fn head(&self, view: RequestView<'_>, r: &mut Report) -> bool {
        let target_len = view.path.len() + view.query.map_or(0, |q| q.len() + 1);
        if target_len > self.limits.url && r.hit(RuleId::UrlTooLong, "target") {
            return true;
        }
        if self.headers(view, r) {
            return true;
        }
        let segments = match encoding::check_path(view.path) {
            Ok(segments) => segments,
            Err((rule, location)) => {
                if r.hit(rule, location) {
                    return true;
                }
                Vec::new()
            }
        };
        let pairs = match view.query.map(encoding::check_query) {
            Some(Ok(pairs)) => pairs,
            Some(Err((rule, location))) => {
                if r.hit(rule, location) {
                    return true;
                }
                Vec::new()
            }
            None => Vec::new(),
        };
        for s in segments.iter().filter(|s| !s.is_empty()) {
            if self.value(s, "path", r) {
                return true;
            }
        }
        for (k, v) in &pairs {
            if self.value(k, "query", r) || self.value(v, "query", r) {
                return true;
            }
        }
        false
    }

    fn headers(&self, view: RequestView<'_>, r: &mut Report) -> bool {
        let h = view.headers;
        if h.len() > self.limits.header_count && r.hit(RuleId::TooManyHeaders, "headers") {
            return true;
        }
        let mut total = 0;
        for (name, value) in h {
            total += name.as_str().len() + value.len();
            if value.len() > self.limits.header && r.hit(RuleId::HeaderTooLarge, "headers") {
                return true;
            }
            if value.as_bytes().contains(&0) && r.hit(RuleId::NulByte, "headers") {
                return true;
            }
        }
        if total > self.limits.headers_total && r.hit(RuleId::HeaderTooLarge, "headers") {
            return true;
        }
        // Headers that applications commonly log or echo (and so store or
        // show): the signatures look at them as at any other value. The
        // Referer is a URL, so its query is decoded first.
        if let Some(ua) = h.get(header::USER_AGENT).and_then(|v| v.to_str().ok())
            && self.value(ua, "headers", r)
        {
            return true;
        }
        if let Some(referer) = h.get(header::REFERER).and_then(|v| v.to_str().ok()) {
            let decoded = encoding::decode(referer, true).unwrap_or_else(|_| referer.to_owned());
            if self.value(&decoded, "headers", r) {
                return true;
            }
        }
        if r.on(RuleId::Smuggling) && smuggling(h) && r.hit(RuleId::Smuggling, "headers") {
            return true;
        }
        let has_body = h.contains_key(header::TRANSFER_ENCODING)
            || h.get(header::CONTENT_LENGTH)
                .and_then(|v| v.to_str().ok())
                .is_some_and(|v| v.trim() != "0");
        if has_body {
            let refused = match media_type(h) {
                MediaType::Missing if view.api && view.method != Method::GET => {
                    Some(RuleId::ContentType)
                }
                MediaType::Malformed => Some(RuleId::ContentType),
                MediaType::Parsed {
                    charset_ok: false, ..
                } => Some(RuleId::Charset),
                _ => None,
            };
            if let Some(rule) = refused
                && r.hit(rule, "headers")
            {
                return true;
            }
        }
        false
    }

    /// Runs the signatures over one decoded value.
    fn value(&self, v: &str, location: &'static str, r: &mut Report) -> bool {
        if r.on(RuleId::SqlInjection)
            && self.signatures.sql(v)
            && r.hit(RuleId::SqlInjection, location)
        {
            return true;
        }
        r.on(RuleId::ScriptInjection)
            && self.signatures.script(v)
            && r.hit(RuleId::ScriptInjection, location)
    }

    /// Inspects a buffered body of the declared media type.
    pub fn inspect_body(&self, headers: &HeaderMap, body: &[u8], modes: Modes) -> Verdict {
        let mut r = Report {
            modes,
            findings: Vec::new(),
        };
        let _ = self.body(headers, body, &mut r);
        Verdict {
            findings: r.findings,
        }
    }

    fn body(&self, headers: &HeaderMap, body: &[u8], r: &mut Report) -> bool {
        if body.is_empty() {
            return false;
        }
        let MediaType::Parsed {
            essence, boundary, ..
        } = media_type(headers)
        else {
            return false;
        };
        if essence == "application/json" || essence.ends_with("+json") {
            // Unparseable JSON is the handler's to refuse, with its own
            // message; what matched before the parse failed goes with it.
            // A blocking match ends the parse where it is.
            let before = r.findings.len();
            return match json::walk_strings(body, |s| self.value(s, "body", r)) {
                json::Walk::Stopped => true,
                json::Walk::Done => false,
                json::Walk::Malformed => {
                    r.findings.truncate(before);
                    false
                }
            };
        }
        if essence == "application/x-www-form-urlencoded" {
            let Ok(text) = std::str::from_utf8(body) else {
                return r.hit(RuleId::BadEncoding, "body");
            };
            return match encoding::check_query(text) {
                Ok(pairs) => pairs
                    .iter()
                    .any(|(k, v)| self.value(k, "body", r) || self.value(v, "body", r)),
                Err((rule, _)) => r.hit(rule, "body"),
            };
        }
        if essence == "multipart/form-data" {
            let Some(boundary) = boundary else {
                return r.hit(RuleId::ContentType, "headers");
            };
            return self.multipart(body, &boundary, r);
        }
        false
    }

    /// A multipart body: at most `multipart_parts` parts; the field names,
    /// file names and text fields' values go through the signatures (file
    /// names also through the traversal rule); file contents do not.
    fn multipart(&self, body: &[u8], boundary: &str, r: &mut Report) -> bool {
        let parts = multipart::parts(body, boundary);
        if parts.len() > self.limits.multipart_parts && r.hit(RuleId::TooManyParts, "body") {
            return true;
        }
        for part in &parts {
            if let Some(name) = &part.name
                && self.value(name, "body", r)
            {
                return true;
            }
            match &part.filename {
                Some(file) => {
                    if r.on(RuleId::PathTraversal)
                        && encoding::traverses(file)
                        && r.hit(RuleId::PathTraversal, "body")
                    {
                        return true;
                    }
                    if self.value(file, "body", r) {
                        return true;
                    }
                }
                None => {
                    // Text fields are UTF-8 like the rest of the API; a
                    // field that is not is binary data the signatures do
                    // not apply to.
                    if let Ok(text) = std::str::from_utf8(part.content)
                        && self.value(text, "body", r)
                    {
                        return true;
                    }
                }
            }
        }
        false
    }
}

/// `Content-Length` together with `Transfer-Encoding`, several differing
/// lengths, or a transfer coding other than a lone `chunked`.
fn smuggling(h: &HeaderMap) -> bool {
    let te: Vec<&[u8]> = h
        .get_all(header::TRANSFER_ENCODING)
        .iter()
        .map(|v| v.as_bytes())
        .collect();
    let cl: Vec<&[u8]> = h
        .get_all(header::CONTENT_LENGTH)
        .iter()
        .map(|v| v.as_bytes())
        .collect();
    if !te.is_empty() && !cl.is_empty() {
        return true;
    }
    if te.len() > 1
        || te
            .first()
            .is_some_and(|v| !v.trim_ascii().eq_ignore_ascii_case(b"chunked"))
    {
        return true;
    }
    cl.windows(2)
        .any(|w| w[0].trim_ascii() != w[1].trim_ascii())
        || cl
            .iter()
            .any(|v| v.contains(&b',') || !v.trim_ascii().iter().all(u8::is_ascii_digit))
}

enum MediaType {
    Missing,
    Malformed,
    Parsed {
        essence: String,
        charset_ok: bool,
        boundary: Option<String>,
    },
}

fn is_token(s: &str) -> bool {
    !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$&-^_.+".contains(&b))
}

fn media_type(h: &HeaderMap) -> MediaType {
    let Some(value) = h.get(header::CONTENT_TYPE) else {
        return MediaType::Missing;
    };
    let Ok(value) = value.to_str() else {
        return MediaType::Malformed;
    };
    let mut parts = value.split(';');
    let essence = parts.next().unwrap_or("").trim().to_ascii_lowercase();
    let Some((kind, sub)) = essence.split_once('/') else {
        return MediaType::Malformed;
    };
    if !is_token(kind) || !is_token(sub) {
        return MediaType::Malformed;
    }
    let mut charset_ok = true;
    let mut boundary = None;
    for param in parts {
        let Some((k, v)) = param.split_once('=') else {
            if param.trim().is_empty() {
                continue;
            }
            return MediaType::Malformed;
        };
        let v = v.trim().trim_matches('"');
        match k.trim().to_ascii_lowercase().as_str() {
            "charset" => {
                charset_ok = v.eq_ignore_ascii_case("utf-8")
                    || v.eq_ignore_ascii_case("utf8")
                    || v.eq_ignore_ascii_case("us-ascii");
            }
            "boundary" => boundary = Some(v.to_owned()),
            _ => {}
        }
    }
    MediaType::Parsed {
        essence,
        charset_ok,
        boundary,
    }
}

#[cfg(test)]
mod tests;
