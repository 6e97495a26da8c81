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
