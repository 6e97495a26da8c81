//! The record browser: one layout's records with find (the Data API's
//! operators: `==`, `<`, `>`, `...`, `*`), sort, paging, create and delete
//! (editing one record is `record_edit`),
//! and "who may open records": app accounts mapped to team members with a
//! privilege set. Records go through `http::fmi::browse`, i.e. the Data
//! API's own paths in an app session of the signed-in person's mapped app
//! account, so the privilege set decides what is shown and allowed; the
//! policy (`AppRecordsRead` / `AppRecordsWrite`) is asked first.

use axum::extract::{Path, Query, State};
use axum::response::{IntoResponse as _, Response};
use http::StatusCode;
use kura_apps::NewAccountCredential;
use kura_apps::schema::definition::FieldAccess;
use kura_identity::Action;
use kura_types::{AppId, TeamId};
use maud::{Markup, html};
use serde::Deserialize;
use serde_json::{Map, Value, json};

use super::home::{allow as permit, event};
use super::page::{self, Field, Nav};
use super::session::{SessionForm, Signed, done};
use crate::http::AppState;
use crate::http::api::error::ApiError;
use crate::http::fmi::browse::Browse;

const PAGE_SIZE: u64 = 20;

/// `?field=&value=&sort=&dir=&page=&ok=`.
#[derive(Debug, Default, Deserialize)]
pub struct BrowseQuery {
    #[serde(default)]
    field: String,
    #[serde(default)]
    value: String,
    #[serde(default)]
    sort: String,
    #[serde(default)]
    dir: String,
    #[serde(default)]
    page: Option<u64>,
    #[serde(default)]
    ok: Option<String>,
}

pub(super) fn ids(team: &str, app: &str) -> Result<(TeamId, AppId), page::Missing> {
    match (team.parse(), app.parse()) {
        (Ok(t), Ok(a)) => Ok((t, a)),
        _ => Err(page::Missing("app")),
    }
}

/// The field a Data API error names (its message ends in "(field `x`…)"),
/// so the console can show the error beside that field.
pub(super) fn field_of(e: &kura_apps::FmError) -> Option<String> {
    let start = e.message.find("(field `")? + "(field `".len();
    let len = e.message[start..].find('`')?;
    Some(e.message[start..start + len].to_owned())
}

pub(super) fn fm_message(e: &kura_apps::FmError) -> String {
    match e.code {
        212 => "You have no account in this app. Ask the team owner to give you one with a privilege set.".to_owned(),
        105 => "There is no such layout.".to_owned(),
        200 | 201 => "Your privilege set does not allow this.".to_owned(),
        101 => "There is no such record, or your privilege set does not show it.".to_owned(),
        306 => "Someone changed this record after you opened it. Reload it to see their changes, then edit again.".to_owned(),
        _ => format!("{} (FileMaker error {}).", e.message.trim_end_matches('.'), e.code),
    }
}

struct View<'a> {
    team: TeamId,
    app: AppId,
    layout: &'a str,
    q: &'a BrowseQuery,
    create_values: Map<String, Value>,
    create_error: Option<String>,
    /// A create error that names one field: (field, message).
    create_field_error: Option<(String, String)>,
}

