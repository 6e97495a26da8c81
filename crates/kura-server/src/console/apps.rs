//! One hosted app: its schema (tables, fields, layouts, privilege sets),
//! the schema editor (the definition as JSON, plus quick "add a table" and
//! "add a field" forms), rename, close/open, and deletion that needs the
//! app's name typed and a fresh authenticator code (step-up). Every change asks the policy (`AppsOperate`) through
//! `Identity::check`, calls `kura_apps`, and records the same event as the
//! API's `apps` handlers.

use axum::extract::{Path, Query, State};
use axum::response::{IntoResponse as _, Response};
use http::StatusCode;
use kura_apps::schema::Definition;
use kura_identity::Action;
use kura_store::{AppRecord, AppStatus};
use kura_types::{AppId, TeamId};
use maud::{Markup, html};
use serde::Deserialize;

use super::account::OkQuery;
use super::home::{allow as permit, event};
use super::page::{self, Field, Nav};
use super::session::{SessionForm, Signed, done};
use crate::http::AppState;
use crate::http::api::error::ApiError;

/// What the forms on the app page kept and what was wrong.
#[derive(Debug, Default)]
pub(super) struct Forms {
    definition: Option<String>,
    definition_error: Option<String>,
    table: String,
    table_error: Option<String>,
    field_table: String,
    field_name: String,
    field_type: String,
    field_error: Option<String>,
    rename: Option<String>,
    rename_error: Option<String>,
    confirm: String,
    confirm_error: Option<String>,
    code_error: Option<String>,
    changes: Vec<String>,
    /// The relationship, value-list and privilege-set forms.
    pub(super) schema: super::schema_forms::SchemaForms,
}

const FIELD_TYPES: &[&str] = &["text", "number", "date", "time", "timestamp", "container"];

pub(super) fn ids(team: &str, app: &str) -> Result<(TeamId, AppId), page::Missing> {
    match (team.parse(), app.parse()) {
        (Ok(t), Ok(a)) => Ok((t, a)),
        _ => Err(page::Missing("app")),
    }
}

