//! "Remember this device" at the console's second-factor step: after a
//! TOTP or recovery code with the box ticked (it is off by default), Kura
//! ID issues a device token that the browser keeps as the
//! `__Host-kura_device` cookie (HttpOnly, Secure, SameSite=Strict, expiring
//! with the token). At the next password sign-in the second-factor page
//! offers the cookie to Kura ID first; only an unexpired token of the same
//! account that has not been forgotten (signing out everywhere and
//! password changes forget them) completes the sign-in. A cookie that no
//! longer works is removed and the code is asked for as usual.

use http::{HeaderMap, HeaderValue};
use kura_identity::{IdentityError, REMEMBER_DEVICE_FOR, SignedIn};

use super::session::Signed;
use crate::http::AppState;
use crate::http::api::auth::{Ctx, cookie, finish};
use crate::http::api::error::ApiError;

/// The device cookie.
pub const DEVICE_COOKIE: &str = "__Host-kura_device";

/// The `Set-Cookie` value that removes the device cookie.
fn clear() -> HeaderValue {
    HeaderValue::from_static(
        "__Host-kura_device=; Path=/; Secure; HttpOnly; SameSite=Strict; Max-Age=0",
    )
}

/// What the device cookie did for a sign-in waiting for its second factor.
pub enum Outcome {
    /// It stood in for the factor: the new, complete session.
    SignedIn(SignedIn),
    /// There was none.
    Absent,
    /// It no longer works: remove it (this header) and ask for the code.
    Stale(HeaderValue),
}

/// Offers the request's device cookie for `who`'s pending sign-in.
pub async fn try_cookie(state: &AppState, who: &Signed, headers: &HeaderMap) -> Outcome {
    let Some(token) = cookie(headers, DEVICE_COOKIE) else {
        return Outcome::Absent;
    };
    let audited = state
        .identity
        .use_remembered_device(&who.principal, &token)
        .await;
    match finish(state, &who.ctx, audited).await {
        Ok(v) => match v.session {
            Some(s) => Outcome::SignedIn(s),
            None => Outcome::Stale(clear()),
        },
        Err(ApiError::Identity(IdentityError::InvalidCode)) => Outcome::Stale(clear()),
        Err(e) => {
            tracing::warn!(error = ?e, "a remembered device could not be checked");
            Outcome::Stale(clear())
        }
    }
}

/// Remembers the device for the session just completed with a second
/// factor; the `Set-Cookie` value that hands the browser its token.
pub async fn remember(
    state: &AppState,
    ctx: &Ctx,
    signed: &SignedIn,
) -> Result<HeaderValue, ApiError> {
    let audited = state
        .identity
        .authenticate_session(signed.token.reveal(), ctx.source)
        .await;
    let principal = finish(state, ctx, audited).await?;
    let audited = state.identity.remember_device(&principal).await;
    let device = finish(state, ctx, audited).await?;
    HeaderValue::from_str(&format!(
        "{DEVICE_COOKIE}={}; Path=/; Secure; HttpOnly; SameSite=Strict; Max-Age={}",
        device.token.reveal(),
        REMEMBER_DEVICE_FOR.whole_seconds()
    ))
    .map_err(|_| ApiError::Internal)
}
