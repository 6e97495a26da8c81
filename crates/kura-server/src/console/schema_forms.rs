//! The schema editor's forms beyond tables and fields: relationships
//! (field equals field), value lists and privilege sets (record access per
//! table and the Data API privilege; per-field access stays in the JSON
//! editor). Each form adds one item to the app's current definition and
//! applies it through `kura_apps` exactly like the JSON editor, after the
//! policy (`AppsOperate`); a refused form is shown again with its error and
//! input, and the schema is unchanged.

use axum::extract::{Path, State};
use axum::response::{IntoResponse as _, Response};
use http::StatusCode;
use kura_apps::schema::Definition;
use kura_apps::schema::definition::{
    PrivilegeSetDef, RecordAccess, RelationshipDef, TableAccessDef, ValueListDef,
};
use kura_identity::Action;
use maud::{Markup, html};

use super::apps::{Forms, apply, ids, show_with};
use super::home::allow as permit;
use super::page::{self, Field};
use super::session::SessionForm;
use crate::http::AppState;
use crate::http::api::error::ApiError;

/// What these forms kept and what was wrong.
#[derive(Debug, Default)]
pub(super) struct SchemaForms {
    /// The relationship form's fields.
    relationship: Vec<(String, String)>,
    relationship_error: Option<String>,
    /// The value-list form's fields.
    value_list: Vec<(String, String)>,
    value_list_error: Option<String>,
    /// The privilege-set form's fields.
    privilege_set: Vec<(String, String)>,
    privilege_set_error: Option<String>,
}

fn kept<'a>(fields: &'a [(String, String)], name: &str) -> &'a str {
    fields
        .iter()
        .find(|(k, _)| k == name)
        .map_or("", |(_, v)| v.as_str())
}

const ACCESS: &[(&str, &str)] = &[
    ("none", "None"),
    ("all", "All records"),
    ("own", "Own records"),
];

/// The forms, for the app page.
pub(super) fn render(base: &str, csrf: &str, def: &Definition, f: &SchemaForms) -> Markup {
    let field_options: Vec<String> = def
        .tables
        .iter()
        .flat_map(|t| {
            t.fields
                .iter()
                .map(move |x| format!("{}::{}", t.name, x.name))
        })
        .collect();
    let rel = &f.relationship;
    let vl = &f.value_list;
    let ps = &f.privilege_set;
    html! {
        section.card #relationships {
            h2 { "Relationships" }
            @if def.relationships.is_empty() {
                p.empty { "No relationships. A relationship joins two tables where a field of one equals a field of the other; layouts show related records in portals." }
            } @else {
                ul.plain { @for r in &def.relationships { li { strong { (r.name) } " · " code { (r.left_table) "::" (r.left_field) } " = " code { (r.right_table) "::" (r.right_field) } } } }
            }
            @if field_options.len() >= 2 {
                (page::form_error(f.relationship_error.as_deref()))
                form.inline-form method="post" action={ (base) "/relationships" } novalidate {
                    (page::csrf(csrf))
                    (Field::new("rel_name", "Relationship name").value(kept(rel, "rel_name")).render())
                    @for (side, label) in [("left", "Field"), ("right", "equals field")] {
                        @let name = format!("rel_{side}");
                        div.field {
                            label for={ "f-" (name) } { (label) }
                            select id={ "f-" (name) } name=(name) {
                                @for o in &field_options { option value=(o) selected[kept(rel, &name) == o.as_str()] { (o) } }
                            }
                        }
                    }
                    button.primary type="submit" { "Add relationship" }
                }
            }
        }
        section.card #value-lists {
            h2 { "Value lists" }
            @if def.value_lists.is_empty() {
                p.empty { "No value lists. A field can be limited to the values of a list." }
            } @else {
                ul.plain { @for v in &def.value_lists { li { strong { (v.name) } " · " (v.values.join(", ")) } } }
            }
            (page::form_error(f.value_list_error.as_deref()))
            form method="post" action={ (base) "/value-lists" } novalidate {
                (page::csrf(csrf))
                (Field::new("vl_name", "Value list name").value(kept(vl, "vl_name")).render())
                div.field {
                    label for="f-vl_values" { "Values, one per line" }
                    textarea #f-vl_values name="vl_values" rows="4" { (kept(vl, "vl_values")) }
                }
                button.primary type="submit" { "Add value list" }
            }
        }
        section.card #privilege-sets {
            h2 { "New privilege set" }
            p.muted { "Record access per table; fields are all modifiable where records may be changed (limit single fields in the JSON editor)." }
            (page::form_error(f.privilege_set_error.as_deref()))
            form method="post" action={ (base) "/privilege-sets" } novalidate {
                (page::csrf(csrf))
                (Field::new("ps_name", "Privilege set name").value(kept(ps, "ps_name")).render())
                label.check { input type="checkbox" name="ps_fmrest" value="on" checked[kept(ps, "ps_fmrest") == "on" || ps.is_empty()]; "May use the Data API (and the console's record browser)" }
                @for t in &def.tables {
                    fieldset.scopes {
                        legend { "Table " (t.name) }
                        @for (right, label) in [("view", "View"), ("edit", "Edit"), ("delete", "Delete")] {
                            @let name = format!("ps_{right}.{}", t.name);
                            div.field {
                                label for={ "f-" (name) } { (label) }
                                select id={ "f-" (name) } name=(name) {
                                    @for (v, l) in ACCESS { option value=(v) selected[kept(ps, &name) == *v] { (l) } }
                                }
                            }
                        }
                        @let create = format!("ps_create.{}", t.name);
                        label.check { input type="checkbox" name=(create) value="on" checked[kept(ps, &create) == "on"]; "Create records" }
                    }
                }
                button.primary type="submit" { "Add privilege set" }
            }
        }
    }
}

