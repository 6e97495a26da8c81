//! From request values to validated cells, auto-entered values, and the
//! store's insert and update, each logged in the change outbox.

use kura_store::app_data::{AppWrite, Cell, ChangeKind, UpdateOutcome};
use serde_json::{Map, Value};
use time::OffsetDateTime;

use super::{Access, Caller, require, strip_table};
use crate::error::{FmError, standard_message};
use crate::schema::{AutoEnter, Field, FieldAccess, FieldType, Layout, Schema, Table};
use crate::value::{DateFormat, parse_json, timestamp_cell, to_json};

/// Validated values for a write, in field order.
pub(super) fn field_values(
    schema: &Schema,
    layout: &Layout,
    caller: &Caller<'_>,
    field_data: &Map<String, Value>,
    format: DateFormat,
) -> Result<Vec<(usize, Cell)>, FmError> {
    let table = &schema.tables[layout.table];
    let mut out: Vec<(usize, Cell)> = Vec::with_capacity(field_data.len());
    for (raw_name, value) in field_data {
        if raw_name == "deleteRelated" {
            continue;
        }
        let name = strip_repetition(strip_table(table, raw_name))
            .ok_or_else(|| FmError::with(102, format!("Field is missing (`{raw_name}`)")))?;
        let idx = table
            .field(name)
            .filter(|i| layout.fields.contains(i))
            .ok_or_else(|| FmError::with(102, format!("Field is missing (`{raw_name}`)")))?;
        let field = &table.fields[idx];
        match caller.privileges.field_access(table.id, field.id) {
            FieldAccess::None => {
                return Err(FmError::with(
                    102,
                    format!("Field is missing (`{raw_name}`)"),
                ));
            }
            FieldAccess::View => {
                return Err(FmError::with(
                    201,
                    format!("Field cannot be modified (`{raw_name}`)"),
                ));
            }
            FieldAccess::Modify => {}
        }
        if field.def.global || field.def.kind == FieldType::Container {
            return Err(FmError::with(
                201,
                format!("Field cannot be modified (`{raw_name}`)"),
            ));
        }
        let cell = parse_json(field.def.kind, field.name(), value, format)?;
        validate(field, &cell)?;
        if let Some(slot) = out.iter_mut().find(|(i, _)| *i == idx) {
            slot.1 = cell;
        } else {
            out.push((idx, cell));
        }
    }
    Ok(out)
}

fn strip_repetition(name: &str) -> Option<&str> {
    match name.strip_suffix(')').and_then(|n| n.rsplit_once('(')) {
        Some((base, "1")) => Some(base),
        Some(_) => None,
        None => Some(name),
    }
}

/// Checks a value against the field's validation options.
pub fn validate(field: &Field, cell: &Cell) -> Result<(), FmError> {
    let name = field.name();
    if *cell == Cell::Null {
        if field.def.required {
            return Err(FmError::with(
                509,
                format!("{} (field `{name}`)", standard_message(509)),
            ));
        }
        return Ok(());
    }
    if let (Some(max), Cell::Text(t)) = (field.def.max_length, cell)
        && t.chars().count() > max as usize
    {
        return Err(FmError::with(
            511,
            format!(
                "{} (field `{name}`, at most {max} characters)",
                standard_message(511)
            ),
        ));
    }
    if let Some(allowed) = &field.allowed {
        let text = match cell {
            Cell::Text(t) => t.clone(),
            Cell::Real(r) => {
                to_json(FieldType::Number, &Cell::Real(*r), DateFormat::Iso).to_string()
            }
            Cell::Int(i) => i.to_string(),
            Cell::Null => String::new(),
        };
        if !allowed.iter().any(|a| a == &text) {
            return Err(FmError::with(
                506,
                format!("{} (field `{name}`)", standard_message(506)),
            ));
        }
    }
    Ok(())
}

fn not_unique(table: &Table, col: u32) -> FmError {
    let name = table
        .fields
        .iter()
        .find(|f| f.id == col)
        .map_or("?", |f| f.name());
    FmError::with(504, format!("{} (field `{name}`)", standard_message(504)))
}

/// Auto-entered values on creation, for fields not given.
fn creation_values(
    w: &AppWrite<'_>,
    table: &Table,
    given: &[(usize, Cell)],
    caller: &Caller<'_>,
    now: OffsetDateTime,
) -> Result<Vec<(u32, Cell)>, FmError> {
    let mut values: Vec<(u32, Cell)> = Vec::with_capacity(table.fields.len());
    for (i, field) in table.fields.iter().enumerate() {
        if field.def.global || field.def.kind == FieldType::Container {
            continue;
        }
        if let Some((_, cell)) = given.iter().find(|(g, _)| *g == i) {
            values.push((field.id, cell.clone()));
            continue;
        }
        let auto = match &field.def.auto_enter {
            None => Cell::Null,
            Some(AutoEnter::Serial { increment, .. }) => {
                let n = w
                    .next_serial(table.id, field.id, *increment)
                    .map_err(|e| FmError::internal(&e))?;
                if field.def.kind == FieldType::Text {
                    Cell::Text(n.to_string())
                } else {
                    Cell::Real(n as f64)
                }
            }
            Some(AutoEnter::CreationTimestamp | AutoEnter::ModificationTimestamp) => {
                timestamp_cell(now)
            }
            Some(AutoEnter::CreationAccount | AutoEnter::ModificationAccount) => {
                Cell::Text(caller.account.to_owned())
            }
            Some(AutoEnter::Constant(v)) => {
                crate::value::parse_text(field.def.kind, v, DateFormat::Iso).unwrap_or(Cell::Null)
            }
        };
        validate(field, &auto)?;
        values.push((field.id, auto));
    }
    Ok(values)
}

