//! Record-level operations outside the Data API: CSV import (admin API)
//! and reading the change outbox (Kura Connect's app events).

use kura_store::StoreError;
use kura_store::app_data::Change;
use kura_types::{AppId, TeamId};
use parking_lot::Mutex;
use std::collections::HashMap;
use std::sync::Arc;

use super::{Apps, store};
use crate::data::Caller;
use crate::error::AppsError;
use crate::import::{ImportReport, check, insert_rows};
use crate::schema::FULL_ACCESS;

/// The most outbox entries one read returns.
pub const MAX_CHANGES_PER_READ: u32 = 1_000;

impl Apps {
    /// Imports CSV text into a table of a team's app: every row or none.
    /// `account` is recorded as the records' creator (auto-entered
    /// account fields, record ownership, the change outbox).
    pub async fn import_csv(
        &self,
        team: TeamId,
        id: AppId,
        table: &str,
        account: &str,
        csv: &str,
    ) -> Result<ImportReport, AppsError> {
        let app = self.app(team, id).await?;
        let loaded = self.load(&app).await?;
        let schema = loaded.schema();
        let t = schema
            .table(table)
            .ok_or_else(|| AppsError::NotFound(format!("table `{table}`")))?
            .clone();
        // Everything that can be checked without the database is checked
        // before the write transaction starts.
        let (fields, rows) = check(&t, csv)?;
        let privileges = schema
            .privilege_set(FULL_ACCESS)
            .ok_or_else(|| {
                AppsError::Conflict("the [Full Access] privilege set is missing".into())
            })?
            .clone();
        let (account, now) = (account.to_owned(), self.now());
        let slot: Arc<Mutex<Option<AppsError>>> = Arc::new(Mutex::new(None));
        let failed = Arc::clone(&slot);
        let tbl = t.clone();
        let result = loaded
            .data
            .write(move |w| {
                let globals = HashMap::new();
                let caller = Caller {
                    account: &account,
                    privileges: &privileges,
                    globals: &globals,
                };
                insert_rows(w, &tbl, &rows, &caller, now).map_err(|e| {
                    *failed.lock() = Some(e);
                    StoreError::Worker("import rolled back".into())
                })
            })
            .await;
        let imported = match result {
            Ok(n) => n,
            Err(e) => return Err(slot.lock().take().unwrap_or_else(|| store(e))),
        };
        // Many records at once: the planner's statistics are out of date.
        // The import itself is done; stale statistics only slow finds.
        if let Err(e) = loaded.data.refresh_statistics().await {
            tracing::warn!(error = %e, app = %id, "refreshing query statistics after an import failed");
        }
        Ok(ImportReport {
            table: t.name.clone(),
            imported,
            fields,
        })
    }

    /// Change outbox entries of a team's app after `cursor` (0 for the
    /// beginning), oldest first, at most `limit` (capped at
    /// [`MAX_CHANGES_PER_READ`]).
    pub async fn changes_after(
        &self,
        team: TeamId,
        id: AppId,
        cursor: i64,
        limit: u32,
    ) -> Result<Vec<Change>, AppsError> {
        let app = self.app(team, id).await?;
        let loaded = self.load(&app).await?;
        let limit = limit.clamp(1, MAX_CHANGES_PER_READ);
        loaded
            .data
            .read(move |r| r.changes_after(cursor, limit))
            .await
            .map_err(store)
    }

    /// The sequence number of the newest change outbox entry of a team's
    /// app (0 when there is none): where a new reader starts.
    pub async fn change_head(&self, team: TeamId, id: AppId) -> Result<i64, AppsError> {
        let app = self.app(team, id).await?;
        let loaded = self.load(&app).await?;
        loaded.data.read(|r| r.change_head()).await.map_err(store)
    }
}
