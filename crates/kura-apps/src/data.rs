//! Record operations with FileMaker's semantics, under a privilege set.
//!
//! Each function runs inside one store transaction (`AppRead`/`AppWrite`),
//! so a request either does everything it asked or nothing: a failed
//! validation in the third portal row rolls back the parent record too.

use std::collections::HashMap;

use kura_store::app_data::{
    AppRead, AppWrite, Cell, ContainerCell, Filter, Row, SortKey, UpdateOutcome,
};
use serde_json::{Map, Value, json};
use time::OffsetDateTime;

use crate::error::{FmError, standard_message};
use crate::privileges::PrivilegeSet;
use crate::schema::{AutoEnter, Field, FieldAccess, FieldType, Layout, Portal, Schema, Table};
use crate::value::{DateFormat, parse_json, timestamp_cell, to_json};

/// The most records one request returns.
pub const MAX_LIMIT: u64 = 10_000;
/// Records returned when no limit is given.
pub const DEFAULT_LIMIT: u64 = 100;
/// Portal rows returned when no portal limit is given.
pub const DEFAULT_PORTAL_LIMIT: u64 = 50;

/// Who is acting.
#[derive(Debug, Clone, Copy)]
pub struct Caller<'a> {
    /// The app account's name.
    pub account: &'a str,
    /// Its privilege set.
    pub privileges: &'a PrivilegeSet,
    /// The session's global field values (field id → value).
    pub globals: &'a HashMap<u32, Cell>,
}

/// Builds the URL a container field's value is read back from.
pub type ContainerUrl<'a> = &'a (dyn Fn(u32, i64, u32) -> String + Send + Sync);

/// How records are rendered.
#[derive(Clone, Copy)]
pub struct Render<'a> {
    /// Date format on the wire.
    pub format: DateFormat,
    /// Which portals to include (`None`: all of them).
    pub portals: Option<&'a [String]>,
    /// Per-portal (offset, limit), 1-based offset.
    pub portal_ranges: &'a HashMap<String, (u64, u64)>,
    /// Container URL builder.
    pub container_url: ContainerUrl<'a>,
}

impl std::fmt::Debug for Render<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Render")
            .field("format", &self.format)
            .finish_non_exhaustive()
    }
}

/// A resolved sort request (field name, descending).
pub type SortSpec = Vec<(String, bool)>;

/// Fields of the layout the caller may see, as (index in table, field).
fn visible<'s>(table: &'s Table, ids: &[usize], caller: &Caller<'_>) -> Vec<&'s Field> {
    ids.iter()
        .map(|i| &table.fields[*i])
        .filter(|f| caller.privileges.field_access(table.id, f.id) != FieldAccess::None)
        .collect()
}

fn stored_ids(fields: &[&Field]) -> Vec<u32> {
    fields
        .iter()
        .filter(|f| !f.def.global)
        .map(|f| f.id)
        .collect()
}

fn cell_json(
    table: &Table,
    field: &Field,
    row: &Row,
    pos: &mut usize,
    caller: &Caller<'_>,
    render: &Render<'_>,
) -> Value {
    if field.def.global {
        let v = caller.globals.get(&field.id).cloned().unwrap_or(Cell::Null);
        return to_json(field.def.kind, &v, render.format);
    }
    let cell = row.cells.get(*pos).cloned().unwrap_or(Cell::Null);
    *pos += 1;
    if field.def.kind == FieldType::Container {
        return match cell {
            Cell::Null => Value::String(String::new()),
            _ => Value::String((render.container_url)(table.id, row.rid, field.id)),
        };
    }
    to_json(field.def.kind, &cell, render.format)
}

