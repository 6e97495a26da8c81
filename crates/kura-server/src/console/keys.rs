//! The operator keys page: the master key's versions with how many data
//! keys each wraps (what `kura keys status` shows), and rotating the master
//! key. Reading needs `KeysRead`; rotating needs `KeysManage`, a sensitive
//! action, so the form asks for a fresh TOTP code (step-up): the code is
//! verified first (a wrong one changes nothing), then the policy is asked
//! again with the session now counted as freshly verified. A rotation is
//! recorded as `keys.master.rotated`, as the CLI records it.

use axum::extract::{Query, State};
use axum::response::{IntoResponse, Redirect, Response};
use http::StatusCode;
use kura_events::actions;
use kura_identity::{Action, Credential, MfaMethod, Principal, Resource};
use kura_types::{Actor, Outcome, SecurityEvent};
use maud::{Markup, html};
use serde::Deserialize;

use super::page::{self, Field, Nav};
use super::session::{SessionForm, Signed};
use crate::http::AppState;
use crate::http::api::auth::{finish, record_event};
use crate::http::api::error::ApiError;

async fn permit(
    state: &AppState,
    who: &Signed,
    principal: &Principal,
    action: Action,
) -> Result<(), ApiError> {
    let audited = state.identity.check(principal, action, &Resource::Platform);
    finish(state, &who.ctx, audited).await
}

/// `?ok=`.
#[derive(Debug, Default, Deserialize)]
pub struct KeysQuery {
    #[serde(default)]
    ok: Option<String>,
}

/// The rotation form: the step-up code.
#[derive(Debug, Default, Deserialize)]
pub struct RotateForm {
    #[serde(default)]
    code: String,
}

fn internal(e: impl std::fmt::Display) -> ApiError {
    tracing::error!(error = %e, "key service failed");
    ApiError::Internal
}

async fn keys_page(
    state: &AppState,
    who: &Signed,
    ok: Option<&str>,
    code_error: Option<&str>,
) -> Result<Markup, ApiError> {
    permit(state, who, &who.principal, Action::KeysRead).await?;
    let kms = state.keys.kms();
    let versions = kms.versions().await.map_err(internal)?;
    let usage = state.keys.usage().await.map_err(internal)?;
    let notice = match ok {
        Some("rotated") => html! {
            p.alert.alert-ok role="status" { "Master key rotated: every data key is now wrapped under the current version." }
        },
        _ => html! {},
    };
    let body = html! {
        (notice)
        header.page-head {
            h1 { "Keys" }
            p.muted { "Master key " code { (kms.key_id()) } " (" (kms.provider()) "). Data keys are wrapped by it; data is never re-encrypted by a rotation." }
        }
        section.card #key-versions {
            h2 { "Master key versions" }
            div.table-wrap {
                table {
                    caption.sr-only { "Master key versions and the data keys each wraps" }
                    thead { tr { th scope="col" { "Version" } th scope="col" { "State" } th scope="col" { "Created" } th scope="col" { "Data keys" } } }
                    tbody {
                        @for v in versions.iter().rev() {
                            @let state_name = serde_json::to_value(v.state).ok().and_then(|s| s.as_str().map(str::to_owned)).unwrap_or_default();
                            tr data-version=(v.version) {
                                td data-label="Version" { (v.version) }
                                td data-label="State" { span.badge { (state_name) } }
                                td data-label="Created" { (page::when(v.created_at)) }
                                td data-label="Data keys" { (usage.by_version.get(&v.version).copied().unwrap_or(0)) }
                            }
                        }
                    }
                }
            }
            @if usage.destroyed > 0 {
                p.muted { (usage.destroyed) " data key(s) destroyed (crypto-shredded)." }
            }
        }
        section.card #rotate {
            h2 { "Rotate the master key" }
            p { "Creates a new master key version and re-wraps every data key under it while Kura keeps running. Old versions stay until you retire them with " code { "kura keys retire" } "." }
            form method="post" action="/console/operator/keys/rotate" novalidate {
                (page::csrf(&who.csrf))
                (Field::new("code", "Confirm with the current code from your authenticator app").error(code_error).autocomplete("one-time-code").render())
                button.danger type="submit" { "Rotate master key" }
            }
        }
    };
    Ok(page::shell("Keys", Nav::Keys, &super::chrome(who), body))
}