async fn app_page(
    state: &AppState,
    who: &Signed,
    team: TeamId,
    app: AppId,
    ok: Option<&str>,
    forms: &Forms,
) -> Result<(Markup, AppRecord), ApiError> {
    permit(state, who, Action::AppsRead, team).await?;
    let record = state.apps.app(team, app).await.map_err(ApiError::Apps)?;
    let (version, def) = state
        .apps
        .definition(team, app)
        .await
        .map_err(ApiError::Apps)?;
    let json = serde_json::to_string_pretty(&def).unwrap_or_default();
    let accounts = state
        .apps
        .accounts(team, app)
        .await
        .map_err(ApiError::Apps)?;
    let audited = state
        .identity
        .at(who.ctx.facts())
        .members(&who.principal, team)
        .await;
    let members = crate::http::api::auth::finish(state, &who.ctx, audited).await?;
    let base = format!("/console/teams/{team}/apps/{app}");
    let closed = record.status == AppStatus::Closed;
    let body = html! {
        (page::notice(ok))
        nav.crumbs aria-label="Breadcrumb" { a href={ "/console/teams/" (team) } { "Team" } " / " span { (record.name) } }
        header.page-head {
            h1 { (record.name) " " span.badge { (if closed { "closed" } else { "open" }) } }
            p.muted { "Schema version " (version) " · created " (page::when(record.created_at)) }
        }
        @if !forms.changes.is_empty() {
            section.card.callout role="status" {
                h2 { "Schema applied" }
                ul { @for c in &forms.changes { li { (c) } } }
            }
        }
        section.card #schema {
            h2 { "Tables" }
            @if def.tables.is_empty() {
                p.empty { "No tables yet. Add one below, or paste a whole definition into the editor." }
            }
            @for t in &def.tables {
                article.table-def {
                    h3 { (t.name) }
                    @if t.fields.is_empty() {
                        p.empty { "No fields yet." }
                    } @else {
                        ul.fields { @for f in &t.fields { li { code { (f.name) } " " span.badge { (type_name(f)) } } } }
                    }
                }
            }
            form.inline-form method="post" action={ (base) "/tables" } novalidate {
                (page::csrf(&who.csrf))
                (Field::new("table", "New table").value(&forms.table).error(forms.table_error.as_deref()).render())
                button.primary type="submit" { "Add table" }
            }
            @if !def.tables.is_empty() {
                form.inline-form method="post" action={ (base) "/fields" } novalidate {
                    (page::csrf(&who.csrf))
                    div.field {
                        label for="f-field_table" { "Table" }
                        select #f-field_table name="field_table" {
                            @for t in &def.tables { option value=(t.name) selected[forms.field_table == t.name] { (t.name) } }
                        }
                    }
                    (Field::new("field_name", "New field").value(&forms.field_name).error(forms.field_error.as_deref()).render())
                    div.field {
                        label for="f-field_type" { "Type" }
                        select #f-field_type name="field_type" {
                            @for k in FIELD_TYPES { option value=(k) selected[forms.field_type == *k] { (k) } }
                        }
                    }
                    button.primary type="submit" { "Add field" }
                }
            }
        }
        section.card #layouts {
            h2 { "Layouts" }
            @if !def.tables.is_empty() { p { a.button href={ (base) "/import" } { "Import CSV into a table" } } }
            @if def.layouts.is_empty() {
                p.empty { "No layouts: the Data API addresses records through layouts." }
            } @else {
                ul.plain { @for l in &def.layouts { li {
                    strong { (l.name) } " on " code { (l.table) } " · "
                    (if l.fields.is_empty() { "all fields".to_owned() } else { format!("{} fields", l.fields.len()) })
                    " · " a.browse href={ (base) "/layouts/" (l.name) } { "Browse records" }
                } } }
            }
            h2 { "Privilege sets" }
            ul.plain {
                li { span.badge { "[Full Access]" } " " span.badge { "[Read-Only Access]" } }
                @for p in &def.privilege_sets { li { strong { (p.name) } } }
            }
        }
        (super::schema_forms::render(&base, &who.csrf, &def, &forms.schema))
        section.card #accounts {
            h2 { "Who may open records" }
            p.muted { "Team members open records in the console (and the Data API) as their app account; its privilege set decides which records and fields they see and change." }
            @if accounts.is_empty() {
                p.empty { "No app accounts yet." }
            } @else {
                ul.plain { @for a in &accounts { li { (a.name) " · " span.badge { (a.privilege_set) } @if !a.active { " " span.badge { "inactive" } } } } }
            }
            form.inline-form method="post" action={ (base) "/accounts" } {
                (page::csrf(&who.csrf))
                div.field {
                    label for="f-account-email" { "Team member" }
                    select #f-account-email name="email" { @for m in &members { option value=(m.account.email.as_str()) { (m.account.display_name) " <" (m.account.email.as_str()) ">" } } }
                }
                div.field {
                    label for="f-account-set" { "Privilege set" }
                    select #f-account-set name="privilege_set" {
                        option value="[Full Access]" { "[Full Access]" }
                        option value="[Read-Only Access]" { "[Read-Only Access]" }
                        @for p in &def.privilege_sets { option value=(p.name) { (p.name) } }
                    }
                }
                button type="submit" { "Add app account" }
            }
        }
        section.card #editor {
            h2 { "Schema editor" }
            p.muted { "The whole definition as JSON: tables, fields, relationships, layouts, value lists, scripts and privilege sets. Changes that would discard data are refused." }
            (page::form_error(forms.definition_error.as_deref()))
            form method="post" action={ (base) "/schema" } {
                (page::csrf(&who.csrf))
                div.field.has-error[forms.definition_error.is_some()] {
                    label for="f-definition" { "Definition (JSON)" }
                    textarea #f-definition name="definition" rows="16" spellcheck="false"
                        aria-invalid=[forms.definition_error.as_ref().map(|_| "true")] {
                        (forms.definition.as_deref().unwrap_or(&json))
                    }
                }
                button.primary type="submit" { "Apply schema" }
            }
        }
        section.card #settings {
            h2 { "Settings" }
            form.inline-form method="post" action={ (base) "/rename" } novalidate {
                (page::csrf(&who.csrf))
                (Field::new("name", "App name").value(forms.rename.as_deref().unwrap_or(&record.name)).error(forms.rename_error.as_deref()).render())
                button type="submit" { "Rename" }
            }
            form.inline-form method="post" action={ (base) "/status" } {
                (page::csrf(&who.csrf))
                input type="hidden" name="status" value=(if closed { "open" } else { "closed" });
                p.muted { @if closed { "The app is closed: clients cannot connect." } @else { "Closing ends every client session and refuses new ones." } }
                button type="submit" { (if closed { "Open app" } else { "Close app" }) }
            }
        }
        section.card.danger-zone #delete {
            h2 { "Delete this app" }
            p { "Deleting destroys the app's data key: its data and every backup of it become unreadable. This cannot be undone." }
            form.inline-form method="post" action={ (base) "/delete" } data-confirm-name=(record.name) novalidate {
                (page::csrf(&who.csrf))
                (Field::new("confirm", "Type the app's name to confirm").value(&forms.confirm).error(forms.confirm_error.as_deref()).render())
                (super::stepup::code_field("code", forms.code_error.as_deref()).render())
                button.danger type="submit" { "Delete app" }
            }
        }
    };
    Ok((
        page::shell(&record.name, Nav::Team, &super::chrome(who), body),
        record,
    ))
}

