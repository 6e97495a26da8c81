//! The record store inside each hosted app's database file.
//!
//! The rules of hosted apps (schema, privilege sets, FileMaker semantics)
//! live in `kura-apps`; this module only keeps typed cells in tables and
//! answers structured filters with parameterised SQL. Tables and fields are
//! addressed by the numeric ids the schema assigns, never by user-chosen
//! names, so no name ever reaches SQL text and renaming costs nothing.
//!
//! Layout of an app file:
//! - `kura_meta`: key/value pairs (the schema document and its version);
//! - `kura_accounts`: app-local accounts (Argon2id hashes) and Kura ID
//!   accounts mapped to privilege sets;
//! - `kura_serials`: the next serial number of each auto-entered field;
//! - `kura_containers`: container field contents, one row per cell;
//! - `kura_changes`: the change outbox, one row per record created, edited,
//!   deleted, duplicated or imported, written in the same transaction as
//!   the change (what Kura Connect's app-event trigger reads);
//! - `kura_automation_keys`: idempotency keys of Kura Connect steps' writes
//!   and what each write returned;
//! - `t{table}`: one table per app table, with `rid` (record id, never
//!   reused), `mod` (modification count) and one `c{field}` column per field.

mod automation;
mod changes;
mod filter;
mod indexing;
mod records;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use rusqlite::{Connection, OptionalExtension as _, params};

pub use changes::{Change, ChangeKind};
pub use filter::{Cond, Filter, SortKey, glob_literal};
pub use records::{AccountRow, AppRead, AppWrite, ContainerCell, Row, UpdateOutcome};

use crate::StoreError;
use crate::sqlite::{Migration, Pool};

/// The migrations of an app database file.
pub(crate) const APP_MIGRATIONS: &[Migration] = &[
    Migration {
        version: 1,
        name: "app catalogue: meta, accounts, serials, containers",
        sql: "
        CREATE TABLE kura_meta (
            key   TEXT PRIMARY KEY,
            value TEXT NOT NULL
        ) STRICT;
        CREATE TABLE kura_accounts (
            name          TEXT NOT NULL PRIMARY KEY COLLATE NOCASE,
            kind          TEXT NOT NULL CHECK (kind IN ('local', 'kura_id')),
            password_hash TEXT,
            kura_account  TEXT UNIQUE,
            privilege_set TEXT NOT NULL,
            active        INTEGER NOT NULL DEFAULT 1,
            created_at    INTEGER NOT NULL
        ) STRICT;
        CREATE TABLE kura_serials (
            tbl  INTEGER NOT NULL,
            col  INTEGER NOT NULL,
            next INTEGER NOT NULL,
            PRIMARY KEY (tbl, col)
        ) STRICT;
        CREATE TABLE kura_containers (
            tbl  INTEGER NOT NULL,
            rid  INTEGER NOT NULL,
            col  INTEGER NOT NULL,
            name TEXT NOT NULL,
            mime TEXT NOT NULL,
            data BLOB NOT NULL,
            PRIMARY KEY (tbl, rid, col)
        ) STRICT;
    ",
    },
    Migration {
        version: 2,
        name: "change outbox",
        sql: "
        CREATE TABLE kura_changes (
            seq     INTEGER PRIMARY KEY AUTOINCREMENT,
            tbl     INTEGER NOT NULL,
            rid     INTEGER NOT NULL,
            kind    TEXT NOT NULL
                    CHECK (kind IN ('create', 'edit', 'delete', 'duplicate', 'import')),
            mod     INTEGER NOT NULL,
            at_ms   INTEGER NOT NULL,
            account TEXT NOT NULL
        ) STRICT;
    ",
    },
    Migration {
        version: 3,
        name: "service accounts and automation idempotency keys",
        // `service` accounts cannot sign in anywhere; the team grants them a
        // privilege set for Kura Connect flows to act under. SQLite cannot
        // change a CHECK constraint in place, so the table is rebuilt.
        // `kura_automation_keys` remembers what a flow step's write did,
        // written in the write's own transaction, so a resumed run that
        // repeats the step gets the first result instead of a second write.
        sql: "
        CREATE TABLE kura_accounts_new (
            name          TEXT NOT NULL PRIMARY KEY COLLATE NOCASE,
            kind          TEXT NOT NULL CHECK (kind IN ('local', 'kura_id', 'service')),
            password_hash TEXT,
            kura_account  TEXT UNIQUE,
            privilege_set TEXT NOT NULL,
            active        INTEGER NOT NULL DEFAULT 1,
            created_at    INTEGER NOT NULL
        ) STRICT;
        INSERT INTO kura_accounts_new SELECT name, kind, password_hash, kura_account,
            privilege_set, active, created_at FROM kura_accounts;
        DROP TABLE kura_accounts;
        ALTER TABLE kura_accounts_new RENAME TO kura_accounts;
        CREATE TABLE kura_automation_keys (
            key    TEXT PRIMARY KEY,
            result TEXT NOT NULL,
            at_ms  INTEGER NOT NULL
        ) STRICT;
    ",
    },
    Migration {
        version: 4,
        name: "record counts",
        // Filled, with the triggers that keep it, by `ensure_record_counts`
        // (the record tables are named by the app's schema, so plain SQL
        // here cannot know them).
        sql: "
        CREATE TABLE kura_counts (
            tbl INTEGER PRIMARY KEY,
            n   INTEGER NOT NULL
        ) STRICT;
    ",
    },
    Migration {
        version: 5,
        name: "record ids handed out from the count row; outbox without AUTOINCREMENT",
        // `AUTOINCREMENT` keeps each table's largest id in `sqlite_sequence`,
        // one more page in every commit that creates a record. The next
        // record id now lives in the table's `kura_counts` row, which the
        // same commit writes anyway (see `keep_record_count`); it starts
        // past every id an `AUTOINCREMENT` table ever handed out. The
        // outbox is append-only (no entry is ever deleted), so its plain
        // rowid, one past the largest, never repeats either; it is rebuilt
        // without the keyword.
        sql: "
        ALTER TABLE kura_counts ADD COLUMN next_rid INTEGER NOT NULL DEFAULT 1;
        UPDATE kura_counts SET next_rid = 1 + coalesce(
            (SELECT seq FROM sqlite_sequence WHERE name = 't' || kura_counts.tbl), 0);
        CREATE TABLE kura_changes_new (
            seq     INTEGER PRIMARY KEY,
            tbl     INTEGER NOT NULL,
            rid     INTEGER NOT NULL,
            kind    TEXT NOT NULL
                    CHECK (kind IN ('create', 'edit', 'delete', 'duplicate', 'import')),
            mod     INTEGER NOT NULL,
            at_ms   INTEGER NOT NULL,
            account TEXT NOT NULL
        ) STRICT;
        INSERT INTO kura_changes_new SELECT seq, tbl, rid, kind, mod, at_ms, account
            FROM kura_changes;
        DROP TABLE kura_changes;
        ALTER TABLE kura_changes_new RENAME TO kura_changes;
    ",
    },
];