/// `GET /console/operator/keys`.
pub async fn show(
    State(state): State<AppState>,
    who: Signed,
    Query(q): Query<KeysQuery>,
) -> Response {
    match keys_page(&state, &who, q.ok.as_deref(), None).await {
        Ok(m) => page::respond(StatusCode::OK, m),
        Err(e) => page::api_error_page(&e),
    }
}

/// The principal after a second factor was verified in this request: the
/// session is now within the step-up window (the store has recorded it).
fn stepped_up(p: &Principal) -> Principal {
    let mut p = p.clone();
    if let Credential::Session {
        mfa, mfa_recent, ..
    } = &mut p.credential
    {
        *mfa = Some(MfaMethod::Totp);
        *mfa_recent = true;
    }
    p
}

/// A step-up from a form's TOTP code: verified (and recorded) through
/// Kura ID, then the principal as it now stands. On failure, the status
/// and the message to show beside the code field; nothing else happened.
pub(super) async fn step_up(
    state: &AppState,
    who: &Signed,
    code: &str,
) -> Result<Principal, (StatusCode, String)> {
    let code = code.trim();
    let verified = if code.is_empty() {
        Err(ApiError::Identity(
            kura_identity::IdentityError::InvalidCode,
        ))
    } else {
        let audited = state
            .identity
            .at(who.ctx.facts())
            .verify_totp(&who.principal, code)
            .await;
        finish(state, &who.ctx, audited).await.map(|_| ())
    };
    match verified {
        Ok(()) => Ok(stepped_up(&who.principal)),
        Err(e) => {
            let status = match e {
                ApiError::Throttled(_) => StatusCode::TOO_MANY_REQUESTS,
                _ => StatusCode::UNPROCESSABLE_ENTITY,
            };
            Err((status, page::message(&e)))
        }
    }
}

/// `POST /console/operator/keys/rotate`.
pub async fn rotate(State(state): State<AppState>, p: SessionForm<RotateForm>) -> Response {
    let who = &p.who;
    // Someone who may not even see the keys is refused before a code is
    // spent.
    if let Err(e) = permit(&state, who, &who.principal, Action::KeysRead).await {
        return page::api_error_page(&e);
    }
    let principal = match step_up(&state, who, &p.form.code).await {
        Ok(p) => p,
        Err((status, message)) => {
            return match keys_page(&state, who, None, Some(&message)).await {
                Ok(m) => page::respond(status, m),
                Err(e) => page::api_error_page(&e),
            };
        }
    };
    if let Err(e) = permit(&state, who, &principal, Action::KeysManage).await {
        return page::api_error_page(&e);
    }
    let kms = state.keys.kms();
    let report = match state.keys.rotate_master().await {
        Ok(r) => r,
        Err(e) => return page::api_error_page(&internal(e)),
    };
    let Ok(action) = kura_types::Action::parse(actions::MASTER_KEY_ROTATED) else {
        return page::api_error_page(&ApiError::EventNotRecorded);
    };
    let event = SecurityEvent::new(
        state.clock.now(),
        Actor::Account {
            id: who.principal.account.to_string(),
        },
        action,
        Outcome::Success,
    )
    .with_target("master_key")
    .with_detail("key_id", kms.key_id())
    .with_detail("version", report.current_version)
    .with_detail("rewrapped", report.rewrapped);
    if let Err(e) = record_event(&state, &who.ctx, event).await {
        return page::api_error_page(&e);
    }
    Redirect::to("/console/operator/keys?ok=rotated").into_response()
}
