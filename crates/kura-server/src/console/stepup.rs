//! Step-up for sensitive console actions (rotating the master key, deleting
//! hosts and apps): the form carries a fresh code from the person's
//! authenticator app, which Kura ID verifies and records like any second
//! factor (single use, throttled, `auth.mfa.verified` or `auth.mfa.failed`).
//! A wrong or missing code changes nothing else.

use http::StatusCode;
use kura_identity::{Credential, IdentityError, MfaMethod, Principal};

use super::page::{self, Field};
use super::session::Signed;
use crate::http::AppState;
use crate::http::api::auth::finish;
use crate::http::api::error::ApiError;

/// The label of the code field on every step-up form.
pub const CODE_LABEL: &str = "Confirm with the current code from your authenticator app";

/// The principal after a second factor was verified in this request: the
/// session is now within the step-up window (the store has recorded it).
fn stepped_up(p: &Principal) -> Principal {
    let mut p = p.clone();
    if let Credential::Session {
        mfa, mfa_recent, ..
    } = &mut p.credential
    {
        *mfa = Some(MfaMethod::Totp);
        *mfa_recent = true;
    }
    p
}

/// A step-up from a form's TOTP code: verified (and recorded) through
/// Kura ID, then the principal as it now stands. On failure, the status
/// and the message to show beside the code field; nothing else happened.
pub async fn step_up(
    state: &AppState,
    who: &Signed,
    code: &str,
) -> Result<Principal, (StatusCode, String)> {
    let code = code.trim();
    let verified = if code.is_empty() {
        Err(ApiError::Identity(IdentityError::InvalidCode))
    } else {
        let audited = state
            .identity
            .at(who.ctx.facts())
            .verify_totp(&who.principal, code)
            .await;
        finish(state, &who.ctx, audited).await.map(|_| ())
    };
    match verified {
        Ok(()) => Ok(stepped_up(&who.principal)),
        Err(e) => {
            let status = match e {
                ApiError::Throttled(_) => StatusCode::TOO_MANY_REQUESTS,
                _ => StatusCode::UNPROCESSABLE_ENTITY,
            };
            let message = match e {
                ApiError::Identity(IdentityError::MfaNotEnrolled) => {
                    "This needs a code from an authenticator app, and your account has none yet: \
                     set one up under Account & sessions, then try again."
                        .to_owned()
                }
                ApiError::Identity(IdentityError::InvalidCode) if code.is_empty() => {
                    "Enter the current code from your authenticator app.".to_owned()
                }
                other => page::message(&other),
            };
            Err((status, message))
        }
    }
}

/// The code field of a step-up form, named `name`.
pub fn code_field<'a>(name: &'a str, error: Option<&'a str>) -> Field<'a> {
    Field::new(name, CODE_LABEL)
        .error(error)
        .autocomplete("one-time-code")
}
