//! The account itself: passwords (change and reset), status (disable and
//! enable) and profile.

use kura_store::{PasswordSet, SessionRevocation};
use kura_types::AccountId;
use secrecy::SecretString;

use super::Identity;
use crate::account::{Account, AccountStatus, DisplayName};
use crate::event::{EventOutcome, Events, IdentityEvent};
use crate::password::check_password_policy;
use crate::policy::{Action, Principal, Resource};
use crate::{Audited, IdentityError};

impl Identity {
    /// Changes the principal's own password after checking the current one.
    /// Every other session of the account and its personal API tokens are
    /// revoked in the same transaction (whoever learnt the old password may
    /// have made either). Returns how many were revoked.
    pub async fn change_password(
        &self,
        p: &Principal,
        current: &SecretString,
        new: &SecretString,
    ) -> Audited<PasswordSet> {
        let mut ev = Events::default();
        let r = async {
            self.require(
                &mut ev,
                p,
                Action::OwnCredentialsChange,
                &self.self_target(p),
            )?;
            check_password_policy(new)?;
            let now = self.now();
            let key = format!("password-change:{}", p.account);
            let keys = [(key, self.inner.config.account_throttle)];
            self.check_throttles(&mut ev, &keys, None, now).await?;
            let phc = self.store().password_hash(p.account).await?;
            if !self.verify_password(current, phc).await {
                ev.push(
                    IdentityEvent::new("auth.password.change_failed", EventOutcome::Failure, now)
                        .actor(p.account)
                        .detail("reason", "wrong_current_password"),
                );
                self.count_failures(&mut ev, &keys, None, now).await?;
                return Err(IdentityError::InvalidCredentials);
            }
            let phc = self.hash_password(new).await?;
            let keep = p
                .session_id()
                .map_or(SessionRevocation::All, SessionRevocation::AllExcept);
            let account = p.account;
            self.described(
                &mut ev,
                move |set: &PasswordSet| {
                    vec![
                        IdentityEvent::new("auth.password.changed", EventOutcome::Success, now)
                            .actor(account)
                            .subject(account)
                            .detail("sessions_revoked", set.sessions_revoked)
                            .detail("tokens_revoked", set.tokens_revoked),
                    ]
                },
                |events| self.store().set_password(account, &phc, keep, now, events),
            )
            .await
        }
        .await;
        ev.finish(r)
    }

    /// Sets another account's password (help desk / team admin). Subject to
    /// the high-privilege rule; all of the target's sessions and personal
    /// API tokens are revoked.
    /// The target's MFA stays as it is, so a reset never bypasses MFA.
    pub async fn reset_password(
        &self,
        actor: &Principal,
        target: AccountId,
        new: &SecretString,
    ) -> Audited<()> {
        let mut ev = Events::default();
        let r = async {
            let resource = Resource::Account(self.account_target(target).await?);
            self.require(&mut ev, actor, Action::AccountManage, &resource)?;
            self.load_account(target)
                .await?
                .ok_or(IdentityError::NotFound("account"))?;
            check_password_policy(new)?;
            let now = self.now();
            let phc = self.hash_password(new).await?;
            let by = actor.account;
            self.described(
                &mut ev,
                move |set: &PasswordSet| {
                    vec![
                        IdentityEvent::new("auth.password.reset", EventOutcome::Success, now)
                            .actor(by)
                            .subject(target)
                            .detail("sessions_revoked", set.sessions_revoked)
                            .detail("tokens_revoked", set.tokens_revoked),
                    ]
                },
                |events| {
                    self.store()
                        .set_password(target, &phc, SessionRevocation::All, now, events)
                },
            )
            .await?;
            Ok(())
        }
        .await;
        ev.finish(r)
    }

    /// Disables or re-enables another account, under the same privilege
    /// rule both ways. Disabling revokes all of its sessions and API tokens
    /// in the same transaction; re-enabling restores sign-in only (revoked
    /// sessions and tokens stay revoked) and applies to disabled accounts
    /// only.
    pub async fn set_account_disabled(
        &self,
        actor: &Principal,
        target: AccountId,
        disabled: bool,
    ) -> Audited<()> {
        let mut ev = Events::default();
        let r = async {
            let resource = Resource::Account(self.account_target(target).await?);
            self.require(&mut ev, actor, Action::AccountManage, &resource)?;
            let current = self
                .load_account(target)
                .await?
                .ok_or(IdentityError::NotFound("account"))?;
            // Re-enabling is for disabled accounts only: an invited account
            // becomes active by accepting its invitation, nothing else.
            if !disabled && current.status != AccountStatus::Disabled {
                return Err(IdentityError::AccountStatus(current.status.as_str()));
            }
            let now = self.now();
            let status = if disabled {
                AccountStatus::Disabled
            } else {
                AccountStatus::Active
            };
            let action = if disabled {
                "account.disabled"
            } else {
                "account.enabled"
            };
            let e = IdentityEvent::new(action, EventOutcome::Success, now)
                .actor(actor.account)
                .subject(target);
            self.described(
                &mut ev,
                move |_: &()| vec![e],
                |events| {
                    self.store()
                        .set_account_status(target, status.as_str(), disabled, now, events)
                },
            )
            .await?;
            Ok(())
        }
        .await;
        ev.finish(r)
    }

    /// The principal's own account.
    pub async fn me(&self, p: &Principal) -> Audited<Account> {
        let mut ev = Events::default();
        let r = async {
            self.require(&mut ev, p, Action::OwnAccountRead, &self.self_target(p))?;
            self.load_account(p.account)
                .await?
                .ok_or(IdentityError::NotFound("account"))
        }
        .await;
        ev.finish(r)
    }

    /// Changes the principal's own display name and phone number.
    pub async fn update_profile(
        &self,
        p: &Principal,
        display_name: &str,
        phone: Option<&str>,
    ) -> Audited<Account> {
        let mut ev = Events::default();
        let r = async {
            self.require(&mut ev, p, Action::OwnAccountRead, &self.self_target(p))?;
            // Profile data is not a credential: no step-up, but not through
            // API tokens either.
            p.session_id()
                .ok_or(IdentityError::Denied(crate::DenyReason::TokenNotAllowed))?;
            let name = DisplayName::parse(display_name)?;
            let phone = phone.map(crate::Phone::parse).transpose()?;
            let now = self.now();
            let e = IdentityEvent::new("account.profile.changed", EventOutcome::Success, now)
                .actor(p.account)
                .subject(p.account);
            self.described(
                &mut ev,
                move |_: &()| vec![e],
                |events| {
                    self.store().update_profile(
                        p.account,
                        name.as_str(),
                        phone.as_ref().map(|x| x.as_str()),
                        now,
                        events,
                    )
                },
            )
            .await?;
            self.load_account(p.account)
                .await?
                .ok_or(IdentityError::NotFound("account"))
        }
        .await;
        ev.finish(r)
    }

    pub(super) fn self_target(&self, p: &Principal) -> Resource {
        Resource::Account(crate::AccountTarget {
            id: p.account,
            operator_roles: p.operator_roles.clone(),
            team_roles: p.team_roles.clone(),
        })
    }
}
