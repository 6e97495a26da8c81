//! A team's Kura Connect flows in the console: the list (name, trigger,
//! enabled, newest version, last run), creating a flow from a JSON or YAML
//! document, and the flow page (metrics, versions, the editor, enabling,
//! the manual run form and deleting). Saving, enabling and deleting live in
//! `flow_edit`, runs in `runs`.
//!
//! Every handler asks the same policy as the API (`FlowsRead` to look,
//! `FlowsManage` to change) through `api::connect::allow`, calls the same
//! `kura_connect::Connect` methods and records the same `connect.*` events;
//! another team's flow is "not found".

use axum::extract::{Path, Query, State};
use axum::response::{IntoResponse as _, Response};
use http::StatusCode;
use kura_connect::document::{FlowDocument, Trigger};
use kura_connect::validate::DocumentError;
use kura_identity::{Action, Resource};
use kura_store::connect::{FlowRecord, RunFilter, RunRecord, RunStatus};
use kura_types::{FlowId, TeamId};
use maud::{Markup, html};

use super::account::OkQuery;
use super::page::{self, Nav};
use super::session::Signed;
use crate::http::AppState;
use crate::http::api::auth::{Auth, Via, finish};
use crate::http::api::error::ApiError;

/// The window per-flow latency percentiles are computed over.
const METRICS_WINDOW_DAYS: i64 = 7;
/// The most finished runs the percentiles read (the store's page limit).
const METRICS_RUNS: usize = 500;

/// The signed-in person as the API's handlers see a caller.
pub(super) fn auth(who: &Signed) -> Auth {
    Auth {
        principal: who.principal.clone(),
        via: Via::Cookie,
        ctx: who.ctx.clone(),
    }
}

/// Asks the policy for `action` on the team, as the API does.
pub(super) async fn allow(
    state: &AppState,
    who: &Signed,
    action: Action,
    team: TeamId,
) -> Result<(), ApiError> {
    crate::http::api::connect::allow(state, &auth(who), action, &team.to_string())
        .await
        .map(|_| ())
}

/// Whether to offer the forms that change flows (each post asks again).
pub(super) fn can_manage(state: &AppState, who: &Signed, team: TeamId) -> bool {
    state
        .identity
        .check(&who.principal, Action::FlowsManage, &Resource::Team(team))
        .into_parts()
        .0
        .is_ok()
}

/// The team's name for the breadcrumbs.
pub(super) async fn team_name(
    state: &AppState,
    who: &Signed,
    team: TeamId,
) -> Result<String, ApiError> {
    let audited = state.identity.team(&who.principal, team).await;
    Ok(finish(state, &who.ctx, audited).await?.name)
}

/// Parses the team and flow of a path; anything else is "not found".
pub(super) fn ids(team: &str, flow: &str) -> Result<(TeamId, FlowId), page::Missing> {
    match (team.parse(), flow.parse()) {
        (Ok(t), Ok(f)) => Ok((t, f)),
        _ => Err(page::Missing("flow")),
    }
}

/// A store failure as the API reports it.
pub(super) fn store_err(e: kura_store::StoreError) -> ApiError {
    ApiError::Connect(e.into())
}

/// The kind of a document's trigger.
pub(super) fn trigger_kind(doc: &FlowDocument) -> &'static str {
    match doc.trigger {
        Trigger::Webhook { .. } => "webhook",
        Trigger::Manual {} => "manual",
        Trigger::Schedule { .. } => "schedule",
        Trigger::AppEvent { .. } => "app event",
    }
}

/// A run status as a badge.
pub(super) fn status_badge(s: RunStatus) -> Markup {
    let bad = matches!(s, RunStatus::Failed | RunStatus::DeadLetter);
    html! { span.badge.outcome-failure[bad] data-status=(s.as_str()) { (s.as_str()) } }
}

