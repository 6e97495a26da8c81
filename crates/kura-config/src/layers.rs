//! Layering: defaults < TOML file < `KURA_*` environment < flags.
//!
//! Each layer is merged into one TOML table, remembering where every key came
//! from, and the result is deserialised once into [`Config`]. An error then
//! names the key path and its source (`KURA_SERVER__BIND`, `kura.toml`, …).
//!
//! Environment variables map to keys by lower-casing and splitting on double
//! underscores: `KURA_SERVER__BIND` is `server.bind`, `KURA_DATA_DIR` is
//! `data_dir`. `KURA_MASTER_KEY_PASSPHRASE` sets `keys.passphrase`. Three
//! variables are not settings: `KURA_CONFIG` names the file, `KURA_LOG`
//! overrides the log filter and `KURA_NEW_MASTER_KEY_PASSPHRASE` feeds
//! `kura keys seal`.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};

use toml::{Table, Value};

use crate::model::{Config, Environment};

/// Where a setting's value came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    /// Built-in default.
    Default,
    /// The config file.
    File(PathBuf),
    /// An environment variable.
    Env(String),
    /// A command-line flag.
    Flag(String),
}

impl fmt::Display for Source {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Source::Default => f.write_str("default"),
            Source::File(p) => write!(f, "{}", p.display()),
            Source::Env(v) => write!(f, "environment variable {v}"),
            Source::Flag(n) => write!(f, "flag --{n}"),
        }
    }
}

/// A configuration that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file cannot be read.
    #[error("cannot read config file {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The file is not valid TOML.
    #[error("config file {path} is not valid TOML: {message}")]
    Syntax {
        /// The file.
        path: PathBuf,
        /// The parser's message, with line and column.
        message: String,
    },
    /// A key has a bad value or is unknown.
    #[error("config key `{key}` (from {origin}): {message}")]
    Invalid {
        /// Dotted key path.
        key: String,
        /// Where the value came from.
        origin: Source,
        /// What is wrong.
        message: String,
    },
}

/// The inputs to layering.
#[derive(Debug, Clone, Default)]
pub struct Layers {
    /// A TOML file, if one is used.
    pub file: Option<PathBuf>,
    /// Environment variables (all of them; non-`KURA_` ones are ignored).
    pub env: Vec<(String, String)>,
    /// Flag overrides: dotted key, flag name and value.
    pub flags: Vec<(String, String, Value)>,
}

/// Environment variables that are not settings.
const NOT_SETTINGS: &[&str] = &["KURA_CONFIG", "KURA_LOG", "KURA_NEW_MASTER_KEY_PASSPHRASE"];

impl Layers {
    /// Layers from this process's environment, with the config file named
    /// by `file` or else `KURA_CONFIG`.
    pub fn from_process(file: Option<PathBuf>) -> Self {
        let env: Vec<(String, String)> = std::env::vars().collect();
        let file = file.or_else(|| {
            env.iter()
                .find(|(k, _)| k == "KURA_CONFIG")
                .map(|(_, v)| PathBuf::from(v))
        });
        Self {
            file,
            env,
            flags: Vec::new(),
        }
    }

    /// Adds a flag override.
    pub fn flag(mut self, key: &str, flag: &str, value: Value) -> Self {
        self.flags.push((key.to_owned(), flag.to_owned(), value));
        self
    }

