//! The change outbox of an app file: one row per record change, written by
//! the same transaction as the change itself, so a committed change always
//! has its entry and a rolled-back one never does. Readers page through it
//! with a cursor (the entry's sequence number, which is never reused).

use rusqlite::params;

use super::records::{AppRead, AppWrite};
use crate::StoreError;

/// What happened to a record.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ChangeKind {
    /// Created through the Data API (including portal rows).
    Create,
    /// Changed (fields, portal rows, container uploads).
    Edit,
    /// Deleted.
    Delete,
    /// Created as a copy of another record.
    Duplicate,
    /// Created by a CSV import.
    Import,
}

impl ChangeKind {
    /// The stored (and published) name.
    pub fn as_str(self) -> &'static str {
        match self {
            ChangeKind::Create => "create",
            ChangeKind::Edit => "edit",
            ChangeKind::Delete => "delete",
            ChangeKind::Duplicate => "duplicate",
            ChangeKind::Import => "import",
        }
    }

    fn parse(s: &str) -> Result<Self, StoreError> {
        Ok(match s {
            "create" => ChangeKind::Create,
            "edit" => ChangeKind::Edit,
            "delete" => ChangeKind::Delete,
            "duplicate" => ChangeKind::Duplicate,
            "import" => ChangeKind::Import,
            other => return Err(StoreError::Malformed(format!("change kind `{other}`"))),
        })
    }
}

/// One entry of the outbox.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Change {
    /// The cursor: entries come in increasing `seq` order.
    pub seq: i64,
    /// The table's schema id.
    pub table: u32,
    /// The record id.
    pub rid: i64,
    /// What happened.
    pub kind: ChangeKind,
    /// The record's modification count after the change (before it, for a
    /// deletion).
    pub modid: i64,
    /// When, in Unix milliseconds.
    pub at_ms: i64,
    /// The app account (or Kura ID account, for imports) that made it.
    pub account: String,
}

impl AppWrite<'_> {
    /// Appends an entry to the change outbox (one INSERT).
    pub fn record_change(
        &self,
        table: u32,
        rid: i64,
        kind: ChangeKind,
        modid: i64,
        at_ms: i64,
        account: &str,
    ) -> Result<(), StoreError> {
        self.conn()
            .prepare_cached(
                "INSERT INTO kura_changes(tbl, rid, kind, mod, at_ms, account)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            )?
            .execute(params![table, rid, kind.as_str(), modid, at_ms, account])?;
        Ok(())
    }
}

impl AppRead<'_> {
    /// The sequence number of the newest outbox entry (0 when empty).
    pub fn change_head(&self) -> Result<i64, StoreError> {
        Ok(self
            .conn()
            .prepare_cached("SELECT coalesce(max(seq), 0) FROM kura_changes")?
            .query_row([], |r| r.get(0))?)
    }

    /// Outbox entries after `cursor` (0 for the beginning), oldest first,
    /// at most `limit`.
    pub fn changes_after(&self, cursor: i64, limit: u32) -> Result<Vec<Change>, StoreError> {
        let mut stmt = self.conn().prepare_cached(
            "SELECT seq, tbl, rid, kind, mod, at_ms, account FROM kura_changes
             WHERE seq > ?1 ORDER BY seq LIMIT ?2",
        )?;
        let rows = stmt.query_map(params![cursor, limit], |r| {
            Ok((
                r.get::<_, i64>(0)?,
                r.get::<_, u32>(1)?,
                r.get::<_, i64>(2)?,
                r.get::<_, String>(3)?,
                r.get::<_, i64>(4)?,
                r.get::<_, i64>(5)?,
                r.get::<_, String>(6)?,
            ))
        })?;
        let mut out = Vec::new();
        for row in rows {
            let (seq, table, rid, kind, modid, at_ms, account) = row?;
            out.push(Change {
                seq,
                table,
                rid,
                kind: ChangeKind::parse(&kind)?,
                modid,
                at_ms,
                account,
            });
        }
        Ok(out)
    }
}
