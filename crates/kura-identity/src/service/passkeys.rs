//! WebAuthn passkeys: registration, use as a second factor, passwordless
//! sign-in, listing and removal.
//!
//! Every ceremony is two calls: a challenge, whose server-side state is kept
//! in storage under a random ceremony id, and an answer, which takes that
//! state exactly once (a replayed or late answer finds nothing). Ceremonies
//! started by a session are bound to it: another session cannot answer them.
//! Passkeys are registered and used with user verification required, so a
//! passkey sign-in is multi-factor on its own and satisfies team rules of
//! either strength.

use std::net::IpAddr;

use kura_crypto::random;
use kura_store::{
    CeremonyRecord, FactorOutcome, FactorProof, FactorStep, PasskeyRecord, PasskeyUse,
    SessionChange,
};
use kura_types::AccountId;
use time::OffsetDateTime;
use webauthn_rs::prelude::PublicKeyCredential;

use super::{Identity, MfaVerified, NewSession, SignInStep};
use crate::event::{EventOutcome, Events, IdentityEvent};
use crate::mfa::RecoveryCodes;
use crate::passkey::{RelyingParty, Started, StoredPasskey, decode_answer};
use crate::policy::{Action, Credential, MfaMethod, Principal, SessionStage};
use crate::throttle::{ThrottlePolicy, mfa_key, source_key};
use crate::{Audited, IdentityError};

/// The longest name a passkey may be given, in characters.
const MAX_NAME_CHARS: usize = 64;

const REGISTRATION: &str = "registration";
const MFA: &str = "mfa";
const PASSWORDLESS: &str = "passwordless";

/// A challenge for the client's authenticator.
#[derive(Debug)]
pub struct PasskeyChallenge {
    /// The ceremony id to send back with the answer.
    pub ceremony: String,
    /// The WebAuthn options (`publicKey` for `navigator.credentials`), as
    /// JSON.
    pub options: serde_json::Value,
    /// When the challenge stops being accepted.
    pub expires_at: OffsetDateTime,
}

/// A registered passkey as its owner sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PasskeyInfo {
    /// Its id (for removal).
    pub id: String,
    /// The name its owner gave it.
    pub name: String,
    /// The authenticator's credential id (base64url).
    pub credential_id: String,
    /// The last signature counter seen.
    pub counter: u32,
    /// Whether the credential may be synced between devices.
    pub backup_eligible: bool,
    /// Whether it is backed up now.
    pub backup_state: bool,
    /// When it was registered.
    pub created_at: OffsetDateTime,
    /// When it last signed in.
    pub last_used_at: Option<OffsetDateTime>,
}

impl From<&PasskeyRecord> for PasskeyInfo {
    fn from(r: &PasskeyRecord) -> Self {
        Self {
            id: r.id.clone(),
            name: r.name.clone(),
            credential_id: r.credential_id.clone(),
            counter: r.counter,
            backup_eligible: r.backup_eligible,
            backup_state: r.backup_state,
            created_at: r.created_at,
            last_used_at: r.last_used_at,
        }
    }
}

/// A finished registration.
#[derive(Debug)]
pub struct PasskeyRegistered {
    /// The new passkey.
    pub passkey: PasskeyInfo,
    /// Recovery codes, when this is the account's first second factor (show
    /// once).
    pub recovery_codes: Option<RecoveryCodes>,
    /// A new, complete session when the session was waiting for enrolment
    /// (the old token no longer works).
    pub session: Option<super::SignedIn>,
}

impl Identity {
    fn relying_party(&self) -> Result<&RelyingParty, IdentityError> {
        self.inner
            .relying_party
            .as_ref()
            .map_err(|reason| IdentityError::PasskeysUnavailable(reason.clone()))
    }

    async fn stored_passkeys(
        &self,
        account: AccountId,
    ) -> Result<Vec<(PasskeyRecord, StoredPasskey)>, IdentityError> {
        self.store()
            .passkeys_of(account)
            .await?
            .into_iter()
            .map(|r| {
                let p = StoredPasskey::from_record(&r)?;
                Ok((r, p))
            })
            .collect()
    }

