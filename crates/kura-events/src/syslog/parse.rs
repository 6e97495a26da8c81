//! The RFC 5424 message grammar (section 6), strictly: a message that does
//! not follow it is refused with the field that is wrong, never guessed at.

use time::{Date, Month, OffsetDateTime, Time, UtcOffset};

use super::SyslogError;

/// One parsed RFC 5424 message. `None` stands for the NILVALUE `-`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SyslogMessage {
    /// The facility, 0 to 23.
    pub facility: u8,
    /// The severity, 0 (emergency) to 7 (debug).
    pub severity: u8,
    /// When the sender says the event happened.
    pub timestamp: Option<OffsetDateTime>,
    /// HOSTNAME (1 to 255 printable US-ASCII characters).
    pub hostname: Option<String>,
    /// APP-NAME (at most 48).
    pub app_name: Option<String>,
    /// PROCID (at most 128).
    pub procid: Option<String>,
    /// MSGID (at most 32).
    pub msgid: Option<String>,
    /// The STRUCTURED-DATA elements in the order sent (SD-IDs are unique).
    pub structured_data: Vec<SdElement>,
    /// MSG, without its byte-order mark, if there was one.
    pub msg: Option<String>,
}

/// One SD-ELEMENT: an SD-ID and its parameters in the order sent, unescaped.
/// A parameter name may repeat (RFC 5424, section 6.3.3).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SdElement {
    /// The SD-ID, such as `origin` or `kura@32473`.
    pub id: String,
    /// `(PARAM-NAME, PARAM-VALUE)` pairs.
    pub params: Vec<(String, String)>,
}

impl SyslogMessage {
    /// The element with this SD-ID.
    pub fn element(&self, id: &str) -> Option<&SdElement> {
        self.structured_data.iter().find(|e| e.id == id)
    }
}

impl SdElement {
    /// The first value of parameter `name`.
    pub fn param(&self, name: &str) -> Option<&str> {
        self.params
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
}

const NIL: &str = "-";
const BOM: &str = "\u{feff}";

/// Parses one RFC 5424 message (the bytes of one frame, without the length
/// prefix). The whole message must be valid UTF-8; only version 1 exists.
pub fn parse(bytes: &[u8]) -> Result<SyslogMessage, SyslogError> {
    let text = std::str::from_utf8(bytes).map_err(|e| SyslogError::InvalidUtf8(e.valid_up_to()))?;
    let mut c = Cursor { s: text, pos: 0 };
    let (facility, severity) = c.pri()?;
    c.version()?;
    c.sp("VERSION")?;
    let timestamp = c.field("TIMESTAMP", usize::MAX)?;
    let timestamp = match timestamp {
        None => None,
        Some(t) => Some(parse_timestamp(t)?),
    };
    c.sp("TIMESTAMP")?;
    let hostname = c.field("HOSTNAME", 255)?.map(str::to_owned);
    c.sp("HOSTNAME")?;
    let app_name = c.field("APP-NAME", 48)?.map(str::to_owned);
    c.sp("APP-NAME")?;
    let procid = c.field("PROCID", 128)?.map(str::to_owned);
    c.sp("PROCID")?;
    let msgid = c.field("MSGID", 32)?.map(str::to_owned);
    c.sp("MSGID")?;
    let structured_data = c.structured_data()?;
    let msg = if c.at_end() {
        None
    } else {
        if !c.eat(b' ') {
            return Err(SyslogError::StructuredData(
                "STRUCTURED-DATA must be followed by a space or the end of the message".into(),
            ));
        }
        let rest = &c.s[c.pos..];
        Some(rest.strip_prefix(BOM).unwrap_or(rest).to_owned())
    };
    Ok(SyslogMessage {
        facility,
        severity,
        timestamp,
        hostname,
        app_name,
        procid,
        msgid,
        structured_data,
        msg,
    })
}

struct Cursor<'a> {
    s: &'a str,
    pos: usize,
}

impl<'a> Cursor<'a> {
    fn peek(&self) -> Option<u8> {
        self.s.as_bytes().get(self.pos).copied()
    }

    fn at_end(&self) -> bool {
        self.pos >= self.s.len()
    }

    fn eat(&mut self, b: u8) -> bool {
        if self.peek() == Some(b) {
            self.pos += 1;
            true
        } else {
            false
        }
    }

