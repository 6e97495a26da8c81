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
    /// The security event pipeline: retention and exports.
    pub events: EventsConfig,
    /// Kura ID: sessions, invitations and tokens.
    pub identity: IdentitySettings,
    /// The edge: firewall, rate limits and WAF in front of every handler.
    pub edge: EdgeConfig,
    /// Kura Connect: workers, limits, outbound policy and run history.
    pub connect: ConnectConfig,
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
            events: EventsConfig::default(),
            identity: IdentitySettings::default(),
            edge: EdgeConfig::default(),
            connect: ConnectConfig::default(),
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

/// The security event pipeline.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct EventsConfig {
    /// Days security events are kept (30 to 3650), independent of customer
    /// content; pruning leaves a signed anchor so the rest still verifies.
    pub retention_days: u32,
    /// Sign a checkpoint after this many events (1 to 1,000,000).
    pub checkpoint_every: u64,
    /// Sign a checkpoint once the oldest unsigned event is this many seconds
    /// old, however few events there are (1 to 86,400).
    pub checkpoint_after_secs: u64,
    /// Streaming exports to a SIEM.
    pub export: ExportConfig,
    /// The RFC 5425 syslog listener for events from other systems.
    pub syslog: SyslogIngestConfig,
    /// Incident notifications: channels by severity, retries and back-off.
    pub incidents: IncidentsConfig,
}

impl Default for EventsConfig {
    fn default() -> Self {
        Self {
            retention_days: 400,
            checkpoint_every: 1000,
            checkpoint_after_secs: 60,
            export: ExportConfig::default(),
            syslog: SyslogIngestConfig::default(),
            incidents: IncidentsConfig::default(),
        }
    }
}

/// Incident notifications (the communication plan). Channels listed here are
/// fixed by the operator; security responders may add more through
/// `/api/v1/incident-channels`. Names are shared by both and unique.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct IncidentsConfig {
    /// How often pending notifications are looked for, in seconds (1 to 300).
    pub poll_interval_secs: u64,
    /// Tries per notification before it is marked failed (1 to 100).
    pub max_attempts: u32,
    /// The wait after the first failed try, in seconds; it doubles after
    /// each further failure (1 to 3600).
    pub backoff_initial_secs: u64,
    /// The longest wait between tries, in seconds (at least
    /// `backoff_initial_secs`, at most 86400).
    pub backoff_max_secs: u64,
    /// Signed-webhook channels (`[[events.incidents.webhook]]`).
    pub webhook: Vec<IncidentWebhook>,
    /// E-mail channels through an SMTP relay (`[[events.incidents.email]]`).
    pub email: Vec<IncidentEmail>,
}

impl Default for IncidentsConfig {
    fn default() -> Self {
        Self {
            poll_interval_secs: 5,
            max_attempts: 10,
            backoff_initial_secs: 30,
            backoff_max_secs: 3600,
            webhook: Vec::new(),
            email: Vec::new(),
        }
    }
}

/// One e-mail notification channel.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IncidentEmail {
    /// Unique channel name (shared with webhook channels).
    pub name: String,
    /// `host:port` of the SMTP relay.
    pub relay: String,
    /// `tls` (implicit TLS), `starttls` (required), or `none` (only to a
    /// loopback relay).
    pub security: String,
    /// PEM CA the relay's certificate must chain to (required with TLS).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_file: Option<PathBuf>,
    /// SMTP AUTH user, with `password_file`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub username: Option<String>,
    /// File holding the SMTP AUTH password.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password_file: Option<PathBuf>,
    /// The sender address.
    pub from: String,
    /// The recipients.
    pub to: Vec<String>,
    /// The least severe incidents it hears of: `sev1` .. `sev4`.
    pub min_severity: String,
    /// Seconds allowed per delivery.
    #[serde(default = "default_timeout")]
    pub timeout_secs: u64,
}

