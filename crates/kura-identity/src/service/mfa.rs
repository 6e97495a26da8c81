//! Second factors: TOTP enrolment and verification, recovery codes, resets.

use kura_store::{FactorOutcome, FactorProof, FactorStep, MfaReset, SessionChange};
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
            // The confirmation, its recovery codes, the throttle reset and
            // the session's verification commit together with the event.
            let proof = FactorProof::TotpEnrolment {
                step,
                recovery_hashes: codes.hashes(),
            };
            let clear = counted.then(|| keys[0].0.clone());
            let (outcome, session) = self
                .verify_in_session(&mut ev, p, MfaMethod::Totp, proof, clear, move |_| vec![e])
                .await?;
            if outcome == FactorOutcome::Refused {
                // Another request confirmed (or replaced) the enrolment first.
                return Err(IdentityError::MfaNotEnrolled);
            }
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
        let proof = match method {
            MfaMethod::Totp => TotpSecret::from_bytes(totp.secret.clone())
                .verify(code, unix(now), totp.last_used_step)
                .map(FactorProof::TotpStep),
            MfaMethod::RecoveryCode => Some(FactorProof::RecoveryCode(recovery_code_hash(code))),
            MfaMethod::Passkey | MfaMethod::RememberedDevice => None,
        };
        // The code's use (the compare-and-swap of the TOTP step, so a code
        // is single-use even when two requests race with it, or the
        // recovery code's), the throttle reset and the session's
        // verification commit in one transaction with their events.
        let mut done = None;
        if let Some(proof) = proof {
            let account = p.account;
            let clear = counted.then(|| keys[0].0.clone());
            let (outcome, session) = self
                .verify_in_session(ev, p, method, proof, clear, move |outcome| {
                    let mut events = Vec::new();
                    if let FactorOutcome::Done {
                        recovery_codes_left: Some(n),
                    } = outcome
                    {
                        events.push(
                            IdentityEvent::new(
                                "auth.mfa.recovery_used",
                                EventOutcome::Success,
                                now,
                            )
                            .actor(account)
                            .detail("remaining", n),
                        );
                    }
                    events.push(
                        IdentityEvent::new("auth.mfa.verified", EventOutcome::Success, now)
                            .actor(account)
                            .detail("method", method_name),
                    );
                    events
                })
                .await?;
            if let FactorOutcome::Done {
                recovery_codes_left,
            } = outcome
            {
                done = Some(MfaVerified {
                    session,
                    recovery_codes_left,
                });
            }
        }
        let Some(verified) = done else {
            ev.push(
                IdentityEvent::new("auth.mfa.failed", EventOutcome::Failure, now)
                    .actor(p.account)
                    .detail("method", method_name),
            );
            self.count_failures(ev, &keys, None, now).await?;
            return Err(IdentityError::InvalidCode);
        };
        Ok(verified)
    }

    /// Carries out a verified factor in the principal's session, in one
    /// transaction with the events `describe` gives (stored only when the
    /// proof is accepted): `proof` is used up, the session records the
    /// verification (one that was not yet complete is replaced by a new,
    /// complete one, returned) and `clear_throttle` is forgotten. A refused
    /// proof changes nothing and comes back as [`FactorOutcome::Refused`];
    /// a session revoked meanwhile is [`IdentityError::Unauthenticated`].
    pub(super) async fn verify_in_session(
        &self,
        ev: &mut Events,
        p: &Principal,
        method: MfaMethod,
        proof: FactorProof,
        clear_throttle: Option<String>,
        describe: impl FnOnce(&FactorOutcome) -> Vec<IdentityEvent> + Send + 'static,
    ) -> Result<(FactorOutcome, Option<SignedIn>), IdentityError> {
        let now = self.now();
        let (session, signed_in) = self.verified_session(p, method, now).await?;
        let step = FactorStep {
            account: p.account,
            proof,
            session,
            clear_throttle,
            now,
        };
        let outcome = self.complete_factor(ev, step, describe).await?;
        let signed_in = match outcome {
            FactorOutcome::Done { .. } => signed_in,
            FactorOutcome::Refused => None,
            FactorOutcome::SessionGone => return Err(IdentityError::Unauthenticated),
        };
        Ok((outcome, signed_in))
    }

    /// Writes a verified factor's step (a second factor's, or a password
    /// sign-in's) with the events `describe` gives for an accepted one (see [`kura_store::CredentialStore::complete_factor`]).
    pub(super) async fn complete_factor(
        &self,
        ev: &mut Events,
        step: FactorStep,
        describe: impl FnOnce(&FactorOutcome) -> Vec<IdentityEvent> + Send + 'static,
    ) -> Result<FactorOutcome, IdentityError> {
        self.described(
            ev,
            move |outcome: &FactorOutcome| match outcome {
                FactorOutcome::Done { .. } => describe(outcome),
                FactorOutcome::Refused | FactorOutcome::SessionGone => Vec::new(),
            },
            |events| self.store().complete_factor(step, events),
        )
        .await
    }

    /// What a verified factor does to the principal's session: a complete
    /// session records it; one that was not yet complete is replaced by a
    /// new, complete one (its token comes back, to hand out once the change
    /// is stored). Without a session (tokens cannot verify factors) there
    /// is nothing to change.
    async fn verified_session(
        &self,
        p: &Principal,
        method: MfaMethod,
        now: time::OffsetDateTime,
    ) -> Result<(SessionChange, Option<SignedIn>), IdentityError> {
        let (Some(id), Credential::Session { stage, .. }) = (p.session_id(), &p.credential) else {
            return Ok((SessionChange::None, None));
        };
        if *stage == SessionStage::Complete {
            let change = SessionChange::Mark {
                id,
                stage: SessionStage::Complete.as_str().into(),
                method: super::mfa_method_name(method).into(),
            };
            return Ok((change, None));
        }
        let old = self
            .store()
            .sessions_of(p.account)
            .await?
            .into_iter()
            .find(|s| s.id == id)
            .ok_or(IdentityError::Unauthenticated)?;
        let source = old.source.as_deref().and_then(|s| s.parse().ok());
        let (new, signed_in) = self.new_session(NewSession {
            account: p.account,
            stage: SessionStage::Complete,
            mfa: Some((method, now)),
            source,
            replaces: Some(&old),
        })?;
        let change = SessionChange::Rotate { old: id, new };
        Ok((change, Some(signed_in)))
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