    /// Stores a started ceremony; `started_event` (an enrolment's start)
    /// commits with it.
    async fn keep_ceremony(
        &self,
        ev: &mut Events,
        kind: &str,
        p: Option<&Principal>,
        started: Started,
        started_event: Option<IdentityEvent>,
    ) -> Result<PasskeyChallenge, IdentityError> {
        let rp = self.relying_party()?;
        let now = self.now();
        let id = ceremony_id()?;
        let expires_at = rp.expiry(now);
        let record = CeremonyRecord {
            id: id.clone(),
            kind: kind.into(),
            account: p.map(|p| p.account),
            session: p.and_then(Principal::session_id).map(|s| s.to_string()),
            state: started.state,
            created_at: now,
            expires_at,
        };
        self.described(
            ev,
            move |_: &()| started_event.into_iter().collect(),
            |events| self.store().put_ceremony(record, events),
        )
        .await?;
        Ok(PasskeyChallenge {
            ceremony: id,
            options: started.options,
            expires_at,
        })
    }

    /// Takes a ceremony of `kind`; one started by a session must be
    /// answered by that same session.
    async fn take_ceremony(
        &self,
        kind: &str,
        id: &str,
        p: Option<&Principal>,
    ) -> Result<CeremonyRecord, IdentityError> {
        let c = self
            .store()
            .take_ceremony(id, kind, self.now())
            .await?
            .ok_or(IdentityError::PasskeyChallengeUnknown)?;
        let same = match p {
            Some(p) => {
                c.account == Some(p.account) && c.session == p.session_id().map(|s| s.to_string())
            }
            None => c.account.is_none() && c.session.is_none(),
        };
        if !same {
            return Err(IdentityError::PasskeyChallengeUnknown);
        }
        Ok(c)
    }

    /// Starts registering a passkey for the principal's account (a session
    /// only, with a recent MFA check or, for a first factor, a session that
    /// must enrol one).
    pub async fn start_passkey_registration(&self, p: &Principal) -> Audited<PasskeyChallenge> {
        let mut ev = Events::default();
        let r = async {
            self.require(&mut ev, p, Action::OwnMfaEnrol, &self.self_target(p))?;
            p.session_id().ok_or(IdentityError::Unauthenticated)?;
            let rp = self.relying_party()?;
            let account = self
                .load_account(p.account)
                .await?
                .ok_or(IdentityError::NotFound("account"))?;
            let existing: Vec<_> = self
                .stored_passkeys(p.account)
                .await?
                .into_iter()
                .map(|(_, k)| k)
                .collect();
            let started = rp.start_registration(
                p.account.as_uuid(),
                account.email.as_str(),
                &account.display_name,
                &existing,
            )?;
            let e = IdentityEvent::new(
                "auth.mfa.enrolment_started",
                EventOutcome::Success,
                self.now(),
            )
            .actor(p.account)
            .detail("method", "passkey");
            self.keep_ceremony(&mut ev, REGISTRATION, Some(p), started, Some(e))
                .await
        }
        .await;
        ev.finish(r)
    }

    /// Verifies the authenticator's answer to a registration challenge and
    /// stores the passkey under `name`.
    pub async fn finish_passkey_registration(
        &self,
        p: &Principal,
        ceremony: &str,
        name: &str,
        answer: serde_json::Value,
    ) -> Audited<PasskeyRegistered> {
        let mut ev = Events::default();
        let r = async {
            self.require(&mut ev, p, Action::OwnMfaEnrol, &self.self_target(p))?;
            let rp = self.relying_party()?;
            let name = passkey_name(name)?;
            let c = self.take_ceremony(REGISTRATION, ceremony, Some(p)).await?;
            let now = self.now();
            let passkey = match rp.finish_registration(&c.state, answer) {
                Ok(k) => k,
                Err(e) => {
                    ev.push(
                        IdentityEvent::new("auth.mfa.failed", EventOutcome::Failure, now)
                            .actor(p.account)
                            .detail("method", "passkey")
                            .detail("during", "enrolment")
                            .detail("reason", failure_reason(&e)),
                    );
                    return Err(e);
                }
            };
            let first_factor = !self.has_second_factor(p.account).await?;
            let record = PasskeyRecord {
                id: uuid::Uuid::new_v4().to_string(),
                account: p.account,
                credential_id: passkey.credential_id.clone(),
                name,
                data: passkey.data()?,
                counter: passkey.counter,
                backup_eligible: passkey.backup_eligible,
                backup_state: passkey.backup_state,
                created_at: now,
                last_used_at: None,
            };
            let enrolled = IdentityEvent::new("auth.mfa.enrolled", EventOutcome::Success, now)
                .actor(p.account)
                .detail("method", "passkey")
                .detail("passkey", &record.id)
                .detail("backup_eligible", record.backup_eligible);
            // The first factor's recovery codes, the passkey, the session's
            // verification and the enrolment's event commit together.
            let recovery_codes = if first_factor {
                Some(
                    RecoveryCodes::generate()
                        .map_err(|e| IdentityError::Internal(e.to_string()))?,
                )
            } else {
                None
            };
            let proof = FactorProof::NewPasskey {
                passkey: record.clone(),
                recovery_hashes: recovery_codes.as_ref().map(RecoveryCodes::hashes),
            };
            let verified = self
                .verify_in_session(&mut ev, p, MfaMethod::Passkey, proof, None, move |_| {
                    vec![enrolled]
                })
                .await;
            let (outcome, session) = verified.map_err(|e| match e {
                IdentityError::Store(kura_store::StoreError::Conflict(_)) => {
                    IdentityError::Conflict("a passkey with this credential".into())
                }
                other => other,
            })?;
            if outcome == FactorOutcome::Refused {
                return Err(IdentityError::Internal(
                    "the store refused a new passkey".into(),
                ));
            }
            Ok(PasskeyRegistered {
                passkey: PasskeyInfo::from(&record),
                recovery_codes,
                session,
            })
        }
        .await;
        ev.finish(r)
    }

