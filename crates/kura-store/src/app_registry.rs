//! The registry of hosts and apps in the platform database.
//!
//! A host is a team's named place for apps (its name is unique across the
//! platform, since it is part of the Data API's URL); an app is one
//! encrypted database file on a host, unique by name on that host.

use rusqlite::{OptionalExtension as _, params};
use time::OffsetDateTime;

use kura_types::{AppId, HostId, TeamId};

use crate::StoreError;
use crate::app_data::is_constraint;
use crate::sqlite::Pool;

/// A host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostRecord {
    /// Its id.
    pub id: HostId,
    /// The owning team.
    pub team: TeamId,
    /// Its name, unique across the platform.
    pub name: String,
    /// Settings as a JSON object.
    pub settings: String,
    /// When it was created.
    pub created_at: OffsetDateTime,
}

/// Whether an app accepts connections.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AppStatus {
    /// Accepting connections.
    Open,
    /// Refusing connections (like closing a file on a FileMaker server).
    Closed,
}

impl AppStatus {
    fn as_str(self) -> &'static str {
        match self {
            AppStatus::Open => "open",
            AppStatus::Closed => "closed",
        }
    }
}

/// An app.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AppRecord {
    /// Its id (and the name of its database file).
    pub id: AppId,
    /// The host it is on.
    pub host: HostId,
    /// The owning team (the host's team).
    pub team: TeamId,
    /// Its name, unique on its host; the Data API's database name.
    pub name: String,
    /// Open or closed.
    pub status: AppStatus,
    /// When it was created.
    pub created_at: OffsetDateTime,
}

/// Hosts and apps, kept in the platform database.
#[derive(Debug, Clone)]
pub struct AppRegistry {
    pool: Pool,
}

const HOST_COLUMNS: &str = "id, team_id, name, settings, created_at";
const APP_COLUMNS: &str = "id, host_id, team_id, name, status, created_at";

impl AppRegistry {
    /// The registry over the platform database's pool.
    pub fn new(pool: Pool) -> Self {
        Self { pool }
    }

    /// Adds a host; `Conflict` when the name is taken.
    pub async fn create_host(&self, host: HostRecord) -> Result<(), StoreError> {
        self.pool
            .write(move |tx| {
                tx.execute(
                    "INSERT INTO hosts(id, team_id, name, settings, created_at) VALUES (?1, ?2, ?3, ?4, ?5)",
                    params![
                        host.id.to_string(),
                        host.team.to_string(),
                        host.name,
                        host.settings,
                        host.created_at.unix_timestamp()
                    ],
                )
                .map_err(|e| unique_or(e, format!("a host named `{}`", host.name)))?;
                Ok(())
            })
            .await
    }

    /// The hosts of a team, by name.
    pub async fn hosts(&self, team: TeamId) -> Result<Vec<HostRecord>, StoreError> {
        self.pool
            .read(move |conn| {
                let mut stmt = conn.prepare_cached(&format!(
                    "SELECT {HOST_COLUMNS} FROM hosts WHERE team_id = ?1 ORDER BY name"
                ))?;
                let rows = stmt.query_map([team.to_string()], raw_host)?;
                rows.map(|r| r.map_err(StoreError::from).and_then(decode_host))
                    .collect()
            })
            .await
    }

    /// One host by id.
    pub async fn host(&self, id: HostId) -> Result<Option<HostRecord>, StoreError> {
        self.host_where("id = ?1", id.to_string()).await
    }

    /// One host by name (case-insensitive).
    pub async fn host_by_name(&self, name: &str) -> Result<Option<HostRecord>, StoreError> {
        self.host_where("name = ?1", name.to_owned()).await
    }

    async fn host_where(
        &self,
        clause: &'static str,
        value: String,
    ) -> Result<Option<HostRecord>, StoreError> {
        self.pool
            .read(move |conn| {
                conn.prepare_cached(&format!("SELECT {HOST_COLUMNS} FROM hosts WHERE {clause}"))?
                    .query_row([value], raw_host)
                    .optional()?
                    .map(decode_host)
                    .transpose()
            })
            .await
    }

    /// Renames a host and replaces its settings.
    pub async fn update_host(
        &self,
        id: HostId,
        name: String,
        settings: String,
    ) -> Result<(), StoreError> {
        self.pool
            .write(move |tx| {
                let n = tx
                    .execute(
                        "UPDATE hosts SET name = ?2, settings = ?3 WHERE id = ?1",
                        params![id.to_string(), name, settings],
                    )
                    .map_err(|e| unique_or(e, format!("a host named `{name}`")))?;
                if n == 0 {
                    return Err(StoreError::NotFound(format!("host {id}")));
                }
                Ok(())
            })
            .await
    }

    /// Deletes a host that has no apps left.
    pub async fn delete_host(&self, id: HostId) -> Result<(), StoreError> {
        self.pool
            .write(move |tx| {
                let apps: i64 = tx.query_row(
                    "SELECT count(*) FROM apps WHERE host_id = ?1",
                    [id.to_string()],
                    |r| r.get(0),
                )?;
                if apps > 0 {
                    return Err(StoreError::Conflict(format!(
                        "{apps} app(s) on host {id}; delete them first"
                    )));
                }
                if tx.execute("DELETE FROM hosts WHERE id = ?1", [id.to_string()])? == 0 {
                    return Err(StoreError::NotFound(format!("host {id}")));
                }
                Ok(())
            })
            .await
    }