fn type_name(f: &kura_apps::schema::definition::FieldDef) -> String {
    serde_json::to_value(f.kind)
        .ok()
        .and_then(|v| v.as_str().map(str::to_owned))
        .unwrap_or_default()
}

pub(super) async fn show_with(
    state: &AppState,
    who: &Signed,
    team: TeamId,
    app: AppId,
    status: StatusCode,
    forms: &Forms,
) -> Response {
    match app_page(state, who, team, app, None, forms).await {
        Ok((m, _)) => page::respond(status, m),
        Err(e) => page::api_error_page(&e),
    }
}

/// `GET /console/teams/{team}/apps/{app}`.
pub async fn show(
    State(state): State<AppState>,
    who: Signed,
    Path((team, app)): Path<(String, String)>,
    Query(q): Query<OkQuery>,
) -> Response {
    let (team, app) = match ids(&team, &app) {
        Ok(v) => v,
        Err(r) => return r.into_response(),
    };
    match app_page(&state, &who, team, app, q.ok.as_deref(), &Forms::default()).await {
        Ok((m, _)) => page::respond(StatusCode::OK, m),
        Err(e) => page::api_error_page(&e),
    }
}

/// Applies `def`; on success shows the changes, on failure the form again.
pub(super) async fn apply(
    state: &AppState,
    who: &Signed,
    team: TeamId,
    app: AppId,
    def: Definition,
    mut failed: Forms,
    on_error: fn(&mut Forms, String),
) -> Response {
    match state.apps.apply(team, app, def, false, false).await {
        Ok(report) => {
            if report.applied
                && let Err(e) = event(
                    state,
                    who,
                    team,
                    "app.schema.applied",
                    app.to_string(),
                    &report.version.to_string(),
                )
                .await
            {
                return page::api_error_page(&e);
            }
            let forms = Forms {
                changes: if report.changes.is_empty() {
                    vec!["Nothing changed.".to_owned()]
                } else {
                    report.changes
                },
                ..Forms::default()
            };
            show_with(state, who, team, app, StatusCode::OK, &forms).await
        }
        Err(e) => {
            on_error(&mut failed, page::message(&ApiError::Apps(e)));
            show_with(
                state,
                who,
                team,
                app,
                StatusCode::UNPROCESSABLE_ENTITY,
                &failed,
            )
            .await
        }
    }
}

/// The schema editor form.
#[derive(Debug, Default, Deserialize)]
pub struct SchemaForm {
    #[serde(default)]
    definition: String,
}

/// `POST …/schema`.
pub async fn put_schema(
    State(state): State<AppState>,
    Path((team, app)): Path<(String, String)>,
    p: SessionForm<SchemaForm>,
) -> Response {
    let (team, app) = match ids(&team, &app) {
        Ok(v) => v,
        Err(r) => return r.into_response(),
    };
    if let Err(e) = permit(&state, &p.who, Action::AppsOperate, team).await {
        return page::api_error_page(&e);
    }
    let text = p.form.definition;
    match serde_json::from_str::<Definition>(&text) {
        Ok(def) => {
            let failed = Forms {
                definition: Some(text),
                ..Forms::default()
            };
            apply(&state, &p.who, team, app, def, failed, |f, m| {
                f.definition_error = Some(m)
            })
            .await
        }
        Err(e) => {
            let forms = Forms {
                definition: Some(text),
                definition_error: Some(format!("The definition is not valid: {e}.")),
                ..Forms::default()
            };
            show_with(
                &state,
                &p.who,
                team,
                app,
                StatusCode::UNPROCESSABLE_ENTITY,
                &forms,
            )
            .await
        }
    }
}