    /// The principal's passkeys.
    pub async fn passkeys(&self, p: &Principal) -> Audited<Vec<PasskeyInfo>> {
        let mut ev = Events::default();
        let r = async {
            self.require(&mut ev, p, Action::OwnAccountRead, &self.self_target(p))?;
            Ok(self
                .store()
                .passkeys_of(p.account)
                .await?
                .iter()
                .map(PasskeyInfo::from)
                .collect())
        }
        .await;
        ev.finish(r)
    }

    /// Removes one of the principal's passkeys (a change of MFA: needs a
    /// recent MFA check).
    pub async fn remove_passkey(&self, p: &Principal, id: &str) -> Audited<()> {
        let mut ev = Events::default();
        let r = async {
            self.require(&mut ev, p, Action::OwnMfaEnrol, &self.self_target(p))?;
            if !matches!(&p.credential, Credential::Session { stage, .. } if *stage == SessionStage::Complete)
            {
                return Err(IdentityError::Denied(crate::DenyReason::SessionIncomplete));
            }
            let e = IdentityEvent::new("auth.mfa.removed", EventOutcome::Success, self.now())
                .actor(p.account)
                .detail("method", "passkey")
                .detail("passkey", id);
            let removed = self
                .described(
                    &mut ev,
                    move |removed: &bool| if *removed { vec![e] } else { Vec::new() },
                    |events| self.store().delete_passkey(p.account, id, events),
                )
                .await?;
            if !removed {
                return Err(IdentityError::NotFound("passkey"));
            }
            Ok(())
        }
        .await;
        ev.finish(r)
    }

    /// A challenge for one of the principal's passkeys: the second factor
    /// of a sign-in waiting for one, or a step-up in a complete session.
    pub async fn start_passkey_mfa(&self, p: &Principal) -> Audited<PasskeyChallenge> {
        let mut ev = Events::default();
        let r = async {
            second_factor_session(p)?;
            let rp = self.relying_party()?;
            let keys: Vec<_> = self
                .stored_passkeys(p.account)
                .await?
                .into_iter()
                .map(|(_, k)| k)
                .collect();
            if keys.is_empty() {
                return Err(IdentityError::MfaNotEnrolled);
            }
            let started = rp.start_authentication(&keys)?;
            self.keep_ceremony(&mut ev, MFA, Some(p), started, None)
                .await
        }
        .await;
        ev.finish(r)
    }