    /// Merges the layers and validates the result.
    pub fn load(&self) -> Result<Config, ConfigError> {
        let defaults = Value::try_from(Config::default()).map_err(|e| ConfigError::Invalid {
            key: String::new(),
            origin: Source::Default,
            message: e.to_string(),
        })?;
        let Value::Table(defaults) = defaults else {
            return Err(ConfigError::Invalid {
                key: String::new(),
                origin: Source::Default,
                message: "defaults are not a table".into(),
            });
        };
        let mut merged = defaults.clone();
        let mut sources: BTreeMap<String, Source> = BTreeMap::new();

        if let Some(path) = &self.file {
            let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
                path: path.clone(),
                source,
            })?;
            let table: Table = text
                .parse()
                .map_err(|e: toml::de::Error| ConfigError::Syntax {
                    path: path.clone(),
                    message: e.to_string(),
                })?;
            if let Some((key, _)) = find_secret_in_file(&table) {
                return Err(ConfigError::Invalid {
                    key,
                    origin: Source::File(path.clone()),
                    message: "secrets do not belong in config files; set KURA_MASTER_KEY_PASSPHRASE instead".into(),
                });
            }
            merge(
                &mut merged,
                table,
                "",
                &Source::File(path.clone()),
                &mut sources,
            );
        }

        for (name, value) in &self.env {
            let Some(rest) = name.strip_prefix("KURA_") else {
                continue;
            };
            if NOT_SETTINGS.contains(&name.as_str()) {
                continue;
            }
            let key = if name == "KURA_MASTER_KEY_PASSPHRASE" {
                "keys.passphrase".to_owned()
            } else {
                rest.to_ascii_lowercase()
                    .split("__")
                    .collect::<Vec<_>>()
                    .join(".")
            };
            let typed = typed_env_value(&defaults, &key, value);
            set_path(&mut merged, &key, typed);
            sources.insert(key, Source::Env(name.clone()));
        }

        for (key, flag, value) in &self.flags {
            set_path(&mut merged, key, value.clone());
            sources.insert(key.clone(), Source::Flag(flag.clone()));
        }

        let source_of = |key: &str| -> Source {
            // The most specific recorded source that covers the key.
            let mut k = key.to_owned();
            loop {
                if let Some(s) = sources.get(&k) {
                    return s.clone();
                }
                match k.rfind('.') {
                    Some(i) => k.truncate(i),
                    None => return Source::Default,
                }
            }
        };

        let config: Config = serde_path_to_error::deserialize(Value::Table(merged)).map_err(
            |e: serde_path_to_error::Error<toml::de::Error>| {
                let mut key = e.path().to_string();
                let message = e.inner().message().to_owned();
                if let Some(field) = unknown_field(&message)
                    && !key.ends_with(&field)
                {
                    key = if key == "." || key.is_empty() {
                        field
                    } else {
                        format!("{key}.{field}")
                    };
                }
                let origin = source_of(&key);
                ConfigError::Invalid {
                    key,
                    origin,
                    message,
                }
            },
        )?;
        validate(&config).map_err(|(key, message)| ConfigError::Invalid {
            origin: source_of(&key),
            key,
            message,
        })?;
        Ok(config)
    }
}

/// Pulls the field name out of serde's "unknown field `x`, expected …".
fn unknown_field(message: &str) -> Option<String> {
    let rest = message.strip_prefix("unknown field `")?;
    Some(rest.split('`').next()?.to_owned())
}

fn find_secret_in_file(table: &Table) -> Option<(String, ())> {
    table
        .get("keys")
        .and_then(Value::as_table)
        .and_then(|k| k.get("passphrase"))
        .map(|_| ("keys.passphrase".to_owned(), ()))
}

/// Environment values are strings; give them the type the default has, so
/// `KURA_STORAGE__READERS=8` is a number and `KURA_SETUP__X=007` stays text
/// where text is expected.
fn typed_env_value(defaults: &Table, key: &str, raw: &str) -> Value {
    let mut node: Option<&Value> = None;
    let mut table = Some(defaults);
    for part in key.split('.') {
        node = table.and_then(|t| t.get(part));
        table = node.and_then(Value::as_table);
    }
    match node {
        Some(Value::Integer(_)) => raw
            .trim()
            .parse::<i64>()
            .map(Value::Integer)
            .unwrap_or_else(|_| Value::String(raw.to_owned())),
        Some(Value::Boolean(_)) => match raw.trim().to_ascii_lowercase().as_str() {
            "true" | "1" | "yes" | "on" => Value::Boolean(true),
            "false" | "0" | "no" | "off" => Value::Boolean(false),
            _ => Value::String(raw.to_owned()),
        },
        _ => Value::String(raw.to_owned()),
    }
}

fn merge(
    into: &mut Table,
    from: Table,
    prefix: &str,
    source: &Source,
    sources: &mut BTreeMap<String, Source>,
) {
    for (k, v) in from {
        let path = if prefix.is_empty() {
            k.clone()
        } else {
            format!("{prefix}.{k}")
        };
        match (into.get_mut(&k), v) {
            (Some(Value::Table(existing)), Value::Table(incoming)) => {
                merge(existing, incoming, &path, source, sources);
            }
            (_, v) => {
                into.insert(k, v);
                sources.insert(path, source.clone());
            }
        }
    }
}

