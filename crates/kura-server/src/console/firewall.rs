//! The operator firewall page: the platform allow and deny lists (one CIDR
//! range or address per line), replaced whole. Changing them is the
//! sensitive `platform.edge.manage`, so the form asks for a fresh TOTP code
//! (step-up). The change goes through the admin API's own
//! `replace_platform_firewall` (validation, lock-out refusal,
//! compare-and-swap on the version read, the `edge.firewall.changed` event
//! in the same transaction); an invalid entry is shown beside its list with
//! the input kept, and nothing changes.

use axum::extract::{Query, State};
use axum::response::{IntoResponse, Redirect, Response};
use http::StatusCode;
use kura_identity::{Action, Resource};
use maud::{Markup, html};
use serde::Deserialize;

use super::page::{self, Nav};
use super::session::{SessionForm, Signed};
use crate::edge::firewall::{FirewallError, FirewallPolicy, FirewallRules};
use crate::edge::{Kind, Scope};
use crate::http::AppState;
use crate::http::api::auth::finish;
use crate::http::api::edge::{PolicyOut, current, replace_platform_firewall};
use crate::http::api::error::ApiError;

/// `?ok=`.
#[derive(Debug, Default, Deserialize)]
pub struct FirewallQuery {
    #[serde(default)]
    ok: Option<String>,
}

/// The lists as typed, the version they were read at, and the step-up code.
#[derive(Debug, Default, Deserialize)]
pub struct FirewallForm {
    #[serde(default)]
    allow: String,
    #[serde(default)]
    deny: String,
    #[serde(default)]
    version: u64,
    #[serde(default)]
    code: String,
}

/// Errors to show: beside a list, beside the code, or for the whole form.
#[derive(Debug, Default)]
struct Errors {
    allow: Option<String>,
    deny: Option<String>,
    code: Option<String>,
    form: Option<String>,
}

fn lines(text: &str) -> Vec<String> {
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .map(str::to_owned)
        .collect()
}

fn textarea(name: &str, label: &str, hint: &str, value: &str, error: Option<&str>) -> Markup {
    let id = format!("f-{name}");
    let err_id = format!("f-{name}-error");
    let hint_id = format!("f-{name}-hint");
    let described = match error {
        Some(_) => format!("{err_id} {hint_id}"),
        None => hint_id.clone(),
    };
    html! {
        div.field.has-error[error.is_some()] {
            label for=(id) { (label) }
            p.hint id=(hint_id) { (hint) }
            textarea id=(id) name=(name) rows="5" spellcheck="false" aria-invalid=[error.map(|_| "true")] aria-describedby=(described) { (value) }
            @if let Some(e) = error { p.error id=(err_id) { (e) } }
        }
    }
}

async fn firewall_page(
    state: &AppState,
    who: &Signed,
    form: Option<&FirewallForm>,
    errors: &Errors,
    ok: Option<&str>,
) -> Result<Markup, ApiError> {
    let audited = state
        .identity
        .check(&who.principal, Action::EdgeManage, &Resource::Platform);
    finish(state, &who.ctx, audited).await?;
    let stored: PolicyOut<FirewallPolicy> = current(state, Scope::Platform, Kind::Firewall)?;
    let (allow, deny, version) = match form {
        Some(f) => (f.allow.clone(), f.deny.clone(), f.version),
        None => (
            stored.policy.allow.join("\n"),
            stored.policy.deny.join("\n"),
            stored.version,
        ),
    };
    let body = html! {
        @if ok == Some("saved") {
            p.alert.alert-ok role="status" { "Firewall saved: it applies to new connections now." }
        }
        header.page-head {
            h1 { "Firewall" }
            p.muted {
                "Platform-wide lists, checked before every team's own. "
                @if stored.version == 0 { "Never changed: every address is allowed." }
                @else { "Version " span #firewall-version { (stored.version) } " · changed " (stored.updated_at.as_deref().unwrap_or("")) " by " (stored.updated_by.as_deref().unwrap_or("")) }
            }
        }
        section.card #firewall {
            h2 { "Allow and deny lists" }
            (page::form_error(errors.form.as_deref()))
            form method="post" action="/console/operator/firewall" novalidate {
                (page::csrf(&who.csrf))
                input type="hidden" name="version" value=(version);
                (textarea("allow", "Allow", "One address or CIDR range per line. Empty allows every address that is not denied.", &allow, errors.allow.as_deref()))
                (textarea("deny", "Deny", "One address or CIDR range per line. Deny wins over allow.", &deny, errors.deny.as_deref()))
                (super::stepup::code_field("code", errors.code.as_deref()).render())
                button.primary type="submit" { "Save firewall" }
            }
        }
    };
    Ok(page::shell(
        "Firewall",
        Nav::Firewall,
        &super::chrome(who),
        body,
    ))
}

