//! CSV import into one table of an app: the file is checked with the Data
//! API's rules and written in one transaction by `kura_apps` (all rows or,
//! at the first bad one, none), after the policy (`AppsOperate`), and
//! recorded as `data.import` as the API's import is. The form is a
//! multipart upload, so its CSRF field is checked here before anything
//! else of the body is read; `console.js` sends it with upload progress
//! where JavaScript runs, and it works as a plain form post without.

use axum::extract::{Multipart, Path, Query, State};
use axum::response::{IntoResponse as _, Response};
use http::{HeaderMap, StatusCode};
use kura_identity::Action;
use kura_types::{Actor, AppId, Outcome, SecurityEvent, TeamId};
use maud::{Markup, html};
use serde::Deserialize;

use super::apps::ids;
use super::home::allow as permit;
use super::page::{self, Nav};
use super::session::{Signed, done};
use crate::http::AppState;
use crate::http::api::auth::{SESSION_COOKIE, cookie, csrf_valid, record_event};
use crate::http::api::error::ApiError;

/// `?ok=imported&rows=&table=`.
#[derive(Debug, Default, Deserialize)]
pub struct ImportQuery {
    #[serde(default)]
    ok: Option<String>,
    #[serde(default)]
    rows: Option<u64>,
    #[serde(default)]
    table: Option<String>,
}

/// What the form kept and what was wrong.
#[derive(Debug, Default)]
struct Kept {
    table: String,
    file_error: Option<String>,
}

async fn import_page(
    state: &AppState,
    who: &Signed,
    team: TeamId,
    app: AppId,
    done: Option<(u64, &str)>,
    kept: &Kept,
) -> Result<Markup, ApiError> {
    permit(state, who, Action::AppsRead, team).await?;
    let record = state.apps.app(team, app).await.map_err(ApiError::Apps)?;
    let (_, def) = state
        .apps
        .definition(team, app)
        .await
        .map_err(ApiError::Apps)?;
    let base = format!("/console/teams/{team}/apps/{app}");
    let body = html! {
        nav.crumbs aria-label="Breadcrumb" { a href={ "/console/teams/" (team) } { "Team" } " / " a href=(base) { (record.name) } " / " span { "Import" } }
        header.page-head {
            h1 { "Import CSV" }
            p.muted { "The first row names the fields. Every value is checked like a Data API write; the rows are written all at once, or, at the first bad row, none at all." }
        }
        @if let Some((rows, table)) = done {
            p.alert.alert-ok role="status" #import-done { "Imported " (rows) " row(s) into " code { (table) } "." }
        }
        section.card #import {
            @if def.tables.is_empty() {
                p.empty { "The app has no tables yet: add one on the app's page first." }
            } @else {
                form method="post" action={ (base) "/import" } enctype="multipart/form-data" data-progress="import-progress" novalidate {
                    (page::csrf(&who.csrf))
                    div.field {
                        label for="f-table" { "Table" }
                        select #f-table name="table" {
                            @for t in &def.tables { option value=(t.name) selected[kept.table == t.name] { (t.name) } }
                        }
                    }
                    div.field.has-error[kept.file_error.is_some()] {
                        label for="f-file" { "CSV file (UTF-8)" }
                        input #f-file type="file" name="file" accept=".csv,text/csv" required
                            aria-invalid=[kept.file_error.as_ref().map(|_| "true")]
                            aria-describedby=[kept.file_error.as_ref().map(|_| "f-file-error")];
                        @if let Some(e) = &kept.file_error { p.error #f-file-error { (e) } }
                    }
                    div.progress-row #import-progress hidden {
                        progress max="100" value="0" { "0%" }
                        span.muted.progress-text role="status" { "Uploading…" }
                    }
                    button.primary type="submit" { "Import" }
                }
            }
        }
    };
    Ok(page::shell(
        "Import CSV",
        Nav::Team,
        &super::chrome(who),
        body,
    ))
}

/// `GET /console/teams/{team}/apps/{app}/import`.
pub async fn show(
    State(state): State<AppState>,
    who: Signed,
    Path((team, app)): Path<(String, String)>,
    Query(q): Query<ImportQuery>,
) -> Response {
    let (team, app) = match ids(&team, &app) {
        Ok(v) => v,
        Err(r) => return r.into_response(),
    };
    let finished = match (q.ok.as_deref(), q.rows, q.table.as_deref()) {
        (Some("imported"), Some(rows), Some(table)) => Some((rows, table)),
        _ => None,
    };
    let kept = Kept {
        table: q.table.clone().unwrap_or_default(),
        file_error: None,
    };
    match import_page(&state, &who, team, app, finished, &kept).await {
        Ok(m) => page::respond(StatusCode::OK, m),
        Err(e) => page::api_error_page(&e),
    }
}

