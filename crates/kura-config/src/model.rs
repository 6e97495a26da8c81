//! The configuration model and its defaults.

use std::net::SocketAddr;
use std::path::PathBuf;

use secrecy::SecretString;
use serde::{Deserialize, Serialize, Serializer};

/// Everything `kura serve` can be told.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// `development` (default) or `production`; production refuses insecure settings.
    pub env: Environment,
    /// Where Kura keeps its keys and databases.
    pub data_dir: PathBuf,
    /// The HTTPS listener.
    pub server: ServerConfig,
    /// TLS.
    pub tls: TlsConfig,
    /// The key management service holding the master key.
    pub keys: KeysConfig,
    /// Storage backend.
    pub storage: StorageConfig,
    /// Logging.
    pub log: LogConfig,
    /// The first-run setup link.
    pub setup: SetupConfig,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            env: Environment::Development,
            data_dir: PathBuf::from("./kura-data"),
            server: ServerConfig::default(),
            tls: TlsConfig::default(),
            keys: KeysConfig::default(),
            storage: StorageConfig::default(),
            log: LogConfig::default(),
            setup: SetupConfig::default(),
        }
    }
}

/// Deployment mode.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Environment {
    /// Local use; insecure settings are warned about.
    Development,
    /// Production; insecure settings stop the start.
    Production,
}

/// The HTTPS listener.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServerConfig {
    /// Address and port to listen on.
    pub bind: SocketAddr,
    /// The URL people reach Kura at, when it differs from the bind address
    /// (behind a load balancer). Must be `https://`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub public_url: Option<String>,
    /// Longest time a request may take before it gets a 408.
    pub request_timeout_secs: u64,
    /// Largest request body accepted, in bytes, where a route sets no other limit.
    pub body_limit_bytes: usize,
    /// Time a TLS handshake may take.
    pub handshake_timeout_secs: u64,
    /// How long shutdown waits for in-flight requests.
    pub shutdown_grace_secs: u64,
    /// Most simultaneous connections; more wait in the accept queue.
    pub max_connections: usize,
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            bind: SocketAddr::from(([127, 0, 0, 1], 8443)),
            public_url: None,
            request_timeout_secs: 30,
            body_limit_bytes: 1024 * 1024,
            handshake_timeout_secs: 10,
            shutdown_grace_secs: 30,
            max_connections: 10_000,
        }
    }
}

/// TLS settings. Only TLS 1.2 and 1.3 with ECDHE and AEAD suites exist in
/// Kura; these settings choose between them, never below them.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TlsConfig {
    /// PEM certificate chain. Without it Kura generates a self-signed one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cert_file: Option<PathBuf>,
    /// PEM private key for `cert_file`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub key_file: Option<PathBuf>,
    /// Lowest protocol version: `"1.2"` (default) or `"1.3"`.
    pub min_version: TlsVersion,
    /// `Strict-Transport-Security` max-age in seconds (at least one year).
    pub hsts_max_age_secs: u64,
}

impl Default for TlsConfig {
    fn default() -> Self {
        Self {
            cert_file: None,
            key_file: None,
            min_version: TlsVersion::V1_2,
            hsts_max_age_secs: 31_536_000,
        }
    }
}

/// A TLS protocol version Kura speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum TlsVersion {
    /// TLS 1.2.
    #[serde(rename = "1.2")]
    V1_2,
    /// TLS 1.3.
    #[serde(rename = "1.3")]
    V1_3,
}

/// The master-key provider.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct KeysConfig {
    /// Which KMS holds the master key.
    pub provider: KmsProvider,
    /// Settings of the `local` provider.
    pub local: LocalKeysConfig,
    /// Passphrase of a sealed local key file. Set it through
    /// `KURA_MASTER_KEY_PASSPHRASE`, never in a file.
    #[serde(skip_serializing_if = "Option::is_none", serialize_with = "redact")]
    pub passphrase: Option<SecretString>,
}

impl Default for KeysConfig {
    fn default() -> Self {
        Self {
            provider: KmsProvider::Local,
            local: LocalKeysConfig::default(),
            passphrase: None,
        }
    }
}

fn redact<S: Serializer>(value: &Option<SecretString>, s: S) -> Result<S::Ok, S::Error> {
    match value {
        Some(_) => s.serialize_str("[REDACTED]"),
        None => s.serialize_none(),
    }
}

/// KMS providers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum KmsProvider {
    /// A master-key file in the data directory.
    Local,
}

/// The `local` KMS provider.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LocalKeysConfig {
    /// Refuse to start with a key file that is not sealed by a passphrase.
    pub require_sealed: bool,
}

/// Storage.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StorageConfig {
    /// The platform-state backend.
    pub backend: StorageBackend,
    /// Read connections per database file (1 to 64).
    pub readers: usize,
}

impl Default for StorageConfig {
    fn default() -> Self {
        Self {
            backend: StorageBackend::Sqlite,
            readers: 4,
        }
    }
}

/// Platform-state backends.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum StorageBackend {
    /// Embedded SQLCipher files in the data directory.
    Sqlite,
}

/// Logging.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LogConfig {
    /// `error`, `warn`, `info`, `debug` or `trace`, or a full filter
    /// directive such as `info,kura_server=debug`.
    pub level: String,
    /// `json` (default) or `pretty`.
    pub format: LogFormat,
}

impl Default for LogConfig {
    fn default() -> Self {
        Self {
            level: "info".into(),
            format: LogFormat::Json,
        }
    }
}

/// Log line format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// One JSON object per line.
    Json,
    /// Human-readable lines.
    Pretty,
}

/// The first-run setup link.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SetupConfig {
    /// How long a setup link stays valid, in seconds (at most one hour).
    pub token_ttl_secs: u64,
}

impl Default for SetupConfig {
    fn default() -> Self {
        Self {
            token_ttl_secs: 3600,
        }
    }
}
