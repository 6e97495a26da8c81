//! Records changed by automation: Kura Connect's app steps act as a
//! **service account** of the app — an account that cannot sign in
//! anywhere, created by the team with a privilege set — and go through the
//! same record, field and layout checks as the Data API (the same
//! functions in [`crate::data`]). Writes carry an idempotency key stored in
//! the write's own transaction, so a repeated step writes once.

use std::collections::HashMap;
use std::sync::Arc;

use kura_store::StoreError;
use kura_store::app_data::{AppWrite, Filter};
use kura_types::{AppId, TeamId};
use parking_lot::Mutex;
use serde_json::{Map, Value, json};

use super::{Apps, LoadedApp, store};
use crate::data::{self, Caller, Render, SortSpec};
use crate::error::{AppsError, FmError};
use crate::privileges::PrivilegeSet;
use crate::value::DateFormat;

/// The account kind automation acts as.
pub const SERVICE_KIND: &str = "service";

/// A record operation of an automation step.
#[derive(Debug, Clone)]
pub enum RecordOp {
    /// Records matching FileMaker find requests (an array of objects, as in
    /// the Data API's `_find`), sorted and paged.
    Find {
        /// The find requests.
        query: Value,
        /// Sort fields (name, descending).
        sort: SortSpec,
        /// The first record to return, from 1.
        offset: u64,
        /// At most this many records.
        limit: u64,
    },
    /// One record by id.
    Get {
        /// The record id.
        rid: i64,
    },
    /// A new record.
    Create {
        /// Field name → value.
        fields: Map<String, Value>,
    },
    /// Changed fields of a record.
    Edit {
        /// The record id.
        rid: i64,
        /// Field name → value.
        fields: Map<String, Value>,
    },
    /// A deleted record.
    Delete {
        /// The record id.
        rid: i64,
    },
}

impl RecordOp {
    /// Whether the operation changes records.
    pub fn writes(&self) -> bool {
        !matches!(self, RecordOp::Find { .. } | RecordOp::Get { .. })
    }
}

/// Why an automation step's record operation failed.
#[derive(Debug, thiserror::Error)]
pub enum AutomationError {
    /// The app, layout or service account is missing, of another team, or
    /// not allowed to act.
    #[error("{0}")]
    Setup(AppsError),
    /// The record operation failed with a FileMaker error (privileges,
    /// validation, missing record).
    #[error("{0}")]
    Record(FmError),
}

impl AutomationError {
    /// Whether trying again later could succeed (storage trouble only).
    pub fn retryable(&self) -> bool {
        match self {
            AutomationError::Setup(AppsError::Store(_)) => true,
            AutomationError::Record(e) => e.code == -1,
            AutomationError::Setup(_) => false,
        }
    }
}

/// Where an automation step acts.
#[derive(Debug, Clone, Copy)]
pub struct Target<'a> {
    /// The flow's team; the app must belong to it.
    pub team: TeamId,
    /// The app.
    pub app: AppId,
    /// A layout of the app.
    pub layout: &'a str,
    /// A service account of the app.
    pub account: &'a str,
}