/// Opens the app database's schema: migrations, then the record counts.
pub(crate) fn init_app_db(conn: &mut Connection, path: &std::path::Path) -> Result<(), StoreError> {
    crate::sqlite::migrate(conn, path, APP_MIGRATIONS)?;
    ensure_record_counts(conn)
}

/// Makes sure every record table has its row in `kura_counts` and the two
/// triggers that keep that row equal to `count(*)`. Every page of the Data
/// API reports the table's total record count; counting a table is a scan
/// of all its rows, while this row is one lookup that every snapshot sees
/// consistently (the triggers change it in the same transaction as the
/// records). Idempotent; runs whenever the database is opened, so tables
/// created before the counts existed get them.
pub(crate) fn ensure_record_counts(conn: &mut Connection) -> Result<(), StoreError> {
    let tables: Vec<u32> = {
        let mut stmt = conn.prepare(
            "SELECT name FROM sqlite_master WHERE type = 'table' AND name GLOB 't[0-9]*'",
        )?;
        let names = stmt.query_map([], |r| r.get::<_, String>(0))?;
        let mut ids = Vec::new();
        for name in names {
            if let Ok(id) = name?[1..].parse::<u32>() {
                ids.push(id);
            }
        }
        ids
    };
    let tx = conn.transaction()?;
    for table in tables {
        keep_record_count(&tx, table)?;
        drop_autoincrement(&tx, table)?;
    }
    tx.commit()?;
    Ok(())
}

/// Rebuilds a record table made with `AUTOINCREMENT` (before app migration
/// 5) without it, once: such a table still writes `sqlite_sequence` on every
/// insert although its ids now come from its count row, which
/// `keep_record_count` has already moved past every id the sequence handed
/// out. SQLite cannot drop the keyword in place, so the table is copied
/// into a new one with the same definition, swapped in, and its indexes and
/// triggers are made again, inside the caller's transaction.
fn drop_autoincrement(conn: &Connection, table: u32) -> Result<(), StoreError> {
    let t = table_name(table);
    let sql: String = conn.query_row(
        "SELECT sql FROM sqlite_master WHERE type = 'table' AND name = ?1",
        [&t],
        |r| r.get(0),
    )?;
    let head = format!("CREATE TABLE {t} (rid INTEGER PRIMARY KEY AUTOINCREMENT,");
    let Some(rest) = sql.strip_prefix(&head) else {
        return Ok(());
    };
    let dependents: Vec<String> = {
        let mut stmt = conn.prepare(
            "SELECT sql FROM sqlite_master
              WHERE tbl_name = ?1 AND type IN ('index', 'trigger') AND sql IS NOT NULL",
        )?;
        let rows = stmt.query_map([&t], |r| r.get(0))?;
        rows.collect::<Result<_, _>>()?
    };
    conn.execute_batch(&format!(
        "CREATE TABLE {t}_rebuilt (rid INTEGER PRIMARY KEY,{rest};
         INSERT INTO {t}_rebuilt SELECT * FROM {t};
         DROP TABLE {t};
         ALTER TABLE {t}_rebuilt RENAME TO {t};"
    ))?;
    for sql in dependents {
        conn.execute_batch(&sql)?;
    }
    Ok(())
}

