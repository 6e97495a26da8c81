//! The edge as middleware: firewall, rate limits, then the WAF, before any
//! handler. A refused request gets a short problem body with the request id
//! and nothing about which rule refused it; the security event says that.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use axum::body::{Body, to_bytes};
use axum::extract::{ConnectInfo, Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use http::{HeaderMap, HeaderName, HeaderValue, StatusCode, header};
use serde_json::{Value, json};

use super::ratelimit::{Decision, Family, RateKeys, credential_key};
use super::report::{FIREWALL_BLOCKED, RATE_LIMITED, Refusal, WAF_BLOCKED, WAF_DETECTED};
use super::waf::{Finding, Mode, RequestView, RuleId};
use super::{Edge, Target};
use crate::http::middleware::RequestId;
use crate::http::{AppState, Problem};

/// The client's address after trusted-proxy resolution, as a request
/// extension for handlers and logs.
#[derive(Debug, Clone, Copy)]
pub struct ClientAddr(pub IpAddr);

const RATELIMIT: HeaderName = HeaderName::from_static("ratelimit");
const RATELIMIT_POLICY: HeaderName = HeaderName::from_static("ratelimit-policy");

/// The edge middleware.
pub async fn edge(State(state): State<AppState>, req: Request, next: Next) -> Response {
    let edge = &state.edge;
    if !edge.enabled() {
        return next.run(req).await;
    }
    inspect(edge, req, next).await
}

fn header_values<'a>(h: &'a HeaderMap, name: &HeaderName) -> Vec<&'a str> {
    h.get_all(name)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .collect()
}

fn credential(h: &HeaderMap) -> Option<[u8; 16]> {
    if let Some(v) = h.get(header::AUTHORIZATION) {
        return Some(credential_key(v.as_bytes()));
    }
    h.get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(k, _)| *k == crate::http::api::SESSION_COOKIE)
        .map(|(_, v)| credential_key(v.as_bytes()))
}

fn inspectable(h: &HeaderMap) -> bool {
    h.get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(|v| {
            v.split(';')
                .next()
                .unwrap_or("")
                .trim()
                .to_ascii_lowercase()
        })
        .is_some_and(|t| {
            t == "application/json"
                || t.ends_with("+json")
                || t == "application/x-www-form-urlencoded"
                || t == "multipart/form-data"
        })
}

async fn inspect(edge: &Edge, mut req: Request, next: Next) -> Response {
    let peer = req
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|c| c.0.ip());
    let client = peer.map(|p| {
        edge.proxies().client_ip(
            p,
            &header_values(req.headers(), &header::FORWARDED),
            &header_values(req.headers(), &HeaderName::from_static("x-forwarded-for")),
        )
    });
    if let Some(ip) = client {
        req.extensions_mut().insert(ClientAddr(ip));
    }
    let request_id = req
        .extensions()
        .get::<RequestId>()
        .map(|r| Arc::clone(&r.0));
    let rid = request_id.as_deref();
    // The URI shares the request head's buffer: no copy of the path.
    let uri = req.uri().clone();
    let path = uri.path();
    let snapshot = edge.snapshot();
    let target = snapshot.target(path);
    let refuse = |action, rule: String, status, details: Vec<(&'static str, Value)>| {
        let refusal = Refusal {
            action,
            source: client,
            rule,
            team: target.team,
        };
        let fm = super::ratelimit::is_data_api(path);
        async move { refused(edge, refusal, status, rid, details, fm).await }
    };

    // The firewall: platform, team and host lists.
    if let Some(scope) = snapshot.refusing_scope(client, target) {
        return refuse(
            FIREWALL_BLOCKED,
            scope.to_string(),
            StatusCode::FORBIDDEN,
            vec![("path", json!(path))],
        )
        .await;
    }

    // Rate limits.
    let family = Family::of(req.method(), path);
    let keys = RateKeys {
        source: client,
        credential: credential(req.headers()),
        team: target.team.map(|t| t.as_uuid()),
    };
    let decision = snapshot.rates().check(family, keys);
    if let Decision::Limited {
        family,
        kind,
        retry_after_secs,
        limit,
        per_minute,
    } = decision
    {
        let mut response = refuse(
            RATE_LIMITED,
            format!("{}.{}", family.as_str(), kind.as_str()),
            StatusCode::TOO_MANY_REQUESTS,
            vec![("limit", json!(limit)), ("per_minute", json!(per_minute))],
        )
        .await;
        let h = response.headers_mut();
        if let Ok(v) = HeaderValue::from_str(&retry_after_secs.to_string()) {
            h.insert(header::RETRY_AFTER, v);
        }
        rate_headers(h, family, limit, per_minute, 0, retry_after_secs);
        return response;
    }

    // The WAF, first on the request line and headers.
    let modes = snapshot.modes(target);
    let api = path.starts_with("/api/")
        || super::ratelimit::is_data_api(path)
        || path.starts_with("/hooks/");
    let verdict = edge.waf().inspect_head(
        RequestView {
            method: req.method(),
            path,
            query: req.uri().query(),
            headers: req.headers(),
            api,
        },
        modes,
    );
    if let Some(response) = judge(edge, &verdict.findings, client, target, rid).await {
        return response;
    }

    // Then on the body, buffered up to the family's limit.
    if inspectable(req.headers()) {
        let limit = if family == Family::SignIn {
            edge.body_limits().sign_in
        } else {
            edge.body_limits().other
        };
        let declared = req
            .headers()
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<usize>().ok());
        if declared.is_some_and(|n| n > limit) {
            // In detect or off mode the body goes on uninspected.
            let finding = Finding {
                rule: RuleId::BodyTooLarge,
                location: "headers",
                mode: modes.get(RuleId::BodyTooLarge),
            };
            if let Some(response) = judge(edge, &[finding], client, target, rid).await {
                return response;
            }
        } else {
            let (parts, body) = req.into_parts();
            let bytes = match to_bytes(body, limit).await {
                Ok(bytes) => bytes,
                Err(_) => {
                    // The body is gone either way: too large, or the client
                    // stopped sending it.
                    let finding = Finding {
                        rule: RuleId::BodyTooLarge,
                        location: "body",
                        mode: Mode::Block,
                    };
                    return judge(edge, &[finding], client, target, rid)
                        .await
                        .unwrap_or_else(|| {
                            Problem::status(StatusCode::PAYLOAD_TOO_LARGE).into_response()
                        });
                }
            };
            let verdict = edge.waf().inspect_body(&parts.headers, &bytes, modes);
            if let Some(response) = judge(edge, &verdict.findings, client, target, rid).await {
                return response;
            }
            req = Request::from_parts(parts, Body::from(bytes));
        }
    }

    let mut response = next.run(req).await;
    if let Decision::Allowed {
        family,
        limit,
        remaining,
        reset_secs,
        per_minute,
    } = decision
        && limit > 0
    {
        rate_headers(
            response.headers_mut(),
            family,
            limit,
            per_minute,
            remaining,
            reset_secs,
        );
    }
    response
}

