//! The incident communication plan from the configuration file: the
//! notification policy (tries and back-off) and the configured webhook
//! channels, each with the least severe incidents it hears of. Channels
//! added through the API are the incident service's to load.

use std::sync::Arc;
use std::time::Duration;

use kura_config::IncidentsConfig;
use kura_events::EventError;
use kura_events::export::Backoff;
use kura_events::incident::{NotificationChannel, NotificationPolicy, Severity, WebhookChannel};
use kura_types::Clock;

use crate::bootstrap::StartError;

/// The smallest signing secret accepted, in bytes.
const MIN_SECRET_BYTES: usize = 32;

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
) -> Result<Vec<(Arc<dyn NotificationChannel>, Severity)>, StartError> {
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
        out.push((Arc::new(channel) as Arc<dyn NotificationChannel>, min_severity));
    }
    Ok(out)
}
