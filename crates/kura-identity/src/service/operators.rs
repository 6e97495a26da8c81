//! Operator accounts: creating them and granting or revoking operator
//! roles, under the rule that nobody hands out more than they hold.

use std::collections::BTreeSet;

use kura_store::{AccountRecord, GrantSubject, NewAccount, RoleGrant, StoreError};
use kura_types::AccountId;
use secrecy::SecretString;

use super::Identity;
use crate::account::{AccountKind, AccountStatus, DisplayName, Email};
use crate::event::{EventOutcome, Events, IdentityEvent};
use crate::password::check_password_policy;
use crate::policy::{Action, DenyReason, OperatorRole, Principal, Resource};
use crate::{Audited, IdentityError};

impl Identity {
    /// Creates another operator account with some of the actor's own roles
    /// (nobody hands out more than they hold). The new operator must enrol
    /// MFA at first sign-in.
    pub async fn create_operator(
        &self,
        actor: &Principal,
        email: &str,
        display_name: &str,
        initial_password: &SecretString,
        roles: &BTreeSet<OperatorRole>,
    ) -> Audited<AccountId> {
        let mut ev = Events::default();
        let r = async {
            self.require(&mut ev, actor, Action::OperatorsManage, &Resource::Platform)?;
            if roles.is_empty() {
                return Err(IdentityError::InvalidInput(
                    "an operator needs at least one role".into(),
                ));
            }
            if !roles.is_subset(&actor.operator_roles) {
                return Err(IdentityError::Denied(DenyReason::HigherPrivilegeTarget));
            }
            let email = Email::parse(email)?;
            let name = DisplayName::parse(display_name)?;
            check_password_policy(initial_password)?;
            let phc = self.hash_password(initial_password).await?;
            let now = self.now();
            let id = AccountId::new();
            let created = IdentityEvent::new("account.created", EventOutcome::Success, now)
                .actor(actor.account)
                .subject(id)
                .detail("kind", "operator")
                .detail(
                    "roles",
                    roles
                        .iter()
                        .map(|r| r.as_str())
                        .collect::<Vec<_>>()
                        .join(" "),
                );
            let account = NewAccount {
                account: AccountRecord {
                    id,
                    email: email.as_str().to_owned(),
                    display_name: name.as_str().to_owned(),
                    phone: None,
                    status: AccountStatus::Active.as_str().into(),
                    kind: AccountKind::Operator.as_str().into(),
                    created_at: now,
                },
                password_phc: Some(phc),
                grants: roles
                    .iter()
                    .map(|r| RoleGrant {
                        team: None,
                        role: r.as_str().into(),
                        via_group: None,
                    })
                    .collect(),
                teams: Vec::new(),
            };
            self.described(
                &mut ev,
                move |_: &()| vec![created],
                |events| self.store().create_account(account, events),
            )
            .await
            .map_err(|e| match e {
                IdentityError::Store(StoreError::Conflict(_)) => IdentityError::EmailTaken,
                other => other,
            })?;
            Ok(id)
        }
        .await;
        ev.finish(r)
    }
}

impl Identity {
    /// Grants (`grant == true`) or revokes an operator role of another
    /// operator. The actor must manage operators, hold the role itself, and
    /// hold every role the target holds (equal or higher privilege).
    pub async fn set_operator_role(
        &self,
        actor: &Principal,
        target: AccountId,
        role: OperatorRole,
        grant: bool,
    ) -> Audited<()> {
        let mut ev = Events::default();
        let r = async {
            let target_roles = self.account_target(target).await?;
            let is_operator = self
                .load_account(target)
                .await?
                .is_some_and(|a| a.kind == AccountKind::Operator);
            if !is_operator {
                self.require(&mut ev, actor, Action::OperatorsManage, &Resource::Platform)?;
                return Err(IdentityError::NotFound("operator"));
            }
            if target_roles.operator_roles.is_empty() {
                self.require(&mut ev, actor, Action::OperatorsManage, &Resource::Platform)?;
            } else {
                self.require(
                    &mut ev,
                    actor,
                    Action::AccountManage,
                    &Resource::Account(target_roles.clone()),
                )?;
            }
            if !actor.operator_roles.contains(&role) {
                return Err(IdentityError::Denied(DenyReason::HigherPrivilegeTarget));
            }
            let now = self.now();
            let subject = GrantSubject::Account(target);
            let event = |action| {
                IdentityEvent::new(action, EventOutcome::Success, now)
                    .actor(actor.account)
                    .subject(target)
                    .detail("role", role.as_str())
            };
            if grant {
                let e = event("operator.role.granted");
                self.described(
                    &mut ev,
                    move |_: &()| vec![e],
                    |events| {
                        self.store().grant_role(
                            subject,
                            None,
                            role.as_str(),
                            Some(actor.account),
                            now,
                            events,
                        )
                    },
                )
                .await?;
            } else {
                if target_roles.operator_roles.len() == 1
                    && target_roles.operator_roles.contains(&role)
                {
                    return Err(IdentityError::InvalidInput(
                        "an operator keeps at least one role; disable the account instead".into(),
                    ));
                }
                let e = event("operator.role.revoked");
                let revoked = self
                    .described(
                        &mut ev,
                        move |revoked: &bool| if *revoked { vec![e] } else { Vec::new() },
                        |events| {
                            self.store()
                                .revoke_role(subject, None, role.as_str(), events)
                        },
                    )
                    .await?;
                if !revoked {
                    return Err(IdentityError::NotFound("role grant"));
                }
            }
            Ok(())
        }
        .await;
        ev.finish(r)
    }
}
