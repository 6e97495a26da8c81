//! FileMaker find criteria, turned into store filters.
//!
//! Supported operators (FileMaker's meaning): plain text matches records
//! where every word of the criterion begins some word of the field;
//! `=text` matches whole words, `=` alone an empty field; `==text` the
//! entire field, `==` alone an empty field; `<`, `<=`, `>`, `>=` compare by
//! the field's type; `a...b` (or `a..b`) is an inclusive range; `*` alone is
//! "not empty", `*` inside text any characters, `@` one character, `#` one
//! digit; `!` finds duplicate values; `//` is today's date; `"a b"` matches a
//! phrase from a word start; `\` escapes the next character. Criteria are
//! always bound as SQL parameters; `%`, `_` and `[` have no special meaning.

use kura_store::app_data::{Cell, Cond, Filter, glob_literal};
use time::OffsetDateTime;

use crate::error::FmError;
use crate::schema::{Field, FieldType};
use crate::value::{DateFormat, date_cell, parse_text};

fn bad(field: &str) -> FmError {
    FmError::with(
        508,
        format!("Invalid value entered in Find mode (field `{field}`)"),
    )
}

/// The filter for one field's criterion; `None` when the criterion is
/// empty (it constrains nothing).
pub fn criterion(
    field: &Field,
    raw: &str,
    format: DateFormat,
    now: OffsetDateTime,
) -> Result<Option<Filter>, FmError> {
    let id = field.id;
    let name = field.name();
    let kind = field.def.kind;
    let c = raw.trim();
    if c.is_empty() {
        return Ok(None);
    }
    let col = |cond: Cond| Ok(Some(Filter::Col(id, cond)));
    match c {
        "=" | "==" => return col(Cond::Empty),
        "*" => return col(Cond::NotEmpty),
        "!" => return col(Cond::Duplicate),
        "//" if kind == FieldType::Date => return col(Cond::Eq(date_cell(now))),
        _ => {}
    }
    if kind == FieldType::Container {
        return Err(bad(name));
    }
    let typed = |text: &str| -> Result<Cell, FmError> {
        match parse_text(kind, text.trim(), format) {
            Ok(Cell::Null) | Err(_) => Err(bad(name)),
            Ok(cell) => Ok(cell),
        }
    };
    for (op, make) in [
        ("<=", Cond::Le as fn(Cell) -> Cond),
        (">=", Cond::Ge),
        ("≤", Cond::Le),
        ("≥", Cond::Ge),
        ("<", Cond::Lt),
        (">", Cond::Gt),
    ] {
        if let Some(rest) = c.strip_prefix(op) {
            return col(make(typed(rest)?));
        }
    }
    if let Some((a, b)) = c.split_once("...").or_else(|| c.split_once("..")) {
        let (a, b) = (typed(a)?, typed(b)?);
        return col(Cond::Between(a, b));
    }
    if let Some(rest) = c.strip_prefix("==") {
        return match kind {
            FieldType::Text if has_wildcards(rest) => col(Cond::Glob(glob(rest)?)),
            FieldType::Text => col(Cond::Eq(Cell::Text(unescape(rest)))),
            _ => col(Cond::Eq(typed(rest)?)),
        };
    }
    if let Some(rest) = c.strip_prefix('=') {
        return match kind {
            FieldType::Text => {
                // Whole words: the word followed by a word end.
                let w = glob(rest)?;
                Ok(Some(Filter::Or(vec![
                    Filter::Col(id, Cond::WordGlob(w.clone())),
                    Filter::Col(id, Cond::WordGlob(format!("{w} *"))),
                ])))
            }
            _ => col(Cond::Eq(typed(rest)?)),
        };
    }
    match kind {
        FieldType::Text => {
            if let Some(phrase) = c.strip_prefix('"').and_then(|p| p.strip_suffix('"')) {
                return col(Cond::WordGlob(format!("{}*", glob(phrase)?)));
            }
            if let Some(phrase) = c.strip_prefix("*\"").and_then(|p| p.strip_suffix('"')) {
                return col(Cond::Glob(format!("*{}*", glob(phrase)?)));
            }
            let words: Vec<Filter> = c
                .split_whitespace()
                .map(|w| Ok(Filter::Col(id, Cond::WordGlob(format!("{}*", glob(w)?)))))
                .collect::<Result<_, FmError>>()?;
            Ok(Some(Filter::And(words)))
        }
        _ => col(Cond::Eq(typed(c)?)),
    }
}