fn set_path(table: &mut Table, key: &str, value: Value) {
    let mut parts: Vec<&str> = key.split('.').collect();
    let Some(last) = parts.pop() else { return };
    let mut current = table;
    for part in parts {
        let entry = current
            .entry(part.to_owned())
            .or_insert_with(|| Value::Table(Table::new()));
        if !entry.is_table() {
            *entry = Value::Table(Table::new());
        }
        let Value::Table(next) = entry else { return };
        current = next;
    }
    current.insert(last.to_owned(), value);
}

/// Checks that go beyond types. Returns the key and what is wrong.
fn validate(c: &Config) -> Result<(), (String, String)> {
    let err = |k: &str, m: &str| Err((k.to_owned(), m.to_owned()));
    if c.data_dir.as_os_str().is_empty() {
        return err("data_dir", "must not be empty");
    }
    if c.server.request_timeout_secs == 0 || c.server.request_timeout_secs > 3600 {
        return err("server.request_timeout_secs", "must be between 1 and 3600");
    }
    if c.server.handshake_timeout_secs == 0 || c.server.handshake_timeout_secs > 120 {
        return err("server.handshake_timeout_secs", "must be between 1 and 120");
    }
    if c.server.shutdown_grace_secs > 3600 {
        return err("server.shutdown_grace_secs", "must be at most 3600");
    }
    if c.server.body_limit_bytes < 1024 || c.server.body_limit_bytes > 1 << 30 {
        return err(
            "server.body_limit_bytes",
            "must be between 1024 and 1073741824",
        );
    }
    if c.server.max_connections == 0 {
        return err("server.max_connections", "must be at least 1");
    }
    if let Some(url) = &c.server.public_url {
        let rest = url.strip_prefix("https://");
        if rest.is_none_or(|r| r.is_empty() || r.contains(char::is_whitespace)) {
            return err("server.public_url", "must be an https:// URL");
        }
    }
    match (&c.tls.cert_file, &c.tls.key_file) {
        (Some(_), None) => return err("tls.key_file", "must be set when tls.cert_file is set"),
        (None, Some(_)) => return err("tls.cert_file", "must be set when tls.key_file is set"),
        _ => {}
    }
    if c.tls.hsts_max_age_secs < 31_536_000 {
        return err(
            "tls.hsts_max_age_secs",
            "must be at least 31536000 (one year)",
        );
    }
    if c.storage.readers == 0 || c.storage.readers > 64 {
        return err("storage.readers", "must be between 1 and 64");
    }
    if c.setup.token_ttl_secs < 60 || c.setup.token_ttl_secs > 3600 {
        return err("setup.token_ttl_secs", "must be between 60 and 3600");
    }
    let i = &c.identity;
    let ranges: [(&str, u32, u32, u32); 5] = [
        (
            "identity.session_idle_minutes",
            i.session_idle_minutes,
            1,
            1440,
        ),
        (
            "identity.session_absolute_hours",
            i.session_absolute_hours,
            1,
            720,
        ),
        ("identity.step_up_minutes", i.step_up_minutes, 1, 60),
        ("identity.invitation_days", i.invitation_days, 1, 30),
        ("identity.max_token_days", i.max_token_days, 1, 3660),
    ];
    for (key, value, low, high) in ranges {
        if !(low..=high).contains(&value) {
            return Err((key.to_owned(), format!("must be between {low} and {high}")));
        }
    }
    if u64::from(i.session_idle_minutes) > u64::from(i.session_absolute_hours) * 60 {
        return err(
            "identity.session_idle_minutes",
            "must not exceed identity.session_absolute_hours",
        );
    }
    if i.totp_issuer.trim().is_empty() || i.totp_issuer.contains(':') {
        return err(
            "identity.totp_issuer",
            "must be non-empty and contain no `:`",
        );
    }
    let e = &c.events;
    if !(30..=3650).contains(&e.retention_days) {
        return err("events.retention_days", "must be between 30 and 3650");
    }
    if e.checkpoint_every == 0 || e.checkpoint_every > 1_000_000 {
        return err("events.checkpoint_every", "must be between 1 and 1000000");
    }
    if !(1..=86_400).contains(&e.checkpoint_after_secs) {
        return err(
            "events.checkpoint_after_secs",
            "must be between 1 and 86400",
        );
    }
    if e.export.poll_interval_ms < 10 || e.export.poll_interval_ms > 3_600_000 {
        return err(
            "events.export.poll_interval_ms",
            "must be between 10 and 3600000",
        );
    }
    if e.export.batch_size == 0 || e.export.batch_size > 1000 {
        return err("events.export.batch_size", "must be between 1 and 1000");
    }
    let mut names = std::collections::BTreeSet::new();
    let sinks = e
        .export
        .jsonl
        .iter()
        .map(|j| ("events.export.jsonl", j.name.as_str()))
        .chain(
            e.export
                .webhook
                .iter()
                .map(|w| ("events.export.webhook", w.name.as_str())),
        )
        .chain(
            e.export
                .syslog
                .iter()
                .map(|s| ("events.export.syslog", s.name.as_str())),
        );
    for (key, name) in sinks {
        let valid = !name.is_empty()
            && name.len() <= 64
            && name
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_');
        if !valid {
            return Err((
                format!("{key}.name"),
                format!("`{name}` must be 1-64 characters of a-z, 0-9, `-` and `_`"),
            ));
        }
        if !names.insert(name) {
            return Err((
                format!("{key}.name"),
                format!("`{name}` is used by two sinks; each needs its own cursor"),
            ));
        }
    }
    for j in &e.export.jsonl {
        if j.keep == 0 || j.max_bytes < 4096 || j.max_age_hours == 0 {
            return err(
                "events.export.jsonl",
                "keep must be at least 1, max_bytes at least 4096 and max_age_hours at least 1",
            );
        }
    }
    for s in &e.export.syslog {
        if s.client_cert_file.is_some() != s.client_key_file.is_some() {
            return err(
                "events.export.syslog.client_key_file",
                "client_cert_file and client_key_file go together",
            );
        }
    }
    if e.syslog.bind.is_some() && e.syslog.client_ca_file.is_none() {
        return err(
            "events.syslog.client_ca_file",
            "must be set when events.syslog.bind is: senders authenticate with client certificates",
        );
    }
    if e.syslog.max_connections == 0 || e.syslog.idle_timeout_secs == 0 {
        return err(
            "events.syslog",
            "max_connections and idle_timeout_secs must be at least 1",
        );
    }
    for w in &e.export.webhook {
        if w.timeout_secs == 0 || w.max_attempts == 0 {
            return err(
                "events.export.webhook",
                "timeout_secs and max_attempts must be at least 1",
            );
        }
    }
    validate_incidents(&e.incidents)?;
    let level_ok = c.log.level.split(',').all(|d| {
        let lvl = d
            .rsplit('=')
            .next()
            .unwrap_or("")
            .trim()
            .to_ascii_lowercase();
        ["error", "warn", "info", "debug", "trace", "off"].contains(&lvl.as_str())
    });
    if !level_ok {
        return err(
            "log.level",
            "must be error, warn, info, debug, trace or a filter such as `info,kura_server=debug`",
        );
    }
    if !(1024..=1024 * 1024).contains(&c.edge.sign_in_body_limit_bytes) {
        return err(
            "edge.sign_in_body_limit_bytes",
            "must be between 1024 and 1048576",
        );
    }
    for entry in &c.edge.trusted_proxies {
        if !is_cidr(entry) {
            return Err((
                "edge.trusted_proxies".into(),
                format!(
                    "`{entry}` is not an IPv4 or IPv6 address or CIDR range such as 10.0.0.0/8"
                ),
            ));
        }
    }
    validate_connect(&c.connect)?;
    if c.env == Environment::Production {
        production(c)?;
    }
    Ok(())
}

