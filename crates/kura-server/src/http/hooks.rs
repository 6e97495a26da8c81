//! `POST /hooks/{token}`: Kura Connect's webhook trigger.
//!
//! The token (256 random bits, hex) is the flow's unguessable address. The
//! body is read up to `connect.webhook_body_limit_bytes`; a flow whose
//! trigger asks for it must be signed (`X-Kura-Signature: sha256=<hex>`,
//! HMAC-SHA256 of the body under the flow's webhook secret, compared in
//! constant time). Oversized bodies, bad signatures and disabled flows are
//! refused, counted and recorded as `connect.webhook.refused` events. An
//! accepted call runs the flow at once; a `respond` step's status and body
//! become the answer, otherwise 202 with the run id.

use axum::Json;
use axum::body::Body;
use axum::extract::{Path, State};
use axum::response::{IntoResponse, Response};
use http::{HeaderMap, StatusCode};
use http_body_util::BodyExt as _;
use kura_connect::Connect;
use kura_store::connect::FlowRecord;
use kura_types::{Actor, Outcome, SecurityEvent};

use crate::http::{AppState, Problem};

/// The signature header.
pub const SIGNATURE_HEADER: &str = "x-kura-signature";

fn problem(status: StatusCode, slug: &str, title: &str, detail: &str) -> Response {
    let mut p = Problem::status(status).detail(detail);
    p.kind = format!("urn:kura:problem:{slug}");
    p.title = title.to_owned();
    p.into_response()
}

async fn refused(state: &AppState, flow: &FlowRecord, reason: &str, headers: &HeaderMap) {
    state.metrics.connect_webhooks_refused.inc();
    let Ok(action) = kura_types::Action::parse("connect.webhook.refused") else {
        return;
    };
    let mut e = SecurityEvent::new(state.clock.now(), Actor::Anonymous, action, Outcome::Denied)
        .with_team(flow.team)
        .with_target(format!("flow:{}", flow.id))
        .with_detail("reason", reason.to_owned());
    if let Some(ua) = headers
        .get(http::header::USER_AGENT)
        .and_then(|v| v.to_str().ok())
    {
        e = e.with_user_agent(ua.chars().take(200).collect::<String>());
    }
    if let Err(err) = state.events.record(e).await {
        tracing::error!(error = %err, "cannot record a webhook refusal");
    }
}

/// `POST /hooks/{token}`.
pub async fn receive(
    State(state): State<AppState>,
    Path(token): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let not_found = || {
        problem(
            StatusCode::NOT_FOUND,
            "not-found",
            "Not found",
            "no such webhook",
        )
    };
    if token.len() != 64 || !token.bytes().all(|b| b.is_ascii_hexdigit()) {
        return not_found();
    }
    let flow = match state.connect.store().flow_by_token(&token).await {
        Ok(Some(f)) => f,
        Ok(None) => return not_found(),
        Err(e) => {
            tracing::error!(error = %e, "webhook lookup failed");
            return Problem::status(StatusCode::INTERNAL_SERVER_ERROR).into_response();
        }
    };
    let limited = http_body_util::Limited::new(body, state.webhook_body_limit);
    let bytes = match limited.collect().await {
        Ok(c) => c.to_bytes(),
        Err(_) => {
            refused(&state, &flow, "body_too_large", &headers).await;
            return problem(
                StatusCode::PAYLOAD_TOO_LARGE,
                "too-large",
                "Body too large",
                &format!(
                    "webhook bodies are limited to {} bytes",
                    state.webhook_body_limit
                ),
            );
        }
    };
    if !flow.enabled {
        refused(&state, &flow, "flow_disabled", &headers).await;
        return problem(
            StatusCode::CONFLICT,
            "flow-disabled",
            "Flow disabled",
            "the flow is disabled; enable it to accept webhook calls",
        );
    }
    // The parsed version, cached: the run below uses the same one.
    let compiled = match state.connect.compiled(&flow).await {
        Ok(c) => c,
        Err(e) => {
            tracing::error!(error = %e, "webhook flow unreadable");
            return Problem::status(StatusCode::INTERNAL_SERVER_ERROR).into_response();
        }
    };
    let Some(signed) = Connect::webhook_signed(&compiled.document) else {
        refused(&state, &flow, "not_a_webhook_flow", &headers).await;
        return problem(
            StatusCode::CONFLICT,
            "not-a-webhook-flow",
            "Not a webhook flow",
            "the flow's trigger is not a webhook",
        );
    };
    if signed {
        let key = kura_crypto::hmac::HmacKey::new(&flow.webhook_secret);
        let ok = headers
            .get(SIGNATURE_HEADER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("sha256="))
            .is_some_and(|hex| key.verify_hex(&bytes, hex.trim()));
        if !ok {
            refused(&state, &flow, "bad_signature", &headers).await;
            return problem(
                StatusCode::UNAUTHORIZED,
                "bad-signature",
                "Bad signature",
                "X-Kura-Signature must be sha256=<hex HMAC-SHA256 of the body under the flow's webhook secret>",
            );
        }
    }
    let input = if bytes.is_empty() {
        serde_json::Value::Null
    } else {
        match serde_json::from_slice(&bytes) {
            Ok(v) => v,
            Err(e) => {
                return problem(
                    StatusCode::BAD_REQUEST,
                    "malformed-body",
                    "Malformed body",
                    &format!("the body is not JSON: {e}"),
                );
            }
        }
    };
    match state.connect.run_now(&flow, "webhook", input).await {
        Ok(done) => {
            if let Some(resp) = done.run.response.as_deref()
                && let Ok(v) = serde_json::from_str::<serde_json::Value>(resp)
            {
                let status = v["status"]
                    .as_u64()
                    .and_then(|s| u16::try_from(s).ok())
                    .and_then(|s| StatusCode::from_u16(s).ok())
                    .unwrap_or(StatusCode::OK);
                return (status, Json(v["body"].clone())).into_response();
            }
            (
                StatusCode::ACCEPTED,
                Json(serde_json::json!({
                    "run": done.run.id.to_string(),
                    "status": done.run.status.as_str(),
                })),
            )
                .into_response()
        }
        Err(e) => {
            tracing::error!(error = %e, "webhook run could not start");
            Problem::status(StatusCode::INTERNAL_SERVER_ERROR).into_response()
        }
    }
}
