//! The data directory: where everything Kura keeps lives, and who may read it.
//!
//! ```text
//! kura-data/              0700
//!   master.key            0600  local KMS master-key versions (maybe sealed)
//!   platform.key          0600  the platform data key, wrapped by the KMS
//!   platform.db           0600  platform state (SQLCipher)
//!   apps/<app id>.db      0600  one SQLCipher file per hosted app
//!   tls/cert.pem, key.pem       generated certificate (key 0600)
//! ```

use std::fs;
use std::os::unix::fs::{DirBuilderExt as _, MetadataExt as _, PermissionsExt as _};
use std::path::{Path, PathBuf};

use kura_types::AppId;

use crate::StoreError;

/// A permission problem that was repaired, reported so the operator learns
/// that something had loosened them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PermissionNotice {
    /// The file or directory.
    pub path: PathBuf,
    /// Its mode before.
    pub was: u32,
    /// Its mode now.
    pub now: u32,
}

impl std::fmt::Display for PermissionNotice {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} had mode {:04o}, readable by others; changed it to {:04o}",
            self.path.display(),
            self.was,
            self.now
        )
    }
}

/// The layout of one data directory.
#[derive(Debug, Clone)]
pub struct DataDir {
    root: PathBuf,
}

impl DataDir {
    /// Names a data directory without touching the disk.
    pub fn new(root: impl Into<PathBuf>) -> Self {
        Self { root: root.into() }
    }

    /// The directory itself.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The local KMS key file.
    pub fn master_key_file(&self) -> PathBuf {
        self.root.join("master.key")
    }

    /// The wrapped platform data key.
    pub fn platform_key_file(&self) -> PathBuf {
        self.root.join("platform.key")
    }

    /// The platform database.
    pub fn platform_db(&self) -> PathBuf {
        self.root.join("platform.db")
    }

    /// Where app databases live.
    pub fn apps_dir(&self) -> PathBuf {
        self.root.join("apps")
    }

    /// One app's database file.
    pub fn app_db(&self, app: AppId) -> PathBuf {
        self.apps_dir().join(format!("{app}.db"))
    }

    /// Where the generated TLS certificate lives.
    pub fn tls_dir(&self) -> PathBuf {
        self.root.join("tls")
    }

    /// Whether this directory already holds Kura state.
    pub fn is_initialised(&self) -> bool {
        self.platform_db().exists() || self.platform_key_file().exists()
    }

    /// Creates the directory (0700) if needed, and repairs modes that let
    /// other users in. Refuses a path that is not a directory or not ours.
    pub fn prepare(&self) -> Result<Vec<PermissionNotice>, StoreError> {
        let mut notices = Vec::new();
        if !self.root.exists() {
            fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(&self.root)
                .map_err(|e| StoreError::io(&self.root, e))?;
        }
        let meta = fs::metadata(&self.root).map_err(|e| StoreError::io(&self.root, e))?;
        if !meta.is_dir() {
            return Err(StoreError::DataDir {
                path: self.root.clone(),
                detail: "exists but is not a directory".into(),
            });
        }
        let uid = fs::metadata("/proc/self")
            .map(|m| m.uid())
            .unwrap_or_else(|_| meta.uid());
        if meta.uid() != uid {
            return Err(StoreError::DataDir {
                path: self.root.clone(),
                detail: format!(
                    "is owned by uid {}, but Kura runs as uid {uid}; chown it to the Kura user",
                    meta.uid()
                ),
            });
        }
        notices.extend(restrict(&self.root, 0o700)?);
        for dir in [self.apps_dir(), self.tls_dir()] {
            if dir.exists() {
                notices.extend(restrict(&dir, 0o700)?);
            }
        }
        for file in self.private_files()? {
            notices.extend(restrict(&file, 0o600)?);
        }
        Ok(notices)
    }

    /// Creates a subdirectory with mode 0700.
    pub fn ensure_private_dir(&self, dir: &Path) -> Result<(), StoreError> {
        if !dir.exists() {
            fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(dir)
                .map_err(|e| StoreError::io(dir, e))?;
        }
        Ok(())
    }

    /// Every file that must be readable by the owner alone.
    fn private_files(&self) -> Result<Vec<PathBuf>, StoreError> {
        let mut files = vec![
            self.master_key_file(),
            self.platform_key_file(),
            self.tls_dir().join("key.pem"),
        ];
        for dir in [self.root.clone(), self.apps_dir()] {
            let Ok(entries) = fs::read_dir(&dir) else {
                continue;
            };
            for entry in entries {
                let path = entry.map_err(|e| StoreError::io(&dir, e))?.path();
                let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
                if name.contains(".db") {
                    files.push(path);
                }
            }
        }
        files.retain(|p| p.exists());
        Ok(files)
    }
}

/// Clears group and other bits beyond `mode`, reporting a change.
fn restrict(path: &Path, mode: u32) -> Result<Option<PermissionNotice>, StoreError> {
    let meta = fs::symlink_metadata(path).map_err(|e| StoreError::io(path, e))?;
    if meta.file_type().is_symlink() {
        return Err(StoreError::DataDir {
            path: path.to_owned(),
            detail: "is a symbolic link; Kura keeps its files in place".into(),
        });
    }
    let was = meta.permissions().mode() & 0o7777;
    if was & 0o077 == 0 {
        return Ok(None);
    }
    fs::set_permissions(path, fs::Permissions::from_mode(mode))
        .map_err(|e| StoreError::io(path, e))?;
    Ok(Some(PermissionNotice {
        path: path.to_owned(),
        was,
        now: mode,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prepare_creates_a_private_directory_and_repairs_loose_modes() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = DataDir::new(tmp.path().join("data"));
        assert!(dir.prepare().unwrap().is_empty());
        let mode = fs::metadata(dir.root()).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o700);

        fs::set_permissions(dir.root(), fs::Permissions::from_mode(0o755)).unwrap();
        fs::write(dir.platform_db(), b"x").unwrap();
        fs::set_permissions(dir.platform_db(), fs::Permissions::from_mode(0o644)).unwrap();
        let notices = dir.prepare().unwrap();
        assert_eq!(notices.len(), 2, "{notices:?}");
        assert!(notices[0].to_string().contains("0755"));
        let mode = fs::metadata(dir.platform_db())
            .unwrap()
            .permissions()
            .mode()
            & 0o777;
        assert_eq!(mode, 0o600);
    }

    #[test]
    fn a_file_in_place_of_the_directory_is_refused() {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("data");
        fs::write(&path, b"").unwrap();
        let err = DataDir::new(&path).prepare().unwrap_err();
        assert!(err.to_string().contains("not a directory"), "{err}");
    }
}
