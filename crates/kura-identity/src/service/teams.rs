//! Teams, members, groups, invitations, team roles and operator accounts.

use std::collections::BTreeSet;

use kura_crypto::token::{SecretToken, TokenHash};
use kura_store::{
    AccountRecord, GrantSubject, GroupRecord, InvitationRecord, NewAccount, RoleGrant, StoreError,
    TeamRecord,
};
use kura_types::{AccountId, GroupId, InvitationId, TeamId};
use secrecy::SecretString;
use time::OffsetDateTime;

use super::Identity;
use crate::account::{Account, AccountKind, AccountStatus, DisplayName, Email};
use crate::error::TokenProblem;
use crate::event::{EventOutcome, Events, IdentityEvent};
use crate::mfa::TeamMfaPolicy;
use crate::password::check_password_policy;
use crate::policy::{Action, DenyReason, OperatorRole, Principal, Resource, TeamRole};
use crate::{Audited, IdentityError};

/// A team.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Team {
    /// Its id.
    pub id: TeamId,
    /// Its name.
    pub name: String,
    /// Its MFA requirement.
    pub mfa_policy: TeamMfaPolicy,
    /// When it was created.
    pub created_at: OffsetDateTime,
}

impl Team {
    fn from_record(r: TeamRecord) -> Result<Self, IdentityError> {
        Ok(Self {
            id: r.id,
            mfa_policy: TeamMfaPolicy::from_stored(&r.mfa_policy)?,
            name: r.name,
            created_at: r.created_at,
        })
    }
}

/// A member of a team with the roles it holds there (directly or through
/// groups).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Member {
    /// The account.
    pub account: Account,
    /// Its roles in the team.
    pub roles: BTreeSet<TeamRole>,
    /// When it joined.
    pub joined_at: OffsetDateTime,
}

/// An open invitation, as listed (its token was shown once, when issued).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Invitation {
    /// Its id.
    pub id: InvitationId,
    /// The address invited.
    pub email: String,
    /// The role the invitee will get.
    pub role: TeamRole,
    /// Who invited.
    pub invited_by: AccountId,
    /// When it was created.
    pub created_at: OffsetDateTime,
    /// When it stops (or stopped) working.
    pub expires_at: OffsetDateTime,
}

/// A group of a team.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Group {
    /// Its id.
    pub id: GroupId,
    /// Its team.
    pub team: TeamId,
    /// Its name.
    pub name: String,
    /// When it was created.
    pub created_at: OffsetDateTime,
}

/// A new invitation; hand the token to the invitee once (as a link).
#[derive(Debug)]
pub struct IssuedInvitation {
    /// Its id (for listing and revoking).
    pub id: InvitationId,
    /// The team.
    pub team: TeamId,
    /// The address invited.
    pub email: Email,
    /// The role the invitee will get.
    pub role: TeamRole,
    /// When it stops working.
    pub expires_at: OffsetDateTime,
    /// The single-use token.
    pub token: SecretToken,
}

/// A new team and the invitation for its first owner.
#[derive(Debug)]
pub struct TeamCreated {
    /// The team.
    pub team: TeamId,
    /// The owner's invitation.
    pub owner_invitation: IssuedInvitation,
}

/// Who accepts an invitation.
#[derive(Debug)]
pub enum Acceptance<'a> {
    /// A signed-in account whose email is the invited one.
    Existing(&'a Principal),
    /// A new account for the invited email.
    NewAccount {
        /// Its display name.
        display_name: &'a str,
        /// Its password.
        password: &'a SecretString,
    },
}

/// An accepted invitation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AcceptedInvitation {
    /// The team joined.
    pub team: TeamId,
    /// The account that joined.
    pub account: AccountId,
    /// The role received.
    pub role: TeamRole,
    /// Whether the account was created by accepting.
    pub created_account: bool,
}

fn team_name(name: &str) -> Result<String, IdentityError> {
    let n = name.trim();
    let len = n.chars().count();
    if len == 0 || len > 100 || n.chars().any(char::is_control) {
        return Err(IdentityError::InvalidInput(
            "a name must be 1 to 100 characters without control characters".into(),
        ));
    }
    Ok(n.to_owned())
}