/// Creates `table`'s count row (from a real count when missing) and its
/// triggers, if they do not exist yet. Runs at every open: the count (a
/// scan of the table) is only taken when the row is missing.
///
/// The row also holds the table's next record id (`next_rid`), which
/// [`AppWrite::insert`] uses and the insert trigger moves past the id just
/// used. An insert that names an id below it (an id the table has handed
/// out before, whose record was deleted) is refused: record ids are never
/// reused.
fn keep_record_count(conn: &Connection, table: u32) -> Result<(), StoreError> {
    let t = table_name(table);
    conn.execute_batch(&format!(
        "DROP TRIGGER IF EXISTS {t}_count_insert;
         CREATE TRIGGER IF NOT EXISTS {t}_insert AFTER INSERT ON {t} BEGIN
             SELECT RAISE(ABORT, 'record id used before') FROM kura_counts
              WHERE tbl = {table} AND NEW.rid < next_rid;
             UPDATE kura_counts SET n = n + 1, next_rid = NEW.rid + 1 WHERE tbl = {table};
         END;
         CREATE TRIGGER IF NOT EXISTS {t}_count_delete AFTER DELETE ON {t} BEGIN
             UPDATE kura_counts SET n = n - 1 WHERE tbl = {table};
         END;"
    ))?;
    let has_row = conn
        .prepare_cached("SELECT EXISTS (SELECT 1 FROM kura_counts WHERE tbl = ?1)")?
        .query_row([table], |r| r.get::<_, bool>(0))?;
    if !has_row {
        conn.execute_batch(&format!(
            "INSERT INTO kura_counts(tbl, n, next_rid)
                 SELECT {table}, count(*), 1 + max(coalesce(max(rid), 0), coalesce(
                     (SELECT seq FROM sqlite_sequence WHERE name = '{t}'), 0))
                 FROM {t};"
        ))?;
    }
    Ok(())
}

/// A stored value. Empty fields are `Null`: FileMaker has no distinction
/// between an empty string and no value.
#[derive(Debug, Clone, PartialEq)]
pub enum Cell {
    /// No value.
    Null,
    /// A whole number (serials).
    Int(i64),
    /// A number.
    Real(f64),
    /// Text, and dates/times as sortable ISO 8601 text.
    Text(String),
}

impl rusqlite::ToSql for Cell {
    fn to_sql(&self) -> rusqlite::Result<rusqlite::types::ToSqlOutput<'_>> {
        use rusqlite::types::{ToSqlOutput, Value, ValueRef};
        Ok(match self {
            Cell::Null => ToSqlOutput::Owned(Value::Null),
            Cell::Int(i) => ToSqlOutput::Owned(Value::Integer(*i)),
            Cell::Real(r) => ToSqlOutput::Owned(Value::Real(*r)),
            Cell::Text(t) => ToSqlOutput::Borrowed(ValueRef::Text(t.as_bytes())),
        })
    }
}

impl Cell {
    fn from_ref(v: rusqlite::types::ValueRef<'_>) -> Cell {
        use rusqlite::types::ValueRef;
        match v {
            ValueRef::Null => Cell::Null,
            ValueRef::Integer(i) => Cell::Int(i),
            ValueRef::Real(r) => Cell::Real(r),
            ValueRef::Text(t) | ValueRef::Blob(t) => {
                Cell::Text(String::from_utf8_lossy(t).into_owned())
            }
        }
    }
}

/// How a column stores its values (its SQLite affinity and collation).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ColumnKind {
    /// Case-insensitive text (FileMaker's default text comparison).
    Text,
    /// Numbers.
    Number,
    /// ISO 8601 text that sorts in time order (dates, times, timestamps).
    Temporal,
}

impl ColumnKind {
    fn ddl(self) -> &'static str {
        match self {
            ColumnKind::Text => "TEXT COLLATE NOCASE",
            ColumnKind::Number => "REAL",
            ColumnKind::Temporal => "TEXT",
        }
    }
}

/// One change to the physical layout, produced by `kura-apps` from a schema
/// difference. Applied in order inside one transaction.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Ddl {
    /// Creates table `t{id}`.
    CreateTable { table: u32 },
    /// Drops table `t{id}` and its containers.
    DropTable { table: u32 },
    /// Adds column `c{col}` to `t{table}`.
    AddColumn {
        table: u32,
        col: u32,
        kind: ColumnKind,
    },
    /// Drops column `c{col}` (and its containers and serial).
    DropColumn { table: u32, col: u32 },
    /// Creates an index on one column, unique or not.
    CreateIndex { table: u32, col: u32, unique: bool },
    /// Drops the index on one column.
    DropIndex { table: u32, col: u32 },
    /// Creates an index on several columns, in this order (one an app
    /// definition declares for finds that combine them).
    CreateCompositeIndex { table: u32, cols: Vec<u32> },
    /// Drops the index on these columns.
    DropCompositeIndex { table: u32, cols: Vec<u32> },
    /// Starts (or restarts) the serial counter of a field.
    SetSerial { table: u32, col: u32, next: i64 },
}

pub(crate) fn table_name(table: u32) -> String {
    format!("t{table}")
}

