//! Planning a schema change: which ids the new definition's tables and
//! fields get, and which physical changes (`Ddl`) bring the app file from
//! the old schema to the new one. Tables and fields are matched by name, or
//! by `renamed_from`; whatever is not matched is new or dropped.

use std::collections::{BTreeMap, BTreeSet};

use kura_store::app_data::{ColumnKind, Ddl};

use super::{Definition, FieldDef, FieldType, Schema, StoredSchema, TableIds};
use crate::error::AppsError;

/// A checked change.
#[derive(Debug, Clone)]
pub struct Plan {
    /// The schema after the change.
    pub next: StoredSchema,
    /// Physical changes, in order.
    pub ddl: Vec<Ddl>,
    /// Columns the change removes (table id, field id, "table::field"):
    /// the caller refuses when any holds data, unless loss is allowed.
    pub drops: Vec<(u32, u32, String)>,
    /// Tables the change removes (id, name).
    pub dropped_tables: Vec<(u32, String)>,
    /// What changes, for people.
    pub summary: Vec<String>,
}

fn column_kind(kind: FieldType) -> ColumnKind {
    match kind {
        FieldType::Text | FieldType::Container => ColumnKind::Text,
        FieldType::Number => ColumnKind::Number,
        FieldType::Date | FieldType::Time | FieldType::Timestamp => ColumnKind::Temporal,
    }
}

fn stored(f: &FieldDef) -> bool {
    !f.global
}

