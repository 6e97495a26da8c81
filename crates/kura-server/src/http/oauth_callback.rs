//! `GET /hooks/oauth2/callback`: where OAuth 2.0 providers send the browser
//! back after a person authorised an `oauth2` credential.
//!
//! The `state` parameter is the credential here: it was issued by
//! `…/flow-credentials/{credential}/authorize`, is stored as its SHA-256,
//! works once and for ten minutes. The code is exchanged (with the PKCE
//! verifier) through the outbound SSRF guard and the tokens are sealed
//! under the team's key; the page says only whether it worked. Unknown,
//! used or expired states are refused and recorded as
//! `connect.credential.authorization_refused` events.

use axum::Json;
use axum::extract::{Query, State};
use axum::response::{IntoResponse, Response};
use http::StatusCode;
use kura_connect::ConnectError;
use kura_types::{Actor, Outcome, SecurityEvent};
use serde::Deserialize;
use serde_json::json;

use crate::http::AppState;
use crate::http::api::auth::{Ctx, record_event};
use crate::http::api::error::ApiError;

/// The provider's answer.
#[derive(Debug, Deserialize)]
pub struct CallbackQuery {
    state: Option<String>,
    code: Option<String>,
    error: Option<String>,
}

async fn refused(state: &AppState, ctx: &Ctx, reason: String) {
    let Ok(action) = kura_types::Action::parse("connect.credential.authorization_refused") else {
        return;
    };
    let e = SecurityEvent::new(state.clock.now(), Actor::Anonymous, action, Outcome::Denied)
        .with_target("oauth2-callback".to_owned())
        .with_detail("reason", reason);
    if let Err(err) = record_event(state, ctx, e).await {
        tracing::error!(error = ?err, "cannot record a refused OAuth callback");
    }
}

/// `GET /hooks/oauth2/callback?state=…&code=…`.
pub async fn callback(
    State(state): State<AppState>,
    ctx: Ctx,
    Query(q): Query<CallbackQuery>,
) -> Response {
    let (Some(st), Some(code)) = (q.state.as_deref(), q.code.as_deref()) else {
        let reason = match q.error {
            Some(e) => format!(
                "the provider answered {}",
                e.chars().take(100).collect::<String>()
            ),
            None => "state and code are needed".into(),
        };
        refused(&state, &ctx, reason.clone()).await;
        return ApiError::invalid("code", &reason).into_response();
    };
    match state.connect.oauth_callback(st, code).await {
        Ok((_, credential)) => (
            StatusCode::OK,
            Json(json!({
                "authorized": true,
                "credential": credential.id.to_string(),
                "name": credential.name,
            })),
        )
            .into_response(),
        Err(e) => {
            if matches!(e, ConnectError::NotFound(_) | ConnectError::Invalid(_)) {
                refused(&state, &ctx, e.to_string()).await;
            }
            ApiError::Connect(e).into_response()
        }
    }
}
