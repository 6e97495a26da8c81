//! Opening an installation: first run creates it, later runs reuse it.
//!
//! The order matters and each step refuses rather than guesses: the data
//! directory (created 0700, loosened modes repaired and reported), the master
//! key (generated only when the directory holds no data yet), the platform
//! store, then TLS material. Nothing here ever generates a key over existing
//! encrypted data.

use std::sync::Arc;

use kura_config::{Config, StorageBackend};
use kura_connect::steps::email::{SmtpRelay, SmtpSecurity};
use kura_crypto::token::SecretToken;
use kura_crypto::{Kms, KmsError, LocalKms, SealParams};
use kura_events::incident::CommunicationPlan;
use kura_events::{
    Detector, EventError, EventLog, EventLogOptions, EventSink, IncidentService, LogSink,
};
use kura_identity::{Identity, IdentityConfig, PasskeyConfig};
use kura_store::{
    DataDir, Durability, SETUP_COMPLETED, SqliteIdentityStore, Storage, StorageOptions, StoreError,
    open_storage,
};
use kura_store::{SqliteEdgeStore, SqliteIncidentStore};
use kura_types::Clock;
use kura_types::{Action, Actor, Outcome, SecurityEvent};
use time::{Duration, OffsetDateTime};

use crate::edge::{BodyLimits, Edge};
use crate::tls::{CertificateOrigin, TlsError, TlsMaterial};

/// Why Kura cannot start. Every message says which file or setting is at
/// fault and what to do.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// Storage refused.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// A security event could not be recorded, so the action it describes
    /// does not go ahead.
    #[error(transparent)]
    Event(#[from] EventError),
    /// The KMS refused.
    #[error(transparent)]
    Kms(#[from] KmsError),
    /// TLS material is unusable.
    #[error(transparent)]
    Tls(#[from] TlsError),
    /// The master key file is gone but encrypted data exists.
    #[error(
        "master key file {path} is missing, but {dir} holds encrypted data; restore the key file from your key backup (Kura never generates a new key over existing data)"
    )]
    MasterKeyMissing {
        /// The key file.
        path: std::path::PathBuf,
        /// The data directory.
        dir: std::path::PathBuf,
    },
    /// Policy requires a sealed key file.
    #[error(
        "keys.local.require_sealed is set but master key file {path} is not sealed; seal it with `kura keys seal`"
    )]
    NotSealed {
        /// The key file.
        path: std::path::PathBuf,
    },
    /// The edge cannot start (a stored policy or a trusted-proxy range is
    /// unusable).
    #[error(transparent)]
    Edge(#[from] crate::edge::EdgeError),
    /// The hardened baseline refuses this installation in production.
    #[error("refusing to start with env = production:\n{0}\nrun `kura doctor` for the full report")]
    Baseline(String),
    /// Kura ID cannot start (its password hashing parameters are unusable).
    #[error("Kura ID cannot start: {0}")]
    Identity(String),
    /// The listener cannot bind.
    #[error("cannot listen on {addr}: {detail}")]
    Bind {
        /// The address.
        addr: std::net::SocketAddr,
        /// Why, in words.
        detail: String,
    },
}

/// The keys and storage of one data directory, without the network parts.
/// CLI commands that administer keys open this much and no more.
#[derive(Debug, Clone)]
pub struct Installation {
    /// The data directory.
    pub dir: DataDir,
    /// The KMS holding the master key.
    pub kms: Arc<LocalKms>,
    /// Storage.
    pub storage: Storage,
    /// The security event log and the sink every component records through.
    pub events: LogSink,
    /// Incidents, opened and joined by detection alerts.
    pub incidents: Arc<IncidentService>,
    /// The injected clock.
    pub clock: Arc<dyn Clock>,
    /// Kura ID over this installation's storage.
    pub identity: Identity,
    /// Hosted apps and Data API sessions.
    pub apps: kura_apps::Apps,
    /// Signs container download URLs; fresh at every start.
    pub container_key: Arc<kura_crypto::hmac::HmacKey>,
    /// The edge's policies and engines.
    pub edge: Arc<Edge>,
    /// Kura Connect: flows, runs, credentials and its engine.
    pub connect: kura_connect::Connect,
    /// Things the operator should know about this start (repaired modes,
    /// generated keys).
    pub notices: Vec<String>,
}