fn split_field(v: &str) -> Option<(String, String)> {
    let (t, f) = v.split_once("::")?;
    Some((t.to_owned(), f.to_owned()))
}

fn access(v: &str) -> Option<RecordAccess> {
    match v {
        "none" | "" => Some(RecordAccess::None),
        "all" => Some(RecordAccess::All),
        "own" => Some(RecordAccess::Own),
        _ => None,
    }
}

/// Adds what one form describes to `def`, or says what is wrong with it.
type Builder = fn(&mut Definition, &[(String, String)]) -> Result<(), String>;

fn add_relationship(def: &mut Definition, f: &[(String, String)]) -> Result<(), String> {
    let name = kept(f, "rel_name").trim();
    if name.is_empty() {
        return Err("Enter a name for the relationship.".to_owned());
    }
    let (Some((lt, lf)), Some((rt, rf))) = (
        split_field(kept(f, "rel_left")),
        split_field(kept(f, "rel_right")),
    ) else {
        return Err("Choose a field on each side.".to_owned());
    };
    def.relationships.push(RelationshipDef {
        name: name.to_owned(),
        left_table: lt,
        left_field: lf,
        right_table: rt,
        right_field: rf,
    });
    Ok(())
}

fn add_value_list(def: &mut Definition, f: &[(String, String)]) -> Result<(), String> {
    let name = kept(f, "vl_name").trim();
    if name.is_empty() {
        return Err("Enter a name for the value list.".to_owned());
    }
    let values: Vec<String> = kept(f, "vl_values")
        .lines()
        .map(str::trim)
        .filter(|v| !v.is_empty())
        .map(str::to_owned)
        .collect();
    if values.is_empty() {
        return Err("Enter at least one value, one per line.".to_owned());
    }
    def.value_lists.push(ValueListDef {
        name: name.to_owned(),
        values,
    });
    Ok(())
}

