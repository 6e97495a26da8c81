//! The Data API's side of the service: apps by name, sign-in with
//! lockout, global values.

use std::sync::Arc;

use kura_store::AppStatus;
use kura_store::app_data::Cell;
use kura_types::AppId;
use secrecy::SecretString;
use serde_json::Value;
use time::Duration;

use super::Apps;
use super::{AppCredential, LOGIN_FAILURES_BEFORE_LOCK, LoadedApp};
use crate::error::{AppsError, FmError};
use crate::schema::Schema;
use crate::sessions::FmSession;

impl Apps {
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
    pub(super) fn forget_names(&self) {
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
                kura_identity::run_hashing(move || passwords.verify(&password, &hash))
                    .await
                    .unwrap_or(false)
            }
            (AppCredential::Password { password, .. }, _) => {
                let (passwords, password) = (Arc::clone(&self.passwords), password.clone());
                let _ = kura_identity::run_hashing(move || passwords.verify_dummy(&password)).await;
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
            if let Ok(Ok(new)) = kura_identity::run_hashing(move || passwords.hash(&password)).await
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
