//! Invitations: issuing single-use, expiring invitation tokens, listing
//! and revoking them, and accepting one (as a new or an existing account).

use kura_crypto::token::{SecretToken, TokenHash};
use kura_store::{AccountRecord, InvitationRecord, NewAccount, StoreError};
use kura_types::{AccountId, InvitationId, TeamId};

use super::Identity;
use super::teams::{
    Acceptance, AcceptedInvitation, Invitation, IssuedInvitation, invitation_event,
};
use crate::account::{AccountKind, AccountStatus, DisplayName, Email};
use crate::error::TokenProblem;
use crate::event::{EventOutcome, Events, IdentityEvent};
use crate::password::check_password_policy;
use crate::policy::{Action, DenyReason, Principal, Resource, TeamRole};
use crate::{Audited, IdentityError};

impl Identity {
    pub(super) fn invitation(
        &self,
        team: TeamId,
        email: Email,
        role: TeamRole,
        by: AccountId,
    ) -> Result<(InvitationRecord, IssuedInvitation), IdentityError> {
        let now = self.now();
        let token = SecretToken::generate().map_err(|e| IdentityError::Internal(e.to_string()))?;
        let expires_at = now + self.inner.config.invitation_ttl;
        let id = InvitationId::new();
        let record = InvitationRecord {
            id,
            token_hash: token.hash(),
            team,
            email: email.as_str().to_owned(),
            role: role.as_str().to_owned(),
            invited_by: by,
            created_at: now,
            expires_at,
            accepted_at: None,
            revoked_at: None,
        };
        Ok((
            record,
            IssuedInvitation {
                id,
                team,
                email,
                role,
                expires_at,
                token,
            },
        ))
    }

    /// Invites an email address to the team with a role. Only owners may
    /// invite owners.
    pub async fn invite(
        &self,
        actor: &Principal,
        team: TeamId,
        email: &str,
        role: TeamRole,
    ) -> Audited<IssuedInvitation> {
        let mut ev = Events::default();
        let r = async {
            self.require(&mut ev, actor, Action::MembersManage, &Resource::Team(team))?;
            self.require_owner_for(&mut ev, actor, team, role)?;
            let email = Email::parse(email)?;
            if let Some(existing) = self.store().account_by_email(email.as_str()).await?
                && existing.kind == AccountKind::Operator.as_str()
            {
                return Err(IdentityError::InvalidInput(
                    "operator accounts cannot join teams".into(),
                ));
            }
            let (record, issued) = self.invitation(team, email, role, actor.account)?;
            let e = invitation_event(&issued, actor.account, self.now());
            self.described(
                &mut ev,
                move |_: &()| vec![e],
                |events| self.store().create_invitation(record, events),
            )
            .await?;
            Ok(issued)
        }
        .await;
        ev.finish(r)
    }

    /// The team's open invitations (never their tokens, which were shown
    /// once when issued).
    pub async fn invitations(&self, actor: &Principal, team: TeamId) -> Audited<Vec<Invitation>> {
        let mut ev = Events::default();
        let r = async {
            self.require(&mut ev, actor, Action::MembersRead, &Resource::Team(team))?;
            self.store()
                .open_invitations(team)
                .await?
                .into_iter()
                .map(|i| {
                    Ok(Invitation {
                        id: i.id,
                        role: TeamRole::parse(&i.role)
                            .ok_or_else(|| IdentityError::Corrupt("invitation role".into()))?,
                        email: i.email,
                        invited_by: i.invited_by,
                        created_at: i.created_at,
                        expires_at: i.expires_at,
                    })
                })
                .collect()
        }
        .await;
        ev.finish(r)
    }

    /// Withdraws an unused invitation.
    pub async fn revoke_invitation(
        &self,
        actor: &Principal,
        team: TeamId,
        id: InvitationId,
    ) -> Audited<()> {
        let mut ev = Events::default();
        let r = async {
            self.require(&mut ev, actor, Action::MembersManage, &Resource::Team(team))?;
            let inv = self
                .store()
                .invitation(id)
                .await?
                .filter(|i| i.team == team)
                .ok_or(IdentityError::NotFound("invitation"))?;
            let role = TeamRole::parse(&inv.role)
                .ok_or_else(|| IdentityError::Corrupt("invitation role".into()))?;
            self.require_owner_for(&mut ev, actor, team, role)?;
            let now = self.now();
            let e = IdentityEvent::new("invitation.revoked", EventOutcome::Success, now)
                .actor(actor.account)
                .team(team)
                .detail("invitation", id);
            let revoked = self
                .described(
                    &mut ev,
                    move |revoked: &bool| if *revoked { vec![e] } else { Vec::new() },
                    |events| self.store().revoke_invitation(id, now, events),
                )
                .await?;
            if !revoked {
                return Err(IdentityError::BadToken(TokenProblem::Used));
            }
            Ok(())
        }
        .await;
        ev.finish(r)
    }