    fn digits(&mut self, max: usize) -> &'a str {
        let start = self.pos;
        while self.pos - start < max && self.peek().is_some_and(|b| b.is_ascii_digit()) {
            self.pos += 1;
        }
        &self.s[start..self.pos]
    }

    fn sp(&mut self, after: &str) -> Result<(), SyslogError> {
        if self.eat(b' ') {
            Ok(())
        } else {
            Err(SyslogError::Header(format!(
                "expected one space after {after}"
            )))
        }
    }

    fn pri(&mut self) -> Result<(u8, u8), SyslogError> {
        if !self.eat(b'<') {
            return Err(SyslogError::Header(
                "a message must start with `<PRI>`".into(),
            ));
        }
        let digits = self.digits(3);
        let ok = !digits.is_empty() && (digits.len() == 1 || !digits.starts_with('0'));
        let value: u16 = digits.parse().unwrap_or(u16::MAX);
        if !ok || value > 191 || !self.eat(b'>') {
            return Err(SyslogError::Header(
                "PRI must be `<0>` to `<191>` without leading zeros".into(),
            ));
        }
        let value = u8::try_from(value).unwrap_or(u8::MAX);
        Ok((value / 8, value % 8))
    }

    fn version(&mut self) -> Result<(), SyslogError> {
        let digits = self.digits(3);
        match digits {
            "1" => Ok(()),
            "" => Err(SyslogError::Header(
                "VERSION is missing after PRI (an RFC 3164 message? only RFC 5424 is accepted)"
                    .into(),
            )),
            other => Err(SyslogError::Header(format!(
                "VERSION {other} is not supported (only 1)"
            ))),
        }
    }

    /// A header field: NILVALUE or 1 to `max` printable US-ASCII characters.
    fn field(&mut self, name: &str, max: usize) -> Result<Option<&'a str>, SyslogError> {
        let start = self.pos;
        while self.peek().is_some_and(|b| b != b' ') {
            self.pos += 1;
        }
        let value = &self.s[start..self.pos];
        if value.is_empty() {
            return Err(SyslogError::Header(format!("{name} is empty")));
        }
        if value == NIL {
            return Ok(None);
        }
        if let Some(bad) = value.bytes().find(|b| !(33..=126).contains(b)) {
            return Err(SyslogError::Header(format!(
                "{name} holds a character outside printable US-ASCII (byte {bad:#04x})"
            )));
        }
        if value.len() > max {
            return Err(SyslogError::Header(format!(
                "{name} is {} characters long; at most {max} are allowed",
                value.len()
            )));
        }
        Ok(Some(value))
    }

    fn structured_data(&mut self) -> Result<Vec<SdElement>, SyslogError> {
        if self.eat(b'-') {
            return Ok(Vec::new());
        }
        if self.peek() != Some(b'[') {
            return Err(SyslogError::StructuredData(
                "expected `-` or `[` where STRUCTURED-DATA begins".into(),
            ));
        }
        let mut elements: Vec<SdElement> = Vec::new();
        while self.eat(b'[') {
            let id = self.sd_name("SD-ID")?;
            check_sd_id(id)?;
            if elements.iter().any(|e| e.id == id) {
                return Err(SyslogError::StructuredData(format!(
                    "SD-ID `{id}` appears twice"
                )));
            }
            let mut params = Vec::new();
            loop {
                if self.eat(b']') {
                    break;
                }
                if !self.eat(b' ') {
                    return Err(SyslogError::StructuredData(format!(
                        "element `{id}`: expected a space or `]`"
                    )));
                }
                let name = self.sd_name("PARAM-NAME")?;
                if !self.eat(b'=') || !self.eat(b'"') {
                    return Err(SyslogError::StructuredData(format!(
                        "element `{id}`: parameter `{name}` must be followed by `=\"`"
                    )));
                }
                let value = self.param_value(id, name)?;
                params.push((name.to_owned(), value));
            }
            elements.push(SdElement {
                id: id.to_owned(),
                params,
            });
        }
        Ok(elements)
    }

    /// SD-NAME: 1 to 32 printable US-ASCII characters except `=`, space,
    /// `]` and `"`.
    fn sd_name(&mut self, what: &str) -> Result<&'a str, SyslogError> {
        let start = self.pos;
        while self
            .peek()
            .is_some_and(|b| (33..=126).contains(&b) && !matches!(b, b'=' | b']' | b'"'))
        {
            self.pos += 1;
        }
        let name = &self.s[start..self.pos];
        if name.is_empty() || name.len() > 32 {
            return Err(SyslogError::StructuredData(format!(
                "{what} must be 1 to 32 printable characters other than `=`, `]`, `\"` and space"
            )));
        }
        Ok(name)
    }

    /// PARAM-VALUE after its opening quote, up to and including the closing
    /// one. `\"`, `\\` and `\]` are escapes; a backslash before anything else
    /// is an ordinary character (RFC 5424, section 6.3.3).
    fn param_value(&mut self, id: &str, name: &str) -> Result<String, SyslogError> {
        let mut value = String::new();
        let rest = &self.s[self.pos..];
        let mut chars = rest.char_indices().peekable();
        while let Some((i, ch)) = chars.next() {
            match ch {
                '"' => {
                    self.pos += i + 1;
                    return Ok(value);
                }
                '\\' => match chars.peek() {
                    Some(&(_, next @ ('"' | '\\' | ']'))) => {
                        value.push(next);
                        chars.next();
                    }
                    _ => value.push('\\'),
                },
                other => value.push(other),
            }
        }
        Err(SyslogError::StructuredData(format!(
            "element `{id}`: the value of `{name}` has no closing quote"
        )))
    }
}

