//! The forms that change a flow: create (from a JSON or YAML document),
//! save a new version, enable, disable and delete (after typing the flow's
//! name). Each asks the policy for `FlowsManage`, calls `kura_connect` as
//! the API's handlers do and records the same `connect.flow.*` event; a
//! refused document is shown again with each problem's path beside the
//! field, the text kept, and nothing saved.

use axum::extract::{Path, State};
use axum::response::{IntoResponse as _, Response};
use http::StatusCode;
use kura_connect::validate::{DocumentError, Format, parse_text};
use kura_connect::{SaveError, SavedFlow};
use kura_identity::Action;
use kura_types::TeamId;
use serde::Deserialize;
use serde_json::Value;

use super::flows::{self, Forms, allow, auth, flow_again, ids, list_again};
use super::page;
use super::session::{SessionForm, done};
use crate::http::AppState;
use crate::http::api::connect::audit;
use crate::http::api::error::ApiError;

/// The document form.
#[derive(Debug, Default, Deserialize)]
pub struct DocumentForm {
    #[serde(default)]
    document: String,
    #[serde(default)]
    format: String,
}

/// Parses the text in the chosen format.
fn parse(form: &DocumentForm) -> Result<Value, Vec<DocumentError>> {
    let format = match form.format.as_str() {
        "" | "json" => Format::Json,
        "yaml" => Format::Yaml,
        _ => {
            return Err(vec![DocumentError {
                path: "$".into(),
                message: "choose JSON or YAML".into(),
            }]);
        }
    };
    parse_text(&form.document, format)
}

fn kept(form: &DocumentForm, doc_errors: Vec<DocumentError>) -> Forms {
    Forms {
        document: Some(form.document.clone()),
        format: form.format.clone(),
        doc_errors,
        ..Forms::default()
    }
}

/// The list page again with the create form's text and its problems.
async fn refused(
    state: &AppState,
    p: &SessionForm<DocumentForm>,
    team: TeamId,
    errors: Vec<DocumentError>,
) -> Response {
    let forms = kept(&p.form, errors);
    list_again(
        state,
        &p.who,
        team,
        StatusCode::UNPROCESSABLE_ENTITY,
        &forms,
    )
    .await
}

/// `POST /console/teams/{team}/flows`: creates a disabled flow and shows
/// its page with the webhook secret, once.
pub async fn create(
    State(state): State<AppState>,
    Path(team): Path<String>,
    p: SessionForm<DocumentForm>,
) -> Response {
    let Ok(team) = team.parse::<TeamId>() else {
        return page::Missing("team").into_response();
    };
    let who = &p.who;
    if let Err(e) = allow(&state, who, Action::FlowsManage, team).await {
        return page::api_error_page(&e);
    }
    let value = match parse(&p.form) {
        Ok(v) => v,
        Err(errors) => return refused(&state, &p, team, errors).await,
    };
    let caller = auth(who);
    let decorate = |e| caller.ctx.decorate(e);
    let saved = state
        .connect
        .create_flow(team, &audit(&caller, &decorate), value)
        .await;
    let SavedFlow { flow, .. } = match saved {
        Ok(s) => s,
        Err(SaveError::Invalid(errors)) => return refused(&state, &p, team, errors).await,
        Err(SaveError::Other(e)) => return page::api_error_page(&ApiError::Connect(e)),
    };
    let forms = Forms {
        created_secret: Some(hex::encode(&flow.webhook_secret)),
        ..Forms::default()
    };
    match flows::flow_page(&state, who, team, flow.id, Some("flow-created"), &forms).await {
        Ok(m) => page::respond(StatusCode::CREATED, m),
        Err(e) => page::api_error_page(&e),
    }
}

