//! Who is asking: request context, authentication extractors, CSRF for
//! cookie sessions, and recording the identity service's events.
//!
//! API clients send `Authorization: Bearer <session or API token>`; the
//! console holds its session in the `__Host-kura_session` cookie. A
//! cookie-authenticated change (any method but GET/HEAD/OPTIONS) must carry
//! `X-CSRF-Token` equal to the HMAC of a fixed label under the session token
//! (issued with the session), so another site cannot forge one: it can
//! neither read the cookie nor compute the MAC.

use std::net::{IpAddr, SocketAddr};

use axum::extract::{ConnectInfo, FromRequestParts};
use axum::response::{IntoResponse, Response};
use http::request::Parts;
use http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode, header};
use kura_crypto::hmac::HmacKey;
use kura_identity::{Audited, IdentityEvent, Principal, RequestFacts, SessionStage, SignedIn};
use kura_types::{Actor, Outcome, SecurityEvent};
use serde::Serialize;
use time::OffsetDateTime;

use super::error::ApiError;
use crate::http::AppState;
use crate::http::middleware::RequestId;

/// The console's session cookie.
pub const SESSION_COOKIE: &str = "__Host-kura_session";
/// The header carrying the CSRF token of a cookie session.
pub const CSRF_HEADER: HeaderName = HeaderName::from_static("x-csrf-token");
const CSRF_LABEL: &[u8] = b"kura csrf v1";

/// The request's facts for security events.
#[derive(Debug, Clone, Default)]
pub struct Ctx {
    /// The request id.
    pub request_id: Option<String>,
    /// The client's address.
    pub source: Option<IpAddr>,
    /// The client's `User-Agent`.
    pub user_agent: Option<String>,
}

impl Ctx {
    /// The facts of a request.
    pub fn from_parts(parts: &Parts) -> Self {
        Self {
            request_id: parts.extensions.get::<RequestId>().map(|r| r.0.to_string()),
            // The edge resolved the client behind trusted proxies.
            source: parts
                .extensions
                .get::<crate::edge::layer::ClientAddr>()
                .map(|c| c.0)
                .or_else(|| {
                    parts
                        .extensions
                        .get::<ConnectInfo<SocketAddr>>()
                        .map(|c| c.0.ip())
                }),
            user_agent: parts
                .headers
                .get(header::USER_AGENT)
                .and_then(|v| v.to_str().ok())
                .map(|s| s.chars().take(512).collect()),
        }
    }

    /// The request's facts, for the events Kura ID stores with the changes
    /// it makes (`state.identity.at(ctx.facts())`).
    pub fn facts(&self) -> RequestFacts {
        RequestFacts {
            request_id: self.request_id.clone(),
            user_agent: self.user_agent.clone(),
            source: self.source,
        }
    }

    /// Adds the request's facts (request id, user agent, source) to an event.
    pub fn decorate(&self, e: SecurityEvent) -> SecurityEvent {
        self.facts().apply(e)
    }
}

impl<S: Send + Sync> FromRequestParts<S> for Ctx {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        Ok(Self::from_parts(parts))
    }
}

/// How a request was authenticated, which decides how a replacement
/// session is handed back.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Via {
    /// `Authorization: Bearer`.
    Bearer,
    /// The session cookie (with CSRF checks on changes).
    Cookie,
}

/// An authenticated request: the principal, how it authenticated, and the
/// request context. Extracting it authenticates (and records the events).
#[derive(Debug, Clone)]
pub struct Auth {
    /// Who.
    pub principal: Principal,
    /// How.
    pub via: Via,
    /// The request's facts.
    pub ctx: Ctx,
}

impl FromRequestParts<AppState> for Auth {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let ctx = Ctx::from_parts(parts);
        let (token, via) = credentials(&parts.headers)?;
        if via == Via::Cookie && !is_safe(&parts.method) && !csrf_matches(&parts.headers, &token) {
            let event = SecurityEvent::new(
                state.clock.now(),
                Actor::Anonymous,
                kura_types::Action::parse("authz.denied")
                    .map_err(|_| ApiError::EventNotRecorded)?,
                Outcome::Denied,
            )
            .with_detail("reason", "csrf");
            record_event(state, &ctx, event).await?;
            return Err(ApiError::Csrf);
        }
        let audited = if via == Via::Bearer && is_api_token(&token) {
            state
                .identity
                .authenticate_api_token(&token, ctx.source)
                .await
        } else {
            state
                .identity
                .authenticate_session(&token, ctx.source)
                .await
        };
        let principal = finish(state, &ctx, audited).await?;
        Ok(Self {
            principal,
            via,
            ctx,
        })
    }
}

