//! The communication plan: which channels hear of which incidents, and the
//! channels themselves.
//!
//! Notifications are queued as rows in the same transaction as the incident
//! change that calls for them (an outbox), and [`IncidentService`]'s
//! `deliver_notifications` sends the ones that are due, one try each, and
//! records every try. A failed try leaves the notification pending and holds
//! it back with exponential back-off ([`NotificationPolicy`]); after
//! `max_attempts` tries it is marked failed. Every try shows in the
//! incident's timeline, so none is lost to a restart and responders see
//! each delivery state. Webhooks are the channel today ([`WebhookChannel`],
//! signed like SIEM exports); channels come from the configuration file or
//! are added by security responders through the API (see `channels`).
//!
//! [`IncidentService`]: super::IncidentService

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use kura_crypto::hmac::HmacKey;
use kura_types::{Clock, IncidentId, NotificationId};
use serde_json::json;
use time::OffsetDateTime;

use super::Severity;
use crate::export::{Backoff, ExportError, RetryPolicy, WebhookClient, WebhookConfig};

/// One channel's place in the plan: it hears of incidents at `min_severity`
/// or worse (`Sev2` hears SEV1 and SEV2).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Route {
    /// The channel's name.
    pub channel: String,
    /// The least severe incidents it hears of.
    pub min_severity: Severity,
}

/// Who hears of what.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CommunicationPlan {
    /// The routes.
    pub routes: Vec<Route>,
}

impl CommunicationPlan {
    /// The channels that hear of an incident of `severity`.
    pub fn channels_for(&self, severity: Severity) -> Vec<&str> {
        self.routes
            .iter()
            .filter(|r| severity <= r.min_severity)
            .map(|r| r.channel.as_str())
            .collect()
    }
}

/// What a channel sends.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NotificationMessage {
    /// The notification (stable across retries; receivers drop repeats).
    pub id: NotificationId,
    /// The incident.
    pub incident: IncidentId,
    /// Its title.
    pub title: String,
    /// Its severity when the notification was queued.
    pub severity: String,
    /// Why: `opened`, `escalated`, `state`.
    pub reason: String,
    /// One paragraph for people.
    pub text: String,
    /// When it was queued.
    pub created_at: OffsetDateTime,
}

/// What one try of one notification did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeliveryTry {
    /// Whether the receiver acknowledged it.
    pub ok: bool,
    /// The receiver's status code (HTTP status), if it answered.
    pub status: Option<u16>,
    /// Why it failed.
    pub error: Option<String>,
}

impl DeliveryTry {
    /// A try that failed before or without an answer.
    pub fn failed(error: impl Into<String>) -> Self {
        Self {
            ok: false,
            status: None,
            error: Some(error.into()),
        }
    }
}

/// Somewhere notifications go.
#[async_trait]
pub trait NotificationChannel: Send + Sync + std::fmt::Debug {
    /// The channel's name in the plan.
    fn name(&self) -> &str;

    /// The channel's kind (`webhook`).
    fn kind(&self) -> &'static str;

    /// Where it delivers, for people (a webhook's URL without its query).
    fn target(&self) -> String;

    /// Tries once to deliver one notification. Retries are the service's:
    /// it schedules them with back-off and records each try.
    async fn send(&self, message: &NotificationMessage) -> DeliveryTry;
}

/// How patiently notifications are retried across delivery rounds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NotificationPolicy {
    /// Tries before a notification is marked failed (at least 1).
    pub max_attempts: u32,
    /// The wait after each failed try (doubling, with jitter).
    pub backoff: Backoff,
}

impl Default for NotificationPolicy {
    fn default() -> Self {
        Self {
            max_attempts: 10,
            backoff: Backoff {
                initial: Duration::from_secs(30),
                max: Duration::from_secs(3600),
            },
        }
    }
}

/// Notifications as signed webhooks, through the same client as SIEM
/// exports (`X-Kura-Signature: t=…,v1=…`, `X-Kura-Delivery: <notification
/// id>`): `{"kind":"kura.incident.notification","id":…,"incident":…,
/// "title":…,"severity":…,"reason":…,"text":…,"created_at":…}`.
#[derive(Debug, Clone)]
pub struct WebhookChannel {
    client: WebhookClient,
    target: String,
}

impl WebhookChannel {
    /// A channel posting through `client` (named as the channel). The
    /// client's own retries add to the service's; build it with
    /// [`WebhookChannel::one_try`] to leave every retry to the service.
    pub fn new(client: WebhookClient) -> Self {
        let target = client.target();
        Self { client, target }
    }

    /// A channel named `name` posting to `url`, signed with `secret`, one
    /// try per delivery round. Refuses URLs other than `https://` (or
    /// `http://` to a loopback address).
    pub fn one_try(
        name: &str,
        url: &str,
        secret: &[u8],
        timeout: Duration,
        clock: Arc<dyn Clock>,
    ) -> Result<Self, ExportError> {
        let mut config = WebhookConfig::new(name, url, HmacKey::new(secret));
        config.timeout = timeout;
        config.connect_timeout = timeout.min(Duration::from_secs(5));
        config.retry = RetryPolicy {
            max_attempts: 1,
            backoff: Backoff::default(),
        };
        Ok(Self::new(WebhookClient::new(config, clock, None)?))
    }
}

#[async_trait]
impl NotificationChannel for WebhookChannel {
    fn name(&self) -> &str {
        self.client.name()
    }

    fn kind(&self) -> &'static str {
        "webhook"
    }

    fn target(&self) -> String {
        self.target.clone()
    }

    async fn send(&self, m: &NotificationMessage) -> DeliveryTry {
        let created_at = m
            .created_at
            .format(&time::format_description::well_known::Rfc3339)
            .unwrap_or_default();
        let body = json!({
            "kind": "kura.incident.notification",
            "id": m.id.to_string(),
            "incident": m.incident.to_string(),
            "title": m.title,
            "severity": m.severity,
            "reason": m.reason,
            "text": m.text,
            "created_at": created_at,
        });
        let body = match serde_json::to_vec(&body) {
            Ok(body) => body,
            Err(e) => return DeliveryTry::failed(e.to_string()),
        };
        let id = m.id.to_string();
        let outcome = self
            .client
            .post(&id, &format!("notification {id}"), body)
            .await;
        let status = outcome.attempts.last().and_then(|a| a.status);
        match outcome.result {
            Ok(()) => DeliveryTry {
                ok: true,
                status,
                error: None,
            },
            Err(error) => DeliveryTry {
                ok: false,
                status,
                error: Some(error),
            },
        }
    }
}

/// What one delivery round did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct NotificationReport {
    /// Notifications delivered.
    pub delivered: usize,
    /// Notifications that failed this round and stay pending.
    pub retrying: usize,
    /// Notifications given up on.
    pub failed: usize,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn channels_hear_their_severity_and_worse() {
        let plan = CommunicationPlan {
            routes: vec![
                Route {
                    channel: "pager".into(),
                    min_severity: Severity::Sev2,
                },
                Route {
                    channel: "chat".into(),
                    min_severity: Severity::Sev4,
                },
            ],
        };
        assert_eq!(plan.channels_for(Severity::Sev1), ["pager", "chat"]);
        assert_eq!(plan.channels_for(Severity::Sev2), ["pager", "chat"]);
        assert_eq!(plan.channels_for(Severity::Sev3), ["chat"]);
        assert!(
            CommunicationPlan::default()
                .channels_for(Severity::Sev1)
                .is_empty()
        );
    }
}
