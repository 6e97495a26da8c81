//! The app definition document: what `kura app apply app.toml|json` and
//! `PUT /api/v1/apps/{app}/schema` take. It names everything; ids are
//! assigned when it is applied (see `plan`).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::error::AppsError;

/// A whole app: tables, relationships, layouts, value lists, scripts and
/// privilege sets.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Definition {
    /// Tables and their fields.
    #[serde(default)]
    pub tables: Vec<TableDef>,
    /// Field-equals-field relationships between tables.
    #[serde(default)]
    pub relationships: Vec<RelationshipDef>,
    /// Layouts: what the Data API addresses.
    #[serde(default)]
    pub layouts: Vec<LayoutDef>,
    /// Named lists of allowed values.
    #[serde(default)]
    pub value_lists: Vec<ValueListDef>,
    /// Named scripts.
    #[serde(default)]
    pub scripts: Vec<ScriptDef>,
    /// Privilege sets beyond the built-in `[Full Access]` and
    /// `[Read-Only Access]`.
    #[serde(default)]
    pub privilege_sets: Vec<PrivilegeSetDef>,
}

/// A table.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TableDef {
    /// Its name.
    pub name: String,
    /// The table's previous name, to rename it without losing records.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub renamed_from: Option<String>,
    /// Its fields.
    #[serde(default)]
    pub fields: Vec<FieldDef>,
    /// Indexes on several fields, each the field names in order: for finds
    /// that combine those fields (one range or equality on each), which a
    /// one-field index answers only in part.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub indexes: Vec<Vec<String>>,
}

/// A field's type.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FieldType {
    /// Text.
    Text,
    /// A number.
    Number,
    /// A calendar date.
    Date,
    /// A time of day.
    Time,
    /// A date and time.
    Timestamp,
    /// A file.
    Container,
}

impl FieldType {
    /// The name FileMaker's layout metadata gives the type (`result`).
    pub fn fm_result(self) -> &'static str {
        match self {
            FieldType::Text => "text",
            FieldType::Number => "number",
            FieldType::Date => "date",
            FieldType::Time => "time",
            FieldType::Timestamp => "timeStamp",
            FieldType::Container => "container",
        }
    }
}

/// A value the field gets automatically.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum AutoEnter {
    /// The next serial number, on creation.
    Serial {
        /// The first value given (for a new field).
        #[serde(default = "one")]
        next: i64,
        /// The step between values.
        #[serde(default = "one")]
        increment: i64,
    },
    /// The time the record was created.
    CreationTimestamp,
    /// The time the record was last changed.
    ModificationTimestamp,
    /// The account that created the record.
    CreationAccount,
    /// The account that last changed the record.
    ModificationAccount,
    /// A fixed value, on creation.
    Constant(String),
}

fn one() -> i64 {
    1
}

/// A field.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FieldDef {
    /// Its name.
    pub name: String,
    /// Its type.
    #[serde(rename = "type")]
    pub kind: FieldType,
    /// The field's previous name, to rename it without losing values.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub renamed_from: Option<String>,
    /// A value is required.
    #[serde(default)]
    pub required: bool,
    /// No two records may hold the same value.
    #[serde(default)]
    pub unique: bool,
    /// At most this many characters.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_length: Option<u32>,
    /// Values must come from this value list.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value_list: Option<String>,
    /// A value entered automatically.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auto_enter: Option<AutoEnter>,
    /// One value per session rather than per record.
    #[serde(default)]
    pub global: bool,
    /// `true`: always keep an index; `false`: never; unset: the index is
    /// made the first time a find, sort or portal uses the field (what
    /// FileMaker calls "automatically create indexes as needed"). Unique
    /// fields are always indexed; containers and globals never are.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub indexed: Option<bool>,
}

/// How a field is indexed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Indexing {
    /// Its index is kept from the start.
    Always,
    /// Its index is made when a find, sort or portal first uses it.
    OnFirstUse,
    /// It has none.
    Never,
}

