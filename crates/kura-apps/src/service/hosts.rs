//! Hosts, apps (registry entry and file) and schema changes.

use std::sync::Arc;

use kura_store::app_data::AppData;
use kura_store::{AppRecord, AppStatus, HostRecord, StoreError};
use kura_types::{AppId, HostId, TeamId};
use parking_lot::RwLock;
use serde_json::Value;

use super::{ApplyReport, LoadedApp, check_host_name};
use super::{Apps, store};
use crate::error::AppsError;
use crate::schema::{Definition, Schema, StoredSchema, check_name, plan};

impl Apps {
    /// Creates a host for a team.
    pub async fn create_host(
        &self,
        team: TeamId,
        name: String,
        settings: Value,
    ) -> Result<HostRecord, AppsError> {
        check_host_name(&name)?;
        if !settings.is_object() {
            return Err(AppsError::invalid("settings", "settings are a JSON object"));
        }
        let host = HostRecord {
            id: HostId::new(),
            team,
            name,
            settings: settings.to_string(),
            created_at: self.clock.now(),
        };
        self.registry
            .create_host(host.clone())
            .await
            .map_err(store)?;
        Ok(host)
    }

    /// A team's hosts.
    pub async fn hosts(&self, team: TeamId) -> Result<Vec<HostRecord>, AppsError> {
        self.registry.hosts(team).await.map_err(store)
    }

    /// A host of a team (another team's host is "not found").
    pub async fn host(&self, team: TeamId, id: HostId) -> Result<HostRecord, AppsError> {
        match self.registry.host(id).await.map_err(store)? {
            Some(h) if h.team == team => Ok(h),
            _ => Err(AppsError::NotFound(format!("host {id}"))),
        }
    }

    /// Renames a host and/or replaces its settings.
    pub async fn update_host(
        &self,
        team: TeamId,
        id: HostId,
        name: Option<String>,
        settings: Option<Value>,
    ) -> Result<HostRecord, AppsError> {
        let mut host = self.host(team, id).await?;
        if let Some(name) = name {
            check_host_name(&name)?;
            host.name = name;
        }
        if let Some(settings) = settings {
            if !settings.is_object() {
                return Err(AppsError::invalid("settings", "settings are a JSON object"));
            }
            host.settings = settings.to_string();
        }
        self.registry
            .update_host(id, host.name.clone(), host.settings.clone())
            .await
            .map_err(store)?;
        self.forget_names();
        Ok(host)
    }

    /// Deletes a host without apps.
    pub async fn delete_host(&self, team: TeamId, id: HostId) -> Result<(), AppsError> {
        self.host(team, id).await?;
        self.registry.delete_host(id).await.map_err(|e| match e {
            StoreError::Conflict(what) => AppsError::Conflict(what),
            other => store(other),
        })
    }

    /// Creates an app on a team's host: a new database file under a new
    /// data key, then its registry entry (the file is destroyed again if
    /// the entry cannot be written, so nothing is left half-made).
    pub async fn create_app(
        &self,
        team: TeamId,
        host: HostId,
        name: String,
    ) -> Result<AppRecord, AppsError> {
        check_name("name", &name)?;
        if name.contains('/') {
            return Err(AppsError::invalid(
                "name",
                "an app name must not contain `/`",
            ));
        }
        self.host(team, host).await?;
        if self
            .registry
            .app_by_name(host, &name)
            .await
            .map_err(store)?
            .is_some()
        {
            return Err(AppsError::Conflict(format!(
                "an app named `{name}` on this host already exists"
            )));
        }
        let record = AppRecord {
            id: AppId::new(),
            host,
            team,
            name,
            status: AppStatus::Open,
            created_at: self.clock.now(),
        };
        self.databases.create(record.id).await.map_err(store)?;
        if let Err(e) = self.registry.create_app(record.clone()).await {
            self.loaded.lock().remove(&record.id);
            let _ = self.databases.destroy(record.id).await;
            return Err(store(e));
        }
        Ok(record)
    }

    /// The apps on a team's host.
    pub async fn apps(&self, team: TeamId, host: HostId) -> Result<Vec<AppRecord>, AppsError> {
        self.host(team, host).await?;
        self.registry.apps(host).await.map_err(store)
    }

    /// An app of a team.
    pub async fn app(&self, team: TeamId, id: AppId) -> Result<AppRecord, AppsError> {
        match self.registry.app(id).await.map_err(store)? {
            Some(a) if a.team == team => Ok(a),
            _ => Err(AppsError::NotFound(format!("app {id}"))),
        }
    }

    /// Loads an app's database and schema (cached).
    pub async fn load(&self, record: &AppRecord) -> Result<Arc<LoadedApp>, AppsError> {
        if let Some(l) = self.loaded.lock().get(&record.id) {
            return Ok(Arc::clone(l));
        }
        let pool = self.databases.open(record.id).await.map_err(store)?;
        let data = AppData::new(pool);
        let schema = match data.schema().await.map_err(store)? {
            None => Schema::empty(),
            Some((version, doc)) => {
                let stored: StoredSchema = serde_json::from_str(&doc).map_err(|e| {
                    AppsError::Store(StoreError::Malformed(format!(
                        "app {} schema: {e}",
                        record.id
                    )))
                })?;
                Schema::build(version, stored)?
            }
        };
        data.index_on_first_use(schema.indexed_on_first_use(), schema.composite_indexes());
        let loaded = Arc::new(LoadedApp {
            record: RwLock::new(record.clone()),
            data,
            schema: RwLock::new(Arc::new(schema)),
            apply_lock: tokio::sync::Mutex::new(()),
        });
        let loaded = Arc::clone(self.loaded.lock().entry(record.id).or_insert(loaded));
        // An app from before query statistics were kept gets them now, in
        // the background: its first request need not wait for them.
        let data = loaded.data.clone();
        let id = record.id;
        tokio::spawn(async move {
            if let Err(e) = data.ensure_statistics().await {
                tracing::warn!(error = %e, app = %id, "analysing an app's records failed");
            }
        });
        Ok(loaded)
    }

