//! One encrypted database file per hosted app.

use std::collections::HashMap;
use std::sync::Arc;

use kura_types::{AppId, KeyScope};
use parking_lot::Mutex;

use crate::StoreError;
use crate::app_data::init_app_db;
use crate::datadir::DataDir;
use crate::keys::KeyService;
use crate::sqlite::{Durability, Pool};

/// Opens, creates and destroys app databases. Each file is encrypted under
/// its app's own data key; destroying the key makes the file (and every
/// backup of it) unreadable.
#[derive(Debug, Clone)]
pub struct AppDatabases {
    dir: DataDir,
    keys: KeyService,
    durability: Durability,
    readers: usize,
    open: Arc<Mutex<HashMap<AppId, Pool>>>,
}

impl AppDatabases {
    pub(crate) fn new(
        dir: DataDir,
        keys: KeyService,
        durability: Durability,
        readers: usize,
    ) -> Self {
        Self {
            dir,
            keys,
            durability,
            readers,
            open: Arc::new(Mutex::new(HashMap::new())),
        }
    }

    /// Creates the database of a new app under a fresh data key.
    pub async fn create(&self, app: AppId) -> Result<Pool, StoreError> {
        let path = self.dir.app_db(app);
        if path.exists() {
            return Err(StoreError::Conflict(format!("database file for app {app}")));
        }
        self.dir.ensure_private_dir(&self.dir.apps_dir())?;
        let key = self.keys.create(KeyScope::App(app)).await?;
        let (durability, readers) = (self.durability, self.readers);
        let pool = tokio::task::spawn_blocking(move || {
            Pool::open(&path, Some(&key), true, durability, readers, |conn| {
                init_app_db(conn, &path)
            })
        })
        .await
        .map_err(|e| StoreError::Worker(e.to_string()))??;
        self.open.lock().insert(app, pool.clone());
        Ok(pool)
    }

    /// The database of an existing app.
    pub async fn open(&self, app: AppId) -> Result<Pool, StoreError> {
        if let Some(pool) = self.open.lock().get(&app) {
            return Ok(pool.clone());
        }
        let key = self.keys.get(KeyScope::App(app)).await?;
        let path = self.dir.app_db(app);
        let (durability, readers) = (self.durability, self.readers);
        let pool = tokio::task::spawn_blocking(move || {
            Pool::open(&path, Some(&key), false, durability, readers, |conn| {
                init_app_db(conn, &path)
            })
        })
        .await
        .map_err(|e| StoreError::Worker(e.to_string()))??;
        Ok(self.open.lock().entry(app).or_insert(pool).clone())
    }

    /// Closes the app's connections and destroys its data key, then removes
    /// its files. The key destruction is what makes the data unrecoverable;
    /// removing the files only frees the space.
    pub async fn destroy(&self, app: AppId) -> Result<bool, StoreError> {
        self.open.lock().remove(&app);
        let destroyed = self.keys.destroy(KeyScope::App(app)).await?;
        let base = self.dir.app_db(app);
        for suffix in ["", "-wal", "-shm"] {
            let mut name = base.clone().into_os_string();
            name.push(suffix);
            match std::fs::remove_file(&name) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(StoreError::io(name, e)),
            }
        }
        Ok(destroyed)
    }
}
