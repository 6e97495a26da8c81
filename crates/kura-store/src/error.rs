//! Storage errors, named for what went wrong and where.

use std::path::PathBuf;

use kura_crypto::KmsError;

/// Why a storage operation failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// A database file could not be opened or is not a database under its key.
    #[error("database {path} cannot be opened: {detail}")]
    Open {
        /// The file.
        path: PathBuf,
        /// What was wrong and what to do.
        detail: String,
    },
    /// The database schema is newer than this build understands.
    #[error(
        "database {path} has schema version {found}, but this build of Kura knows only up to {known}; run a newer Kura"
    )]
    SchemaTooNew {
        /// The file.
        path: PathBuf,
        /// Version in the file.
        found: i64,
        /// Highest version known to this build.
        known: i64,
    },
    /// The data directory is unusable.
    #[error("data directory {path}: {detail}")]
    DataDir {
        /// The directory or file.
        path: PathBuf,
        /// What was wrong and what to do.
        detail: String,
    },
    /// A key operation failed.
    #[error(transparent)]
    Kms(#[from] KmsError),
    /// A record that must exist does not.
    #[error("{0} not found")]
    NotFound(String),
    /// A record that must not exist already does.
    #[error("{0} already exists")]
    Conflict(String),
    /// The database reported an error.
    #[error("database error: {0}")]
    Sqlite(#[from] rusqlite::Error),
    /// A stored value does not decode.
    #[error("stored data is malformed: {0}")]
    Malformed(String),
    /// File-system access failed.
    #[error("{path}: {source}")]
    Io {
        /// The path.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// A blocking task could not complete (the runtime is shutting down).
    #[error("storage worker failed: {0}")]
    Worker(String),
}

impl StoreError {
    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Self::Io {
            path: path.into(),
            source,
        }
    }
}