    /// Verifies a passkey assertion as the principal's second factor; wrong
    /// answers are throttled like wrong codes.
    pub async fn finish_passkey_mfa(
        &self,
        p: &Principal,
        ceremony: &str,
        answer: serde_json::Value,
    ) -> Audited<MfaVerified> {
        let mut ev = Events::default();
        let r = async {
            second_factor_session(p)?;
            let rp = self.relying_party()?;
            let answer: PublicKeyCredential = decode_answer(answer)?;
            let now = self.now();
            let keys = [(mfa_key(p.account), self.inner.config.mfa_throttle)];
            let counted = self.check_throttles(&mut ev, &keys, None, now).await?;
            let c = self.take_ceremony(MFA, ceremony, Some(p)).await?;
            let verified = rp.finish_authentication(&c.state, &answer);
            let stored = self.stored_passkeys(p.account).await?;
            let (credential_id, change) =
                match verified.and_then(|res| self.apply_use(p.account, stored, &res, now)) {
                    Ok(used) => used,
                    Err(e) => {
                        ev.push(
                            IdentityEvent::new("auth.mfa.failed", EventOutcome::Failure, now)
                                .actor(p.account)
                                .detail("method", "passkey")
                                .detail("reason", failure_reason(&e)),
                        );
                        self.count_failures(&mut ev, &keys, None, now).await?;
                        return Err(e);
                    }
                };
            // The passkey's new counter, the throttle reset and the
            // session's verification commit with the event.
            let verified = IdentityEvent::new("auth.mfa.verified", EventOutcome::Success, now)
                .actor(p.account)
                .detail("method", "passkey");
            let proof = FactorProof::PasskeyUse {
                credential_id,
                change,
            };
            let clear = counted.then(|| keys[0].0.clone());
            let (outcome, session) = self
                .verify_in_session(&mut ev, p, MfaMethod::Passkey, proof, clear, move |_| {
                    vec![verified]
                })
                .await?;
            if outcome == FactorOutcome::Refused {
                return Err(passkey_removed());
            }
            Ok(MfaVerified {
                session,
                recovery_codes_left: None,
            })
        }
        .await;
        ev.finish(r)
    }

    /// A challenge for passwordless sign-in with any discoverable passkey
    /// (no email asked, so nothing about accounts is revealed).
    pub async fn start_passkey_sign_in(&self, source: Option<IpAddr>) -> Audited<PasskeyChallenge> {
        let mut ev = Events::default();
        let r = async {
            let rp = self.relying_party()?;
            let keys = self.source_keys(source);
            self.check_throttles(&mut ev, &keys, source, self.now())
                .await?;
            let started = rp.start_discoverable()?;
            self.keep_ceremony(&mut ev, PASSWORDLESS, None, started, None)
                .await
        }
        .await;
        ev.finish(r)
    }

    /// Signs in with a passkey alone. The assertion names the account (the
    /// user handle stored in the passkey at registration) and is verified
    /// against that account's passkey; the session is complete and
    /// MFA-verified by the passkey.
    pub async fn finish_passkey_sign_in(
        &self,
        ceremony: &str,
        answer: serde_json::Value,
        source: Option<IpAddr>,
    ) -> Audited<SignInStep> {
        let mut ev = Events::default();
        let r = async {
            let rp = self.relying_party()?;
            let answer: PublicKeyCredential = decode_answer(answer)?;
            let now = self.now();
            let keys = self.source_keys(source);
            self.check_throttles(&mut ev, &keys, source, now).await?;
            let c = self.take_ceremony(PASSWORDLESS, ceremony, None).await?;
            let outcome = self.verify_passwordless(rp, &c, &answer, now).await;
            let (account, change) = match outcome {
                Ok(v) => v,
                Err((account, e)) => {
                    let mut failed =
                        IdentityEvent::new("auth.signin.failed", EventOutcome::Failure, now)
                            .source(source)
                            .detail("method", "passkey")
                            .detail("reason", failure_reason(&e));
                    if let Some(a) = account {
                        failed = failed.subject(a);
                    }
                    ev.push(failed);
                    self.count_failures(&mut ev, &keys, source, now).await?;
                    return Err(match e {
                        IdentityError::Store(_)
                        | IdentityError::Corrupt(_)
                        | IdentityError::Internal(_) => e,
                        _ => IdentityError::PasskeyRejected("the passkey was not accepted".into()),
                    });
                }
            };
            // The passkey's new counter, the session and the sign-in's
            // event commit together.
            let (record, signed_in) = self.new_session(NewSession {
                account,
                stage: SessionStage::Complete,
                mfa: Some((MfaMethod::Passkey, now)),
                source,
                replaces: None,
            })?;
            let session = record.id;
            let (credential_id, change) = change;
            let step = FactorStep {
                account,
                proof: FactorProof::PasskeyUse {
                    credential_id,
                    change,
                },
                session: SessionChange::Insert(record),
                clear_throttle: None,
                now,
            };
            let outcome = self
                .complete_factor(&mut ev, step, move |_| {
                    vec![
                        IdentityEvent::new("auth.signin.succeeded", EventOutcome::Success, now)
                            .actor(account)
                            .source(source)
                            .detail("method", "passkey")
                            .detail("session", session)
                            .detail("stage", SessionStage::Complete.as_str()),
                    ]
                })
                .await?;
            if !matches!(outcome, FactorOutcome::Done { .. }) {
                return Err(passkey_removed());
            }
            Ok(SignInStep::Complete(signed_in))
        }
        .await;
        ev.finish(r)
    }

