//! Teams, members, groups, invitations and team roles (operator accounts
//! are in `operators`).

use std::collections::BTreeSet;

use kura_crypto::token::SecretToken;
use kura_store::{GrantSubject, GroupRecord, StoreError, TeamRecord};
use kura_types::{AccountId, GroupId, InvitationId, TeamId};
use secrecy::SecretString;
use time::OffsetDateTime;

use super::Identity;
use crate::account::{Account, Email};
use crate::event::{EventOutcome, Events, IdentityEvent};
use crate::mfa::TeamMfaPolicy;
use crate::policy::{Action, DenyReason, Principal, Resource, TeamRole};
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
    pub(super) fn from_record(r: TeamRecord) -> Result<Self, IdentityError> {
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
            let events = vec![
                IdentityEvent::new("team.created", EventOutcome::Success, now)
                    .actor(actor.account)
                    .team(team)
                    .detail("name", &name),
                invitation_event(&issued, actor.account, now),
            ];
            let record = (
                TeamRecord {
                    id: team,
                    name,
                    mfa_policy: TeamMfaPolicy::None.to_stored(),
                    created_at: now,
                },
                record,
            );
            self.described(
                &mut ev,
                move |_: &()| events,
                |tx_events| {
                    self.store()
                        .create_team(record.0, None, Some(record.1), tx_events)
                },
            )
            .await?;
            Ok(TeamCreated {
                team,
                owner_invitation: issued,
            })
        }
        .await;
        ev.finish(r)
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
            let stored = policy.to_stored();
            let e =
                IdentityEvent::new("team.mfa_policy.changed", EventOutcome::Success, self.now())
                    .actor(actor.account)
                    .team(team)
                    .detail("policy", &stored);
            self.described(
                &mut ev,
                move |_: &()| vec![e],
                |events| self.store().set_team_mfa_policy(team, &stored, events),
            )
            .await?;
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
    pub(super) fn require_owner_for(
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
            let e = IdentityEvent::new("team.member.removed", EventOutcome::Success, self.now())
                .actor(actor.account)
                .subject(account)
                .team(team);
            let removed = self
                .described(
                    &mut ev,
                    move |removed: &bool| if *removed { vec![e] } else { Vec::new() },
                    |events| self.store().remove_member(team, account, events),
                )
                .await?;
            if !removed {
                return Err(IdentityError::NotFound("member"));
            }
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
            let e = role_event("team.role.granted", actor, team, subject, role, now);
            self.described(
                &mut ev,
                move |_: &()| vec![e],
                |events| {
                    self.store().grant_role(
                        subject,
                        Some(team),
                        role.as_str(),
                        Some(actor.account),
                        now,
                        events,
                    )
                },
            )
            .await?;
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
            let e = role_event("team.role.revoked", actor, team, subject, role, now);
            let revoked = self
                .described(
                    &mut ev,
                    move |revoked: &bool| if *revoked { vec![e] } else { Vec::new() },
                    |events| {
                        self.store()
                            .revoke_role(subject, Some(team), role.as_str(), events)
                    },
                )
                .await?;
            if !revoked {
                return Err(IdentityError::NotFound("role grant"));
            }
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
            let e = IdentityEvent::new("team.group.created", EventOutcome::Success, now)
                .actor(actor.account)
                .team(team)
                .detail("group", id)
                .detail("name", &name);
            let group = GroupRecord {
                id,
                team,
                name,
                created_at: now,
            };
            self.described(
                &mut ev,
                move |_: &()| vec![e],
                |events| self.store().create_group(group, events),
            )
            .await
            .map_err(|e| match e {
                IdentityError::Store(StoreError::Conflict(what)) => IdentityError::Conflict(what),
                other => other,
            })?;
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
            let event = |action| {
                IdentityEvent::new(action, EventOutcome::Success, now)
                    .actor(actor.account)
                    .subject(account)
                    .team(team)
                    .detail("group", group)
            };
            if add {
                let e = event("team.group.member_added");
                self.described(
                    &mut ev,
                    move |_: &()| vec![e],
                    |events| self.store().add_group_member(group, account, now, events),
                )
                .await?;
            } else {
                if carries_owner
                    && self
                        .owners(team, Some(Without::Membership(group, account)))
                        .await?
                        .is_empty()
                {
                    return Err(IdentityError::LastOwner);
                }
                let e = event("team.group.member_removed");
                let removed = self
                    .described(
                        &mut ev,
                        move |removed: &bool| if *removed { vec![e] } else { Vec::new() },
                        |events| self.store().remove_group_member(group, account, events),
                    )
                    .await?;
                if !removed {
                    return Err(IdentityError::NotFound("group member"));
                }
            }
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

pub(super) fn invitation_event(
    i: &IssuedInvitation,
    by: AccountId,
    now: OffsetDateTime,
) -> IdentityEvent {
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
