//! Forward-only schema migrations, applied at open.
//!
//! Each database kind has an ordered list of migrations. The applied version
//! is kept in `PRAGMA user_version` and every migration runs in its own
//! transaction with the version bump, so a failed migration leaves the file at
//! the previous version. A file newer than this build is refused.

use std::path::Path;

use rusqlite::Connection;

use crate::StoreError;

/// One schema step.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Migration {
    /// The version this migration brings the schema to (1, 2, 3, …).
    pub version: i64,
    /// What it does.
    pub name: &'static str,
    /// The SQL.
    pub sql: &'static str,
}

/// Applies pending migrations; returns how many ran.
pub(crate) fn migrate(
    conn: &mut Connection,
    path: &Path,
    migrations: &[Migration],
) -> Result<usize, StoreError> {
    let known = migrations.last().map(|m| m.version).unwrap_or(0);
    let current: i64 = conn.query_row("PRAGMA user_version", [], |r| r.get(0))?;
    if current > known {
        return Err(StoreError::SchemaTooNew {
            path: path.to_owned(),
            found: current,
            known,
        });
    }
    let mut applied = 0;
    for m in migrations.iter().filter(|m| m.version > current) {
        let tx = conn.transaction()?;
        tx.execute_batch(m.sql).map_err(|e| StoreError::Open {
            path: path.to_owned(),
            detail: format!("migration {} ({}) failed: {e}", m.version, m.name),
        })?;
        tx.execute_batch(&format!("PRAGMA user_version = {}", m.version))?;
        tx.commit()?;
        applied += 1;
    }
    Ok(applied)
}

#[cfg(test)]
mod tests {
    use super::*;

    const STEPS: &[Migration] = &[
        Migration {
            version: 1,
            name: "one",
            sql: "CREATE TABLE a(x);",
        },
        Migration {
            version: 2,
            name: "two",
            sql: "CREATE TABLE b(x);",
        },
    ];

    #[test]
    fn applies_once_and_refuses_newer_files() {
        let mut conn = Connection::open_in_memory().unwrap();
        let p = Path::new("mem");
        assert_eq!(migrate(&mut conn, p, STEPS).unwrap(), 2);
        assert_eq!(migrate(&mut conn, p, STEPS).unwrap(), 0);
        assert!(matches!(
            migrate(&mut conn, p, &STEPS[..1]),
            Err(StoreError::SchemaTooNew {
                found: 2,
                known: 1,
                ..
            })
        ));
    }

    #[test]
    fn a_failing_migration_leaves_the_previous_version() {
        let mut conn = Connection::open_in_memory().unwrap();
        let p = Path::new("mem");
        let bad = [
            STEPS[0],
            Migration {
                version: 2,
                name: "broken",
                sql: "CREATE TABLE c(x); CREATE TABLE a(x);",
            },
        ];
        assert!(migrate(&mut conn, p, &bad).is_err());
        let v: i64 = conn
            .query_row("PRAGMA user_version", [], |r| r.get(0))
            .unwrap();
        assert_eq!(v, 1);
        let c: i64 = conn
            .query_row(
                "SELECT count(*) FROM sqlite_master WHERE name = 'c'",
                [],
                |r| r.get(0),
            )
            .unwrap();
        assert_eq!(c, 0, "the half-applied migration was rolled back");
    }
}
