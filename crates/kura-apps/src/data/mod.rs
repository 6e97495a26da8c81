//! Record operations with FileMaker's semantics, under a privilege set.
//!
//! Each function runs inside one store transaction (`AppRead`/`AppWrite`),
//! so a request either does everything it asked or nothing: a failed
//! validation in the third portal row rolls back the parent record too.
//!
//! This module renders records (pages, single records, portals) and checks
//! record access; [`write`] turns request values into validated cells and
//! logs every change in the app's outbox; [`ops`] is the Data API's write
//! operations (create, edit, duplicate, delete, container upload).

mod ops;
mod write;

pub use ops::{create, delete, duplicate, edit, upload};
pub(crate) use write::insert;
pub use write::{parse_id, validate};

use std::collections::HashMap;

use kura_store::app_data::{AppRead, Cell, Filter, Row, SortKey};
use serde_json::{Map, Value, json};

use crate::error::FmError;
use crate::privileges::PrivilegeSet;
use crate::schema::{Field, FieldAccess, FieldType, Layout, Portal, Schema, Table};
use crate::value::{DateFormat, to_json};

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

/// A page of records: the table's total, the found count and the records
/// from `offset` (1-based) up to `limit`, collected.
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
    let counts = page_counts(r, schema, layout, caller, filter, sort)?;
    let mut records = Vec::with_capacity(counts.returned(offset, limit) as usize);
    page_each(
        r,
        schema,
        layout,
        caller,
        &counts,
        sort,
        offset,
        limit,
        render,
        |v| {
            records.push(v);
            Ok(())
        },
    )?;
    Ok((counts.total, counts.found, records))
}

/// What a page will hold, known before any record is rendered.
#[derive(Debug, Clone)]
pub struct PageCounts {
    /// Records in the table.
    pub total: u64,
    /// Records the caller's filter (and privilege set) finds.
    pub found: u64,
    /// The filter with the privilege set's record condition joined in.
    filter: Filter,
    /// The found records' ids in record-id order, when the page is in that
    /// order: counted and paged from one walk of the filter's index.
    ids: Option<Vec<i64>>,
}

impl PageCounts {
    /// How many records a page from `offset` (1-based) of at most `limit`
    /// returns.
    pub fn returned(&self, offset: u64, limit: u64) -> u64 {
        self.found
            .saturating_sub(offset.saturating_sub(1))
            .min(limit)
    }
}

/// Counts a page's records: the table's total and how many match `filter`
/// within what the caller may view; nothing found is error 401. An
/// unsorted find (FileMaker's creation order) collects the found ids in
/// the same pass, so the page is read by id instead of by a second walk.
pub fn page_counts(
    r: &AppRead<'_>,
    schema: &Schema,
    layout: &Layout,
    caller: &Caller<'_>,
    filter: Filter,
    sort: &[SortKey],
) -> Result<PageCounts, FmError> {
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
    // Every record (the kept count answers) or a sorted page (SQLite sorts
    // and stops at the page's end) is counted apart from its page.
    let ids = if filter == Filter::All || !sort.is_empty() {
        None
    } else {
        Some(
            r.matching_ids(table.id, &filter)
                .map_err(|e| FmError::internal(&e))?,
        )
    };
    let found = match &ids {
        Some(ids) => ids.len() as u64,
        None => r
            .count_matching(table.id, &filter)
            .map_err(|e| FmError::internal(&e))?,
    };
    if found == 0 {
        return Err(FmError::code(401));
    }
    Ok(PageCounts {
        total,
        found,
        filter,
        ids,
    })
}

/// Renders the records of a counted page one by one, in order, handing
/// each to `visit` as soon as it is rendered: a large range is never held
/// whole (the Data API streams it to the client).
#[allow(clippy::too_many_arguments)]
pub fn page_each(
    r: &AppRead<'_>,
    schema: &Schema,
    layout: &Layout,
    caller: &Caller<'_>,
    counts: &PageCounts,
    sort: &[SortKey],
    offset: u64,
    limit: u64,
    render: &Render<'_>,
    mut visit: impl FnMut(Value) -> Result<(), FmError>,
) -> Result<(), FmError> {
    let table = &schema.tables[layout.table];
    let fields = visible(table, &layout.fields, caller);
    let cols = stored_ids(&fields);
    if let Some(ids) = &counts.ids {
        let skip = usize::try_from(offset.saturating_sub(1)).unwrap_or(usize::MAX);
        let take = usize::try_from(limit).unwrap_or(usize::MAX);
        for &rid in ids.iter().skip(skip).take(take) {
            // The same read transaction found it, so it is there.
            let row = r
                .get(table.id, rid, &cols)
                .map_err(|e| FmError::internal(&e))?
                .ok_or_else(|| FmError::with(-1, "a found record disappeared within its read"))?;
            visit(record_json(
                r, schema, layout, &fields, &row, caller, render,
            )?)?;
        }
        return Ok(());
    }
    let mut failure = None;
    r.select_each(
        table.id,
        &counts.filter,
        sort,
        offset.saturating_sub(1),
        limit,
        &cols,
        |row| {
            let rendered =
                record_json(r, schema, layout, &fields, &row, caller, render).and_then(&mut visit);
            match rendered {
                Ok(()) => Ok(()),
                Err(e) => {
                    failure = Some(e);
                    // Stops the scan: nothing after a failure is wanted.
                    Err(kura_store::StoreError::Worker(
                        "page rendering stopped".into(),
                    ))
                }
            }
        },
    )
    .map_err(|e| failure.take().unwrap_or_else(|| FmError::internal(&e)))
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