/// `POST /console/teams/{team}/flows/{flow}/versions`: saves a new version.
pub async fn save(
    State(state): State<AppState>,
    Path((team, flow)): Path<(String, String)>,
    p: SessionForm<DocumentForm>,
) -> Response {
    let (team, flow) = match ids(&team, &flow) {
        Ok(v) => v,
        Err(r) => return r.into_response(),
    };
    let who = &p.who;
    if let Err(e) = allow(&state, who, Action::FlowsManage, team).await {
        return page::api_error_page(&e);
    }
    let errors = match parse(&p.form) {
        Ok(value) => {
            let caller = auth(who);
            let decorate = |e| caller.ctx.decorate(e);
            match state
                .connect
                .update_flow(team, flow, &audit(&caller, &decorate), value)
                .await
            {
                Ok(SavedFlow { flow: saved, .. }) => {
                    return done(&flows::flow_path(&saved), "flow-saved");
                }
                Err(SaveError::Invalid(errors)) => errors,
                Err(SaveError::Other(e)) => return page::api_error_page(&ApiError::Connect(e)),
            }
        }
        Err(errors) => errors,
    };
    flow_again(
        &state,
        who,
        team,
        flow,
        StatusCode::UNPROCESSABLE_ENTITY,
        &kept(&p.form, errors),
    )
    .await
}

/// The enable, disable and run-control forms carry only the CSRF token.
#[derive(Debug, Default, Deserialize)]
pub struct Empty {}

async fn set_enabled(
    state: AppState,
    team: String,
    flow: String,
    p: SessionForm<Empty>,
    enabled: bool,
) -> Response {
    let (team, flow) = match ids(&team, &flow) {
        Ok(v) => v,
        Err(r) => return r.into_response(),
    };
    let who = &p.who;
    if let Err(e) = allow(&state, who, Action::FlowsManage, team).await {
        return page::api_error_page(&e);
    }
    let caller = auth(who);
    let decorate = |e| caller.ctx.decorate(e);
    let record = match state
        .connect
        .set_enabled(team, flow, enabled, &audit(&caller, &decorate))
        .await
    {
        Ok(r) => r,
        Err(e) => return page::api_error_page(&ApiError::Connect(e)),
    };
    let ok = if enabled {
        "flow-enabled"
    } else {
        "flow-disabled"
    };
    done(&flows::flow_path(&record), ok)
}

/// `POST /console/teams/{team}/flows/{flow}/enable`.
pub async fn enable(
    State(state): State<AppState>,
    Path((team, flow)): Path<(String, String)>,
    p: SessionForm<Empty>,
) -> Response {
    set_enabled(state, team, flow, p, true).await
}

/// `POST /console/teams/{team}/flows/{flow}/disable`.
pub async fn disable(
    State(state): State<AppState>,
    Path((team, flow)): Path<(String, String)>,
    p: SessionForm<Empty>,
) -> Response {
    set_enabled(state, team, flow, p, false).await
}

/// The delete form: the flow's name, typed.
#[derive(Debug, Default, Deserialize)]
pub struct DeleteForm {
    #[serde(default)]
    confirm: String,
}

/// `POST /console/teams/{team}/flows/{flow}/delete`: only when the typed
/// name matches.
pub async fn delete(
    State(state): State<AppState>,
    Path((team, flow)): Path<(String, String)>,
    p: SessionForm<DeleteForm>,
) -> Response {
    let (team, flow) = match ids(&team, &flow) {
        Ok(v) => v,
        Err(r) => return r.into_response(),
    };
    let who = &p.who;
    if let Err(e) = allow(&state, who, Action::FlowsManage, team).await {
        return page::api_error_page(&e);
    }
    let store = state.connect.store();
    let record = match store.flow(team, flow).await {
        Ok(Some(r)) => r,
        Ok(None) => return page::Missing("flow").into_response(),
        Err(e) => return page::api_error_page(&flows::store_err(e)),
    };
    if p.form.confirm.trim() != record.name {
        let forms = Forms {
            delete_error: Some(format!(
                "Type the flow's name, {}, exactly; nothing was deleted.",
                record.name
            )),
            ..Forms::default()
        };
        return flow_again(
            &state,
            who,
            team,
            flow,
            StatusCode::UNPROCESSABLE_ENTITY,
            &forms,
        )
        .await;
    }
    let caller = auth(who);
    let decorate = |e| caller.ctx.decorate(e);
    if let Err(e) = state
        .connect
        .delete_flow(team, flow, &audit(&caller, &decorate))
        .await
    {
        return page::api_error_page(&ApiError::Connect(e));
    }
    done(&format!("/console/teams/{team}/flows"), "flow-deleted")
}
