//! Sign-in, first-operator setup, sessions and passwords.

use std::net::IpAddr;

use kura_crypto::token::{SecretToken, TokenHash};
use kura_store::{
    FactorProof, FactorStep, FirstOperator, FirstOperatorOutcome, NewAccount, RoleGrant,
    SETUP_COMPLETED, SessionChange, SetupTokenCheck,
};
use kura_types::{AccountId, SessionId};
use secrecy::SecretString;
use time::{Duration, OffsetDateTime};

use super::{Identity, NewSession, parse_mfa_method};
use crate::account::{Account, AccountKind, AccountStatus, DisplayName, Email};
use crate::error::TokenProblem;
use crate::event::{EventOutcome, Events, IdentityEvent};
use crate::password::check_password_policy;
use crate::policy::{Action, Credential, OperatorRole, Principal, SessionStage};
use crate::session::SessionValidity;
use crate::throttle::{ThrottlePolicy, ThrottleState, account_key, source_key};
use crate::{Audited, IdentityError};

/// A new session, with its token to hand to the client once.
#[derive(Debug)]
pub struct SignedIn {
    /// The session's id (safe to show, list and log).
    pub session: SessionId,
    /// The account.
    pub account: AccountId,
    /// How far sign-in got.
    pub stage: SessionStage,
    /// The absolute expiry (for the cookie's lifetime).
    pub expires_at: OffsetDateTime,
    /// The idle timeout in force.
    pub idle_timeout: Duration,
    /// The bearer token; reveal it once to the client.
    pub token: SecretToken,
}

/// What a password sign-in led to.
#[derive(Debug)]
pub enum SignInStep {
    /// Signed in; no second factor is enrolled or required.
    Complete(SignedIn),
    /// The password was right; verify a second factor with this session next.
    MfaRequired(SignedIn),
    /// The password was right; the account must enrol a second factor
    /// (operators, or a team requires it) before it can do anything else.
    MfaEnrolmentRequired(SignedIn),
}

impl SignInStep {
    /// The session, whatever the step.
    pub fn signed_in(&self) -> &SignedIn {
        match self {
            Self::Complete(s) | Self::MfaRequired(s) | Self::MfaEnrolmentRequired(s) => s,
        }
    }

    /// The session, whatever the step.
    pub fn into_signed_in(self) -> SignedIn {
        match self {
            Self::Complete(s) | Self::MfaRequired(s) | Self::MfaEnrolmentRequired(s) => s,
        }
    }
}

/// One of an account's live sessions, for listing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionInfo {
    /// Its id.
    pub id: SessionId,
    /// Whether it is the session making the request.
    pub current: bool,
    /// When it signed in.
    pub created_at: OffsetDateTime,
    /// When it was last used.
    pub last_seen_at: OffsetDateTime,
    /// When it ends at the latest.
    pub expires_at: OffsetDateTime,
    /// Where it signed in from.
    pub source: Option<String>,
}

impl Identity {
    /// Signs in with email and password.
    ///
    /// Unknown accounts, wrong passwords and accounts that cannot sign in
    /// (disabled, invited) all fail with [`IdentityError::InvalidCredentials`]
    /// after the same Argon2 work; failures count against the typed address
    /// and the source address, with growing delays and a temporary lockout
    /// ([`IdentityError::Throttled`]).
    pub async fn sign_in_password(
        &self,
        email: &str,
        password: &SecretString,
        source: Option<IpAddr>,
    ) -> Audited<SignInStep> {
        let mut ev = Events::default();
        let r = self.sign_in_inner(&mut ev, email, password, source).await;
        ev.finish(r)
    }

