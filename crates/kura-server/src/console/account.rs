//! My account: live sessions, each revocable.

use axum::extract::{Path, Query, State};
use axum::response::Response;
use http::StatusCode;
use kura_types::SessionId;
use maud::html;
use serde::Deserialize;

use super::page::{self, Nav};
use super::session::{SessionForm, Signed, done};
use super::signin::Empty;
use crate::http::AppState;
use crate::http::api::auth::finish;

/// `?ok=`.
#[derive(Debug, Default, Deserialize)]
pub struct OkQuery {
    #[serde(default)]
    pub ok: Option<String>,
}

/// `GET /console/account`.
pub async fn show(
    State(state): State<AppState>,
    who: Signed,
    Query(q): Query<OkQuery>,
) -> Response {
    let audited = state.identity.at(who.ctx.facts()).me(&who.principal).await;
    let me = match finish(&state, &who.ctx, audited).await {
        Ok(me) => me,
        Err(e) => return page::api_error_page(&e),
    };
    let audited = state
        .identity
        .at(who.ctx.facts())
        .sessions(&who.principal)
        .await;
    let sessions = match finish(&state, &who.ctx, audited).await {
        Ok(s) => s,
        Err(e) => return page::api_error_page(&e),
    };
    let audited = state
        .identity
        .at(who.ctx.facts())
        .passkeys(&who.principal)
        .await;
    let passkeys = match finish(&state, &who.ctx, audited).await {
        Ok(p) => p,
        Err(e) => return page::api_error_page(&e),
    };
    let body = html! {
        (page::notice(q.ok.as_deref()))
        header.page-head {
            h1 { "Account & sessions" }
            p.muted { (me.display_name.as_str()) " · " (me.email.as_str()) }
        }
        section.card #authenticator {
            h2 { "Authenticator app" }
            @if who.principal.mfa_enrolled {
                p { "A second factor is set up. Sensitive actions (deleting hosts and apps, rotating keys) ask for a fresh code from your authenticator app." }
            } @else {
                p.empty { "No authenticator app yet. Sensitive actions such as deleting hosts and apps ask for a fresh code from one." }
                p { a.button.primary href="/console/mfa/enrol?next=%2Fconsole%2Faccount" { "Set up an authenticator app" } }
            }
        }
        section.card #passkeys {
            h2 { "Passkeys" }
            @if passkeys.is_empty() {
                p.empty { "No passkeys yet. A passkey signs you in with your device's screen lock, with no password to type." }
            } @else {
                ul.plain {
                    @for k in &passkeys {
                        li.passkey {
                            strong { (k.name) } " · added " (page::when(k.created_at))
                            @if let Some(t) = k.last_used_at { " · last used " (page::when(t)) }
                            form.inline method="post" action={ "/console/passkeys/" (k.id) "/remove" } {
                                (page::csrf(&who.csrf))
                                button.danger.small type="submit" { "Remove" }
                            }
                        }
                    }
                }
            }
            div.inline-form.needs-webauthn hidden {
                div.field {
                    label for="f-passkey-name" { "Name for the new passkey" }
                    input #f-passkey-name type="text" value="My laptop" autocomplete="off";
                }
                button.primary #passkey-register type="button" hidden data-csrf=(who.csrf) { "Add a passkey" }
            }
            p.error #passkey-error role="alert" hidden {}
            p.muted.no-webauthn { "Adding a passkey needs a browser with WebAuthn and JavaScript." }
        }
        section.card {
            h2 { "Where you are signed in" }
            div.table-wrap {
                table {
                    caption.sr-only { "Your live sessions" }
                    thead { tr { th scope="col" { "Signed in" } th scope="col" { "Last seen" } th scope="col" { "From" } th scope="col" { "Expires" } th scope="col" { span.sr-only { "Actions" } } } }
                    tbody {
                        @for s in &sessions {
                            tr {
                                td data-label="Signed in" { (page::when(s.created_at)) @if s.current { " " span.badge { "this session" } } }
                                td data-label="Last seen" { (page::when(s.last_seen_at)) }
                                td data-label="From" { (s.source.as_deref().unwrap_or("unknown")) }
                                td data-label="Expires" { (page::when(s.expires_at)) }
                                td {
                                    @if !s.current {
                                        form method="post" action={ "/console/sessions/" (s.id) "/revoke" } {
                                            (page::csrf(&who.csrf))
                                            button.danger.small type="submit" { "Sign out this session" }
                                        }
                                    }
                                }
                            }
                        }
                    }
                }
            }
        }
    };
    page::respond(
        StatusCode::OK,
        page::shell("Account", Nav::Account, &super::chrome(&who), body),
    )
}

/// `POST /console/sessions/{id}/revoke`.
pub async fn revoke(
    State(state): State<AppState>,
    Path(id): Path<String>,
    p: SessionForm<Empty>,
) -> Response {
    let Ok(id) = id.parse::<SessionId>() else {
        return page::error_page(
            StatusCode::NOT_FOUND,
            "Not found",
            "There is no such session.",
        );
    };
    let audited = state
        .identity
        .at(p.who.ctx.facts())
        .revoke_own_session(&p.who.principal, id)
        .await;
    match finish(&state, &p.who.ctx, audited).await {
        Ok(()) => done("/console/account", "session-revoked"),
        Err(e) => page::api_error_page(&e),
    }
}

/// `POST /console/passkeys/{id}/remove`.
pub async fn remove_passkey(
    State(state): State<AppState>,
    Path(id): Path<String>,
    p: SessionForm<Empty>,
) -> Response {
    let audited = state
        .identity
        .at(p.who.ctx.facts())
        .remove_passkey(&p.who.principal, &id)
        .await;
    match finish(&state, &p.who.ctx, audited).await {
        Ok(()) => done("/console/account", "passkey-removed"),
        Err(e) => page::api_error_page(&e),
    }
}
