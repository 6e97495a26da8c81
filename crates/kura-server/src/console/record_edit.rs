//! One record of a layout: its fields as the signed-in person's privilege
//! set shows them, and a form that changes the fields the set lets them
//! modify. Reading and writing go through `http::fmi::browse` (the Data
//! API's own paths in an app session of the person's mapped app account)
//! after the policy (`AppRecordsRead` / `AppRecordsWrite`); the form
//! carries the record's modification id, so an edit made over someone
//! else's newer change is refused instead of overwriting it. A refused
//! edit shows the form again with the error beside the field it names and
//! everything typed kept; nothing is written.

use axum::extract::{Path, Query, State};
use axum::response::{IntoResponse as _, Response};
use http::StatusCode;
use kura_apps::FmError;
use kura_apps::schema::definition::FieldAccess;
use kura_identity::Action;
use kura_types::{AppId, TeamId};
use maud::{Markup, html};
use serde_json::{Map, Value};

use super::account::OkQuery;
use super::home::allow as permit;
use super::page::{self, Field, Nav};
use super::records::{cell, field_of, fm_message, ids, urlenc};
use super::session::{SessionForm, Signed, done};
use crate::http::AppState;
use crate::http::api::error::ApiError;
use crate::http::fmi::browse::Browse;

/// Which record.
struct Target<'a> {
    team: TeamId,
    app: AppId,
    layout: &'a str,
    rid: i64,
}

impl Target<'_> {
    fn layout_path(&self) -> String {
        format!(
            "/console/teams/{}/apps/{}/layouts/{}",
            self.team,
            self.app,
            urlenc(self.layout)
        )
    }

    fn path(&self) -> String {
        format!("{}/records/{}", self.layout_path(), self.rid)
    }
}

/// A refused edit: what was typed and what was wrong.
#[derive(Debug)]
struct Refused {
    values: Map<String, Value>,
    field_error: Option<(String, String)>,
    error: Option<String>,
}

fn no_record() -> ApiError {
    ApiError::Apps(kura_apps::AppsError::NotFound("record".into()))
}

async fn record_page(
    state: &AppState,
    who: &Signed,
    t: &Target<'_>,
    ok: Option<&str>,
    refused: Option<&Refused>,
) -> Result<Markup, ApiError> {
    permit(state, who, Action::AppRecordsRead, t.team).await?;
    let record = state
        .apps
        .app(t.team, t.app)
        .await
        .map_err(ApiError::Apps)?;
    let loaded = state.apps.load(&record).await.map_err(ApiError::Apps)?;
    let schema = loaded.schema();
    let Some(layout) = schema.layout(t.layout) else {
        return Err(ApiError::Apps(kura_apps::AppsError::NotFound(
            "layout".into(),
        )));
    };
    let table = &schema.tables[layout.table];
    let base = format!("/console/teams/{}/apps/{}", t.team, t.app);
    let crumbs = html! {
        nav.crumbs aria-label="Breadcrumb" {
            a href={ "/console/teams/" (t.team) } { "Team" } " / "
            a href=(base) { (record.name) } " / "
            a href=(t.layout_path()) { (t.layout) } " / "
            span { "Record " (t.rid) }
        }
    };
    let browse = match Browse::open(state, loaded.clone(), who.principal.account).await {
        Ok(b) => b,
        Err(e) => {
            let body = html! {
                (crumbs)
                section.card.empty role="alert" { h1 { "Record " (t.rid) } p { (fm_message(&e)) } }
            };
            return Ok(page::shell(t.layout, Nav::Team, &super::chrome(who), body));
        }
    };
    let found = browse.record(state, t.layout, t.rid).await;
    let privileges = schema.privilege_set(browse.privilege_set());
    let set_name = browse.privilege_set().to_owned();
    let may_edit_records = privileges.is_some_and(|p| {
        !matches!(
            p.edit_filter(table.id, browse.account()),
            kura_store::app_data::Filter::Nothing
        )
    });
    let may_delete_records = privileges.is_some_and(|p| {
        !matches!(
            p.delete_filter(table.id, browse.account()),
            kura_store::app_data::Filter::Nothing
        )
    });
    browse.close(state);
    let out = match found {
        Ok(out) => out,
        Err(e) if matches!(e.code, 101 | 401) => return Err(no_record()),
        Err(e) => {
            let body = html! {
                (crumbs)
                section.card.empty role="alert" { h1 { "Record " (t.rid) } p { (fm_message(&e)) } }
            };
            return Ok(page::shell(t.layout, Nav::Team, &super::chrome(who), body));
        }
    };
    let Some(row) = out["data"].as_array().and_then(|d| d.first()).cloned() else {
        return Err(no_record());
    };
    let access = |f: &kura_apps::schema::Field| {
        privileges
            .map(|p| p.field_access(table.id, f.id))
            .unwrap_or(FieldAccess::None)
    };
    let fields: Vec<(&kura_apps::schema::Field, FieldAccess)> = layout
        .fields
        .iter()
        .map(|i| &table.fields[*i])
        .filter(|f| !f.def.global)
        .map(|f| (f, access(f)))
        .filter(|(_, a)| *a != FieldAccess::None)
        .collect();
    let can_edit = may_edit_records && fields.iter().any(|(_, a)| *a == FieldAccess::Modify);
    let modid = row["modId"].as_str().unwrap_or("").to_owned();
    let value_of = |name: &str| -> String {
        match refused.and_then(|r| r.values.get(name)) {
            Some(kept) => cell(kept),
            None => cell(&row["fieldData"][name]),
        }
    };
    let body = html! {
        (page::notice(ok))
        (crumbs)
        header.page-head {
            h1 { "Record " (t.rid) }
            p.muted { "Layout " code { (t.layout) } " · table " code { (table.name) } " · your privilege set " span.badge #privilege-set { (set_name) } }
        }
        section.card #record {
            @if can_edit {
                h2 { "Edit record" }
                (page::form_error(refused.and_then(|r| r.error.as_deref())))
                form method="post" action=(t.path()) novalidate {
                    (page::csrf(&who.csrf))
                    input type="hidden" name="modid" value=(modid);
                    @for (f, a) in &fields {
                        @let name = format!("field.{}", f.def.name);
                        @if *a == FieldAccess::Modify {
                            @let error = refused.and_then(|r| r.field_error.as_ref()).filter(|(n, _)| *n == f.def.name).map(|(_, m)| m.as_str());
                            (Field::new(&name, &f.def.name).value(&value_of(&f.def.name)).error(error).render_optional())
                        } @else {
                            div.field.read-only {
                                span.label { (f.def.name) }
                                p.value data-field=(f.def.name) { (value_of(&f.def.name)) " " span.badge { "view only" } }
                            }
                        }
                    }
                    button.primary type="submit" { "Save changes" }
                    " " a.button href=(t.layout_path()) { "Back to the list" }
                }
            } @else {
                h2 { "Fields" }
                p.muted { "Your privilege set shows this record but does not let you change it." }
                dl.record-fields {
                    @for (f, _) in &fields {
                        dt { (f.def.name) }
                        dd data-field=(f.def.name) { (value_of(&f.def.name)) }
                    }
                }
                p { a.button href=(t.layout_path()) { "Back to the list" } }
            }
        }
        @if may_delete_records {
            section.card.danger-zone #delete-record {
                h2 { "Delete this record" }
                form.inline-form method="post" action={ (t.path()) "/delete" } {
                    (page::csrf(&who.csrf))
                    button.danger type="submit" { "Delete record" }
                }
            }
        }
    };
    Ok(page::shell(
        &format!("Record {}", t.rid),
        Nav::Team,
        &super::chrome(who),
        body,
    ))
}