/// One signed-webhook notification channel.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IncidentWebhook {
    /// Unique channel name.
    pub name: String,
    /// `https://` endpoint (`http://` only to a loopback address).
    pub url: String,
    /// File holding the HMAC signing secret (at least 32 bytes).
    pub secret_file: PathBuf,
    /// The least severe incidents it hears of: `sev1` .. `sev4` (`sev2`
    /// hears SEV1 and SEV2).
    pub min_severity: String,
    /// Seconds allowed per request.
    #[serde(default = "default_timeout")]
    pub timeout_secs: u64,
}

/// The syslog listener (off unless `bind` is set). Senders authenticate with
/// client certificates issued by `client_ca_file` (mutual TLS).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SyslogIngestConfig {
    /// Address to listen on, e.g. `127.0.0.1:6514`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub bind: Option<SocketAddr>,
    /// PEM CA whose certificates senders must present.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub client_ca_file: Option<PathBuf>,
    /// Sender connections served at once.
    pub max_connections: usize,
    /// A connection idle this long is closed, in seconds.
    pub idle_timeout_secs: u64,
}

impl Default for SyslogIngestConfig {
    fn default() -> Self {
        Self {
            bind: None,
            client_ca_file: None,
            max_connections: 64,
            idle_timeout_secs: 300,
        }
    }
}

/// Streaming exports. Each sink has its own durable cursor, keyed by name.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ExportConfig {
    /// How often an idle exporter looks for new events, in milliseconds.
    pub poll_interval_ms: u64,
    /// Most events per delivered batch.
    pub batch_size: usize,
    /// JSON-lines file sinks (`[[events.export.jsonl]]`).
    pub jsonl: Vec<JsonlExport>,
    /// Signed webhook sinks (`[[events.export.webhook]]`).
    pub webhook: Vec<WebhookExport>,
    /// RFC 5425 syslog-over-TLS sinks (`[[events.export.syslog]]`).
    pub syslog: Vec<SyslogExport>,
}

/// One syslog-over-TLS export.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SyslogExport {
    /// Unique name; the key of its cursor.
    pub name: String,
    /// `host:port` of the receiver.
    pub address: String,
    /// Name the receiver's certificate must carry (default: the host part).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub server_name: Option<String>,
    /// PEM CA the receiver's certificate must chain to.
    pub ca_file: PathBuf,
    /// PEM client certificate, for receivers that authenticate senders.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_cert_file: Option<PathBuf>,
    /// PEM key of `client_cert_file`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_key_file: Option<PathBuf>,
}

impl Default for ExportConfig {
    fn default() -> Self {
        Self {
            poll_interval_ms: 1000,
            batch_size: 500,
            jsonl: Vec::new(),
            webhook: Vec::new(),
            syslog: Vec::new(),
        }
    }
}

/// One JSON-lines export.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JsonlExport {
    /// Unique name; the key of its cursor.
    pub name: String,
    /// Directory for the files (created 0700; files 0600).
    pub dir: PathBuf,
    /// File name prefix.
    #[serde(default = "default_prefix")]
    pub prefix: String,
    /// Rotate before a file exceeds this many bytes.
    #[serde(default = "default_max_bytes")]
    pub max_bytes: u64,
    /// Rotate once a file is this many hours old.
    #[serde(default = "default_max_age_hours")]
    pub max_age_hours: u64,
    /// Rotated files to keep.
    #[serde(default = "default_keep")]
    pub keep: usize,
}

fn default_prefix() -> String {
    "events".into()
}
fn default_max_bytes() -> u64 {
    100 * 1024 * 1024
}
fn default_max_age_hours() -> u64 {
    24
}
fn default_keep() -> usize {
    14
}

/// One signed-webhook export.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebhookExport {
    /// Unique name; the key of its cursor.
    pub name: String,
    /// `https://` endpoint (`http://` only to a loopback address).
    pub url: String,
    /// File holding the HMAC signing secret (at least 32 bytes). Secrets are
    /// never config values.
    pub secret_file: PathBuf,
    /// Seconds allowed per request.
    #[serde(default = "default_timeout")]
    pub timeout_secs: u64,
    /// Tries per batch before the exporter backs off.
    #[serde(default = "default_attempts")]
    pub max_attempts: u32,
}