/// What the flow-editing forms kept and what was wrong with them.
#[derive(Debug, Default)]
pub(super) struct Forms {
    /// The document text as typed.
    pub document: Option<String>,
    /// `json` or `yaml`.
    pub format: String,
    /// The document's problems, each with its path.
    pub doc_errors: Vec<DocumentError>,
    /// Why the delete confirmation was refused.
    pub delete_error: Option<String>,
    /// The manual run's input as typed.
    pub input: Option<String>,
    /// Why the manual run's input was refused.
    pub input_error: Option<String>,
    /// The webhook secret, right after creation only.
    pub created_secret: Option<String>,
}

/// The document textarea with its problems beside it.
pub(super) fn document_field(text: &str, format: &str, errors: &[DocumentError]) -> Markup {
    let invalid = !errors.is_empty();
    html! {
        div.field {
            label for="f-format" { "Format" }
            select #f-format name="format" {
                option value="json" selected[format != "yaml"] { "JSON" }
                option value="yaml" selected[format == "yaml"] { "YAML" }
            }
        }
        div.field.has-error[invalid] {
            label for="f-document" { "Flow document" }
            p.hint #f-document-hint { "The flow as JSON or YAML: " code { "name" } ", " code { "trigger" } " and " code { "steps" } ". Every save is a new version." }
            textarea #f-document name="document" rows="18" spellcheck="false"
                aria-invalid=[invalid.then_some("true")]
                aria-describedby=(if invalid { "f-document-error f-document-hint" } else { "f-document-hint" }) {
                (text)
            }
            @if invalid {
                ul.error #f-document-error {
                    @for e in errors { li { code { (e.path) } ": " (e.message) } }
                }
            }
        }
    }
}

async fn list_page(
    state: &AppState,
    who: &Signed,
    team: TeamId,
    ok: Option<&str>,
    forms: &Forms,
) -> Result<Markup, ApiError> {
    allow(state, who, Action::FlowsRead, team).await?;
    let name = team_name(state, who, team).await?;
    let store = state.connect.store();
    let flows = store.flows(team).await.map_err(store_err)?;
    let mut rows = Vec::with_capacity(flows.len());
    for f in &flows {
        let kind = state
            .connect
            .flow(team, f.id, None)
            .await
            .map(|(_, _, doc)| trigger_kind(&doc))
            .map_err(ApiError::Connect)?;
        let last = store
            .runs(
                team,
                RunFilter {
                    flow: Some(f.id),
                    limit: 1,
                    ..RunFilter::default()
                },
            )
            .await
            .map_err(store_err)?;
        rows.push((f, kind, last.into_iter().next()));
    }
    let manage = can_manage(state, who, team);
    let base = format!("/console/teams/{team}/flows");
    let body = html! {
        (page::notice(ok))
        nav.crumbs aria-label="Breadcrumb" { a href={ "/console/teams/" (team) } { (name) } " / " span { "Flows" } }
        header.page-head {
            h1 { "Flows" }
            p.muted { "Kura Connect flows: a trigger (webhook, schedule or manual) and steps that run in order, each run recorded step by step." }
        }
        @if rows.is_empty() {
            section.card.empty #no-flows { p { "No flows yet." @if manage { " Create one below from a JSON or YAML document." } } }
        } @else {
            section.card #flows {
                div.table-wrap { table {
                    caption.sr-only { "The team's flows" }
                    thead { tr { th scope="col" { "Name" } th scope="col" { "Trigger" } th scope="col" { "Enabled" } th scope="col" { "Version" } th scope="col" { "Last run" } } }
                    tbody { @for (f, kind, last) in &rows { tr data-flow=(f.id) {
                        td data-label="Name" { a href={ (base) "/" (f.id) } { (f.name) } }
                        td data-label="Trigger" { (kind) }
                        td data-label="Enabled" { @if f.enabled { span.badge { "enabled" } } @else { span.muted { "disabled" } } }
                        td data-label="Version" { (f.version) }
                        td data-label="Last run" { @match last {
                            Some(r) => { (status_badge(r.status)) " " span.muted { (page::when(r.created_at)) } }
                            None => { span.muted { "never" } }
                        } }
                    } } }
                } }
            }
        }
        @if manage {
            section.card #new-flow {
                h2 { "Create a flow" }
                p.muted { "A new flow starts disabled; enable it on its page once it looks right." }
                form method="post" action=(base) novalidate {
                    (page::csrf(&who.csrf))
                    (document_field(forms.document.as_deref().unwrap_or(EXAMPLE), &forms.format, &forms.doc_errors))
                    button.primary type="submit" { "Create flow" }
                }
            }
        }
    };
    Ok(page::shell(
        &format!("Flows · {name}"),
        Nav::Team,
        &super::chrome(who),
        body,
    ))
}