impl Apps {
    /// Checks that a step's target exists: the app belongs to the team and
    /// is open, the layout is in its schema and the account is an active
    /// service account whose privilege set exists. Returns the app and the
    /// privilege set. A problem is [`AppsError::Invalid`] naming `app`,
    /// `layout` or `account`.
    pub async fn automation_access(
        &self,
        target: Target<'_>,
    ) -> Result<(Arc<LoadedApp>, PrivilegeSet), AppsError> {
        let record = match self.app(target.team, target.app).await {
            Ok(r) => r,
            Err(AppsError::NotFound(_)) => {
                return Err(AppsError::invalid(
                    "app",
                    format!("the team has no app {}", target.app),
                ));
            }
            Err(e) => return Err(e),
        };
        if record.status != kura_store::AppStatus::Open {
            return Err(AppsError::invalid(
                "app",
                format!("app {} is closed", target.app),
            ));
        }
        let loaded = self.load(&record).await?;
        let schema = loaded.schema();
        if schema.layout(target.layout).is_none() {
            return Err(AppsError::invalid(
                "layout",
                format!("app {} has no layout `{}`", target.app, target.layout),
            ));
        }
        let name = target.account.to_owned();
        let row = loaded
            .data
            .read(move |r| r.account(&name))
            .await
            .map_err(store)?
            .filter(|r| r.kind == SERVICE_KIND)
            .ok_or_else(|| {
                AppsError::invalid(
                    "account",
                    format!(
                        "app {} has no service account `{}`",
                        target.app, target.account
                    ),
                )
            })?;
        if !row.active {
            return Err(AppsError::invalid(
                "account",
                format!("service account `{}` is inactive", row.name),
            ));
        }
        let set = schema
            .privilege_set(&row.privilege_set)
            .ok_or_else(|| {
                AppsError::invalid(
                    "account",
                    format!(
                        "the privilege set `{}` of service account `{}` is gone",
                        row.privilege_set, row.name
                    ),
                )
            })?
            .clone();
        Ok((loaded, set))
    }

    /// The schema id and name of the table a target's layout shows.
    pub async fn automation_table(&self, target: Target<'_>) -> Result<(u32, String), AppsError> {
        let (loaded, _) = self.automation_access(target).await?;
        let schema = loaded.schema();
        let table = schema
            .layout(target.layout)
            .map(|l| &schema.tables[l.table])
            .ok_or_else(|| AppsError::invalid("layout", "the layout is gone"))?;
        Ok((table.id, table.name.clone()))
    }

    /// Carries out a record operation as a service account. Records are
    /// rendered as the Data API renders them (ISO 8601 dates), as
    /// `{"recordId", "modId", "fieldData"}` objects. A write with an
    /// idempotency key that was already made returns the first write's
    /// result and changes nothing.
    pub async fn automate(
        &self,
        target: Target<'_>,
        op: RecordOp,
        idempotency_key: Option<&str>,
    ) -> Result<Value, AutomationError> {
        let (loaded, privileges) = self
            .automation_access(target)
            .await
            .map_err(AutomationError::Setup)?;
        let schema = loaded.schema();
        let (account, layout, now) = (
            target.account.to_owned(),
            target.layout.to_owned(),
            self.now(),
        );
        let format = DateFormat::Iso;
        if !op.writes() {
            let result = loaded
                .data
                .read(move |r| {
                    let globals = HashMap::new();
                    let caller = Caller {
                        account: &account,
                        privileges: &privileges,
                        globals: &globals,
                    };
                    Ok(read(r, &schema, &layout, &caller, op, format, now))
                })
                .await
                .map_err(|e| AutomationError::Record(FmError::internal(&e)))?;
            return result.map_err(AutomationError::Record);
        }
        let key = idempotency_key.map(str::to_owned);
        let slot: Arc<Mutex<Option<FmError>>> = Arc::new(Mutex::new(None));
        let failed = Arc::clone(&slot);
        let result = loaded
            .data
            .write(move |w| {
                let globals = HashMap::new();
                let caller = Caller {
                    account: &account,
                    privileges: &privileges,
                    globals: &globals,
                };
                if let Some(k) = &key
                    && let Some(done) = w.read().automation_result(k)?
                {
                    return serde_json::from_str(&done)
                        .map_err(|e| StoreError::Malformed(e.to_string()));
                }
                match write(w, &schema, &layout, &caller, op, format, now) {
                    Ok(v) => {
                        if let Some(k) = &key {
                            let at_ms = i64::try_from(now.unix_timestamp_nanos() / 1_000_000)
                                .unwrap_or(i64::MAX);
                            w.remember_automation(k, &v.to_string(), at_ms)?;
                        }
                        Ok(v)
                    }
                    Err(e) => {
                        *failed.lock() = Some(e);
                        Err(StoreError::Worker("automation write rolled back".into()))
                    }
                }
            })
            .await;
        match result {
            Ok(v) => Ok(v),
            Err(e) => Err(AutomationError::Record(
                slot.lock().take().unwrap_or_else(|| FmError::internal(&e)),
            )),
        }
    }