fn validate_connect(c: &crate::model::ConnectConfig) -> Result<(), (String, String)> {
    let err = |k: &str, m: &str| Err((k.to_owned(), m.to_owned()));
    if !(1..=64).contains(&c.workers) {
        return err("connect.workers", "must be between 1 and 64");
    }
    if !(1..=1000).contains(&c.team_concurrency) {
        return err("connect.team_concurrency", "must be between 1 and 1000");
    }
    if !(10..=3600).contains(&c.lease_secs) {
        return err("connect.lease_secs", "must be between 10 and 3600");
    }
    if !(1024..=16 * 1024 * 1024).contains(&c.webhook_body_limit_bytes) {
        return err(
            "connect.webhook_body_limit_bytes",
            "must be between 1024 and 16777216",
        );
    }
    if !(1024..=64 * 1024 * 1024).contains(&c.max_response_bytes) {
        return err(
            "connect.max_response_bytes",
            "must be between 1024 and 67108864",
        );
    }
    for entry in &c.outbound_allow {
        if !is_cidr(entry) {
            return Err((
                "connect.outbound_allow".into(),
                format!("`{entry}` is not an IPv4 or IPv6 address or CIDR range"),
            ));
        }
    }
    if let Some(m) = &c.smtp {
        let port_ok = m
            .relay
            .rsplit_once(':')
            .is_some_and(|(h, p)| !h.is_empty() && p.parse::<u16>().is_ok_and(|p| p > 0));
        if !port_ok {
            return err("connect.smtp.relay", "must be host:port");
        }
        if !["none", "starttls", "tls"].contains(&m.security.as_str()) {
            return err("connect.smtp.security", "must be none, starttls or tls");
        }
        if !m.from.contains('@') {
            return err("connect.smtp.from", "must be an e-mail address");
        }
        if m.username.is_some() != m.password_file.is_some() {
            return err(
                "connect.smtp.username",
                "username and password_file go together",
            );
        }
        if !(1..=300).contains(&m.timeout_secs) {
            return err("connect.smtp.timeout_secs", "must be between 1 and 300");
        }
    }
    Ok(())
}