/// Renders one record of a layout with its portals.
fn record_json(
    r: &AppRead<'_>,
    schema: &Schema,
    layout: &Layout,
    fields: &[&Field],
    row: &Row,
    caller: &Caller<'_>,
    render: &Render<'_>,
) -> Result<Value, FmError> {
    let table = &schema.tables[layout.table];
    let mut field_data = Map::with_capacity(fields.len());
    let mut pos = 0;
    for f in fields {
        field_data.insert(
            f.name().to_owned(),
            cell_json(table, f, row, &mut pos, caller, render),
        );
    }
    let mut portal_data = Map::new();
    let mut portal_info = Vec::new();
    for portal in &layout.portals {
        if let Some(wanted) = render.portals
            && !wanted.iter().any(|w| w == &portal.name)
        {
            continue;
        }
        let (rows, found, related) = portal_rows(r, schema, layout, portal, row, caller, render)?;
        portal_info.push(json!({
            "portalObjectName": portal.name,
            "database": "",
            "table": related.name,
            "foundCount": found,
            "returnedCount": rows.len(),
        }));
        portal_data.insert(portal.name.clone(), Value::Array(rows));
    }
    let mut out = Map::new();
    out.insert("fieldData".into(), Value::Object(field_data));
    out.insert("portalData".into(), Value::Object(portal_data));
    out.insert("recordId".into(), Value::String(row.rid.to_string()));
    out.insert("modId".into(), Value::String(row.modid.to_string()));
    if !portal_info.is_empty() {
        out.insert("portalDataInfo".into(), Value::Array(portal_info));
    }
    Ok(Value::Object(out))
}

/// The key value a portal's related records match on.
fn local_key(
    schema: &Schema,
    layout: &Layout,
    portal: &Portal,
    r: &AppRead<'_>,
    rid: i64,
) -> Result<Cell, FmError> {
    let table = &schema.tables[layout.table];
    let field = &table.fields[portal.local_field];
    let row = r
        .get(table.id, rid, &[field.id])
        .map_err(|e| FmError::internal(&e))?
        .ok_or_else(|| FmError::code(101))?;
    Ok(row.cells.into_iter().next().unwrap_or(Cell::Null))
}

#[allow(clippy::type_complexity)]
fn portal_rows<'s>(
    r: &AppRead<'_>,
    schema: &'s Schema,
    layout: &Layout,
    portal: &Portal,
    parent: &Row,
    caller: &Caller<'_>,
    render: &Render<'_>,
) -> Result<(Vec<Value>, u64, &'s Table), FmError> {
    let related = &schema.tables[portal.table];
    let key = local_key(schema, layout, portal, r, parent.rid)?;
    if key == Cell::Null {
        return Ok((Vec::new(), 0, related));
    }
    let rfield = &related.fields[portal.related_field];
    let filter = Filter::And(vec![
        Filter::Col(rfield.id, kura_store::app_data::Cond::Eq(key)),
        caller.privileges.view_filter(related.id, caller.account),
    ]);
    let (offset, limit) = render
        .portal_ranges
        .get(&portal.name)
        .copied()
        .unwrap_or((1, DEFAULT_PORTAL_LIMIT));
    let fields = visible(related, &portal.fields, caller);
    let cols = stored_ids(&fields);
    let found = r
        .count_matching(related.id, &filter)
        .map_err(|e| FmError::internal(&e))?;
    let rows = r
        .select(
            related.id,
            &filter,
            &[],
            offset.saturating_sub(1),
            limit,
            &cols,
        )
        .map_err(|e| FmError::internal(&e))?;
    let mut out = Vec::with_capacity(rows.len());
    for row in rows {
        let mut obj = Map::new();
        obj.insert("recordId".into(), Value::String(row.rid.to_string()));
        let mut pos = 0;
        for f in &fields {
            obj.insert(
                format!("{}::{}", related.name, f.name()),
                cell_json(related, f, &row, &mut pos, caller, render),
            );
        }
        obj.insert("modId".into(), Value::String(row.modid.to_string()));
        out.push(Value::Object(obj));
    }
    Ok((out, found, related))
}

/// `dataInfo` for a response.
pub fn data_info(
    database: &str,
    layout: &Layout,
    table: &Table,
    total: u64,
    found: u64,
    returned: usize,
) -> Value {
    json!({
        "database": database,
        "layout": layout.name,
        "table": table.name,
        "totalRecordCount": total,
        "foundCount": found,
        "returnedCount": returned,
    })
}

