//! Enrolling TOTP and managing recovery codes.

use axum::Json;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use kura_identity::RecoveryCodes;
use secrecy::ExposeSecret as _;
use serde::Serialize;

use super::auth::{Auth, SessionOut, finish, session_parts, with_cookie};
use super::body::ApiJson;
use super::error::ApiError;
use super::sessions::CodeRequest;
use crate::http::AppState;

#[derive(Debug, Serialize)]
struct Enrolment {
    secret: String,
    otpauth_uri: String,
}

/// Starts TOTP enrolment: the secret and its `otpauth://` URI, shown once.
pub async fn enroll_totp(State(state): State<AppState>, auth: Auth) -> Result<Response, ApiError> {
    let audited = state
        .identity
        .at(auth.ctx.facts())
        .enroll_totp(&auth.principal)
        .await;
    let e = finish(&state, &auth.ctx, audited).await?;
    Ok(Json(Enrolment {
        secret: e.secret_base32.expose_secret().to_owned(),
        otpauth_uri: e.otpauth_uri.expose_secret().to_owned(),
    })
    .into_response())
}

#[derive(Debug, Serialize)]
struct Confirmed {
    recovery_codes: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    session: Option<SessionOut>,
}

fn codes(c: &RecoveryCodes) -> Vec<String> {
    c.reveal().into_iter().map(str::to_owned).collect()
}

/// Confirms enrolment with a first code: recovery codes (shown once) and,
/// for an enrolment session, a new complete session.
pub async fn confirm_totp(
    State(state): State<AppState>,
    auth: Auth,
    ApiJson(req): ApiJson<CodeRequest>,
) -> Result<Response, ApiError> {
    let audited = state
        .identity
        .at(auth.ctx.facts())
        .confirm_totp(&auth.principal, req.code.expose_secret())
        .await;
    let c = finish(&state, &auth.ctx, audited).await?;
    let (session, cookie) = match &c.session {
        Some(s) => {
            let (out, cookie) = session_parts(s, auth.via);
            (Some(out), cookie)
        }
        None => (None, None),
    };
    let body = Confirmed {
        recovery_codes: codes(&c.recovery_codes),
        session,
    };
    Ok(with_cookie(Json(body).into_response(), cookie))
}

#[derive(Debug, Serialize)]
struct Regenerated {
    recovery_codes: Vec<String>,
}

/// Replaces my recovery codes (shown once).
pub async fn regenerate_recovery_codes(
    State(state): State<AppState>,
    auth: Auth,
) -> Result<Response, ApiError> {
    let audited = state
        .identity
        .at(auth.ctx.facts())
        .regenerate_recovery_codes(&auth.principal)
        .await;
    let c = finish(&state, &auth.ctx, audited).await?;
    Ok(Json(Regenerated {
        recovery_codes: codes(&c),
    })
    .into_response())
}