impl Identity {
    /// Creates a team (platform operators with the server-admin role) and
    /// an invitation for its first owner, in one transaction.
    pub async fn create_team(
        &self,
        actor: &Principal,
        name: &str,
        owner_email: &str,
    ) -> Audited<TeamCreated> {
        let mut ev = Events::default();
        let r = async {
            self.require(&mut ev, actor, Action::TeamsCreate, &Resource::Platform)?;
            let name = team_name(name)?;
            let email = Email::parse(owner_email)?;
            let now = self.now();
            let team = TeamId::new();
            let (record, issued) = self.invitation(team, email, TeamRole::Owner, actor.account)?;
            self.store()
                .create_team(
                    TeamRecord {
                        id: team,
                        name: name.clone(),
                        mfa_policy: TeamMfaPolicy::None.to_stored(),
                        created_at: now,
                    },
                    None,
                    Some(record),
                )
                .await?;
            ev.push(
                IdentityEvent::new("team.created", EventOutcome::Success, now)
                    .actor(actor.account)
                    .team(team)
                    .detail("name", &name),
            );
            ev.push(invitation_event(&issued, actor.account, now));
            Ok(TeamCreated {
                team,
                owner_invitation: issued,
            })
        }
        .await;
        ev.finish(r)
    }

    fn invitation(
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

    /// A team's details.
    pub async fn team(&self, actor: &Principal, team: TeamId) -> Audited<Team> {
        let mut ev = Events::default();
        let r = async {
            self.require(&mut ev, actor, Action::TeamRead, &Resource::Team(team))?;
            let t = self
                .store()
                .team(team)
                .await?
                .ok_or(IdentityError::NotFound("team"))?;
            Team::from_record(t)
        }
        .await;
        ev.finish(r)
    }

    /// The teams the principal belongs to.
    pub async fn my_teams(&self, p: &Principal) -> Audited<Vec<Team>> {
        let mut ev = Events::default();
        let r = async {
            self.require(&mut ev, p, Action::OwnAccountRead, &self.self_target(p))?;
            self.store()
                .teams_of(p.account)
                .await?
                .into_iter()
                .map(Team::from_record)
                .collect()
        }
        .await;
        ev.finish(r)
    }

    /// Sets who in the team must use MFA, and how strong it must be.
    pub async fn set_team_mfa_policy(
        &self,
        actor: &Principal,
        team: TeamId,
        policy: TeamMfaPolicy,
    ) -> Audited<()> {
        let mut ev = Events::default();
        let r = async {
            self.require(&mut ev, actor, Action::TeamManage, &Resource::Team(team))?;
            if let TeamMfaPolicy::Groups { groups, .. } = &policy {
                let own: BTreeSet<GroupId> = self
                    .store()
                    .groups(team)
                    .await?
                    .into_iter()
                    .map(|g| g.id)
                    .collect();
                if groups.is_empty() || !groups.is_subset(&own) {
                    return Err(IdentityError::InvalidInput(
                        "the MFA requirement names groups that are not the team's".into(),
                    ));
                }
            }
            self.store()
                .set_team_mfa_policy(team, &policy.to_stored())
                .await?;
            ev.push(
                IdentityEvent::new("team.mfa_policy.changed", EventOutcome::Success, self.now())
                    .actor(actor.account)
                    .team(team)
                    .detail("policy", policy.to_stored()),
            );
            Ok(())
        }
        .await;
        ev.finish(r)
    }

    /// Whether the principal owns the team (the bar for anything touching
    /// owners: equal or higher privilege).
    fn owns(p: &Principal, team: TeamId) -> bool {
        p.team_roles
            .get(&team)
            .is_some_and(|r| r.contains(&TeamRole::Owner))
    }

    /// Refuses a change that touches the owner role unless the actor owns
    /// the team.
    fn require_owner_for(
        &self,
        ev: &mut Events,
        actor: &Principal,
        team: TeamId,
        role: TeamRole,
    ) -> Result<(), IdentityError> {
        if role == TeamRole::Owner && !Self::owns(actor, team) {
            ev.push(
                IdentityEvent::new("authz.denied", EventOutcome::Denied, self.now())
                    .actor(actor.account)
                    .team(team)
                    .detail("action", Action::MembersManage.as_str())
                    .detail("reason", DenyReason::HigherPrivilegeTarget.as_str()),
            );
            return Err(IdentityError::Denied(DenyReason::HigherPrivilegeTarget));
        }
        Ok(())
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
            self.store().create_invitation(record).await?;
            ev.push(invitation_event(&issued, actor.account, self.now()));
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
            if !self.store().revoke_invitation(id, self.now()).await? {
                return Err(IdentityError::BadToken(TokenProblem::Used));
            }
            ev.push(
                IdentityEvent::new("invitation.revoked", EventOutcome::Success, self.now())
                    .actor(actor.account)
                    .team(team)
                    .detail("invitation", id),
            );
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
        let accepted = self
            .store()
            .accept_invitation(inv.id, account, new_account, now)
            .await
            .map_err(|e| match e {
                StoreError::Conflict(_) => IdentityError::EmailTaken,
                other => other.into(),
            })?;
        if !accepted {
            return Err(reject(ev, TokenProblem::Used, Some(inv.team)));
        }
        if created {
            ev.push(
                IdentityEvent::new("account.created", EventOutcome::Success, now)
                    .actor(account)
                    .subject(account)
                    .team(inv.team)
                    .detail("via", "invitation"),
            );
        }
        ev.push(
            IdentityEvent::new("invitation.accepted", EventOutcome::Success, now)
                .actor(account)
                .team(inv.team)
                .detail("invitation", inv.id)
                .detail("role", role.as_str()),
        );
        Ok(AcceptedInvitation {
            team: inv.team,
            account,
            role,
            created_account: created,
        })
    }

    /// The team's members and their roles.
    pub async fn members(&self, actor: &Principal, team: TeamId) -> Audited<Vec<Member>> {
        let mut ev = Events::default();
        let r = async {
            self.require(&mut ev, actor, Action::MembersRead, &Resource::Team(team))?;
            let mut out = Vec::new();
            for m in self.store().members(team).await? {
                let (_, roles) = self.roles_of(m.account.id).await?;
                out.push(Member {
                    account: Account::from_record(m.account)?,
                    roles: roles.get(&team).cloned().unwrap_or_default(),
                    joined_at: m.joined_at,
                });
            }
            Ok(out)
        }
        .await;
        ev.finish(r)
    }

    /// The team's owners, leaving out one grant or group membership (to ask
    /// whether a change would leave the team without an owner before making
    /// it).
    async fn owners(
        &self,
        team: TeamId,
        without: Option<Without>,
    ) -> Result<BTreeSet<AccountId>, IdentityError> {
        let mut out = BTreeSet::new();
        for m in self.store().members(team).await? {
            let id = m.account.id;
            let owner = self.store().grants_of(id).await?.iter().any(|g| {
                g.team == Some(team)
                    && g.role == TeamRole::Owner.as_str()
                    && !match without {
                        Some(Without::Account(a)) => a == id && g.via_group.is_none(),
                        Some(Without::Group(gr)) => g.via_group == Some(gr),
                        Some(Without::Membership(gr, a)) => a == id && g.via_group == Some(gr),
                        None => false,
                    }
            });
            if owner {
                out.insert(id);
            }
        }
        Ok(out)
    }

    /// Removes a member (only owners remove owners; the last owner stays).
    pub async fn remove_member(
        &self,
        actor: &Principal,
        team: TeamId,
        account: AccountId,
    ) -> Audited<()> {
        let mut ev = Events::default();
        let r = async {
            self.require(&mut ev, actor, Action::MembersManage, &Resource::Team(team))?;
            let target = self.account_target(account).await?;
            let Some(roles) = target.team_roles.get(&team) else {
                return Err(IdentityError::NotFound("member"));
            };
            if roles.contains(&TeamRole::Owner) {
                self.require_owner_for(&mut ev, actor, team, TeamRole::Owner)?;
                let rest = self.owners(team, None).await?;
                if rest.iter().all(|o| *o == account) {
                    return Err(IdentityError::LastOwner);
                }
            }
            if !self.store().remove_member(team, account).await? {
                return Err(IdentityError::NotFound("member"));
            }
            ev.push(
                IdentityEvent::new("team.member.removed", EventOutcome::Success, self.now())
                    .actor(actor.account)
                    .subject(account)
                    .team(team),
            );
            Ok(())
        }
        .await;
        ev.finish(r)
    }

    /// Checks that a grant subject belongs to the team.
    async fn subject_in_team(
        &self,
        team: TeamId,
        subject: GrantSubject,
    ) -> Result<(), IdentityError> {
        match subject {
            GrantSubject::Account(a) => {
                let (_, roles) = self.roles_of(a).await?;
                let member = roles.contains_key(&team)
                    || self
                        .store()
                        .members(team)
                        .await?
                        .iter()
                        .any(|m| m.account.id == a);
                if member {
                    Ok(())
                } else {
                    Err(IdentityError::NotFound("member"))
                }
            }
            GrantSubject::Group(g) => match self.store().group(g).await? {
                Some(group) if group.team == team => Ok(()),
                _ => Err(IdentityError::NotFound("group")),
            },
        }
    }

    /// Grants a team role to a member or a group (only owners grant owner).
    pub async fn grant_team_role(
        &self,
        actor: &Principal,
        team: TeamId,
        subject: GrantSubject,
        role: TeamRole,
    ) -> Audited<()> {
        let mut ev = Events::default();
        let r = async {
            self.require(&mut ev, actor, Action::MembersManage, &Resource::Team(team))?;
            self.require_owner_for(&mut ev, actor, team, role)?;
            self.subject_in_team(team, subject).await?;
            let now = self.now();
            self.store()
                .grant_role(subject, Some(team), role.as_str(), Some(actor.account), now)
                .await?;
            ev.push(role_event(
                "team.role.granted",
                actor,
                team,
                subject,
                role,
                now,
            ));
            Ok(())
        }
        .await;
        ev.finish(r)
    }

    /// Revokes a team role (only owners revoke owner; the last owner stays).
    pub async fn revoke_team_role(
        &self,
        actor: &Principal,
        team: TeamId,
        subject: GrantSubject,
        role: TeamRole,
    ) -> Audited<()> {
        let mut ev = Events::default();
        let r = async {
            self.require(&mut ev, actor, Action::MembersManage, &Resource::Team(team))?;
            self.require_owner_for(&mut ev, actor, team, role)?;
            self.subject_in_team(team, subject).await?;
            if role == TeamRole::Owner {
                let without = match subject {
                    GrantSubject::Account(a) => Without::Account(a),
                    GrantSubject::Group(g) => Without::Group(g),
                };
                if self.owners(team, Some(without)).await?.is_empty() {
                    return Err(IdentityError::LastOwner);
                }
            }
            let now = self.now();
            if !self
                .store()
                .revoke_role(subject, Some(team), role.as_str())
                .await?
            {
                return Err(IdentityError::NotFound("role grant"));
            }
            ev.push(role_event(
                "team.role.revoked",
                actor,
                team,
                subject,
                role,
                now,
            ));
            Ok(())
        }
        .await;
        ev.finish(r)
    }

    /// Creates a group in the team.
    pub async fn create_group(
        &self,
        actor: &Principal,
        team: TeamId,
        name: &str,
    ) -> Audited<GroupId> {
        let mut ev = Events::default();
        let r = async {
            self.require(&mut ev, actor, Action::MembersManage, &Resource::Team(team))?;
            let name = team_name(name)?;
            let now = self.now();
            let id = GroupId::new();
            self.store()
                .create_group(GroupRecord {
                    id,
                    team,
                    name: name.clone(),
                    created_at: now,
                })
                .await
                .map_err(|e| match e {
                    StoreError::Conflict(what) => IdentityError::Conflict(what),
                    other => other.into(),
                })?;
            ev.push(
                IdentityEvent::new("team.group.created", EventOutcome::Success, now)
                    .actor(actor.account)
                    .team(team)
                    .detail("group", id)
                    .detail("name", &name),
            );
            Ok(id)
        }
        .await;
        ev.finish(r)
    }

    /// The team's groups.
    pub async fn groups(&self, actor: &Principal, team: TeamId) -> Audited<Vec<Group>> {
        let mut ev = Events::default();
        let r = async {
            self.require(&mut ev, actor, Action::MembersRead, &Resource::Team(team))?;
            Ok(self
                .store()
                .groups(team)
                .await?
                .into_iter()
                .map(|g| Group {
                    id: g.id,
                    team: g.team,
                    name: g.name,
                    created_at: g.created_at,
                })
                .collect())
        }
        .await;
        ev.finish(r)
    }

    /// Adds a member to (or, with `add == false`, removes it from) a group.
    /// A group that carries the owner role is changed only by owners.
    pub async fn set_group_member(
        &self,
        actor: &Principal,
        team: TeamId,
        group: GroupId,
        account: AccountId,
        add: bool,
    ) -> Audited<()> {
        let mut ev = Events::default();
        let r = async {
            self.require(&mut ev, actor, Action::MembersManage, &Resource::Team(team))?;
            self.subject_in_team(team, GrantSubject::Group(group))
                .await?;
            self.subject_in_team(team, GrantSubject::Account(account))
                .await?;
            let carries_owner = self
                .store()
                .grants_of_group(group)
                .await?
                .iter()
                .any(|g| g.role == TeamRole::Owner.as_str());
            if carries_owner {
                self.require_owner_for(&mut ev, actor, team, TeamRole::Owner)?;
            }
            let now = self.now();
            let action = if add {
                self.store().add_group_member(group, account, now).await?;
                "team.group.member_added"
            } else {
                if carries_owner
                    && self
                        .owners(team, Some(Without::Membership(group, account)))
                        .await?
                        .is_empty()
                {
                    return Err(IdentityError::LastOwner);
                }
                if !self.store().remove_group_member(group, account).await? {
                    return Err(IdentityError::NotFound("group member"));
                }
                "team.group.member_removed"
            };
            ev.push(
                IdentityEvent::new(action, EventOutcome::Success, now)
                    .actor(actor.account)
                    .subject(account)
                    .team(team)
                    .detail("group", group),
            );
            Ok(())
        }
        .await;
        ev.finish(r)
    }

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
            self.store()
                .create_account(NewAccount {
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
                })
                .await
                .map_err(|e| match e {
                    StoreError::Conflict(_) => IdentityError::EmailTaken,
                    other => other.into(),
                })?;
            ev.push(
                IdentityEvent::new("account.created", EventOutcome::Success, now)
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
                    ),
            );
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
            let action = if grant {
                self.store()
                    .grant_role(subject, None, role.as_str(), Some(actor.account), now)
                    .await?;
                "operator.role.granted"
            } else {
                if target_roles.operator_roles.len() == 1
                    && target_roles.operator_roles.contains(&role)
                {
                    return Err(IdentityError::InvalidInput(
                        "an operator keeps at least one role; disable the account instead".into(),
                    ));
                }
                if !self
                    .store()
                    .revoke_role(subject, None, role.as_str())
                    .await?
                {
                    return Err(IdentityError::NotFound("role grant"));
                }
                "operator.role.revoked"
            };
            ev.push(
                IdentityEvent::new(action, EventOutcome::Success, now)
                    .actor(actor.account)
                    .subject(target)
                    .detail("role", role.as_str()),
            );
            Ok(())
        }
        .await;
        ev.finish(r)
    }
}

/// A grant or membership to leave out when counting owners.
#[derive(Debug, Clone, Copy)]
enum Without {
    Account(AccountId),
    Group(GroupId),
    Membership(GroupId, AccountId),
}

fn invitation_event(i: &IssuedInvitation, by: AccountId, now: OffsetDateTime) -> IdentityEvent {
    IdentityEvent::new("invitation.created", EventOutcome::Success, now)
        .actor(by)
        .team(i.team)
        .detail("invitation", i.id)
        .detail("email", &i.email)
        .detail("role", i.role.as_str())
        .detail("expires_at", i.expires_at)
}

fn role_event(
    action: &'static str,
    actor: &Principal,
    team: TeamId,
    subject: GrantSubject,
    role: TeamRole,
    now: OffsetDateTime,
) -> IdentityEvent {
    let e = IdentityEvent::new(action, EventOutcome::Success, now)
        .actor(actor.account)
        .team(team)
        .detail("role", role.as_str());
    match subject {
        GrantSubject::Account(a) => e.subject(a),
        GrantSubject::Group(g) => e.detail("group", g),
    }
}
