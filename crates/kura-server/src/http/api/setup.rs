//! First-operator setup with the one-time link's token.

use axum::extract::State;
use axum::response::Response;
use http::StatusCode;
use secrecy::SecretString;
use serde::Deserialize;

use super::auth::{Ctx, Via, finish, session_response};
use super::body::ApiJson;
use super::error::ApiError;
use crate::http::AppState;

/// `POST /api/v1/setup`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SetupRequest {
    /// The token from the setup link.
    token: SecretString,
    /// The operator's email.
    email: String,
    /// The operator's display name.
    display_name: String,
    /// The operator's password.
    password: SecretString,
    /// Hand the session back in the console cookie instead of the body.
    #[serde(default)]
    cookie: bool,
}

/// Creates the first operator; the session must enrol TOTP next.
pub async fn create_first_operator(
    State(state): State<AppState>,
    ctx: Ctx,
    ApiJson(req): ApiJson<SetupRequest>,
) -> Result<Response, ApiError> {
    use secrecy::ExposeSecret as _;
    let audited = state
        .identity
        .at(ctx.facts())
        .create_first_operator(
            req.token.expose_secret(),
            &req.email,
            &req.display_name,
            &req.password,
            ctx.source,
        )
        .await;
    let signed = finish(&state, &ctx, audited).await?;
    let via = if req.cookie { Via::Cookie } else { Via::Bearer };
    Ok(session_response(StatusCode::CREATED, &signed, via))
}