fn is_safe(method: &Method) -> bool {
    matches!(*method, Method::GET | Method::HEAD | Method::OPTIONS)
}

fn is_api_token(token: &str) -> bool {
    token.starts_with("kura_pat_") || token.starts_with("kura_svc_")
}

/// Whether the request carries any credential at all.
pub fn has_credentials(headers: &HeaderMap) -> bool {
    headers.contains_key(header::AUTHORIZATION) || cookie(headers, SESSION_COOKIE).is_some()
}

fn credentials(headers: &HeaderMap) -> Result<(String, Via), ApiError> {
    if let Some(value) = headers.get(header::AUTHORIZATION) {
        let value = value.to_str().map_err(|_| ApiError::BadAuthorization)?;
        let (scheme, token) = value.split_once(' ').ok_or(ApiError::BadAuthorization)?;
        let token = token.trim();
        if !scheme.eq_ignore_ascii_case("bearer") || token.is_empty() {
            return Err(ApiError::BadAuthorization);
        }
        return Ok((token.to_owned(), Via::Bearer));
    }
    cookie(headers, SESSION_COOKIE)
        .map(|t| (t, Via::Cookie))
        .ok_or(ApiError::NoCredentials)
}

pub(crate) fn cookie(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(k, v)| *k == name && !v.is_empty())
        .map(|(_, v)| v.to_owned())
}

/// The CSRF token bound to a session token.
pub fn csrf_token(session_token: &str) -> String {
    HmacKey::new(session_token.as_bytes()).sign_hex(CSRF_LABEL)
}

/// Whether `presented` is the CSRF token of `session_token` (constant time).
pub(crate) fn csrf_valid(session_token: &str, presented: &str) -> bool {
    HmacKey::new(session_token.as_bytes()).verify_hex(CSRF_LABEL, presented)
}

fn csrf_matches(headers: &HeaderMap, session_token: &str) -> bool {
    headers
        .get(&CSRF_HEADER)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|presented| csrf_valid(session_token, presented))
}

/// Records one event with the request's facts; fails the request if it
/// cannot be recorded.
pub async fn record_event(
    state: &AppState,
    ctx: &Ctx,
    event: SecurityEvent,
) -> Result<(), ApiError> {
    state.events.record(ctx.decorate(event)).await.map_err(|e| {
        tracing::error!(error = %e, "security event not recorded");
        ApiError::EventNotRecorded
    })
}

/// Finishes a service call: the events Kura ID already stored with its
/// state changes go to detection; the others (failures and denials, where
/// nothing changed) are recorded, whatever the result; then the result is
/// yielded. If an event cannot be recorded the request fails.
pub async fn finish<T>(state: &AppState, ctx: &Ctx, audited: Audited<T>) -> Result<T, ApiError> {
    let (result, pending, recorded) = audited.into_parts();
    if !recorded.is_empty() {
        state.events.observe(&recorded).await;
    }
    record(state, ctx, &pending).await?;
    result.map_err(|e| ApiError::identity(e, state.clock.now()))
}

/// Records identity events with the request's facts, all in one
/// transaction (one durable write, not one per event).
pub async fn record(state: &AppState, ctx: &Ctx, events: &[IdentityEvent]) -> Result<(), ApiError> {
    let events = events
        .iter()
        .map(|e| {
            e.to_security_event().map(|s| ctx.decorate(s)).map_err(|err| {
                tracing::error!(error = %err, action = e.action, "identity event does not convert");
                ApiError::EventNotRecorded
            })
        })
        .collect::<Result<Vec<_>, _>>()?;
    if events.is_empty() {
        return Ok(());
    }
    state.events.record_all(events).await.map_err(|e| {
        tracing::error!(error = %e, "security event not recorded");
        ApiError::EventNotRecorded
    })
}

