//! A flow's runs in the console: the list (filtered by status and time,
//! newest first, a page at a time), a run's page (the trigger input and
//! each step's input, output, timing, attempts and error, as recorded:
//! credentials were already redacted from them when the engine stored
//! them, the same records the API answers with), and the run controls —
//! a manual run with an input document, cancel, and re-run from the start
//! or from the failed step. The policy and the `kura_connect` calls are the
//! API's (`FlowsRead` to look, `FlowsManage` to act).

use axum::extract::{Path, Query, State};
use axum::response::{IntoResponse as _, Response};
use http::StatusCode;
use kura_identity::Action;
use kura_store::connect::{RunFilter, RunRecord, RunStatus, StepRecord};
use kura_types::{RunId, TeamId};
use maud::{Markup, html};
use serde::Deserialize;
use serde_json::Value;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use super::account::OkQuery;
use super::flow_edit::Empty;
use super::flows::{self, Forms, allow, auth, can_manage, ids, status_badge, store_err, team_name};
use super::page::{self, Nav};
use super::session::{SessionForm, Signed, done};
use crate::http::AppState;
use crate::http::api::connect::audit;
use crate::http::api::error::ApiError;

/// Runs per page.
const PAGE: usize = 25;

/// The time windows the list offers.
const WINDOWS: &[(&str, &str, i64)] = &[
    ("1h", "Last hour", 3600),
    ("24h", "Last 24 hours", 86_400),
    ("7d", "Last 7 days", 7 * 86_400),
    ("30d", "Last 30 days", 30 * 86_400),
];

/// The list's filters and cursor.
#[derive(Debug, Default, Deserialize)]
pub struct RunsQuery {
    #[serde(default)]
    status: String,
    #[serde(default)]
    window: String,
    /// The previous page's last run: its creation time…
    #[serde(default)]
    before: String,
    /// …and its id (runs created at the same instant follow by id).
    #[serde(default)]
    before_id: String,
}

/// The most runs one page reads to step over runs created at the same
/// instant as the previous page's last (the store's largest page).
const READ_LIMIT: usize = 500;

fn bad_filter(message: &str) -> Response {
    page::error_page(StatusCode::BAD_REQUEST, "That filter did not work", message)
}

/// `GET /console/teams/{team}/flows/{flow}/runs`.
pub async fn list(
    State(state): State<AppState>,
    who: Signed,
    Path((team, flow)): Path<(String, String)>,
    Query(q): Query<RunsQuery>,
) -> Response {
    let (team, flow) = match ids(&team, &flow) {
        Ok(v) => v,
        Err(r) => return r.into_response(),
    };
    let status = match q.status.as_str() {
        "" => None,
        s => match RunStatus::parse(s) {
            Some(s) => Some(s),
            None => return bad_filter("Choose one of the listed statuses."),
        },
    };
    let window = match q.window.as_str() {
        "" => None,
        w => match WINDOWS.iter().find(|(k, _, _)| *k == w) {
            Some((_, _, secs)) => Some(*secs),
            None => return bad_filter("Choose one of the listed time windows."),
        },
    };
    let before = match q.before.as_str() {
        "" => None,
        b => match (
            OffsetDateTime::parse(b, &Rfc3339),
            q.before_id.parse::<RunId>(),
        ) {
            (Ok(t), Ok(id)) => Some((t, id.to_string())),
            _ => return bad_filter("The page link is malformed; start from the first page."),
        },
    };
    // The store's `until` is exclusive: read up to the instant itself and
    // drop what the previous page showed.
    let filter = RunFilter {
        flow: Some(flow),
        status,
        since: window.map(|s| state.clock.now() - time::Duration::seconds(s)),
        until: before
            .as_ref()
            .map(|(t, _)| *t + time::Duration::nanoseconds(1)),
        limit: if before.is_some() {
            READ_LIMIT
        } else {
            PAGE + 1
        },
    };
    match list_page(&state, &who, team, flow, &q, filter, before).await {
        Ok(m) => page::respond(StatusCode::OK, m),
        Err(e) => page::api_error_page(&e),
    }
}

