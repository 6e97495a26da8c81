//! CSV import into one table.
//!
//! The header row names the fields (`name` or `Table::name`, any case);
//! each later row becomes one record. Values are checked with the Data
//! API's rules — type, maximum length, value list, required, unique — and
//! auto-entered values (serials, timestamps, account) are filled in as for
//! a record created through the API. Every row is parsed and checked
//! before the transaction starts; the rows are then inserted in batches
//! inside one transaction, so either every row is stored or none is, and
//! an error names the line and the field.

use kura_store::app_data::{AppWrite, Cell, ChangeKind};
use time::OffsetDateTime;

use crate::data::{Caller, insert, validate};
use crate::error::{AppsError, FmError};
use crate::schema::{FieldType, Table};
use crate::value::{DateFormat, parse_text};

/// Rows inserted per batch (the batches share one transaction).
pub const IMPORT_BATCH: usize = 1_000;

/// What an import did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImportReport {
    /// The table's name.
    pub table: String,
    /// Records created.
    pub imported: u64,
    /// The fields the header named, in column order.
    pub fields: Vec<String>,
}

/// One CSV record and the line it starts on (1-based).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CsvRecord {
    /// The line its first character is on.
    pub line: usize,
    /// Its values, unquoted.
    pub values: Vec<String>,
}

fn bad(line: usize, message: impl Into<String>) -> AppsError {
    AppsError::invalid(format!("csv line {line}"), message)
}

/// Parses RFC 4180 CSV: comma-separated, `"`-quoted values with `""` for
/// a quote, quoted values may span lines, CRLF or LF line ends, an
/// optional UTF-8 byte-order mark. Blank lines are skipped.
pub fn parse_csv(text: &str) -> Result<Vec<CsvRecord>, AppsError> {
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let mut records = Vec::new();
    let mut chars = text.chars().peekable();
    let mut line = 1;
    while chars.peek().is_some() {
        let start = line;
        let mut values = Vec::new();
        let mut value = String::new();
        let mut quoted = false;
        loop {
            match chars.next() {
                None => {
                    values.push(std::mem::take(&mut value));
                    break;
                }
                Some('"') if value.is_empty() && !quoted => {
                    quoted = true;
                    loop {
                        match chars.next() {
                            None => return Err(bad(start, "a quoted value is never closed")),
                            Some('"') if chars.peek() == Some(&'"') => {
                                chars.next();
                                value.push('"');
                            }
                            Some('"') => break,
                            Some(c) => {
                                if c == '\n' {
                                    line += 1;
                                }
                                value.push(c);
                            }
                        }
                    }
                    match chars.peek() {
                        None | Some(',' | '\n' | '\r') => {}
                        Some(_) => {
                            return Err(bad(
                                line,
                                "text follows a closing quote (write a quote inside a quoted value as \"\")",
                            ));
                        }
                    }
                }
                Some('"') => {
                    return Err(bad(
                        line,
                        "a quote inside an unquoted value (quote the whole value)",
                    ));
                }
                Some(',') => {
                    values.push(std::mem::take(&mut value));
                    quoted = false;
                }
                Some('\r') if chars.peek() == Some(&'\n') => {}
                Some('\n') => {
                    line += 1;
                    values.push(std::mem::take(&mut value));
                    break;
                }
                Some(c) => value.push(c),
            }
        }
        let blank = values.len() == 1 && values[0].is_empty() && !quoted;
        if !blank {
            records.push(CsvRecord {
                line: start,
                values,
            });
        }
    }
    Ok(records)
}

/// Maps the header row to field indexes of `table`.
fn columns(table: &Table, header: &CsvRecord) -> Result<Vec<usize>, AppsError> {
    let mut out: Vec<usize> = Vec::with_capacity(header.values.len());
    for (n, raw) in header.values.iter().enumerate() {
        let name = raw.trim();
        let name = match name.split_once("::") {
            Some((t, f)) if t.eq_ignore_ascii_case(&table.name) => f,
            _ => name,
        };
        let column = n + 1;
        let idx = table.field(name).ok_or_else(|| {
            bad(
                header.line,
                format!(
                    "column {column} (`{raw}`) is not a field of table `{}`",
                    table.name
                ),
            )
        })?;
        let field = &table.fields[idx];
        if field.def.global || field.def.kind == FieldType::Container {
            return Err(bad(
                header.line,
                format!(
                    "column {column}: field `{}` is a {} field and cannot be imported",
                    field.name(),
                    if field.def.global {
                        "global"
                    } else {
                        "container"
                    }
                ),
            ));
        }
        if out.contains(&idx) {
            return Err(bad(
                header.line,
                format!("column {column}: field `{}` is named twice", field.name()),
            ));
        }
        out.push(idx);
    }
    Ok(out)
}