pub(crate) fn column_name(col: u32) -> String {
    format!("c{col}")
}

fn index_name(table: u32, col: u32) -> String {
    format!("i{table}_{col}")
}

fn composite_index_name(table: u32, cols: &[u32]) -> String {
    let cols: Vec<String> = cols.iter().map(u32::to_string).collect();
    format!("x{table}_{}", cols.join("_"))
}

/// Writes between two looks at whether the statistics are still right.
const STATISTICS_CHECK_EVERY: u64 = 5_000;
/// The statistics are refreshed once the app's record count has grown or
/// shrunk by this factor since they were gathered: the planner compares
/// indexes by their shape, which changes slowly, and each refresh holds
/// the writer while it runs.
const STATISTICS_DRIFT: u64 = 2;
/// Above this many records, statistics come from a sample of each index
/// (SQLite's `analysis_limit`) so a refresh never holds the writer long.
const STATISTICS_SAMPLE_OVER: u64 = 100_000;
/// Index entries read per index when sampling.
const STATISTICS_SAMPLE: u32 = 2_000;

/// One app's database: the record store behind the Data API.
#[derive(Debug, Clone)]
pub struct AppData {
    pool: Pool,
    /// Columns indexed on first use, and what is known of their indexes.
    auto_index: Arc<indexing::AutoIndex>,
    /// Writes since the statistics were last looked at.
    writes: Arc<AtomicU64>,
    /// Records the app held when the statistics were last gathered.
    analysed_at: Arc<AtomicU64>,
}

impl AppData {
    /// Wraps an opened (and migrated) app database.
    pub fn new(pool: Pool) -> Self {
        Self {
            pool,
            auto_index: Arc::default(),
            writes: Arc::new(AtomicU64::new(0)),
            analysed_at: Arc::new(AtomicU64::new(0)),
        }
    }

    /// Refreshes the statistics SQLite's query planner chooses indexes by
    /// (`ANALYZE`). Without them a find on two fields walks the index of
    /// the field compared for equality, even when it holds half the table
    /// and the other field's range a tenth of it. Runs after imports and
    /// schema changes, when the record count has doubled or halved since
    /// the last refresh, and when an app with records is first opened
    /// without statistics.
    pub async fn refresh_statistics(&self) -> Result<(), StoreError> {
        self.writes.store(0, Ordering::Relaxed);
        let records = self.pool.write(|tx| analyse(tx)).await?;
        self.analysed_at.store(records, Ordering::Relaxed);
        Ok(())
    }

    /// Refreshes the statistics if the app has records but was never
    /// analysed (an app from before statistics were kept).
    pub async fn ensure_statistics(&self) -> Result<(), StoreError> {
        let (analysed, records) = self
            .pool
            .read(|conn| {
                let analysed: bool = conn.query_row(
                    "SELECT EXISTS (SELECT 1 FROM sqlite_master WHERE name = 'sqlite_stat1')",
                    [],
                    |r| r.get(0),
                )?;
                Ok((analysed, record_total(conn)?))
            })
            .await?;
        if analysed {
            self.analysed_at.store(records, Ordering::Relaxed);
        } else if records > 0 {
            self.refresh_statistics().await?;
        }
        Ok(())
    }

    /// Counts a write; every [`STATISTICS_CHECK_EVERY`] writes, checks in
    /// the background whether the record count has drifted far enough
    /// from the last refresh to refresh again (a failure is logged: stale
    /// statistics slow finds down but change no answer).
    fn count_write(&self) {
        if self.writes.fetch_add(1, Ordering::Relaxed) + 1 < STATISTICS_CHECK_EVERY {
            return;
        }
        self.writes.store(0, Ordering::Relaxed);
        let data = self.clone();
        tokio::spawn(async move {
            let drifted = async {
                let now = data.pool.read(record_total).await?;
                let then = data.analysed_at.load(Ordering::Relaxed);
                if now >= then.max(1) * STATISTICS_DRIFT || now * STATISTICS_DRIFT <= then {
                    data.refresh_statistics().await?;
                }
                Ok::<_, StoreError>(())
            };
            if let Err(e) = drifted.await {
                tracing::warn!(error = %e, "refreshing an app's query statistics failed");
            }
        });
    }

