//! Planning a schema change: which ids the new definition's tables and
//! fields get, and which physical changes (`Ddl`) bring the app file from
//! the old schema to the new one. Tables and fields are matched by name, or
//! by `renamed_from`; whatever is not matched is new or dropped.

use std::collections::{BTreeMap, BTreeSet};

use kura_store::app_data::{ColumnKind, Ddl};

use super::{
    Definition, FieldDef, FieldType, Indexing, Schema, StoredSchema, TableDef, TableIds, key,
};
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
    // Declared indexes on several fields are dropped before anything else
    // (SQLite refuses to drop a column an index still names) and created
    // after everything else (their columns may be new).
    let mut composite_drops = Vec::new();
    let mut composite_creates = Vec::new();
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
            for cols in composite_ids(table, &fields) {
                summary.push(format!(
                    "index `{}` on {}",
                    table.name,
                    names_of(&fields, &cols)
                ));
                composite_creates.push(Ddl::CreateCompositeIndex { table: id, cols });
            }
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
                        if stored(f) {
                            index_change(&mut ddl, tid, *fid, before, f);
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
        if let Some(old_table) = old_def.get(old_name.as_str()) {
            let before = composite_ids(old_table, &old_ids.fields);
            let after = composite_ids(table, &fields);
            for cols in before.difference(&after) {
                summary.push(format!(
                    "drop index `{}` on {}",
                    table.name,
                    names_of(&old_ids.fields, cols)
                ));
                composite_drops.push(Ddl::DropCompositeIndex {
                    table: tid,
                    cols: cols.clone(),
                });
            }
            for cols in after.difference(&before) {
                summary.push(format!(
                    "index `{}` on {}",
                    table.name,
                    names_of(&fields, cols)
                ));
                composite_creates.push(Ddl::CreateCompositeIndex {
                    table: tid,
                    cols: cols.clone(),
                });
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
    let ddl: Vec<Ddl> = composite_drops
        .into_iter()
        .chain(ddl)
        .chain(composite_creates)
        .collect();
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
    if f.indexing() == Indexing::Always {
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

/// The index changes of a kept field. A field that becomes unique or not,
/// or always indexed, gets its index (re)made; one that is never to be
/// indexed loses it. A field that goes from always to on-first-use keeps
/// the index it has: a find would make it again.
fn index_change(ddl: &mut Vec<Ddl>, table: u32, col: u32, before: &FieldDef, f: &FieldDef) {
    let (was, now) = (before.indexing(), f.indexing());
    let remake = before.unique != f.unique || (was != now && now == Indexing::Always);
    if now == Indexing::Never && (was != now || remake) {
        ddl.push(Ddl::DropIndex { table, col });
    } else if remake {
        ddl.push(Ddl::CreateIndex {
            table,
            col,
            unique: f.unique,
        });
    }
}

/// The column ids of each index `table` declares on several fields, by its
/// field-name → id map (a name that matches no field is `Schema::build`'s
/// to report).
fn composite_ids(table: &TableDef, ids: &BTreeMap<String, u32>) -> BTreeSet<Vec<u32>> {
    table
        .indexes
        .iter()
        .map(|names| {
            names
                .iter()
                .filter_map(|n| {
                    let f = table.fields.iter().find(|f| key(&f.name) == key(n))?;
                    ids.get(&f.name).copied()
                })
                .collect()
        })
        .collect()
}

/// "(a, b)": the field names of an index's columns, for the summary.
fn names_of(ids: &BTreeMap<String, u32>, cols: &[u32]) -> String {
    let names: Vec<&str> = cols
        .iter()
        .filter_map(|c| ids.iter().find(|(_, id)| *id == c).map(|(n, _)| n.as_str()))
        .collect();
    format!("({})", names.join(", "))
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn definition(fields: serde_json::Value, indexes: serde_json::Value) -> Definition {
        serde_json::from_value(json!({
            "tables": [{ "name": "contacts", "fields": fields, "indexes": indexes }]
        }))
        .unwrap()
    }

    fn contacts(age: serde_json::Value) -> serde_json::Value {
        let mut age_field = json!({ "name": "age", "type": "number" });
        if let (Some(o), Some(extra)) = (age_field.as_object_mut(), age.as_object()) {
            o.extend(extra.clone());
        }
        json!([
            { "name": "name", "type": "text" },
            age_field,
            { "name": "active", "type": "number" },
            { "name": "photo", "type": "container" },
            { "name": "email", "type": "text", "unique": true }
        ])
    }

    fn applied(def: Definition) -> StoredSchema {
        plan(&StoredSchema::default(), def).unwrap().next
    }

    #[test]
    fn only_unique_and_always_indexed_fields_get_an_index_when_created() {
        let p = plan(
            &StoredSchema::default(),
            definition(contacts(json!({ "indexed": true })), json!([])),
        )
        .unwrap();
        let ids = p.next.ids["contacts"].fields.clone();
        let indexes: Vec<(u32, bool)> = p
            .ddl
            .iter()
            .filter_map(|d| match d {
                Ddl::CreateIndex { col, unique, .. } => Some((*col, *unique)),
                _ => None,
            })
            .collect();
        assert_eq!(indexes, vec![(ids["age"], false), (ids["email"], true)]);
        let schema = Schema::build(1, p.next).unwrap();
        let t = schema.tables[0].id;
        // Name and active wait for a find; the container never gets one.
        assert_eq!(
            schema.indexed_on_first_use(),
            vec![(t, ids["name"]), (t, ids["active"])]
        );
    }

    #[test]
    fn indexing_changes_make_or_drop_the_index_and_on_first_use_keeps_it() {
        let old = applied(definition(contacts(json!({})), json!([])));
        let (t, age) = (old.ids["contacts"].id, old.ids["contacts"].fields["age"]);
        let ddl = |age_opts| {
            plan(&old, definition(contacts(age_opts), json!([])))
                .unwrap()
                .ddl
        };
        assert_eq!(
            ddl(json!({ "indexed": true })),
            vec![Ddl::CreateIndex {
                table: t,
                col: age,
                unique: false
            }]
        );
        assert_eq!(
            ddl(json!({ "indexed": false })),
            vec![Ddl::DropIndex { table: t, col: age }]
        );
        assert_eq!(
            ddl(json!({ "unique": true })),
            vec![Ddl::CreateIndex {
                table: t,
                col: age,
                unique: true
            }]
        );
        let always = applied(definition(contacts(json!({ "indexed": true })), json!([])));
        // Always → on first use: the index stays (a find would remake it).
        assert!(
            plan(&always, definition(contacts(json!({})), json!([])))
                .unwrap()
                .ddl
                .is_empty()
        );
    }

    #[test]
    fn declared_indexes_are_dropped_first_and_made_last() {
        let old = applied(definition(contacts(json!({})), json!([["age", "active"]])));
        let t = old.ids["contacts"].id;
        let f = &old.ids["contacts"].fields;
        let (age, active) = (f["age"], f["active"]);
        // The loaded schema names the index by field ids, in its order,
        // for the first-use indexer (`AppData::index_on_first_use`).
        assert_eq!(
            Schema::build(1, old.clone()).unwrap().composite_indexes(),
            vec![(t, vec![age, active])]
        );
        // Same index, names in another case: nothing to do.
        assert!(
            plan(
                &old,
                definition(contacts(json!({})), json!([["AGE", "Active"]]))
            )
            .unwrap()
            .ddl
            .is_empty()
        );
        // Changing age to text replaces its column: the old index goes
        // before the column, the new one comes after the new column.
        let mut fields = contacts(json!({}));
        fields[1]["type"] = json!("text");
        let p = plan(&old, definition(fields, json!([["age", "active"]]))).unwrap();
        let new_age = p.next.ids["contacts"].fields["age"];
        assert_ne!(new_age, age);
        assert_eq!(
            p.ddl.first(),
            Some(&Ddl::DropCompositeIndex {
                table: t,
                cols: vec![age, active]
            })
        );
        assert_eq!(
            p.ddl.last(),
            Some(&Ddl::CreateCompositeIndex {
                table: t,
                cols: vec![new_age, active]
            })
        );
        assert!(
            p.summary
                .iter()
                .any(|s| s == "index `contacts` on (age, active)")
        );
        // Dropping the declaration drops the index and nothing else.
        assert_eq!(
            plan(&old, definition(contacts(json!({})), json!([])))
                .unwrap()
                .ddl,
            vec![Ddl::DropCompositeIndex {
                table: t,
                cols: vec![age, active]
            }]
        );
    }

    #[test]
    fn bad_declared_indexes_are_refused_with_their_path() {
        for (indexes, says) in [
            (json!([["age"]]), "2 to 8 fields"),
            (json!([["age", "nope"]]), "no field `nope`"),
            (json!([["age", "photo"]]), "cannot be indexed"),
            (json!([["age", "Age"]]), "names `Age` twice"),
            (
                json!([["age", "active"], ["age", "active"]]),
                "declared twice",
            ),
        ] {
            let err = plan(
                &StoredSchema::default(),
                definition(contacts(json!({})), indexes.clone()),
            )
            .unwrap_err()
            .to_string();
            assert!(err.contains("tables[0].indexes["), "{indexes}: {err}");
            assert!(err.contains(says), "{indexes}: {err}");
        }
    }
}