/// An SD-ID is either an IANA name (no `@`) or `name@<enterprise number>`.
fn check_sd_id(id: &str) -> Result<(), SyslogError> {
    if let Some((name, pen)) = id.split_once('@') {
        let pen_ok = !pen.is_empty()
            && pen
                .split('.')
                .all(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()));
        if name.is_empty() || !pen_ok {
            return Err(SyslogError::StructuredData(format!(
                "SD-ID `{id}` must be `name@<private enterprise number>`"
            )));
        }
    }
    Ok(())
}

/// Parses an RFC 5424 TIMESTAMP: `YYYY-MM-DDTHH:MM:SS[.1-6 digits]` then `Z`
/// or `+HH:MM`/`-HH:MM`. Upper-case `T` and `Z` only; no leap seconds.
pub(super) fn parse_timestamp(s: &str) -> Result<OffsetDateTime, SyslogError> {
    let bad = |why: &str| SyslogError::Timestamp(format!("`{}`: {why}", truncate(s, 40)));
    let b = s.as_bytes();
    let num = |range: std::ops::Range<usize>| -> Option<u32> {
        let part = b.get(range)?;
        if part.iter().all(u8::is_ascii_digit) {
            std::str::from_utf8(part).ok()?.parse().ok()
        } else {
            None
        }
    };
    let shape = b.len() >= 19
        && b[4] == b'-'
        && b[7] == b'-'
        && b[10] == b'T'
        && b[13] == b':'
        && b[16] == b':';
    let (Some(year), Some(month), Some(day), Some(hour), Some(minute), Some(second)) = (
        num(0..4),
        num(5..7),
        num(8..10),
        num(11..13),
        num(14..16),
        num(17..19),
    ) else {
        return Err(bad("expected YYYY-MM-DDTHH:MM:SS"));
    };
    if !shape {
        return Err(bad("expected YYYY-MM-DDTHH:MM:SS"));
    }
    let mut pos = 19;
    let mut nanos = 0u32;
    if b.get(pos) == Some(&b'.') {
        let start = pos + 1;
        let mut end = start;
        while b.get(end).is_some_and(u8::is_ascii_digit) {
            end += 1;
        }
        let len = end - start;
        if len == 0 || len > 6 {
            return Err(bad("fractional seconds must have 1 to 6 digits"));
        }
        let frac = num(start..end).ok_or_else(|| bad("bad fractional seconds"))?;
        nanos = frac * 10u32.pow(9 - u32::try_from(len).unwrap_or(9));
        pos = end;
    }
    let offset = match b.get(pos..) {
        Some(b"Z") => UtcOffset::UTC,
        Some([sign @ (b'+' | b'-'), h1, h2, b':', m1, m2]) => {
            let digits = [*h1, *h2, *m1, *m2];
            if !digits.iter().all(u8::is_ascii_digit) {
                return Err(bad("bad time offset"));
            }
            let h = i8::try_from((h1 - b'0') * 10 + (h2 - b'0')).unwrap_or(i8::MAX);
            let m = i8::try_from((m1 - b'0') * 10 + (m2 - b'0')).unwrap_or(i8::MAX);
            if h > 23 || m > 59 {
                return Err(bad("bad time offset"));
            }
            let (h, m) = if *sign == b'-' { (-h, -m) } else { (h, m) };
            UtcOffset::from_hms(h, m, 0).map_err(|_| bad("bad time offset"))?
        }
        _ => return Err(bad("expected `Z` or `+HH:MM`/`-HH:MM` after the time")),
    };
    let month = u8::try_from(month)
        .ok()
        .and_then(|m| Month::try_from(m).ok())
        .ok_or_else(|| bad("no such month"))?;
    let date = Date::from_calendar_date(
        i32::try_from(year).unwrap_or(i32::MAX),
        month,
        u8::try_from(day).unwrap_or(u8::MAX),
    )
    .map_err(|_| bad("no such date"))?;
    let time = Time::from_hms_nano(
        u8::try_from(hour).unwrap_or(u8::MAX),
        u8::try_from(minute).unwrap_or(u8::MAX),
        u8::try_from(second).unwrap_or(u8::MAX),
        nanos,
    )
    .map_err(|_| bad("no such time of day"))?;
    Ok(date.with_time(time).assume_offset(offset))
}

pub(super) fn truncate(s: &str, max_chars: usize) -> String {
    let mut out: String = s.chars().take(max_chars).collect();
    if out.len() < s.len() {
        out.push('…');
    }
    out
}