impl FieldDef {
    /// How the field is indexed.
    pub fn indexing(&self) -> Indexing {
        if self.global || self.kind == FieldType::Container {
            Indexing::Never
        } else if self.unique {
            Indexing::Always
        } else {
            match self.indexed {
                Some(true) => Indexing::Always,
                Some(false) => Indexing::Never,
                None => Indexing::OnFirstUse,
            }
        }
    }
}

/// `left_table::left_field = right_table::right_field`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RelationshipDef {
    /// Its name.
    pub name: String,
    /// One side's table.
    pub left_table: String,
    /// One side's field.
    pub left_field: String,
    /// The other side's table.
    pub right_table: String,
    /// The other side's field.
    pub right_field: String,
}

/// A layout: one table and the fields and portals shown on it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LayoutDef {
    /// Its name.
    pub name: String,
    /// Its table.
    pub table: String,
    /// The table's fields on the layout (all of them when empty).
    #[serde(default)]
    pub fields: Vec<String>,
    /// Portals of related records.
    #[serde(default)]
    pub portals: Vec<PortalDef>,
}

/// A portal: related records through a relationship.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PortalDef {
    /// The portal's object name (the key in `portalData`).
    pub name: String,
    /// The relationship it follows from the layout's table.
    pub relationship: String,
    /// The related table's fields shown (all when empty).
    #[serde(default)]
    pub fields: Vec<String>,
}

/// A value list.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ValueListDef {
    /// Its name.
    pub name: String,
    /// The allowed values, in order.
    pub values: Vec<String>,
}

/// A script: a list of safe steps (see `crate::script`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScriptDef {
    /// Its name.
    pub name: String,
    /// Its steps, run in order.
    #[serde(default)]
    pub steps: Vec<crate::script::Step>,
}

/// Access to records of a table.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RecordAccess {
    /// None.
    #[default]
    None,
    /// Every record.
    All,
    /// Only records the current account created.
    Own,
}

/// Access to a field.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FieldAccess {
    /// Absent from responses; cannot be written.
    None,
    /// Readable only.
    View,
    /// Readable and writable.
    #[default]
    Modify,
}

/// A privilege set's rights on one table.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TableAccessDef {
    /// Which records can be seen.
    #[serde(default)]
    pub view: RecordAccess,
    /// Which records can be changed.
    #[serde(default)]
    pub edit: RecordAccess,
    /// Whether records can be created.
    #[serde(default)]
    pub create: bool,
    /// Which records can be deleted.
    #[serde(default)]
    pub delete: RecordAccess,
    /// Per-field access; unlisted fields are `modify` (limited by `edit`).
    #[serde(default)]
    pub fields: BTreeMap<String, FieldAccess>,
}

/// A privilege set.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PrivilegeSetDef {
    /// Its name.
    pub name: String,
    /// Extended privileges: `fmrest` (Data API), `fmodata`, `fmwebdirect`.
    #[serde(default)]
    pub extended: Vec<String>,
    /// Rights per table; unlisted tables are not accessible.
    #[serde(default)]
    pub tables: BTreeMap<String, TableAccessDef>,
}

/// The extended privileges Kura knows.
pub const EXTENDED_PRIVILEGES: &[&str] = &["fmrest", "fmodata", "fmwebdirect"];

/// The built-in privilege set with every right.
pub const FULL_ACCESS: &str = "[Full Access]";
/// The built-in privilege set that can read everything.
pub const READ_ONLY: &str = "[Read-Only Access]";

impl Definition {
    /// Parses a definition from TOML or JSON text (`format` is the file
    /// extension: `toml` or `json`), naming the path of what is wrong.
    pub fn parse(text: &str, format: &str) -> Result<Self, AppsError> {
        match format {
            "json" => {
                let de = &mut serde_json::Deserializer::from_str(text);
                serde::Deserialize::deserialize(de)
                    .map_err(|e: serde_json::Error| AppsError::invalid("definition", e.to_string()))
            }
            "toml" => toml::from_str(text)
                .map_err(|e| AppsError::invalid("definition", e.message().to_owned())),
            other => Err(AppsError::invalid(
                "format",
                format!("`{other}` is not a definition format; use .toml or .json"),
            )),
        }
    }
}