async fn browse_page(state: &AppState, who: &Signed, v: &View<'_>) -> Result<Markup, ApiError> {
    permit(state, who, Action::AppRecordsRead, v.team).await?;
    let record = state
        .apps
        .app(v.team, v.app)
        .await
        .map_err(ApiError::Apps)?;
    let loaded = state.apps.load(&record).await.map_err(ApiError::Apps)?;
    let schema = loaded.schema();
    let base = format!("/console/teams/{}/apps/{}", v.team, v.app);
    let here = format!("{base}/layouts/{}", urlenc(v.layout));
    let Some(layout) = schema.layout(v.layout) else {
        return Err(ApiError::Apps(kura_apps::AppsError::NotFound(
            "layout".into(),
        )));
    };
    let table = &schema.tables[layout.table];
    let browse = match Browse::open(state, loaded.clone(), who.principal.account).await {
        Ok(b) => b,
        Err(e) => {
            let body = html! {
                nav.crumbs { a href=(base) { (record.name) } " / " (v.layout) }
                section.card.empty role="alert" { h1 { (v.layout) } p { (fm_message(&e)) } }
            };
            return Ok(page::shell(v.layout, Nav::Team, &super::chrome(who), body));
        }
    };
    let privileges = schema.privilege_set(browse.privilege_set());
    let layout_fields: Vec<&kura_apps::schema::Field> = layout
        .fields
        .iter()
        .map(|i| &table.fields[*i])
        .filter(|f| !f.def.global)
        .collect();
    let access = |f: &kura_apps::schema::Field| {
        privileges
            .map(|p| p.field_access(table.id, f.id))
            .unwrap_or(FieldAccess::None)
    };
    let visible: Vec<&&kura_apps::schema::Field> = layout_fields
        .iter()
        .filter(|f| access(f) != FieldAccess::None)
        .collect();
    let editable: Vec<&&kura_apps::schema::Field> = visible
        .iter()
        .copied()
        .filter(|f| access(f) == FieldAccess::Modify)
        .collect();
    let can_create = privileges.is_some_and(|p| p.can_create(table.id));
    let can_edit = !editable.is_empty()
        && privileges.is_some_and(|p| {
            !matches!(
                p.edit_filter(table.id, browse.account()),
                kura_store::app_data::Filter::Nothing
            )
        });
    // Delete buttons only where some record may be deleted (the write path
    // still checks each record).
    let can_delete = privileges.is_some_and(|p| {
        !matches!(
            p.delete_filter(table.id, browse.account()),
            kura_store::app_data::Filter::Nothing
        )
    });
    let find = (!v.q.field.is_empty() && !v.q.value.is_empty())
        .then(|| json!([{ v.q.field.clone(): v.q.value.clone() }]));
    let sort: Vec<(String, bool)> = if v.q.sort.is_empty() {
        Vec::new()
    } else {
        vec![(v.q.sort.clone(), v.q.dir == "desc")]
    };
    let page_no = v.q.page.unwrap_or(1).max(1);
    let result = browse
        .page(
            state,
            v.layout,
            find,
            sort,
            (page_no - 1) * PAGE_SIZE + 1,
            PAGE_SIZE,
        )
        .await;
    let set_name = browse.privilege_set().to_owned();
    browse.close(state);
    let (rows, found, total, error) = match result {
        Ok(out) => {
            let info = &out["dataInfo"];
            let rows = out["data"].as_array().cloned().unwrap_or_default();
            (
                rows,
                info["foundCount"].as_u64().unwrap_or(0),
                info["totalRecordCount"].as_u64().unwrap_or(0),
                None,
            )
        }
        Err(e) if e.code == 401 => (Vec::new(), 0, 0, None),
        Err(e) => (Vec::new(), 0, 0, Some(fm_message(&e))),
    };
    let first = (page_no - 1) * PAGE_SIZE + 1;
    let last = first + rows.len() as u64 - 1;
    let keep = |extra: &[(&str, String)]| -> String {
        let mut q: Vec<(&str, String)> = vec![
            ("field", v.q.field.clone()),
            ("value", v.q.value.clone()),
            ("sort", v.q.sort.clone()),
            ("dir", v.q.dir.clone()),
        ];
        for (k, val) in extra {
            q.retain(|(key, _)| key != k);
            q.push((k, val.clone()));
        }
        q.retain(|(_, val)| !val.is_empty());
        format!(
            "{here}?{}",
            serde_urlencoded::to_string(&q).unwrap_or_default()
        )
    };
    let body = html! {
        (page::notice(v.q.ok.as_deref()))
        nav.crumbs aria-label="Breadcrumb" { a href={ "/console/teams/" (v.team) } { "Team" } " / " a href=(base) { (record.name) } " / " span { (v.layout) } }
        header.page-head {
            h1 { (v.layout) }
            p.muted { "Table " code { (table.name) } " · your privilege set " span.badge #privilege-set { (set_name) } }
        }
        (page::form_error(error.as_deref()))
        form.inline-form.filters method="get" action=(here) role="search" {
            div.field {
                label for="f-find-field" { "Find in" }
                select #f-find-field name="field" {
                    @for f in &visible { option value=(f.def.name) selected[v.q.field == f.def.name] { (f.def.name) } }
                }
            }
            div.field {
                label for="f-find-value" { "Value" }
                input #f-find-value name="value" type="search" value=(v.q.value) placeholder="e.g. ==Ada, >10, 1...5";
            }
            button.primary type="submit" { "Find" }
            @if !v.q.value.is_empty() { a.button href=(here) { "Show all" } }
        }
        section.card {
            @if rows.is_empty() {
                p.empty #no-records { @if v.q.value.is_empty() { "No records yet." } @else { "No records match." } }
            } @else {
                p.muted #found { "Records " (first) "–" (last) " of " (found) " found (" (total) " in the table)" }
                div.table-wrap {
                    table #records {
                        thead { tr {
                            @for f in &visible {
                                @let dir = if v.q.sort == f.def.name && v.q.dir != "desc" { "desc" } else { "asc" };
                                th scope="col" aria-sort=[(v.q.sort == f.def.name).then(|| if v.q.dir == "desc" { "descending" } else { "ascending" })] {
                                    a href=(keep(&[("sort", f.def.name.clone()), ("dir", dir.to_owned()), ("page", String::new())])) { (f.def.name) }
                                }
                            }
                            th scope="col" { span.sr-only { "Actions" } }
                        } }
                        tbody {
                            @for r in &rows {
                                tr {
                                    @for f in &visible {
                                        td data-label=(f.def.name) { (cell(&r["fieldData"][&f.def.name])) }
                                    }
                                    @let rid = r["recordId"].as_str().unwrap_or("");
                                    td.actions {
                                        a.button.small.open-record href={ (here) "/records/" (rid) } { (if can_edit { "Edit" } else { "Open" }) }
                                        @if can_delete {
                                            form.inline method="post" action={ (here) "/records/" (rid) "/delete" } {
                                                (page::csrf(&who.csrf))
                                                button.danger.small type="submit" { "Delete" }
                                            }
                                        }
                                    }
                                }
                            }
                        }
                    }
                }
                nav.pager aria-label="Pages" {
                    @if page_no > 1 { a.button href=(keep(&[("page", (page_no - 1).to_string())])) { "← Previous" } }
                    @if last < found { a.button href=(keep(&[("page", (page_no + 1).to_string())])) { "Next →" } }
                }
            }
        }
        @if can_create && !editable.is_empty() {
            section.card #new-record {
                h2 { "New record" }
                (page::form_error(v.create_error.as_deref()))
                form method="post" action={ (here) "/records" } novalidate {
                    (page::csrf(&who.csrf))
                    @for f in &editable {
                        @let name = format!("field.{}", f.def.name);
                        @let kept = v.create_values.get(&f.def.name).and_then(|x| x.as_str()).unwrap_or("");
                        @let error = v.create_field_error.as_ref().filter(|(n, _)| *n == f.def.name).map(|(_, m)| m.as_str());
                        (Field::new(&name, &f.def.name).value(kept).error(error).render_optional())
                    }
                    button.primary type="submit" { "Create record" }
                }
            }
        }
    };
    Ok(page::shell(v.layout, Nav::Team, &super::chrome(who), body))
}