/// What a client must do next with a session.
#[derive(Debug, Clone, Copy, Serialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum NextStep {
    /// Nothing: the session is complete.
    Done,
    /// Verify a TOTP (or recovery) code at `/api/v1/sessions/mfa/totp`.
    VerifyMfa,
    /// Enrol TOTP at `/api/v1/me/mfa/totp` and confirm it.
    EnrolMfa,
}

impl NextStep {
    /// The step for a session stage.
    pub fn of(stage: SessionStage) -> Self {
        match stage {
            SessionStage::Complete => Self::Done,
            SessionStage::MfaPending => Self::VerifyMfa,
            SessionStage::MfaEnrolment => Self::EnrolMfa,
        }
    }
}

/// A session handed to the client: the token in the body for API clients,
/// or in the cookie (with the CSRF token in the body) for the console.
#[derive(Debug, Serialize)]
pub struct SessionOut {
    /// The session id.
    pub session_id: String,
    /// The account.
    pub account_id: String,
    /// How far sign-in got.
    pub stage: &'static str,
    /// What to do next.
    pub next: NextStep,
    /// When the session ends at the latest (RFC 3339).
    #[serde(with = "time::serde::rfc3339")]
    pub expires_at: OffsetDateTime,
    /// The bearer token (API clients only; shown once).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub token: Option<String>,
    /// The CSRF token to send as `X-CSRF-Token` (cookie sessions only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub csrf_token: Option<String>,
}

/// The body and cookie header for a new session.
pub fn session_parts(signed: &SignedIn, via: Via) -> (SessionOut, Option<HeaderValue>) {
    let token = signed.token.reveal();
    let mut out = SessionOut {
        session_id: signed.session.to_string(),
        account_id: signed.account.to_string(),
        stage: signed.stage.as_str(),
        next: NextStep::of(signed.stage),
        expires_at: signed.expires_at,
        token: None,
        csrf_token: None,
    };
    match via {
        Via::Bearer => {
            out.token = Some(token.to_owned());
            (out, None)
        }
        Via::Cookie => {
            out.csrf_token = Some(csrf_token(token));
            let cookie = HeaderValue::from_str(&format!(
                "{SESSION_COOKIE}={token}; Path=/; Secure; HttpOnly; SameSite=Strict"
            ))
            .ok();
            (out, cookie)
        }
    }
}

/// A response carrying a new session.
pub fn session_response(status: StatusCode, signed: &SignedIn, via: Via) -> Response {
    let (out, cookie) = session_parts(signed, via);
    with_cookie((status, axum::Json(out)).into_response(), cookie)
}

/// Adds a `Set-Cookie` header, if any.
pub fn with_cookie(mut response: Response, cookie: Option<HeaderValue>) -> Response {
    if let Some(c) = cookie {
        response.headers_mut().append(header::SET_COOKIE, c);
    }
    response
}

/// The `Set-Cookie` value that removes the session cookie.
pub fn clear_cookie() -> HeaderValue {
    HeaderValue::from_static(
        "__Host-kura_session=; Path=/; Secure; HttpOnly; SameSite=Strict; Max-Age=0",
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn csrf_tokens_are_bound_to_the_session() {
        let mut headers = HeaderMap::new();
        headers.insert(
            CSRF_HEADER,
            HeaderValue::from_str(&csrf_token("session-a")).unwrap(),
        );
        assert!(csrf_matches(&headers, "session-a"));
        assert!(!csrf_matches(&headers, "session-b"));
        assert!(!csrf_matches(&HeaderMap::new(), "session-a"));
    }

    #[test]
    fn the_session_cookie_is_found_among_others() {
        let mut headers = HeaderMap::new();
        headers.insert(
            header::COOKIE,
            HeaderValue::from_static("a=1; __Host-kura_session=tok; b=2"),
        );
        assert_eq!(cookie(&headers, SESSION_COOKIE).as_deref(), Some("tok"));
        assert!(matches!(credentials(&headers), Ok((t, Via::Cookie)) if t == "tok"));
    }
}