    /// Adds an app; `Conflict` when its host already has one by that name.
    pub async fn create_app(&self, app: AppRecord) -> Result<(), StoreError> {
        self.pool
            .write(move |tx| {
                tx.execute(
                    "INSERT INTO apps(id, host_id, team_id, name, status, created_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                    params![
                        app.id.to_string(),
                        app.host.to_string(),
                        app.team.to_string(),
                        app.name,
                        app.status.as_str(),
                        app.created_at.unix_timestamp()
                    ],
                )
                .map_err(|e| unique_or(e, format!("an app named `{}` on this host", app.name)))?;
                Ok(())
            })
            .await
    }

    /// The apps on a host, by name.
    pub async fn apps(&self, host: HostId) -> Result<Vec<AppRecord>, StoreError> {
        self.pool
            .read(move |conn| {
                let mut stmt = conn.prepare_cached(&format!(
                    "SELECT {APP_COLUMNS} FROM apps WHERE host_id = ?1 ORDER BY name"
                ))?;
                let rows = stmt.query_map([host.to_string()], raw_app)?;
                rows.map(|r| r.map_err(StoreError::from).and_then(decode_app))
                    .collect()
            })
            .await
    }

    /// One app by id.
    pub async fn app(&self, id: AppId) -> Result<Option<AppRecord>, StoreError> {
        self.pool
            .read(move |conn| {
                conn.prepare_cached(&format!("SELECT {APP_COLUMNS} FROM apps WHERE id = ?1"))?
                    .query_row([id.to_string()], raw_app)
                    .optional()?
                    .map(decode_app)
                    .transpose()
            })
            .await
    }

    /// One app by host and name (case-insensitive).
    pub async fn app_by_name(
        &self,
        host: HostId,
        name: &str,
    ) -> Result<Option<AppRecord>, StoreError> {
        let name = name.to_owned();
        self.pool
            .read(move |conn| {
                conn.prepare_cached(&format!(
                    "SELECT {APP_COLUMNS} FROM apps WHERE host_id = ?1 AND name = ?2"
                ))?
                .query_row(params![host.to_string(), name], raw_app)
                .optional()?
                .map(decode_app)
                .transpose()
            })
            .await
    }

    /// Renames an app.
    pub async fn rename_app(&self, id: AppId, name: String) -> Result<(), StoreError> {
        self.pool
            .write(move |tx| {
                let n = tx
                    .execute(
                        "UPDATE apps SET name = ?2 WHERE id = ?1",
                        params![id.to_string(), name],
                    )
                    .map_err(|e| unique_or(e, format!("an app named `{name}` on this host")))?;
                if n == 0 {
                    return Err(StoreError::NotFound(format!("app {id}")));
                }
                Ok(())
            })
            .await
    }

    /// Opens or closes an app.
    pub async fn set_app_status(&self, id: AppId, status: AppStatus) -> Result<(), StoreError> {
        self.pool
            .write(move |tx| {
                if tx.execute(
                    "UPDATE apps SET status = ?2 WHERE id = ?1",
                    params![id.to_string(), status.as_str()],
                )? == 0
                {
                    return Err(StoreError::NotFound(format!("app {id}")));
                }
                Ok(())
            })
            .await
    }

    /// Removes an app from the registry (its file and key are destroyed by
    /// [`crate::AppDatabases::destroy`]).
    pub async fn delete_app(&self, id: AppId) -> Result<(), StoreError> {
        self.pool
            .write(move |tx| {
                if tx.execute("DELETE FROM apps WHERE id = ?1", [id.to_string()])? == 0 {
                    return Err(StoreError::NotFound(format!("app {id}")));
                }
                Ok(())
            })
            .await
    }
}

fn unique_or(e: rusqlite::Error, what: String) -> StoreError {
    if is_constraint(&e) {
        StoreError::Conflict(what)
    } else {
        e.into()
    }
}

type RawHost = (String, String, String, String, i64);

fn raw_host(r: &rusqlite::Row<'_>) -> rusqlite::Result<RawHost> {
    Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?))
}

fn decode_host((id, team, name, settings, created): RawHost) -> Result<HostRecord, StoreError> {
    let bad = |what: &str| StoreError::Malformed(format!("host {id}: {what}"));
    Ok(HostRecord {
        id: id.parse().map_err(|_| bad("id"))?,
        team: team.parse().map_err(|_| bad("team"))?,
        name,
        settings,
        created_at: OffsetDateTime::from_unix_timestamp(created).map_err(|_| bad("time"))?,
    })
}

type RawApp = (String, String, String, String, String, i64);

fn raw_app(r: &rusqlite::Row<'_>) -> rusqlite::Result<RawApp> {
    Ok((
        r.get(0)?,
        r.get(1)?,
        r.get(2)?,
        r.get(3)?,
        r.get(4)?,
        r.get(5)?,
    ))
}

fn decode_app((id, host, team, name, status, created): RawApp) -> Result<AppRecord, StoreError> {
    let bad = |what: &str| StoreError::Malformed(format!("app {id}: {what}"));
    Ok(AppRecord {
        id: id.parse().map_err(|_| bad("id"))?,
        host: host.parse().map_err(|_| bad("host"))?,
        team: team.parse().map_err(|_| bad("team"))?,
        name,
        status: match status.as_str() {
            "open" => AppStatus::Open,
            "closed" => AppStatus::Closed,
            _ => return Err(bad("status")),
        },
        created_at: OffsetDateTime::from_unix_timestamp(created).map_err(|_| bad("time"))?,
    })
}
