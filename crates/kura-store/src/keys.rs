//! The key registry: one data key per scope, stored only wrapped.
//!
//! The platform data key protects the platform database itself, so it cannot
//! live inside it: it is kept wrapped in `platform.key` beside the database.
//! Every other data key (teams, apps) is a row of the platform database.

use std::collections::BTreeMap;
use std::fs::{self, OpenOptions};
use std::io::Write as _;
use std::os::unix::fs::OpenOptionsExt as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use kura_crypto::{DataKey, Kms, WrappedKey};
use kura_types::{Clock, DataKeyId, KeyScope};

use crate::StoreError;
use crate::platform::{PlatformStore, StoredDataKey};

/// How many wrapped data keys each master-key version protects.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct KeyUsage {
    /// Master-key version → number of data keys wrapped under it (the
    /// platform key included).
    pub by_version: BTreeMap<u32, usize>,
    /// Data keys destroyed (crypto-shredded).
    pub destroyed: usize,
}

/// What a rotation did.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct RotationReport {
    /// The master-key version now current.
    pub current_version: u32,
    /// Data keys re-wrapped under it by this run.
    pub rewrapped: usize,
    /// Data keys that were already current.
    pub already_current: usize,
    /// Older versions nothing uses any more.
    pub unused_versions: Vec<u32>,
}

/// Data keys for every scope, through the KMS.
#[derive(Clone)]
pub struct KeyService {
    kms: Arc<dyn Kms>,
    platform: Arc<dyn PlatformStore>,
    platform_key_file: PathBuf,
    clock: Arc<dyn Clock>,
}

impl std::fmt::Debug for KeyService {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeyService")
            .field("kms", &self.kms)
            .field("platform_key_file", &self.platform_key_file)
            .finish_non_exhaustive()
    }
}

impl KeyService {
    pub(crate) fn new(
        kms: Arc<dyn Kms>,
        platform: Arc<dyn PlatformStore>,
        platform_key_file: PathBuf,
        clock: Arc<dyn Clock>,
    ) -> Self {
        Self {
            kms,
            platform,
            platform_key_file,
            clock,
        }
    }

    /// The KMS behind this registry.
    pub fn kms(&self) -> &Arc<dyn Kms> {
        &self.kms
    }

    /// Creates the data key of a new scope. Fails if the scope ever had one.
    pub async fn create(&self, scope: KeyScope) -> Result<DataKey, StoreError> {
        if scope == KeyScope::Platform {
            return Err(StoreError::Conflict("the platform data key".into()));
        }
        let (key, wrapped) = self.kms.generate_data_key(scope).await?;
        self.platform
            .insert_data_key(StoredDataKey {
                id: DataKeyId::new(),
                scope,
                wrapped: Some(wrapped),
                created_at: self.clock.now(),
                destroyed_at: None,
            })
            .await?;
        Ok(key)
    }

    /// The plaintext data key of a scope.
    pub async fn get(&self, scope: KeyScope) -> Result<DataKey, StoreError> {
        if scope == KeyScope::Platform {
            let wrapped = read_platform_key(&self.platform_key_file)?;
            return Ok(self.kms.unwrap(&wrapped, scope).await?);
        }
        let stored = self
            .platform
            .data_key(scope)
            .await?
            .ok_or_else(|| StoreError::NotFound(format!("data key for {scope}")))?;
        let wrapped = stored.wrapped.ok_or_else(|| {
            StoreError::NotFound(format!("data key for {scope} (it was destroyed)"))
        })?;
        Ok(self.kms.unwrap(&wrapped, scope).await?)
    }

    /// Destroys a scope's data key: everything encrypted under it, backups
    /// included, becomes unreadable. Returns false if it was already gone.
    pub async fn destroy(&self, scope: KeyScope) -> Result<bool, StoreError> {
        if scope == KeyScope::Platform {
            return Err(StoreError::Conflict(
                "the platform data key cannot be destroyed".into(),
            ));
        }
        self.platform
            .destroy_data_key(scope, self.clock.now())
            .await
    }

    /// Counts data keys per master-key version.
    pub async fn usage(&self) -> Result<KeyUsage, StoreError> {
        let mut usage = KeyUsage::default();
        let platform = read_platform_key(&self.platform_key_file)?;
        *usage.by_version.entry(platform.version).or_default() += 1;
        for key in self.platform.data_keys().await? {
            match key.wrapped {
                Some(w) => *usage.by_version.entry(w.version).or_default() += 1,
                None => usage.destroyed += 1,
            }
        }
        Ok(usage)
    }

