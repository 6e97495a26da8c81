//! The incident communication plan from the configuration file: the
//! notification policy (tries and back-off) and the configured webhook and
//! e-mail channels, each with the least severe incidents it hears of. Channels
//! added through the API are the incident service's to load.

use std::sync::Arc;
use std::time::Duration;

use kura_config::IncidentsConfig;
use kura_events::EventError;
use kura_events::export::Backoff;
use kura_events::incident::{
    EmailChannel, EmailConfig, NotificationChannel, NotificationPolicy, Severity, SmtpSecurity,
    WebhookChannel,
};
use kura_types::Clock;

use crate::bootstrap::StartError;

/// The smallest signing secret accepted, in bytes.
const MIN_SECRET_BYTES: usize = 32;

/// A channel and the least severe incidents it hears of.
pub(crate) type Routed = (Arc<dyn NotificationChannel>, Severity);

/// Tries and back-off of incident notifications.
pub(crate) fn policy(config: &IncidentsConfig) -> NotificationPolicy {
    NotificationPolicy {
        max_attempts: config.max_attempts,
        backoff: Backoff {
            initial: Duration::from_secs(config.backoff_initial_secs),
            max: Duration::from_secs(config.backoff_max_secs),
        },
    }
}

/// The configured channels with their routes. Refuses to start on a channel
/// that cannot work (unreadable or short secret, a URL other than https or
/// loopback http), naming it.
pub(crate) fn configured_channels(
    config: &IncidentsConfig,
    clock: &Arc<dyn Clock>,
) -> Result<Vec<Routed>, StartError> {
    let refuse = |name: &str, detail: String| {
        StartError::Event(EventError::Invalid(format!(
            "incident channel `{name}`: {detail}"
        )))
    };
    let mut out = Vec::new();
    for w in &config.webhook {
        let min_severity: Severity = w
            .min_severity
            .parse()
            .map_err(|e| refuse(&w.name, format!("{e}")))?;
        let secret = zeroize::Zeroizing::new(std::fs::read(&w.secret_file).map_err(|e| {
            refuse(
                &w.name,
                format!("cannot read secret_file {}: {e}", w.secret_file.display()),
            )
        })?);
        if secret.len() < MIN_SECRET_BYTES {
            return Err(refuse(
                &w.name,
                format!(
                    "secret_file {} holds fewer than {MIN_SECRET_BYTES} bytes",
                    w.secret_file.display()
                ),
            ));
        }
        let channel = WebhookChannel::one_try(
            &w.name,
            &w.url,
            &secret,
            Duration::from_secs(w.timeout_secs),
            Arc::clone(clock),
        )
        .map_err(|e| refuse(&w.name, e.to_string()))?;
        out.push((
            Arc::new(channel) as Arc<dyn NotificationChannel>,
            min_severity,
        ));
    }
    for m in &config.email {
        let min_severity: Severity = m
            .min_severity
            .parse()
            .map_err(|e| refuse(&m.name, format!("{e}")))?;
        let (host, port) = m
            .relay
            .rsplit_once(':')
            .and_then(|(h, p)| Some((h.trim_matches(['[', ']']), p.parse::<u16>().ok()?)))
            .ok_or_else(|| refuse(&m.name, format!("relay `{}` is not host:port", m.relay)))?;
        let security = match m.security.as_str() {
            "tls" => SmtpSecurity::Tls,
            "starttls" => SmtpSecurity::StartTls,
            _ => SmtpSecurity::None,
        };
        let read = |path: &std::path::Path| {
            std::fs::read(path)
                .map_err(|e| refuse(&m.name, format!("cannot read {}: {e}", path.display())))
        };
        let ca_pem = m.ca_file.as_deref().map(read).transpose()?;
        let credentials = match (&m.username, &m.password_file) {
            (Some(user), Some(file)) => {
                let raw = zeroize::Zeroizing::new(read(file)?);
                let password = std::str::from_utf8(&raw)
                    .map_err(|_| refuse(&m.name, "password_file is not UTF-8".into()))?;
                Some((
                    user.clone(),
                    zeroize::Zeroizing::new(password.trim_end().to_owned()),
                ))
            }
            _ => None,
        };
        let channel = EmailChannel::new(EmailConfig {
            name: m.name.clone(),
            host: host.to_owned(),
            port,
            security,
            ca_pem,
            credentials,
            from: m.from.clone(),
            to: m.to.clone(),
            timeout: Duration::from_secs(m.timeout_secs),
        })
        .map_err(|e| refuse(&m.name, e.to_string()))?;
        out.push((
            Arc::new(channel) as Arc<dyn NotificationChannel>,
            min_severity,
        ));
    }
    Ok(out)
}