    async fn sign_in_inner(
        &self,
        ev: &mut Events,
        email: &str,
        password: &SecretString,
        source: Option<IpAddr>,
    ) -> Result<SignInStep, IdentityError> {
        let now = self.now();
        // A malformed address cannot have an account, but it is refused the
        // same way as a wrong password so the response reveals nothing.
        let parsed = Email::parse(email).ok();
        let typed = match &parsed {
            Some(e) => e.as_str().to_owned(),
            None => email.trim().chars().take(254).collect(),
        };
        let cfg = self.inner.config.clone();
        let mut keys: Vec<(String, ThrottlePolicy)> =
            vec![(account_key(&typed), cfg.account_throttle)];
        if let Some(s) = source {
            keys.push((source_key(s), cfg.source_throttle));
        }
        let counted = self.check_throttles(ev, &keys, source, now).await?;

        let account = match &parsed {
            Some(e) => Self::active(
                self.store()
                    .account_by_email(e.as_str())
                    .await?
                    .map(Account::from_record)
                    .transpose()?,
            ),
            None => None,
        };
        let phc = match &account {
            Some(a) => self.store().password_hash(a.id).await?,
            None => None,
        };
        let had_hash = phc.clone();
        let ok = self.verify_password(password, phc).await;
        let (Some(account), true) = (account, ok) else {
            let reason = if parsed.is_none() {
                "malformed_email"
            } else if had_hash.is_none() {
                "unknown_or_inactive_account"
            } else {
                "wrong_password"
            };
            ev.push(
                IdentityEvent::new("auth.signin.failed", EventOutcome::Failure, now)
                    .source(source)
                    .detail("email", &typed)
                    .detail("reason", reason),
            );
            self.count_failures(ev, &keys, source, now).await?;
            return Err(IdentityError::InvalidCredentials);
        };
        if let Some(old) = had_hash
            && self.inner.passwords.needs_rehash(&old)
        {
            let new = self.hash_password(password).await?;
            let id = account.id;
            self.described(
                ev,
                move |rehashed: &bool| {
                    if *rehashed {
                        vec![
                            IdentityEvent::new(
                                "auth.password.rehashed",
                                EventOutcome::Success,
                                now,
                            )
                            .actor(id),
                        ]
                    } else {
                        Vec::new()
                    }
                },
                |events| self.store().rehash_password(id, &old, &new, now, events),
            )
            .await?;
        }

        // One read for what decides whether a second factor is due.
        let facts = self.store().account_facts(account.id, now).await?;
        let stage = if facts.totp_confirmed || facts.has_passkey {
            SessionStage::MfaPending
        } else if Self::mfa_required_by_facts(&account, &facts)? {
            SessionStage::MfaEnrolment
        } else {
            SessionStage::Complete
        };
        let id = account.id;
        let (record, signed_in) = self.new_session(NewSession {
            account: id,
            stage,
            mfa: None,
            source,
            replaces: None,
        })?;
        let session = record.id;
        // The counter's reset is part of the sign-in: it commits with the
        // new session and its event.
        let step = FactorStep {
            account: id,
            proof: FactorProof::Password,
            session: SessionChange::Insert(record),
            clear_throttle: counted.then(|| keys[0].0.clone()),
            now,
        };
        self.complete_factor(ev, step, move |_| {
            vec![
                IdentityEvent::new("auth.signin.succeeded", EventOutcome::Success, now)
                    .actor(id)
                    .source(source)
                    .detail("method", "password")
                    .detail("session", session)
                    .detail("stage", stage.as_str()),
            ]
        })
        .await?;
        Ok(match stage {
            SessionStage::Complete => SignInStep::Complete(signed_in),
            SessionStage::MfaPending => SignInStep::MfaRequired(signed_in),
            SessionStage::MfaEnrolment => SignInStep::MfaEnrolmentRequired(signed_in),
        })
    }