    /// Accepts an invitation: once, before it expires, for the invited
    /// address only. Joining and (for a new account) creating the account
    /// happen in one transaction.
    pub async fn accept_invitation(
        &self,
        token: &str,
        acceptance: Acceptance<'_>,
    ) -> Audited<AcceptedInvitation> {
        let mut ev = Events::default();
        let r = self.accept_inner(&mut ev, token, acceptance).await;
        ev.finish(r)
    }

    async fn accept_inner(
        &self,
        ev: &mut Events,
        token: &str,
        acceptance: Acceptance<'_>,
    ) -> Result<AcceptedInvitation, IdentityError> {
        let now = self.now();
        let inv = self
            .store()
            .invitation_by_hash(&TokenHash::of(token))
            .await?;
        let problem = match &inv {
            None => Some(TokenProblem::Unknown),
            Some(i) if i.revoked_at.is_some() => Some(TokenProblem::Unknown),
            Some(i) if i.accepted_at.is_some() => Some(TokenProblem::Used),
            Some(i) if now >= i.expires_at => Some(TokenProblem::Expired),
            Some(_) => None,
        };
        let reject = |ev: &mut Events, problem: TokenProblem, team: Option<TeamId>| {
            let mut e = IdentityEvent::new("invitation.rejected", EventOutcome::Failure, now)
                .detail("reason", problem.as_str());
            if let Some(t) = team {
                e = e.team(t);
            }
            ev.push(e);
            IdentityError::BadToken(problem)
        };
        let inv = match (inv, problem) {
            (Some(inv), None) => inv,
            (inv, Some(problem)) => return Err(reject(ev, problem, inv.map(|i| i.team))),
            (None, None) => return Err(reject(ev, TokenProblem::Unknown, None)),
        };
        let role = TeamRole::parse(&inv.role)
            .ok_or_else(|| IdentityError::Corrupt("invitation role".into()))?;
        let (account, new_account) = match acceptance {
            Acceptance::Existing(p) => {
                // Joining a team is done by the person, in a session.
                p.session_id()
                    .ok_or(IdentityError::Denied(DenyReason::TokenNotAllowed))?;
                let account = self
                    .load_account(p.account)
                    .await?
                    .ok_or(IdentityError::Unauthenticated)?;
                if account.email.as_str() != inv.email || account.kind != AccountKind::Customer {
                    ev.push(
                        IdentityEvent::new("invitation.rejected", EventOutcome::Denied, now)
                            .actor(p.account)
                            .team(inv.team)
                            .detail("reason", "other_account"),
                    );
                    return Err(IdentityError::Denied(DenyReason::NoRole));
                }
                (account.id, None)
            }
            Acceptance::NewAccount {
                display_name,
                password,
            } => {
                let name = DisplayName::parse(display_name)?;
                check_password_policy(password)?;
                if self.store().account_by_email(&inv.email).await?.is_some() {
                    return Err(IdentityError::EmailTaken);
                }
                let phc = self.hash_password(password).await?;
                let id = AccountId::new();
                (
                    id,
                    Some(NewAccount {
                        account: AccountRecord {
                            id,
                            email: inv.email.clone(),
                            display_name: name.as_str().to_owned(),
                            phone: None,
                            status: AccountStatus::Active.as_str().into(),
                            kind: AccountKind::Customer.as_str().into(),
                            created_at: now,
                        },
                        password_phc: Some(phc),
                        grants: Vec::new(),
                        teams: Vec::new(),
                    }),
                )
            }
        };
        let created = new_account.is_some();
        let mut events = Vec::new();
        if created {
            events.push(
                IdentityEvent::new("account.created", EventOutcome::Success, now)
                    .actor(account)
                    .subject(account)
                    .team(inv.team)
                    .detail("via", "invitation"),
            );
        }
        events.push(
            IdentityEvent::new("invitation.accepted", EventOutcome::Success, now)
                .actor(account)
                .team(inv.team)
                .detail("invitation", inv.id)
                .detail("role", role.as_str()),
        );
        let accepted = self
            .described(
                ev,
                move |accepted: &bool| if *accepted { events } else { Vec::new() },
                |tx_events| {
                    self.store()
                        .accept_invitation(inv.id, account, new_account, now, tx_events)
                },
            )
            .await
            .map_err(|e| match e {
                IdentityError::Store(StoreError::Conflict(_)) => IdentityError::EmailTaken,
                other => other,
            })?;
        if !accepted {
            return Err(reject(ev, TokenProblem::Used, Some(inv.team)));
        }
        Ok(AcceptedInvitation {
            team: inv.team,
            account,
            role,
            created_account: created,
        })
    }
}
