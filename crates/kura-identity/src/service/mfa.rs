//! Second factors: TOTP enrolment and verification, recovery codes, resets.

use kura_store::MfaReset;
use kura_store::events::TxEvents;
use kura_types::AccountId;
use secrecy::SecretString;

use super::{Identity, NewSession, SignedIn};
use crate::event::{EventOutcome, Events, IdentityEvent};
use crate::mfa::{RecoveryCodes, TotpSecret, recovery_code_hash};
use crate::policy::{Action, Credential, MfaMethod, Principal, Resource, SessionStage};
use crate::throttle::mfa_key;
use crate::{Audited, IdentityError};

/// A started TOTP enrolment: show the secret (as a QR code of the URI, and
/// as text) once; confirm with a first code.
#[derive(Debug)]
pub struct TotpEnrolment {
    /// The secret in base32, for typing into an app.
    pub secret_base32: SecretString,
    /// The `otpauth://` URI, for a QR code.
    pub otpauth_uri: SecretString,
}

/// A confirmed TOTP enrolment.
#[derive(Debug)]
pub struct TotpConfirmed {
    /// Ten new recovery codes, to show once (earlier ones stop working).
    pub recovery_codes: RecoveryCodes,
    /// A new session token when the session was waiting for enrolment; the
    /// old token no longer works.
    pub session: Option<SignedIn>,
}

/// A successful second-factor check.
#[derive(Debug)]
pub struct MfaVerified {
    /// A new, complete session when the session was waiting for its second
    /// factor (the pending token no longer works); `None` for a step-up in
    /// a complete session, which keeps its token.
    pub session: Option<SignedIn>,
    /// Recovery codes left (after using one).
    pub recovery_codes_left: Option<u64>,
}

impl Identity {
    /// Starts (or restarts) TOTP enrolment for the principal's account. A
    /// confirmed authenticator stays in force until the new one is
    /// confirmed. Needs a recent MFA check, or, for a first enrolment, a
    /// recent password.
    pub async fn enroll_totp(&self, p: &Principal) -> Audited<TotpEnrolment> {
        let mut ev = Events::default();
        let r = async {
            self.require(&mut ev, p, Action::OwnMfaEnrol, &self.self_target(p))?;
            p.session_id().ok_or(IdentityError::Unauthenticated)?;
            let account = self
                .load_account(p.account)
                .await?
                .ok_or(IdentityError::NotFound("account"))?;
            let secret =
                TotpSecret::generate().map_err(|e| IdentityError::Internal(e.to_string()))?;
            let now = self.now();
            let uri = secret
                .otpauth_uri(&self.inner.config.totp_issuer, account.email.as_str())
                .map_err(|e| IdentityError::Internal(e.to_string()))?;
            let e = IdentityEvent::new("auth.mfa.enrolment_started", EventOutcome::Success, now)
                .actor(p.account)
                .detail("method", "totp");
            self.described(
                &mut ev,
                move |_: &()| vec![e],
                |events| {
                    self.store()
                        .put_pending_totp(p.account, secret.as_bytes(), now, events)
                },
            )
            .await?;
            Ok(TotpEnrolment {
                secret_base32: secret.base32(),
                otpauth_uri: uri,
            })
        }
        .await;
        ev.finish(r)
    }

    /// Confirms a pending TOTP enrolment with a code from the app, issues
    /// recovery codes and marks the session MFA-verified.
    pub async fn confirm_totp(&self, p: &Principal, code: &str) -> Audited<TotpConfirmed> {
        let mut ev = Events::default();
        let r = async {
            self.require(&mut ev, p, Action::OwnMfaEnrol, &self.self_target(p))?;
            let now = self.now();
            let keys = [(mfa_key(p.account), self.inner.config.mfa_throttle)];
            let counted = self.check_throttles(&mut ev, &keys, None, now).await?;
            let pending = self
                .store()
                .totp(p.account, false)
                .await?
                .ok_or(IdentityError::MfaNotEnrolled)?;
            let secret = TotpSecret::from_bytes(pending.secret.clone());
            let Some(step) = secret.verify(code, unix(now), None) else {
                ev.push(
                    IdentityEvent::new("auth.mfa.failed", EventOutcome::Failure, now)
                        .actor(p.account)
                        .detail("method", "totp")
                        .detail("during", "enrolment"),
                );
                self.count_failures(&mut ev, &keys, None, now).await?;
                return Err(IdentityError::InvalidCode);
            };
            let codes =
                RecoveryCodes::generate().map_err(|e| IdentityError::Internal(e.to_string()))?;
            let e = IdentityEvent::new("auth.mfa.enrolled", EventOutcome::Success, now)
                .actor(p.account)
                .detail("method", "totp");
            let hashes = codes.hashes();
            self.described(
                &mut ev,
                move |_: &()| vec![e],
                |events| {
                    self.store()
                        .confirm_totp(p.account, step, &hashes, now, events)
                },
            )
            .await?;
            if counted {
                self.store()
                    .throttle_clear(&keys[0].0, TxEvents::none())
                    .await?;
            }
            let session = self
                .mark_verified(&mut ev, p, MfaMethod::Totp, Vec::new())
                .await?;
            Ok(TotpConfirmed {
                recovery_codes: codes,
                session,
            })
        }
        .await;
        ev.finish(r)
    }

