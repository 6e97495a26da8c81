//! "Remember this device": after a second factor, a person may ask that
//! this browser skip it at their next sign-ins for [`REMEMBER_DEVICE_FOR`].
//! The device gets a random token (its cookie); only the token's hash is
//! stored, bound to the account and an expiry. A remembered device stands
//! in for the factor when a password sign-in is waiting for one, never for
//! a step-up (`Principal::stepped_up` ignores it), and revoking the
//! account's sessions (signing out everywhere, changing or resetting the
//! password, disabling the account) forgets every remembered device.

use kura_crypto::token::{SecretToken, TokenHash};
use kura_store::{FactorOutcome, FactorProof};
use time::{Duration, OffsetDateTime};

use super::Identity;
use super::mfa::MfaVerified;
use crate::event::{EventOutcome, Events, IdentityEvent};
use crate::policy::{Credential, MfaMethod, Principal, SessionStage};
use crate::{Audited, IdentityError};

/// How long a remembered device skips the second factor.
pub const REMEMBER_DEVICE_FOR: Duration = Duration::days(30);

/// A newly remembered device: hand the token to the browser once (as a
/// cookie) and never show it.
#[derive(Debug)]
pub struct RememberedDevice {
    /// The device's token.
    pub token: SecretToken,
    /// When it stops working.
    pub expires_at: OffsetDateTime,
}

impl Identity {
    /// Remembers this device for the principal, whose session must have
    /// verified a real second factor within the step-up window (a
    /// remembered device cannot remember further devices).
    pub async fn remember_device(&self, p: &Principal) -> Audited<RememberedDevice> {
        let mut ev = Events::default();
        let r = async {
            let fresh = matches!(
                &p.credential,
                Credential::Session {
                    stage: SessionStage::Complete,
                    mfa: Some(m),
                    mfa_recent: true,
                    ..
                } if *m != MfaMethod::RememberedDevice
            );
            if !fresh {
                return Err(IdentityError::Denied(
                    crate::policy::DenyReason::StepUpRequired,
                ));
            }
            let now = self.now();
            let token =
                SecretToken::generate().map_err(|e| IdentityError::Internal(e.to_string()))?;
            let expires_at = now + REMEMBER_DEVICE_FOR;
            let e = IdentityEvent::new("auth.device.remembered", EventOutcome::Success, now)
                .actor(p.account)
                .detail("expires_at", expires_at);
            let hash = token.hash();
            self.described(
                &mut ev,
                move |_: &()| vec![e],
                |events| {
                    self.store()
                        .remember_device(p.account, &hash, now, expires_at, events)
                },
            )
            .await?;
            Ok(RememberedDevice { token, expires_at })
        }
        .await;
        ev.finish(r)
    }

    /// Finishes a password sign-in that waits for its second factor with a
    /// remembered device's token instead: a new, complete session (marked
    /// as verified by a remembered device). A token that is unknown,
    /// expired, forgotten or another account's is [`IdentityError::InvalidCode`]
    /// and changes nothing: the person is asked for the factor as usual.
    pub async fn use_remembered_device(&self, p: &Principal, token: &str) -> Audited<MfaVerified> {
        let mut ev = Events::default();
        let r = async {
            if !matches!(
                &p.credential,
                Credential::Session {
                    stage: SessionStage::MfaPending,
                    ..
                }
            ) {
                return Err(IdentityError::InvalidCode);
            }
            let now = self.now();
            // The device's use (it must still be remembered for this
            // account and unexpired when it commits), the new session and
            // the verification's event commit together.
            let verified = IdentityEvent::new("auth.mfa.verified", EventOutcome::Success, now)
                .actor(p.account)
                .detail(
                    "method",
                    super::mfa_method_name(MfaMethod::RememberedDevice),
                );
            let proof = FactorProof::RememberedDevice(TokenHash::of(token));
            let (outcome, session) = self
                .verify_in_session(
                    &mut ev,
                    p,
                    MfaMethod::RememberedDevice,
                    proof,
                    None,
                    move |_| vec![verified],
                )
                .await?;
            if outcome == FactorOutcome::Refused {
                return Err(IdentityError::InvalidCode);
            }
            Ok(MfaVerified {
                session,
                recovery_codes_left: None,
            })
        }
        .await;
        ev.finish(r)
    }
}