fn row_error(line: usize, e: &FmError) -> AppsError {
    bad(line, format!("{} (FileMaker error {})", e.message, e.code))
}

/// A checked row, ready to insert.
#[derive(Debug)]
pub struct CheckedRow {
    line: usize,
    values: Vec<(usize, Cell)>,
}

/// Parses the CSV and checks every value against its field's type and
/// validation options (everything but uniqueness, which the store
/// decides, and required fields left to auto-enter).
pub fn check(table: &Table, text: &str) -> Result<(Vec<String>, Vec<CheckedRow>), AppsError> {
    let mut records = parse_csv(text)?.into_iter();
    let header = records
        .next()
        .ok_or_else(|| bad(1, "the file is empty; the first row names the fields"))?;
    let cols = columns(table, &header)?;
    let mut rows = Vec::new();
    for record in records {
        if record.values.len() != cols.len() {
            return Err(bad(
                record.line,
                format!(
                    "{} values, but the header names {} fields",
                    record.values.len(),
                    cols.len()
                ),
            ));
        }
        let mut values = Vec::with_capacity(cols.len());
        for (idx, text) in cols.iter().zip(record.values) {
            let field = &table.fields[*idx];
            let cell = parse_text(field.def.kind, &text, DateFormat::Us).map_err(|_| {
                bad(
                    record.line,
                    format!(
                        "field `{}`: `{}` is not a valid {} value",
                        field.name(),
                        text.chars().take(40).collect::<String>(),
                        kind_name(field.def.kind)
                    ),
                )
            })?;
            if cell != Cell::Null || field.def.auto_enter.is_none() {
                validate(field, &cell).map_err(|e| row_error(record.line, &e))?;
            }
            values.push((*idx, cell));
        }
        // An empty value of an auto-entered field gets the auto-entered
        // value, as when a Data API create leaves the field out.
        values.retain(|(i, c)| *c != Cell::Null || table.fields[*i].def.auto_enter.is_none());
        rows.push(CheckedRow {
            line: record.line,
            values,
        });
    }
    let names = cols
        .iter()
        .map(|i| table.fields[*i].name().to_owned())
        .collect();
    Ok((names, rows))
}

fn kind_name(kind: FieldType) -> &'static str {
    match kind {
        FieldType::Text => "text",
        FieldType::Number => "number",
        FieldType::Date => "date",
        FieldType::Time => "time",
        FieldType::Timestamp => "timestamp",
        FieldType::Container => "container",
    }
}

/// Inserts checked rows in batches, inside the caller's transaction,
/// logging each as an import in the change outbox. The first failing row
/// stops the import (the caller rolls back).
pub fn insert_rows(
    w: &AppWrite<'_>,
    table: &Table,
    rows: &[CheckedRow],
    caller: &Caller<'_>,
    now: OffsetDateTime,
) -> Result<u64, AppsError> {
    let mut imported = 0u64;
    for batch in rows.chunks(IMPORT_BATCH) {
        for row in batch {
            insert(w, table, &row.values, caller, now, ChangeKind::Import)
                .map_err(|e| row_error(row.line, &e))?;
            imported += 1;
        }
    }
    Ok(imported)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn values(text: &str) -> Vec<(usize, Vec<String>)> {
        parse_csv(text)
            .unwrap()
            .into_iter()
            .map(|r| (r.line, r.values))
            .collect()
    }

    #[test]
    fn parses_quotes_newlines_and_line_numbers() {
        let got = values("\u{feff}a,b\r\n\"x, y\",\"say \"\"hi\"\"\"\n\n\"two\nlines\",3\nlast,\n");
        assert_eq!(
            got,
            vec![
                (1, vec!["a".into(), "b".into()]),
                (2, vec!["x, y".into(), "say \"hi\"".into()]),
                (4, vec!["two\nlines".into(), "3".into()]),
                (6, vec!["last".into(), String::new()]),
            ]
        );
        assert_eq!(values("a,b"), vec![(1, vec!["a".into(), "b".into()])]);
    }

    #[test]
    fn malformed_quoting_names_the_line() {
        let e = parse_csv("a\n\"open\n").unwrap_err().to_string();
        assert!(e.contains("line 2") && e.contains("never closed"), "{e}");
        let e = parse_csv("a\nb\n\"x\"y\n").unwrap_err().to_string();
        assert!(e.contains("line 3"), "{e}");
        let e = parse_csv("a\nb\"c\n").unwrap_err().to_string();
        assert!(e.contains("line 2"), "{e}");
    }
}
