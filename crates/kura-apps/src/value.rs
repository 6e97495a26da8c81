//! Field values on the wire and in storage.
//!
//! Storage keeps dates as `YYYY-MM-DD`, times as `HH:MM:SS` and timestamps
//! as `YYYY-MM-DD HH:MM:SS`, so text order is time order and indexes serve
//! range finds and sorts. On the wire FileMaker's formats apply: US
//! (`MM/DD/YYYY`) by default, ISO 8601 with `dateformats=2`.

use kura_store::app_data::Cell;
use serde_json::Value;
use time::{Date, Month, PrimitiveDateTime, Time};

use crate::error::FmError;
use crate::schema::FieldType;

/// How dates are written on the wire (`dateformats`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum DateFormat {
    /// `MM/DD/YYYY` (FileMaker's default, 0).
    #[default]
    Us,
    /// The file's locale (1); Kura's files use US conventions.
    Locale,
    /// ISO 8601 (2).
    Iso,
}

impl DateFormat {
    /// Parses the `dateformats` parameter (0/1/2, or fmdapi's names).
    pub fn parse(raw: &Value) -> Result<Self, FmError> {
        let text = match raw {
            Value::Number(n) => n.to_string(),
            Value::String(s) => s.clone(),
            Value::Null => return Ok(Self::Us),
            _ => return Err(FmError::with(960, "dateformats must be 0, 1 or 2")),
        };
        match text.trim() {
            "0" | "US" | "us" => Ok(Self::Us),
            "1" | "file_locale" => Ok(Self::Locale),
            "2" | "ISO8601" | "iso8601" => Ok(Self::Iso),
            _ => Err(FmError::with(960, "dateformats must be 0, 1 or 2")),
        }
    }
}

/// Text that is not a value of the field's type.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("not a valid value for the field's type")]
pub struct BadValue;

fn invalid(kind: FieldType, field: &str) -> FmError {
    let code = match kind {
        FieldType::Date | FieldType::Timestamp => 500,
        FieldType::Time => 501,
        FieldType::Number => 502,
        FieldType::Text | FieldType::Container => 509,
    };
    FmError::with(
        code,
        format!("{} (field `{field}`)", crate::error::standard_message(code)),
    )
}

/// Parses a JSON value for a field of `kind`.
pub fn parse_json(
    kind: FieldType,
    field: &str,
    value: &Value,
    format: DateFormat,
) -> Result<Cell, FmError> {
    match value {
        Value::Null => Ok(Cell::Null),
        Value::String(s) => parse_text(kind, s, format).map_err(|BadValue| invalid(kind, field)),
        Value::Number(n) => match kind {
            FieldType::Number => n
                .as_f64()
                .filter(|f| f.is_finite())
                .map(Cell::Real)
                .ok_or_else(|| invalid(kind, field)),
            FieldType::Text => Ok(Cell::Text(n.to_string())),
            _ => Err(invalid(kind, field)),
        },
        Value::Bool(_) | Value::Array(_) | Value::Object(_) => Err(invalid(kind, field)),
    }
}

/// Parses text for a field of `kind`; the empty string is "no value".
pub fn parse_text(kind: FieldType, text: &str, format: DateFormat) -> Result<Cell, BadValue> {
    if text.is_empty() {
        return Ok(Cell::Null);
    }
    let t = text.trim();
    match kind {
        FieldType::Text => Ok(Cell::Text(text.to_owned())),
        FieldType::Container => Err(BadValue),
        FieldType::Number => {
            let n: f64 = t.parse().map_err(|_| BadValue)?;
            if n.is_finite() {
                Ok(Cell::Real(n))
            } else {
                Err(BadValue)
            }
        }
        FieldType::Date => parse_date(t, format).map(|d| Cell::Text(iso_date(d))),
        FieldType::Time => parse_time(t).map(|tm| Cell::Text(iso_time(tm))),
        FieldType::Timestamp => parse_timestamp(t, format)
            .map(|ts| Cell::Text(format!("{} {}", iso_date(ts.date()), iso_time(ts.time())))),
    }
}

/// A date in the wire format, or ISO 8601 in any case.
pub fn parse_date(t: &str, format: DateFormat) -> Result<Date, BadValue> {
    if let Some((y, rest)) = t.split_once('-') {
        let (m, d) = rest.split_once('-').ok_or(BadValue)?;
        return make_date(y, m, d);
    }
    let mut parts = t.split('/');
    let (a, b, c) = (
        parts.next().ok_or(BadValue)?,
        parts.next().ok_or(BadValue)?,
        parts.next().ok_or(BadValue)?,
    );
    if parts.next().is_some() {
        return Err(BadValue);
    }
    match format {
        DateFormat::Us | DateFormat::Locale | DateFormat::Iso => make_date(c, a, b),
    }
}

