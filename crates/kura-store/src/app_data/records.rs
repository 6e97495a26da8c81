//! Reading and changing records, containers, serials and app accounts
//! inside one transaction.

use rusqlite::{Connection, OptionalExtension as _, params, params_from_iter};

use super::filter::{Filter, SortKey, compile};
use super::indexing::{Usage, Use};
use super::{Cell, column_name, is_constraint, table_name};
use crate::StoreError;

/// One record: its id, modification count, creating account and the cells
/// of the requested columns, in the order they were asked for.
#[derive(Debug, Clone, PartialEq)]
pub struct Row {
    /// The record id (never reused).
    pub rid: i64,
    /// How many times the record was changed.
    pub modid: i64,
    /// The account that created the record.
    pub owner: Option<String>,
    /// The requested cells.
    pub cells: Vec<Cell>,
}

/// A container cell's stored file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContainerCell {
    /// The file name given at upload.
    pub name: String,
    /// Its media type.
    pub mime: String,
    /// Its bytes.
    pub data: Vec<u8>,
}

/// What an update found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UpdateOutcome {
    /// Changed; the new modification count.
    Updated(i64),
    /// No such record.
    Missing,
    /// The record's modification count differs from the expected one.
    ModMismatch(i64),
    /// The change would repeat a value in a unique column.
    NotUnique(u32),
}

/// An app account row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccountRow {
    /// The account name (unique, case-insensitive).
    pub name: String,
    /// `local` or `kura_id`.
    pub kind: String,
    /// The Argon2id PHC string of a local account.
    pub password_hash: Option<String>,
    /// The Kura ID account id of a mapped account.
    pub kura_account: Option<String>,
    /// The privilege set's name.
    pub privilege_set: String,
    /// Whether sign-in is allowed.
    pub active: bool,
    /// Unix seconds.
    pub created_at: i64,
}

/// Reads within one snapshot.
#[derive(Debug)]
pub struct AppRead<'c> {
    conn: &'c Connection,
    /// The columns filters and sorts compared or ordered by.
    usage: Usage,
}

impl<'c> AppRead<'c> {
    pub(crate) fn new(conn: &'c Connection) -> Self {
        Self {
            conn,
            usage: Usage::default(),
        }
    }

    /// The columns this read's filters and sorts could use an index for.
    pub(super) fn used_columns(&self) -> Vec<Use> {
        self.usage.take()
    }