/// `GET /console/operator/firewall`.
pub async fn show(
    State(state): State<AppState>,
    who: Signed,
    Query(q): Query<FirewallQuery>,
) -> Response {
    match firewall_page(&state, &who, None, &Errors::default(), q.ok.as_deref()).await {
        Ok(m) => page::respond(StatusCode::OK, m),
        Err(e) => page::api_error_page(&e),
    }
}

fn again(status: StatusCode, page: Result<Markup, ApiError>) -> Response {
    match page {
        Ok(m) => page::respond(status, m),
        Err(e) => page::api_error_page(&e),
    }
}

/// `POST /console/operator/firewall`.
pub async fn save(State(state): State<AppState>, p: SessionForm<FirewallForm>) -> Response {
    let who = &p.who;
    let f = &p.form;
    let wanted = FirewallPolicy {
        allow: lines(&f.allow),
        deny: lines(&f.deny),
    };
    // Bad lists are shown beside their field before a code is spent.
    if let Err(e) = FirewallRules::parse(&wanted) {
        let message = e.to_string();
        let errors = match &e {
            FirewallError::InvalidRange { list, .. }
            | FirewallError::HostBits { list, .. }
            | FirewallError::Duplicate { list, .. }
            | FirewallError::TooMany { list, .. } => {
                if *list == "allow" {
                    Errors {
                        allow: Some(message),
                        ..Errors::default()
                    }
                } else {
                    Errors {
                        deny: Some(message),
                        ..Errors::default()
                    }
                }
            }
            FirewallError::Contradiction { .. } => Errors {
                deny: Some(message),
                ..Errors::default()
            },
        };
        return again(
            StatusCode::UNPROCESSABLE_ENTITY,
            firewall_page(&state, who, Some(f), &errors, None).await,
        );
    }
    let principal = match super::stepup::step_up(&state, who, &f.code).await {
        Ok(p) => p,
        Err((status, message)) => {
            let errors = Errors {
                code: Some(message),
                ..Errors::default()
            };
            return again(
                status,
                firewall_page(&state, who, Some(f), &errors, None).await,
            );
        }
    };
    match replace_platform_firewall(&state, &principal, &who.ctx, &wanted, Some(f.version)).await {
        Ok(_) => Redirect::to("/console/operator/firewall?ok=saved").into_response(),
        Err(e @ (ApiError::Conflict(_) | ApiError::Invalid { .. })) => {
            let message = match &e {
                ApiError::Conflict(m) => format!("Nothing was changed: {m}."),
                other => page::message(other),
            };
            let errors = Errors {
                form: Some(message),
                ..Errors::default()
            };
            let status = if matches!(e, ApiError::Conflict(_)) {
                StatusCode::CONFLICT
            } else {
                StatusCode::UNPROCESSABLE_ENTITY
            };
            again(
                status,
                firewall_page(&state, who, Some(f), &errors, None).await,
            )
        }
        Err(e) => page::api_error_page(&e),
    }
}