/// The hardened baseline's configuration part: settings production refuses.
/// (TLS cannot be turned off or set below 1.2 in any mode: no such setting
/// exists. File modes, the firewall and key sealing are checked at start,
/// where the data directory and the stored policies are known.)
fn production(c: &Config) -> Result<(), (String, String)> {
    let verbose = c.log.level.split(',').any(|d| {
        let lvl = d
            .rsplit('=')
            .next()
            .unwrap_or("")
            .trim()
            .to_ascii_lowercase();
        lvl == "debug" || lvl == "trace"
    });
    if verbose {
        return Err((
            "log.level".into(),
            "debug and trace logging may write request details and are refused when env = production; use info".into(),
        ));
    }
    if !c.edge.enabled {
        return Err((
            "edge.enabled".into(),
            "the edge (firewall, rate limits, WAF) cannot be turned off when env = production"
                .into(),
        ));
    }
    Ok(())
}

/// Whether `s` is an address or a CIDR range (`a.b.c.d/n`, `x::/n`).
fn is_cidr(s: &str) -> bool {
    let s = s.trim();
    let (addr, prefix) = match s.split_once('/') {
        Some((a, p)) => (a, Some(p)),
        None => (s, None),
    };
    let Ok(ip) = addr.parse::<std::net::IpAddr>() else {
        return false;
    };
    let max = if ip.is_ipv4() { 32 } else { 128 };
    prefix.is_none_or(|p| p.parse::<u8>().is_ok_and(|n| n <= max))
}

fn validate_incidents(i: &crate::model::IncidentsConfig) -> Result<(), (String, String)> {
    let err = |k: &str, m: &str| Err((k.to_owned(), m.to_owned()));
    if !(1..=300).contains(&i.poll_interval_secs) {
        return err(
            "events.incidents.poll_interval_secs",
            "must be between 1 and 300",
        );
    }
    if !(1..=100).contains(&i.max_attempts) {
        return err("events.incidents.max_attempts", "must be between 1 and 100");
    }
    if !(1..=3600).contains(&i.backoff_initial_secs) {
        return err(
            "events.incidents.backoff_initial_secs",
            "must be between 1 and 3600",
        );
    }
    if i.backoff_max_secs < i.backoff_initial_secs || i.backoff_max_secs > 86_400 {
        return err(
            "events.incidents.backoff_max_secs",
            "must be at least backoff_initial_secs and at most 86400",
        );
    }
    let mut names = std::collections::BTreeSet::new();
    let channels = i
        .webhook
        .iter()
        .map(|w| ("webhook", &w.name, &w.min_severity, w.timeout_secs))
        .chain(
            i.email
                .iter()
                .map(|m| ("email", &m.name, &m.min_severity, m.timeout_secs)),
        );
    for (kind, name, min_severity, timeout_secs) in channels {
        let key = |field: &str| format!("events.incidents.{kind}.{field}");
        let valid = !name.is_empty()
            && name.len() <= 64
            && name
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_');
        if !valid {
            return Err((
                key("name"),
                format!("`{name}` must be 1-64 characters of a-z, 0-9, `-` and `_`"),
            ));
        }
        if !names.insert(name.as_str()) {
            return Err((key("name"), format!("`{name}` names two channels")));
        }
        if !["sev1", "sev2", "sev3", "sev4"].contains(&min_severity.as_str()) {
            return Err((
                key("min_severity"),
                format!("`{min_severity}` is not a severity (expected sev1, sev2, sev3 or sev4)"),
            ));
        }
        if timeout_secs == 0 || timeout_secs > 300 {
            return Err((key("timeout_secs"), "must be between 1 and 300".into()));
        }
    }
    for m in &i.email {
        if !["none", "starttls", "tls"].contains(&m.security.as_str()) {
            return err(
                "events.incidents.email.security",
                "must be tls, starttls or none (none only to a loopback relay)",
            );
        }
        if m.security != "none" && m.ca_file.is_none() {
            return err(
                "events.incidents.email.ca_file",
                "is required with tls or starttls (no root store is bundled)",
            );
        }
        if m.username.is_some() != m.password_file.is_some() {
            return err(
                "events.incidents.email.password_file",
                "username and password_file go together",
            );
        }
        if m.to.is_empty() {
            return err("events.incidents.email.to", "needs at least one recipient");
        }
    }
    Ok(())
}