/// Plans the change from `old` to `definition`, checking the result.
pub fn plan(old: &StoredSchema, definition: Definition) -> Result<Plan, AppsError> {
    let mut next_id = old.next_id.max(1);
    let mut ids: BTreeMap<String, TableIds> = BTreeMap::new();
    let mut ddl = Vec::new();
    let mut drops = Vec::new();
    let mut summary = Vec::new();
    let mut kept_tables = BTreeSet::new();
    let old_def: BTreeMap<&str, &super::TableDef> = old
        .definition
        .tables
        .iter()
        .map(|t| (t.name.as_str(), t))
        .collect();

    for (ti, table) in definition.tables.iter().enumerate() {
        let path = format!("tables[{ti}]");
        let source = old.ids.get_key_value(&table.name).or_else(|| {
            table
                .renamed_from
                .as_ref()
                .and_then(|r| old.ids.get_key_value(r))
        });
        let Some((old_name, old_ids)) = source else {
            let id = next_id;
            next_id += 1;
            ddl.push(Ddl::CreateTable { table: id });
            let mut fields = BTreeMap::new();
            for f in &table.fields {
                let fid = next_id;
                next_id += 1;
                add_field(&mut ddl, id, fid, f);
                fields.insert(f.name.clone(), fid);
            }
            summary.push(format!("create table `{}`", table.name));
            if ids
                .insert(table.name.clone(), TableIds { id, fields })
                .is_some()
            {
                return Err(AppsError::invalid(
                    format!("{path}.name"),
                    format!("two tables are named `{}`", table.name),
                ));
            }
            continue;
        };
        if !kept_tables.insert(old_name.clone()) {
            return Err(AppsError::invalid(
                format!("{path}.renamed_from"),
                format!("table `{old_name}` is taken over twice"),
            ));
        }
        if old_name != &table.name {
            summary.push(format!("rename table `{old_name}` to `{}`", table.name));
        }
        let tid = old_ids.id;
        let old_fields: BTreeMap<&str, &FieldDef> = old_def
            .get(old_name.as_str())
            .map(|t| t.fields.iter().map(|f| (f.name.as_str(), f)).collect())
            .unwrap_or_default();
        let mut fields = BTreeMap::new();
        let mut kept_fields = BTreeSet::new();
        for (fi, f) in table.fields.iter().enumerate() {
            let fpath = format!("{path}.fields[{fi}]");
            let matched = old_ids.fields.get_key_value(&f.name).or_else(|| {
                f.renamed_from
                    .as_ref()
                    .and_then(|r| old_ids.fields.get_key_value(r))
            });
            let fid = match matched {
                Some((old_fname, fid)) => {
                    if !kept_fields.insert(old_fname.clone()) {
                        return Err(AppsError::invalid(
                            format!("{fpath}.renamed_from"),
                            format!("field `{old_fname}` is taken over twice"),
                        ));
                    }
                    let Some(before) = old_fields.get(old_fname.as_str()) else {
                        return Err(AppsError::invalid(fpath, "stored schema lacks this field"));
                    };
                    if old_fname != &f.name {
                        summary.push(format!(
                            "rename field `{}::{old_fname}` to `{}`",
                            table.name, f.name
                        ));
                    }
                    if column_kind(before.kind) != column_kind(f.kind) || before.global != f.global
                    {
                        // A different storage class: the values cannot be
                        // kept, so this is a drop and an add.
                        if stored(before) {
                            ddl.push(Ddl::DropColumn {
                                table: tid,
                                col: *fid,
                            });
                            drops.push((tid, *fid, format!("{}::{}", table.name, f.name)));
                        }
                        let nfid = next_id;
                        next_id += 1;
                        add_field(&mut ddl, tid, nfid, f);
                        summary.push(format!(
                            "change type of `{}::{}` (its values are discarded)",
                            table.name, f.name
                        ));
                        nfid
                    } else {
                        if stored(f) && before.wants_index() != f.wants_index()
                            || before.unique != f.unique
                        {
                            if f.wants_index() {
                                ddl.push(Ddl::CreateIndex {
                                    table: tid,
                                    col: *fid,
                                    unique: f.unique,
                                });
                            } else {
                                ddl.push(Ddl::DropIndex {
                                    table: tid,
                                    col: *fid,
                                });
                            }
                        }
                        if let Some(super::AutoEnter::Serial { next, .. }) = &f.auto_enter
                            && !matches!(before.auto_enter, Some(super::AutoEnter::Serial { .. }))
                        {
                            ddl.push(Ddl::SetSerial {
                                table: tid,
                                col: *fid,
                                next: *next,
                            });
                        }
                        if before != &f {
                            summary.push(format!("change field `{}::{}`", table.name, f.name));
                        }
                        *fid
                    }
                }
                None => {
                    let fid = next_id;
                    next_id += 1;
                    add_field(&mut ddl, tid, fid, f);
                    summary.push(format!("add field `{}::{}`", table.name, f.name));
                    fid
                }
            };
            if fields.insert(f.name.clone(), fid).is_some() {
                return Err(AppsError::invalid(
                    format!("{fpath}.name"),
                    format!("table `{}` has two fields named `{}`", table.name, f.name),
                ));
            }
        }
        for (fname, fid) in &old_ids.fields {
            if !kept_fields.contains(fname) {
                if old_fields.get(fname.as_str()).is_some_and(|f| stored(f)) {
                    ddl.push(Ddl::DropColumn {
                        table: tid,
                        col: *fid,
                    });
                    drops.push((tid, *fid, format!("{}::{fname}", table.name)));
                }
                summary.push(format!("drop field `{}::{fname}`", table.name));
            }
        }
        if ids
            .insert(table.name.clone(), TableIds { id: tid, fields })
            .is_some()
        {
            return Err(AppsError::invalid(
                format!("{path}.name"),
                format!("two tables are named `{}`", table.name),
            ));
        }
    }
    let mut dropped_tables = Vec::new();
    for (name, t) in &old.ids {
        if !kept_tables.contains(name) {
            ddl.push(Ddl::DropTable { table: t.id });
            dropped_tables.push((t.id, name.clone()));
            summary.push(format!("drop table `{name}`"));
        }
    }
    let old_other = (
        &old.definition.relationships,
        &old.definition.layouts,
        &old.definition.value_lists,
        &old.definition.scripts,
        &old.definition.privilege_sets,
    );
    let new_other = (
        &definition.relationships,
        &definition.layouts,
        &definition.value_lists,
        &definition.scripts,
        &definition.privilege_sets,
    );
    if old_other != new_other {
        summary
            .push("update relationships, layouts, value lists, scripts or privilege sets".into());
    }
    let next = StoredSchema {
        definition,
        ids,
        next_id,
    };
    // The result must check before anything is applied.
    Schema::build(0, next.clone())?;
    Ok(Plan {
        next,
        ddl,
        drops,
        dropped_tables,
        summary,
    })
}

fn add_field(ddl: &mut Vec<Ddl>, table: u32, col: u32, f: &FieldDef) {
    if !stored(f) {
        return;
    }
    ddl.push(Ddl::AddColumn {
        table,
        col,
        kind: column_kind(f.kind),
    });
    if f.wants_index() {
        ddl.push(Ddl::CreateIndex {
            table,
            col,
            unique: f.unique,
        });
    }
    if let Some(super::AutoEnter::Serial { next, .. }) = &f.auto_enter {
        ddl.push(Ddl::SetSerial {
            table,
            col,
            next: *next,
        });
    }
}
