//! [`TeamStore`] on the encrypted platform database: teams, members,
//! groups and invitations (tables from platform migration 3).

use async_trait::async_trait;
use kura_crypto::token::TokenHash;
use kura_types::{AccountId, GroupId, InvitationId, TeamId};
use rusqlite::{OptionalExtension as _, params};
use time::OffsetDateTime;

use super::identity::*;
use crate::StoreError;
use crate::events::TxEvents;
use crate::identity::{GroupRecord, InvitationRecord, MemberRecord, NewAccount, TeamRecord};
use crate::sqlite::SqliteIdentityStore;
use crate::teams::TeamStore;

#[async_trait]
impl TeamStore for SqliteIdentityStore {
    async fn create_team(
        &self,
        team: TeamRecord,
        owner: Option<AccountId>,
        invitation: Option<InvitationRecord>,
        events: TxEvents<()>,
    ) -> Result<(), StoreError> {
        self.pool
            .write_described(events, move |tx| {
                tx.execute(
                    "INSERT INTO teams (id, name, mfa_policy, created_at) VALUES (?1, ?2, ?3, ?4)",
                    params![
                        team.id.to_string(),
                        team.name,
                        team.mfa_policy,
                        ts(team.created_at)
                    ],
                )?;
                if let Some(owner) = owner {
                    tx.execute(
                        "INSERT INTO team_members (team_id, account_id, joined_at) VALUES (?1, ?2, ?3)",
                        params![team.id.to_string(), owner.to_string(), ts(team.created_at)],
                    )?;
                    tx.execute(
                        "INSERT INTO role_grants (subject_kind, subject_id, team, role, granted_by, granted_at)
                         VALUES ('account', ?1, ?2, 'owner', ?1, ?3)",
                        params![owner.to_string(), team.id.to_string(), ts(team.created_at)],
                    )?;
                }
                if let Some(inv) = &invitation {
                    insert_invitation(tx, inv)?;
                }
                Ok(())
            })
            .await
    }

    async fn team(&self, id: TeamId) -> Result<Option<TeamRecord>, StoreError> {
        self.pool
            .read(move |c| {
                c.query_row(
                    &format!("SELECT {TEAM_COLUMNS} FROM teams WHERE id = ?1"),
                    [id.to_string()],
                    decode_team,
                )
                .optional()?
                .map(team_record)
                .transpose()
            })
            .await
    }

    async fn teams_of(&self, id: AccountId) -> Result<Vec<TeamRecord>, StoreError> {
        self.pool
            .read(move |c| {
                let mut stmt = c.prepare(
                    "SELECT t.id, t.name, t.mfa_policy, t.created_at FROM teams t
                       JOIN team_members m ON m.team_id = t.id
                      WHERE m.account_id = ?1 ORDER BY t.id",
                )?;
                let rows = stmt.query_map([id.to_string()], decode_team)?;
                let mut out = Vec::new();
                for row in rows {
                    out.push(team_record(row?)?);
                }
                Ok(out)
            })
            .await
    }

    async fn all_teams(&self) -> Result<Vec<TeamRecord>, StoreError> {
        self.pool
            .read(move |c| {
                let mut stmt = c.prepare(&format!(
                    "SELECT {TEAM_COLUMNS} FROM teams ORDER BY name, id"
                ))?;
                let rows = stmt.query_map([], decode_team)?;
                let mut out = Vec::new();
                for row in rows {
                    out.push(team_record(row?)?);
                }
                Ok(out)
            })
            .await
    }

    async fn set_team_mfa_policy(
        &self,
        id: TeamId,
        policy: &str,
        events: TxEvents<()>,
    ) -> Result<(), StoreError> {
        let policy = policy.to_owned();
        self.pool
            .write_described(events, move |tx| {
                let n = tx.execute(
                    "UPDATE teams SET mfa_policy = ?1 WHERE id = ?2",
                    params![policy, id.to_string()],
                )?;
                if n == 0 {
                    return Err(StoreError::NotFound(format!("team {id}")));
                }
                Ok(())
            })
            .await
    }

    async fn add_member(
        &self,
        team: TeamId,
        account: AccountId,
        role: &str,
        now: OffsetDateTime,
        events: TxEvents<()>,
    ) -> Result<(), StoreError> {
        let role = role.to_owned();
        self.pool
            .write_described(events, move |tx| {
                tx.execute(
                    "INSERT OR IGNORE INTO team_members (team_id, account_id, joined_at) VALUES (?1, ?2, ?3)",
                    params![team.to_string(), account.to_string(), ts(now)],
                )?;
                tx.execute(
                    "INSERT OR IGNORE INTO role_grants (subject_kind, subject_id, team, role, granted_by, granted_at)
                     VALUES ('account', ?1, ?2, ?3, NULL, ?4)",
                    params![account.to_string(), team.to_string(), role, ts(now)],
                )?;
                Ok(())
            })
            .await
    }

