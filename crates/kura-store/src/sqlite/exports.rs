//! [`ExportStore`] on the platform database (tables from the platform
//! migration "SIEM export cursors, delivery attempts, alerts and incidents").

use async_trait::async_trait;
use rusqlite::{OptionalExtension as _, params};
use time::OffsetDateTime;

use super::Pool;
use crate::StoreError;
use crate::events::Seq;
use crate::exports::{DeliveryAttempt, ExportCursor, ExportStore};

/// Export cursors and delivery attempts in the platform database.
#[derive(Debug, Clone)]
pub struct SqliteExportStore {
    pool: Pool,
}

impl SqliteExportStore {
    /// A store over the platform database's pool.
    pub fn new(pool: Pool) -> Self {
        Self { pool }
    }
}

fn to_i64(n: u64) -> Result<i64, StoreError> {
    i64::try_from(n).map_err(|_| StoreError::Malformed(format!("{n} is out of range")))
}

fn to_u64(n: i64) -> Result<u64, StoreError> {
    u64::try_from(n).map_err(|_| StoreError::Malformed(format!("negative count {n}")))
}

fn from_ts(secs: i64) -> Result<OffsetDateTime, StoreError> {
    OffsetDateTime::from_unix_timestamp(secs).map_err(|e| StoreError::Malformed(e.to_string()))
}

#[async_trait]
impl ExportStore for SqliteExportStore {
    async fn cursor(&self, name: &str) -> Result<Option<ExportCursor>, StoreError> {
        let name = name.to_owned();
        self.pool
            .read(move |conn| {
                let row: Option<(i64, i64, i64)> = conn
                    .query_row(
                        "SELECT seq, exported, updated_at FROM event_export_cursors WHERE name = ?1",
                        [&name],
                        |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
                    )
                    .optional()?;
                row.map(|(seq, exported, at)| {
                    Ok(ExportCursor {
                        seq: to_u64(seq)?,
                        exported: to_u64(exported)?,
                        updated_at: from_ts(at)?,
                    })
                })
                .transpose()
            })
            .await
    }

    async fn advance(
        &self,
        name: &str,
        from: Option<Seq>,
        to: Seq,
        count: u64,
        now: OffsetDateTime,
    ) -> Result<(), StoreError> {
        let name = name.to_owned();
        self.pool
            .write(move |tx| {
                let conflict = || {
                    StoreError::Conflict(format!(
                        "a newer position of export cursor `{name}` (another exporter with the same name?)"
                    ))
                };
                if from.is_some_and(|f| to <= f) {
                    return Err(conflict());
                }
                let changed = match from {
                    None => tx.execute(
                        "INSERT INTO event_export_cursors (name, seq, exported, updated_at)
                         VALUES (?1, ?2, ?3, ?4) ON CONFLICT(name) DO NOTHING",
                        params![name, to_i64(to)?, to_i64(count)?, now.unix_timestamp()],
                    )?,
                    Some(from) => tx.execute(
                        "UPDATE event_export_cursors
                            SET seq = ?2, exported = exported + ?3, updated_at = ?4
                          WHERE name = ?1 AND seq = ?5",
                        params![
                            name,
                            to_i64(to)?,
                            to_i64(count)?,
                            now.unix_timestamp(),
                            to_i64(from)?
                        ],
                    )?,
                };
                if changed == 1 {
                    Ok(())
                } else {
                    Err(conflict())
                }
            })
            .await
    }

    async fn record_attempts(&self, attempts: Vec<DeliveryAttempt>) -> Result<(), StoreError> {
        if attempts.is_empty() {
            return Ok(());
        }
        self.pool
            .write(move |tx| {
                let mut stmt = tx.prepare_cached(
                    "INSERT INTO delivery_attempts (channel, subject, attempt, at, ok, status, error)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
                )?;
                for a in &attempts {
                    stmt.execute(params![
                        a.channel,
                        a.subject,
                        a.attempt,
                        a.at.unix_timestamp(),
                        a.ok,
                        a.status,
                        a.error,
                    ])?;
                }
                Ok(())
            })
            .await
    }

    async fn attempts(
        &self,
        channel: &str,
        limit: usize,
    ) -> Result<Vec<DeliveryAttempt>, StoreError> {
        let channel = channel.to_owned();
        let limit = i64::try_from(limit.clamp(1, 10_000)).unwrap_or(100);
        self.pool
            .read(move |conn| {
                let mut stmt = conn.prepare(
                    "SELECT channel, subject, attempt, at, ok, status, error
                       FROM delivery_attempts WHERE channel = ?1 ORDER BY id DESC LIMIT ?2",
                )?;
                let mut rows = stmt.query(params![channel, limit])?;
                let mut out = Vec::new();
                while let Some(r) = rows.next()? {
                    out.push(DeliveryAttempt {
                        channel: r.get(0)?,
                        subject: r.get(1)?,
                        attempt: r.get(2)?,
                        at: from_ts(r.get(3)?)?,
                        ok: r.get(4)?,
                        status: r.get(5)?,
                        error: r.get(6)?,
                    });
                }
                Ok(out)
            })
            .await
    }
}
