//! My personal API tokens: create (the token is shown once), list, revoke.
//! The same `kura_identity` calls as `/api/v1/tokens`, so the same policy
//! (creating one needs a recent second factor) and the same events.

use std::collections::BTreeSet;

use axum::extract::{Path, Query, State};
use axum::response::{IntoResponse as _, Response};
use http::StatusCode;
use kura_identity::{ApiTokenKind, NewApiToken};
use kura_types::ApiTokenId;
use maud::{Markup, html};
use secrecy::ExposeSecret as _;
use time::Duration;

use super::account::OkQuery;
use super::page::{self, Field, Nav};
use super::session::{SessionForm, Signed, done};
use super::signin::Empty;
use crate::http::AppState;
use crate::http::api::auth::finish;
use crate::http::api::error::ApiError;

/// What the form kept and what was wrong.
#[derive(Debug, Default)]
struct Kept {
    name: String,
    days: String,
    scopes: BTreeSet<String>,
    name_error: Option<String>,
    days_error: Option<String>,
    scopes_error: Option<String>,
    form_error: Option<String>,
    issued: Option<String>,
}

async fn tokens_page(
    state: &AppState,
    who: &Signed,
    ok: Option<&str>,
    k: &Kept,
) -> Result<Markup, ApiError> {
    let audited = state
        .identity
        .at(who.ctx.facts())
        .api_tokens(&who.principal)
        .await;
    let list = finish(state, &who.ctx, audited).await?;
    let scopes = kura_identity::token_scopes();
    let days = if k.days.is_empty() {
        "30"
    } else {
        k.days.as_str()
    };
    let body = html! {
        (page::notice(ok))
        header.page-head { h1 { "API tokens" } p.muted { "Personal tokens act as you through the admin API, limited to their scopes." } }
        @if let Some(t) = &k.issued {
            section.card.callout role="status" {
                h2 { "Token created" }
                p { "Copy it now: it is shown only once and cannot be read again." }
                p { code.secret #new-token { (t) } }
            }
        }
        section.card {
            h2 { "Your tokens" }
            @if list.is_empty() {
                p.empty { "No tokens yet." }
            } @else {
                div.table-wrap {
                    table #tokens {
                        thead { tr { th scope="col" { "Name" } th scope="col" { "Scopes" } th scope="col" { "Expires" } th scope="col" { "Last used" } th scope="col" { span.sr-only { "Actions" } } } }
                        tbody {
                            @for t in &list {
                                tr {
                                    td data-label="Name" { (t.name) @if t.revoked_at.is_some() { " " span.badge { "revoked" } } }
                                    td data-label="Scopes" { @for s in &t.scopes { code { (s) } " " } }
                                    td data-label="Expires" { (page::when(t.expires_at)) }
                                    td data-label="Last used" { (t.last_used_at.map(page::when).unwrap_or_else(|| "never".to_owned())) }
                                    td {
                                        @if t.revoked_at.is_none() {
                                            form method="post" action={ "/console/tokens/" (t.id) "/revoke" } {
                                                (page::csrf(&who.csrf))
                                                button.danger.small type="submit" { "Revoke" }
                                            }
                                        }
                                    }
                                }
                            }
                        }
                    }
                }
            }
        }
        section.card {
            h2 { "Create a token" }
            (page::form_error(k.form_error.as_deref()))
            form method="post" action="/console/tokens" novalidate {
                (page::csrf(&who.csrf))
                (Field::new("name", "Name").value(&k.name).error(k.name_error.as_deref()).hint("What will use it, such as `deploy script`.").render())
                (Field::new("days", "Expires after (days)").kind("number").value(days).error(k.days_error.as_deref()).render())
                fieldset.scopes aria-describedby=[k.scopes_error.as_ref().map(|_| "scopes-error")] {
                    legend { "Scopes" }
                    @for s in &scopes {
                        label.check { input type="checkbox" name="scope" value=(s) checked[k.scopes.contains(*s)]; " " code { (s) } }
                    }
                    @if let Some(e) = &k.scopes_error { p.error #scopes-error { (e) } }
                }
                button.primary type="submit" { "Create token" }
            }
        }
    };
    Ok(page::shell(
        "API tokens",
        Nav::Tokens,
        &super::chrome(who),
        body,
    ))
}

/// `GET /console/tokens`.
pub async fn show(
    State(state): State<AppState>,
    who: Signed,
    Query(q): Query<OkQuery>,
) -> Response {
    match tokens_page(&state, &who, q.ok.as_deref(), &Kept::default()).await {
        Ok(m) => page::respond(StatusCode::OK, m),
        Err(e) => page::api_error_page(&e),
    }
}

/// `POST /console/tokens` (fields `name`, `days` and repeated `scope`).
pub async fn create(
    State(state): State<AppState>,
    p: SessionForm<Vec<(String, String)>>,
) -> Response {
    let mut k = Kept::default();
    for (key, value) in p.form {
        match key.as_str() {
            "name" => k.name = value,
            "days" => k.days = value,
            "scope" => {
                k.scopes.insert(value);
            }
            _ => {}
        }
    }
    if k.name.trim().is_empty() {
        k.name_error = Some("Enter a name.".to_owned());
    }
    let days = k
        .days
        .trim()
        .parse::<u32>()
        .ok()
        .filter(|d| (1..=3650).contains(d));
    if days.is_none() {
        k.days_error = Some("Enter a number of days from 1 to 3650.".to_owned());
    }
    if k.scopes.is_empty() {
        k.scopes_error = Some("Choose at least one scope.".to_owned());
    }
    let invalid = k.name_error.is_some() || k.scopes_error.is_some();
    let (Some(days), false) = (days, invalid) else {
        return again(&state, &p.who, &k).await;
    };
    let new = NewApiToken {
        name: k.name.trim().to_owned(),
        kind: ApiTokenKind::Personal,
        scopes: k.scopes.clone(),
        lifetime: Duration::days(i64::from(days)),
        service: None,
    };
    let audited = state
        .identity
        .at(p.who.ctx.facts())
        .create_api_token(&p.who.principal, new)
        .await;
    match finish(&state, &p.who.ctx, audited).await {
        Ok(t) => {
            let shown = Kept {
                issued: Some(t.token.expose_secret().to_owned()),
                ..Kept::default()
            };
            match tokens_page(&state, &p.who, Some("token-created"), &shown).await {
                Ok(m) => page::respond(StatusCode::CREATED, m),
                Err(e) => page::api_error_page(&e),
            }
        }
        Err(e) => {
            k.form_error = Some(page::message(&e));
            again(&state, &p.who, &k).await
        }
    }
}

async fn again(state: &AppState, who: &Signed, k: &Kept) -> Response {
    match tokens_page(state, who, None, k).await {
        Ok(m) => page::invalid(m),
        Err(e) => page::api_error_page(&e),
    }
}

/// `POST /console/tokens/{id}/revoke`.
pub async fn revoke(
    State(state): State<AppState>,
    Path(id): Path<String>,
    p: SessionForm<Empty>,
) -> Response {
    let Ok(id) = id.parse::<ApiTokenId>() else {
        return page::Missing("token").into_response();
    };
    let audited = state
        .identity
        .at(p.who.ctx.facts())
        .revoke_api_token(&p.who.principal, id)
        .await;
    match finish(&state, &p.who.ctx, audited).await {
        Ok(()) => done("/console/tokens", "token-revoked"),
        Err(e) => page::api_error_page(&e),
    }
}
