//! Who is using the console, and the forms they post.
//!
//! The console shares the API's cookie session (`__Host-kura_session`) and
//! its CSRF token (the HMAC of a fixed label under the session token), which
//! forms carry in a hidden `csrf` field because a form cannot set the
//! `X-CSRF-Token` header. Forms posted before there is a session (setup,
//! sign-in, invitation acceptance) use a double-submit token: a random
//! `__Host-kura_form` cookie that the form must echo. Either way a post
//! without the right token is refused before anything else happens, and an
//! `authz.denied` event with reason `csrf` is recorded.

use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::response::{IntoResponse, Redirect, Response};
use http::request::Parts;
use http::{HeaderMap, HeaderValue, StatusCode, header};
use kura_identity::{Principal, SessionStage};
use kura_types::{Actor, Outcome, SecurityEvent};
use serde::de::DeserializeOwned;

use super::page;
use crate::http::AppState;
use crate::http::api::auth::{Ctx, SESSION_COOKIE, cookie, csrf_token, finish, record_event};
use crate::http::api::error::ApiError;

/// The double-submit cookie of forms posted before sign-in.
pub const FORM_COOKIE: &str = "__Host-kura_form";
/// The largest form the console accepts.
const MAX_FORM_BYTES: usize = 64 * 1024;

/// A console request from a signed-in person.
#[derive(Debug, Clone)]
pub struct Signed {
    /// Who.
    pub principal: Principal,
    /// The request's facts.
    pub ctx: Ctx,
    /// The CSRF token for this page's forms.
    pub csrf: String,
}

/// The session stage of a principal authenticated by a session.
pub fn stage(p: &Principal) -> Option<SessionStage> {
    match &p.credential {
        kura_identity::Credential::Session { stage, .. } => Some(*stage),
        kura_identity::Credential::ApiToken { .. } => None,
    }
}

/// Where the person was: the path and query, for coming back after signing
/// in. Only console paths are kept, so the parameter cannot redirect away.
pub fn here(parts: &Parts) -> String {
    parts
        .uri
        .path_and_query()
        .map(|pq| pq.as_str().to_owned())
        .unwrap_or_else(|| "/console/".to_owned())
}

/// A safe `next` target: a console path, never another origin.
pub fn safe_next(next: Option<&str>) -> String {
    match next {
        Some(n)
            if n.starts_with("/console/")
                && !n.starts_with("//")
                && !n.contains('\\')
                && !n.contains("://") =>
        {
            n.to_owned()
        }
        _ => "/console/".to_owned(),
    }
}

/// The sign-in page, coming back to `next` afterwards.
pub fn to_sign_in(next: &str) -> Response {
    let q = serde_urlencoded::to_string([("next", next)]).unwrap_or_default();
    Redirect::to(&format!("/console/sign-in?{q}")).into_response()
}

/// Why a console request did not reach its handler.
#[derive(Debug)]
pub enum Refusal {
    /// Not signed in (or the session ended): sign in, then come back.
    SignIn(String),
    /// A second factor is pending or must be enrolled first.
    Mfa(SessionStage),
    /// The form's CSRF token is missing or wrong.
    Csrf,
    /// The form does not parse.
    BadForm(String),
    /// Something failed (logged where it happened).
    Failed(ApiError),
}

impl IntoResponse for Refusal {
    fn into_response(self) -> Response {
        match self {
            Self::SignIn(next) => to_sign_in(&next),
            Self::Mfa(SessionStage::MfaEnrolment) => {
                Redirect::to("/console/mfa/enrol").into_response()
            }
            Self::Mfa(_) => Redirect::to("/console/mfa").into_response(),
            Self::Csrf => page::error_page(
                StatusCode::FORBIDDEN,
                "This form has expired",
                "The form was not sent from this console session, so nothing was changed. \
                 Go back, reload the page and try again.",
            ),
            Self::BadForm(why) => page::error_page(
                StatusCode::BAD_REQUEST,
                "The form could not be read",
                &format!("Nothing was changed ({why})."),
            ),
            Self::Failed(e) => page::api_error_page(&e),
        }
    }
}

async fn authenticate(parts: &Parts, state: &AppState) -> Result<Signed, Refusal> {
    let ctx = Ctx::from_parts(parts);
    let Some(token) = cookie(&parts.headers, SESSION_COOKIE) else {
        return Err(Refusal::SignIn(here(parts)));
    };
    let audited = state
        .identity
        .authenticate_session(&token, ctx.source)
        .await;
    match finish(state, &ctx, audited).await {
        Ok(principal) => Ok(Signed {
            principal,
            csrf: csrf_token(&token),
            ctx,
        }),
        Err(ApiError::Identity(kura_identity::IdentityError::Unauthenticated)) => {
            Err(Refusal::SignIn(here(parts)))
        }
        Err(e) => Err(Refusal::Failed(e)),
    }
}

/// A signed-in person whose sign-in may still be unfinished (the MFA pages).
#[derive(Debug, Clone)]
pub struct AnyStage(pub Signed);

impl FromRequestParts<AppState> for AnyStage {
    type Rejection = Refusal;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Refusal> {
        authenticate(parts, state).await.map(Self)
    }
}

impl FromRequestParts<AppState> for Signed {
    type Rejection = Refusal;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Refusal> {
        let s = authenticate(parts, state).await?;
        match stage(&s.principal) {
            Some(SessionStage::Complete) => Ok(s),
            Some(other) => Err(Refusal::Mfa(other)),
            None => Err(Refusal::SignIn(here(parts))),
        }
    }
}

