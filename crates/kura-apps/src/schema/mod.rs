//! App schema: the definition document (`definition`), the ids assigned to
//! its tables and fields (`StoredSchema`), the checked, indexed form the
//! Data API works with (`Schema`), and planning a change (`plan`).

pub mod definition;
mod plan;

use std::collections::{BTreeMap, HashMap};

use serde::{Deserialize, Serialize};

pub use definition::*;
pub use plan::{Plan, plan};

use crate::error::AppsError;
use crate::privileges::PrivilegeSet;

/// Ids of one table and its fields.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TableIds {
    /// The table's id.
    pub id: u32,
    /// Field name → id.
    pub fields: BTreeMap<String, u32>,
}

/// What is stored in the app file: the definition plus the ids given to
/// its tables and fields. Ids are never reused.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct StoredSchema {
    /// The definition as last applied.
    pub definition: Definition,
    /// Table name → ids.
    pub ids: BTreeMap<String, TableIds>,
    /// The next free id.
    pub next_id: u32,
}

/// A field, checked.
#[derive(Debug, Clone)]
pub struct Field {
    /// Its id (the column).
    pub id: u32,
    /// Its definition.
    pub def: FieldDef,
    /// The values of its value list, when it has one.
    pub allowed: Option<Vec<String>>,
}

impl Field {
    /// Its name.
    pub fn name(&self) -> &str {
        &self.def.name
    }
}

/// A table, checked.
#[derive(Debug, Clone)]
pub struct Table {
    /// Its id.
    pub id: u32,
    /// Its name.
    pub name: String,
    /// Its fields, in definition order.
    pub fields: Vec<Field>,
    index: HashMap<String, usize>,
}

impl Table {
    /// A field by name (case-insensitive).
    pub fn field(&self, name: &str) -> Option<usize> {
        self.index.get(&name.to_lowercase()).copied()
    }
}

/// A portal, checked.
#[derive(Debug, Clone)]
pub struct Portal {
    /// Its object name.
    pub name: String,
    /// The related table.
    pub table: usize,
    /// The field of the layout's table the relationship matches on.
    pub local_field: usize,
    /// The related table's matching field.
    pub related_field: usize,
    /// The related fields shown.
    pub fields: Vec<usize>,
}

/// A layout, checked.
#[derive(Debug, Clone)]
pub struct Layout {
    /// Its name.
    pub name: String,
    /// Its table.
    pub table: usize,
    /// Fields on it (indexes into the table's fields).
    pub fields: Vec<usize>,
    /// Its portals.
    pub portals: Vec<Portal>,
}

impl Layout {
    /// A portal by name.
    pub fn portal(&self, name: &str) -> Option<&Portal> {
        self.portals.iter().find(|p| p.name == name)
    }
}

/// A schema, checked and indexed.
#[derive(Debug, Clone)]
pub struct Schema {
    /// The version stored with it.
    pub version: i64,
    /// What it was built from.
    pub stored: StoredSchema,
    /// Tables.
    pub tables: Vec<Table>,
    /// Layouts.
    pub layouts: Vec<Layout>,
    table_index: HashMap<String, usize>,
    layout_index: HashMap<String, usize>,
    script_index: HashMap<String, usize>,
    privilege_sets: HashMap<String, PrivilegeSet>,
}

fn key(name: &str) -> String {
    name.to_lowercase()
}

/// Checks a name of something in an app.
pub(crate) fn check_name(path: &str, name: &str) -> Result<(), AppsError> {
    if name.trim().is_empty() || name.trim() != name {
        return Err(AppsError::invalid(
            path,
            "a name must not be empty or start or end with spaces",
        ));
    }
    if name.chars().count() > 100 {
        return Err(AppsError::invalid(
            path,
            "a name has at most 100 characters",
        ));
    }
    if name.contains("::") || name.chars().any(char::is_control) {
        return Err(AppsError::invalid(
            path,
            "a name must not contain `::` or control characters",
        ));
    }
    Ok(())
}

impl Schema {
    /// An app with nothing in it yet.
    pub fn empty() -> Self {
        // An empty stored schema always checks.
        Self::build(0, StoredSchema::default()).unwrap_or_else(|_| Self {
            version: 0,
            stored: StoredSchema::default(),
            tables: Vec::new(),
            layouts: Vec::new(),
            table_index: HashMap::new(),
            layout_index: HashMap::new(),
            script_index: HashMap::new(),
            privilege_sets: PrivilegeSet::built_in(&[]),
        })
    }