/// The form's parts, read in order; the CSRF field must come first so a
/// forged post is refused before the file is read.
async fn read_form(
    state: &AppState,
    headers: &HeaderMap,
    who: &Signed,
    mut form: Multipart,
) -> Result<(String, Option<Vec<u8>>), Response> {
    let bad = |why: &str| {
        page::error_page(
            StatusCode::BAD_REQUEST,
            "The form could not be read",
            &format!("Nothing was imported ({why})."),
        )
    };
    let token = cookie(headers, SESSION_COOKIE).unwrap_or_default();
    let first = form.next_field().await.map_err(|_| bad("not a form"))?;
    let csrf = match first {
        Some(f) if f.name() == Some("csrf") => f.text().await.map_err(|_| bad("not a form"))?,
        _ => String::new(),
    };
    if !csrf_valid(&token, &csrf) {
        return Err(super::session::refuse_csrf(state, &who.ctx)
            .await
            .into_response());
    }
    let mut table = String::new();
    let mut file = None;
    while let Some(f) = form
        .next_field()
        .await
        .map_err(|_| bad("the upload broke off"))?
    {
        match f.name() {
            Some("table") => table = f.text().await.map_err(|_| bad("the table"))?,
            Some("file") => {
                let bytes = f.bytes().await.map_err(|_| bad("the upload broke off"))?;
                file = (!bytes.is_empty()).then(|| bytes.to_vec());
            }
            _ => {}
        }
    }
    Ok((table, file))
}

/// `POST /console/teams/{team}/apps/{app}/import` (multipart: `csrf`,
/// `table`, `file`).
pub async fn import(
    State(state): State<AppState>,
    who: Signed,
    Path((team, app)): Path<(String, String)>,
    headers: HeaderMap,
    form: Multipart,
) -> Response {
    let (team, app) = match ids(&team, &app) {
        Ok(v) => v,
        Err(r) => return r.into_response(),
    };
    let (table, file) = match read_form(&state, &headers, &who, form).await {
        Ok(v) => v,
        Err(r) => return r,
    };
    if let Err(e) = permit(&state, &who, Action::AppsOperate, team).await {
        return page::api_error_page(&e);
    }
    let refuse = |message: String| Kept {
        table: table.clone(),
        file_error: Some(message),
    };
    let outcome = match file.as_deref().map(std::str::from_utf8) {
        None => Err(refuse("Choose a CSV file to import.".to_owned())),
        Some(Err(_)) => Err(refuse(
            "The file is not UTF-8 text: save it as CSV (UTF-8) and try again.".to_owned(),
        )),
        Some(Ok(text)) => state
            .apps
            .import_csv(team, app, &table, &who.principal.account.to_string(), text)
            .await
            .map_err(|e| {
                refuse(format!(
                    "{} Nothing was imported.",
                    page::message(&ApiError::Apps(e))
                ))
            }),
    };
    match outcome {
        Ok(report) => {
            if let Err(e) = imported_event(
                &state,
                &who,
                team,
                app,
                &report,
                file.map_or(0, |f| f.len()),
            )
            .await
            {
                return page::api_error_page(&e);
            }
            let q = serde_urlencoded::to_string([
                ("rows", report.imported.to_string()),
                ("table", report.table.clone()),
            ])
            .unwrap_or_default();
            done(
                &format!("/console/teams/{team}/apps/{app}/import?{q}"),
                "imported",
            )
        }
        Err(kept) => match import_page(&state, &who, team, app, None, &kept).await {
            Ok(m) => page::invalid(m),
            Err(e) => page::api_error_page(&e),
        },
    }
}

async fn imported_event(
    state: &AppState,
    who: &Signed,
    team: TeamId,
    app: AppId,
    report: &kura_apps::import::ImportReport,
    bytes: usize,
) -> Result<(), ApiError> {
    let action =
        kura_types::Action::parse("data.import").map_err(|_| ApiError::EventNotRecorded)?;
    let e = SecurityEvent::new(
        state.clock.now(),
        Actor::Account {
            id: who.principal.account.to_string(),
        },
        action,
        Outcome::Success,
    )
    .with_team(team)
    .with_target(app.to_string())
    .with_detail("table", report.table.clone())
    .with_detail("rows", report.imported.to_string())
    .with_detail("bytes", bytes.to_string());
    record_event(state, &who.ctx, e).await
}