    fn refresh_record(&self, record: &AppRecord) {
        if let Some(l) = self.loaded.lock().get(&record.id) {
            *l.record.write() = record.clone();
        }
    }

    /// Renames an app.
    pub async fn rename_app(
        &self,
        team: TeamId,
        id: AppId,
        name: String,
    ) -> Result<AppRecord, AppsError> {
        check_name("name", &name)?;
        if name.contains('/') {
            return Err(AppsError::invalid(
                "name",
                "an app name must not contain `/`",
            ));
        }
        let mut app = self.app(team, id).await?;
        self.registry
            .rename_app(id, name.clone())
            .await
            .map_err(store)?;
        app.name = name;
        self.refresh_record(&app);
        self.forget_names();
        Ok(app)
    }

    /// Closes (refusing connections; open sessions end) or reopens an app.
    pub async fn set_status(
        &self,
        team: TeamId,
        id: AppId,
        status: AppStatus,
    ) -> Result<AppRecord, AppsError> {
        let mut app = self.app(team, id).await?;
        self.registry
            .set_app_status(id, status)
            .await
            .map_err(store)?;
        app.status = status;
        self.refresh_record(&app);
        if status == AppStatus::Closed {
            self.sessions.close_all(id, None);
        }
        Ok(app)
    }

    /// Deletes an app: its sessions end, its data key is destroyed (which
    /// makes the file and every backup of it unreadable) and it leaves the
    /// registry.
    pub async fn delete_app(&self, team: TeamId, id: AppId) -> Result<(), AppsError> {
        self.app(team, id).await?;
        self.sessions.close_all(id, None);
        self.loaded.lock().remove(&id);
        self.forget_names();
        self.registry.delete_app(id).await.map_err(store)?;
        self.databases.destroy(id).await.map_err(store)?;
        Ok(())
    }

    /// The app's definition and schema version.
    pub async fn definition(
        &self,
        team: TeamId,
        id: AppId,
    ) -> Result<(i64, Definition), AppsError> {
        let app = self.app(team, id).await?;
        let schema = self.load(&app).await?.schema();
        Ok((schema.version, schema.stored.definition.clone()))
    }

    /// Applies a definition: creates or migrates the app's schema. A change
    /// that would discard values (a dropped field or table holding data, a
    /// type change) is refused unless `allow_data_loss`; `dry_run` only
    /// reports. Applying the same definition twice changes nothing.
    pub async fn apply(
        &self,
        team: TeamId,
        id: AppId,
        definition: Definition,
        allow_data_loss: bool,
        dry_run: bool,
    ) -> Result<ApplyReport, AppsError> {
        let app = self.app(team, id).await?;
        let loaded = self.load(&app).await?;
        let _guard = loaded.apply_lock.lock().await;
        let current = loaded.schema();
        if current.stored.definition == definition {
            return Ok(ApplyReport {
                version: current.version,
                changes: Vec::new(),
                applied: false,
            });
        }
        let planned = plan(&current.stored, definition)?;
        let mut losses = Vec::new();
        for (table, col, name) in &planned.drops {
            let n = loaded.data.values_in(*table, *col).await.map_err(store)?;
            if n > 0 {
                losses.push(format!("field `{name}` holds values in {n} record(s)"));
            }
        }
        for (table, name) in &planned.dropped_tables {
            let n = loaded.data.count(*table).await.map_err(store)?;
            if n > 0 {
                losses.push(format!("table `{name}` holds {n} record(s)"));
            }
        }
        if !losses.is_empty() && !allow_data_loss {
            return Err(AppsError::DataLoss(format!(
                "the change would discard data: {}; apply with allow_data_loss to proceed",
                losses.join("; ")
            )));
        }
        if dry_run {
            return Ok(ApplyReport {
                version: current.version,
                changes: planned.summary,
                applied: false,
            });
        }
        let document = serde_json::to_string(&planned.next)
            .map_err(|e| AppsError::Store(StoreError::Malformed(e.to_string())))?;
        let version = loaded
            .data
            .apply_schema(current.version, document, planned.ddl)
            .await
            .map_err(|e| match e {
                StoreError::Conflict(what) => AppsError::Conflict(format!(
                    "{what}; another change landed first or the values conflict"
                )),
                other => AppsError::Store(other),
            })?;
        let schema = Schema::build(version, planned.next)?;
        loaded
            .data
            .index_on_first_use(schema.indexed_on_first_use(), schema.composite_indexes());
        *loaded.schema.write() = Arc::new(schema);
        Ok(ApplyReport {
            version,
            changes: planned.summary,
            applied: true,
        })
    }
}