    /// Refuses while any key is delayed or locked; clears and records
    /// lockouts that have run out. Says whether the first key still has a
    /// failure counter, which a success then resets (without one there is
    /// nothing to reset, and a sign-in saves a write).
    pub(super) async fn check_throttles(
        &self,
        ev: &mut Events,
        keys: &[(String, ThrottlePolicy)],
        source: Option<IpAddr>,
        now: OffsetDateTime,
    ) -> Result<bool, IdentityError> {
        let mut wait_until: Option<OffsetDateTime> = None;
        let mut first_counted = false;
        for (i, (key, policy)) in keys.iter().enumerate() {
            let record = self.store().throttle(key).await?;
            match policy.state(record.as_ref(), now) {
                ThrottleState::Open => first_counted |= i == 0 && record.is_some(),
                ThrottleState::LockoutExpired => {
                    let e = IdentityEvent::new("auth.lockout.expired", EventOutcome::Success, now)
                        .source(source)
                        .detail("key", key);
                    self.described(
                        ev,
                        move |_: &()| vec![e],
                        |events| self.store().throttle_clear(key, events),
                    )
                    .await?;
                }
                ThrottleState::Delayed(until) | ThrottleState::Locked(until) => {
                    wait_until = Some(wait_until.map_or(until, |w| w.max(until)));
                }
            }
        }
        if let Some(retry_after) = wait_until {
            ev.push(
                IdentityEvent::new("auth.signin.throttled", EventOutcome::Failure, now)
                    .source(source)
                    .detail("key", &keys[0].0)
                    .detail("retry_after", retry_after),
            );
            return Err(IdentityError::Throttled { retry_after });
        }
        Ok(first_counted)
    }

    /// Counts a failure against every key and starts lockouts that are due.
    pub(super) async fn count_failures(
        &self,
        ev: &mut Events,
        keys: &[(String, ThrottlePolicy)],
        source: Option<IpAddr>,
        now: OffsetDateTime,
    ) -> Result<(), IdentityError> {
        for (key, policy) in keys {
            let record = self
                .store()
                .throttle_failure(key, now, now - policy.window)
                .await?;
            if let Some(until) = policy.lockout_for(&record) {
                let e = IdentityEvent::new("auth.lockout.started", EventOutcome::Success, now)
                    .source(source)
                    .detail("key", key)
                    .detail("failures", record.failures)
                    .detail("until", until);
                self.described(
                    ev,
                    move |_: &()| vec![e],
                    |events| self.store().throttle_lock(key, Some(until), events),
                )
                .await?;
            }
        }
        Ok(())
    }

    /// Creates the first operator with the one-time setup token printed at
    /// first start, and signs it in. The operator holds every operator role
    /// and must enrol MFA before any administrative action (its session is
    /// at [`SessionStage::MfaEnrolment`]). Input is validated before the
    /// token is used up, so a typo does not burn the link.
    pub async fn create_first_operator(
        &self,
        setup_token: &str,
        email: &str,
        display_name: &str,
        password: &SecretString,
        source: Option<IpAddr>,
    ) -> Audited<SignedIn> {
        let mut ev = Events::default();
        let r = self
            .first_operator_inner(&mut ev, setup_token, email, display_name, password, source)
            .await;
        ev.finish(r)
    }

