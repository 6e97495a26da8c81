//! Envelope encryption: master keys held by a KMS wrap per-scope data keys.
//!
//! A [`Kms`] never hands out its master key. It generates data keys, wraps and
//! unwraps them (bound to the [`KeyScope`] they protect), and rotates: a new
//! master-key version becomes current for wrapping while older versions keep
//! unwrapping until they are retired. Re-wrapping stored data keys under the
//! new version is the caller's job (it knows where they are stored).

mod local;

use std::path::PathBuf;

use async_trait::async_trait;
use kura_types::KeyScope;
use time::OffsetDateTime;

use crate::keys::{DataKey, WrappedKey};

pub use local::{LocalKms, SealParams};

/// Whether a master-key version may still be used.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum VersionState {
    /// Wraps new data keys.
    Current,
    /// Unwraps data keys still wrapped under it; wraps nothing new.
    Previous,
    /// Its material is destroyed; anything still wrapped under it is lost.
    Retired,
}

/// What a KMS reports about one master-key version.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct MasterKeyVersion {
    /// The version number, counting from 1.
    pub version: u32,
    /// When it was created.
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
    /// Its state.
    pub state: VersionState,
}

/// Why a KMS operation failed. Messages name files and say what to do, since
/// they are shown to operators at start-up.
#[derive(Debug, thiserror::Error)]
pub enum KmsError {
    /// The master key file does not exist.
    #[error("master key file {path} does not exist")]
    NotFound {
        /// The file.
        path: PathBuf,
    },
    /// A master key file exists where a new one was to be created.
    #[error("master key file {path} already exists; refusing to overwrite it")]
    AlreadyExists {
        /// The file.
        path: PathBuf,
    },
    /// The master key file cannot be parsed or fails its checksum.
    #[error(
        "master key file {path} is corrupt or truncated ({detail}); restore it from your key backup"
    )]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// What was wrong.
        detail: String,
    },
    /// The file is sealed and no passphrase was given.
    #[error(
        "master key file {path} is sealed with a passphrase; set KURA_MASTER_KEY_PASSPHRASE or run interactively to be prompted"
    )]
    PassphraseRequired {
        /// The file.
        path: PathBuf,
    },
    /// The passphrase does not open the sealed file.
    #[error("the passphrase does not unseal master key file {path}")]
    WrongPassphrase {
        /// The file.
        path: PathBuf,
    },
    /// Reading or writing the key file failed.
    #[error("cannot access master key file {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// A wrapped key names a master key this KMS does not hold.
    #[error(
        "data key was wrapped by master key {key_id} version {version}, which this key file does not hold (was the wrong key file restored?)"
    )]
    UnknownKey {
        /// The master key id in the wrapped key.
        key_id: String,
        /// The version in the wrapped key.
        version: u32,
    },
    /// The master-key version has been retired and its material destroyed.
    #[error(
        "master key version {version} is retired; data keys wrapped under it are unrecoverable"
    )]
    Retired {
        /// The retired version.
        version: u32,
    },
    /// The wrapped key is not authentic under the master key and scope.
    #[error("data key for {scope} does not unwrap: it was altered or belongs to another scope")]
    Unwrap {
        /// The scope it was presented for.
        scope: String,
    },
    /// A version cannot be retired.
    #[error("cannot retire master key version {version}: {reason}")]
    CannotRetire {
        /// The version.
        version: u32,
        /// Why.
        reason: String,
    },
    /// Randomness or the cipher failed.
    #[error("cryptographic failure: {0}")]
    Crypto(String),
}

/// A key management service holding master keys.
#[async_trait]
pub trait Kms: Send + Sync + std::fmt::Debug {
    /// The provider name (`local`, `aws`, `pkcs11`).
    fn provider(&self) -> &'static str;

    /// The master key's identifier.
    fn key_id(&self) -> String;

    /// Creates a new data key for `scope`, returning it in plaintext and wrapped
    /// under the current master-key version.
    async fn generate_data_key(&self, scope: KeyScope) -> Result<(DataKey, WrappedKey), KmsError> {
        let key = DataKey::generate().map_err(|e| KmsError::Crypto(e.to_string()))?;
        let wrapped = self.wrap(&key, scope).await?;
        Ok((key, wrapped))
    }

    /// Wraps `key` for `scope` under the current master-key version.
    async fn wrap(&self, key: &DataKey, scope: KeyScope) -> Result<WrappedKey, KmsError>;

    /// Unwraps a data key that was wrapped for `scope`.
    async fn unwrap(&self, wrapped: &WrappedKey, scope: KeyScope) -> Result<DataKey, KmsError>;

    /// Re-wraps under the current version without exposing the key to the
    /// caller; returns the input unchanged when it is already current.
    async fn rewrap(&self, wrapped: &WrappedKey, scope: KeyScope) -> Result<WrappedKey, KmsError> {
        if wrapped.version == self.current_version().await? && wrapped.key_id == self.key_id() {
            return Ok(wrapped.clone());
        }
        let key = self.unwrap(wrapped, scope).await?;
        self.wrap(&key, scope).await
    }

    /// The version new wraps use.
    async fn current_version(&self) -> Result<u32, KmsError>;

    /// Creates a new master-key version and makes it current.
    async fn rotate(&self) -> Result<u32, KmsError>;

    /// Every version with its state.
    async fn versions(&self) -> Result<Vec<MasterKeyVersion>, KmsError>;

    /// Destroys a non-current version's material. The caller must first prove
    /// that no stored data key is still wrapped under it.
    async fn retire(&self, version: u32) -> Result<(), KmsError>;
}