    /// Checks a stored schema and indexes it.
    pub fn build(version: i64, stored: StoredSchema) -> Result<Self, AppsError> {
        let def = &stored.definition;
        let mut value_lists = HashMap::new();
        for (i, vl) in def.value_lists.iter().enumerate() {
            let path = format!("value_lists[{i}]");
            check_name(&format!("{path}.name"), &vl.name)?;
            if value_lists
                .insert(key(&vl.name), vl.values.clone())
                .is_some()
            {
                return Err(AppsError::invalid(
                    format!("{path}.name"),
                    format!("two value lists are named `{}`", vl.name),
                ));
            }
        }
        let mut tables = Vec::new();
        let mut table_index = HashMap::new();
        for (ti, t) in def.tables.iter().enumerate() {
            let path = format!("tables[{ti}]");
            check_name(&format!("{path}.name"), &t.name)?;
            let ids = stored
                .ids
                .get(&t.name)
                .ok_or_else(|| AppsError::invalid(format!("{path}.name"), "table without an id"))?;
            let mut fields = Vec::new();
            let mut index = HashMap::new();
            for (fi, f) in t.fields.iter().enumerate() {
                let fpath = format!("{path}.fields[{fi}]");
                check_field(&fpath, f)?;
                let id = *ids.fields.get(&f.name).ok_or_else(|| {
                    AppsError::invalid(format!("{fpath}.name"), "field without an id")
                })?;
                let allowed = match &f.value_list {
                    None => None,
                    Some(name) => Some(value_lists.get(&key(name)).cloned().ok_or_else(|| {
                        AppsError::invalid(
                            format!("{fpath}.value_list"),
                            format!("there is no value list `{name}`"),
                        )
                    })?),
                };
                if index.insert(key(&f.name), fields.len()).is_some() {
                    return Err(AppsError::invalid(
                        format!("{fpath}.name"),
                        format!("table `{}` has two fields named `{}`", t.name, f.name),
                    ));
                }
                fields.push(Field {
                    id,
                    def: f.clone(),
                    allowed,
                });
            }
            check_composite_indexes(&path, t, &fields, &index)?;
            if table_index.insert(key(&t.name), ti).is_some() {
                return Err(AppsError::invalid(
                    format!("{path}.name"),
                    format!("two tables are named `{}`", t.name),
                ));
            }
            tables.push(Table {
                id: ids.id,
                name: t.name.clone(),
                fields,
                index,
            });
        }
        let lookup_field =
            |path: &str, table: &str, field: &str| -> Result<(usize, usize), AppsError> {
                let t = *table_index.get(&key(table)).ok_or_else(|| {
                    AppsError::invalid(path, format!("there is no table `{table}`"))
                })?;
                let f = tables[t].field(field).ok_or_else(|| {
                    AppsError::invalid(path, format!("table `{table}` has no field `{field}`"))
                })?;
                Ok((t, f))
            };
        let mut relationships = HashMap::new();
        for (i, r) in def.relationships.iter().enumerate() {
            let path = format!("relationships[{i}]");
            check_name(&format!("{path}.name"), &r.name)?;
            let left = lookup_field(&format!("{path}.left_field"), &r.left_table, &r.left_field)?;
            let right = lookup_field(
                &format!("{path}.right_field"),
                &r.right_table,
                &r.right_field,
            )?;
            if left.0 == right.0 {
                return Err(AppsError::invalid(
                    path,
                    "a relationship joins two different tables",
                ));
            }
            for (t, f) in [left, right] {
                let kind = tables[t].fields[f].def.kind;
                if matches!(kind, FieldType::Container) || tables[t].fields[f].def.global {
                    return Err(AppsError::invalid(
                        path,
                        "relationships match on stored text, number, date, time or timestamp fields",
                    ));
                }
            }
            if relationships.insert(key(&r.name), (left, right)).is_some() {
                return Err(AppsError::invalid(
                    format!("{path}.name"),
                    format!("two relationships are named `{}`", r.name),
                ));
            }
        }
        let mut layouts = Vec::new();
        let mut layout_index = HashMap::new();
        for (li, l) in def.layouts.iter().enumerate() {
            let path = format!("layouts[{li}]");
            check_name(&format!("{path}.name"), &l.name)?;
            let t = *table_index.get(&key(&l.table)).ok_or_else(|| {
                AppsError::invalid(
                    format!("{path}.table"),
                    format!("there is no table `{}`", l.table),
                )
            })?;
            let fields = pick_fields(&format!("{path}.fields"), &tables[t], &l.fields)?;
            let mut portals: Vec<Portal> = Vec::new();
            for (pi, p) in l.portals.iter().enumerate() {
                let ppath = format!("{path}.portals[{pi}]");
                check_name(&format!("{ppath}.name"), &p.name)?;
                let (left, right) = relationships.get(&key(&p.relationship)).ok_or_else(|| {
                    AppsError::invalid(
                        format!("{ppath}.relationship"),
                        format!("there is no relationship `{}`", p.relationship),
                    )
                })?;
                let ((lt, lf), (rt, rf)) = if left.0 == t {
                    (*left, *right)
                } else if right.0 == t {
                    (*right, *left)
                } else {
                    return Err(AppsError::invalid(
                        format!("{ppath}.relationship"),
                        format!(
                            "relationship `{}` does not involve table `{}`",
                            p.relationship, l.table
                        ),
                    ));
                };
                debug_assert_eq!(lt, t);
                if portals.iter().any(|q| q.name == p.name) {
                    return Err(AppsError::invalid(
                        format!("{ppath}.name"),
                        format!("two portals are named `{}`", p.name),
                    ));
                }
                portals.push(Portal {
                    name: p.name.clone(),
                    table: rt,
                    local_field: lf,
                    related_field: rf,
                    fields: pick_fields(&format!("{ppath}.fields"), &tables[rt], &p.fields)?,
                });
            }
            if layout_index.insert(key(&l.name), li).is_some() {
                return Err(AppsError::invalid(
                    format!("{path}.name"),
                    format!("two layouts are named `{}`", l.name),
                ));
            }
            layouts.push(Layout {
                name: l.name.clone(),
                table: t,
                fields,
                portals,
            });
        }
        let mut script_index = HashMap::new();
        for (i, s) in def.scripts.iter().enumerate() {
            let path = format!("scripts[{i}]");
            check_name(&format!("{path}.name"), &s.name)?;
            crate::script::check(&path, s, &layout_index)?;
            if script_index.insert(key(&s.name), i).is_some() {
                return Err(AppsError::invalid(
                    format!("{path}.name"),
                    format!("two scripts are named `{}`", s.name),
                ));
            }
        }
        let mut privilege_sets = PrivilegeSet::built_in(&tables);
        for (i, p) in def.privilege_sets.iter().enumerate() {
            let path = format!("privilege_sets[{i}]");
            check_name(&format!("{path}.name"), &p.name)?;
            let set = PrivilegeSet::build(&path, p, &tables, &table_index)?;
            if privilege_sets.insert(key(&p.name), set).is_some() {
                return Err(AppsError::invalid(
                    format!("{path}.name"),
                    format!(
                        "privilege set `{}` exists already (built-in or twice)",
                        p.name
                    ),
                ));
            }
        }
        Ok(Self {
            version,
            stored,
            tables,
            layouts,
            table_index,
            layout_index,
            script_index,
            privilege_sets,
        })
    }