    /// One record of an app as automation sees it: the fields of `layout`
    /// that `account` (a service account) may read. `None` when the record
    /// is gone or not visible to the account.
    pub async fn automation_record(
        &self,
        target: Target<'_>,
        rid: i64,
    ) -> Result<Option<Value>, AutomationError> {
        match self.automate(target, RecordOp::Get { rid }, None).await {
            Ok(v) => Ok(v.get("record").cloned()),
            Err(AutomationError::Record(e)) if e.code == 101 => Ok(None),
            Err(e) => Err(e),
        }
    }
}

fn no_containers(_: u32, _: i64, _: u32) -> String {
    String::new()
}

fn render() -> Render<'static> {
    static NO_RANGES: std::sync::LazyLock<HashMap<String, (u64, u64)>> =
        std::sync::LazyLock::new(HashMap::new);
    Render {
        format: DateFormat::Iso,
        portals: None,
        portal_ranges: &NO_RANGES,
        container_url: &no_containers,
    }
}

fn read(
    r: &kura_store::app_data::AppRead<'_>,
    schema: &crate::schema::Schema,
    layout: &str,
    caller: &Caller<'_>,
    op: RecordOp,
    format: DateFormat,
    now: time::OffsetDateTime,
) -> Result<Value, FmError> {
    let layout = schema.layout(layout).ok_or_else(|| FmError::code(105))?;
    match op {
        RecordOp::Get { rid } => {
            let (_, _, records) = data::one(r, schema, layout, caller, rid, &render())?;
            Ok(json!({"record": records.first()}))
        }
        RecordOp::Find {
            query,
            sort,
            offset,
            limit,
        } => {
            let filter = if query.as_array().is_some_and(Vec::is_empty) {
                Filter::All
            } else {
                crate::find::query_filter(schema, layout, caller.privileges, &query, format, now)?
            };
            let keys = data::sort_keys(schema, layout, caller, &sort)?;
            match data::page(
                r,
                schema,
                layout,
                caller,
                filter,
                &keys,
                offset,
                limit.min(data::MAX_LIMIT),
                &render(),
            ) {
                Ok((_, found, records)) => Ok(json!({"found": found, "records": records})),
                // No match is an empty result for a flow, not a failure.
                Err(e) if e.code == 401 => Ok(json!({"found": 0, "records": []})),
                Err(e) => Err(e),
            }
        }
        _ => Err(FmError::with(960, "not a read")),
    }
}

fn write(
    w: &AppWrite<'_>,
    schema: &crate::schema::Schema,
    layout: &str,
    caller: &Caller<'_>,
    op: RecordOp,
    format: DateFormat,
    now: time::OffsetDateTime,
) -> Result<Value, FmError> {
    let layout = schema.layout(layout).ok_or_else(|| FmError::code(105))?;
    let none = Map::new();
    match op {
        RecordOp::Create { fields } => {
            let (rid, modid) =
                data::create(w, schema, layout, caller, &fields, &none, format, now)?;
            Ok(json!({"recordId": rid.to_string(), "modId": modid.to_string()}))
        }
        RecordOp::Edit { rid, fields } => {
            let modid = data::edit(
                w, schema, layout, caller, rid, None, &fields, &none, format, now,
            )?;
            Ok(json!({"recordId": rid.to_string(), "modId": modid.to_string()}))
        }
        RecordOp::Delete { rid } => {
            data::delete(w, schema, layout, caller, rid, now)?;
            Ok(json!({"recordId": rid.to_string(), "deleted": true}))
        }
        _ => Err(FmError::with(960, "not a write")),
    }
}
