//! The embedded backend: SQLite with SQLCipher.

mod access;
mod connect;
mod credentials;
mod edge;
pub(crate) mod events;
mod exports;
mod identity;
mod incidents;
mod migrate;
mod passkeys;
mod platform;
mod pool;
mod principal;
mod setup;
mod teams;
mod verification;

use std::path::Path;

use kura_crypto::DataKey;
use rusqlite::config::DbConfig;
use rusqlite::{Connection, ErrorCode, OpenFlags};
use zeroize::Zeroizing;

use crate::StoreError;

pub use connect::SqliteConnectStore;
pub use edge::SqliteEdgeStore;
pub use exports::SqliteExportStore;
pub use identity::SqliteIdentityStore;
pub use incidents::SqliteIncidentStore;
pub(crate) use migrate::{Migration, migrate};
pub use platform::SqlitePlatformStore;
pub use pool::Pool;
pub(crate) use pool::in_snapshot;

/// How hard a commit waits for the disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Durability {
    /// `synchronous=FULL`: an acknowledged commit survives a power cut.
    #[default]
    Full,
    /// `synchronous=NORMAL`: survives a process crash; a power cut may lose
    /// the last commits. Only for data that can be rebuilt.
    Normal,
}

/// Page cache per connection, in KiB. Pages in the cache are already
/// decrypted, so a read that hits it costs what plain SQLite costs; a miss
/// pays SQLCipher's HMAC check and AES decryption (about 10 µs a page here).
/// SQLite's default is 2 MiB; 8 MiB keeps the hot pages of typical databases
/// decrypted (BENCHMARKS.md, storage section) while memory is spent only on
/// pages actually read.
const PAGE_CACHE_KIB: u32 = 8 * 1024;

/// The first bytes of an unencrypted SQLite file.
const PLAIN_SQLITE_HEADER: &[u8] = b"SQLite format 3\0";

/// Opens (or, with `create`, creates) a database file encrypted under `key`,
/// in WAL mode, and proves the key opens it. With `key` set to `None` the file
/// is plain SQLite; only benchmarks do that, to measure what encryption costs.
pub fn open_encrypted(
    path: &Path,
    key: Option<&DataKey>,
    create: bool,
    durability: Durability,
) -> Result<Connection, StoreError> {
    let fail = |detail: String| StoreError::Open {
        path: path.to_owned(),
        detail,
    };
    if !create && !path.exists() {
        return Err(fail("the file does not exist".into()));
    }
    let mut flags = OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX;
    if create {
        flags |= OpenFlags::SQLITE_OPEN_CREATE;
    }
    let conn = Connection::open_with_flags(path, flags).map_err(|e| fail(e.to_string()))?;
    if let Some(key) = key {
        // A raw 256-bit key ("x'…'") skips SQLCipher's own passphrase KDF:
        // the key already comes from the KMS at full strength.
        // SQLCipher reports decryption failures on stderr by itself; Kura
        // reports them as errors that name the file instead.
        conn.execute_batch("PRAGMA cipher_log_level = NONE;")
            .map_err(|e| fail(e.to_string()))?;
        let pragma = Zeroizing::new(format!(
            "PRAGMA key = \"x'{}'\";",
            hex::encode(key.expose())
        ));
        conn.execute_batch(&pragma)
            .map_err(|e| fail(e.to_string()))?;
        let version: Option<String> = conn
            .query_row("PRAGMA cipher_version", [], |r| r.get(0))
            .ok();
        if version.is_none() {
            return Err(fail(
                "this build of SQLite has no SQLCipher support; refusing to store data unencrypted"
                    .into(),
            ));
        }
    }
    if let Err(e) = conn.query_row("SELECT count(*) FROM sqlite_master", [], |r| {
        r.get::<_, i64>(0)
    }) {
        let not_a_db = matches!(
            e.sqlite_error_code(),
            Some(ErrorCode::NotADatabase | ErrorCode::DatabaseCorrupt)
        );
        let header = std::fs::read(path)
            .map(|b| b.starts_with(PLAIN_SQLITE_HEADER))
            .unwrap_or(false);
        return Err(fail(if key.is_some() && header {
            "it is an unencrypted SQLite file, not a Kura database".into()
        } else if not_a_db {
            "it is corrupt, or it was encrypted with a different key (was the key file replaced?)"
                .into()
        } else {
            e.to_string()
        }));
    }
    let sync = match durability {
        Durability::Full => "FULL",
        Durability::Normal => "NORMAL",
    };
    conn.execute_batch(&format!(
        "PRAGMA journal_mode = WAL;
         PRAGMA synchronous = {sync};
         PRAGMA foreign_keys = ON;
         PRAGMA busy_timeout = 5000;
         PRAGMA temp_store = MEMORY;
         PRAGMA cache_size = -{PAGE_CACHE_KIB};"
    ))
    .map_err(|e| fail(e.to_string()))?;
    // Statements are prepared once per connection and kept: a connection
    // serves many kinds of request, and the default cache (16) is smaller
    // than what one busy reader runs, so statements were parsed again.
    conn.set_prepared_statement_cache_capacity(STATEMENT_CACHE);
    // The query planner's stability guarantee: a prepared statement keeps
    // its plan whatever values are bound. Without it SQLite (built with
    // STAT4) marks statements whose parameters meet certain comparisons
    // (a parameter used twice, a GLOB pattern) to be parsed and planned
    // again on every new binding, which made a cached statement cost a
    // full prepare per request. Kura's statements are key lookups and
    // scans whose plans do not depend on the values, and no database is
    // ANALYZEd, so no better plan is given up.
    conn.set_db_config(DbConfig::SQLITE_DBCONFIG_ENABLE_QPSG, true)
        .map_err(|e| fail(e.to_string()))?;
    restrict_mode(path)?;
    Ok(conn)
}

/// Prepared statements kept per connection.
const STATEMENT_CACHE: usize = 128;

/// Database files are created by SQLite with the process umask; tighten them.
fn restrict_mode(path: &Path) -> Result<(), StoreError> {
    use std::os::unix::fs::PermissionsExt as _;
    let meta = std::fs::metadata(path).map_err(|e| StoreError::io(path, e))?;
    if meta.permissions().mode() & 0o077 != 0 {
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
            .map_err(|e| StoreError::io(path, e))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wrong_keys_and_garbage_get_clear_errors() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("x.db");
        let key = DataKey::from_bytes([1; 32]);
        {
            let conn = open_encrypted(&path, Some(&key), true, Durability::Full).unwrap();
            conn.execute_batch("CREATE TABLE t(x); INSERT INTO t VALUES ('hello');")
                .unwrap();
        }
        let other = DataKey::from_bytes([2; 32]);
        let err = open_encrypted(&path, Some(&other), false, Durability::Full).unwrap_err();
        assert!(err.to_string().contains("different key"), "{err}");
        assert!(err.to_string().contains("x.db"), "{err}");

        let plain = dir.path().join("plain.db");
        open_encrypted(&plain, None, true, Durability::Full)
            .unwrap()
            .execute_batch("CREATE TABLE t(x);")
            .unwrap();
        let err = open_encrypted(&plain, Some(&key), false, Durability::Full).unwrap_err();
        assert!(err.to_string().contains("unencrypted"), "{err}");

        let missing = dir.path().join("missing.db");
        let err = open_encrypted(&missing, Some(&key), false, Durability::Full).unwrap_err();
        assert!(err.to_string().contains("does not exist"), "{err}");
        assert!(!missing.exists(), "opening without create made no file");
    }
}