    /// The (table id, field id) of every field whose index is made when a
    /// find, sort or portal first uses it.
    pub fn indexed_on_first_use(&self) -> Vec<(u32, u32)> {
        self.tables
            .iter()
            .flat_map(|t| {
                t.fields
                    .iter()
                    .filter(|f| f.def.indexing() == Indexing::OnFirstUse)
                    .map(move |f| (t.id, f.id))
            })
            .collect()
    }

    /// The indexes declared on several fields: (table id, field ids in
    /// index order). `Schema::build` has checked that every name is a
    /// field; an index naming one that is not would be left out whole, so
    /// no later field is ever taken for its first.
    pub fn composite_indexes(&self) -> Vec<(u32, Vec<u32>)> {
        self.tables
            .iter()
            .zip(&self.stored.definition.tables)
            .flat_map(|(t, def)| {
                def.indexes.iter().filter_map(move |names| {
                    let ids = names
                        .iter()
                        .map(|n| t.field(n).map(|i| t.fields[i].id))
                        .collect::<Option<Vec<u32>>>()?;
                    Some((t.id, ids))
                })
            })
            .collect()
    }

    /// A table by name.
    pub fn table(&self, name: &str) -> Option<&Table> {
        self.table_index.get(&key(name)).map(|i| &self.tables[*i])
    }

    /// A layout by name.
    pub fn layout(&self, name: &str) -> Option<&Layout> {
        self.layout_index.get(&key(name)).map(|i| &self.layouts[*i])
    }

    /// A script by name.
    pub fn script(&self, name: &str) -> Option<&ScriptDef> {
        self.script_index
            .get(&key(name))
            .map(|i| &self.stored.definition.scripts[*i])
    }

    /// A privilege set by name.
    pub fn privilege_set(&self, name: &str) -> Option<&PrivilegeSet> {
        self.privilege_sets.get(&key(name))
    }

