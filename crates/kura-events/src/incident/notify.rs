//! The communication plan: which channels hear of which incidents, and the
//! channels themselves.
//!
//! Notifications are queued as rows in the same transaction as the incident
//! change that calls for them (an outbox), and [`IncidentService`]'s
//! `deliver_notifications` sends pending ones and records each outcome, so
//! none is lost to a restart and each shows its delivery state. Webhooks are
//! the channel today ([`WebhookChannel`], signed like SIEM exports); email
//! through SMTP will be another [`NotificationChannel`].
//!
//! [`IncidentService`]: super::IncidentService

use async_trait::async_trait;
use kura_types::{IncidentId, NotificationId};
use serde_json::json;
use time::OffsetDateTime;

use super::Severity;
use crate::export::WebhookClient;

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

/// Somewhere notifications go.
#[async_trait]
pub trait NotificationChannel: Send + Sync + std::fmt::Debug {
    /// The channel's name in the plan.
    fn name(&self) -> &str;

    /// Sends one notification; returns how many tries it took, or the tries
    /// and the last failure.
    async fn send(&self, message: &NotificationMessage) -> Result<u32, (u32, String)>;
}

/// Notifications as signed webhooks, through the same client as SIEM
/// exports: `{"kind":"kura.incident.notification","id":…,"incident":…,
/// "title":…,"severity":…,"reason":…,"text":…,"created_at":…}`.
#[derive(Debug, Clone)]
pub struct WebhookChannel {
    client: WebhookClient,
}

impl WebhookChannel {
    /// A channel posting through `client` (named as the channel).
    pub fn new(client: WebhookClient) -> Self {
        Self { client }
    }
}

#[async_trait]
impl NotificationChannel for WebhookChannel {
    fn name(&self) -> &str {
        self.client.name()
    }

    async fn send(&self, m: &NotificationMessage) -> Result<u32, (u32, String)> {
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
        let body = serde_json::to_vec(&body).map_err(|e| (0, e.to_string()))?;
        let id = m.id.to_string();
        let outcome = self
            .client
            .post(&id, &format!("notification {id}"), body)
            .await;
        let tries = u32::try_from(outcome.attempts.len()).unwrap_or(u32::MAX);
        outcome.result.map(|()| tries).map_err(|e| (tries, e))
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