    /// Creates a new master-key version and re-wraps every data key under it.
    /// Data is not re-encrypted; the server keeps running throughout.
    pub async fn rotate_master(&self) -> Result<RotationReport, StoreError> {
        self.rotate_master_with_progress(&|_, _| {}).await
    }

    /// [`KeyService::rotate_master`], reporting `(done, total)` as it goes.
    pub async fn rotate_master_with_progress(
        &self,
        progress: &(dyn Fn(usize, usize) + Send + Sync),
    ) -> Result<RotationReport, StoreError> {
        self.kms.rotate().await?;
        self.rewrap_all_with_progress(progress).await
    }

    /// Re-wraps every data key not yet under the current version. Safe to run
    /// again after an interruption: it picks up where it stopped.
    pub async fn rewrap_all(&self) -> Result<RotationReport, StoreError> {
        self.rewrap_all_with_progress(&|_, _| {}).await
    }

    /// [`KeyService::rewrap_all`], reporting `(done, total)` as it goes.
    pub async fn rewrap_all_with_progress(
        &self,
        progress: &(dyn Fn(usize, usize) + Send + Sync),
    ) -> Result<RotationReport, StoreError> {
        let current = self.kms.current_version().await?;
        let mut rewrapped = 0;
        let mut already_current = 0;

        let stored = self.platform.data_keys().await?;
        let total = 1 + stored.iter().filter(|k| k.wrapped.is_some()).count();
        let mut done = 0;

        let platform = read_platform_key(&self.platform_key_file)?;
        if platform.version == current {
            already_current += 1;
        } else {
            let new = self.kms.rewrap(&platform, KeyScope::Platform).await?;
            write_platform_key(&self.platform_key_file, &new)?;
            rewrapped += 1;
        }
        done += 1;
        progress(done, total);

        for key in stored {
            let Some(wrapped) = key.wrapped else { continue };
            done += 1;
            progress(done, total);
            if wrapped.version == current {
                already_current += 1;
                continue;
            }
            let new = self.kms.rewrap(&wrapped, key.scope).await?;
            // A concurrent rotation may have replaced it first; either way
            // the key ends up under a current version.
            if self
                .platform
                .replace_wrapped_key(key.id, &wrapped, &new)
                .await?
            {
                rewrapped += 1;
            }
        }

        let usage = self.usage().await?;
        let unused_versions = self
            .kms
            .versions()
            .await?
            .into_iter()
            .filter(|v| {
                v.state == kura_crypto::VersionState::Previous
                    && !usage.by_version.contains_key(&v.version)
            })
            .map(|v| v.version)
            .collect();
        Ok(RotationReport {
            current_version: current,
            rewrapped,
            already_current,
            unused_versions,
        })
    }

    /// Destroys an old master-key version's material once no data key uses it.
    pub async fn retire(&self, version: u32) -> Result<(), StoreError> {
        let usage = self.usage().await?;
        if let Some(n) = usage.by_version.get(&version) {
            return Err(StoreError::Conflict(format!(
                "{n} data key(s) still wrapped under master key version {version}; run `kura keys rotate` first. Master key version {version}"
            )));
        }
        Ok(self.kms.retire(version).await?)
    }
}

/// Reads the wrapped platform key.
pub(crate) fn read_platform_key(path: &Path) -> Result<WrappedKey, StoreError> {
    let bytes = fs::read(path).map_err(|e| StoreError::io(path, e))?;
    serde_json::from_slice(&bytes).map_err(|e| StoreError::DataDir {
        path: path.to_owned(),
        detail: format!("the wrapped platform key is corrupt ({e}); restore it from backup"),
    })
}

/// Writes the wrapped platform key atomically (mode 0600).
pub(crate) fn write_platform_key(path: &Path, wrapped: &WrappedKey) -> Result<(), StoreError> {
    let bytes =
        serde_json::to_vec_pretty(wrapped).map_err(|e| StoreError::Malformed(e.to_string()))?;
    let tmp = path.with_extension("key.tmp");
    let write = || -> std::io::Result<()> {
        let _ = fs::remove_file(&tmp);
        let mut f = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&tmp)?;
        f.write_all(&bytes)?;
        f.sync_all()?;
        fs::rename(&tmp, path)?;
        if let Some(dir) = path.parent() {
            fs::File::open(dir)?.sync_all()?;
        }
        Ok(())
    };
    write().map_err(|e| StoreError::io(path, e))
}
