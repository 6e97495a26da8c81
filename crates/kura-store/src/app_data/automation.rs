//! Idempotency keys of automated writes: a Kura Connect step that changes
//! records stores its key and result in the same transaction as the change,
//! so repeating the step (a resumed run) finds the result instead of
//! writing again.

use rusqlite::{OptionalExtension as _, params};

use super::records::{AppRead, AppWrite};
use crate::StoreError;

impl AppRead<'_> {
    /// The stored result of the write made under `key`, if one was made.
    pub fn automation_result(&self, key: &str) -> Result<Option<String>, StoreError> {
        Ok(self
            .conn()
            .prepare_cached("SELECT result FROM kura_automation_keys WHERE key = ?1")?
            .query_row([key], |r| r.get(0))
            .optional()?)
    }
}

impl AppWrite<'_> {
    /// Remembers the result of the write made under `key` (in the write's
    /// transaction). A key already present is an error: the caller checks
    /// first, inside the same transaction.
    pub fn remember_automation(
        &self,
        key: &str,
        result: &str,
        at_ms: i64,
    ) -> Result<(), StoreError> {
        self.conn()
            .prepare_cached(
                "INSERT INTO kura_automation_keys(key, result, at_ms) VALUES (?1, ?2, ?3)",
            )?
            .execute(params![key, result, at_ms])?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use rusqlite::Connection;

    use super::super::APP_MIGRATIONS;
    use crate::sqlite::migrate;

    /// An app file made before service accounts keeps its accounts when the
    /// accounts table is rebuilt, and then takes service accounts and
    /// automation keys.
    #[test]
    fn the_service_account_migration_keeps_existing_accounts() {
        let mut conn = Connection::open_in_memory().unwrap();
        let path = std::path::Path::new("app.db");
        migrate(&mut conn, path, &APP_MIGRATIONS[..2]).unwrap();
        conn.execute(
            "INSERT INTO kura_accounts(name, kind, password_hash, privilege_set, active, created_at)
             VALUES ('Ada', 'local', 'hash', '[Full Access]', 1, 7)",
            [],
        )
        .unwrap();
        assert!(
            conn.execute(
                "INSERT INTO kura_accounts(name, kind, privilege_set, created_at)
                 VALUES ('svc', 'service', 'flows', 8)",
                [],
            )
            .is_err(),
            "version 2 refuses the new kind"
        );
        // This one and the two after it (record counts, record ids).
        assert_eq!(migrate(&mut conn, path, APP_MIGRATIONS).unwrap(), 3);
        let (kind, hash, created): (String, String, i64) = conn
            .query_row(
                "SELECT kind, password_hash, created_at FROM kura_accounts WHERE name = 'ada'",
                [],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
            )
            .unwrap();
        assert_eq!(
            (kind.as_str(), hash.as_str(), created),
            ("local", "hash", 7)
        );
        conn.execute(
            "INSERT INTO kura_accounts(name, kind, privilege_set, created_at)
             VALUES ('svc', 'service', 'flows', 8)",
            [],
        )
        .unwrap();
        let w = super::super::AppWrite::new(&conn);
        assert_eq!(w.read().automation_result("k").unwrap(), None);
        w.remember_automation("k", "{\"recordId\":\"1\"}", 9)
            .unwrap();
        assert_eq!(
            w.read().automation_result("k").unwrap().as_deref(),
            Some("{\"recordId\":\"1\"}")
        );
        assert!(
            w.remember_automation("k", "{}", 10).is_err(),
            "a key is written once"
        );
    }
}