/// A page of records: `(total, found, records)`.
pub type Page = (u64, u64, Vec<Value>);

/// Resolves sort fields against the layout's table.
pub fn sort_keys(
    schema: &Schema,
    layout: &Layout,
    caller: &Caller<'_>,
    sort: &SortSpec,
) -> Result<Vec<SortKey>, FmError> {
    let table = &schema.tables[layout.table];
    sort.iter()
        .map(|(name, descending)| {
            let f = table
                .field(strip_table(table, name))
                .map(|i| &table.fields[i])
                .filter(|f| {
                    !f.def.global
                        && caller.privileges.field_access(table.id, f.id) != FieldAccess::None
                })
                .ok_or_else(|| FmError::with(102, format!("Field is missing (`{name}`)")))?;
            Ok(SortKey {
                col: f.id,
                descending: *descending,
            })
        })
        .collect()
}

fn strip_table<'n>(table: &Table, name: &'n str) -> &'n str {
    match name.split_once("::") {
        Some((t, f)) if t.eq_ignore_ascii_case(&table.name) => f,
        _ => name,
    }
}

/// Records of a layout matching `filter` (already combined with nothing
/// else): adds the caller's view restriction, sorts and pages. An empty
/// result is FileMaker's error 401.
#[allow(clippy::too_many_arguments)]
pub fn page(
    r: &AppRead<'_>,
    schema: &Schema,
    layout: &Layout,
    caller: &Caller<'_>,
    filter: Filter,
    sort: &[SortKey],
    offset: u64,
    limit: u64,
    render: &Render<'_>,
) -> Result<Page, FmError> {
    let table = &schema.tables[layout.table];
    let filter = match (
        filter,
        caller.privileges.view_filter(table.id, caller.account),
    ) {
        (f, Filter::All) => f,
        (Filter::All, v) => v,
        (f, v) => Filter::And(vec![f, v]),
    };
    let total = r.count(table.id).map_err(|e| FmError::internal(&e))?;
    let found = r
        .count_matching(table.id, &filter)
        .map_err(|e| FmError::internal(&e))?;
    if found == 0 {
        return Err(FmError::code(401));
    }
    let fields = visible(table, &layout.fields, caller);
    let cols = stored_ids(&fields);
    let mut records = Vec::with_capacity(limit.min(found) as usize);
    let mut failure = None;
    r.select_each(
        table.id,
        &filter,
        sort,
        offset.saturating_sub(1),
        limit,
        &cols,
        |row| {
            match record_json(r, schema, layout, &fields, &row, caller, render) {
                Ok(v) => records.push(v),
                Err(e) => failure = Some(e),
            }
            Ok(())
        },
    )
    .map_err(|e| FmError::internal(&e))?;
    if let Some(e) = failure {
        return Err(e);
    }
    Ok((total, found, records))
}

/// One record of a layout, as a page of one.
pub fn one(
    r: &AppRead<'_>,
    schema: &Schema,
    layout: &Layout,
    caller: &Caller<'_>,
    rid: i64,
    render: &Render<'_>,
) -> Result<Page, FmError> {
    let table = &schema.tables[layout.table];
    let fields = visible(table, &layout.fields, caller);
    let cols = stored_ids(&fields);
    let row = r
        .get(table.id, rid, &cols)
        .map_err(|e| FmError::internal(&e))?
        .ok_or_else(|| FmError::code(101))?;
    require(r, table.id, rid, caller, Access::View)?;
    let total = r.count(table.id).map_err(|e| FmError::internal(&e))?;
    let v = record_json(r, schema, layout, &fields, &row, caller, render)?;
    Ok((total, 1, vec![v]))
}

/// What a caller wants to do with a record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Access {
    View,
    Edit,
    Delete,
}

