//! `POST /api/v1/teams/{team}/apps/{app}/tables/{table}/import`: CSV
//! import into one table of a hosted app.
//!
//! The body is the CSV file itself (`text/csv`, UTF-8; at most
//! `server.body_limit_bytes`). The first row names the fields; every value
//! is checked with the Data API's rules, and the rows are written in one
//! transaction: all of them, or — on the first bad row, whose line and
//! field the problem names — none. A `data.import` security event records
//! each import.

use axum::Json;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::response::{IntoResponse, Response};
use http::{HeaderMap, StatusCode, header};
use kura_identity::{Action, Resource};
use kura_types::{AppId, TeamId};
use serde::Serialize;

use super::apps::event;
use super::auth::{Auth, finish};
use super::error::ApiError;
use super::parse_id;
use crate::http::AppState;

#[derive(Debug, Serialize)]
struct ImportOut {
    table: String,
    imported: u64,
    fields: Vec<String>,
}

/// Imports a CSV file into a table.
pub async fn import_csv(
    State(state): State<AppState>,
    auth: Auth,
    Path((team, app, table)): Path<(String, String, String)>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    let team: TeamId = parse_id("team", &team)?;
    let id: AppId = parse_id("app", &app)?;
    let audited = state
        .identity
        .check(&auth.principal, Action::AppsOperate, &Resource::Team(team));
    finish(&state, &auth.ctx, audited).await?;
    let media = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .map(|v| v.trim().to_ascii_lowercase());
    if media.as_deref() != Some("text/csv") {
        return Err(ApiError::invalid(
            "content-type",
            "send the file as `text/csv` (UTF-8)",
        ));
    }
    let text = std::str::from_utf8(&body)
        .map_err(|e| ApiError::invalid("body", format!("the file is not UTF-8 text ({e})")))?;
    let report = state
        .apps
        .import_csv(team, id, &table, &auth.principal.account.to_string(), text)
        .await
        .map_err(ApiError::Apps)?;
    event(
        &state,
        &auth,
        team,
        "data.import",
        id.to_string(),
        &[
            ("table", report.table.clone()),
            ("rows", report.imported.to_string()),
            ("bytes", body.len().to_string()),
        ],
    )
    .await?;
    Ok((
        StatusCode::OK,
        Json(ImportOut {
            table: report.table,
            imported: report.imported,
            fields: report.fields,
        }),
    )
        .into_response())
}