impl Installation {
    /// Opens (on first run, creates) the installation in `config.data_dir`.
    pub async fn open(config: &Config, clock: Arc<dyn Clock>) -> Result<Self, StartError> {
        let dir = DataDir::new(&config.data_dir);
        let mut notices: Vec<String> = dir.prepare()?.into_iter().map(|n| n.to_string()).collect();
        let key_path = dir.master_key_file();
        let kms = if key_path.exists() {
            LocalKms::open(&key_path, config.keys.passphrase.clone())?
        } else if dir.is_initialised() {
            return Err(StartError::MasterKeyMissing {
                path: key_path,
                dir: dir.root().to_owned(),
            });
        } else {
            let sealed = config.keys.passphrase.is_some();
            let kms = LocalKms::create(
                &key_path,
                config.keys.passphrase.clone(),
                SealParams::default(),
                clock.now(),
            )?;
            notices.push(format!(
                "generated a new master key in {}{}; back it up: without it the data is unrecoverable",
                key_path.display(),
                if sealed { " (sealed with the passphrase)" } else { "" }
            ));
            kms
        };
        if config.keys.local.require_sealed && !kms.is_sealed() {
            return Err(StartError::NotSealed { path: key_path });
        }
        let kms = Arc::new(kms);
        let StorageBackend::Sqlite = config.storage.backend;
        let storage = open_storage(
            &dir,
            Arc::clone(&kms) as Arc<dyn Kms>,
            Arc::clone(&clock),
            StorageOptions {
                durability: Durability::Full,
                readers: config.storage.readers,
            },
        )
        .await?;
        if storage.created {
            notices.push(format!(
                "created the platform database {}",
                dir.platform_db().display()
            ));
        }
        let log = EventLog::open(
            &storage,
            Arc::clone(&clock),
            EventLogOptions {
                checkpoint_every: config.events.checkpoint_every,
                checkpoint_after: Some(std::time::Duration::from_secs(
                    config.events.checkpoint_after_secs,
                )),
                ..EventLogOptions::default()
            },
        )
        .await?;
        // Detection rules raise alerts; alerts open or join incidents, which
        // notify the channels of the communication plan by severity.
        let mut incidents = IncidentService::new(
            Arc::new(SqliteIncidentStore::new(log.pool().clone())),
            Arc::clone(&clock),
            CommunicationPlan { routes: Vec::new() },
        )
        .with_notification_policy(crate::notify::policy(&config.events.incidents));
        for (channel, min_severity) in
            crate::notify::configured_channels(&config.events.incidents, &clock)?
        {
            incidents = incidents.with_routed_channel(channel, min_severity);
        }
        let incidents = Arc::new(incidents);
        incidents.refresh_channels().await.map_err(|e| {
            StartError::Event(EventError::Invalid(format!(
                "incident channels cannot be read: {e}"
            )))
        })?;
        let events = LogSink::with_detector(log, Detector::new())
            .with_alert_handler(Arc::clone(&incidents) as Arc<dyn kura_events::AlertHandler>);
        // Detection starts here: everything committed from now on is
        // observed, whichever way it reaches the log.
        events.catch_up().await;
        let identity = Identity::new(
            Arc::new(SqliteIdentityStore::new(storage.sqlite.pool().clone())),
            Arc::clone(&storage.platform),
            Arc::clone(&clock),
            identity_config(&config.identity, &config.server),
        )
        .map_err(|e| StartError::Identity(e.to_string()))?;
        let apps = kura_apps::Apps::new(
            kura_store::AppRegistry::new(storage.sqlite.pool().clone()),
            storage.apps.clone(),
            kura_identity::Passwords::owasp().map_err(|e| StartError::Identity(e.to_string()))?,
            Arc::clone(&clock),
        );
        let container_key = Arc::new(kura_crypto::hmac::HmacKey::new(
            &kura_crypto::random::array::<32>()
                .map_err(|e| StartError::Kms(KmsError::Crypto(e.to_string())))?,
        ));
        let edge = Arc::new(
            Edge::open(
                Arc::new(SqliteEdgeStore::new(events.log().pool().clone())),
                Arc::new(events.clone()),
                Arc::clone(&clock),
                &config.edge.trusted_proxies,
                BodyLimits {
                    sign_in: config.edge.sign_in_body_limit_bytes,
                    other: config
                        .server
                        .body_limit_bytes
                        .max(crate::http::api::LARGEST_ROUTE_BODY),
                },
                config.edge.enabled,
            )
            .await?,
        );
        let connect = kura_connect::Connect::new(
            Arc::new(kura_store::SqliteConnectStore::new(
                storage.sqlite.pool().clone(),
            )),
            storage.keys.clone(),
            Arc::new(events.clone()),
            Arc::clone(&clock),
            connect_config(config)?,
            apps.clone(),
        );
        Ok(Self {
            dir,
            kms,
            storage,
            events,
            incidents,
            clock,
            identity,
            apps,
            container_key,
            edge,
            connect,
            notices,
        })
    }