    /// Reads with a consistent snapshot.
    pub async fn read<T, F>(&self, f: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&AppRead<'_>) -> Result<T, StoreError> + Send + 'static,
    {
        let (value, used) = self.pool.snapshot(move |c| read_noting_use(c, f)).await?;
        self.used(used);
        Ok(value)
    }

    /// Like [`AppData::read`], for a read of a few rows by key (one record
    /// and its portals): on the calling thread when a reader is free (see
    /// `Pool::read_quick`).
    pub async fn read_quick<T, F>(&self, f: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&AppRead<'_>) -> Result<T, StoreError> + Send + 'static,
    {
        let (value, used) = self
            .pool
            .snapshot_quick(move |c| read_noting_use(c, f))
            .await?;
        self.used(used);
        Ok(value)
    }

    /// Changes records in one transaction: everything `f` does commits
    /// together, or nothing does.
    pub async fn write<T, F>(&self, f: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&AppWrite<'_>) -> Result<T, StoreError> + Send + 'static,
    {
        let written = self.pool.write(move |tx| f(&AppWrite::new(tx))).await;
        if written.is_ok() {
            self.count_write();
        }
        written
    }

    /// Applies layout changes and stores the new schema document, in one
    /// transaction, but only if the stored schema version is still
    /// `expected_version` (so two concurrent applies cannot interleave).
    pub async fn apply_schema(
        &self,
        expected_version: i64,
        document: String,
        ddl: Vec<Ddl>,
    ) -> Result<i64, StoreError> {
        let ddl_is_empty = ddl.is_empty();
        let version = self
            .pool
            .write(move |tx| {
                let current = schema_version(tx)?;
                if current != expected_version {
                    return Err(StoreError::Conflict(format!(
                        "schema version {expected_version} (it is now {current})"
                    )));
                }
                for op in &ddl {
                    apply_ddl(tx, op)?;
                }
                let next = current + 1;
                tx.execute(
                    "INSERT INTO kura_meta(key, value) VALUES ('schema', ?1)
                     ON CONFLICT(key) DO UPDATE SET value = excluded.value",
                    params![document],
                )?;
                tx.execute(
                    "INSERT INTO kura_meta(key, value) VALUES ('schema_version', ?1)
                     ON CONFLICT(key) DO UPDATE SET value = excluded.value",
                    params![next.to_string()],
                )?;
                Ok(next)
            })
            .await?;
        // New indexes are known to the planner only once analysed.
        if !ddl_is_empty {
            self.auto_index.forget();
            self.refresh_statistics().await?;
        }
        Ok(version)
    }

    /// The stored schema document and its version (`None` before the first
    /// apply).
    pub async fn schema(&self) -> Result<Option<(i64, String)>, StoreError> {
        self.pool
            .read(|conn| {
                let doc: Option<String> = conn
                    .query_row(
                        "SELECT value FROM kura_meta WHERE key = 'schema'",
                        [],
                        |r| r.get(0),
                    )
                    .optional()?;
                match doc {
                    None => Ok(None),
                    Some(doc) => Ok(Some((schema_version(conn)?, doc))),
                }
            })
            .await
    }

    /// How many records of `table` have a value in `col`: what dropping the
    /// field would destroy.
    pub async fn values_in(&self, table: u32, col: u32) -> Result<u64, StoreError> {
        self.pool
            .read(move |conn| {
                let sql = format!(
                    "SELECT count(*) FROM {} WHERE {} IS NOT NULL",
                    table_name(table),
                    column_name(col)
                );
                let n: i64 = conn.query_row(&sql, [], |r| r.get(0))?;
                Ok(u64::try_from(n).unwrap_or(0))
            })
            .await
    }

    /// How many records `table` holds.
    pub async fn count(&self, table: u32) -> Result<u64, StoreError> {
        self.read(move |r| r.count(table)).await
    }
}

/// Runs `f` (in the snapshot the pool holds open) and returns what it read
/// with the columns its filters and sorts could use an index for.
fn read_noting_use<T>(
    conn: &Connection,
    f: impl FnOnce(&AppRead<'_>) -> Result<T, StoreError>,
) -> Result<(T, Vec<indexing::Use>), StoreError> {
    let read = AppRead::new(conn);
    let value = f(&read)?;
    Ok((value, read.used_columns()))
}

/// Records in all of an app's tables.
fn record_total(conn: &Connection) -> Result<u64, StoreError> {
    let n: i64 = conn.query_row("SELECT coalesce(sum(n), 0) FROM kura_counts", [], |r| {
        r.get(0)
    })?;
    Ok(u64::try_from(n).unwrap_or(0))
}

/// Gathers the planner's statistics of every table and index: all of
/// each index while the app is small, a sample once it is large. Returns
/// the app's record count.
fn analyse(conn: &Connection) -> Result<u64, StoreError> {
    let records = record_total(conn)?;
    let limit = if records > STATISTICS_SAMPLE_OVER {
        STATISTICS_SAMPLE
    } else {
        0
    };
    conn.execute_batch(&format!("PRAGMA analysis_limit = {limit}; ANALYZE;"))?;
    Ok(records)
}

fn schema_version(conn: &Connection) -> Result<i64, StoreError> {
    let v: Option<String> = conn
        .query_row(
            "SELECT value FROM kura_meta WHERE key = 'schema_version'",
            [],
            |r| r.get(0),
        )
        .optional()?;
    match v {
        None => Ok(0),
        Some(v) => v
            .parse()
            .map_err(|_| StoreError::Malformed(format!("schema version `{v}`"))),
    }
}

fn apply_ddl(conn: &Connection, op: &Ddl) -> Result<(), StoreError> {
    match *op {
        Ddl::CreateCompositeIndex { table, ref cols } => {
            let list: Vec<String> = cols.iter().map(|c| column_name(*c)).collect();
            conn.execute_batch(&format!(
                "CREATE INDEX IF NOT EXISTS {} ON {}({})",
                composite_index_name(table, cols),
                table_name(table),
                list.join(", ")
            ))?;
        }
        Ddl::DropCompositeIndex { table, ref cols } => conn.execute_batch(&format!(
            "DROP INDEX IF EXISTS {}",
            composite_index_name(table, cols)
        ))?,
        Ddl::CreateTable { table } => {
            conn.execute_batch(&format!(
                "CREATE TABLE {} (rid INTEGER PRIMARY KEY, \
                 mod INTEGER NOT NULL DEFAULT 0, owner TEXT)",
                table_name(table)
            ))?;
            keep_record_count(conn, table)?;
        }
        Ddl::DropTable { table } => {
            conn.execute_batch(&format!("DROP TABLE {}", table_name(table)))?;
            conn.execute("DELETE FROM kura_counts WHERE tbl = ?1", [table])?;
            conn.execute("DELETE FROM kura_containers WHERE tbl = ?1", [table])?;
            conn.execute("DELETE FROM kura_serials WHERE tbl = ?1", [table])?;
        }
        Ddl::AddColumn { table, col, kind } => conn.execute_batch(&format!(
            "ALTER TABLE {} ADD COLUMN {} {}",
            table_name(table),
            column_name(col),
            kind.ddl()
        ))?,
        Ddl::DropColumn { table, col } => {
            conn.execute_batch(&format!("DROP INDEX IF EXISTS {}", index_name(table, col)))?;
            conn.execute_batch(&format!(
                "ALTER TABLE {} DROP COLUMN {}",
                table_name(table),
                column_name(col)
            ))?;
            conn.execute(
                "DELETE FROM kura_containers WHERE tbl = ?1 AND col = ?2",
                [table, col],
            )?;
            conn.execute(
                "DELETE FROM kura_serials WHERE tbl = ?1 AND col = ?2",
                [table, col],
            )?;
        }
        Ddl::CreateIndex { table, col, unique } => {
            conn.execute_batch(&format!("DROP INDEX IF EXISTS {}", index_name(table, col)))?;
            let result = conn.execute_batch(&format!(
                "CREATE {} INDEX {} ON {}({})",
                if unique { "UNIQUE" } else { "" },
                index_name(table, col),
                table_name(table),
                column_name(col)
            ));
            if let Err(e) = result {
                if unique && is_constraint(&e) {
                    return Err(StoreError::Conflict(
                        "values that are not unique; the field cannot be made unique".into(),
                    ));
                }
                return Err(e.into());
            }
        }
        Ddl::DropIndex { table, col } => {
            conn.execute_batch(&format!("DROP INDEX IF EXISTS {}", index_name(table, col)))?
        }
        Ddl::SetSerial { table, col, next } => {
            conn.execute(
                "INSERT INTO kura_serials(tbl, col, next) VALUES (?1, ?2, ?3)
                 ON CONFLICT(tbl, col) DO UPDATE SET next = excluded.next",
                params![table, col, next],
            )?;
        }
    }
    Ok(())
}

pub(crate) fn is_constraint(e: &rusqlite::Error) -> bool {
    matches!(
        e,
        rusqlite::Error::SqliteFailure(f, _) if f.code == rusqlite::ErrorCode::ConstraintViolation
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn count(conn: &Connection, table: u32) -> i64 {
        AppRead::new(conn).count(table).unwrap() as i64
    }

    fn real_count(conn: &Connection, table: u32) -> i64 {
        conn.query_row(&format!("SELECT count(*) FROM t{table}"), [], |r| r.get(0))
            .unwrap()
    }

    /// The plan SQLite chooses for a statement, as `EXPLAIN QUERY PLAN`
    /// details joined.
    fn plan(conn: &Connection, sql: &str) -> String {
        let mut stmt = conn.prepare(&format!("EXPLAIN QUERY PLAN {sql}")).unwrap();
        let rows = stmt
            .query_map([], |r| r.get::<_, String>(3))
            .unwrap()
            .collect::<Result<Vec<_>, _>>()
            .unwrap();
        rows.join("; ")
    }

    /// An app file (in `dir`) with table 1 and the given indexed columns.
    fn app_db(dir: &tempfile::TempDir, cols: &[(u32, ColumnKind, bool)]) -> Connection {
        let path = dir.path().join("app.db");
        let mut conn = Connection::open(&path).unwrap();
        init_app_db(&mut conn, &path).unwrap();
        apply_ddl(&conn, &Ddl::CreateTable { table: 1 }).unwrap();
        for &(col, kind, unique) in cols {
            apply_ddl(
                &conn,
                &Ddl::AddColumn {
                    table: 1,
                    col,
                    kind,
                },
            )
            .unwrap();
            apply_ddl(
                &conn,
                &Ddl::CreateIndex {
                    table: 1,
                    col,
                    unique,
                },
            )
            .unwrap();
        }
        conn
    }

    #[test]
    fn statistics_steer_a_two_field_find_to_the_more_selective_index() {
        let dir = tempfile::tempdir().unwrap();
        let number = ColumnKind::Number;
        let conn = app_db(&dir, &[(1, number, false), (2, number, false)]);
        // c1: an age from 18 to 80; c2: a flag, half the records each way.
        conn.execute_batch(
            "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 3000)
             INSERT INTO t1(owner, c1, c2) SELECT 'a', 18 + (i * 13) % 63, i % 2 FROM n;",
        )
        .unwrap();
        let filter = Filter::And(vec![
            Filter::Col(1, Cond::Between(Cell::Int(40), Cell::Int(45))),
            Filter::Col(2, Cond::Eq(Cell::Int(1))),
        ]);
        let mut params = Vec::new();
        let sql = format!(
            "SELECT rid FROM t1 WHERE {}",
            filter::compile(1, &filter, &mut params)
        );
        let sql = sql
            .replace("?1", "40")
            .replace("?2", "45")
            .replace("?3", "1");
        // Without statistics the equality wins, though it is half the table.
        assert!(plan(&conn, &sql).contains("i1_2"), "{}", plan(&conn, &sql));
        analyse(&conn).unwrap();
        assert!(plan(&conn, &sql).contains("i1_1"), "{}", plan(&conn, &sql));

        // The one-pass ids agree with a count and are in record-id order.
        let ids = AppRead::new(&conn).matching_ids(1, &filter).unwrap();
        let counted = AppRead::new(&conn).count_matching(1, &filter).unwrap();
        assert_eq!(ids.len() as u64, counted);
        assert!(counted > 100 && counted < 300, "{counted}");
        assert!(ids.windows(2).all(|w| w[0] < w[1]));
    }

    #[test]
    fn an_update_tells_changed_missing_stale_and_not_unique_apart_and_only_changes_the_first() {
        let dir = tempfile::tempdir().unwrap();
        let conn = app_db(&dir, &[(1, ColumnKind::Text, true)]);
        conn.execute_batch("INSERT INTO t1(owner, c1) VALUES ('a', 'ada'), ('a', 'grace');")
            .unwrap();
        let w = AppRead::new(&conn);
        let text = |t: &str| vec![(1, Cell::Text(t.into()))];
        let update = |rid, expected, values: Vec<(u32, Cell)>| {
            AppWrite::new(&conn)
                .update(1, rid, expected, &values)
                .unwrap()
        };
        assert_eq!(
            update(1, Some(0), text("ada l.")),
            UpdateOutcome::Updated(1)
        );
        assert_eq!(
            update(1, Some(0), text("stale")),
            UpdateOutcome::ModMismatch(1)
        );
        assert_eq!(update(1, None, text("grace")), UpdateOutcome::NotUnique(1));
        assert_eq!(update(9, None, text("nobody")), UpdateOutcome::Missing);
        assert_eq!(update(2, None, text("grace h.")), UpdateOutcome::Updated(1));
        let row = w.get(1, 1, &[1]).unwrap().unwrap();
        assert_eq!(
            (row.modid, &row.cells[..]),
            (1, &[Cell::Text("ada l.".into())][..])
        );
    }

    #[test]
    fn record_counts_follow_every_kind_of_change_and_cover_older_tables() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("app.db");
        let mut conn = Connection::open(&path).unwrap();
        // A table with records from before the counts existed.
        conn.execute_batch(
            "CREATE TABLE t7 (rid INTEGER PRIMARY KEY AUTOINCREMENT,
                              mod INTEGER NOT NULL DEFAULT 0, owner TEXT);
             INSERT INTO t7(owner) VALUES ('a'), ('b'), ('c');",
        )
        .unwrap();
        init_app_db(&mut conn, &path).unwrap();
        assert_eq!(count(&conn, 7), 3);
        // Opening again changes nothing.
        init_app_db(&mut conn, &path).unwrap();
        assert_eq!(count(&conn, 7), 3);

        apply_ddl(&conn, &Ddl::CreateTable { table: 8 }).unwrap();
        assert_eq!(count(&conn, 8), 0);
        conn.execute_batch(
            "INSERT INTO t8(owner) SELECT 'x' FROM t7;
             INSERT INTO t8(owner) VALUES ('y');
             DELETE FROM t7 WHERE owner = 'b';",
        )
        .unwrap();
        assert_eq!((count(&conn, 7), count(&conn, 8)), (2, 4));
        // A rolled-back transaction leaves the count as it was.
        {
            let tx = conn.transaction().unwrap();
            tx.execute_batch("INSERT INTO t8(owner) VALUES ('z');")
                .unwrap();
            assert_eq!(count(&tx, 8), 5);
        }
        assert_eq!(count(&conn, 8), 4);
        // An unconditional delete (SQLite's truncate shortcut is off when
        // triggers exist) and an update, which changes no count.
        conn.execute_batch("UPDATE t8 SET owner = 'w'; DELETE FROM t7;")
            .unwrap();
        for table in [7, 8] {
            assert_eq!(count(&conn, table), real_count(&conn, table));
        }
        apply_ddl(&conn, &Ddl::DropTable { table: 8 }).unwrap();
        let rows: i64 = conn
            .query_row("SELECT count(*) FROM kura_counts WHERE tbl = 8", [], |r| {
                r.get(0)
            })
            .unwrap();
        assert_eq!(rows, 0);
    }

    fn insert(conn: &Connection, table: u32) -> i64 {
        let (rid, _) = AppWrite::new(conn)
            .insert(table, Some("a"), &[])
            .unwrap()
            .unwrap();
        rid
    }

    fn sequence_rows(conn: &Connection) -> Vec<String> {
        let mut stmt = conn
            .prepare("SELECT name FROM sqlite_sequence ORDER BY name")
            .unwrap();
        stmt.query_map([], |r| r.get(0))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap()
    }

    #[test]
    fn record_ids_are_never_reused_and_need_no_sequence_table() {
        let dir = tempfile::tempdir().unwrap();
        let conn = app_db(&dir, &[]);
        assert_eq!(
            (insert(&conn, 1), insert(&conn, 1), insert(&conn, 1)),
            (1, 2, 3)
        );
        conn.execute_batch("DELETE FROM t1 WHERE rid = 3").unwrap();
        assert_eq!(
            insert(&conn, 1),
            4,
            "the deleted record's id is not handed out again"
        );
        // Naming a used id is refused and changes nothing.
        let reuse = conn.execute("INSERT INTO t1(rid, owner) VALUES (3, 'x')", []);
        assert!(reuse.is_err(), "{reuse:?}");
        assert_eq!((count(&conn, 1), real_count(&conn, 1)), (3, 3));
        assert_eq!(insert(&conn, 1), 5);
        // Neither the record table nor the outbox keeps a sequence row, so a
        // create's commit does not write `sqlite_sequence`'s page.
        AppWrite::new(&conn)
            .record_change(1, 5, ChangeKind::Create, 0, 0, "a")
            .unwrap();
        assert_eq!(sequence_rows(&conn), Vec::<String>::new());
    }

    #[test]
    fn files_from_before_the_id_rows_keep_every_id_and_change_unused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("app.db");
        let mut conn = Connection::open(&path).unwrap();
        // An app file at version 4: an AUTOINCREMENT table whose newest
        // record (id 3) was deleted, its count row and count trigger as they
        // were made then, and two outbox entries.
        crate::sqlite::migrate(&mut conn, &path, &APP_MIGRATIONS[..4]).unwrap();
        conn.execute_batch(
            "CREATE TABLE t7 (rid INTEGER PRIMARY KEY AUTOINCREMENT,
                              mod INTEGER NOT NULL DEFAULT 0, owner TEXT);
             INSERT INTO t7(owner) VALUES ('a'), ('b'), ('c');
             DELETE FROM t7 WHERE rid = 3;
             INSERT INTO kura_counts(tbl, n) VALUES (7, 2);
             CREATE TRIGGER t7_count_insert AFTER INSERT ON t7 BEGIN
                 UPDATE kura_counts SET n = n + 1 WHERE tbl = 7;
             END;
             INSERT INTO kura_changes(tbl, rid, kind, mod, at_ms, account)
                 VALUES (7, 1, 'create', 0, 1, 'a'), (7, 2, 'create', 0, 2, 'a');",
        )
        .unwrap();
        // A table from before the counts existed at all, newest record deleted too.
        conn.execute_batch(
            "CREATE TABLE t9 (rid INTEGER PRIMARY KEY AUTOINCREMENT,
                              mod INTEGER NOT NULL DEFAULT 0, owner TEXT);
             INSERT INTO t9(owner) VALUES ('a'), ('b');
             DELETE FROM t9 WHERE rid = 2;",
        )
        .unwrap();
        conn.execute_batch(
            "ALTER TABLE t7 ADD COLUMN c1 TEXT; CREATE INDEX i7_1 ON t7(c1);
             UPDATE t7 SET c1 = 'v' || rid;",
        )
        .unwrap();
        init_app_db(&mut conn, &path).unwrap();
        init_app_db(&mut conn, &path).unwrap();

        // Both tables were rebuilt without AUTOINCREMENT, keeping their
        // records, columns and indexes.
        assert_eq!(sequence_rows(&conn), Vec::<String>::new());
        let values: Vec<(i64, String)> = conn
            .prepare("SELECT rid, c1 FROM t7 INDEXED BY i7_1 ORDER BY c1")
            .unwrap()
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        assert_eq!(values, vec![(1, "v1".to_owned()), (2, "v2".to_owned())]);
        assert_eq!(
            insert(&conn, 7),
            4,
            "past the id AUTOINCREMENT last handed out"
        );
        assert_eq!(insert(&conn, 9), 3);
        // One trigger counts each insert (the old one is gone), and the
        // delete trigger came back with the rebuilt table.
        assert_eq!((count(&conn, 7), count(&conn, 9)), (3, 2));
        conn.execute_batch("DELETE FROM t7 WHERE rid = 1").unwrap();
        assert_eq!(count(&conn, 7), real_count(&conn, 7));
        assert_eq!(sequence_rows(&conn), Vec::<String>::new());
        // The outbox kept its entries, and the next continues after them.
        AppWrite::new(&conn)
            .record_change(7, 4, ChangeKind::Create, 0, 3, "a")
            .unwrap();
        let seqs: Vec<(i64, i64)> = AppRead::new(&conn)
            .changes_after(0, 10)
            .unwrap()
            .iter()
            .map(|c| (c.seq, c.at_ms))
            .collect();
        assert_eq!(seqs, vec![(1, 1), (2, 2), (3, 3)]);
    }
}