    /// Verifies a TOTP code: finishes a sign-in waiting for its second
    /// factor, or refreshes the step-up window of a complete session. Each
    /// code (time step) is accepted once; wrong codes are throttled.
    pub async fn verify_totp(&self, p: &Principal, code: &str) -> Audited<MfaVerified> {
        let mut ev = Events::default();
        let r = self.verify_factor(&mut ev, p, code, MfaMethod::Totp).await;
        ev.finish(r)
    }

    /// Like [`Identity::verify_totp`] with a single-use recovery code.
    pub async fn use_recovery_code(&self, p: &Principal, code: &str) -> Audited<MfaVerified> {
        let mut ev = Events::default();
        let r = self
            .verify_factor(&mut ev, p, code, MfaMethod::RecoveryCode)
            .await;
        ev.finish(r)
    }

    async fn verify_factor(
        &self,
        ev: &mut Events,
        p: &Principal,
        code: &str,
        method: MfaMethod,
    ) -> Result<MfaVerified, IdentityError> {
        // Only sessions verify factors; enrolment sessions have none yet.
        match &p.credential {
            Credential::Session { stage, .. } if *stage != SessionStage::MfaEnrolment => {}
            Credential::Session { .. } => return Err(IdentityError::MfaNotEnrolled),
            Credential::ApiToken { .. } => {
                return Err(IdentityError::Denied(crate::DenyReason::TokenNotAllowed));
            }
        }
        let now = self.now();
        let keys = [(mfa_key(p.account), self.inner.config.mfa_throttle)];
        let counted = self.check_throttles(ev, &keys, None, now).await?;
        let totp = self
            .store()
            .totp(p.account, true)
            .await?
            .ok_or(IdentityError::MfaNotEnrolled)?;
        let method_name = super::mfa_method_name(method);
        // A used recovery code's event commits with its use; how many are
        // left is counted in the same transaction.
        let mut left = None;
        let accepted = match method {
            MfaMethod::Totp => {
                let secret = TotpSecret::from_bytes(totp.secret.clone());
                match secret.verify(code, unix(now), totp.last_used_step) {
                    // The compare-and-swap makes a code single-use even when
                    // two requests race with it.
                    Some(step) => self.store().advance_totp_step(p.account, step).await?,
                    None => false,
                }
            }
            MfaMethod::RecoveryCode => {
                let account = p.account;
                let hash = recovery_code_hash(code);
                left = self
                    .described(
                        ev,
                        move |left: &Option<u64>| match left {
                            Some(n) => vec![
                                IdentityEvent::new(
                                    "auth.mfa.recovery_used",
                                    EventOutcome::Success,
                                    now,
                                )
                                .actor(account)
                                .detail("remaining", n),
                            ],
                            None => Vec::new(),
                        },
                        |events| self.store().use_recovery_code(account, &hash, now, events),
                    )
                    .await?;
                left.is_some()
            }
            MfaMethod::Passkey | MfaMethod::RememberedDevice => false,
        };
        if !accepted {
            ev.push(
                IdentityEvent::new("auth.mfa.failed", EventOutcome::Failure, now)
                    .actor(p.account)
                    .detail("method", method_name),
            );
            self.count_failures(ev, &keys, None, now).await?;
            return Err(IdentityError::InvalidCode);
        }
        if counted {
            self.store()
                .throttle_clear(&keys[0].0, TxEvents::none())
                .await?;
        }
        let verified = IdentityEvent::new("auth.mfa.verified", EventOutcome::Success, now)
            .actor(p.account)
            .detail("method", method_name);
        let session = self.mark_verified(ev, p, method, vec![verified]).await?;
        Ok(MfaVerified {
            session,
            recovery_codes_left: left,
        })
    }