/// Checks record access in FileMaker's order: a record the caller cannot
/// see is missing (101, revealing nothing); one it can see but not change
/// or delete is denied (200).
fn require(
    r: &AppRead<'_>,
    table: u32,
    rid: i64,
    caller: &Caller<'_>,
    access: Access,
) -> Result<(), FmError> {
    let p = caller.privileges;
    if !row_matches(r, table, rid, &p.view_filter(table, caller.account))? {
        return Err(FmError::code(101));
    }
    let filter = match access {
        Access::View => return Ok(()),
        Access::Edit => p.edit_filter(table, caller.account),
        Access::Delete => p.delete_filter(table, caller.account),
    };
    if !row_matches(r, table, rid, &filter)? {
        return Err(FmError::code(200));
    }
    Ok(())
}

/// Whether record `rid` passes `filter`.
fn row_matches(r: &AppRead<'_>, table: u32, rid: i64, filter: &Filter) -> Result<bool, FmError> {
    match filter {
        Filter::All => Ok(true),
        Filter::Nothing => Ok(false),
        f => {
            let rows = r
                .select(
                    table,
                    &Filter::And(vec![Filter::Rid(rid), f.clone()]),
                    &[],
                    0,
                    1,
                    &[],
                )
                .map_err(|e| FmError::internal(&e))?;
            Ok(!rows.is_empty())
        }
    }
}