async fn list_page(
    state: &AppState,
    who: &Signed,
    team: TeamId,
    flow: kura_types::FlowId,
    q: &RunsQuery,
    filter: RunFilter,
    before: Option<(OffsetDateTime, String)>,
) -> Result<Markup, ApiError> {
    allow(state, who, Action::FlowsRead, team).await?;
    let store = state.connect.store();
    let record = store
        .flow(team, flow)
        .await
        .map_err(store_err)?
        .ok_or(ApiError::Connect(kura_connect::ConnectError::NotFound(
            "flow",
        )))?;
    let name = team_name(state, who, team).await?;
    let mut runs = store.runs(team, filter).await.map_err(store_err)?;
    if let Some((t, id)) = &before {
        // Newest first by (created_at, id): keep what sorts after the cursor.
        runs.retain(|r| r.created_at < *t || r.id.to_string() < *id);
    }
    let more = runs.len() > PAGE;
    runs.truncate(PAGE);
    let base = flows::flow_path(&record);
    let next = more.then(|| runs.last()).flatten().map(|last| {
        let before = crate::http::api::connect::rfc3339(last.created_at);
        let id = last.id.to_string();
        let query = serde_urlencoded::to_string([
            ("status", q.status.as_str()),
            ("window", q.window.as_str()),
            ("before", before.as_str()),
            ("before_id", id.as_str()),
        ])
        .unwrap_or_default();
        format!("{base}/runs?{query}")
    });
    let body = html! {
        nav.crumbs aria-label="Breadcrumb" {
            a href={ "/console/teams/" (team) } { (name) } " / "
            a href={ "/console/teams/" (team) "/flows" } { "Flows" } " / "
            a href=(base) { (record.name) } " / " span { "Runs" }
        }
        header.page-head { h1 { "Runs of " (record.name) } }
        form.inline-form.filters method="get" action={ (base) "/runs" } {
            div.field {
                label for="f-status" { "Status" }
                select #f-status name="status" {
                    option value="" { "Any" }
                    @for s in RunStatus::ALL { option value=(s.as_str()) selected[q.status == s.as_str()] { (s.as_str()) } }
                }
            }
            div.field {
                label for="f-window" { "Started" }
                select #f-window name="window" {
                    option value="" { "Any time" }
                    @for (k, label, _) in WINDOWS { option value=(k) selected[q.window == *k] { (label) } }
                }
            }
            button type="submit" { "Filter" }
        }
        @if runs.is_empty() {
            section.card.empty #no-runs { p { "No runs match." } }
        } @else {
            section.card #runs {
                div.table-wrap { table {
                    caption.sr-only { "Runs, newest first" }
                    thead { tr { th scope="col" { "Run" } th scope="col" { "Status" } th scope="col" { "Trigger" } th scope="col" { "Version" } th scope="col" { "Created" } th scope="col" { "Duration" } } }
                    tbody { @for r in &runs { tr data-run=(r.id) {
                        td data-label="Run" { a href={ "/console/teams/" (team) "/runs/" (r.id) } { code { (short(r.id)) } } }
                        td data-label="Status" { (status_badge(r.status)) }
                        td data-label="Trigger" { (r.trigger) }
                        td data-label="Version" { (r.version) }
                        td data-label="Created" { (page::when(r.created_at)) }
                        td data-label="Duration" { (duration(r.started_at, r.finished_at)) }
                    } } }
                } }
            }
        }
        @if let Some(href) = next {
            nav.pager aria-label="Pages" {
                @if !q.before.is_empty() { a.button href={ (base) "/runs?" (serde_urlencoded::to_string([("status", q.status.as_str()), ("window", q.window.as_str())]).unwrap_or_default()) } { "Newest" } }
                a.button #older href=(href) { "Older runs" }
            }
        } @else if !q.before.is_empty() {
            nav.pager aria-label="Pages" { a.button href={ (base) "/runs" } { "Newest" } }
        }
    };
    Ok(page::shell(
        &format!("Runs · {}", record.name),
        Nav::Team,
        &super::chrome(who),
        body,
    ))
}

/// A run id's last eight characters: the random end of a time-ordered id
/// (runs started in the same millisecond share the beginning).
fn short(id: RunId) -> String {
    let s = id.to_string();
    s[s.len().saturating_sub(8)..].to_owned()
}

fn duration(start: Option<OffsetDateTime>, end: Option<OffsetDateTime>) -> String {
    match (start, end) {
        (Some(s), Some(e)) => format!("{:.0} ms", (e - s).as_seconds_f64() * 1000.0),
        (Some(_), None) => "running".into(),
        _ => "—".into(),
    }
}

/// Stored JSON text, pretty for reading (as it is if it does not parse).
fn pretty(text: &str) -> String {
    serde_json::from_str::<Value>(text)
        .ok()
        .and_then(|v| serde_json::to_string_pretty(&v).ok())
        .unwrap_or_else(|| text.to_owned())
}

async fn team_run(state: &AppState, team: TeamId, run: RunId) -> Result<RunRecord, ApiError> {
    state
        .connect
        .store()
        .run(run)
        .await
        .map_err(store_err)?
        .filter(|r| r.team == team)
        .ok_or(ApiError::Connect(kura_connect::ConnectError::NotFound(
            "run",
        )))
}

fn run_ids(team: &str, run: &str) -> Result<(TeamId, RunId), page::Missing> {
    match (team.parse(), run.parse()) {
        (Ok(t), Ok(r)) => Ok((t, r)),
        _ => Err(page::Missing("run")),
    }
}

