//! Time-boxed operator access to a team (DESIGN decision 6: an operator
//! acts inside a team only when the team lets it, for a while, on the
//! record).
//!
//! A team owner grants one operator one team role (admin, member or
//! auditor; never owner or billing) for at most [`MAX_OPERATOR_ACCESS`],
//! with a reason. While the grant is in force the operator holds that role
//! in that team, still under the operator rule that every action needs an
//! MFA-verified session; when it expires or the owner revokes it, the role
//! is gone at the next request. Grants, revocations and every action taken
//! under one are security events.

use kura_store::OperatorAccessRecord;
use kura_types::{AccountId, TeamId};
use time::{Duration, OffsetDateTime};

use super::Identity;
use crate::account::{AccountKind, AccountStatus};
use crate::event::{EventOutcome, Events, IdentityEvent};
use crate::policy::{Action, Principal, Resource, TeamRole};
use crate::{Audited, IdentityError};

/// The longest a grant may last.
pub const MAX_OPERATOR_ACCESS: Duration = Duration::days(7);

/// The shortest a grant may last.
const MIN_OPERATOR_ACCESS: Duration = Duration::minutes(5);

/// The longest reason, in characters.
const MAX_REASON_CHARS: usize = 500;

/// One grant, as the team sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OperatorAccess {
    /// Its id (for revocation).
    pub id: String,
    /// The team.
    pub team: TeamId,
    /// The operator let in.
    pub operator: AccountId,
    /// The role it acts with.
    pub role: TeamRole,
    /// Why.
    pub reason: String,
    /// Who granted it.
    pub granted_by: AccountId,
    /// When.
    pub granted_at: OffsetDateTime,
    /// When it ends by itself.
    pub expires_at: OffsetDateTime,
    /// When it was ended early.
    pub revoked_at: Option<OffsetDateTime>,
    /// Whether it is in force now.
    pub active: bool,
}

impl OperatorAccess {
    fn from_record(r: OperatorAccessRecord, now: OffsetDateTime) -> Result<Self, IdentityError> {
        let role = TeamRole::parse(&r.role)
            .ok_or_else(|| IdentityError::Corrupt(format!("unknown team role `{}`", r.role)))?;
        Ok(Self {
            active: r.is_active(now),
            id: r.id,
            team: r.team,
            operator: r.operator,
            role,
            reason: r.reason,
            granted_by: r.granted_by,
            granted_at: r.granted_at,
            expires_at: r.expires_at,
            revoked_at: r.revoked_at,
        })
    }
}

impl Identity {
    /// Lets an operator act in the team with `role` for `duration` (team
    /// owners only, with a recent MFA check or sign-in).
    pub async fn grant_operator_access(
        &self,
        actor: &Principal,
        team: TeamId,
        operator: AccountId,
        role: TeamRole,
        duration: Duration,
        reason: &str,
    ) -> Audited<OperatorAccess> {
        let mut ev = Events::default();
        let r = async {
            self.require(&mut ev, actor, Action::TeamManage, &Resource::Team(team))?;
            if !matches!(role, TeamRole::Admin | TeamRole::Member | TeamRole::Auditor) {
                return Err(IdentityError::InvalidInput(
                    "role: operators may be given admin, member or auditor".into(),
                ));
            }
            if duration < MIN_OPERATOR_ACCESS || duration > MAX_OPERATOR_ACCESS {
                return Err(IdentityError::InvalidInput(format!(
                    "duration: from {} minutes to {} days",
                    MIN_OPERATOR_ACCESS.whole_minutes(),
                    MAX_OPERATOR_ACCESS.whole_days()
                )));
            }
            let reason = reason.trim();
            if reason.is_empty()
                || reason.chars().count() > MAX_REASON_CHARS
                || reason.chars().any(char::is_control)
            {
                return Err(IdentityError::InvalidInput(format!(
                    "reason: 1 to {MAX_REASON_CHARS} characters, no control characters"
                )));
            }
            // Only active operator accounts can be let in; anything else
            // looks like an unknown operator.
            let target = self.load_account(operator).await?;
            if !target.as_ref().is_some_and(|a| {
                a.kind == AccountKind::Operator && a.status == AccountStatus::Active
            }) {
                return Err(IdentityError::NotFound("operator"));
            }
            let now = self.now();
            let record = OperatorAccessRecord {
                id: uuid::Uuid::new_v4().to_string(),
                team,
                operator,
                role: role.as_str().into(),
                reason: reason.into(),
                granted_by: actor.account,
                granted_at: now,
                expires_at: now + duration,
                revoked_at: None,
            };
            let e = IdentityEvent::new("team.operator_access.granted", EventOutcome::Success, now)
                .actor(actor.account)
                .subject(operator)
                .team(team)
                .detail("grant", &record.id)
                .detail("role", role.as_str())
                .detail("expires_at", record.expires_at.unix_timestamp())
                .detail("reason", reason);
            let stored = record.clone();
            self.described(
                &mut ev,
                move |_: &()| vec![e],
                |events| self.store().insert_operator_access(stored, events),
            )
            .await?;
            OperatorAccess::from_record(record, now)
        }
        .await;
        ev.finish(r)
    }

    /// Every grant of the team, ended ones included (those who may read
    /// its members).
    pub async fn operator_access(
        &self,
        p: &Principal,
        team: TeamId,
    ) -> Audited<Vec<OperatorAccess>> {
        let mut ev = Events::default();
        let r = async {
            self.require(&mut ev, p, Action::MembersRead, &Resource::Team(team))?;
            let now = self.now();
            self.store()
                .operator_access_of_team(team)
                .await?
                .into_iter()
                .map(|r| OperatorAccess::from_record(r, now))
                .collect()
        }
        .await;
        ev.finish(r)
    }

    /// Ends a grant early (team owners only).
    pub async fn revoke_operator_access(
        &self,
        actor: &Principal,
        team: TeamId,
        id: &str,
    ) -> Audited<()> {
        let mut ev = Events::default();
        let r = async {
            self.require(&mut ev, actor, Action::TeamManage, &Resource::Team(team))?;
            let now = self.now();
            let grant = self
                .store()
                .operator_access_of_team(team)
                .await?
                .into_iter()
                .find(|g| g.id == id && g.is_active(now))
                .ok_or(IdentityError::NotFound("operator access"))?;
            let e = IdentityEvent::new("team.operator_access.revoked", EventOutcome::Success, now)
                .actor(actor.account)
                .subject(grant.operator)
                .team(team)
                .detail("grant", id);
            let revoked = self
                .described(
                    &mut ev,
                    move |revoked: &bool| if *revoked { vec![e] } else { Vec::new() },
                    |events| self.store().revoke_operator_access(team, id, now, events),
                )
                .await?;
            if !revoked {
                return Err(IdentityError::NotFound("operator access"));
            }
            Ok(())
        }
        .await;
        ev.finish(r)
    }
}