/// Records WAF findings; answers when one blocks.
async fn judge(
    edge: &Edge,
    findings: &[Finding],
    client: Option<IpAddr>,
    target: Target,
    request_id: Option<&str>,
) -> Option<Response> {
    let mut blocked = None;
    for f in findings {
        let action = match f.mode {
            Mode::Block => WAF_BLOCKED,
            Mode::Detect => WAF_DETECTED,
            Mode::Off => continue,
        };
        let refusal = Refusal {
            action,
            source: client,
            rule: f.rule.id().to_string(),
            team: target.team,
        };
        let details = vec![
            ("rule_name", json!(f.rule.name())),
            ("location", json!(f.location)),
            ("mode", json!(f.mode.as_str())),
        ];
        if f.mode == Mode::Block {
            blocked = Some(
                refused(
                    edge,
                    refusal,
                    f.rule.status(),
                    request_id,
                    details,
                    target.data_api,
                )
                .await,
            );
            break;
        }
        if let Some(first) = edge.reporter().first_of(refusal)
            && let Err(e) = edge
                .reporter()
                .record_first(&first, request_id, details)
                .await
        {
            // A detect-only match describes a request that goes ahead anyway;
            // failing it because the log is unavailable would turn detect
            // into block, so it is logged instead.
            tracing::error!(error = %e, "WAF detection event not recorded");
        }
    }
    blocked
}

/// Records a refusal (the first of its kind this window, durably) and
/// builds the generic answer.
async fn refused(
    edge: &Edge,
    refusal: Refusal,
    status: StatusCode,
    request_id: Option<&str>,
    details: Vec<(&'static str, Value)>,
    data_api: bool,
) -> Response {
    if let Some(first) = edge.reporter().first_of(refusal)
        && let Err(e) = edge
            .reporter()
            .record_first(&first, request_id, details)
            .await
    {
        // The refusal stands whether or not it could be recorded: failing
        // open would let an attacker who fills the disk through the log.
        tracing::error!(error = %e, "edge refusal event not recorded");
    }
    if data_api {
        // Data API clients need FileMaker's envelope on every answer;
        // 960 ("Parameter is invalid") is the code for a refused request.
        let message = if status == StatusCode::TOO_MANY_REQUESTS {
            "Too many requests; retry after the time in Retry-After".to_owned()
        } else {
            format!(
                "The request was refused by the platform's security rules; quote request id {} to support",
                request_id.unwrap_or("-")
            )
        };
        let body = json!({
            "response": {},
            "messages": [{ "code": "960", "message": message }],
        });
        return (status, axum::Json(body)).into_response();
    }
    let mut problem = Problem::status(status);
    problem.title = match status {
        StatusCode::TOO_MANY_REQUESTS => "Too many requests".into(),
        StatusCode::FORBIDDEN => "Request blocked".into(),
        other => other.canonical_reason().unwrap_or("Request refused").into(),
    };
    problem.detail = Some(if status == StatusCode::TOO_MANY_REQUESTS {
        "slow down and retry after the time in Retry-After".into()
    } else {
        "the request was refused by the platform's security rules; quote the request id to support"
            .into()
    });
    problem.request_id = request_id.map(str::to_owned);
    problem.into_response()
}

/// `RateLimit-Policy` and `RateLimit` (the IETF HTTPAPI rate-limit header
/// fields): the family's quota, what is left and when it is full again.
fn rate_headers(
    h: &mut HeaderMap,
    family: Family,
    limit: u32,
    per_minute: u32,
    remaining: u32,
    reset_secs: u64,
) {
    let name = family.as_str();
    if let Ok(v) = HeaderValue::from_str(&format!(
        "\"{name}\";q={limit};w={}",
        window_secs(limit, per_minute)
    )) {
        h.insert(RATELIMIT_POLICY, v);
    }
    if let Ok(v) = HeaderValue::from_str(&format!("\"{name}\";r={remaining};t={reset_secs}")) {
        h.insert(RATELIMIT, v);
    }
}

/// The window in which `limit` requests refill at `per_minute`.
fn window_secs(limit: u32, per_minute: u32) -> u64 {
    if per_minute == 0 {
        return 60;
    }
    (u64::from(limit) * 60)
        .div_ceil(u64::from(per_minute))
        .max(1)
}
