//! Bringing storage up: the first run creates it, later runs reuse it, and
//! damaged or mismatched state is refused with a message that says what to do.

use std::sync::Arc;

use kura_crypto::{Kms, KmsError};
use kura_types::{Clock, KeyScope};

use crate::StoreError;
use crate::apps::AppDatabases;
use crate::datadir::DataDir;
use crate::keys::{KeyService, read_platform_key, write_platform_key};
use crate::platform::PlatformStore;
use crate::sqlite::{Durability, SqlitePlatformStore};

/// Tuning for the embedded backend.
#[derive(Debug, Clone, Copy)]
pub struct StorageOptions {
    /// Commit durability.
    pub durability: Durability,
    /// Read connections per database file.
    pub readers: usize,
}

impl Default for StorageOptions {
    fn default() -> Self {
        Self {
            durability: Durability::Full,
            readers: 4,
        }
    }
}

/// Storage, opened.
#[derive(Debug, Clone)]
pub struct Storage {
    /// Platform state.
    pub platform: Arc<dyn PlatformStore>,
    /// The embedded platform store itself, for crates that keep tables in it.
    pub sqlite: SqlitePlatformStore,
    /// Data keys.
    pub keys: KeyService,
    /// App databases.
    pub apps: AppDatabases,
    /// Whether this open created the platform database.
    pub created: bool,
}

/// Opens the platform store in `dir` (creating it on first run) with data
/// keys from `kms`. The caller has already prepared the directory and opened
/// or created the KMS.
pub async fn open_storage(
    dir: &DataDir,
    kms: Arc<dyn Kms>,
    clock: Arc<dyn Clock>,
    options: StorageOptions,
) -> Result<Storage, StoreError> {
    let key_file = dir.platform_key_file();
    let db_file = dir.platform_db();
    let created = !db_file.exists();
    let platform_key = match (key_file.exists(), created) {
        (true, _) => {
            let wrapped = read_platform_key(&key_file)?;
            kms.unwrap(&wrapped, KeyScope::Platform)
                .await
                .map_err(|e| match e {
                    KmsError::UnknownKey { .. } | KmsError::Unwrap { .. } => StoreError::DataDir {
                        path: key_file.clone(),
                        detail: format!(
                            "the master key does not unwrap the platform key ({e}); \
                             this data directory was created with a different master key file — restore the right one"
                        ),
                    },
                    other => other.into(),
                })?
        }
        (false, true) => {
            let (key, wrapped) = kms.generate_data_key(KeyScope::Platform).await?;
            write_platform_key(&key_file, &wrapped)?;
            key
        }
        (false, false) => {
            return Err(StoreError::DataDir {
                path: key_file,
                detail: format!(
                    "is missing but {} exists; restore platform.key from backup (Kura never replaces keys of existing data)",
                    db_file.display()
                ),
            });
        }
    };
    let path = db_file.clone();
    let store = tokio::task::spawn_blocking(move || {
        SqlitePlatformStore::open(
            &path,
            &platform_key,
            created,
            options.durability,
            options.readers,
        )
    })
    .await
    .map_err(|e| StoreError::Worker(e.to_string()))??;
    let platform: Arc<dyn PlatformStore> = Arc::new(store.clone());
    let keys = KeyService::new(kms, Arc::clone(&platform), key_file, clock);
    let apps = AppDatabases::new(
        dir.clone(),
        keys.clone(),
        options.durability,
        options.readers,
    );
    Ok(Storage {
        platform,
        sqlite: store,
        keys,
        apps,
        created,
    })
}