pub(super) fn cell(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Null => String::new(),
        other => other.to_string(),
    }
}

pub(super) fn urlenc(s: &str) -> String {
    serde_urlencoded::to_string([("", s)])
        .map(|q| q.trim_start_matches('=').to_owned())
        .unwrap_or_default()
}

/// `GET /console/teams/{team}/apps/{app}/layouts/{layout}`.
pub async fn show(
    State(state): State<AppState>,
    who: Signed,
    Path((team, app, layout)): Path<(String, String, String)>,
    Query(q): Query<BrowseQuery>,
) -> Response {
    let (team, app) = match ids(&team, &app) {
        Ok(v) => v,
        Err(r) => return r.into_response(),
    };
    let v = View {
        team,
        app,
        layout: &layout,
        q: &q,
        create_values: Map::new(),
        create_error: None,
        create_field_error: None,
    };
    match browse_page(&state, &who, &v).await {
        Ok(m) => page::respond(StatusCode::OK, m),
        Err(e) => page::api_error_page(&e),
    }
}

/// `POST …/layouts/{layout}/records` (fields named `field.<name>`).
pub async fn create(
    State(state): State<AppState>,
    Path((team, app, layout)): Path<(String, String, String)>,
    p: SessionForm<Vec<(String, String)>>,
) -> Response {
    let (team, app) = match ids(&team, &app) {
        Ok(v) => v,
        Err(r) => return r.into_response(),
    };
    if let Err(e) = permit(&state, &p.who, Action::AppRecordsWrite, team).await {
        return page::api_error_page(&e);
    }
    let mut fields = Map::new();
    for (k, v) in p.form {
        if let Some(name) = k.strip_prefix("field.")
            && !v.is_empty()
        {
            fields.insert(name.to_owned(), Value::String(v));
        }
    }
    let mut failed_field = None;
    let result = async {
        let record = state.apps.app(team, app).await.map_err(|e| e.to_string())?;
        let loaded = state.apps.load(&record).await.map_err(|e| e.to_string())?;
        let b = Browse::open(&state, loaded, p.who.principal.account)
            .await
            .map_err(|e| fm_message(&e))?;
        let r = b.create(&state, &layout, fields.clone()).await;
        b.close(&state);
        r.map_err(|e| match field_of(&e) {
            Some(field) => {
                failed_field = Some((field, fm_message(&e)));
                String::new()
            }
            None => fm_message(&e),
        })
    }
    .await;
    let here = format!(
        "/console/teams/{team}/apps/{app}/layouts/{}",
        urlenc(&layout)
    );
    match result {
        Ok(_) => done(&here, "record-created"),
        Err(msg) => {
            let q = BrowseQuery::default();
            let v = View {
                team,
                app,
                layout: &layout,
                q: &q,
                create_values: fields,
                create_error: (!msg.is_empty()).then_some(msg),
                create_field_error: failed_field,
            };
            match browse_page(&state, &p.who, &v).await {
                Ok(m) => page::invalid(m),
                Err(e) => page::api_error_page(&e),
            }
        }
    }
}