    pub(super) fn conn(&self) -> &'c Connection {
        self.conn
    }

    /// How many records `table` holds.
    /// Read from the count the table's triggers keep (see
    /// `ensure_record_counts`), not by counting.
    pub fn count(&self, table: u32) -> Result<u64, StoreError> {
        let n: Option<i64> = self
            .conn
            .prepare_cached("SELECT n FROM kura_counts WHERE tbl = ?1")?
            .query_row([table], |r| r.get(0))
            .optional()?;
        let n = match n {
            Some(n) => n,
            // Only a table created outside the schema path lacks its row.
            None => self.conn.query_row(
                &format!("SELECT count(*) FROM {}", table_name(table)),
                [],
                |r| r.get(0),
            )?,
        };
        Ok(n.max(0) as u64)
    }

    /// One record, or `None`.
    pub fn get(&self, table: u32, rid: i64, cols: &[u32]) -> Result<Option<Row>, StoreError> {
        let sql = format!(
            "SELECT rid, mod, owner{} FROM {} WHERE rid = ?1",
            select_list(cols),
            table_name(table)
        );
        let mut stmt = self.conn.prepare_cached(&sql)?;
        Ok(stmt
            .query_row([rid], |r| row_of(r, cols.len()))
            .optional()?)
    }

    /// How many records match `filter`.
    pub fn count_matching(&self, table: u32, filter: &Filter) -> Result<u64, StoreError> {
        if *filter == Filter::All {
            return self.count(table);
        }
        self.usage.filter(table, filter);
        let mut params = Vec::new();
        let clause = compile(table, filter, &mut params);
        let sql = format!("SELECT count(*) FROM {} WHERE {clause}", table_name(table));
        let n: i64 = self
            .conn
            .prepare_cached(&sql)?
            .query_row(params_from_iter(params.iter()), |r| r.get(0))?;
        Ok(n.max(0) as u64)
    }

    /// The ids of the records matching `filter`, ascending. Only the
    /// index SQLite picks for the filter is walked (plus the rows its other
    /// conditions need): a find's found count and its page both come from
    /// this one pass, where a `count(*)` and a paged `SELECT` would each
    /// walk the same range.
    pub fn matching_ids(&self, table: u32, filter: &Filter) -> Result<Vec<i64>, StoreError> {
        self.usage.filter(table, filter);
        let mut params = Vec::new();
        let clause = compile(table, filter, &mut params);
        // No ORDER BY: asking for record-id order would let SQLite walk the
        // whole table in that order instead of the filter's index.
        let sql = format!("SELECT rid FROM {} WHERE {clause}", table_name(table));
        let mut stmt = self.conn.prepare_cached(&sql)?;
        let mut ids = stmt
            .query_map(params_from_iter(params.iter()), |r| r.get::<_, i64>(0))?
            .collect::<Result<Vec<_>, _>>()?;
        ids.sort_unstable();
        Ok(ids)
    }

    /// Records matching `filter`, sorted (then by record id), skipping
    /// `offset` and returning at most `limit`; each row is handed to
    /// `visit` as it is read, so a large range is never held whole.
    #[allow(clippy::too_many_arguments)]
    pub fn select_each(
        &self,
        table: u32,
        filter: &Filter,
        sort: &[SortKey],
        offset: u64,
        limit: u64,
        cols: &[u32],
        mut visit: impl FnMut(Row) -> Result<(), StoreError>,
    ) -> Result<(), StoreError> {
        self.usage.filter(table, filter);
        self.usage.sort(table, sort);
        let mut params = Vec::new();
        let clause = compile(table, filter, &mut params);
        let mut order: Vec<String> = sort
            .iter()
            .map(|k| {
                // Empty values sort last either way, as in FileMaker.
                format!(
                    "{c} IS NULL, {c} {}",
                    if k.descending { "DESC" } else { "ASC" },
                    c = column_name(k.col)
                )
            })
            .collect();
        order.push("rid".into());
        // Limit and offset are parameters, so paging through a range reuses
        // one cached statement.
        params.push(Cell::Int(i64::try_from(limit).unwrap_or(i64::MAX)));
        params.push(Cell::Int(i64::try_from(offset).unwrap_or(i64::MAX)));
        let sql = format!(
            "SELECT rid, mod, owner{} FROM {} WHERE {clause} ORDER BY {} LIMIT ?{} OFFSET ?{}",
            select_list(cols),
            table_name(table),
            order.join(", "),
            params.len() - 1,
            params.len(),
        );
        let mut stmt = self.conn.prepare_cached(&sql)?;
        let mut rows = stmt.query(params_from_iter(params.iter()))?;
        while let Some(r) = rows.next()? {
            visit(row_of(r, cols.len())?)?;
        }
        Ok(())
    }

    /// Like [`AppRead::select_each`], collected.
    #[allow(clippy::too_many_arguments)]
    pub fn select(
        &self,
        table: u32,
        filter: &Filter,
        sort: &[SortKey],
        offset: u64,
        limit: u64,
        cols: &[u32],
    ) -> Result<Vec<Row>, StoreError> {
        let mut out = Vec::new();
        self.select_each(table, filter, sort, offset, limit, cols, |r| {
            out.push(r);
            Ok(())
        })?;
        Ok(out)
    }

    /// A container cell's file.
    pub fn container(
        &self,
        table: u32,
        rid: i64,
        col: u32,
    ) -> Result<Option<ContainerCell>, StoreError> {
        Ok(self
            .conn
            .prepare_cached(
                "SELECT name, mime, data FROM kura_containers WHERE tbl = ?1 AND rid = ?2 AND col = ?3",
            )?
            .query_row(params![table, rid, col], |r| {
                Ok(ContainerCell {
                    name: r.get(0)?,
                    mime: r.get(1)?,
                    data: r.get(2)?,
                })
            })
            .optional()?)
    }

    /// An app account by name (case-insensitive).
    pub fn account(&self, name: &str) -> Result<Option<AccountRow>, StoreError> {
        Ok(self
            .conn
            .prepare_cached(&format!("{ACCOUNT_SELECT} WHERE name = ?1"))?
            .query_row([name], account_of)
            .optional()?)
    }

    /// The app account mapped to a Kura ID account.
    pub fn account_for_kura_id(
        &self,
        kura_account: &str,
    ) -> Result<Option<AccountRow>, StoreError> {
        Ok(self
            .conn
            .prepare_cached(&format!("{ACCOUNT_SELECT} WHERE kura_account = ?1"))?
            .query_row([kura_account], account_of)
            .optional()?)
    }

    /// Every app account, by name.
    pub fn accounts(&self) -> Result<Vec<AccountRow>, StoreError> {
        let mut stmt = self
            .conn
            .prepare_cached(&format!("{ACCOUNT_SELECT} ORDER BY name"))?;
        let rows = stmt.query_map([], account_of)?;
        Ok(rows.collect::<Result<_, _>>()?)
    }
}

const ACCOUNT_SELECT: &str = "SELECT name, kind, password_hash, kura_account, privilege_set, active, created_at FROM kura_accounts";