    /// Records a verified factor in the principal's session; a session that
    /// was not yet complete is replaced by a new, complete one. `events`
    /// (the verification's) commit with that session change.
    pub(super) async fn mark_verified(
        &self,
        ev: &mut Events,
        p: &Principal,
        method: MfaMethod,
        events: Vec<IdentityEvent>,
    ) -> Result<Option<SignedIn>, IdentityError> {
        let now = self.now();
        let (Some(id), Credential::Session { stage, .. }) = (p.session_id(), &p.credential) else {
            // No session to mark (tokens cannot verify factors): the events
            // still describe what happened and go to the caller.
            for e in events {
                ev.push(e);
            }
            return Ok(None);
        };
        if *stage == SessionStage::Complete {
            self.described(
                ev,
                move |_: &()| events,
                |tx_events| {
                    self.store().set_session_mfa(
                        id,
                        SessionStage::Complete.as_str(),
                        super::mfa_method_name(method),
                        now,
                        tx_events,
                    )
                },
            )
            .await?;
            return Ok(None);
        }
        let old = self
            .store()
            .sessions_of(p.account)
            .await?
            .into_iter()
            .find(|s| s.id == id)
            .ok_or(IdentityError::Unauthenticated)?;
        let source = old.source.as_deref().and_then(|s| s.parse().ok());
        let signed_in = self
            .issue_session(
                ev,
                NewSession {
                    account: p.account,
                    stage: SessionStage::Complete,
                    mfa: Some((method, now)),
                    source,
                    replaces: Some(&old),
                },
                move |_| events,
            )
            .await?;
        Ok(Some(signed_in))
    }

    /// Replaces the principal's recovery codes (the old ones stop working).
    pub async fn regenerate_recovery_codes(&self, p: &Principal) -> Audited<RecoveryCodes> {
        let mut ev = Events::default();
        let r = async {
            self.require(&mut ev, p, Action::OwnMfaEnrol, &self.self_target(p))?;
            if self.store().totp(p.account, true).await?.is_none() {
                return Err(IdentityError::MfaNotEnrolled);
            }
            let now = self.now();
            let codes =
                RecoveryCodes::generate().map_err(|e| IdentityError::Internal(e.to_string()))?;
            let e = IdentityEvent::new("auth.mfa.recovery_regenerated", EventOutcome::Success, now)
                .actor(p.account);
            let hashes = codes.hashes();
            self.described(
                &mut ev,
                move |_: &()| vec![e],
                |events| {
                    self.store()
                        .replace_recovery_codes(p.account, &hashes, now, events)
                },
            )
            .await?;
            Ok(codes)
        }
        .await;
        ev.finish(r)
    }

    /// Removes another account's second factors (TOTP, recovery codes and
    /// passkeys, for someone who lost their
    /// device), under the high-privilege rule; its sessions are revoked and
    /// it must enrol again at the next sign-in if MFA is required of it.
    pub async fn reset_mfa(&self, actor: &Principal, target: AccountId) -> Audited<()> {
        let mut ev = Events::default();
        let r = async {
            let resource = Resource::Account(self.account_target(target).await?);
            self.require(&mut ev, actor, Action::AccountManage, &resource)?;
            let now = self.now();
            let by = actor.account;
            let reset = self
                .described(
                    &mut ev,
                    move |reset: &MfaReset| {
                        if !reset.removed_any() {
                            return Vec::new();
                        }
                        vec![
                            IdentityEvent::new("auth.mfa.reset", EventOutcome::Success, now)
                                .actor(by)
                                .subject(target)
                                .detail("passkeys_removed", reset.passkeys_removed)
                                .detail("sessions_revoked", reset.sessions_revoked),
                        ]
                    },
                    |events| self.store().reset_mfa(target, now, events),
                )
                .await?;
            if !reset.removed_any() {
                return Err(IdentityError::MfaNotEnrolled);
            }
            Ok(())
        }
        .await;
        ev.finish(r)
    }
}

fn unix(t: time::OffsetDateTime) -> u64 {
    u64::try_from(t.unix_timestamp()).unwrap_or(0)
}