impl Config {
    /// The effective configuration as TOML, with secrets redacted.
    pub fn to_redacted_toml(&self) -> Result<String, ConfigError> {
        toml::to_string_pretty(self).map_err(|e| ConfigError::Invalid {
            key: String::new(),
            origin: Source::Default,
            message: e.to_string(),
        })
    }

    /// The data directory's path, as given.
    pub fn data_dir(&self) -> &Path {
        &self.data_dir
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::TlsVersion;
    use secrecy::ExposeSecret;

    fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn defaults_need_nothing() {
        let c = Layers::default().load().unwrap();
        assert_eq!(c.server.bind.to_string(), "127.0.0.1:8443");
        assert_eq!(c.data_dir, PathBuf::from("./kura-data"));
        assert_eq!(c.tls.min_version, TlsVersion::V1_2);
    }

    #[test]
    fn layers_apply_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("kura.toml");
        std::fs::write(
            &file,
            "data_dir = '/from/file'\n[server]\nbind = '127.0.0.1:1000'\nrequest_timeout_secs = 5\n[storage]\nreaders = 2\n",
        )
        .unwrap();
        let layers = Layers {
            file: Some(file),
            env: env(&[
                ("KURA_SERVER__BIND", "127.0.0.1:2000"),
                ("KURA_STORAGE__READERS", "8"),
                ("KURA_MASTER_KEY_PASSPHRASE", "hunter2hunter2"),
                ("HOME", "/root"),
            ]),
            flags: vec![],
        }
        .flag(
            "server.bind",
            "bind",
            Value::String("127.0.0.1:3000".into()),
        );
        let c = layers.load().unwrap();
        assert_eq!(c.data_dir, PathBuf::from("/from/file"), "file over default");
        assert_eq!(c.server.request_timeout_secs, 5);
        assert_eq!(c.storage.readers, 8, "env over file, typed");
        assert_eq!(c.server.bind.to_string(), "127.0.0.1:3000", "flag over env");
        assert_eq!(
            c.keys.passphrase.as_ref().unwrap().expose_secret(),
            "hunter2hunter2"
        );
        let shown = c.to_redacted_toml().unwrap();
        assert!(!shown.contains("hunter2"), "{shown}");
        assert!(shown.contains("[REDACTED]"));
        assert!(!format!("{c:?}").contains("hunter2"));
    }

