//! [`EdgeStore`] on the platform database (the table from the platform
//! migration "edge policies"). Times are Unix nanoseconds (UTC).

use async_trait::async_trait;
use rusqlite::{OptionalExtension as _, params};
use time::OffsetDateTime;

use super::Pool;
use super::events::append_in_tx;
use crate::StoreError;
use crate::edge::{EdgeHost, EdgePolicyRecord, EdgePolicyWrite, EdgeStore};

/// Edge policies in the platform database.
#[derive(Debug, Clone)]
pub struct SqliteEdgeStore {
    pool: Pool,
}

impl SqliteEdgeStore {
    /// A store over the platform database's pool (the event log's, so a
    /// change and its events share a transaction).
    pub fn new(pool: Pool) -> Self {
        Self { pool }
    }
}

fn ns(t: OffsetDateTime) -> Result<i64, StoreError> {
    i64::try_from(t.unix_timestamp_nanos())
        .map_err(|_| StoreError::Malformed("time is out of range".into()))
}

#[async_trait]
impl EdgeStore for SqliteEdgeStore {
    async fn policies(&self) -> Result<Vec<EdgePolicyRecord>, StoreError> {
        self.pool
            .read(|conn| {
                let mut stmt = conn.prepare(
                    "SELECT scope, kind, body, version, updated_at, updated_by
                     FROM edge_policies ORDER BY scope, kind",
                )?;
                let rows = stmt.query_map([], |r| {
                    Ok((
                        r.get::<_, String>(0)?,
                        r.get::<_, String>(1)?,
                        r.get::<_, String>(2)?,
                        r.get::<_, i64>(3)?,
                        r.get::<_, i64>(4)?,
                        r.get::<_, String>(5)?,
                    ))
                })?;
                let mut out = Vec::new();
                for row in rows {
                    let (scope, kind, body, version, at, by) = row?;
                    out.push(EdgePolicyRecord {
                        scope,
                        kind,
                        body,
                        version: u64::try_from(version)
                            .map_err(|_| StoreError::Malformed("negative policy version".into()))?,
                        updated_at: OffsetDateTime::from_unix_timestamp_nanos(i128::from(at))
                            .map_err(|e| StoreError::Malformed(e.to_string()))?,
                        updated_by: by,
                    });
                }
                Ok(out)
            })
            .await
    }

    async fn write_policy(&self, change: EdgePolicyWrite) -> Result<u64, StoreError> {
        self.pool
            .write(move |tx| {
                let current: Option<i64> = tx
                    .query_row(
                        "SELECT version FROM edge_policies WHERE scope = ?1 AND kind = ?2",
                        params![change.scope, change.kind],
                        |r| r.get(0),
                    )
                    .optional()?;
                let current = current.and_then(|v| u64::try_from(v).ok()).unwrap_or(0);
                if current != change.expected_version {
                    return Err(StoreError::Conflict(format!(
                        "edge policy {} {} changed since it was read (version {current})",
                        change.scope, change.kind
                    )));
                }
                let next = match &change.body {
                    Some(body) => {
                        let next = current + 1;
                        let version = i64::try_from(next)
                            .map_err(|_| StoreError::Malformed("policy version overflow".into()))?;
                        tx.execute(
                            "INSERT INTO edge_policies (scope, kind, body, version, updated_at, updated_by)
                             VALUES (?1, ?2, ?3, ?4, ?5, ?6)
                             ON CONFLICT (scope, kind) DO UPDATE SET
                               body = excluded.body, version = excluded.version,
                               updated_at = excluded.updated_at, updated_by = excluded.updated_by",
                            params![
                                change.scope,
                                change.kind,
                                body,
                                version,
                                ns(change.at)?,
                                change.by
                            ],
                        )?;
                        next
                    }
                    None => {
                        tx.execute(
                            "DELETE FROM edge_policies WHERE scope = ?1 AND kind = ?2",
                            params![change.scope, change.kind],
                        )?;
                        0
                    }
                };
                append_in_tx(tx, &change.events)?;
                Ok(next)
            })
            .await
    }

    async fn hosts(&self) -> Result<Vec<EdgeHost>, StoreError> {
        self.pool
            .read(|conn| {
                let mut stmt = conn.prepare("SELECT name, id, team_id FROM hosts ORDER BY name")?;
                let rows = stmt.query_map([], |r| {
                    Ok((
                        r.get::<_, String>(0)?,
                        r.get::<_, String>(1)?,
                        r.get::<_, String>(2)?,
                    ))
                })?;
                let mut out = Vec::new();
                for row in rows {
                    let (name, id, team) = row?;
                    out.push(EdgeHost {
                        name,
                        id: id
                            .parse()
                            .map_err(|_| StoreError::Malformed(format!("host id `{id}`")))?,
                        team: team
                            .parse()
                            .map_err(|_| StoreError::Malformed(format!("team id `{team}`")))?,
                    });
                }
                Ok(out)
            })
            .await
    }
}
