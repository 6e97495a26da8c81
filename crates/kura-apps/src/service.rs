//! The `Apps` service: hosts and apps (registry and files), schema
//! changes, app accounts, and the Data API's operations on a signed-in
//! session. Authorisation of Kura ID principals (who may manage a team's
//! hosts) is the caller's job, through `kura_identity`'s policy function;
//! this service enforces app privilege sets.

use std::collections::HashMap;
use std::sync::Arc;

use kura_identity::Passwords;
use kura_store::app_data::{AccountRow, AppData, Cell};
use kura_store::{AppDatabases, AppRecord, AppRegistry, AppStatus, HostRecord, StoreError};
use kura_types::{AccountId, AppId, Clock, HostId, TeamId};
use parking_lot::{Mutex, RwLock};
use secrecy::SecretString;
use serde_json::Value;
use time::{Duration, OffsetDateTime};

use crate::error::{AppsError, FmError};
use crate::schema::{Definition, Schema, StoredSchema, check_name, plan};
use crate::sessions::{FmSession, Sessions};

/// An opened app: its registry record, database and current schema.
#[derive(Debug)]
pub struct LoadedApp {
    record: RwLock<AppRecord>,
    /// The record store.
    pub data: AppData,
    schema: RwLock<Arc<Schema>>,
    /// Serialises schema changes of this app.
    apply_lock: tokio::sync::Mutex<()>,
}

impl LoadedApp {
    /// The registry record.
    pub fn record(&self) -> AppRecord {
        self.record.read().clone()
    }

    /// The current schema.
    pub fn schema(&self) -> Arc<Schema> {
        Arc::clone(&self.schema.read())
    }
}

/// What applying a definition did (or, in a dry run, would do).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApplyReport {
    /// The schema version after the change.
    pub version: i64,
    /// The changes, for people.
    pub changes: Vec<String>,
    /// Whether anything was written.
    pub applied: bool,
}

/// An app account as the admin API shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AppAccount {
    /// The name.
    pub name: String,
    /// A Kura ID account mapped to it, if any.
    pub kura_account: Option<AccountId>,
    /// Its privilege set.
    pub privilege_set: String,
    /// Whether it may sign in.
    pub active: bool,
}

/// How an app account signs in to the Data API.
#[derive(Debug)]
pub enum AppCredential {
    /// An app-local account's name and password.
    Password {
        /// Account name.
        name: String,
        /// Password.
        password: SecretString,
    },
    /// A Kura ID account already authenticated by the caller.
    KuraId(AccountId),
}

#[derive(Debug, Default, Clone, Copy)]
struct Failures {
    count: u32,
    locked_until: Option<OffsetDateTime>,
}

/// Failed sign-ins before an account name is locked out for a while.
pub const LOGIN_FAILURES_BEFORE_LOCK: u32 = 5;

/// The hosted apps service.
#[derive(Debug, Clone)]
pub struct Apps {
    registry: AppRegistry,
    databases: AppDatabases,
    passwords: Arc<Passwords>,
    clock: Arc<dyn Clock>,
    loaded: Arc<Mutex<HashMap<AppId, Arc<LoadedApp>>>>,
    names: Arc<Mutex<HashMap<(String, String), AppId>>>,
    /// Data API sessions.
    pub sessions: Sessions,
    failures: Arc<Mutex<HashMap<(AppId, String), Failures>>>,
}

fn store(e: StoreError) -> AppsError {
    match e {
        StoreError::Conflict(what) => AppsError::Conflict(format!("{what} already exists")),
        StoreError::NotFound(what) => AppsError::NotFound(what),
        other => AppsError::Store(other),
    }
}

/// Checks a host name: it is part of URLs, so a DNS label.
fn check_host_name(name: &str) -> Result<(), AppsError> {
    let ok = !name.is_empty()
        && name.len() <= 63
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !name.starts_with('-')
        && !name.ends_with('-');
    if ok {
        Ok(())
    } else {
        Err(AppsError::invalid(
            "name",
            "a host name is 1-63 lower-case letters, digits or inner hyphens",
        ))
    }
}