/// The document the create form starts with.
const EXAMPLE: &str = r#"{
  "name": "Hello",
  "trigger": { "kind": "manual" },
  "steps": [
    { "id": "greet", "kind": "transform", "set": { "greeting": "'hello ' ~ input.name" } }
  ]
}"#;

/// Shows the list page again (a refused create) with `status`.
pub(super) async fn list_again(
    state: &AppState,
    who: &Signed,
    team: TeamId,
    status: StatusCode,
    forms: &Forms,
) -> Response {
    match list_page(state, who, team, None, forms).await {
        Ok(m) => page::respond(status, m),
        Err(e) => page::api_error_page(&e),
    }
}

/// `GET /console/teams/{team}/flows`.
pub async fn list(
    State(state): State<AppState>,
    who: Signed,
    Path(team): Path<String>,
    Query(q): Query<OkQuery>,
) -> Response {
    let Ok(team) = team.parse::<TeamId>() else {
        return page::Missing("team").into_response();
    };
    match list_page(&state, &who, team, q.ok.as_deref(), &Forms::default()).await {
        Ok(m) => page::respond(StatusCode::OK, m),
        Err(e) => page::api_error_page(&e),
    }
}

/// Latency percentiles (p50, p99 in ms) and how many finished runs they
/// cover, from the flow's runs created in the last week.
async fn percentiles(
    state: &AppState,
    team: TeamId,
    flow: FlowId,
) -> Result<(usize, Option<(f64, f64)>), ApiError> {
    let since = state.clock.now() - time::Duration::days(METRICS_WINDOW_DAYS);
    let runs = state
        .connect
        .store()
        .runs(
            team,
            RunFilter {
                flow: Some(flow),
                since: Some(since),
                limit: METRICS_RUNS,
                ..RunFilter::default()
            },
        )
        .await
        .map_err(store_err)?;
    let mut ms: Vec<f64> = runs.iter().filter_map(duration_ms).collect();
    ms.sort_by(f64::total_cmp);
    Ok((ms.len(), quantiles(&ms)))
}

fn duration_ms(r: &RunRecord) -> Option<f64> {
    let (s, f) = (r.started_at?, r.finished_at?);
    r.status
        .is_final()
        .then(|| (f - s).as_seconds_f64() * 1000.0)
}

/// The nearest-rank p50 and p99 of sorted values.
pub(super) fn quantiles(sorted: &[f64]) -> Option<(f64, f64)> {
    let rank = |q: f64| {
        // Nearest rank: the smallest value with at least q of the values at
        // or below it.
        let n = sorted.len() as f64;
        let i = (q * n).ceil().max(1.0) as usize - 1;
        sorted.get(i.min(sorted.len() - 1)).copied()
    };
    if sorted.is_empty() {
        return None;
    }
    Some((rank(0.5)?, rank(0.99)?))
}

fn ms(v: f64) -> String {
    if v >= 10_000.0 {
        format!("{:.1} s", v / 1000.0)
    } else {
        format!("{v:.0} ms")
    }
}