fn account_of(r: &rusqlite::Row<'_>) -> rusqlite::Result<AccountRow> {
    Ok(AccountRow {
        name: r.get(0)?,
        kind: r.get(1)?,
        password_hash: r.get(2)?,
        kura_account: r.get(3)?,
        privilege_set: r.get(4)?,
        active: r.get(5)?,
        created_at: r.get(6)?,
    })
}

fn select_list(cols: &[u32]) -> String {
    let mut s = String::new();
    for c in cols {
        s.push_str(", ");
        s.push_str(&column_name(*c));
    }
    s
}

fn row_of(r: &rusqlite::Row<'_>, n: usize) -> rusqlite::Result<Row> {
    let mut cells = Vec::with_capacity(n);
    for i in 0..n {
        cells.push(Cell::from_ref(r.get_ref(3 + i)?));
    }
    Ok(Row {
        rid: r.get(0)?,
        modid: r.get(1)?,
        owner: r.get(2)?,
        cells,
    })
}

/// Changes inside one write transaction (reads see the changes).
#[derive(Debug)]
pub struct AppWrite<'c> {
    conn: &'c Connection,
}

impl<'c> AppWrite<'c> {
    pub(crate) fn new(conn: &'c Connection) -> Self {
        Self { conn }
    }

    pub(super) fn conn(&self) -> &'c Connection {
        self.conn
    }

    /// Reads inside this transaction.
    pub fn read(&self) -> AppRead<'c> {
        AppRead::new(self.conn)
    }

    /// Creates a record; `Err(col)` inside `Ok` when a unique column would
    /// repeat a value.
    pub fn insert(
        &self,
        table: u32,
        owner: Option<&str>,
        values: &[(u32, Cell)],
    ) -> Result<Result<(i64, i64), u32>, StoreError> {
        // The id comes from the table's count row, which the insert trigger
        // moves on (`keep_record_count`): no page beyond that row and the
        // table's own is written to hand it out.
        let mut cols = String::from("rid, owner");
        let mut marks = format!("(SELECT next_rid FROM kura_counts WHERE tbl = {table}), ?1");
        for (i, (col, _)) in values.iter().enumerate() {
            cols.push_str(", ");
            cols.push_str(&column_name(*col));
            marks.push_str(&format!(", ?{}", i + 2));
        }
        let sql = format!("INSERT INTO {}({cols}) VALUES ({marks})", table_name(table));
        let owner = owner
            .map(|o| Cell::Text(o.to_owned()))
            .unwrap_or(Cell::Null);
        let params = std::iter::once(&owner).chain(values.iter().map(|(_, v)| v));
        match self
            .conn
            .prepare_cached(&sql)?
            .execute(params_from_iter(params))
        {
            Ok(_) => Ok(Ok((self.conn.last_insert_rowid(), 0))),
            Err(e) if is_constraint(&e) => Ok(Err(unique_column(&e))),
            Err(e) => Err(e.into()),
        }
    }

    /// Changes cells of a record, checking its modification count when
    /// `expected_mod` is given, and bumps the count.
    pub fn update(
        &self,
        table: u32,
        rid: i64,
        expected_mod: Option<i64>,
        values: &[(u32, Cell)],
    ) -> Result<UpdateOutcome, StoreError> {
        // One statement changes the record when it is there and its count
        // is the expected one; only when nothing changed is the record
        // looked up again, to tell a missing record from a stale count.
        let mut sets = String::from("mod = mod + 1");
        for (i, (col, _)) in values.iter().enumerate() {
            sets.push_str(&format!(", {} = ?{}", column_name(*col), i + 2));
        }
        let expected = values.len() + 2;
        let sql = format!(
            "UPDATE {} SET {sets} WHERE rid = ?1 AND (?{expected} IS NULL OR mod = ?{expected}) RETURNING mod",
            table_name(table)
        );
        let rid_cell = Cell::Int(rid);
        let expected_cell = expected_mod.map_or(Cell::Null, Cell::Int);
        let params = std::iter::once(&rid_cell)
            .chain(values.iter().map(|(_, v)| v))
            .chain(std::iter::once(&expected_cell));
        let updated = self
            .conn
            .prepare_cached(&sql)?
            .query_row(params_from_iter(params), |r| r.get::<_, i64>(0))
            .optional();
        match updated {
            Ok(Some(modid)) => Ok(UpdateOutcome::Updated(modid)),
            Ok(None) => {
                let current: Option<i64> = self
                    .conn
                    .prepare_cached(&format!(
                        "SELECT mod FROM {} WHERE rid = ?1",
                        table_name(table)
                    ))?
                    .query_row([rid], |r| r.get(0))
                    .optional()?;
                Ok(current.map_or(UpdateOutcome::Missing, UpdateOutcome::ModMismatch))
            }
            Err(e) if is_constraint(&e) => Ok(UpdateOutcome::NotUnique(unique_column(&e))),
            Err(e) => Err(e.into()),
        }
    }

    /// Deletes a record and its container files; its modification count
    /// at deletion, or `None` when it did not exist.
    pub fn delete(&self, table: u32, rid: i64) -> Result<Option<i64>, StoreError> {
        let modid: Option<i64> = self
            .conn
            .prepare_cached(&format!(
                "DELETE FROM {} WHERE rid = ?1 RETURNING mod",
                table_name(table)
            ))?
            .query_row([rid], |r| r.get(0))
            .optional()?;
        self.conn
            .prepare_cached("DELETE FROM kura_containers WHERE tbl = ?1 AND rid = ?2")?
            .execute(params![table, rid])?;
        Ok(modid)
    }

    /// Takes the next serial number of a field and advances the counter.
    pub fn next_serial(&self, table: u32, col: u32, increment: i64) -> Result<i64, StoreError> {
        let next: Option<i64> = self
            .conn
            .prepare_cached("SELECT next FROM kura_serials WHERE tbl = ?1 AND col = ?2")?
            .query_row(params![table, col], |r| r.get(0))
            .optional()?;
        let value = next.unwrap_or(1);
        self.conn
            .prepare_cached(
                "INSERT INTO kura_serials(tbl, col, next) VALUES (?1, ?2, ?3)
                 ON CONFLICT(tbl, col) DO UPDATE SET next = excluded.next",
            )?
            .execute(params![table, col, value.saturating_add(increment)])?;
        Ok(value)
    }

    /// Stores (replacing) a container cell's file.
    pub fn put_container(
        &self,
        table: u32,
        rid: i64,
        col: u32,
        file: &ContainerCell,
    ) -> Result<(), StoreError> {
        self.conn
            .prepare_cached(
                "INSERT INTO kura_containers(tbl, rid, col, name, mime, data)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6)
                 ON CONFLICT(tbl, rid, col) DO UPDATE SET
                    name = excluded.name, mime = excluded.mime, data = excluded.data",
            )?
            .execute(params![table, rid, col, file.name, file.mime, file.data])?;
        Ok(())
    }

    /// Removes a container cell's file.
    pub fn clear_container(&self, table: u32, rid: i64, col: u32) -> Result<(), StoreError> {
        self.conn
            .prepare_cached("DELETE FROM kura_containers WHERE tbl = ?1 AND rid = ?2 AND col = ?3")?
            .execute(params![table, rid, col])?;
        Ok(())
    }

    /// Creates an app account; false when the name is taken.
    pub fn insert_account(&self, account: &AccountRow) -> Result<bool, StoreError> {
        let result = self.conn.execute(
            "INSERT INTO kura_accounts(name, kind, password_hash, kura_account, privilege_set, active, created_at)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
            params![
                account.name,
                account.kind,
                account.password_hash,
                account.kura_account,
                account.privilege_set,
                account.active,
                account.created_at
            ],
        );
        match result {
            Ok(_) => Ok(true),
            Err(e) if is_constraint(&e) => Ok(false),
            Err(e) => Err(e.into()),
        }
    }

    /// Replaces an account's password hash (rehash on sign-in, reset).
    pub fn set_account_password(&self, name: &str, hash: &str) -> Result<bool, StoreError> {
        Ok(self.conn.execute(
            "UPDATE kura_accounts SET password_hash = ?2 WHERE name = ?1 AND kind = 'local'",
            params![name, hash],
        )? > 0)
    }

    /// Changes an account's privilege set and whether it may sign in.
    pub fn set_account_access(
        &self,
        name: &str,
        privilege_set: &str,
        active: bool,
    ) -> Result<bool, StoreError> {
        Ok(self.conn.execute(
            "UPDATE kura_accounts SET privilege_set = ?2, active = ?3 WHERE name = ?1",
            params![name, privilege_set, active],
        )? > 0)
    }

    /// Deletes an account; false when there was none.
    pub fn delete_account(&self, name: &str) -> Result<bool, StoreError> {
        Ok(self
            .conn
            .execute("DELETE FROM kura_accounts WHERE name = ?1", [name])?
            > 0)
    }
}

/// The column a unique-constraint failure names ("UNIQUE constraint
/// failed: t3.c7"), or 0 when it cannot be told.
fn unique_column(e: &rusqlite::Error) -> u32 {
    let text = e.to_string();
    text.rsplit(".c")
        .next()
        .and_then(|s| {
            s.chars()
                .take_while(char::is_ascii_digit)
                .collect::<String>()
                .parse()
                .ok()
        })
        .unwrap_or(0)
}