/// Auto-entered values on modification.
fn modification_values(
    table: &Table,
    caller: &Caller<'_>,
    now: OffsetDateTime,
) -> Vec<(u32, Cell)> {
    table
        .fields
        .iter()
        .filter_map(|f| match f.def.auto_enter {
            Some(AutoEnter::ModificationTimestamp) => Some((f.id, timestamp_cell(now))),
            Some(AutoEnter::ModificationAccount) => {
                Some((f.id, Cell::Text(caller.account.to_owned())))
            }
            _ => None,
        })
        .collect()
}

/// Milliseconds since the Unix epoch, for the change outbox.
fn unix_ms(now: OffsetDateTime) -> i64 {
    i64::try_from(now.unix_timestamp_nanos() / 1_000_000).unwrap_or(i64::MAX)
}

/// Appends a record change to the app's outbox, in the caller's transaction.
pub(super) fn log_change(
    w: &AppWrite<'_>,
    table: u32,
    rid: i64,
    kind: ChangeKind,
    modid: i64,
    caller: &Caller<'_>,
    now: OffsetDateTime,
) -> Result<(), FmError> {
    w.record_change(table, rid, kind, modid, unix_ms(now), caller.account)
        .map_err(|e| FmError::internal(&e))
}

/// Inserts a record into `table` with given values plus auto-entered ones,
/// and logs it as `kind`.
pub(crate) fn insert(
    w: &AppWrite<'_>,
    table: &Table,
    given: &[(usize, Cell)],
    caller: &Caller<'_>,
    now: OffsetDateTime,
    kind: ChangeKind,
) -> Result<(i64, i64), FmError> {
    if !caller.privileges.can_create(table.id) {
        return Err(FmError::code(200));
    }
    let values = creation_values(w, table, given, caller, now)?;
    match w
        .insert(table.id, Some(caller.account), &values)
        .map_err(|e| FmError::internal(&e))?
    {
        Ok((rid, modid)) => {
            log_change(w, table.id, rid, kind, modid, caller, now)?;
            Ok((rid, modid))
        }
        Err(col) => Err(not_unique(table, col)),
    }
}

/// Changes a record the caller may edit.
#[allow(clippy::too_many_arguments)]
pub(super) fn update(
    w: &AppWrite<'_>,
    table: &Table,
    rid: i64,
    expected_mod: Option<i64>,
    given: &[(usize, Cell)],
    caller: &Caller<'_>,
    now: OffsetDateTime,
) -> Result<i64, FmError> {
    require(&w.read(), table.id, rid, caller, Access::Edit)?;
    apply_update(w, table, rid, expected_mod, given, caller, now)
}

/// Writes a change whose record access was already checked.
#[allow(clippy::too_many_arguments)]
pub(super) fn apply_update(
    w: &AppWrite<'_>,
    table: &Table,
    rid: i64,
    expected_mod: Option<i64>,
    given: &[(usize, Cell)],
    caller: &Caller<'_>,
    now: OffsetDateTime,
) -> Result<i64, FmError> {
    let mut values: Vec<(u32, Cell)> = given
        .iter()
        .map(|(i, c)| (table.fields[*i].id, c.clone()))
        .collect();
    for (id, cell) in modification_values(table, caller, now) {
        if !values.iter().any(|(v, _)| *v == id) {
            values.push((id, cell));
        }
    }
    match w
        .update(table.id, rid, expected_mod, &values)
        .map_err(|e| FmError::internal(&e))?
    {
        UpdateOutcome::Updated(m) => {
            log_change(w, table.id, rid, ChangeKind::Edit, m, caller, now)?;
            Ok(m)
        }
        UpdateOutcome::Missing => Err(FmError::code(101)),
        UpdateOutcome::ModMismatch(_) => Err(FmError::code(306)),
        UpdateOutcome::NotUnique(col) => Err(not_unique(table, col)),
    }
}

/// A record or modification id given as a string or a number (clients
/// differ); empty means absent.
pub fn parse_id(v: Option<&Value>, what: &str) -> Result<Option<i64>, FmError> {
    match v {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) if s.is_empty() => Ok(None),
        Some(Value::String(s)) => s
            .trim()
            .parse()
            .map(Some)
            .map_err(|_| FmError::with(960, format!("{what} must be a number"))),
        Some(Value::Number(n)) => n
            .as_i64()
            .map(Some)
            .ok_or_else(|| FmError::with(960, format!("{what} must be a whole number"))),
        Some(_) => Err(FmError::with(960, format!("{what} must be a number"))),
    }
}
