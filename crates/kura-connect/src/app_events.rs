//! The app-event trigger: flows follow their app's change outbox.
//!
//! Enabling a flow places it at the newest outbox entry (changes made
//! while a flow is disabled do not start runs; saving a new version keeps
//! the place unless the app changes). A worker reads the entries after
//! each enabled flow's place, turns the ones that match its trigger into
//! queued runs, and moves the place past everything it read in the same
//! transaction that queues the runs. A crash before that commit reads the
//! same entries again; after it, never: each entry starts one run.

use kura_apps::Target;
use kura_store::app_data::{Change, ChangeKind};
use kura_store::connect::{AppSubscriptionRecord, NewRun};
use kura_types::AppId;
use serde_json::{Value, json};

use crate::ConnectError;
use crate::document::{AppEventKind, FlowDocument, Trigger};
use crate::service::Connect;

/// Outbox entries read per flow per pass.
const BATCH: u32 = 200;

fn kind_of(change: ChangeKind) -> AppEventKind {
    match change {
        ChangeKind::Create | ChangeKind::Duplicate | ChangeKind::Import => AppEventKind::Created,
        ChangeKind::Edit => AppEventKind::Edited,
        ChangeKind::Delete => AppEventKind::Deleted,
    }
}

fn event_name(kind: AppEventKind) -> &'static str {
    match kind {
        AppEventKind::Created => "created",
        AppEventKind::Edited => "edited",
        AppEventKind::Deleted => "deleted",
    }
}

impl Connect {
    /// Keeps a flow's outbox place in step with its document; `fresh`
    /// (enabling) starts from the newest entry.
    pub(crate) async fn subscribe(
        &self,
        flow: &kura_store::connect::FlowRecord,
        doc: &FlowDocument,
        fresh: bool,
    ) -> Result<(), ConnectError> {
        let store = &self.inner.store;
        let Trigger::AppEvent { app, .. } = &doc.trigger else {
            store.set_app_subscription(flow.id, None).await?;
            return Ok(());
        };
        let app: AppId = app
            .parse()
            .map_err(|_| ConnectError::Invalid(format!("`{app}` is not an app id")))?;
        let existing = store.app_subscription(flow.id).await?;
        let cursor = match existing {
            Some(s) if !fresh && s.app == app => s.cursor,
            _ => self
                .inner
                .apps
                .change_head(flow.team, app)
                .await
                .map_err(|e| ConnectError::Invalid(e.to_string()))?,
        };
        store
            .set_app_subscription(
                flow.id,
                Some(AppSubscriptionRecord {
                    flow: flow.id,
                    team: flow.team,
                    app,
                    cursor,
                }),
            )
            .await?;
        Ok(())
    }

    /// Turns new outbox entries of every enabled flow's app into runs.
    pub(crate) async fn deliver_app_events(&self) -> Result<(), ConnectError> {
        for sub in self.inner.store.app_subscriptions().await? {
            if let Err(e) = self.deliver_for(&sub).await {
                tracing::warn!(flow = %sub.flow, error = %e, "app events of a flow could not be delivered");
            }
        }
        Ok(())
    }

    async fn deliver_for(&self, sub: &AppSubscriptionRecord) -> Result<(), ConnectError> {
        let apps = &self.inner.apps;
        let changes: Vec<Change> = apps
            .changes_after(sub.team, sub.app, sub.cursor, BATCH)
            .await
            .map_err(|e| ConnectError::Invalid(e.to_string()))?;
        let Some(last) = changes.last().map(|c| c.seq) else {
            return Ok(());
        };
        let (flow, _, doc) = self.flow(sub.team, sub.flow, None).await?;
        let Trigger::AppEvent {
            layout,
            account,
            events,
            ..
        } = &doc.trigger
        else {
            return Ok(());
        };
        let target = Target {
            team: sub.team,
            app: sub.app,
            layout,
            account,
        };
        let (table, table_name) = apps
            .automation_table(target)
            .await
            .map_err(|e| ConnectError::Invalid(e.to_string()))?;
        let now = self.inner.clock.now();
        let mut runs: Vec<NewRun> = Vec::new();
        for c in changes.iter().filter(|c| c.table == table) {
            let kind = kind_of(c.kind);
            if !events.contains(&kind) {
                continue;
            }
            let record = if kind == AppEventKind::Deleted {
                Value::Null
            } else {
                apps.automation_record(target, c.rid)
                    .await
                    .map_err(|e| ConnectError::Invalid(e.to_string()))?
                    .unwrap_or(Value::Null)
            };
            let at =
                time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(c.at_ms) * 1_000_000)
                    .ok()
                    .and_then(|t| {
                        t.format(&time::format_description::well_known::Rfc3339)
                            .ok()
                    });
            let input = json!({
                "event": event_name(kind),
                "app": sub.app.to_string(),
                "table": table_name,
                "record_id": c.rid.to_string(),
                "mod_id": c.modid.to_string(),
                "at": at,
                "account": c.account,
                "change": c.seq,
                "record": record,
            });
            runs.push(Self::new_run(&flow, &doc, "app_event", &input, now));
        }
        let queued = !runs.is_empty();
        if self.inner.store.deliver_app_events(sub, last, runs).await? && queued {
            self.inner.wake.notify_one();
        }
        Ok(())
    }
}