    /// Names of every privilege set.
    pub fn privilege_set_names(&self) -> Vec<String> {
        let mut names: Vec<String> = self
            .privilege_sets
            .values()
            .map(|p| p.name.clone())
            .collect();
        names.sort();
        names
    }

    /// A value list's values.
    pub fn value_list(&self, name: &str) -> Option<&ValueListDef> {
        self.stored
            .definition
            .value_lists
            .iter()
            .find(|v| v.name.eq_ignore_ascii_case(name))
    }
}

fn pick_fields(path: &str, table: &Table, names: &[String]) -> Result<Vec<usize>, AppsError> {
    if names.is_empty() {
        return Ok((0..table.fields.len()).collect());
    }
    let mut out = Vec::with_capacity(names.len());
    for name in names {
        let f = table.field(name).ok_or_else(|| {
            AppsError::invalid(
                path,
                format!("table `{}` has no field `{name}`", table.name),
            )
        })?;
        if out.contains(&f) {
            return Err(AppsError::invalid(
                path,
                format!("field `{name}` is listed twice"),
            ));
        }
        out.push(f);
    }
    Ok(out)
}

/// The most fields one declared index may name.
pub const MAX_INDEX_FIELDS: usize = 8;

/// Checks a table's declared indexes: each names 2 to
/// [`MAX_INDEX_FIELDS`] distinct stored, indexable fields of the table,
/// and no two name the same fields in the same order.
fn check_composite_indexes(
    path: &str,
    t: &TableDef,
    fields: &[Field],
    index: &HashMap<String, usize>,
) -> Result<(), AppsError> {
    let mut seen = std::collections::HashSet::new();
    for (xi, names) in t.indexes.iter().enumerate() {
        let xpath = format!("{path}.indexes[{xi}]");
        if !(2..=MAX_INDEX_FIELDS).contains(&names.len()) {
            return Err(AppsError::invalid(
                xpath,
                format!(
                    "an index names 2 to {MAX_INDEX_FIELDS} fields (one field is indexed with its own `indexed = true`)"
                ),
            ));
        }
        let mut ids = Vec::with_capacity(names.len());
        for name in names {
            let f = index.get(&key(name)).map(|i| &fields[*i]).ok_or_else(|| {
                AppsError::invalid(
                    xpath.clone(),
                    format!("table `{}` has no field `{name}`", t.name),
                )
            })?;
            if f.def.global || f.def.kind == FieldType::Container {
                return Err(AppsError::invalid(
                    xpath,
                    format!("`{name}` is a global or container field, which cannot be indexed"),
                ));
            }
            if ids.contains(&f.id) {
                return Err(AppsError::invalid(
                    xpath,
                    format!("the index names `{name}` twice"),
                ));
            }
            ids.push(f.id);
        }
        if !seen.insert(ids) {
            return Err(AppsError::invalid(
                xpath,
                "the same index is declared twice",
            ));
        }
    }
    Ok(())
}

fn check_field(path: &str, f: &FieldDef) -> Result<(), AppsError> {
    check_name(&format!("{path}.name"), &f.name)?;
    let bad = |what: &str| Err(AppsError::invalid(path, what.to_owned()));
    if f.kind == FieldType::Container
        && (f.unique || f.value_list.is_some() || f.auto_enter.is_some())
    {
        return bad("a container field cannot be unique, have a value list or auto-enter a value");
    }
    if f.global && (f.unique || f.required || f.auto_enter.is_some()) {
        return bad("a global field cannot be unique, required or auto-entered");
    }
    if let Some(max) = f.max_length
        && (max == 0 || f.kind != FieldType::Text)
    {
        return bad("max_length is a positive number of characters, for text fields");
    }
    match &f.auto_enter {
        Some(AutoEnter::Serial { increment, .. })
            if !matches!(f.kind, FieldType::Number | FieldType::Text) || *increment == 0 =>
        {
            return bad("serial numbers go into number or text fields, with a non-zero increment");
        }
        Some(AutoEnter::CreationTimestamp | AutoEnter::ModificationTimestamp)
            if f.kind != FieldType::Timestamp =>
        {
            return bad("creation and modification timestamps go into timestamp fields");
        }
        Some(AutoEnter::CreationAccount | AutoEnter::ModificationAccount)
            if f.kind != FieldType::Text =>
        {
            return bad("account names go into text fields");
        }
        Some(AutoEnter::Constant(v))
            if crate::value::parse_text(f.kind, v, crate::value::DateFormat::Iso).is_err() =>
        {
            return bad("the constant auto-enter value does not fit the field's type");
        }
        _ => {}
    }
    Ok(())
}
