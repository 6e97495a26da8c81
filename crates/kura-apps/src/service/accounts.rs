//! App accounts: app-local passwords and mapped Kura ID accounts.

use std::sync::Arc;

use kura_store::StoreError;
use kura_store::app_data::AccountRow;
use kura_types::{AccountId, AppId, TeamId};
use secrecy::SecretString;

use super::AppAccount;
use super::{Apps, store};
use crate::error::AppsError;
use crate::schema::check_name;

impl Apps {
    /// The app's accounts.
    pub async fn accounts(&self, team: TeamId, id: AppId) -> Result<Vec<AppAccount>, AppsError> {
        let app = self.app(team, id).await?;
        let loaded = self.load(&app).await?;
        let rows = loaded.data.read(|r| r.accounts()).await.map_err(store)?;
        Ok(rows.into_iter().map(account_view).collect())
    }

    /// Creates an app-local account (password under Kura ID's policy,
    /// hashed with Argon2id), maps a Kura ID account of the team, or
    /// creates a service account for Kura Connect flows.
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
                let hash = kura_identity::run_hashing(move || passwords.hash(&password))
                    .await
                    .map_err(|e| AppsError::Store(StoreError::Worker(e.to_string())))?
                    .map_err(|e| AppsError::Store(StoreError::Worker(e.to_string())))?;
                ("local", Some(hash), None)
            }
            NewAccountCredential::KuraId(account) => ("kura_id", None, Some(account.to_string())),
            NewAccountCredential::Service => (super::SERVICE_KIND, None, None),
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
}

/// The credential of a new app account.
#[derive(Debug)]
pub enum NewAccountCredential {
    /// An app-local password.
    Password(SecretString),
    /// A Kura ID account of the team.
    KuraId(AccountId),
    /// A service account: it cannot sign in anywhere; the team's Kura
    /// Connect flows act as it, under its privilege set.
    Service,
}

fn account_view(row: AccountRow) -> AppAccount {
    AppAccount {
        name: row.name,
        kura_account: row.kura_account.and_then(|a| a.parse().ok()),
        kind: row.kind,
        privilege_set: row.privilege_set,
        active: row.active,
    }
}
