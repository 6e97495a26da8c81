//! My account, account administration and operators.

use std::collections::BTreeSet;

use axum::Json;
use axum::extract::{Path, State};
use http::StatusCode;
use kura_identity::{Account, OperatorRole};
use kura_types::AccountId;
use secrecy::SecretString;
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use super::auth::{Auth, finish};
use super::body::ApiJson;
use super::error::ApiError;
use super::parse_id;
use crate::http::AppState;

/// An account as the API shows it.
#[derive(Debug, Serialize)]
pub struct AccountOut {
    id: String,
    email: String,
    display_name: String,
    phone: Option<String>,
    status: &'static str,
    kind: &'static str,
    #[serde(with = "time::serde::rfc3339")]
    created_at: OffsetDateTime,
}

impl From<Account> for AccountOut {
    fn from(a: Account) -> Self {
        Self {
            id: a.id.to_string(),
            email: a.email.as_str().to_owned(),
            display_name: a.display_name,
            phone: a.phone,
            status: a.status.as_str(),
            kind: a.kind.as_str(),
            created_at: a.created_at,
        }
    }
}

/// `GET /api/v1/me`.
pub async fn me(State(state): State<AppState>, auth: Auth) -> Result<Json<AccountOut>, ApiError> {
    let audited = state
        .identity
        .at(auth.ctx.facts())
        .me(&auth.principal)
        .await;
    Ok(Json(finish(&state, &auth.ctx, audited).await?.into()))
}

/// `PATCH /api/v1/me`: only the display name and phone can change here;
/// anything else (email, role, team) is an unknown field.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProfilePatch {
    display_name: Option<String>,
    phone: Option<String>,
}

/// Updates my profile.
pub async fn update_me(
    State(state): State<AppState>,
    auth: Auth,
    ApiJson(patch): ApiJson<ProfilePatch>,
) -> Result<Json<AccountOut>, ApiError> {
    let current = finish(
        &state,
        &auth.ctx,
        state
            .identity
            .at(auth.ctx.facts())
            .me(&auth.principal)
            .await,
    )
    .await?;
    let display_name = patch.display_name.unwrap_or(current.display_name);
    let phone = patch.phone.or(current.phone);
    let audited = state
        .identity
        .at(auth.ctx.facts())
        .update_profile(&auth.principal, &display_name, phone.as_deref())
        .await;
    Ok(Json(finish(&state, &auth.ctx, audited).await?.into()))
}

/// `POST /api/v1/me/password`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PasswordChange {
    current_password: SecretString,
    new_password: SecretString,
}

#[derive(Debug, Serialize)]
pub struct Changed {
    revoked_sessions: u64,
    revoked_tokens: u64,
}

/// Changes my password; my other sessions and my personal API tokens end.
pub async fn change_password(
    State(state): State<AppState>,
    auth: Auth,
    ApiJson(req): ApiJson<PasswordChange>,
) -> Result<Json<Changed>, ApiError> {
    let audited = state
        .identity
        .at(auth.ctx.facts())
        .change_password(&auth.principal, &req.current_password, &req.new_password)
        .await;
    let set = finish(&state, &auth.ctx, audited).await?;
    Ok(Json(Changed {
        revoked_sessions: set.sessions_revoked,
        revoked_tokens: set.tokens_revoked,
    }))
}

/// `POST /api/v1/accounts/{id}/password-reset`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PasswordReset {
    new_password: SecretString,
}

/// Sets another account's password (equal or higher privilege only).
pub async fn reset_password(
    State(state): State<AppState>,
    auth: Auth,
    Path(id): Path<String>,
    ApiJson(req): ApiJson<PasswordReset>,
) -> Result<StatusCode, ApiError> {
    let target: AccountId = parse_id("id", &id)?;
    let audited = state
        .identity
        .at(auth.ctx.facts())
        .reset_password(&auth.principal, target, &req.new_password)
        .await;
    finish(&state, &auth.ctx, audited).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Removes another account's TOTP (equal or higher privilege only).
pub async fn reset_mfa(
    State(state): State<AppState>,
    auth: Auth,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    let target: AccountId = parse_id("id", &id)?;
    let audited = state
        .identity
        .at(auth.ctx.facts())
        .reset_mfa(&auth.principal, target)
        .await;
    finish(&state, &auth.ctx, audited).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Disables another account, ending its sessions and tokens.
pub async fn disable(
    State(state): State<AppState>,
    auth: Auth,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    let target: AccountId = parse_id("id", &id)?;
    let audited = state
        .identity
        .at(auth.ctx.facts())
        .set_account_disabled(&auth.principal, target, true)
        .await;
    finish(&state, &auth.ctx, audited).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Re-enables a disabled account (the same privilege rule as disabling);
/// its revoked sessions and tokens stay revoked.
pub async fn enable(
    State(state): State<AppState>,
    auth: Auth,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    let target: AccountId = parse_id("id", &id)?;
    let audited = state
        .identity
        .at(auth.ctx.facts())
        .set_account_disabled(&auth.principal, target, false)
        .await;
    finish(&state, &auth.ctx, audited).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// `POST /api/v1/operators`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewOperator {
    email: String,
    display_name: String,
    password: SecretString,
    roles: BTreeSet<OperatorRole>,
}

#[derive(Debug, Serialize)]
pub struct Created {
    id: String,
}

/// Creates an operator with some of my own roles.
pub async fn create_operator(
    State(state): State<AppState>,
    auth: Auth,
    ApiJson(req): ApiJson<NewOperator>,
) -> Result<(StatusCode, Json<Created>), ApiError> {
    let audited = state
        .identity
        .at(auth.ctx.facts())
        .create_operator(
            &auth.principal,
            &req.email,
            &req.display_name,
            &req.password,
            &req.roles,
        )
        .await;
    let id = finish(&state, &auth.ctx, audited).await?;
    Ok((StatusCode::CREATED, Json(Created { id: id.to_string() })))
}

/// `PUT /api/v1/operators/{id}/roles`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OperatorRoleChange {
    role: OperatorRole,
    granted: bool,
}

/// Grants or revokes an operator role.
pub async fn set_operator_role(
    State(state): State<AppState>,
    auth: Auth,
    Path(id): Path<String>,
    ApiJson(req): ApiJson<OperatorRoleChange>,
) -> Result<StatusCode, ApiError> {
    let target: AccountId = parse_id("id", &id)?;
    let audited = state
        .identity
        .at(auth.ctx.facts())
        .set_operator_role(&auth.principal, target, req.role, req.granted)
        .await;
    finish(&state, &auth.ctx, audited).await?;
    Ok(StatusCode::NO_CONTENT)
}