/// A form posted by a signed-in person (any session stage), its CSRF field
/// checked against the session before `T` is even parsed.
#[derive(Debug)]
pub struct SessionForm<T> {
    /// The person.
    pub who: Signed,
    /// The form.
    pub form: T,
}

/// A form posted before sign-in, its double-submit token checked.
#[derive(Debug)]
pub struct PublicForm<T> {
    /// The request's facts.
    pub ctx: Ctx,
    /// The form token (to render the form again).
    pub csrf: String,
    /// The form.
    pub form: T,
}

async fn read_form(req: Request) -> Result<(Parts, Vec<(String, String)>), Refusal> {
    let (parts, body) = req.into_parts();
    let bytes = axum::body::to_bytes(body, MAX_FORM_BYTES)
        .await
        .map_err(|_| Refusal::BadForm("the form is too large".to_owned()))?;
    let fields: Vec<(String, String)> = serde_urlencoded::from_bytes(&bytes)
        .map_err(|_| Refusal::BadForm("it is not a form".to_owned()))?;
    Ok((parts, fields))
}

fn parse<T: DeserializeOwned>(fields: &[(String, String)]) -> Result<T, Refusal> {
    let rest: Vec<&(String, String)> = fields.iter().filter(|(k, _)| k != "csrf").collect();
    let encoded = serde_urlencoded::to_string(&rest)
        .map_err(|_| Refusal::BadForm("it is not a form".to_owned()))?;
    serde_urlencoded::from_str(&encoded).map_err(|e| Refusal::BadForm(e.to_string()))
}

fn field<'a>(fields: &'a [(String, String)], name: &str) -> Option<&'a str> {
    fields
        .iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.as_str())
}

/// Records a refused CSRF token (`authz.denied`, reason `csrf`) and says so.
pub(super) async fn refuse_csrf(state: &AppState, ctx: &Ctx) -> Refusal {
    let Ok(action) = kura_types::Action::parse("authz.denied") else {
        return Refusal::Failed(ApiError::EventNotRecorded);
    };
    let event = SecurityEvent::new(state.clock.now(), Actor::Anonymous, action, Outcome::Denied)
        .with_detail("reason", "csrf");
    match record_event(state, ctx, event).await {
        Ok(()) => Refusal::Csrf,
        Err(e) => Refusal::Failed(e),
    }
}

impl<T: DeserializeOwned + Send> FromRequest<AppState> for SessionForm<T> {
    type Rejection = Refusal;

    async fn from_request(req: Request, state: &AppState) -> Result<Self, Refusal> {
        let (parts, fields) = read_form(req).await?;
        let ctx = Ctx::from_parts(&parts);
        let Some(token) = cookie(&parts.headers, SESSION_COOKIE) else {
            return Err(Refusal::SignIn(referer_path(&parts.headers)));
        };
        let presented = field(&fields, "csrf").unwrap_or("");
        if !crate::http::api::auth::csrf_valid(&token, presented) {
            return Err(refuse_csrf(state, &ctx).await);
        }
        let who = authenticate(&parts, state).await?;
        let form = parse(&fields)?;
        Ok(Self { who, form })
    }
}

impl<T: DeserializeOwned + Send> FromRequest<AppState> for PublicForm<T> {
    type Rejection = Refusal;

    async fn from_request(req: Request, state: &AppState) -> Result<Self, Refusal> {
        let (parts, fields) = read_form(req).await?;
        let ctx = Ctx::from_parts(&parts);
        let expected = cookie(&parts.headers, FORM_COOKIE).unwrap_or_default();
        let presented = field(&fields, "csrf").unwrap_or("");
        if expected.is_empty()
            || !kura_crypto::digest::constant_time_eq(expected.as_bytes(), presented.as_bytes())
        {
            return Err(refuse_csrf(state, &ctx).await);
        }
        let form = parse(&fields)?;
        Ok(Self {
            ctx,
            csrf: expected,
            form,
        })
    }
}

/// The page a form was posted from (to return to after signing in again).
fn referer_path(headers: &HeaderMap) -> String {
    headers
        .get(header::REFERER)
        .and_then(|v| v.to_str().ok())
        .and_then(|r| r.find("/console/").map(|i| r[i..].to_owned()))
        .unwrap_or_else(|| "/console/".to_owned())
}

/// The form token for pages shown before sign-in: the existing cookie's, or
/// a fresh one with the `Set-Cookie` header that installs it.
pub fn form_token(headers: &HeaderMap) -> Result<(String, Option<HeaderValue>), ApiError> {
    if let Some(t) = cookie(headers, FORM_COOKIE) {
        return Ok((t, None));
    }
    let t = kura_crypto::token::SecretToken::generate().map_err(|e| {
        tracing::error!(error = %e, "no randomness for a form token");
        ApiError::Internal
    })?;
    let t = t.reveal().to_owned();
    let c = HeaderValue::from_str(&format!(
        "{FORM_COOKIE}={t}; Path=/; Secure; HttpOnly; SameSite=Strict"
    ))
    .ok();
    Ok((t, c))
}

/// A redirect after a successful post (303, so a reload does not post
/// again), with `ok` naming the message the next page shows.
pub fn done(to: &str, ok: &str) -> Response {
    let sep = if to.contains('?') { '&' } else { '?' };
    Redirect::to(&format!("{to}{sep}ok={ok}")).into_response()
}
