//! WebAuthn passkeys: registering and removing mine, using one as the
//! second factor of a sign-in (or a step-up), and signing in with one alone.
//!
//! Each ceremony is a challenge (`…/challenge`, answered with the
//! `publicKey` options for `navigator.credentials`) and an answer carrying
//! the ceremony id and the credential the authenticator produced, as the
//! WebAuthn JSON encoding writes it.

use axum::Json;
use axum::extract::{Path, State};
use axum::response::{IntoResponse, Response};
use http::StatusCode;
use kura_identity::{PasskeyChallenge, PasskeyInfo};
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use super::auth::{
    Auth, Ctx, SessionOut, Via, finish, session_parts, session_response, with_cookie,
};
use super::body::ApiJson;
use super::error::ApiError;
use super::sessions::verified_response;
use crate::http::AppState;

/// A challenge for the authenticator.
#[derive(Debug, Serialize)]
pub struct ChallengeOut {
    ceremony_id: String,
    #[serde(with = "time::serde::rfc3339")]
    expires_at: OffsetDateTime,
    options: serde_json::Value,
}

impl From<PasskeyChallenge> for ChallengeOut {
    fn from(c: PasskeyChallenge) -> Self {
        Self {
            ceremony_id: c.ceremony,
            expires_at: c.expires_at,
            options: c.options,
        }
    }
}

/// One of my passkeys.
#[derive(Debug, Serialize)]
pub struct PasskeyOut {
    id: String,
    name: String,
    credential_id: String,
    counter: u32,
    backup_eligible: bool,
    backup_state: bool,
    #[serde(with = "time::serde::rfc3339")]
    created_at: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339::option")]
    last_used_at: Option<OffsetDateTime>,
}

impl From<PasskeyInfo> for PasskeyOut {
    fn from(p: PasskeyInfo) -> Self {
        Self {
            id: p.id,
            name: p.name,
            credential_id: p.credential_id,
            counter: p.counter,
            backup_eligible: p.backup_eligible,
            backup_state: p.backup_state,
            created_at: p.created_at,
            last_used_at: p.last_used_at,
        }
    }
}

/// `POST /api/v1/me/mfa/passkeys/challenge`: starts registering a passkey.
pub async fn start_registration(
    State(state): State<AppState>,
    auth: Auth,
) -> Result<Json<ChallengeOut>, ApiError> {
    let audited = state
        .identity
        .at(auth.ctx.facts())
        .start_passkey_registration(&auth.principal)
        .await;
    Ok(Json(finish(&state, &auth.ctx, audited).await?.into()))
}

/// `POST /api/v1/me/mfa/passkeys`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Registration {
    ceremony_id: String,
    name: String,
    credential: serde_json::Value,
}

#[derive(Debug, Serialize)]
struct Registered {
    passkey: PasskeyOut,
    #[serde(skip_serializing_if = "Option::is_none")]
    recovery_codes: Option<Vec<String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    session: Option<SessionOut>,
}

/// Finishes registering a passkey: the passkey, recovery codes when it is
/// my first second factor, and a new complete session for an enrolment
/// session.
pub async fn finish_registration(
    State(state): State<AppState>,
    auth: Auth,
    ApiJson(req): ApiJson<Registration>,
) -> Result<Response, ApiError> {
    let audited = state
        .identity
        .at(auth.ctx.facts())
        .finish_passkey_registration(&auth.principal, &req.ceremony_id, &req.name, req.credential)
        .await;
    let r = finish(&state, &auth.ctx, audited).await?;
    let (session, cookie) = match &r.session {
        Some(s) => {
            let (out, cookie) = session_parts(s, auth.via);
            (Some(out), cookie)
        }
        None => (None, None),
    };
    let body = Registered {
        passkey: r.passkey.into(),
        recovery_codes: r
            .recovery_codes
            .as_ref()
            .map(|c| c.reveal().into_iter().map(str::to_owned).collect()),
        session,
    };
    Ok(with_cookie(
        (StatusCode::CREATED, Json(body)).into_response(),
        cookie,
    ))
}

/// `GET /api/v1/me/mfa/passkeys`.
pub async fn list(
    State(state): State<AppState>,
    auth: Auth,
) -> Result<Json<Vec<PasskeyOut>>, ApiError> {
    let audited = state
        .identity
        .at(auth.ctx.facts())
        .passkeys(&auth.principal)
        .await;
    let keys = finish(&state, &auth.ctx, audited).await?;
    Ok(Json(keys.into_iter().map(PasskeyOut::from).collect()))
}

/// `DELETE /api/v1/me/mfa/passkeys/{id}`.
pub async fn remove(
    State(state): State<AppState>,
    auth: Auth,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    let audited = state
        .identity
        .at(auth.ctx.facts())
        .remove_passkey(&auth.principal, &id)
        .await;
    finish(&state, &auth.ctx, audited).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// `POST /api/v1/sessions/mfa/passkey/challenge`: a challenge for my
/// passkeys, as a second factor or a step-up.
pub async fn start_mfa(
    State(state): State<AppState>,
    auth: Auth,
) -> Result<Json<ChallengeOut>, ApiError> {
    let audited = state
        .identity
        .at(auth.ctx.facts())
        .start_passkey_mfa(&auth.principal)
        .await;
    Ok(Json(finish(&state, &auth.ctx, audited).await?.into()))
}

/// An answer to a sign-in or second-factor challenge.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Assertion {
    ceremony_id: String,
    credential: serde_json::Value,
    /// Passwordless sign-in only: hand the session back in the console
    /// cookie instead of the body.
    #[serde(default)]
    cookie: bool,
}

/// `POST /api/v1/sessions/mfa/passkey`: verifies the assertion; finishes
/// sign-in (new token) or steps up.
pub async fn finish_mfa(
    State(state): State<AppState>,
    auth: Auth,
    ApiJson(req): ApiJson<Assertion>,
) -> Result<Response, ApiError> {
    let audited = state
        .identity
        .at(auth.ctx.facts())
        .finish_passkey_mfa(&auth.principal, &req.ceremony_id, req.credential)
        .await;
    let v = finish(&state, &auth.ctx, audited).await?;
    Ok(verified_response(v, auth.via))
}

/// `POST /api/v1/sessions/passkey/challenge`: a challenge for passwordless
/// sign-in with any discoverable passkey.
pub async fn start_sign_in(
    State(state): State<AppState>,
    ctx: Ctx,
) -> Result<Json<ChallengeOut>, ApiError> {
    let audited = state
        .identity
        .at(ctx.facts())
        .start_passkey_sign_in(ctx.source)
        .await;
    Ok(Json(finish(&state, &ctx, audited).await?.into()))
}

/// `POST /api/v1/sessions/passkey`: signs in with a passkey alone; the
/// session is complete and MFA-verified.
pub async fn finish_sign_in(
    State(state): State<AppState>,
    ctx: Ctx,
    ApiJson(req): ApiJson<Assertion>,
) -> Result<Response, ApiError> {
    let audited = state
        .identity
        .at(ctx.facts())
        .finish_passkey_sign_in(&req.ceremony_id, req.credential, ctx.source)
        .await;
    let step = finish(&state, &ctx, audited).await?;
    let via = if req.cookie { Via::Cookie } else { Via::Bearer };
    Ok(session_response(StatusCode::CREATED, step.signed_in(), via))
}
