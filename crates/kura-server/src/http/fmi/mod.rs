//! The FileMaker Data API at `/hosts/{host}/fmi/data/{v1|v2|vLatest}/…`:
//! wire-compatible with Claris FileMaker Server's, so existing clients
//! (python-fmrest, @proofgeist/fmdapi) work unchanged when pointed at
//! `https://server/hosts/{host}`.
//!
//! Every response is FileMaker's envelope (`response`, `messages` with a
//! string `code`), with FileMaker's error codes and HTTP statuses. Sessions
//! are bearer tokens (returned in the body and in `X-FM-Data-Access-Token`)
//! that expire 15 minutes after their last use. App privilege sets decide
//! every record, field and write (`kura_apps::privileges`). Sign-ins, both
//! successful and failed, and sign-outs are security events.

pub(crate) mod browse;
mod containers;
mod meta;
mod reads;
mod records;
mod stream;
mod writes;

use std::collections::HashMap;
use std::sync::Arc;

use axum::Router;
use axum::body::Bytes;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, patch, post};
use http::{HeaderMap, HeaderValue, StatusCode, header};
use kura_apps::sessions::FmSession;
use kura_apps::{FmError, LoadedApp};
use serde_json::{Map, Value, json};

use crate::http::AppState;

/// The Data API's routes.
pub fn router() -> Router<AppState> {
    let base = "/hosts/{host}/fmi/data/{version}";
    let db = "/hosts/{host}/fmi/data/{version}/databases/{db}";
    let layout = "/hosts/{host}/fmi/data/{version}/databases/{db}/layouts/{layout}";
    Router::new()
        .route(&format!("{base}/productInfo"), get(meta::product_info))
        .route(&format!("{base}/databases"), get(meta::databases))
        .route(
            &format!("{base}/validateSession"),
            get(meta::validate_session),
        )
        .route(&format!("{db}/sessions"), post(meta::login))
        .route(&format!("{db}/sessions/"), post(meta::login))
        .route(
            &format!("{db}/sessions/{{token}}"),
            axum::routing::delete(meta::logout),
        )
        .route(&format!("{db}/layouts"), get(meta::layouts))
        .route(&format!("{db}/scripts"), get(meta::scripts))
        .route(&format!("{db}/globals"), patch(writes::globals))
        .route(layout, get(meta::layout_metadata))
        .route(
            &format!("{layout}/records"),
            get(reads::range).post(writes::create),
        )
        .route(
            &format!("{layout}/records/{{id}}"),
            get(reads::get_one)
                .patch(writes::edit)
                .post(writes::duplicate)
                .delete(writes::delete),
        )
        .route(&format!("{layout}/_find"), post(reads::find))
        .route(
            &format!("{layout}/script/{{script}}"),
            get(writes::run_script),
        )
        .route(
            &format!("{layout}/records/{{id}}/containers/{{field}}"),
            post(containers::upload),
        )
        .route(
            &format!("{layout}/records/{{id}}/containers/{{field}}/{{repetition}}"),
            post(containers::upload_repetition),
        )
        .route(
            "/hosts/{host}/fmi/containers/{app}/{table}/{rid}/{field}",
            get(containers::download),
        )
}

/// What goes in an envelope's `response`.
pub(crate) trait Answer: serde::Serialize {
    /// About how many bytes the answer serialises to.
    fn size_hint(&self) -> usize;
}

impl Answer for Value {
    fn size_hint(&self) -> usize {
        256
    }
}

/// A FileMaker envelope response.
pub(crate) fn reply(result: Result<Value, FmError>) -> Response {
    reply_with(result)
}

/// A FileMaker envelope response around any answer.
pub(crate) fn reply_with(result: Result<impl Answer, FmError>) -> Response {
    match result {
        Ok(response) => envelope(StatusCode::OK, &response, 0, "OK"),
        Err(e) => {
            let status =
                StatusCode::from_u16(e.http_status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
            envelope(status, &json!({}), e.code, &e.message)
        }
    }
}

/// The envelope around an answer, serialised into one buffer sized for it
/// up front: growing a buffer by doubling, with glibc's allocator, first
/// consolidates the free lists a page's many small values have just
/// filled, and a 50-record find paid for that about six times.
fn envelope(status: StatusCode, response: &impl Answer, code: i32, message: &str) -> Response {
    #[derive(serde::Serialize)]
    struct Envelope<'a, R> {
        response: &'a R,
        messages: [Message<'a>; 1],
    }
    #[derive(serde::Serialize)]
    struct Message<'a> {
        code: String,
        message: &'a str,
    }
    let body = Envelope {
        response,
        messages: [Message {
            code: code.to_string(),
            message,
        }],
    };
    let mut bytes = Vec::with_capacity(response.size_hint() + 64 + message.len());
    if let Err(e) = serde_json::to_writer(&mut bytes, &body) {
        // Answers are plain values and text already checked as JSON; should
        // one ever fail, the client gets a plain 500 rather than half an
        // envelope.
        tracing::error!(error = %e, "a Data API answer could not be serialised");
        return StatusCode::INTERNAL_SERVER_ERROR.into_response();
    }
    let mut r = (status, bytes).into_response();
    let headers = r.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    r
}

/// The API versions Kura answers to (they differ only in portal details
/// Kura treats the same way).
pub(crate) fn check_version(version: &str) -> Result<(), FmError> {
    match version {
        "v1" | "v2" | "vLatest" => Ok(()),
        _ => Err(FmError::code(1630)),
    }
}

/// The bearer token of a request.
pub(crate) fn bearer(headers: &HeaderMap) -> Result<String, FmError> {
    let value = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .ok_or_else(|| FmError::code(952))?;
    let (scheme, token) = value.split_once(' ').ok_or_else(|| FmError::code(952))?;
    if !scheme.eq_ignore_ascii_case("bearer") || token.trim().is_empty() {
        return Err(FmError::code(952));
    }
    Ok(token.trim().to_owned())
}

/// The app named in the URL and the caller's live session on it.
pub(crate) async fn session(
    state: &AppState,
    headers: &HeaderMap,
    host: &str,
    version: &str,
    db: &str,
) -> Result<(Arc<LoadedApp>, FmSession, String), FmError> {
    check_version(version)?;
    let token = bearer(headers)?;
    let app = state.apps.resolve(host, db).await?;
    let session = state.apps.sessions.touch(&token, app.record().id)?;
    Ok((app, session, token))
}

/// A JSON request body; an empty body is `{}`.
pub(crate) fn body_json(bytes: &Bytes) -> Result<Map<String, Value>, FmError> {
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Ok(Map::new());
    }
    match serde_json::from_slice::<Value>(bytes) {
        Ok(Value::Object(map)) => Ok(map),
        Ok(_) => Err(FmError::with(
            1710,
            "The request body must be a JSON object",
        )),
        Err(_) => Err(FmError::code(1710)),
    }
}

/// Query parameters, last value winning.
pub(crate) type Params = HashMap<String, String>;