impl Apps {
    /// The service over the registry, the app files and Kura ID's password
    /// hashing.
    pub fn new(
        registry: AppRegistry,
        databases: AppDatabases,
        passwords: Passwords,
        clock: Arc<dyn Clock>,
    ) -> Self {
        Self {
            registry,
            databases,
            passwords: Arc::new(passwords),
            sessions: Sessions::new(Arc::clone(&clock)),
            clock,
            loaded: Arc::new(Mutex::new(HashMap::new())),
            names: Arc::new(Mutex::new(HashMap::new())),
            failures: Arc::new(Mutex::new(HashMap::new())),
        }
    }

    /// The injected clock's time.
    pub fn now(&self) -> OffsetDateTime {
        self.clock.now()
    }

    // ----- hosts -----

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

    // ----- apps -----

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
        let loaded = Arc::new(LoadedApp {
            record: RwLock::new(record.clone()),
            data,
            schema: RwLock::new(Arc::new(schema)),
            apply_lock: tokio::sync::Mutex::new(()),
        });
        Ok(Arc::clone(
            self.loaded.lock().entry(record.id).or_insert(loaded),
        ))
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

    // ----- schema -----

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
        *loaded.schema.write() = Arc::new(schema);
        Ok(ApplyReport {
            version,
            changes: planned.summary,
            applied: true,
        })
    }

    // ----- app accounts -----

    /// The app's accounts.
    pub async fn accounts(&self, team: TeamId, id: AppId) -> Result<Vec<AppAccount>, AppsError> {
        let app = self.app(team, id).await?;
        let loaded = self.load(&app).await?;
        let rows = loaded.data.read(|r| r.accounts()).await.map_err(store)?;
        Ok(rows.into_iter().map(account_view).collect())
    }

    /// Creates an app-local account (password under Kura ID's policy,
    /// hashed with Argon2id) or maps a Kura ID account of the team.
    pub async fn create_account(
        &self,
        team: TeamId,
        id: AppId,
        name: String,
        credential: NewAccountCredential,
        privilege_set: String,
    ) -> Result<AppAccount, AppsError> {
        check_name("name", &name)?;
        let app = self.app(team, id).await?;
        let loaded = self.load(&app).await?;
        let schema = loaded.schema();
        let set = schema
            .privilege_set(&privilege_set)
            .ok_or_else(|| {
                AppsError::invalid(
                    "privilege_set",
                    format!("there is no privilege set `{privilege_set}`"),
                )
            })?
            .name
            .clone();
        let (kind, hash, kura) = match credential {
            NewAccountCredential::Password(password) => {
                kura_identity::check_password_policy(&password)
                    .map_err(|e| AppsError::invalid("password", e.to_string()))?;
                let passwords = Arc::clone(&self.passwords);
                let hash = tokio::task::spawn_blocking(move || passwords.hash(&password))
                    .await
                    .map_err(|e| AppsError::Store(StoreError::Worker(e.to_string())))?
                    .map_err(|e| AppsError::Store(StoreError::Worker(e.to_string())))?;
                ("local", Some(hash), None)
            }
            NewAccountCredential::KuraId(account) => ("kura_id", None, Some(account.to_string())),
        };
        let row = AccountRow {
            name: name.clone(),
            kind: kind.into(),
            password_hash: hash,
            kura_account: kura,
            privilege_set: set,
            active: true,
            created_at: self.clock.now().unix_timestamp(),
        };
        let inserted = row.clone();
        let created = loaded
            .data
            .write(move |w| w.insert_account(&inserted))
            .await
            .map_err(store)?;
        if !created {
            return Err(AppsError::Conflict(format!(
                "an app account named `{name}` (or one for that Kura ID account) already exists"
            )));
        }
        Ok(account_view(row))
    }

    /// Changes an account's privilege set or whether it may sign in; its
    /// open sessions end.
    pub async fn update_account(
        &self,
        team: TeamId,
        id: AppId,
        name: &str,
        privilege_set: Option<String>,
        active: Option<bool>,
    ) -> Result<AppAccount, AppsError> {
        let app = self.app(team, id).await?;
        let loaded = self.load(&app).await?;
        let schema = loaded.schema();
        let owned = name.to_owned();
        let current = loaded
            .data
            .read(move |r| r.account(&owned))
            .await
            .map_err(store)?
            .ok_or_else(|| AppsError::NotFound(format!("app account `{name}`")))?;
        let set = match privilege_set {
            Some(p) => schema
                .privilege_set(&p)
                .ok_or_else(|| {
                    AppsError::invalid("privilege_set", format!("there is no privilege set `{p}`"))
                })?
                .name
                .clone(),
            None => current.privilege_set.clone(),
        };
        let active = active.unwrap_or(current.active);
        let (n, s) = (current.name.clone(), set.clone());
        loaded
            .data
            .write(move |w| w.set_account_access(&n, &s, active))
            .await
            .map_err(store)?;
        self.sessions.close_all(id, Some(&current.name));
        Ok(AppAccount {
            privilege_set: set,
            active,
            ..account_view(current)
        })
    }

    /// Deletes an account; its open sessions end.
    pub async fn delete_account(
        &self,
        team: TeamId,
        id: AppId,
        name: &str,
    ) -> Result<(), AppsError> {
        let app = self.app(team, id).await?;
        let loaded = self.load(&app).await?;
        let owned = name.to_owned();
        if !loaded
            .data
            .write(move |w| w.delete_account(&owned))
            .await
            .map_err(store)?
        {
            return Err(AppsError::NotFound(format!("app account `{name}`")));
        }
        self.sessions.close_all(id, Some(name));
        Ok(())
    }

    // ----- Data API -----

    /// The open app a Data API URL names (`/hosts/{host}/…/databases/{db}`).
    pub async fn resolve(&self, host: &str, database: &str) -> Result<Arc<LoadedApp>, FmError> {
        // Every Data API request names its app; once resolved, the
        // (host, database) → app mapping is served from memory until a
        // rename or deletion clears it.
        let key = (host.to_lowercase(), database.to_lowercase());
        let cached = self.names.lock().get(&key).copied();
        let loaded = match cached.and_then(|id| self.loaded.lock().get(&id).cloned()) {
            Some(l) => l,
            None => {
                let host = self
                    .registry
                    .host_by_name(host)
                    .await
                    .map_err(|e| FmError::internal(&e))?
                    .ok_or_else(|| FmError::code(802))?;
                let app = self
                    .registry
                    .app_by_name(host.id, database)
                    .await
                    .map_err(|e| FmError::internal(&e))?
                    .ok_or_else(|| FmError::code(802))?;
                let loaded = self.load(&app).await.map_err(|e| match e {
                    AppsError::Store(s) => FmError::internal(&s),
                    _ => FmError::code(802),
                })?;
                self.names.lock().insert(key, app.id);
                loaded
            }
        };
        if loaded.record().status != AppStatus::Open {
            return Err(FmError::code(802));
        }
        Ok(loaded)
    }

    /// Forgets resolved names (after a host or app is renamed or deleted).
    fn forget_names(&self) {
        self.names.lock().clear();
    }

    /// Resolves the app by id (container URLs), if open.
    pub async fn resolve_id(&self, id: AppId) -> Result<Arc<LoadedApp>, FmError> {
        let app = self
            .registry
            .app(id)
            .await
            .map_err(|e| FmError::internal(&e))?
            .ok_or_else(|| FmError::code(802))?;
        let loaded = self.load(&app).await.map_err(|_| FmError::code(802))?;
        if loaded.record().status != AppStatus::Open {
            return Err(FmError::code(802));
        }
        Ok(loaded)
    }

    /// Signs an app account in and opens a session. Wrong names and wrong
    /// passwords look the same (212) and cost the same; after
    /// [`LOGIN_FAILURES_BEFORE_LOCK`] failures a name is locked out for a
    /// growing time.
    pub async fn login(
        &self,
        app: &LoadedApp,
        credential: AppCredential,
    ) -> Result<(String, FmSession), LoginFailure> {
        let id = app.record().id;
        let now = self.clock.now();
        let (row, throttle_key) = match &credential {
            AppCredential::Password { name, .. } => {
                let key = (id, name.to_lowercase());
                if let Some(f) = self.failures.lock().get(&key)
                    && f.locked_until.is_some_and(|u| u > now)
                {
                    return Err(LoginFailure::Locked);
                }
                let owned = name.clone();
                let row = app
                    .data
                    .read(move |r| r.account(&owned))
                    .await
                    .map_err(|e| LoginFailure::Error(FmError::internal(&e)))?;
                (row, Some(key))
            }
            AppCredential::KuraId(account) => {
                let owned = account.to_string();
                let row = app
                    .data
                    .read(move |r| r.account_for_kura_id(&owned))
                    .await
                    .map_err(|e| LoginFailure::Error(FmError::internal(&e)))?;
                (row, None)
            }
        };
        let verified = match (&credential, &row) {
            (AppCredential::Password { password, .. }, Some(r)) if r.kind == "local" => {
                let (passwords, password, hash) = (
                    Arc::clone(&self.passwords),
                    password.clone(),
                    r.password_hash.clone().unwrap_or_default(),
                );
                tokio::task::spawn_blocking(move || passwords.verify(&password, &hash))
                    .await
                    .unwrap_or(false)
            }
            (AppCredential::Password { password, .. }, _) => {
                let (passwords, password) = (Arc::clone(&self.passwords), password.clone());
                let _ =
                    tokio::task::spawn_blocking(move || passwords.verify_dummy(&password)).await;
                false
            }
            (AppCredential::KuraId(_), Some(r)) => r.kind == "kura_id",
            (AppCredential::KuraId(_), None) => false,
        };
        let row = match (verified, row) {
            (true, Some(row)) if row.active => row,
            _ => {
                if let Some(key) = throttle_key {
                    let mut failures = self.failures.lock();
                    let f = failures.entry(key).or_default();
                    f.count += 1;
                    if f.count >= LOGIN_FAILURES_BEFORE_LOCK {
                        let exp = (f.count - LOGIN_FAILURES_BEFORE_LOCK).min(10);
                        f.locked_until = Some(
                            now + Duration::seconds(30 * (1i64 << exp)).min(Duration::minutes(15)),
                        );
                    }
                }
                return Err(LoginFailure::BadCredentials);
            }
        };
        if let Some(key) = throttle_key {
            self.failures.lock().remove(&key);
        }
        let schema = app.schema();
        let set = schema
            .privilege_set(&row.privilege_set)
            .ok_or(LoginFailure::NoPrivilege)?;
        if !set.allows_data_api() {
            return Err(LoginFailure::NoPrivilege);
        }
        // Raise the hash cost on sign-in when the policy has been raised.
        if let (AppCredential::Password { password, .. }, Some(hash)) =
            (&credential, &row.password_hash)
            && self.passwords.needs_rehash(hash)
        {
            let (passwords, password, name) = (
                Arc::clone(&self.passwords),
                password.clone(),
                row.name.clone(),
            );
            if let Ok(Ok(new)) =
                tokio::task::spawn_blocking(move || passwords.hash(&password)).await
            {
                let _ = app
                    .data
                    .write(move |w| w.set_account_password(&name, &new))
                    .await;
            }
        }
        let token = self
            .sessions
            .open(id, row.name.clone(), set.name.clone())
            .map_err(LoginFailure::Error)?;
        let session = self
            .sessions
            .touch(token.reveal(), id)
            .map_err(LoginFailure::Error)?;
        Ok((token.reveal().to_owned(), session))
    }

    /// Names of the open apps on a host (`802` for an unknown host).
    pub async fn open_app_names(&self, host: &str) -> Result<Vec<String>, FmError> {
        let host = self
            .registry
            .host_by_name(host)
            .await
            .map_err(|e| FmError::internal(&e))?
            .ok_or_else(|| FmError::code(802))?;
        Ok(self
            .registry
            .apps(host.id)
            .await
            .map_err(|e| FmError::internal(&e))?
            .into_iter()
            .filter(|a| a.status == AppStatus::Open)
            .map(|a| a.name)
            .collect())
    }

    /// Whether an app-local account of the app accepts the password (for
    /// the database listing; failures count towards lockout like sign-ins).
    pub async fn check_credentials(
        &self,
        host: &str,
        database: &str,
        name: &str,
        password: &SecretString,
    ) -> bool {
        let Ok(app) = self.resolve(host, database).await else {
            return false;
        };
        match self
            .login(
                &app,
                AppCredential::Password {
                    name: name.to_owned(),
                    password: password.clone(),
                },
            )
            .await
        {
            Ok((token, _)) => {
                self.sessions.close(&token, app.record().id);
                true
            }
            Err(_) => false,
        }
    }
}