fn has_wildcards(s: &str) -> bool {
    let mut escaped = false;
    for ch in s.chars() {
        if escaped {
            escaped = false;
        } else if ch == '\\' {
            escaped = true;
        } else if matches!(ch, '*' | '@' | '#') {
            return true;
        }
    }
    false
}

fn unescape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut escaped = false;
    for ch in s.chars() {
        if !escaped && ch == '\\' {
            escaped = true;
            continue;
        }
        escaped = false;
        out.push(ch);
    }
    out
}

/// Turns FileMaker wildcards into a lower-case GLOB pattern, every other
/// character matching itself.
fn glob(s: &str) -> Result<String, FmError> {
    let mut out = String::with_capacity(s.len() + 8);
    let mut escaped = false;
    for ch in s.chars() {
        if escaped {
            out.push_str(&glob_literal(&ch.to_lowercase().to_string()));
            escaped = false;
            continue;
        }
        match ch {
            '\\' => escaped = true,
            '*' => out.push('*'),
            '@' => out.push('?'),
            '#' => out.push_str("[0-9]"),
            _ => out.push_str(&glob_literal(&ch.to_lowercase().to_string())),
        }
    }
    Ok(out)
}

/// The filter for a `_find` body's `query` array: fields inside one request
/// are ANDed, requests are ORed, and `"omit": "true"` requests remove their
/// matches.
pub fn query_filter(
    schema: &crate::schema::Schema,
    layout: &crate::schema::Layout,
    privileges: &crate::privileges::PrivilegeSet,
    query: &serde_json::Value,
    format: DateFormat,
    now: OffsetDateTime,
) -> Result<Filter, FmError> {
    use serde_json::Value;
    let table = &schema.tables[layout.table];
    let Value::Array(requests) = query else {
        return Err(FmError::with(
            960,
            "query must be an array of find requests",
        ));
    };
    if requests.is_empty() {
        return Err(FmError::code(400));
    }
    let mut finds = Vec::new();
    let mut omits = Vec::new();
    for request in requests {
        let Value::Object(obj) = request else {
            return Err(FmError::with(960, "each find request must be an object"));
        };
        let mut omit = false;
        let mut parts = Vec::new();
        for (name, value) in obj {
            if name == "omit" {
                omit = match value {
                    Value::String(s) => s.eq_ignore_ascii_case("true"),
                    Value::Bool(b) => *b,
                    _ => return Err(FmError::with(960, "omit must be \"true\" or \"false\"")),
                };
                continue;
            }
            let fname = match name.split_once("::") {
                Some((t, f)) if t.eq_ignore_ascii_case(&table.name) => f,
                _ => name.as_str(),
            };
            let idx = table
                .field(fname)
                .filter(|i| layout.fields.contains(i))
                .ok_or_else(|| FmError::with(102, format!("Field is missing (`{name}`)")))?;
            let field = &table.fields[idx];
            if field.def.global
                || privileges.field_access(table.id, field.id) == crate::schema::FieldAccess::None
            {
                return Err(FmError::with(102, format!("Field is missing (`{name}`)")));
            }
            let text = match value {
                Value::String(s) => s.clone(),
                Value::Number(n) => n.to_string(),
                _ => return Err(bad(name)),
            };
            if let Some(f) = criterion(field, &text, format, now)? {
                parts.push(f);
            }
        }
        if parts.is_empty() {
            continue;
        }
        let f = Filter::And(parts);
        if omit { omits.push(f) } else { finds.push(f) }
    }
    if finds.is_empty() && omits.is_empty() {
        return Err(FmError::code(400));
    }
    let found = if finds.is_empty() {
        Filter::All
    } else {
        Filter::Or(finds)
    };
    Ok(if omits.is_empty() {
        found
    } else {
        Filter::And(vec![found, Filter::Not(Box::new(Filter::Or(omits)))])
    })
}