    async fn first_operator_inner(
        &self,
        ev: &mut Events,
        setup_token: &str,
        email: &str,
        display_name: &str,
        password: &SecretString,
        source: Option<IpAddr>,
    ) -> Result<SignedIn, IdentityError> {
        let now = self.now();
        let email = Email::parse(email)?;
        let name = DisplayName::parse(display_name)?;
        check_password_policy(password)?;
        let platform = &self.inner.platform;
        if platform.setting(SETUP_COMPLETED).await?.is_some()
            || self.store().count_accounts("operator").await? > 0
        {
            ev.push(
                IdentityEvent::new("setup.rejected", EventOutcome::Failure, now)
                    .source(source)
                    .detail("reason", "already_complete"),
            );
            return Err(IdentityError::SetupComplete);
        }
        let phc = self.hash_password(password).await?;
        let id = AccountId::new();
        let account = NewAccount {
            account: kura_store::AccountRecord {
                id,
                email: email.as_str().to_owned(),
                display_name: name.as_str().to_owned(),
                phone: None,
                status: AccountStatus::Active.as_str().into(),
                kind: AccountKind::Operator.as_str().into(),
                created_at: now,
            },
            password_phc: Some(phc),
            grants: OperatorRole::ALL
                .iter()
                .map(|r| RoleGrant {
                    team: None,
                    role: r.as_str().into(),
                    via_group: None,
                })
                .collect(),
            teams: Vec::new(),
        };
        let stage = SessionStage::MfaEnrolment;
        let (session, signed_in) = self.new_session(NewSession {
            account: id,
            stage,
            mfa: None,
            source,
            replaces: None,
        })?;
        let session_id = session.id;
        let first = FirstOperator {
            setup_token: TokenHash::of(setup_token),
            account,
            session,
            now,
        };
        // The token's use, the operator, the "setup complete" mark, the
        // session and their events (or a refusal's event) commit in one
        // transaction: no operator with a live link, no used link without
        // an operator, and of two racing requests only one creates one.
        let outcome = self
            .described(
                ev,
                move |outcome: &FirstOperatorOutcome| {
                    let rejected = |reason: &str| {
                        vec![
                            IdentityEvent::new("setup.rejected", EventOutcome::Failure, now)
                                .source(source)
                                .detail("reason", reason),
                        ]
                    };
                    match outcome {
                        FirstOperatorOutcome::Created => vec![
                            IdentityEvent::new(
                                "setup.first_operator.created",
                                EventOutcome::Success,
                                now,
                            )
                            .actor(id)
                            .subject(id)
                            .source(source)
                            .detail("email", &email),
                            IdentityEvent::new("auth.signin.succeeded", EventOutcome::Success, now)
                                .actor(id)
                                .source(source)
                                .detail("method", "setup")
                                .detail("session", session_id)
                                .detail("stage", stage.as_str()),
                        ],
                        FirstOperatorOutcome::AlreadyComplete => rejected("already_complete"),
                        FirstOperatorOutcome::Token(check) => {
                            rejected(token_problem(*check).as_str())
                        }
                    }
                },
                |events| self.store().create_first_operator(first, events),
            )
            .await?;
        match outcome {
            FirstOperatorOutcome::Created => Ok(signed_in),
            FirstOperatorOutcome::AlreadyComplete => Err(IdentityError::SetupComplete),
            FirstOperatorOutcome::Token(check) => {
                Err(IdentityError::BadToken(token_problem(check)))
            }
        }
    }

    /// Resolves a session token into a principal, or
    /// [`IdentityError::Unauthenticated`] when it is unknown, revoked,
    /// expired (idle, absolute, or sign-in left unfinished) or its account
    /// cannot sign in. A good session's idle timer restarts.
    pub async fn authenticate_session(
        &self,
        token: &str,
        source: Option<IpAddr>,
    ) -> Audited<Principal> {
        let mut ev = Events::default();
        let r = self
            .authenticate_session_inner(&mut ev, token, source)
            .await;
        ev.finish(r)
    }

    async fn authenticate_session_inner(
        &self,
        ev: &mut Events,
        token: &str,
        source: Option<IpAddr>,
    ) -> Result<Principal, IdentityError> {
        let now = self.now();
        // One read for the session and everything the policy needs about
        // its account.
        let Some((session, facts)) = self
            .store()
            .session_facts(&TokenHash::of(token), now)
            .await?
        else {
            return Err(IdentityError::Unauthenticated);
        };
        let stage = SessionStage::parse(&session.stage)
            .ok_or_else(|| IdentityError::Corrupt(format!("session {} stage", session.id)))?;
        let cfg = self.inner.config.session;
        let validity = cfg.validity(&session, stage, now);
        if validity != SessionValidity::Valid {
            ev.push(
                IdentityEvent::new("auth.session.rejected", EventOutcome::Failure, now)
                    .actor(session.account)
                    .source(source)
                    .detail("session", session.id)
                    .detail("reason", validity.as_str()),
            );
            return Err(IdentityError::Unauthenticated);
        }
        let account = facts
            .account
            .clone()
            .map(Account::from_record)
            .transpose()?;
        let Some(account) = Self::active(account) else {
            return Err(IdentityError::Unauthenticated);
        };
        if now - session.last_seen_at >= super::TOUCH_EVERY {
            self.store().touch_session(session.id, now).await?;
        }
        let credential = Credential::Session {
            id: session.id,
            stage,
            mfa: session.mfa_method.as_deref().and_then(parse_mfa_method),
            mfa_recent: cfg.is_recent(session.mfa_verified_at, now),
            signed_in_recently: cfg.is_recent(Some(session.created_at), now),
        };
        Self::principal_from(&account, credential, &facts)
    }