/// Validated values for a write, in field order.
fn field_values(
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

/// Inserts a record into `table` with given values plus auto-entered ones.
fn insert(
    w: &AppWrite<'_>,
    table: &Table,
    given: &[(usize, Cell)],
    caller: &Caller<'_>,
    now: OffsetDateTime,
) -> Result<(i64, i64), FmError> {
    if !caller.privileges.can_create(table.id) {
        return Err(FmError::code(200));
    }
    let values = creation_values(w, table, given, caller, now)?;
    match w
        .insert(table.id, Some(caller.account), &values)
        .map_err(|e| FmError::internal(&e))?
    {
        Ok(ids) => Ok(ids),
        Err(col) => Err(not_unique(table, col)),
    }
}

/// Changes a record the caller may edit.
#[allow(clippy::too_many_arguments)]
fn update(
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
fn apply_update(
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
        UpdateOutcome::Updated(m) => Ok(m),
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

/// Writes portal rows: rows without `recordId` create related records,
/// rows with one change them (they must belong to the parent).
#[allow(clippy::too_many_arguments)]
fn write_portals(
    w: &AppWrite<'_>,
    schema: &Schema,
    layout: &Layout,
    parent: i64,
    portal_data: &Map<String, Value>,
    caller: &Caller<'_>,
    format: DateFormat,
    now: OffsetDateTime,
) -> Result<(), FmError> {
    for (pname, rows) in portal_data {
        let portal = layout
            .portals
            .iter()
            .find(|p| &p.name == pname || schema.tables[p.table].name == *pname)
            .ok_or_else(|| FmError::with(102, format!("Field is missing (portal `{pname}`)")))?;
        let related = &schema.tables[portal.table];
        let Value::Array(rows) = rows else {
            return Err(FmError::with(
                960,
                format!("portalData.{pname} must be an array"),
            ));
        };
        let key = local_key(schema, layout, portal, &w.read(), parent)?;
        let rfield = &related.fields[portal.related_field];
        for row in rows {
            let Value::Object(obj) = row else {
                return Err(FmError::with(
                    960,
                    format!("portalData.{pname} rows must be objects"),
                ));
            };
            let rid = parse_id(obj.get("recordId"), "recordId")?;
            let expected = parse_id(obj.get("modId"), "modId")?;
            let mut values = Vec::new();
            for (k, v) in obj {
                if k == "recordId" || k == "modId" {
                    continue;
                }
                let fname = match k.split_once("::") {
                    Some((t, f)) if t.eq_ignore_ascii_case(&related.name) || t == pname => f,
                    _ => k.as_str(),
                };
                let idx = related
                    .field(fname)
                    .filter(|i| portal.fields.contains(i))
                    .ok_or_else(|| FmError::with(102, format!("Field is missing (`{k}`)")))?;
                let field = &related.fields[idx];
                match caller.privileges.field_access(related.id, field.id) {
                    FieldAccess::Modify
                        if !field.def.global && field.def.kind != FieldType::Container => {}
                    FieldAccess::None => {
                        return Err(FmError::with(102, format!("Field is missing (`{k}`)")));
                    }
                    _ => {
                        return Err(FmError::with(
                            201,
                            format!("Field cannot be modified (`{k}`)"),
                        ));
                    }
                }
                let cell = parse_json(field.def.kind, field.name(), v, format)?;
                validate(field, &cell)?;
                values.push((idx, cell));
            }
            match rid {
                None => {
                    if key == Cell::Null {
                        return Err(FmError::with(
                            510,
                            format!("Related value is empty or unavailable (portal `{pname}`)"),
                        ));
                    }
                    values.retain(|(i, _)| *i != portal.related_field);
                    values.push((portal.related_field, key.clone()));
                    insert(w, related, &values, caller, now)?;
                }
                Some(rid) => {
                    let belongs =
                        Filter::Col(rfield.id, kura_store::app_data::Cond::Eq(key.clone()));
                    if !row_matches(&w.read(), related.id, rid, &belongs)? {
                        return Err(FmError::code(101));
                    }
                    update(w, related, rid, expected, &values, caller, now)?;
                }
            }
        }
    }
    Ok(())
}

/// `fieldData.deleteRelated`: `"portal.recordId"` or an array of them.
fn delete_related(
    w: &AppWrite<'_>,
    schema: &Schema,
    layout: &Layout,
    parent: i64,
    field_data: &Map<String, Value>,
    caller: &Caller<'_>,
) -> Result<(), FmError> {
    let targets: Vec<String> = match field_data.get("deleteRelated") {
        None => return Ok(()),
        Some(Value::String(s)) => vec![s.clone()],
        Some(Value::Array(a)) => a
            .iter()
            .map(|v| {
                v.as_str()
                    .map(str::to_owned)
                    .ok_or_else(|| FmError::with(960, "deleteRelated"))
            })
            .collect::<Result<_, _>>()?,
        Some(_) => {
            return Err(FmError::with(
                960,
                "deleteRelated must be a string or array",
            ));
        }
    };
    for target in targets {
        let (pname, rid) = target
            .rsplit_once('.')
            .and_then(|(p, r)| r.parse::<i64>().ok().map(|r| (p, r)))
            .ok_or_else(|| {
                FmError::with(
                    960,
                    format!("deleteRelated `{target}` is not `portal.recordId`"),
                )
            })?;
        let portal = layout
            .portals
            .iter()
            .find(|p| p.name == pname || schema.tables[p.table].name == pname)
            .ok_or_else(|| FmError::with(102, format!("Field is missing (portal `{pname}`)")))?;
        let related = &schema.tables[portal.table];
        let key = local_key(schema, layout, portal, &w.read(), parent)?;
        let rfield = &related.fields[portal.related_field];
        let belongs = Filter::Col(rfield.id, kura_store::app_data::Cond::Eq(key));
        if !row_matches(&w.read(), related.id, rid, &belongs)? {
            return Err(FmError::code(101));
        }
        require(&w.read(), related.id, rid, caller, Access::Delete)?;
        w.delete(related.id, rid)
            .map_err(|e| FmError::internal(&e))?;
    }
    Ok(())
}

/// Creates a record (and related portal rows).
#[allow(clippy::too_many_arguments)]
pub fn create(
    w: &AppWrite<'_>,
    schema: &Schema,
    layout: &Layout,
    caller: &Caller<'_>,
    field_data: &Map<String, Value>,
    portal_data: &Map<String, Value>,
    format: DateFormat,
    now: OffsetDateTime,
) -> Result<(i64, i64), FmError> {
    let table = &schema.tables[layout.table];
    if !caller.privileges.can_create(table.id) {
        return Err(FmError::code(200));
    }
    let given = field_values(schema, layout, caller, field_data, format)?;
    let (rid, modid) = insert(w, table, &given, caller, now)?;
    write_portals(w, schema, layout, rid, portal_data, caller, format, now)?;
    Ok((rid, modid))
}

/// Edits a record: fields, portal rows, related deletions.
#[allow(clippy::too_many_arguments)]
pub fn edit(
    w: &AppWrite<'_>,
    schema: &Schema,
    layout: &Layout,
    caller: &Caller<'_>,
    rid: i64,
    expected_mod: Option<i64>,
    field_data: &Map<String, Value>,
    portal_data: &Map<String, Value>,
    format: DateFormat,
    now: OffsetDateTime,
) -> Result<i64, FmError> {
    let table = &schema.tables[layout.table];
    // Record access first: a record the caller may not change is 200
    // whatever fields the request names.
    let r = w.read();
    require(&r, table.id, rid, caller, Access::Edit)?;
    let given = field_values(schema, layout, caller, field_data, format)?;
    let modid = apply_update(w, table, rid, expected_mod, &given, caller, now)?;
    delete_related(w, schema, layout, rid, field_data, caller)?;
    write_portals(w, schema, layout, rid, portal_data, caller, format, now)?;
    Ok(modid)
}

/// Duplicates a record (stored fields; serials and creation values are
/// entered anew).
pub fn duplicate(
    w: &AppWrite<'_>,
    schema: &Schema,
    layout: &Layout,
    caller: &Caller<'_>,
    rid: i64,
    now: OffsetDateTime,
) -> Result<(i64, i64), FmError> {
    let table = &schema.tables[layout.table];
    let r = w.read();
    require(&r, table.id, rid, caller, Access::View)?;
    let copy: Vec<usize> = table
        .fields
        .iter()
        .enumerate()
        .filter(|(_, f)| {
            !f.def.global && f.def.kind != FieldType::Container && f.def.auto_enter.is_none()
        })
        .map(|(i, _)| i)
        .collect();
    let cols: Vec<u32> = copy.iter().map(|i| table.fields[*i].id).collect();
    let row = r
        .get(table.id, rid, &cols)
        .map_err(|e| FmError::internal(&e))?
        .ok_or_else(|| FmError::code(101))?;
    let given: Vec<(usize, Cell)> = copy.into_iter().zip(row.cells).collect();
    insert(w, table, &given, caller, now)
}

/// Deletes a record the caller may delete.
pub fn delete(
    w: &AppWrite<'_>,
    schema: &Schema,
    layout: &Layout,
    caller: &Caller<'_>,
    rid: i64,
) -> Result<(), FmError> {
    let table = &schema.tables[layout.table];
    let r = w.read();
    require(&r, table.id, rid, caller, Access::Delete)?;
    if !w.delete(table.id, rid).map_err(|e| FmError::internal(&e))? {
        return Err(FmError::code(101));
    }
    Ok(())
}

/// Stores a file in a container field of a record.
#[allow(clippy::too_many_arguments)]
pub fn upload(
    w: &AppWrite<'_>,
    schema: &Schema,
    layout: &Layout,
    caller: &Caller<'_>,
    rid: i64,
    field: &str,
    expected_mod: Option<i64>,
    file: ContainerCell,
    now: OffsetDateTime,
) -> Result<i64, FmError> {
    let table = &schema.tables[layout.table];
    let idx = table
        .field(field)
        .filter(|i| layout.fields.contains(i))
        .ok_or_else(|| FmError::with(102, format!("Field is missing (`{field}`)")))?;
    let f = &table.fields[idx];
    if f.def.kind != FieldType::Container {
        return Err(FmError::with(
            102,
            format!("Field is missing (`{field}` is not a container field)"),
        ));
    }
    match caller.privileges.field_access(table.id, f.id) {
        FieldAccess::None => {
            return Err(FmError::with(102, format!("Field is missing (`{field}`)")));
        }
        FieldAccess::View => {
            return Err(FmError::with(
                201,
                format!("Field cannot be modified (`{field}`)"),
            ));
        }
        FieldAccess::Modify => {}
    }
    let name = file.name.clone();
    let modid = update(
        w,
        table,
        rid,
        expected_mod,
        &[(idx, Cell::Text(name))],
        caller,
        now,
    )?;
    w.put_container(table.id, rid, f.id, &file)
        .map_err(|e| FmError::internal(&e))?;
    Ok(modid)
}
