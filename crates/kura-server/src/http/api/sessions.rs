//! Sign-in (password, then a second factor), listing and ending sessions.

use axum::Json;
use axum::extract::{Path, State};
use axum::response::{IntoResponse, Response};
use http::StatusCode;
use kura_identity::{MfaVerified, SessionInfo};
use kura_types::SessionId;
use secrecy::SecretString;
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use super::auth::{Auth, Ctx, Via, clear_cookie, finish, session_response, with_cookie};
use super::body::ApiJson;
use super::error::ApiError;
use super::parse_id;
use crate::http::AppState;

/// `POST /api/v1/sessions`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SignInRequest {
    /// The account's email.
    email: String,
    /// Its password.
    password: SecretString,
    /// Hand the session back in the console cookie instead of the body.
    #[serde(default)]
    cookie: bool,
}

/// Password sign-in: a session and the next step.
pub async fn sign_in(
    State(state): State<AppState>,
    ctx: Ctx,
    ApiJson(req): ApiJson<SignInRequest>,
) -> Result<Response, ApiError> {
    let audited = state
        .identity
        .at(ctx.facts())
        .sign_in_password(&req.email, &req.password, ctx.source)
        .await;
    let step = finish(&state, &ctx, audited).await?;
    let via = if req.cookie { Via::Cookie } else { Via::Bearer };
    Ok(session_response(StatusCode::CREATED, step.signed_in(), via))
}

/// A one-time code.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CodeRequest {
    /// The code.
    pub code: SecretString,
}

#[derive(Debug, Serialize)]
struct Verified {
    verified: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    recovery_codes_left: Option<u64>,
}

pub(super) fn verified_response(v: MfaVerified, via: Via) -> Response {
    match v.session {
        Some(signed) => session_response(StatusCode::OK, &signed, via),
        None => Json(Verified {
            verified: true,
            recovery_codes_left: v.recovery_codes_left,
        })
        .into_response(),
    }
}

/// Verifies a TOTP code: finishes sign-in (new token) or steps up.
pub async fn verify_totp(
    State(state): State<AppState>,
    auth: Auth,
    ApiJson(req): ApiJson<CodeRequest>,
) -> Result<Response, ApiError> {
    use secrecy::ExposeSecret as _;
    let audited = state
        .identity
        .at(auth.ctx.facts())
        .verify_totp(&auth.principal, req.code.expose_secret())
        .await;
    let v = finish(&state, &auth.ctx, audited).await?;
    Ok(verified_response(v, auth.via))
}

/// Uses a single-use recovery code instead of TOTP.
pub async fn use_recovery_code(
    State(state): State<AppState>,
    auth: Auth,
    ApiJson(req): ApiJson<CodeRequest>,
) -> Result<Response, ApiError> {
    use secrecy::ExposeSecret as _;
    let audited = state
        .identity
        .at(auth.ctx.facts())
        .use_recovery_code(&auth.principal, req.code.expose_secret())
        .await;
    let v = finish(&state, &auth.ctx, audited).await?;
    Ok(verified_response(v, auth.via))
}

/// One session, for listing.
#[derive(Debug, Serialize)]
pub struct SessionInfoOut {
    id: String,
    current: bool,
    #[serde(with = "time::serde::rfc3339")]
    created_at: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339")]
    last_seen_at: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339")]
    expires_at: OffsetDateTime,
    source: Option<String>,
}

impl From<SessionInfo> for SessionInfoOut {
    fn from(s: SessionInfo) -> Self {
        Self {
            id: s.id.to_string(),
            current: s.current,
            created_at: s.created_at,
            last_seen_at: s.last_seen_at,
            expires_at: s.expires_at,
            source: s.source,
        }
    }
}

/// My live sessions.
pub async fn list(
    State(state): State<AppState>,
    auth: Auth,
) -> Result<Json<Vec<SessionInfoOut>>, ApiError> {
    let audited = state
        .identity
        .at(auth.ctx.facts())
        .sessions(&auth.principal)
        .await;
    let sessions = finish(&state, &auth.ctx, audited).await?;
    Ok(Json(sessions.into_iter().map(Into::into).collect()))
}

/// Signs out this session.
pub async fn sign_out(State(state): State<AppState>, auth: Auth) -> Result<Response, ApiError> {
    let audited = state
        .identity
        .at(auth.ctx.facts())
        .sign_out(&auth.principal)
        .await;
    finish(&state, &auth.ctx, audited).await?;
    let cookie = (auth.via == Via::Cookie).then(clear_cookie);
    Ok(with_cookie(StatusCode::NO_CONTENT.into_response(), cookie))
}

#[derive(Debug, Serialize)]
struct Revoked {
    revoked: u64,
}

/// Signs out every session of my account.
pub async fn sign_out_everywhere(
    State(state): State<AppState>,
    auth: Auth,
) -> Result<Response, ApiError> {
    let audited = state
        .identity
        .at(auth.ctx.facts())
        .sign_out_everywhere(&auth.principal)
        .await;
    let revoked = finish(&state, &auth.ctx, audited).await?;
    let cookie = (auth.via == Via::Cookie).then(clear_cookie);
    Ok(with_cookie(
        Json(Revoked { revoked }).into_response(),
        cookie,
    ))
}

/// Ends one of my sessions.
pub async fn revoke(
    State(state): State<AppState>,
    auth: Auth,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    let id: SessionId = parse_id("id", &id)?;
    let audited = state
        .identity
        .at(auth.ctx.facts())
        .revoke_own_session(&auth.principal, id)
        .await;
    finish(&state, &auth.ctx, audited).await?;
    Ok(StatusCode::NO_CONTENT)
}