fn default_timeout() -> u64 {
    10
}
fn default_attempts() -> u32 {
    5
}

/// Kura ID settings.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct IdentitySettings {
    /// A session unused this long ends, in minutes (1 to 1440).
    pub session_idle_minutes: u32,
    /// A session ends this long after sign-in, in hours (1 to 720).
    pub session_absolute_hours: u32,
    /// Sensitive actions need an MFA check this recent, in minutes (1 to 60).
    pub step_up_minutes: u32,
    /// How long an invitation link stays valid, in days (1 to 30).
    pub invitation_days: u32,
    /// The longest lifetime an API token may be given, in days (1 to 3660).
    pub max_token_days: u32,
    /// The issuer shown in authenticator apps.
    pub totp_issuer: String,
}

impl Default for IdentitySettings {
    fn default() -> Self {
        Self {
            session_idle_minutes: 30,
            session_absolute_hours: 12,
            step_up_minutes: 10,
            invitation_days: 7,
            max_token_days: 366,
            totp_issuer: "Kura".into(),
        }
    }
}

/// The edge. Firewall lists, rate limits and WAF rule modes are changed at
/// run time through the admin API; these settings are the fixed part.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct EdgeConfig {
    /// Inspect requests at all. Only for measuring what the edge costs;
    /// production refuses `false`.
    pub enabled: bool,
    /// CIDR ranges of reverse proxies whose `Forwarded` and
    /// `X-Forwarded-For` headers are believed; from anyone else they are
    /// ignored.
    pub trusted_proxies: Vec<String>,
    /// Largest sign-in request body, in bytes (1024 to 1048576).
    pub sign_in_body_limit_bytes: usize,
}

impl Default for EdgeConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            trusted_proxies: Vec::new(),
            sign_in_body_limit_bytes: 16 * 1024,
        }
    }
}

/// Kura Connect.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ConnectConfig {
    /// Worker tasks that run queued runs (1 to 64).
    pub workers: usize,
    /// Runs of one team running at once (1 to 1000).
    pub team_concurrency: u32,
    /// Seconds a worker holds a run without progress before another may
    /// take it over (10 to 3600).
    pub lease_secs: u64,
    /// Days finished runs are kept (0: forever).
    pub run_retention_days: u32,
    /// Largest webhook request body, in bytes (1024 to 16777216).
    pub webhook_body_limit_bytes: usize,
    /// Largest response an HTTP step reads, in bytes.
    pub max_response_bytes: usize,
    /// Internal ranges (CIDR) HTTP steps may reach anyway; everything
    /// loopback, private, link-local or multicast is refused otherwise.
    pub outbound_allow: Vec<String>,
    /// The SMTP relay of `email` steps and approval links
    /// (`[connect.smtp]`); without it steps need a team `smtp` credential.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub smtp: Option<ConnectSmtp>,
}

/// The SMTP relay Kura Connect sends through.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConnectSmtp {
    /// `host:port` of the relay. The host passes the outbound (SSRF)
    /// policy like any step's target.
    pub relay: String,
    /// `starttls` (required, the default), `tls` (implicit TLS), or `none`
    /// (only to an internal address in `connect.outbound_allow`).
    #[serde(default = "default_starttls")]
    pub security: String,
    /// PEM CA the relay's certificate must chain to (default: the system's
    /// roots).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_file: Option<PathBuf>,
    /// SMTP AUTH user, with `password_file`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub username: Option<String>,
    /// File holding the SMTP AUTH password.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password_file: Option<PathBuf>,
    /// The sender address.
    pub from: String,
    /// Seconds allowed per delivery.
    #[serde(default = "default_timeout")]
    pub timeout_secs: u64,
}

fn default_starttls() -> String {
    "starttls".into()
}

impl Default for ConnectConfig {
    fn default() -> Self {
        Self {
            workers: 4,
            team_concurrency: 16,
            lease_secs: 120,
            run_retention_days: 30,
            webhook_body_limit_bytes: 256 * 1024,
            max_response_bytes: 1024 * 1024,
            outbound_allow: Vec::new(),
            smtp: None,
        }
    }
}