    #[test]
    fn errors_name_the_key_and_its_source() {
        let e = Layers {
            env: env(&[("KURA_SERVER__BIND", "not-an-address")]),
            ..Default::default()
        }
        .load()
        .unwrap_err()
        .to_string();
        assert!(e.contains("`server.bind`"), "{e}");
        assert!(e.contains("KURA_SERVER__BIND"), "{e}");

        let e = Layers {
            env: env(&[("KURA_SERVER__BNID", "x")]),
            ..Default::default()
        }
        .load()
        .unwrap_err()
        .to_string();
        assert!(
            e.contains("`server.bnid`") && e.contains("unknown field"),
            "{e}"
        );

        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("kura.toml");
        std::fs::write(&file, "[storage]\nreaders = 0\n").unwrap();
        let e = Layers {
            file: Some(file.clone()),
            ..Default::default()
        }
        .load()
        .unwrap_err()
        .to_string();
        assert!(
            e.contains("`storage.readers`") && e.contains("kura.toml"),
            "{e}"
        );

        std::fs::write(&file, "[tls]\nmin_version = '1.1'\n").unwrap();
        let e = Layers {
            file: Some(file.clone()),
            ..Default::default()
        }
        .load()
        .unwrap_err()
        .to_string();
        assert!(e.contains("`tls.min_version`"), "{e}");

        std::fs::write(&file, "[server\nbind=1").unwrap();
        let e = Layers {
            file: Some(file.clone()),
            ..Default::default()
        }
        .load()
        .unwrap_err();
        assert!(matches!(e, ConfigError::Syntax { .. }), "{e}");

        std::fs::write(&file, "[keys]\npassphrase = 'x'\n").unwrap();
        let e = Layers {
            file: Some(file),
            ..Default::default()
        }
        .load()
        .unwrap_err()
        .to_string();
        assert!(e.contains("KURA_MASTER_KEY_PASSPHRASE"), "{e}");
    }