fn add_privilege_set(def: &mut Definition, f: &[(String, String)]) -> Result<(), String> {
    let name = kept(f, "ps_name").trim();
    if name.is_empty() {
        return Err("Enter a name for the privilege set.".to_owned());
    }
    let mut set = PrivilegeSetDef {
        name: name.to_owned(),
        extended: if kept(f, "ps_fmrest") == "on" {
            vec!["fmrest".to_owned()]
        } else {
            Vec::new()
        },
        ..PrivilegeSetDef::default()
    };
    for t in &def.tables {
        let get = |right: &str| access(kept(f, &format!("ps_{right}.{}", t.name)));
        let (Some(view), Some(edit), Some(delete)) = (get("view"), get("edit"), get("delete"))
        else {
            return Err(format!(
                "Choose one of the listed accesses for table `{}`.",
                t.name
            ));
        };
        let create = kept(f, &format!("ps_create.{}", t.name)) == "on";
        if view == RecordAccess::None
            && edit == RecordAccess::None
            && delete == RecordAccess::None
            && !create
        {
            continue;
        }
        set.tables.insert(
            t.name.clone(),
            TableAccessDef {
                view,
                edit,
                create,
                delete,
                ..TableAccessDef::default()
            },
        );
    }
    def.privilege_sets.push(set);
    Ok(())
}

fn set_relationship_error(f: &mut Forms, m: String) {
    f.schema.relationship_error = Some(m);
}
fn set_value_list_error(f: &mut Forms, m: String) {
    f.schema.value_list_error = Some(m);
}
fn set_privilege_set_error(f: &mut Forms, m: String) {
    f.schema.privilege_set_error = Some(m);
}

/// Which form: how to build the item, and where its input and error go.
struct Kind {
    build: Builder,
    keep: fn(&mut SchemaForms, Vec<(String, String)>),
    error: fn(&mut Forms, String),
}

const RELATIONSHIP: Kind = Kind {
    build: add_relationship,
    keep: |s, v| s.relationship = v,
    error: set_relationship_error,
};
const VALUE_LIST: Kind = Kind {
    build: add_value_list,
    keep: |s, v| s.value_list = v,
    error: set_value_list_error,
};
const PRIVILEGE_SET: Kind = Kind {
    build: add_privilege_set,
    keep: |s, v| s.privilege_set = v,
    error: set_privilege_set_error,
};

async fn add(
    state: AppState,
    team: String,
    app: String,
    p: SessionForm<Vec<(String, String)>>,
    kind: Kind,
) -> Response {
    let (team, app) = match ids(&team, &app) {
        Ok(v) => v,
        Err(r) => return r.into_response(),
    };
    if let Err(e) = permit(&state, &p.who, Action::AppsOperate, team).await {
        return page::api_error_page(&e);
    }
    let mut failed = Forms::default();
    (kind.keep)(&mut failed.schema, p.form.clone());
    let mut def = match state.apps.definition(team, app).await {
        Ok((_, d)) => d,
        Err(e) => return page::api_error_page(&ApiError::Apps(e)),
    };
    if let Err(message) = (kind.build)(&mut def, &p.form) {
        (kind.error)(&mut failed, message);
        return show_with(
            &state,
            &p.who,
            team,
            app,
            StatusCode::UNPROCESSABLE_ENTITY,
            &failed,
        )
        .await;
    }
    apply(&state, &p.who, team, app, def, failed, kind.error).await
}

/// `POST …/relationships`.
pub async fn relationship(
    State(state): State<AppState>,
    Path((team, app)): Path<(String, String)>,
    p: SessionForm<Vec<(String, String)>>,
) -> Response {
    add(state, team, app, p, RELATIONSHIP).await
}

/// `POST …/value-lists`.
pub async fn value_list(
    State(state): State<AppState>,
    Path((team, app)): Path<(String, String)>,
    p: SessionForm<Vec<(String, String)>>,
) -> Response {
    add(state, team, app, p, VALUE_LIST).await
}

/// `POST …/privilege-sets`.
pub async fn privilege_set(
    State(state): State<AppState>,
    Path((team, app)): Path<(String, String)>,
    p: SessionForm<Vec<(String, String)>>,
) -> Response {
    add(state, team, app, p, PRIVILEGE_SET).await
}