/// The add-table form.
#[derive(Debug, Default, Deserialize)]
pub struct TableForm {
    #[serde(default)]
    table: String,
}

/// `POST …/tables`.
pub async fn add_table(
    State(state): State<AppState>,
    Path((team, app)): Path<(String, String)>,
    p: SessionForm<TableForm>,
) -> Response {
    let (team, app) = match ids(&team, &app) {
        Ok(v) => v,
        Err(r) => return r.into_response(),
    };
    if let Err(e) = permit(&state, &p.who, Action::AppsOperate, team).await {
        return page::api_error_page(&e);
    }
    let name = p.form.table.trim().to_owned();
    let failed = Forms {
        table: p.form.table.clone(),
        ..Forms::default()
    };
    let mut def = match state.apps.definition(team, app).await {
        Ok((_, d)) => d,
        Err(e) => return page::api_error_page(&ApiError::Apps(e)),
    };
    let table = serde_json::from_value(serde_json::json!({ "name": name }));
    match table {
        Ok(t) if !name.is_empty() => def.tables.push(t),
        _ => {
            let mut f = failed;
            f.table_error = Some("Enter a table name.".to_owned());
            return show_with(
                &state,
                &p.who,
                team,
                app,
                StatusCode::UNPROCESSABLE_ENTITY,
                &f,
            )
            .await;
        }
    }
    apply(&state, &p.who, team, app, def, failed, |f, m| {
        f.table_error = Some(m)
    })
    .await
}

/// The add-field form.
#[derive(Debug, Default, Deserialize)]
pub struct FieldForm {
    #[serde(default)]
    field_table: String,
    #[serde(default)]
    field_name: String,
    #[serde(default)]
    field_type: String,
}

/// `POST …/fields`.
pub async fn add_field(
    State(state): State<AppState>,
    Path((team, app)): Path<(String, String)>,
    p: SessionForm<FieldForm>,
) -> Response {
    let (team, app) = match ids(&team, &app) {
        Ok(v) => v,
        Err(r) => return r.into_response(),
    };
    if let Err(e) = permit(&state, &p.who, Action::AppsOperate, team).await {
        return page::api_error_page(&e);
    }
    let f = p.form;
    let failed = Forms {
        field_table: f.field_table.clone(),
        field_name: f.field_name.clone(),
        field_type: f.field_type.clone(),
        ..Forms::default()
    };
    let mut def = match state.apps.definition(team, app).await {
        Ok((_, d)) => d,
        Err(e) => return page::api_error_page(&ApiError::Apps(e)),
    };
    let field = serde_json::from_value(
        serde_json::json!({ "name": f.field_name.trim(), "type": f.field_type }),
    );
    let problem = match (
        def.tables.iter_mut().find(|t| t.name == f.field_table),
        field,
    ) {
        (None, _) => Some("Choose one of the app's tables."),
        (_, Err(_)) => Some("Choose one of the listed field types."),
        (Some(_), Ok(_)) if f.field_name.trim().is_empty() => Some("Enter a field name."),
        (Some(t), Ok(field)) => {
            t.fields.push(field);
            None
        }
    };
    if let Some(msg) = problem {
        let mut forms = failed;
        forms.field_error = Some(msg.to_owned());
        return show_with(
            &state,
            &p.who,
            team,
            app,
            StatusCode::UNPROCESSABLE_ENTITY,
            &forms,
        )
        .await;
    }
    apply(&state, &p.who, team, app, def, failed, |f, m| {
        f.field_error = Some(m)
    })
    .await
}

/// The rename form.
#[derive(Debug, Default, Deserialize)]
pub struct RenameForm {
    #[serde(default)]
    name: String,
}

