//! Middleware that every request passes through.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use axum::body::to_bytes;
use axum::extract::{ConnectInfo, MatchedPath, Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use http::{HeaderName, HeaderValue, StatusCode, header};
use uuid::Uuid;

use super::{AppState, Problem};

/// The header that carries the request id both ways.
pub const REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// The id of this request, as a request extension (shared, so the layers
/// that keep it for later copy no text).
#[derive(Debug, Clone)]
pub struct RequestId(pub Arc<str>);

/// Everything every request passes through on its way in and out, as one
/// layer (a layer of its own costs each request a boxed future, a clone of
/// the inner service and copies of its state machine):
///
/// - a fresh request id (a client's own value is not trusted: ids must be
///   unique to be looked up), as a request extension and header and on the
///   response;
/// - one structured access-log line and the request metrics;
/// - problem details for bare error responses (`problem_for_bare_errors`);
/// - the security headers (`security_headers`).
///
/// The query string is never logged: tokens must not end up in logs. What
/// only the log line needs is copied only when the line will be written.
pub async fn every_request(
    State(state): State<AppState>,
    mut req: Request,
    next: Next,
) -> Response {
    let start = Instant::now();
    let mut buffer = Uuid::encode_buffer();
    let id: &str = Uuid::now_v7().hyphenated().encode_lower(&mut buffer);
    let id_header = HeaderValue::from_str(id).ok();
    let request_id = id_header.as_ref().map(|value| {
        let shared: Arc<str> = Arc::from(id);
        req.headers_mut().insert(REQUEST_ID, value.clone());
        req.extensions_mut().insert(RequestId(Arc::clone(&shared)));
        shared
    });
    let method = req.method().clone();
    let route = req.extensions().get::<MatchedPath>().cloned();
    let console = is_console(req.uri().path());
    let logged = tracing::enabled!(target: "kura::access", tracing::Level::INFO).then(|| {
        let peer = req
            .extensions()
            .get::<ConnectInfo<SocketAddr>>()
            .map(|c| c.0);
        (req.uri().path().to_owned(), peer)
    });
    state.metrics.request_started();
    let response = next.run(req).await;
    let response = problem_for_bare_errors(request_id.as_deref(), response).await;
    let mut response = security_headers(&state.headers, console, response);
    let elapsed = start.elapsed();
    let status = response.status().as_u16();
    if let Some((path, peer)) = logged {
        tracing::info!(
            target: "kura::access",
            request_id = request_id.as_deref().unwrap_or_default(),
            method = method.as_str(),
            path,
            route = super::metrics::route_name(route.as_ref()),
            status,
            duration_ms = elapsed.as_secs_f64() * 1000.0,
            peer = peer.map_or_else(|| "-".to_owned(), |p| p.to_string()),
            "request"
        );
    }
    state
        .metrics
        .request_finished(method, route, status, elapsed.as_secs_f64());
    if let Some(value) = id_header {
        response.headers_mut().insert(REQUEST_ID, value);
    }
    response
}

/// Response headers every answer carries.
#[derive(Debug)]
pub struct HeaderPolicy {
    fixed: Vec<(HeaderName, HeaderValue)>,
}

impl HeaderPolicy {
    /// The policy with HSTS for `hsts_max_age_secs`.
    pub fn new(hsts_max_age_secs: u64) -> Self {
        let mut fixed = vec![
            (
                header::X_CONTENT_TYPE_OPTIONS,
                HeaderValue::from_static("nosniff"),
            ),
            (
                header::REFERRER_POLICY,
                HeaderValue::from_static("no-referrer"),
            ),
            (header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY")),
            (
                HeaderName::from_static("cross-origin-opener-policy"),
                HeaderValue::from_static("same-origin"),
            ),
            (
                HeaderName::from_static("cross-origin-resource-policy"),
                HeaderValue::from_static("same-origin"),
            ),
            (
                HeaderName::from_static("permissions-policy"),
                HeaderValue::from_static("camera=(), microphone=(), geolocation=(), payment=()"),
            ),
        ];
        if let Ok(v) =
            HeaderValue::from_str(&format!("max-age={hsts_max_age_secs}; includeSubDomains"))
        {
            fixed.push((header::STRICT_TRANSPORT_SECURITY, v));
        }
        Self { fixed }
    }
}

/// The console's Content-Security-Policy: its own scripts, styles and
/// images only, no inline script or style, no plugins, never framed.
pub const CONSOLE_CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; font-src 'self'; connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'; object-src 'none'";

/// The API's Content-Security-Policy: nothing may load or frame a response.
pub const API_CSP: &str =
    "default-src 'none'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'";

fn is_console(path: &str) -> bool {
    path == "/console" || path.starts_with("/console/")
}

/// Adds the security headers; console pages get [`CONSOLE_CSP`], everything
/// else a deny-all CSP and `no-store`, unless a handler chose otherwise. No
/// `Server` banner is sent.
fn security_headers(policy: &HeaderPolicy, console: bool, mut response: Response) -> Response {
    let headers = response.headers_mut();
    // The fixed headers, the CSP and `Cache-Control` at most: one
    // allocation instead of the map growing as they go in.
    headers.reserve(policy.fixed.len() + 2);
    for (name, value) in &policy.fixed {
        headers.insert(name.clone(), value.clone());
    }
    headers
        .entry(header::CONTENT_SECURITY_POLICY)
        .or_insert(HeaderValue::from_static(if console {
            CONSOLE_CSP
        } else {
            API_CSP
        }));
    headers
        .entry(header::CACHE_CONTROL)
        .or_insert(HeaderValue::from_static("no-store"));
    headers.remove(header::SERVER);
    response
}

/// Error bodies are problem details whatever produced them (body-limit and
/// timeout layers, the router's 405): plain-text or empty error responses are
/// replaced, and problem bodies gain the request id.
async fn problem_for_bare_errors(request_id: Option<&str>, response: Response) -> Response {
    let status = response.status();
    if status.as_u16() < 400 {
        return response;
    }
    let content_type = response
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_owned();
    let (parts, body) = response.into_parts();
    let mut problem = if content_type.starts_with("application/problem+json") {
        match to_bytes(body, 64 * 1024).await {
            Ok(bytes) => serde_json::from_slice::<serde_json::Value>(&bytes)
                .ok()
                .and_then(|v| problem_from_json(&v, status))
                .unwrap_or_else(|| Problem::status(status)),
            Err(_) => Problem::status(status),
        }
    } else if content_type.starts_with("application/json") || content_type.starts_with("text/html")
    {
        // A handler's own JSON error (such as a protocol envelope) and a
        // console page (a form shown again with its errors) stay as they are.
        return Response::from_parts(parts, body);
    } else {
        Problem::status(status)
    };
    problem.request_id = request_id.map(str::to_owned);
    let mut fresh = problem.into_response();
    for (name, value) in parts.headers.iter() {
        if name != header::CONTENT_TYPE && name != header::CONTENT_LENGTH {
            fresh.headers_mut().insert(name.clone(), value.clone());
        }
    }
    *fresh.status_mut() = status;
    fresh
}

fn problem_from_json(v: &serde_json::Value, status: StatusCode) -> Option<Problem> {
    let mut p = Problem::status(status);
    p.kind = v.get("type")?.as_str()?.to_owned();
    p.title = v.get("title")?.as_str()?.to_owned();
    p.detail = v.get("detail").and_then(|d| d.as_str()).map(str::to_owned);
    p.errors = v.get("errors").cloned();
    Some(p)
}