fn make_date(y: &str, m: &str, d: &str) -> Result<Date, BadValue> {
    let digits = |s: &str| !s.is_empty() && s.len() <= 4 && s.bytes().all(|b| b.is_ascii_digit());
    if !(digits(y) && y.len() == 4 && digits(m) && m.len() <= 2 && digits(d) && d.len() <= 2) {
        return Err(BadValue);
    }
    let month: u8 = m.parse().map_err(|_| BadValue)?;
    Date::from_calendar_date(
        y.parse().map_err(|_| BadValue)?,
        Month::try_from(month).map_err(|_| BadValue)?,
        d.parse().map_err(|_| BadValue)?,
    )
    .map_err(|_| BadValue)
}

/// A time `HH:MM[:SS]`.
pub fn parse_time(t: &str) -> Result<Time, BadValue> {
    let mut parts = t.split(':');
    let h: u8 = num(parts.next())?;
    let m: u8 = num(parts.next())?;
    let s: u8 = match parts.next() {
        Some(s) => num(Some(s.split('.').next().unwrap_or(s)))?,
        None => 0,
    };
    if parts.next().is_some() {
        return Err(BadValue);
    }
    Time::from_hms(h, m, s).map_err(|_| BadValue)
}

fn num(part: Option<&str>) -> Result<u8, BadValue> {
    let p = part.ok_or(BadValue)?;
    if p.is_empty() || p.len() > 2 || !p.bytes().all(|b| b.is_ascii_digit()) {
        return Err(BadValue);
    }
    p.parse().map_err(|_| BadValue)
}

/// A timestamp: date and time separated by a space or `T`.
pub fn parse_timestamp(t: &str, format: DateFormat) -> Result<PrimitiveDateTime, BadValue> {
    let (d, tm) = t.split_once([' ', 'T']).ok_or(BadValue)?;
    Ok(PrimitiveDateTime::new(
        parse_date(d, format)?,
        parse_time(tm.trim().trim_end_matches('Z'))?,
    ))
}

fn iso_date(d: Date) -> String {
    format!("{:04}-{:02}-{:02}", d.year(), u8::from(d.month()), d.day())
}

fn iso_time(t: Time) -> String {
    format!("{:02}:{:02}:{:02}", t.hour(), t.minute(), t.second())
}

/// Renders a stored value for the wire.
pub fn to_json(kind: FieldType, cell: &Cell, format: DateFormat) -> Value {
    Value::from(to_wire(kind, cell.clone(), format))
}

/// A field value as the Data API writes it: text (dates and times in the
/// wire format, empty for no value) or a number.
#[derive(Debug, Clone, PartialEq)]
pub enum Wire {
    /// Text, written as a JSON string.
    Text(String),
    /// A whole number.
    Int(i64),
    /// A finite number with a fraction (or beyond whole-number precision).
    Real(f64),
    /// A number JSON cannot carry (infinite or NaN), written as `null`.
    Null,
}

impl serde::Serialize for Wire {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            Self::Text(t) => s.serialize_str(t),
            Self::Int(i) => s.serialize_i64(*i),
            Self::Real(r) => s.serialize_f64(*r),
            Self::Null => s.serialize_unit(),
        }
    }
}

impl From<Wire> for Value {
    fn from(w: Wire) -> Self {
        match w {
            Wire::Text(t) => Value::String(t),
            Wire::Int(i) => Value::from(i),
            Wire::Real(r) => serde_json::Number::from_f64(r).map_or(Value::Null, Value::Number),
            Wire::Null => Value::Null,
        }
    }
}

/// A stored cell of a field of `kind` as the Data API writes it, taking
/// the cell's text rather than copying it.
pub fn to_wire(kind: FieldType, cell: Cell, format: DateFormat) -> Wire {
    match cell {
        Cell::Null => Wire::Text(String::new()),
        Cell::Int(i) => Wire::Int(i),
        Cell::Real(r) => number(r),
        Cell::Text(t) => match kind {
            FieldType::Number => match t.parse::<f64>() {
                Ok(r) => number(r),
                Err(_) => Wire::Text(t),
            },
            FieldType::Date => Wire::Text(wire_date(&t, format)),
            FieldType::Timestamp => match t.split_once(' ') {
                Some((d, tm)) if format != DateFormat::Iso => {
                    Wire::Text(format!("{} {tm}", wire_date(d, format)))
                }
                _ => Wire::Text(t),
            },
            _ => Wire::Text(t),
        },
    }
}

fn number(r: f64) -> Wire {
    if r.fract() == 0.0 && r.abs() < 9.0e15 {
        Wire::Int(r as i64)
    } else if r.is_finite() {
        Wire::Real(r)
    } else {
        Wire::Null
    }
}

fn wire_date(iso: &str, format: DateFormat) -> String {
    if format == DateFormat::Iso {
        return iso.to_owned();
    }
    match (iso.get(0..4), iso.get(5..7), iso.get(8..10)) {
        (Some(y), Some(m), Some(d)) => format!("{m}/{d}/{y}"),
        _ => iso.to_owned(),
    }
}

/// The stored form of a time for auto-entered timestamps.
pub fn timestamp_cell(at: time::OffsetDateTime) -> Cell {
    Cell::Text(format!("{} {}", iso_date(at.date()), iso_time(at.time())))
}

/// The stored form of today's date.
pub fn date_cell(at: time::OffsetDateTime) -> Cell {
    Cell::Text(iso_date(at.date()))
}
