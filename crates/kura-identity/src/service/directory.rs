//! Listings for people who look after teams: every team on the platform
//! (operators, `TeamsList`) and a team's groups with their members and the
//! roles they carry (`MembersRead`). Read-only; the changes are in `teams`.

use std::collections::BTreeSet;

use kura_types::{AccountId, TeamId};

use super::Identity;
use super::teams::{Group, Team};
use crate::event::Events;
use crate::policy::{Action, Principal, Resource, TeamRole};
use crate::{Audited, IdentityError};

/// A group with the accounts in it and the team roles it gives them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupDetail {
    /// The group.
    pub group: Group,
    /// The accounts in it, in the order they were added.
    pub members: Vec<AccountId>,
    /// The team roles granted to the group.
    pub roles: BTreeSet<TeamRole>,
}

impl Identity {
    /// Every team on the platform, by name (needs `TeamsList`, which the
    /// server-admin and support operator roles hold).
    pub async fn all_teams(&self, actor: &Principal) -> Audited<Vec<Team>> {
        let mut ev = Events::default();
        let r = async {
            self.require(&mut ev, actor, Action::TeamsList, &Resource::Platform)?;
            self.store()
                .all_teams()
                .await?
                .into_iter()
                .map(Team::from_record)
                .collect()
        }
        .await;
        ev.finish(r)
    }

    /// The team's groups with their members and roles.
    pub async fn group_details(
        &self,
        actor: &Principal,
        team: TeamId,
    ) -> Audited<Vec<GroupDetail>> {
        let mut ev = Events::default();
        let r = async {
            self.require(&mut ev, actor, Action::MembersRead, &Resource::Team(team))?;
            let mut out = Vec::new();
            for g in self.store().groups(team).await? {
                let members = self.store().group_members(g.id).await?;
                let roles = self
                    .store()
                    .grants_of_group(g.id)
                    .await?
                    .iter()
                    .filter(|grant| grant.team == Some(team))
                    .map(|grant| {
                        TeamRole::parse(&grant.role).ok_or_else(|| {
                            IdentityError::Corrupt(format!("unknown team role `{}`", grant.role))
                        })
                    })
                    .collect::<Result<BTreeSet<_>, _>>()?;
                out.push(GroupDetail {
                    group: Group {
                        id: g.id,
                        team: g.team,
                        name: g.name,
                        created_at: g.created_at,
                    },
                    members,
                    roles,
                });
            }
            Ok(out)
        }
        .await;
        ev.finish(r)
    }
}