    /// Checks a passwordless answer; on failure, the account it named (if
    /// any) comes with the error for the event.
    async fn verify_passwordless(
        &self,
        rp: &RelyingParty,
        c: &CeremonyRecord,
        answer: &PublicKeyCredential,
        now: OffsetDateTime,
    ) -> Result<(AccountId, (String, PasskeyUse)), (Option<AccountId>, IdentityError)> {
        let (user, credential_id) = rp.identify(answer).map_err(|e| (None, e))?;
        let account = AccountId::from_uuid(user);
        let named = Some(account);
        // Accounts that cannot sign in fail like unknown ones.
        let active = Self::active(self.load_account(account).await.map_err(|e| (named, e))?);
        if active.is_none() {
            return Err((
                named,
                IdentityError::PasskeyRejected("unknown account".into()),
            ));
        }
        let stored = self
            .stored_passkeys(account)
            .await
            .map_err(|e| (named, e))?;
        let Some((_, key)) = stored
            .iter()
            .find(|(r, _)| r.credential_id == credential_id)
        else {
            return Err((
                named,
                IdentityError::PasskeyRejected("unknown credential".into()),
            ));
        };
        let res = rp
            .finish_discoverable(&c.state, answer, key)
            .map_err(|e| (named, e))?;
        let change = self
            .apply_use(account, stored, &res, now)
            .map_err(|e| (named, e))?;
        Ok((account, change))
    }

    /// The stored change a verified assertion makes to the passkey it used.
    fn apply_use(
        &self,
        _account: AccountId,
        stored: Vec<(PasskeyRecord, StoredPasskey)>,
        res: &webauthn_rs::prelude::AuthenticationResult,
        now: OffsetDateTime,
    ) -> Result<(String, PasskeyUse), IdentityError> {
        let used = crate::passkey::credential_id_text(res.cred_id().as_ref());
        let (_, mut key) = stored
            .into_iter()
            .find(|(r, _)| r.credential_id == used)
            .ok_or_else(|| IdentityError::PasskeyRejected("unknown credential".into()))?;
        if !res.user_verified() {
            return Err(IdentityError::PasskeyRejected(
                "the authenticator did not verify the user".into(),
            ));
        }
        key.update(res);
        Ok((
            used,
            PasskeyUse {
                data: key.data()?,
                counter: key.counter,
                backup_state: key.backup_state,
                at: now,
            },
        ))
    }

    fn source_keys(&self, source: Option<IpAddr>) -> Vec<(String, ThrottlePolicy)> {
        source
            .map(|s| (source_key(s), self.inner.config.source_throttle))
            .into_iter()
            .collect()
    }
}

/// Passkeys verify second factors in sessions only, and not in a session
/// that must first enrol one.
fn second_factor_session(p: &Principal) -> Result<(), IdentityError> {
    match &p.credential {
        Credential::Session { stage, .. } if *stage != SessionStage::MfaEnrolment => Ok(()),
        Credential::Session { .. } => Err(IdentityError::MfaNotEnrolled),
        Credential::ApiToken { .. } => {
            Err(IdentityError::Denied(crate::DenyReason::TokenNotAllowed))
        }
    }
}

/// A passkey removed between its check and its use: the step does not count.
fn passkey_removed() -> IdentityError {
    IdentityError::PasskeyRejected("the passkey was removed".into())
}

/// 256 random bits, base64url.
fn ceremony_id() -> Result<String, IdentityError> {
    let bytes = random::array::<32>().map_err(|e| IdentityError::Internal(e.to_string()))?;
    Ok(crate::passkey::credential_id_text(&bytes))
}

fn passkey_name(name: &str) -> Result<String, IdentityError> {
    let name = name.trim();
    if name.is_empty()
        || name.chars().count() > MAX_NAME_CHARS
        || name.chars().any(char::is_control)
    {
        return Err(IdentityError::InvalidInput(format!(
            "name: 1 to {MAX_NAME_CHARS} characters, no control characters"
        )));
    }
    Ok(name.to_owned())
}

/// A short, non-secret reason for a failure event.
fn failure_reason(e: &IdentityError) -> String {
    match e {
        IdentityError::PasskeyRejected(why) => why.chars().take(200).collect(),
        other => other.to_string().chars().take(200).collect(),
    }
}