    async fn remove_member(
        &self,
        team: TeamId,
        account: AccountId,
        events: TxEvents<bool>,
    ) -> Result<bool, StoreError> {
        self.pool
            .write_described(events, move |tx| {
                let n = tx.execute(
                    "DELETE FROM team_members WHERE team_id = ?1 AND account_id = ?2",
                    params![team.to_string(), account.to_string()],
                )?;
                tx.execute(
                    "DELETE FROM role_grants WHERE subject_kind = 'account' AND subject_id = ?1 AND team = ?2",
                    params![account.to_string(), team.to_string()],
                )?;
                tx.execute(
                    "DELETE FROM group_members WHERE account_id = ?1
                       AND group_id IN (SELECT id FROM groups WHERE team_id = ?2)",
                    params![account.to_string(), team.to_string()],
                )?;
                Ok(n == 1)
            })
            .await
    }

    async fn members(&self, team: TeamId) -> Result<Vec<MemberRecord>, StoreError> {
        self.pool
            .read(move |c| {
                let mut stmt = c.prepare(
                    "SELECT a.id, a.email, a.display_name, a.phone, a.status, a.kind, a.created_at, m.joined_at
                       FROM team_members m JOIN accounts a ON a.id = m.account_id
                      WHERE m.team_id = ?1 ORDER BY a.email",
                )?;
                let rows = stmt.query_map([team.to_string()], |r| {
                    Ok((raw_account(r)?, r.get::<_, i64>(7)?))
                })?;
                let mut out = Vec::new();
                for row in rows {
                    let (raw, joined) = row?;
                    out.push(MemberRecord {
                        account: decode_account(raw)?,
                        joined_at: from_ts(joined)?,
                    });
                }
                Ok(out)
            })
            .await
    }

    async fn create_group(
        &self,
        group: GroupRecord,
        events: TxEvents<()>,
    ) -> Result<(), StoreError> {
        self.pool
            .write_described(events, move |tx| {
                tx.execute(
                    "INSERT INTO groups (id, team_id, name, created_at) VALUES (?1, ?2, ?3, ?4)",
                    params![
                        group.id.to_string(),
                        group.team.to_string(),
                        group.name,
                        ts(group.created_at)
                    ],
                )
                .map_err(|e| {
                    if is_unique_violation(&e) {
                        StoreError::Conflict(format!("group `{}`", group.name))
                    } else {
                        e.into()
                    }
                })?;
                Ok(())
            })
            .await
    }

    async fn group(&self, id: GroupId) -> Result<Option<GroupRecord>, StoreError> {
        self.pool
            .read(move |c| {
                c.query_row(
                    &format!("SELECT {GROUP_COLUMNS} FROM groups WHERE id = ?1"),
                    [id.to_string()],
                    group_record,
                )
                .optional()?
                .map(decode_group)
                .transpose()
            })
            .await
    }

    async fn groups(&self, team: TeamId) -> Result<Vec<GroupRecord>, StoreError> {
        self.pool
            .read(move |c| {
                let mut stmt = c.prepare(&format!(
                    "SELECT {GROUP_COLUMNS} FROM groups WHERE team_id = ?1 ORDER BY name"
                ))?;
                let rows = stmt.query_map([team.to_string()], group_record)?;
                let mut out = Vec::new();
                for row in rows {
                    out.push(decode_group(row?)?);
                }
                Ok(out)
            })
            .await
    }

    async fn add_group_member(
        &self,
        group: GroupId,
        account: AccountId,
        now: OffsetDateTime,
        events: TxEvents<()>,
    ) -> Result<(), StoreError> {
        self.pool
            .write_described(events, move |tx| {
                tx.execute(
                    "INSERT OR IGNORE INTO group_members (group_id, account_id, added_at) VALUES (?1, ?2, ?3)",
                    params![group.to_string(), account.to_string(), ts(now)],
                )?;
                Ok(())
            })
            .await
    }

    async fn remove_group_member(
        &self,
        group: GroupId,
        account: AccountId,
        events: TxEvents<bool>,
    ) -> Result<bool, StoreError> {
        self.pool
            .write_described(events, move |tx| {
                let n = tx.execute(
                    "DELETE FROM group_members WHERE group_id = ?1 AND account_id = ?2",
                    params![group.to_string(), account.to_string()],
                )?;
                Ok(n == 1)
            })
            .await
    }

