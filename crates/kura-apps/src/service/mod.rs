//! The `Apps` service: hosts and apps (registry and files), schema
//! changes, app accounts, and the Data API's operations on a signed-in
//! session. Authorisation of Kura ID principals (who may manage a team's
//! hosts) is the caller's job, through `kura_identity`'s policy function;
//! this service enforces app privilege sets.
//!
//! - [`hosts`]: hosts, apps and their schema;
//! - [`accounts`]: app accounts;
//! - [`data_api`]: resolving apps by name, sign-in, Data API helpers;
//! - [`records`]: CSV import and the change outbox;
//! - [`automation`]: record operations of Kura Connect steps, as service
//!   accounts.

mod accounts;
mod automation;
mod data_api;
mod hosts;
mod records;

use std::collections::HashMap;
use std::sync::Arc;

use kura_identity::Passwords;
use kura_store::app_data::AppData;
use kura_store::{AppDatabases, AppRecord, AppRegistry, StoreError};
use kura_types::{AccountId, AppId, Clock};
use parking_lot::{Mutex, RwLock};
use secrecy::SecretString;
use time::OffsetDateTime;

use crate::error::AppsError;

use crate::schema::Schema;
use crate::sessions::Sessions;
pub use accounts::NewAccountCredential;
pub use automation::{AutomationError, RecordOp, SERVICE_KIND, Target};
pub use data_api::{LoginFailure, global_values};

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
    /// `local` (password), `kura_id` (mapped) or `service` (no sign-in;
    /// Kura Connect flows act as it).
    pub kind: String,
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
}