    /// Kura ID's records, for checks and lookups the policy does not make.
    pub fn identity_store(&self) -> Arc<dyn kura_store::IdentityStore> {
        Arc::new(SqliteIdentityStore::new(self.storage.sqlite.pool().clone()))
    }

    /// Records a security event by a system component, durably, before the
    /// caller reports the action as done.
    pub async fn record_system_event(
        &self,
        component: &str,
        action: &str,
        outcome: Outcome,
        details: &[(&str, serde_json::Value)],
    ) -> Result<(), StartError> {
        let action = Action::parse(action).map_err(|e| EventError::Invalid(e.to_string()))?;
        let mut event = SecurityEvent::new(
            self.clock.now(),
            Actor::System {
                component: component.to_owned(),
            },
            action,
            outcome,
        );
        for (key, value) in details {
            event = event.with_detail(*key, value.clone());
        }
        self.events.record(event).await?;
        Ok(())
    }
}

/// A one-time link for creating the first operator account. Its token is
/// shown once and stored only as a hash.
pub struct SetupLink {
    /// The full URL, token included.
    pub url: String,
    /// When it stops working.
    pub expires_at: OffsetDateTime,
    /// The token itself (tests use it; the banner prints the URL).
    pub token: SecretToken,
}

impl std::fmt::Debug for SetupLink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SetupLink")
            .field("url", &"[REDACTED]")
            .field("expires_at", &self.expires_at)
            .finish()
    }
}

/// An opened installation with its TLS material: everything `kura serve` needs
/// before it binds.
#[derive(Debug)]
pub struct Platform {
    /// The effective configuration.
    pub config: Config,
    /// Keys and storage.
    pub installation: Installation,
    /// The certificate and key to serve.
    pub tls: TlsMaterial,
}

impl Platform {
    /// Opens everything `config` names, creating what a first run needs.
    pub async fn open(config: Config, clock: Arc<dyn Clock>) -> Result<Self, StartError> {
        // Production refuses an insecure installation instead of repairing
        // it, so the files are judged before the start tightens any mode.
        let production = config.env == kura_config::Environment::Production;
        if production {
            refuse_failures(&crate::doctor::file_checks(&config, clock.now()))?;
        }
        let mut installation = Installation::open(&config, clock).await?;
        if production {
            refuse_failures(&crate::doctor::state_checks(&config, &installation).await)?;
        }
        installation
            .dir
            .ensure_private_dir(&installation.dir.tls_dir())?;
        let tls = TlsMaterial::load_or_generate(&config.tls, &installation.dir.tls_dir())?;
        if let CertificateOrigin::Generated {
            cert_file,
            fresh: true,
        } = &tls.origin
        {
            installation.notices.push(format!(
                "generated a self-signed TLS certificate {} for localhost and 127.0.0.1; configure tls.cert_file and tls.key_file for a real one",
                cert_file.display()
            ));
        }
        Ok(Self {
            config,
            installation,
            tls,
        })
    }

    /// Whether the first operator account still has to be created.
    pub async fn setup_pending(&self) -> Result<bool, StartError> {
        Ok(self
            .installation
            .storage
            .platform
            .setting(SETUP_COMPLETED)
            .await?
            .is_none())
    }

    /// Issues a fresh setup link (invalidating earlier ones) while set-up is
    /// pending; `None` once the first operator exists.
    pub async fn issue_setup_link(&self, base_url: &str) -> Result<Option<SetupLink>, StartError> {
        if !self.setup_pending().await? {
            return Ok(None);
        }
        let token = SecretToken::generate()
            .map_err(|e| StartError::Kms(KmsError::Crypto(e.to_string())))?;
        let now = self.installation.clock.now();
        let ttl = i64::try_from(self.config.setup.token_ttl_secs).unwrap_or(3600);
        let expires_at = now + Duration::seconds(ttl);
        self.installation
            .storage
            .platform
            .issue_setup_token(&token.hash(), now, expires_at)
            .await?;
        self.installation
            .record_system_event(
                "kura-serve",
                kura_events::actions::SETUP_LINK_ISSUED,
                Outcome::Success,
                &[(
                    "expires_at",
                    serde_json::Value::String(expires_at.to_string()),
                )],
            )
            .await?;
        Ok(Some(SetupLink {
            url: format!(
                "{}/console/setup?token={}",
                base_url.trim_end_matches('/'),
                token.reveal()
            ),
            expires_at,
            token,
        }))
    }
}