/// `POST …/layouts/{layout}/records/{id}/delete`.
pub async fn delete(
    State(state): State<AppState>,
    Path((team, app, layout, rid)): Path<(String, String, String, String)>,
    p: SessionForm<super::signin::Empty>,
) -> Response {
    let (team, app) = match ids(&team, &app) {
        Ok(v) => v,
        Err(r) => return r.into_response(),
    };
    let Ok(rid) = rid.parse::<i64>() else {
        return page::Missing("record").into_response();
    };
    if let Err(e) = permit(&state, &p.who, Action::AppRecordsWrite, team).await {
        return page::api_error_page(&e);
    }
    let result = async {
        let record = state.apps.app(team, app).await.map_err(|e| e.to_string())?;
        let loaded = state.apps.load(&record).await.map_err(|e| e.to_string())?;
        let b = Browse::open(&state, loaded, p.who.principal.account)
            .await
            .map_err(|e| fm_message(&e))?;
        let r = b
            .delete(&state, &layout, rid)
            .await
            .map_err(|e| fm_message(&e));
        b.close(&state);
        r
    }
    .await;
    let here = format!(
        "/console/teams/{team}/apps/{app}/layouts/{}",
        urlenc(&layout)
    );
    match result {
        Ok(_) => done(&here, "record-deleted"),
        Err(msg) => page::error_page(
            StatusCode::FORBIDDEN,
            "Not deleted",
            &format!("{msg} Nothing was changed."),
        ),
    }
}

/// The app-account form.
#[derive(Debug, Default, Deserialize)]
pub struct AccountForm {
    #[serde(default)]
    email: String,
    #[serde(default)]
    privilege_set: String,
}

/// `POST /console/teams/{team}/apps/{app}/accounts`: gives a team member an
/// app account with a privilege set.
pub async fn add_account(
    State(state): State<AppState>,
    Path((team, app)): Path<(String, String)>,
    p: SessionForm<AccountForm>,
) -> Response {
    let (team, app) = match ids(&team, &app) {
        Ok(v) => v,
        Err(r) => return r.into_response(),
    };
    if let Err(e) = permit(&state, &p.who, Action::AppsOperate, team).await {
        return page::api_error_page(&e);
    }
    let audited = state
        .identity
        .at(p.who.ctx.facts())
        .members(&p.who.principal, team)
        .await;
    let members = match crate::http::api::auth::finish(&state, &p.who.ctx, audited).await {
        Ok(m) => m,
        Err(e) => return page::api_error_page(&e),
    };
    let email = p.form.email.trim().to_lowercase();
    let Some(member) = members.iter().find(|m| m.account.email.as_str() == email) else {
        return page::error_page(
            StatusCode::UNPROCESSABLE_ENTITY,
            "Not a member",
            "Choose a member of this team; nothing was changed.",
        );
    };
    let name = email.clone();
    let created = state
        .apps
        .create_account(
            team,
            app,
            name,
            NewAccountCredential::KuraId(member.account.id),
            p.form.privilege_set.clone(),
        )
        .await;
    match created {
        Ok(a) => match event(
            &state,
            &p.who,
            team,
            "app.account.created",
            app.to_string(),
            &a.name,
        )
        .await
        {
            Ok(()) => done(
                &format!("/console/teams/{team}/apps/{app}"),
                "account-added",
            ),
            Err(e) => page::api_error_page(&e),
        },
        Err(e) => page::error_page(
            StatusCode::UNPROCESSABLE_ENTITY,
            "Not added",
            &format!("{} Nothing was changed.", page::message(&ApiError::Apps(e))),
        ),
    }
}
