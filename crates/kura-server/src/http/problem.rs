//! RFC 9457 problem details: the one error shape of Kura's own API.

use std::any::Any;

use axum::Json;
use axum::response::{IntoResponse, Response};
use http::{HeaderValue, StatusCode, header};
use serde::Serialize;

/// A problem-details response. Internal errors carry a generic message; their
/// details go to the log, never to the client.
#[derive(Debug, Clone, Serialize)]
pub struct Problem {
    /// A URI naming the problem type; `about:blank` for plain HTTP statuses.
    #[serde(rename = "type")]
    pub kind: String,
    /// A short summary of the problem type.
    pub title: String,
    /// The HTTP status.
    pub status: u16,
    /// What happened in this occurrence.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
    /// The request id, for support.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub request_id: Option<String>,
    /// Every problem of a refused document, each with its JSON path (an
    /// extension member; Kura Connect's flow documents).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub errors: Option<serde_json::Value>,
}

impl Problem {
    /// A problem for a plain HTTP status.
    pub fn status(status: StatusCode) -> Self {
        Self {
            kind: "about:blank".into(),
            title: status.canonical_reason().unwrap_or("Error").into(),
            status: status.as_u16(),
            detail: None,
            request_id: None,
            errors: None,
        }
    }

    /// Adds a detail message.
    pub fn detail(mut self, detail: impl Into<String>) -> Self {
        self.detail = Some(detail.into());
        self
    }
}

impl IntoResponse for Problem {
    fn into_response(self) -> Response {
        let status = StatusCode::from_u16(self.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let mut response = (status, Json(self)).into_response();
        response.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/problem+json"),
        );
        response
    }
}

/// The fallback for unknown routes.
pub async fn not_found() -> Problem {
    Problem::status(StatusCode::NOT_FOUND).detail("no such resource")
}

/// A handler panicked: log it, answer with a generic 500.
pub fn panic_response(panic: Box<dyn Any + Send + 'static>) -> Response {
    let message = panic
        .downcast_ref::<String>()
        .map(String::as_str)
        .or_else(|| panic.downcast_ref::<&str>().copied())
        .unwrap_or("unknown panic");
    tracing::error!(panic = message, "handler panicked");
    Problem::status(StatusCode::INTERNAL_SERVER_ERROR).into_response()
}
