//! [`OperatorAccessStore`] on the encrypted platform database (table from
//! platform migration 6).

use async_trait::async_trait;
use kura_types::{AccountId, TeamId};
use rusqlite::{Row, params};
use time::OffsetDateTime;

use super::identity::{from_ts, opt_ts, parse_id, ts};
use crate::StoreError;
use crate::access::{OperatorAccessRecord, OperatorAccessStore};
use crate::events::TxEvents;
use crate::sqlite::SqliteIdentityStore;

pub(super) const COLUMNS: &str =
    "id, team_id, operator_id, role, reason, granted_by, granted_at, expires_at, revoked_at";

pub(super) type Raw = (
    String,
    String,
    String,
    String,
    String,
    String,
    i64,
    i64,
    Option<i64>,
);

pub(super) fn raw(r: &Row<'_>) -> rusqlite::Result<Raw> {
    Ok((
        r.get(0)?,
        r.get(1)?,
        r.get(2)?,
        r.get(3)?,
        r.get(4)?,
        r.get(5)?,
        r.get(6)?,
        r.get(7)?,
        r.get(8)?,
    ))
}

pub(super) fn decode(raw: Raw) -> Result<OperatorAccessRecord, StoreError> {
    let (id, team, operator, role, reason, by, at, expires, revoked) = raw;
    Ok(OperatorAccessRecord {
        id,
        team: parse_id(&team, "team")?,
        operator: parse_id(&operator, "account")?,
        role,
        reason,
        granted_by: parse_id(&by, "account")?,
        granted_at: from_ts(at)?,
        expires_at: from_ts(expires)?,
        revoked_at: opt_ts(revoked)?,
    })
}

#[async_trait]
impl OperatorAccessStore for SqliteIdentityStore {
    async fn insert_operator_access(
        &self,
        g: OperatorAccessRecord,
        events: TxEvents<()>,
    ) -> Result<(), StoreError> {
        self.pool
            .write_described(events, move |tx| {
                tx.execute(
                    &format!(
                        "INSERT INTO team_operator_access ({COLUMNS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)"
                    ),
                    params![
                        g.id,
                        g.team.to_string(),
                        g.operator.to_string(),
                        g.role,
                        g.reason,
                        g.granted_by.to_string(),
                        ts(g.granted_at),
                        ts(g.expires_at),
                        g.revoked_at.map(ts),
                    ],
                )?;
                Ok(())
            })
            .await
    }

    async fn active_operator_access(
        &self,
        operator: AccountId,
        now: OffsetDateTime,
    ) -> Result<Vec<OperatorAccessRecord>, StoreError> {
        self.pool
            .read(move |c| super::principal::active_operator_access(c, operator, now))
            .await
    }

    async fn operator_access_of_team(
        &self,
        team: TeamId,
    ) -> Result<Vec<OperatorAccessRecord>, StoreError> {
        self.pool
            .read(move |c| {
                let mut stmt = c.prepare(&format!(
                    "SELECT {COLUMNS} FROM team_operator_access WHERE team_id = ?1
                      ORDER BY granted_at DESC, id"
                ))?;
                let rows = stmt.query_map([team.to_string()], raw)?;
                rows.map(|r| decode(r?)).collect()
            })
            .await
    }

    async fn revoke_operator_access(
        &self,
        team: TeamId,
        id: &str,
        now: OffsetDateTime,
        events: TxEvents<bool>,
    ) -> Result<bool, StoreError> {
        let id = id.to_owned();
        self.pool
            .write_described(events, move |tx| {
                let n = tx.execute(
                    "UPDATE team_operator_access SET revoked_at = ?1
                      WHERE team_id = ?2 AND id = ?3 AND revoked_at IS NULL AND expires_at > ?1",
                    params![ts(now), team.to_string(), id],
                )?;
                Ok(n > 0)
            })
            .await
    }
}
