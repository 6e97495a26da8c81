//! Kura's configuration: one typed [`Config`], layered from defaults, a TOML
//! file, `KURA_*` environment variables and command-line flags, in that order.
//!
//! Principal types: [`Config`] and its sections, [`Layers`] (the inputs to
//! layering) and [`ConfigError`], whose messages name the offending key and
//! where its value came from. Unknown keys are errors, not silently ignored.
//!
//! This crate knows nothing about what the settings drive: it parses and
//! validates, and callers act. Secrets (the master-key passphrase) are
//! `secrecy` types and print as `[REDACTED]`.

mod layers;
mod model;

pub use layers::{ConfigError, Layers, Source};
pub use model::{
    Config, ConnectConfig, ConnectSmtp, EdgeConfig, Environment, EventsConfig, ExportConfig,
    IdentitySettings, IncidentEmail, IncidentWebhook, IncidentsConfig, JsonlExport, KeysConfig,
    KmsProvider, LocalKeysConfig, LogConfig, LogFormat, ServerConfig, SetupConfig, StorageBackend,
    StorageConfig, SyslogExport, SyslogIngestConfig, TlsConfig, TlsVersion, WebhookExport,
};
