//! The Data API's write operations: create, edit (with portal rows and
//! related deletions), duplicate, delete, container upload.

use kura_store::app_data::{AppWrite, Cell, ChangeKind, ContainerCell, Filter};
use serde_json::{Map, Value};
use time::OffsetDateTime;

use super::write::{apply_update, field_values, insert, log_change, parse_id, update, validate};
use super::{Access, Caller, local_key, require, row_matches};
use crate::error::FmError;
use crate::schema::{FieldAccess, FieldType, Layout, Schema};
use crate::value::{DateFormat, parse_json};

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
                    insert(w, related, &values, caller, now, ChangeKind::Create)?;
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
    now: OffsetDateTime,
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
        let modid = w
            .delete(related.id, rid)
            .map_err(|e| FmError::internal(&e))?
            .ok_or_else(|| FmError::code(101))?;
        log_change(w, related.id, rid, ChangeKind::Delete, modid, caller, now)?;
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
    let values = create_values(schema, layout, caller, field_data, format)?;
    create_checked(w, schema, layout, caller, values, portal_data, format, now)
}

/// A new record's given values, parsed and validated.
#[derive(Debug)]
pub struct CreateValues(Vec<(usize, Cell)>);

/// The part of [`create`] that needs no transaction: the caller may create
/// records in the layout's table, and every given value parses and passes
/// its field's validation. Run on the request's own thread, it keeps that
/// work off the app's writer thread, which every write of the app waits
/// for. Pass the result, with the same schema, layout and caller, to
/// [`create_checked`].
pub fn create_values(
    schema: &Schema,
    layout: &Layout,
    caller: &Caller<'_>,
    field_data: &Map<String, Value>,
    format: DateFormat,
) -> Result<CreateValues, FmError> {
    let table = &schema.tables[layout.table];
    if !caller.privileges.can_create(table.id) {
        return Err(FmError::code(200));
    }
    Ok(CreateValues(field_values(
        schema, layout, caller, field_data, format,
    )?))
}

/// The rest of [`create`]: auto-entered values, uniqueness, the insert,
/// its change entry and the portal rows.
#[allow(clippy::too_many_arguments)]
pub fn create_checked(
    w: &AppWrite<'_>,
    schema: &Schema,
    layout: &Layout,
    caller: &Caller<'_>,
    values: CreateValues,
    portal_data: &Map<String, Value>,
    format: DateFormat,
    now: OffsetDateTime,
) -> Result<(i64, i64), FmError> {
    let table = &schema.tables[layout.table];
    let (rid, modid) = insert(w, table, &values.0, caller, now, ChangeKind::Create)?;
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
    delete_related(w, schema, layout, rid, field_data, caller, now)?;
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
    insert(w, table, &given, caller, now, ChangeKind::Duplicate)
}

/// Deletes a record the caller may delete.
pub fn delete(
    w: &AppWrite<'_>,
    schema: &Schema,
    layout: &Layout,
    caller: &Caller<'_>,
    rid: i64,
    now: OffsetDateTime,
) -> Result<(), FmError> {
    let table = &schema.tables[layout.table];
    let r = w.read();
    require(&r, table.id, rid, caller, Access::Delete)?;
    let modid = w
        .delete(table.id, rid)
        .map_err(|e| FmError::internal(&e))?
        .ok_or_else(|| FmError::code(101))?;
    log_change(w, table.id, rid, ChangeKind::Delete, modid, caller, now)
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