/// The failed baseline checks as one start error.
fn refuse_failures(checks: &[crate::doctor::Check]) -> Result<(), StartError> {
    let failures: Vec<String> = checks
        .iter()
        .filter(|c| c.status == crate::doctor::Status::Fail)
        .map(|c| {
            format!(
                "  {}: {} ({})",
                c.id,
                c.summary,
                c.remediation.as_deref().unwrap_or("see kura doctor")
            )
        })
        .collect();
    if failures.is_empty() {
        Ok(())
    } else {
        Err(StartError::Baseline(failures.join("\n")))
    }
}

/// Kura ID's settings from the configuration; the rest keep their defaults.
fn identity_config(
    settings: &kura_config::IdentitySettings,
    server: &kura_config::ServerConfig,
) -> IdentityConfig {
    let mut config = IdentityConfig::default();
    // Passkeys are bound to the name people reach Kura at: the public URL,
    // or `localhost` on the listening port. A public URL without a domain
    // name leaves passkeys unavailable (the rest of Kura ID works).
    let url = server
        .public_url
        .clone()
        .unwrap_or_else(|| format!("https://localhost:{}", server.bind.port()));
    match PasskeyConfig::for_public_url(&url) {
        Ok(p) => config.passkeys = p,
        Err(reason) => {
            tracing::warn!(%reason, "passkeys are unavailable");
            config.passkeys.rp_id = String::new();
        }
    }
    config.session.idle_timeout = Duration::minutes(i64::from(settings.session_idle_minutes));
    config.session.absolute_timeout = Duration::hours(i64::from(settings.session_absolute_hours));
    config.session.step_up_window = Duration::minutes(i64::from(settings.step_up_minutes));
    config.invitation_ttl = Duration::days(i64::from(settings.invitation_days));
    config.max_token_lifetime = Duration::days(i64::from(settings.max_token_days));
    config.totp_issuer = settings.totp_issuer.clone();
    config
}

/// The engine settings from `[connect]` (validated when the configuration
/// was loaded, so a range that does not parse here cannot occur), with the
/// SMTP relay's files read; an unreadable one stops the start, naming it.
fn connect_config(config: &Config) -> Result<kura_connect::EngineConfig, StartError> {
    let c = &config.connect;
    let allow = c
        .outbound_allow
        .iter()
        .filter_map(|s| {
            let s = s.trim();
            s.parse::<ipnet::IpNet>()
                .ok()
                .or_else(|| s.parse::<std::net::IpAddr>().ok().map(ipnet::IpNet::from))
        })
        .collect();
    Ok(kura_connect::EngineConfig {
        workers: c.workers,
        team_concurrency: c.team_concurrency,
        lease: std::time::Duration::from_secs(c.lease_secs),
        max_takeovers: 5,
        outbound: kura_connect::outbound::OutboundPolicy {
            allow,
            max_response_bytes: c.max_response_bytes,
            ..kura_connect::outbound::OutboundPolicy::default()
        },
        retention: (c.run_retention_days > 0)
            .then(|| std::time::Duration::from_secs(u64::from(c.run_retention_days) * 86_400)),
        smtp: c.smtp.as_ref().map(smtp_relay).transpose()?,
        public_url: config.server.public_url.clone(),
        ..kura_connect::EngineConfig::default()
    })
}

/// `[connect.smtp]` as the engine's relay.
fn smtp_relay(m: &kura_config::ConnectSmtp) -> Result<SmtpRelay, StartError> {
    let refuse = |detail: String| {
        StartError::Event(EventError::Invalid(format!("[connect.smtp]: {detail}")))
    };
    let (host, port) = m
        .relay
        .rsplit_once(':')
        .and_then(|(h, p)| Some((h.trim_matches(['[', ']']), p.parse::<u16>().ok()?)))
        .ok_or_else(|| refuse(format!("relay `{}` is not host:port", m.relay)))?;
    let read = |path: &std::path::Path| {
        std::fs::read(path).map_err(|e| refuse(format!("cannot read {}: {e}", path.display())))
    };
    let credentials = match (&m.username, &m.password_file) {
        (Some(user), Some(file)) => {
            let raw = zeroize::Zeroizing::new(read(file)?);
            let password = std::str::from_utf8(&raw)
                .map_err(|_| refuse("password_file is not UTF-8".into()))?;
            Some((
                user.clone(),
                zeroize::Zeroizing::new(password.trim_end().to_owned()),
            ))
        }
        _ => None,
    };
    kura_connect::steps::email::parse_mailbox(&m.from).map_err(refuse)?;
    Ok(SmtpRelay {
        host: host.to_owned(),
        port,
        security: SmtpSecurity::parse(&m.security)
            .ok_or_else(|| refuse(format!("security `{}`", m.security)))?,
        ca_pem: m.ca_file.as_deref().map(read).transpose()?,
        credentials,
        from: m.from.clone(),
        timeout: std::time::Duration::from_secs(m.timeout_secs),
    })
}