fn step_card(s: &StepRecord) -> Markup {
    html! {
        li.card.step data-step=(s.step) data-status=(s.status) {
            h3 { code { (s.step) } " " span.badge.outcome-failure[s.status == "failed"] { (s.status) } }
            dl.record-fields {
                dt { "Attempts" } dd { (s.attempts) }
                dt { "Started" } dd { (page::when(s.started_at)) }
                dt { "Duration" } dd { (duration(Some(s.started_at), s.finished_at)) }
                @if let Some(e) = &s.error { dt { "Error" } dd.error { (e) } }
            }
            details open[s.status == "failed"] {
                summary { "Input" }
                pre { code { (pretty(&s.input)) } }
            }
            @if let Some(o) = &s.output {
                details { summary { "Output" } pre { code { (pretty(o)) } } }
            }
        }
    }
}

/// `GET /console/teams/{team}/runs/{run}`.
pub async fn show(
    State(state): State<AppState>,
    who: Signed,
    Path((team, run)): Path<(String, String)>,
    Query(q): Query<OkQuery>,
) -> Response {
    let (team, run) = match run_ids(&team, &run) {
        Ok(v) => v,
        Err(r) => return r.into_response(),
    };
    match run_page(&state, &who, team, run, q.ok.as_deref(), None).await {
        Ok(m) => page::respond(StatusCode::OK, m),
        Err(e) => page::api_error_page(&e),
    }
}

async fn run_page(
    state: &AppState,
    who: &Signed,
    team: TeamId,
    run: RunId,
    ok: Option<&str>,
    error: Option<&str>,
) -> Result<Markup, ApiError> {
    allow(state, who, Action::FlowsRead, team).await?;
    let r = team_run(state, team, run).await?;
    let store = state.connect.store();
    let steps = store.steps(r.id).await.map_err(store_err)?;
    let flow = store.flow(team, r.flow).await.map_err(store_err)?;
    let name = team_name(state, who, team).await?;
    let manage = can_manage(state, who, team);
    let has_failed_step = steps.iter().any(|s| s.status == "failed");
    let base = format!("/console/teams/{team}/runs/{}", r.id);
    let body = html! {
        (page::notice(ok))
        (page::form_error(error))
        nav.crumbs aria-label="Breadcrumb" {
            a href={ "/console/teams/" (team) } { (name) } " / "
            a href={ "/console/teams/" (team) "/flows" } { "Flows" } " / "
            @if let Some(f) = &flow {
                a href=(flows::flow_path(f)) { (f.name) } " / "
                a href={ (flows::flow_path(f)) "/runs" } { "Runs" } " / "
            }
            span { code { (short(r.id)) } }
        }
        header.page-head {
            h1 { "Run " code { (short(r.id)) } " " (status_badge(r.status)) }
            p.muted { (r.trigger) " run of version " (r.version) " · created " (page::when(r.created_at)) " · " (duration(r.started_at, r.finished_at)) }
        }
        @if let Some(e) = &r.error { p.alert.alert-error #run-error { (e) } }
        @if manage {
            section.card #run-actions {
                h2 { "Actions" }
                @if r.status.is_final() {
                    form.inline-form method="post" action={ (base) "/rerun" } {
                        (page::csrf(&who.csrf))
                        input type="hidden" name="from" value="start";
                        button type="submit" { "Re-run from the start" }
                    }
                    @if has_failed_step {
                        form.inline-form method="post" action={ (base) "/rerun" } {
                            (page::csrf(&who.csrf))
                            input type="hidden" name="from" value="failed_step";
                            button.primary type="submit" { "Re-run from the failed step" }
                        }
                    }
                } @else {
                    form.inline-form method="post" action={ (base) "/cancel" } {
                        (page::csrf(&who.csrf))
                        button.danger type="submit" { "Cancel run" }
                    }
                }
            }
        }
        section.card #trigger-input {
            h2 { "Trigger input" }
            pre { code { (pretty(&r.input)) } }
        }
        section #steps {
            h2 { "Steps" }
            @if steps.is_empty() {
                p.card.empty { "No step has run yet." @if let Some(n) = &r.next_step { " Next: " code { (n) } "." } }
            } @else {
                ol.plain { @for s in &steps { (step_card(s)) } }
            }
        }
        @if let Some(resp) = &r.response {
            section.card #response { h2 { "Response" } pre { code { (pretty(resp)) } } }
        }
    };
    Ok(page::shell(
        &format!("Run {}", short(r.id)),
        Nav::Team,
        &super::chrome(who),
        body,
    ))
}

async fn run_again(
    state: &AppState,
    who: &Signed,
    team: TeamId,
    run: RunId,
    status: StatusCode,
    error: &str,
) -> Response {
    match run_page(state, who, team, run, None, Some(error)).await {
        Ok(m) => page::respond(status, m),
        Err(e) => page::api_error_page(&e),
    }
}