    async fn group_members(&self, group: GroupId) -> Result<Vec<AccountId>, StoreError> {
        self.pool
            .read(move |c| {
                let mut stmt = c.prepare(
                    "SELECT account_id FROM group_members WHERE group_id = ?1
                      ORDER BY added_at, account_id",
                )?;
                let rows = stmt.query_map([group.to_string()], |r| r.get::<_, String>(0))?;
                let mut out = Vec::new();
                for row in rows {
                    out.push(parse_id(&row?, "account")?);
                }
                Ok(out)
            })
            .await
    }

    async fn groups_of(&self, account: AccountId) -> Result<Vec<GroupId>, StoreError> {
        self.pool
            .read(move |c| super::principal::groups_of(c, account))
            .await
    }

    async fn create_invitation(
        &self,
        inv: InvitationRecord,
        events: TxEvents<()>,
    ) -> Result<(), StoreError> {
        self.pool
            .write_described(events, move |tx| insert_invitation(tx, &inv))
            .await
    }

    async fn invitation(&self, id: InvitationId) -> Result<Option<InvitationRecord>, StoreError> {
        self.pool
            .read(move |c| {
                c.query_row(
                    &format!("SELECT {INVITATION_COLUMNS} FROM invitations WHERE id = ?1"),
                    [id.to_string()],
                    raw_invitation,
                )
                .optional()?
                .map(decode_invitation)
                .transpose()
            })
            .await
    }

    async fn open_invitations(&self, team: TeamId) -> Result<Vec<InvitationRecord>, StoreError> {
        self.pool
            .read(move |c| {
                let mut stmt = c.prepare(&format!(
                    "SELECT {INVITATION_COLUMNS} FROM invitations
                      WHERE team_id = ?1 AND accepted_at IS NULL AND revoked_at IS NULL
                      ORDER BY created_at, id"
                ))?;
                let rows = stmt.query_map([team.to_string()], raw_invitation)?;
                let mut out = Vec::new();
                for row in rows {
                    out.push(decode_invitation(row?)?);
                }
                Ok(out)
            })
            .await
    }

    async fn invitation_by_hash(
        &self,
        hash: &TokenHash,
    ) -> Result<Option<InvitationRecord>, StoreError> {
        let hash = hash.as_str().to_owned();
        self.pool
            .read(move |c| {
                c.query_row(
                    &format!("SELECT {INVITATION_COLUMNS} FROM invitations WHERE token_hash = ?1"),
                    [hash],
                    raw_invitation,
                )
                .optional()?
                .map(decode_invitation)
                .transpose()
            })
            .await
    }

    async fn accept_invitation(
        &self,
        id: InvitationId,
        account: AccountId,
        new_account: Option<NewAccount>,
        now: OffsetDateTime,
        events: TxEvents<bool>,
    ) -> Result<bool, StoreError> {
        self.pool
            .write_described(events, move |tx| {
                let row: Option<(String, String)> = tx
                    .query_row(
                        "SELECT team_id, role FROM invitations
                          WHERE id = ?1 AND accepted_at IS NULL AND revoked_at IS NULL",
                        [id.to_string()],
                        |r| Ok((r.get(0)?, r.get(1)?)),
                    )
                    .optional()?;
                let Some((team, role)) = row else {
                    return Ok(false);
                };
                tx.execute(
                    "UPDATE invitations SET accepted_at = ?1, accepted_by = ?2 WHERE id = ?3",
                    params![ts(now), account.to_string(), id.to_string()],
                )?;
                if let Some(new) = &new_account {
                    insert_account(tx, new)?;
                }
                tx.execute(
                    "INSERT OR IGNORE INTO team_members (team_id, account_id, joined_at) VALUES (?1, ?2, ?3)",
                    params![team, account.to_string(), ts(now)],
                )?;
                tx.execute(
                    "INSERT OR IGNORE INTO role_grants (subject_kind, subject_id, team, role, granted_by, granted_at)
                     VALUES ('account', ?1, ?2, ?3, NULL, ?4)",
                    params![account.to_string(), team, role, ts(now)],
                )?;
                Ok(true)
            })
            .await
    }

    async fn revoke_invitation(
        &self,
        id: InvitationId,
        now: OffsetDateTime,
        events: TxEvents<bool>,
    ) -> Result<bool, StoreError> {
        self.pool
            .write_described(events, move |tx| {
                let n = tx.execute(
                    "UPDATE invitations SET revoked_at = ?1
                      WHERE id = ?2 AND accepted_at IS NULL AND revoked_at IS NULL",
                    params![ts(now), id.to_string()],
                )?;
                Ok(n == 1)
            })
            .await
    }
}