/// The flow page.
pub(super) async fn flow_page(
    state: &AppState,
    who: &Signed,
    team: TeamId,
    flow: FlowId,
    ok: Option<&str>,
    forms: &Forms,
) -> Result<Markup, ApiError> {
    allow(state, who, Action::FlowsRead, team).await?;
    let (record, version, doc) = state
        .connect
        .flow(team, flow, None)
        .await
        .map_err(ApiError::Connect)?;
    let name = team_name(state, who, team).await?;
    let store = state.connect.store();
    let versions = store.versions(team, flow).await.map_err(store_err)?;
    let metrics = store.metrics(team, flow).await.map_err(store_err)?;
    let (sampled, pct) = percentiles(state, team, flow).await?;
    let manage = can_manage(state, who, team);
    let base = format!("/console/teams/{team}/flows/{flow}");
    let kind = trigger_kind(&doc);
    let text = match &forms.document {
        Some(t) => t.clone(),
        None => serde_json::to_string_pretty(&doc).map_err(|_| ApiError::Internal)?,
    };
    let body = html! {
        (page::notice(ok))
        nav.crumbs aria-label="Breadcrumb" {
            a href={ "/console/teams/" (team) } { (name) } " / "
            a href={ "/console/teams/" (team) "/flows" } { "Flows" } " / " span { (record.name) }
        }
        header.page-head {
            h1 { (record.name) }
            p.muted {
                (kind) " trigger · version " (record.version) " · "
                @if record.enabled { span.badge #flow-state { "enabled" } } @else { span.muted #flow-state { "disabled" } }
                " · " a href={ (base) "/runs" } { "Runs" }
            }
        }
        @if let Some(secret) = &forms.created_secret {
            section.card #webhook-secret role="status" {
                h2 { "Webhook secret" }
                p { "Signed webhook requests carry " code { "X-Kura-Signature: sha256=<hex>" } ", an HMAC-SHA256 of the body under this key. It is shown only now: copy it." }
                p { code.secret { (secret) } }
            }
        }
        @if kind == "webhook" {
            section.card #webhook {
                h2 { "Webhook" }
                p { "POST JSON to " code #webhook-url { "/hooks/" (record.webhook_token) } " to start a run while the flow is enabled." }
            }
        }
        section.card #metrics {
            h2 { "Metrics" }
            ul.stats {
                li.card { "Runs" br; strong #m-runs { (metrics.runs) } }
                li.card { "Failures" br; strong #m-failed { (metrics.failed) } }
                li.card { "Succeeded" br; strong #m-succeeded { (metrics.succeeded) } }
            }
            @match pct {
                Some((p50, p99)) => p #latency { "Latency over the " (sampled) " finished run(s) of the last " (METRICS_WINDOW_DAYS) " days: p50 " strong #m-p50 { (ms(p50)) } ", p99 " strong #m-p99 { (ms(p99)) } "." },
                None => p.muted #latency { "No finished runs in the last " (METRICS_WINDOW_DAYS) " days, so no latency yet." },
            }
        }
        @if manage {
            section.card #state {
                h2 { "Trigger" }
                @if record.enabled {
                    p { "The trigger starts runs. Disabling stops new triggered runs; runs already queued go on." }
                    form method="post" action={ (base) "/disable" } { (page::csrf(&who.csrf)) button type="submit" { "Disable flow" } }
                } @else {
                    p { "The trigger does not start runs until the flow is enabled." }
                    form method="post" action={ (base) "/enable" } { (page::csrf(&who.csrf)) button.primary type="submit" { "Enable flow" } }
                }
            }
            @if kind == "manual" {
                section.card #manual-run {
                    h2 { "Run now" }
                    form method="post" action={ (base) "/runs" } novalidate {
                        (page::csrf(&who.csrf))
                        div.field.has-error[forms.input_error.is_some()] {
                            label for="f-input" { "Input (JSON)" }
                            textarea #f-input name="input" rows="5" spellcheck="false"
                                aria-invalid=[forms.input_error.as_ref().map(|_| "true")]
                                aria-describedby=[forms.input_error.as_ref().map(|_| "f-input-error")] {
                                (forms.input.as_deref().unwrap_or("{}"))
                            }
                            @if let Some(e) = &forms.input_error { p.error #f-input-error { (e) } }
                        }
                        button.primary type="submit" { "Start run" }
                    }
                }
            }
            section.card #edit {
                h2 { "Edit" }
                p.muted { "Showing version " (version.version) ", saved " (page::when(version.created_at)) "." }
                form method="post" action={ (base) "/versions" } novalidate {
                    (page::csrf(&who.csrf))
                    (document_field(&text, &forms.format, &forms.doc_errors))
                    button.primary type="submit" { "Save new version" }
                }
            }
        } @else {
            section.card #document {
                h2 { "Document" }
                pre { code { (text) } }
            }
        }
        section.card #versions {
            h2 { "Versions" }
            div.table-wrap { table {
                caption.sr-only { "Saved versions, newest first" }
                thead { tr { th scope="col" { "Version" } th scope="col" { "Saved" } th scope="col" { "By" } } }
                tbody { @for v in versions.iter().rev() { tr data-version=(v.version) {
                    td data-label="Version" { (v.version) @if v.version == record.version { " " span.badge { "current" } } }
                    td data-label="Saved" { (page::when(v.created_at)) }
                    td data-label="By" { code { (v.created_by) } }
                } } }
            } }
        }
        @if manage {
            section.card.danger-zone #delete {
                h2 { "Delete this flow" }
                p { "Deletes the flow with every version and run. Type the flow's name to confirm." }
                form method="post" action={ (base) "/delete" } novalidate {
                    (page::csrf(&who.csrf))
                    (page::Field::new("confirm", "Flow name").error(forms.delete_error.as_deref()).autocomplete("off").render())
                    button.danger type="submit" { "Delete flow" }
                }
            }
        }
    };
    Ok(page::shell(
        &format!("{} · Flows", record.name),
        Nav::Team,
        &super::chrome(who),
        body,
    ))
}

