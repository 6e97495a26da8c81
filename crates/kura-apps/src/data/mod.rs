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
mod record;
mod write;

pub use ops::{
    CreateValues, create, create_checked, create_values, delete, duplicate, edit, upload,
};
pub use record::Record;
use record::{PortalRow, PortalRows};
pub(crate) use write::insert;
pub use write::{parse_id, validate};

use std::collections::HashMap;

use kura_store::app_data::{AppRead, Cell, Filter, Row, SortKey};
use serde_json::value::RawValue;

use crate::error::FmError;
use crate::privileges::PrivilegeSet;
use crate::schema::{Field, FieldAccess, FieldType, Layout, Portal, Schema, Table};
use crate::value::{DateFormat, Wire, to_wire};

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

/// A row's `fields` as (name, wire value), in order; the row's cells are
/// its stored fields' values in that order (globals come from the session).
fn wire_fields<'s>(
    table: &Table,
    fields: &[&'s Field],
    row: Row,
    caller: &Caller<'_>,
    render: &Render<'_>,
) -> Vec<(&'s str, Wire)> {
    let rid = row.rid;
    let mut cells = row.cells.into_iter();
    fields
        .iter()
        .map(|f| {
            (
                f.name(),
                cell_wire(table, f, rid, &mut cells, caller, render),
            )
        })
        .collect()
}

/// The wire value of `field` in a record whose remaining stored cells are
/// `cells`.
fn cell_wire(
    table: &Table,
    field: &Field,
    rid: i64,
    cells: &mut std::vec::IntoIter<Cell>,
    caller: &Caller<'_>,
    render: &Render<'_>,
) -> Wire {
    if field.def.global {
        let v = caller.globals.get(&field.id).cloned().unwrap_or(Cell::Null);
        return to_wire(field.def.kind, v, render.format);
    }
    let cell = cells.next().unwrap_or(Cell::Null);
    if field.def.kind == FieldType::Container {
        return match cell {
            Cell::Null => Wire::Text(String::new()),
            _ => Wire::Text((render.container_url)(table.id, rid, field.id)),
        };
    }
    to_wire(field.def.kind, cell, render.format)
}

/// Renders one record of a layout with its portals.
fn render_record<'s>(
    r: &AppRead<'_>,
    schema: &'s Schema,
    layout: &'s Layout,
    fields: &[&'s Field],
    row: Row,
    caller: &Caller<'_>,
    render: &Render<'_>,
) -> Result<Record<'s>, FmError> {
    let (rid, modid) = (row.rid, row.modid);
    let fields = wire_fields(&schema.tables[layout.table], fields, row, caller, render);
    let mut portals = Vec::new();
    for portal in &layout.portals {
        if let Some(wanted) = render.portals
            && !wanted.iter().any(|w| w == &portal.name)
        {
            continue;
        }
        portals.push(portal_rows(r, schema, layout, portal, rid, caller, render)?);
    }
    Ok(Record {
        rid,
        modid,
        fields,
        portals,
    })
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

fn portal_rows<'s>(
    r: &AppRead<'_>,
    schema: &'s Schema,
    layout: &Layout,
    portal: &'s Portal,
    parent: i64,
    caller: &Caller<'_>,
    render: &Render<'_>,
) -> Result<PortalRows<'s>, FmError> {
    let related = &schema.tables[portal.table];
    let mut out = PortalRows {
        name: &portal.name,
        table: &related.name,
        found: 0,
        rows: Vec::new(),
    };
    let key = local_key(schema, layout, portal, r, parent)?;
    if key == Cell::Null {
        return Ok(out);
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
    out.found = r
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
    out.rows = rows
        .into_iter()
        .map(|row| PortalRow {
            rid: row.rid,
            modid: row.modid,
            fields: wire_fields(related, &fields, row, caller, render),
        })
        .collect();
    Ok(out)
}

/// `dataInfo` of a response, in FileMaker's key order.
#[derive(Debug, Clone, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct DataInfo {
    /// The database (app) name as the client gave it.
    pub database: String,
    /// The layout.
    pub layout: String,
    /// The layout's table.
    pub table: String,
    /// Records in the table.
    pub total_record_count: u64,
    /// Records the request found.
    pub found_count: u64,
    /// Records in this response.
    pub returned_count: usize,
}

/// `dataInfo` for a response.
pub fn data_info(
    database: &str,
    layout: &Layout,
    table: &Table,
    total: u64,
    found: u64,
    returned: usize,
) -> DataInfo {
    DataInfo {
        database: database.to_owned(),
        layout: layout.name.clone(),
        table: table.name.clone(),
        total_record_count: total,
        found_count: found,
        returned_count: returned,
    }
}

/// A page of records: `(total, found, records)`, each record as JSON text.
pub type Page = (u64, u64, Vec<Box<RawValue>>);

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
        |record| {
            records.push(record.to_raw()?);
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
    mut visit: impl FnMut(Record<'_>) -> Result<(), FmError>,
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
            visit(render_record(
                r, schema, layout, &fields, row, caller, render,
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
                render_record(r, schema, layout, &fields, row, caller, render).and_then(&mut visit);
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
    let v = render_record(r, schema, layout, &fields, row, caller, render)?;
    Ok((total, 1, vec![v.to_raw()?]))
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