    /// Ends the principal's own session.
    pub async fn sign_out(&self, p: &Principal) -> Audited<()> {
        let mut ev = Events::default();
        let r = async {
            let id = p.session_id().ok_or(IdentityError::Unauthenticated)?;
            let now = self.now();
            let e = IdentityEvent::new("auth.session.revoked", EventOutcome::Success, now)
                .actor(p.account)
                .detail("session", id)
                .detail("reason", "sign_out");
            self.described(
                &mut ev,
                move |revoked: &bool| if *revoked { vec![e] } else { Vec::new() },
                |events| self.store().revoke_session(id, now, events),
            )
            .await?;
            Ok(())
        }
        .await;
        ev.finish(r)
    }

    /// Ends every session of the principal's account ("sign out everywhere").
    pub async fn sign_out_everywhere(&self, p: &Principal) -> Audited<u64> {
        let mut ev = Events::default();
        let r = async {
            p.session_id().ok_or(IdentityError::Unauthenticated)?;
            let (account, now) = (p.account, self.now());
            self.described(
                &mut ev,
                move |n: &u64| {
                    vec![
                        IdentityEvent::new("auth.session.revoked_all", EventOutcome::Success, now)
                            .actor(account)
                            .detail("count", n)
                            .detail("reason", "sign_out_everywhere"),
                    ]
                },
                |events| self.store().revoke_sessions_of(account, None, now, events),
            )
            .await
        }
        .await;
        ev.finish(r)
    }

    /// The principal's live sessions.
    pub async fn sessions(&self, p: &Principal) -> Audited<Vec<SessionInfo>> {
        let mut ev = Events::default();
        let r = async {
            self.require(&mut ev, p, Action::OwnAccountRead, &self.self_target(p))?;
            let now = self.now();
            let cfg = self.inner.config.session;
            let mut out = Vec::new();
            for s in self.store().sessions_of(p.account).await? {
                let stage = SessionStage::parse(&s.stage).unwrap_or(SessionStage::MfaPending);
                if cfg.validity(&s, stage, now) != SessionValidity::Valid {
                    continue;
                }
                out.push(SessionInfo {
                    id: s.id,
                    current: p.session_id() == Some(s.id),
                    created_at: s.created_at,
                    last_seen_at: s.last_seen_at,
                    expires_at: s.expires_at,
                    source: s.source,
                });
            }
            Ok(out)
        }
        .await;
        ev.finish(r)
    }

    /// Revokes one of the principal's own sessions (from an interactive
    /// session; tokens cannot sign sessions out).
    pub async fn revoke_own_session(&self, p: &Principal, id: SessionId) -> Audited<()> {
        let mut ev = Events::default();
        let r = async {
            self.require(&mut ev, p, Action::OwnAccountRead, &self.self_target(p))?;
            p.session_id()
                .ok_or(IdentityError::Denied(crate::DenyReason::TokenNotAllowed))?;
            let mine = self
                .store()
                .sessions_of(p.account)
                .await?
                .iter()
                .any(|s| s.id == id);
            if !mine {
                return Err(IdentityError::NotFound("session"));
            }
            let now = self.now();
            let e = IdentityEvent::new("auth.session.revoked", EventOutcome::Success, now)
                .actor(p.account)
                .detail("session", id)
                .detail("reason", "revoked_by_owner");
            let revoked = self
                .described(
                    &mut ev,
                    move |revoked: &bool| if *revoked { vec![e] } else { Vec::new() },
                    |events| self.store().revoke_session(id, now, events),
                )
                .await?;
            if !revoked {
                return Err(IdentityError::NotFound("session"));
            }
            Ok(())
        }
        .await;
        ev.finish(r)
    }
}

/// Why a setup token that is not valid was refused.
fn token_problem(check: SetupTokenCheck) -> TokenProblem {
    match check {
        SetupTokenCheck::Unknown | SetupTokenCheck::Valid => TokenProblem::Unknown,
        SetupTokenCheck::Expired => TokenProblem::Expired,
        SetupTokenCheck::Used => TokenProblem::Used,
    }
}
