//! Privilege sets: what an app account may do with each table, record and
//! field. Every Data API call asks here; nothing is allowed unless a set
//! grants it.

use std::collections::{HashMap, HashSet};

use kura_store::app_data::Filter;

use crate::error::AppsError;
use crate::schema::{
    EXTENDED_PRIVILEGES, FULL_ACCESS, FieldAccess, PrivilegeSetDef, READ_ONLY, RecordAccess, Table,
};

/// Rights on one table, by field id.
#[derive(Debug, Clone, Default)]
pub struct TableRights {
    /// Which records can be seen.
    pub view: RecordAccess,
    /// Which records can be changed.
    pub edit: RecordAccess,
    /// Whether records can be created.
    pub create: bool,
    /// Which records can be deleted.
    pub delete: RecordAccess,
    /// Per-field access by field id; missing means `Modify`.
    pub fields: HashMap<u32, FieldAccess>,
}

/// A privilege set, resolved against the schema's ids.
#[derive(Debug, Clone)]
pub struct PrivilegeSet {
    /// Its name.
    pub name: String,
    /// Extended privileges it holds.
    pub extended: HashSet<String>,
    tables: HashMap<u32, TableRights>,
    full: Option<bool>,
}

impl PrivilegeSet {
    /// The built-in sets: `[Full Access]` (everything) and
    /// `[Read-Only Access]` (every record and field, read only).
    pub fn built_in(tables: &[Table]) -> HashMap<String, PrivilegeSet> {
        let all_extended: HashSet<String> = EXTENDED_PRIVILEGES
            .iter()
            .map(|s| (*s).to_owned())
            .collect();
        let mut sets = HashMap::new();
        sets.insert(
            FULL_ACCESS.to_lowercase(),
            PrivilegeSet {
                name: FULL_ACCESS.into(),
                extended: all_extended.clone(),
                tables: HashMap::new(),
                full: Some(true),
            },
        );
        let read_only = tables
            .iter()
            .map(|t| {
                (
                    t.id,
                    TableRights {
                        view: RecordAccess::All,
                        fields: t.fields.iter().map(|f| (f.id, FieldAccess::View)).collect(),
                        ..TableRights::default()
                    },
                )
            })
            .collect();
        sets.insert(
            READ_ONLY.to_lowercase(),
            PrivilegeSet {
                name: READ_ONLY.into(),
                extended: all_extended,
                tables: read_only,
                full: Some(false),
            },
        );
        sets
    }

    /// Resolves a defined set against the schema.
    pub(crate) fn build(
        path: &str,
        def: &PrivilegeSetDef,
        tables: &[Table],
        table_index: &HashMap<String, usize>,
    ) -> Result<Self, AppsError> {
        for ext in &def.extended {
            if !EXTENDED_PRIVILEGES.contains(&ext.as_str()) {
                return Err(AppsError::invalid(
                    format!("{path}.extended"),
                    format!("unknown extended privilege `{ext}`; known: {EXTENDED_PRIVILEGES:?}"),
                ));
            }
        }
        let mut rights = HashMap::new();
        for (tname, access) in &def.tables {
            let tpath = format!("{path}.tables.{tname}");
            let table = table_index
                .get(&tname.to_lowercase())
                .map(|i| &tables[*i])
                .ok_or_else(|| {
                    AppsError::invalid(&tpath, format!("there is no table `{tname}`"))
                })?;
            let mut fields = HashMap::new();
            for (fname, fa) in &access.fields {
                let f = table.field(fname).ok_or_else(|| {
                    AppsError::invalid(
                        format!("{tpath}.fields"),
                        format!("table `{tname}` has no field `{fname}`"),
                    )
                })?;
                fields.insert(table.fields[f].id, *fa);
            }
            rights.insert(
                table.id,
                TableRights {
                    view: access.view,
                    edit: access.edit,
                    create: access.create,
                    delete: access.delete,
                    fields,
                },
            );
        }
        Ok(Self {
            name: def.name.clone(),
            extended: def.extended.iter().cloned().collect(),
            tables: rights,
            full: None,
        })
    }

    /// Whether the set holds every right.
    pub fn is_full_access(&self) -> bool {
        self.full == Some(true)
    }

    /// Whether the set may use the Data API.
    pub fn allows_data_api(&self) -> bool {
        self.extended.contains("fmrest")
    }

    fn table(&self, table: u32) -> Option<&TableRights> {
        self.tables.get(&table)
    }

    fn access_filter(access: RecordAccess, account: &str) -> Filter {
        match access {
            RecordAccess::None => Filter::Nothing,
            RecordAccess::All => Filter::All,
            RecordAccess::Own => Filter::OwnedBy(account.to_owned()),
        }
    }

    /// Records of `table` the account may see.
    pub fn view_filter(&self, table: u32, account: &str) -> Filter {
        if self.is_full_access() {
            return Filter::All;
        }
        self.table(table)
            .map_or(Filter::Nothing, |t| Self::access_filter(t.view, account))
    }

    /// Records of `table` the account may change (and see).
    pub fn edit_filter(&self, table: u32, account: &str) -> Filter {
        if self.is_full_access() {
            return Filter::All;
        }
        self.table(table).map_or(Filter::Nothing, |t| {
            both(
                Self::access_filter(t.view, account),
                Self::access_filter(t.edit, account),
            )
        })
    }

    /// Records of `table` the account may delete (and see).
    pub fn delete_filter(&self, table: u32, account: &str) -> Filter {
        if self.is_full_access() {
            return Filter::All;
        }
        self.table(table).map_or(Filter::Nothing, |t| {
            both(
                Self::access_filter(t.view, account),
                Self::access_filter(t.delete, account),
            )
        })
    }

    /// Whether the account may create records in `table`.
    pub fn can_create(&self, table: u32) -> bool {
        self.is_full_access() || self.table(table).is_some_and(|t| t.create)
    }

    /// The account's access to one field.
    pub fn field_access(&self, table: u32, field: u32) -> FieldAccess {
        if self.is_full_access() {
            return FieldAccess::Modify;
        }
        match self.table(table) {
            None => FieldAccess::None,
            Some(t) if t.view == RecordAccess::None => FieldAccess::None,
            Some(t) => {
                let a = t.fields.get(&field).copied().unwrap_or(FieldAccess::Modify);
                if a == FieldAccess::Modify && t.edit == RecordAccess::None && !t.create {
                    FieldAccess::View
                } else {
                    a
                }
            }
        }
    }
}

fn both(a: Filter, b: Filter) -> Filter {
    match (a, b) {
        (Filter::Nothing, _) | (_, Filter::Nothing) => Filter::Nothing,
        (Filter::All, x) | (x, Filter::All) => x,
        (a, b) => Filter::And(vec![a, b]),
    }
}