/// Shows the flow page again with `status`.
pub(super) async fn flow_again(
    state: &AppState,
    who: &Signed,
    team: TeamId,
    flow: FlowId,
    status: StatusCode,
    forms: &Forms,
) -> Response {
    match flow_page(state, who, team, flow, None, forms).await {
        Ok(m) => page::respond(status, m),
        Err(e) => page::api_error_page(&e),
    }
}

/// `GET /console/teams/{team}/flows/{flow}`.
pub async fn show(
    State(state): State<AppState>,
    who: Signed,
    Path((team, flow)): Path<(String, String)>,
    Query(q): Query<OkQuery>,
) -> Response {
    let (team, flow) = match ids(&team, &flow) {
        Ok(v) => v,
        Err(r) => return r.into_response(),
    };
    match flow_page(&state, &who, team, flow, q.ok.as_deref(), &Forms::default()).await {
        Ok(m) => page::respond(StatusCode::OK, m),
        Err(e) => page::api_error_page(&e),
    }
}

/// A flow record's path.
pub(super) fn flow_path(f: &FlowRecord) -> String {
    format!("/console/teams/{}/flows/{}", f.team, f.id)
}

#[cfg(test)]
mod tests {
    use super::quantiles;

    #[test]
    fn nearest_rank_percentiles() {
        assert_eq!(quantiles(&[]), None);
        assert_eq!(quantiles(&[5.0]), Some((5.0, 5.0)));
        let v: Vec<f64> = (1..=100).map(f64::from).collect();
        assert_eq!(quantiles(&v), Some((50.0, 99.0)));
        let v: Vec<f64> = (1..=10).map(f64::from).collect();
        assert_eq!(quantiles(&v), Some((5.0, 10.0)));
    }
}
