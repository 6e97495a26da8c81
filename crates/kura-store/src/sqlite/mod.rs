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

/// How SQLCipher authenticates each page of a file (its
/// `cipher_hmac_algorithm`; pages are AES-256-CBC encrypted either way).
///
/// Files Kura creates use HMAC-SHA256: every page read from disk is checked
/// and every page written is signed, and on CPUs with SHA extensions
/// SHA-256 runs about twice as fast as SHA-512 over a 4 KiB page (1.8 GB/s
/// against 0.8 GB/s here, `openssl speed`), which made the HMAC the largest
/// single cost of reads that follow a commit (BENCHMARKS.md, "Page
/// authentication"). Files created before kept SQLCipher 4's default,
/// HMAC-SHA512, and open as they are.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PageHmac {
    /// HMAC-SHA256: every file Kura creates.
    Sha256,
    /// HMAC-SHA512: SQLCipher's default, files created before Kura chose.
    Sha512,
}

impl PageHmac {
    fn pragma(self) -> &'static str {
        match self {
            Self::Sha256 => "PRAGMA cipher_hmac_algorithm = HMAC_SHA256;",
            Self::Sha512 => "PRAGMA cipher_hmac_algorithm = HMAC_SHA512;",
        }
    }
}

/// Opens (or, with `create`, creates) a database file encrypted under `key`,
/// in WAL mode, and proves the key opens it. With `key` set to `None` the file
/// is plain SQLite; only benchmarks do that, to measure what encryption costs.
pub fn open_encrypted(
    path: &Path,
    key: Option<&DataKey>,
    create: bool,
    durability: Durability,
) -> Result<Connection, StoreError> {
    open_file(path, key, create, durability, None).map(|(conn, _)| conn)
}

/// [`open_encrypted`], with the file's page authentication when it is
/// already known (a pool's further connections), and the one it has.
///
/// A new file gets [`PageHmac::Sha256`]. An existing file is tried with it
/// first and, when its first page does not authenticate, with
/// [`PageHmac::Sha512`]: a page signed one way never verifies the other
/// way, so the file's format is found without a record of it, and a wrong
/// key fails both ways.
pub(crate) fn open_file(
    path: &Path,
    key: Option<&DataKey>,
    create: bool,
    durability: Durability,
    known: Option<PageHmac>,
) -> Result<(Connection, Option<PageHmac>), StoreError> {
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
    let tries: &[PageHmac] = match (key, known) {
        (None, _) => &[],
        (Some(_), Some(PageHmac::Sha256)) => &[PageHmac::Sha256],
        (Some(_), Some(PageHmac::Sha512)) => &[PageHmac::Sha512],
        (Some(_), None) => &[PageHmac::Sha256, PageHmac::Sha512],
    };
    let mut attempt = 0;
    let (conn, hmac) = loop {
        let hmac = tries.get(attempt).copied();
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
            if let Some(hmac) = hmac {
                conn.execute_batch(hmac.pragma())
                    .map_err(|e| fail(e.to_string()))?;
            }
        }
        let Err(e) = conn.query_row("SELECT count(*) FROM sqlite_master", [], |r| {
            r.get::<_, i64>(0)
        }) else {
            break (conn, hmac);
        };
        let not_a_db = matches!(
            e.sqlite_error_code(),
            Some(ErrorCode::NotADatabase | ErrorCode::DatabaseCorrupt)
        );
        attempt += 1;
        if not_a_db && attempt < tries.len() {
            continue;
        }
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
    };
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
    Ok((conn, hmac))
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

/// A file encrypted under `key` with SQLCipher's default settings (as Kura
/// made files before it chose HMAC-SHA256), in WAL mode, after `sql`.
#[cfg(test)]
pub(crate) fn sqlcipher_default_file(path: &Path, key: &DataKey, sql: &str) -> Connection {
    let conn = Connection::open(path).unwrap();
    conn.execute_batch(&format!(
        "PRAGMA key = \"x'{}'\"; PRAGMA journal_mode = WAL; {sql}",
        hex::encode(key.expose())
    ))
    .unwrap();
    conn
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

    fn hmac_of(conn: &Connection) -> String {
        conn.query_row("PRAGMA cipher_hmac_algorithm", [], |r| r.get(0))
            .unwrap()
    }

    #[test]
    fn new_files_sign_pages_with_sha256_and_files_with_sqlciphers_default_still_open() {
        let dir = tempfile::tempdir().unwrap();
        let key = DataKey::from_bytes([3; 32]);

        let new = dir.path().join("new.db");
        let (conn, hmac) = open_file(&new, Some(&key), true, Durability::Full, None).unwrap();
        assert_eq!(hmac, Some(PageHmac::Sha256));
        assert_eq!(hmac_of(&conn), "HMAC_SHA256");
        conn.execute_batch("CREATE TABLE t(x); INSERT INTO t VALUES ('new');")
            .unwrap();
        drop(conn);
        let conn = open_encrypted(&new, Some(&key), false, Durability::Full).unwrap();
        assert_eq!(hmac_of(&conn), "HMAC_SHA256");

        // A file made with SQLCipher's defaults, as Kura made them before.
        let old = dir.path().join("old.db");
        let conn = sqlcipher_default_file(
            &old,
            &key,
            "CREATE TABLE t(x); INSERT INTO t VALUES ('old');",
        );
        assert_eq!(hmac_of(&conn), "HMAC_SHA512");
        drop(conn);
        let (conn, hmac) = open_file(&old, Some(&key), false, Durability::Full, None).unwrap();
        assert_eq!(hmac, Some(PageHmac::Sha512));
        conn.execute("INSERT INTO t VALUES ('more')", []).unwrap();
        drop(conn);
        // Told the format, a further connection reads what was written.
        let (conn, _) = open_file(
            &old,
            Some(&key),
            false,
            Durability::Full,
            Some(PageHmac::Sha512),
        )
        .unwrap();
        let rows: Vec<String> = conn
            .prepare("SELECT x FROM t ORDER BY rowid")
            .unwrap()
            .query_map([], |r| r.get(0))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        assert_eq!(rows, ["old", "more"]);
        drop(conn);
        // Told the wrong format, it does not open.
        let err = open_file(
            &old,
            Some(&key),
            false,
            Durability::Full,
            Some(PageHmac::Sha256),
        )
        .unwrap_err();
        assert!(err.to_string().contains("different key"), "{err}");

        // A wrong key fails either way, with the same message.
        let other = DataKey::from_bytes([4; 32]);
        for path in [&new, &old] {
            let err = open_encrypted(path, Some(&other), false, Durability::Full).unwrap_err();
            assert!(err.to_string().contains("different key"), "{err}");
        }
    }
}
