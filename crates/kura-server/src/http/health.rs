//! Liveness and readiness.

use std::sync::atomic::Ordering;

use axum::Json;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use http::StatusCode;
use serde_json::json;

use super::{AppState, Problem};

/// Liveness: the process answers.
pub async fn healthz() -> Json<serde_json::Value> {
    Json(json!({ "status": "ok" }))
}

/// Readiness: the process should receive traffic. False while shutting down
/// or when the platform store does not answer.
pub async fn readyz(State(state): State<AppState>) -> Response {
    if !state.ready.load(Ordering::Acquire) {
        return Problem::status(StatusCode::SERVICE_UNAVAILABLE)
            .detail("shutting down")
            .into_response();
    }
    match state.platform.ping().await {
        Ok(()) => {
            Json(json!({ "status": "ready", "storage": state.platform.backend() })).into_response()
        }
        Err(e) => {
            tracing::error!(error = %e, "readiness check: storage does not answer");
            Problem::status(StatusCode::SERVICE_UNAVAILABLE)
                .detail("storage unavailable")
                .into_response()
        }
    }
}