/// `POST /console/teams/{team}/runs/{run}/cancel`.
pub async fn cancel(
    State(state): State<AppState>,
    Path((team, run)): Path<(String, String)>,
    p: SessionForm<Empty>,
) -> Response {
    let (team, run) = match run_ids(&team, &run) {
        Ok(v) => v,
        Err(r) => return r.into_response(),
    };
    let who = &p.who;
    if let Err(e) = allow(&state, who, Action::FlowsManage, team).await {
        return page::api_error_page(&e);
    }
    let r = match team_run(&state, team, run).await {
        Ok(r) => r,
        Err(e) => return page::api_error_page(&e),
    };
    let caller = auth(who);
    let decorate = |e| caller.ctx.decorate(e);
    let cancelled = match state
        .connect
        .cancel_run(team, r.id, r.flow, &audit(&caller, &decorate))
        .await
    {
        Ok(c) => c,
        Err(e) => return page::api_error_page(&ApiError::Connect(e)),
    };
    if !cancelled {
        let msg = format!(
            "The run is already {}; nothing was changed.",
            r.status.as_str()
        );
        return run_again(&state, who, team, run, StatusCode::CONFLICT, &msg).await;
    }
    done(
        &format!("/console/teams/{team}/runs/{run}"),
        "run-cancelled",
    )
}

/// The re-run form: `start` or `failed_step`.
#[derive(Debug, Default, Deserialize)]
pub struct RerunForm {
    #[serde(default)]
    from: String,
}

/// `POST /console/teams/{team}/runs/{run}/rerun`: a new run, whose page
/// the browser is sent to.
pub async fn rerun(
    State(state): State<AppState>,
    Path((team, run)): Path<(String, String)>,
    p: SessionForm<RerunForm>,
) -> Response {
    let (team, run) = match run_ids(&team, &run) {
        Ok(v) => v,
        Err(r) => return r.into_response(),
    };
    let who = &p.who;
    if let Err(e) = allow(&state, who, Action::FlowsManage, team).await {
        return page::api_error_page(&e);
    }
    let from_failed = match p.form.from.as_str() {
        "start" => false,
        "failed_step" => true,
        _ => {
            return page::error_page(
                StatusCode::BAD_REQUEST,
                "The form could not be read",
                "Re-run from the start or from the failed step; nothing was changed.",
            );
        }
    };
    match state.connect.rerun(team, run, from_failed).await {
        Ok(new) => done(
            &format!("/console/teams/{team}/runs/{}", new.id),
            "run-started",
        ),
        Err(e @ kura_connect::ConnectError::Invalid(_)) => {
            let msg = page::message(&ApiError::Connect(e));
            run_again(
                &state,
                who,
                team,
                run,
                StatusCode::UNPROCESSABLE_ENTITY,
                &msg,
            )
            .await
        }
        Err(e) => page::api_error_page(&ApiError::Connect(e)),
    }
}

/// The manual run form: the input document.
#[derive(Debug, Default, Deserialize)]
pub struct StartForm {
    #[serde(default)]
    input: String,
}

/// `POST /console/teams/{team}/flows/{flow}/runs`: queues a manual run of
/// the newest version with the input (as the API's manual runs).
pub async fn start(
    State(state): State<AppState>,
    Path((team, flow)): Path<(String, String)>,
    p: SessionForm<StartForm>,
) -> Response {
    let (team, flow) = match ids(&team, &flow) {
        Ok(v) => v,
        Err(r) => return r.into_response(),
    };
    let who = &p.who;
    if let Err(e) = allow(&state, who, Action::FlowsManage, team).await {
        return page::api_error_page(&e);
    }
    let text = p.form.input.trim();
    let input = if text.is_empty() {
        Value::Object(serde_json::Map::new())
    } else {
        match serde_json::from_str::<Value>(text) {
            Ok(v) => v,
            Err(e) => {
                let forms = Forms {
                    input: Some(p.form.input.clone()),
                    input_error: Some(format!(
                        "The input is not valid JSON: {e}. No run was started."
                    )),
                    ..Forms::default()
                };
                return flows::flow_again(
                    &state,
                    who,
                    team,
                    flow,
                    StatusCode::UNPROCESSABLE_ENTITY,
                    &forms,
                )
                .await;
            }
        }
    };
    let record = match state.connect.store().flow(team, flow).await {
        Ok(Some(r)) => r,
        Ok(None) => return page::Missing("flow").into_response(),
        Err(e) => return page::api_error_page(&store_err(e)),
    };
    match state.connect.start_run(&record, "manual", input).await {
        Ok(run) => done(
            &format!("/console/teams/{team}/runs/{}", run.id),
            "run-started",
        ),
        Err(e) => page::api_error_page(&ApiError::Connect(e)),
    }
}