/// `POST …/rename`.
pub async fn rename(
    State(state): State<AppState>,
    Path((team, app)): Path<(String, String)>,
    p: SessionForm<RenameForm>,
) -> Response {
    let (team, app) = match ids(&team, &app) {
        Ok(v) => v,
        Err(r) => return r.into_response(),
    };
    if let Err(e) = permit(&state, &p.who, Action::AppsOperate, team).await {
        return page::api_error_page(&e);
    }
    let name = p.form.name.trim().to_owned();
    match state.apps.rename_app(team, app, name.clone()).await {
        Ok(a) => match event(
            &state,
            &p.who,
            team,
            "app.renamed",
            app.to_string(),
            &a.name,
        )
        .await
        {
            Ok(()) => done(&format!("/console/teams/{team}/apps/{app}"), "app-renamed"),
            Err(e) => page::api_error_page(&e),
        },
        Err(e) => {
            let forms = Forms {
                rename: Some(p.form.name),
                rename_error: Some(page::message(&ApiError::Apps(e))),
                ..Forms::default()
            };
            show_with(
                &state,
                &p.who,
                team,
                app,
                StatusCode::UNPROCESSABLE_ENTITY,
                &forms,
            )
            .await
        }
    }
}

/// The close/open form.
#[derive(Debug, Default, Deserialize)]
pub struct StatusForm {
    #[serde(default)]
    status: String,
}

/// `POST …/status`.
pub async fn set_status(
    State(state): State<AppState>,
    Path((team, app)): Path<(String, String)>,
    p: SessionForm<StatusForm>,
) -> Response {
    let (team, app) = match ids(&team, &app) {
        Ok(v) => v,
        Err(r) => return r.into_response(),
    };
    if let Err(e) = permit(&state, &p.who, Action::AppsOperate, team).await {
        return page::api_error_page(&e);
    }
    let (status, action, ok) = match p.form.status.as_str() {
        "open" => (AppStatus::Open, "app.opened", "app-opened"),
        "closed" => (AppStatus::Closed, "app.closed", "app-closed"),
        _ => {
            return page::error_page(
                StatusCode::BAD_REQUEST,
                "Unknown state",
                "An app is open or closed; nothing was changed.",
            );
        }
    };
    match state.apps.set_status(team, app, status).await {
        Ok(a) => match event(&state, &p.who, team, action, app.to_string(), &a.name).await {
            Ok(()) => done(&format!("/console/teams/{team}/apps/{app}"), ok),
            Err(e) => page::api_error_page(&e),
        },
        Err(e) => page::api_error_page(&ApiError::Apps(e)),
    }
}

/// The delete form.
#[derive(Debug, Default, Deserialize)]
pub struct DeleteForm {
    #[serde(default)]
    confirm: String,
    #[serde(default)]
    code: String,
}

/// `POST …/delete`: only with the app's name typed exactly and a fresh code
/// from the person's authenticator app (step-up). The name is checked
/// first, so a mistyped name does not spend a code.
pub async fn delete(
    State(state): State<AppState>,
    Path((team, app)): Path<(String, String)>,
    p: SessionForm<DeleteForm>,
) -> Response {
    let (team, app) = match ids(&team, &app) {
        Ok(v) => v,
        Err(r) => return r.into_response(),
    };
    if let Err(e) = permit(&state, &p.who, Action::AppsOperate, team).await {
        return page::api_error_page(&e);
    }
    let record = match state.apps.app(team, app).await {
        Ok(r) => r,
        Err(e) => return page::api_error_page(&ApiError::Apps(e)),
    };
    if p.form.confirm != record.name {
        let forms = Forms {
            confirm: p.form.confirm,
            confirm_error: Some("Type the app's name exactly to delete it.".to_owned()),
            ..Forms::default()
        };
        return show_with(
            &state,
            &p.who,
            team,
            app,
            StatusCode::UNPROCESSABLE_ENTITY,
            &forms,
        )
        .await;
    }
    if let Err((status, message)) = super::stepup::step_up(&state, &p.who, &p.form.code).await {
        let forms = Forms {
            confirm: p.form.confirm,
            code_error: Some(message),
            ..Forms::default()
        };
        return show_with(&state, &p.who, team, app, status, &forms).await;
    }
    match state.apps.delete_app(team, app).await {
        Ok(()) => match event(
            &state,
            &p.who,
            team,
            "app.deleted",
            app.to_string(),
            &record.name,
        )
        .await
        {
            Ok(()) => done(&format!("/console/teams/{team}"), "app-deleted"),
            Err(e) => page::api_error_page(&e),
        },
        Err(e) => page::api_error_page(&ApiError::Apps(e)),
    }
}