/// Why a Data API sign-in failed.
#[derive(Debug)]
pub enum LoginFailure {
    /// Unknown account, wrong password, inactive account.
    BadCredentials,
    /// Too many failures for this name; try later.
    Locked,
    /// The account's privilege set lacks `fmrest`.
    NoPrivilege,
    /// Anything else.
    Error(FmError),
}

impl LoginFailure {
    /// The FileMaker error clients see (a locked name looks like bad
    /// credentials, so lockouts reveal nothing about accounts).
    pub fn fm_error(&self) -> FmError {
        match self {
            LoginFailure::BadCredentials | LoginFailure::Locked => FmError::code(212),
            LoginFailure::NoPrivilege => FmError::code(9),
            LoginFailure::Error(e) => e.clone(),
        }
    }
}

/// The credential of a new app account.
#[derive(Debug)]
pub enum NewAccountCredential {
    /// An app-local password.
    Password(SecretString),
    /// A Kura ID account of the team.
    KuraId(AccountId),
}

fn account_view(row: AccountRow) -> AppAccount {
    AppAccount {
        name: row.name,
        kura_account: row.kura_account.and_then(|a| a.parse().ok()),
        privilege_set: row.privilege_set,
        active: row.active,
    }
}

/// Global values for a session: `Table::field` → value.
pub fn global_values(
    schema: &Schema,
    globals: &serde_json::Map<String, Value>,
    format: crate::value::DateFormat,
) -> Result<Vec<(u32, Cell)>, FmError> {
    let mut out = Vec::new();
    for (name, value) in globals {
        let (t, f) = name.split_once("::").ok_or_else(|| {
            FmError::with(
                102,
                format!("Field is missing (`{name}`: use Table::field)"),
            )
        })?;
        let table = schema
            .table(t)
            .ok_or_else(|| FmError::with(102, format!("Field is missing (`{name}`)")))?;
        let field = table
            .field(f)
            .map(|i| &table.fields[i])
            .filter(|f| f.def.global)
            .ok_or_else(|| {
                FmError::with(
                    102,
                    format!("Field is missing (`{name}` is not a global field)"),
                )
            })?;
        let cell = crate::value::parse_json(field.def.kind, field.name(), value, format)?;
        crate::data::validate(field, &cell)?;
        out.push((field.id, cell));
    }
    Ok(out)
}