    #[test]
    fn export_sinks_need_unique_valid_names() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("kura.toml");
        std::fs::write(
            &file,
            "[[events.export.jsonl]]\nname = 'siem'\ndir = '/tmp/x'\n\n[[events.export.webhook]]\nname = 'siem'\nurl = 'https://siem.example/'\nsecret_file = '/etc/s'\n",
        )
        .unwrap();
        let e = Layers {
            file: Some(file.clone()),
            ..Default::default()
        }
        .load()
        .unwrap_err()
        .to_string();
        assert!(
            e.contains("`events.export.webhook.name`") && e.contains("two sinks"),
            "{e}"
        );
        std::fs::write(
            &file,
            "[events]\nretention_days = 400\n[[events.export.jsonl]]\nname = 'local'\ndir = '/tmp/x'\nkeep = 3\n",
        )
        .unwrap();
        let c = Layers {
            file: Some(file),
            ..Default::default()
        }
        .load()
        .unwrap();
        assert_eq!(c.events.export.jsonl[0].keep, 3);
        assert_eq!(c.events.export.jsonl[0].prefix, "events");
    }

    #[test]
    fn incident_channels_are_named_once_with_a_severity() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("kura.toml");
        let load = |toml: &str| {
            std::fs::write(&file, toml).unwrap();
            Layers {
                file: Some(file.clone()),
                ..Default::default()
            }
            .load()
        };
        let hook = |name: &str, sev: &str| {
            format!(
                "[[events.incidents.webhook]]\nname = '{name}'\nurl = 'https://pager.example/'\nsecret_file = '/etc/s'\nmin_severity = '{sev}'\n"
            )
        };
        let c = load(&format!(
            "[events.incidents]\nmax_attempts = 4\n{}",
            hook("pager", "sev2")
        ))
        .unwrap();
        assert_eq!(c.events.incidents.max_attempts, 4);
        assert_eq!(c.events.incidents.webhook[0].min_severity, "sev2");
        assert_eq!(c.events.incidents.webhook[0].timeout_secs, 10);
        assert_eq!(c.events.incidents.backoff_initial_secs, 30);

        let e = load(&hook("pager", "sev5")).unwrap_err().to_string();
        assert!(
            e.contains("`events.incidents.webhook.min_severity`") && e.contains("sev5"),
            "{e}"
        );
        let twice = format!("{}{}", hook("pager", "sev1"), hook("pager", "sev2"));
        let e = load(&twice).unwrap_err().to_string();
        assert!(e.contains("names two channels"), "{e}");
        let mail = |extra: &str| {
            format!(
                "[[events.incidents.email]]\nname = 'mail'\nrelay = '127.0.0.1:25'\nfrom = 'kura@example.org'\nto = ['sec@example.org']\nmin_severity = 'sev2'\n{extra}"
            )
        };
        let c = load(&mail("security = 'none'\n")).unwrap();
        assert_eq!(c.events.incidents.email[0].relay, "127.0.0.1:25");
        let e = load(&mail("security = 'tls'\n")).unwrap_err().to_string();
        assert!(e.contains("`events.incidents.email.ca_file`"), "{e}");
        let e = load(&mail("security = 'ssl3'\n")).unwrap_err().to_string();
        assert!(e.contains("`events.incidents.email.security`"), "{e}");
        let e = load(&format!(
            "{}{}",
            hook("mail", "sev1"),
            mail("security = 'none'\n")
        ))
        .unwrap_err()
        .to_string();
        assert!(e.contains("`events.incidents.email.name`"), "{e}");
        let e = load("[events.incidents]\nbackoff_initial_secs = 60\nbackoff_max_secs = 10\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("`events.incidents.backoff_max_secs`"), "{e}");
    }

    #[test]
    fn identity_settings_are_bounded() {
        let c = Layers {
            env: env(&[("KURA_IDENTITY__SESSION_IDLE_MINUTES", "15")]),
            ..Default::default()
        }
        .load()
        .unwrap();
        assert_eq!(c.identity.session_idle_minutes, 15);
        let e = Layers {
            env: env(&[
                ("KURA_IDENTITY__SESSION_IDLE_MINUTES", "120"),
                ("KURA_IDENTITY__SESSION_ABSOLUTE_HOURS", "1"),
            ]),
            ..Default::default()
        }
        .load()
        .unwrap_err()
        .to_string();
        assert!(e.contains("`identity.session_idle_minutes`"), "{e}");
        let e = Layers {
            env: env(&[("KURA_IDENTITY__STEP_UP_MINUTES", "0")]),
            ..Default::default()
        }
        .load()
        .unwrap_err()
        .to_string();
        assert!(
            e.contains("`identity.step_up_minutes`") && e.contains("between 1 and 60"),
            "{e}"
        );
    }

    #[test]
    fn event_checkpoint_settings_are_bounded() {
        let c = Layers {
            env: env(&[("KURA_EVENTS__CHECKPOINT_AFTER_SECS", "300")]),
            ..Default::default()
        }
        .load()
        .unwrap();
        assert_eq!(c.events.checkpoint_after_secs, 300);
        for bad in ["0", "86401"] {
            let e = Layers {
                env: env(&[("KURA_EVENTS__CHECKPOINT_AFTER_SECS", bad)]),
                ..Default::default()
            }
            .load()
            .unwrap_err()
            .to_string();
            assert!(
                e.contains("`events.checkpoint_after_secs`") && e.contains("between 1 and 86400"),
                "{e}"
            );
        }
    }

    #[test]
    fn cross_field_rules() {
        let e = Layers {
            env: env(&[("KURA_TLS__CERT_FILE", "/x.pem")]),
            ..Default::default()
        }
        .load()
        .unwrap_err()
        .to_string();
        assert!(e.contains("`tls.key_file`"), "{e}");
        let e = Layers {
            env: env(&[("KURA_SERVER__PUBLIC_URL", "http://kura.example")]),
            ..Default::default()
        }
        .load()
        .unwrap_err()
        .to_string();
        assert!(e.contains("https://"), "{e}");
    }

    fn load_toml(text: &str) -> Result<Config, ConfigError> {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("kura.toml");
        std::fs::write(&file, text).unwrap();
        Layers {
            file: Some(file),
            ..Default::default()
        }
        .load()
    }

    #[test]
    fn production_refuses_the_insecure_settings() {
        let e = load_toml("env = 'production'\n[log]\nlevel = 'info,kura_server=debug'\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("`log.level`") && e.contains("production"), "{e}");
        let e = load_toml("env = 'production'\n[edge]\nenabled = false\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("`edge.enabled`"), "{e}");
        // The same settings are allowed in development.
        let c = load_toml("[log]\nlevel = 'debug'\n[edge]\nenabled = false\n").unwrap();
        assert!(!c.edge.enabled);
        let c = load_toml("env = 'production'\n").unwrap();
        assert_eq!(c.env, Environment::Production);
    }

    #[test]
    fn trusted_proxies_must_be_ranges() {
        let c =
            load_toml("[edge]\ntrusted_proxies = ['10.0.0.0/8', '2001:db8::/32', '192.0.2.1']\n")
                .unwrap();
        assert_eq!(c.edge.trusted_proxies.len(), 3);
        for bad in ["10.0.0.0/33", "proxy.example", "2001:db8::/129"] {
            let e = load_toml(&format!("[edge]\ntrusted_proxies = ['{bad}']\n"))
                .unwrap_err()
                .to_string();
            assert!(e.contains("`edge.trusted_proxies`"), "{e}");
        }
    }
}