fn target<'a>(
    team: &str,
    app: &str,
    layout: &'a str,
    rid: &str,
) -> Result<Target<'a>, page::Missing> {
    let (team, app) = ids(team, app)?;
    let rid = rid.parse::<i64>().map_err(|_| page::Missing("record"))?;
    Ok(Target {
        team,
        app,
        layout,
        rid,
    })
}

/// `GET …/layouts/{layout}/records/{id}`.
pub async fn show(
    State(state): State<AppState>,
    who: Signed,
    Path((team, app, layout, rid)): Path<(String, String, String, String)>,
    Query(q): Query<OkQuery>,
) -> Response {
    let t = match target(&team, &app, &layout, &rid) {
        Ok(t) => t,
        Err(r) => return r.into_response(),
    };
    match record_page(&state, &who, &t, q.ok.as_deref(), None).await {
        Ok(m) => page::respond(StatusCode::OK, m),
        Err(e) => page::api_error_page(&e),
    }
}

/// The status a refused write answers with.
fn refused_status(e: &FmError) -> StatusCode {
    match e.code {
        200 | 201 => StatusCode::FORBIDDEN,
        101 => StatusCode::NOT_FOUND,
        306 => StatusCode::CONFLICT,
        _ => StatusCode::UNPROCESSABLE_ENTITY,
    }
}

/// `POST …/layouts/{layout}/records/{id}` (fields named `field.<name>`, an
/// empty one clears the field; `modid` from the page the form was on).
pub async fn update(
    State(state): State<AppState>,
    Path((team, app, layout, rid)): Path<(String, String, String, String)>,
    p: SessionForm<Vec<(String, String)>>,
) -> Response {
    let t = match target(&team, &app, &layout, &rid) {
        Ok(t) => t,
        Err(r) => return r.into_response(),
    };
    if let Err(e) = permit(&state, &p.who, Action::AppRecordsWrite, t.team).await {
        return page::api_error_page(&e);
    }
    let mut fields = Map::new();
    let mut modid = None;
    for (k, v) in p.form {
        if let Some(name) = k.strip_prefix("field.") {
            fields.insert(name.to_owned(), Value::String(v));
        } else if k == "modid" {
            match v.trim().parse::<i64>() {
                Ok(m) => modid = Some(m),
                Err(_) => {
                    return page::error_page(
                        StatusCode::BAD_REQUEST,
                        "The form could not be read",
                        "The record's version is missing from the form. Reload the record and try again; nothing was changed.",
                    );
                }
            }
        }
    }
    let result: Result<(), FmError> = async {
        let record = state
            .apps
            .app(t.team, t.app)
            .await
            .map_err(|e| FmError::with(-1, e.to_string()))?;
        let loaded = state
            .apps
            .load(&record)
            .await
            .map_err(|e| FmError::with(-1, e.to_string()))?;
        let b = Browse::open(&state, loaded, p.who.principal.account).await?;
        let r = b.edit(&state, t.layout, t.rid, modid, fields.clone()).await;
        b.close(&state);
        r.map(|_| ())
    }
    .await;
    match result {
        Ok(()) => done(&t.path(), "record-saved"),
        Err(e) => {
            let status = refused_status(&e);
            let message = fm_message(&e);
            let refused = match field_of(&e) {
                Some(field) if fields.contains_key(&field) => Refused {
                    values: fields,
                    field_error: Some((field, message)),
                    error: None,
                },
                _ => Refused {
                    values: fields,
                    field_error: None,
                    error: Some(message),
                },
            };
            match record_page(&state, &p.who, &t, None, Some(&refused)).await {
                Ok(m) => page::respond(status, m),
                Err(e) => page::api_error_page(&e),
            }
        }
    }
}
