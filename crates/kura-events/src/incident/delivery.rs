//! Delivering queued incident notifications: one try per due notification
//! and round, every try recorded beside the notification and in the
//! incident's timeline, failures held back with exponential back-off until
//! the policy's last try, and an event for each outcome.

use std::future::Future;
use std::sync::Arc;

use kura_store::StoreError;
use kura_store::incidents::{NotificationAttempt, NotificationOutcome};
use kura_types::Actor;
use serde_json::Value;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use super::notify::{DeliveryTry, NotificationMessage, NotificationReport};
use super::service::{IncidentService, SYSTEM};
use super::{IncidentError, actions};

/// Notifications taken per round.
const ROUND: usize = 100;

fn rfc3339(t: OffsetDateTime) -> String {
    t.format(&Rfc3339).unwrap_or_default()
}

impl IncidentService {
    /// Sends every due pending notification once and records each try (a
    /// delivered, retried or finally failed notification is an event and a
    /// timeline line).
    pub async fn deliver_notifications(&self) -> Result<NotificationReport, IncidentError> {
        let mut report = NotificationReport::default();
        let by = Actor::System {
            component: format!("{SYSTEM}.notify"),
        };
        let max = self.policy.max_attempts;
        for n in self
            .store
            .pending_notifications(ROUND, self.clock.now())
            .await?
        {
            let incident = self.load(n.incident).await?;
            let message = NotificationMessage {
                id: n.id,
                incident: n.incident,
                title: incident.title.clone(),
                severity: n.severity.clone(),
                reason: n.reason.clone(),
                text: n.text.clone(),
                created_at: n.created_at,
            };
            let channel = self.channels.get(&n.channel);
            let tried = match &channel {
                Some(channel) => channel.send(&message).await,
                None => {
                    DeliveryTry::failed(format!("no channel named `{}` is configured", n.channel))
                }
            };
            let at = self.clock.now();
            // A missing channel is no try: nothing was sent anywhere.
            let (added, tries) = if channel.is_some() {
                let attempt = n.attempts.saturating_add(1);
                let record = NotificationAttempt {
                    notification: n.id,
                    attempt,
                    at,
                    ok: tried.ok,
                    status: tried.status,
                    error: tried.error.clone(),
                };
                (1, vec![record])
            } else {
                (0, Vec::new())
            };
            let total = n.attempts.saturating_add(added);
            let details = |extra: Vec<(&'static str, Value)>| {
                let mut d = vec![
                    ("notification", Value::from(n.id.to_string())),
                    ("channel", Value::from(n.channel.clone())),
                    ("reason", Value::from(n.reason.clone())),
                    ("attempts", Value::from(total)),
                ];
                d.extend(extra);
                d
            };
            let status = |s: Option<u16>| s.map_or(Value::Null, Value::from);
            let outcome = if tried.ok {
                report.delivered += 1;
                NotificationOutcome {
                    id: n.id,
                    expected_status: n.status.clone(),
                    status: "delivered".into(),
                    attempts: added,
                    tries,
                    next_attempt_at: None,
                    at,
                    error: None,
                    timeline: Some(self.entry(
                        &by,
                        "notification",
                        format!(
                            "{} notification delivered to {} (try {total})",
                            n.reason, n.channel
                        ),
                    )),
                    events: vec![self.event(
                        &by,
                        actions::NOTIFICATION_DELIVERED,
                        n.incident,
                        incident.team,
                        details(vec![("status", status(tried.status))]),
                    )?],
                }
            } else {
                let error = tried
                    .error
                    .clone()
                    .unwrap_or_else(|| "not delivered".into());
                if channel.is_none() || total >= max {
                    report.failed += 1;
                    NotificationOutcome {
                        id: n.id,
                        expected_status: n.status.clone(),
                        status: "failed".into(),
                        attempts: added,
                        tries,
                        next_attempt_at: None,
                        at,
                        error: Some(error.clone()),
                        timeline: Some(self.entry(
                            &by,
                            "notification",
                            format!(
                                "{} notification to {} failed for good after {total} tries: {error}",
                                n.reason, n.channel
                            ),
                        )),
                        events: vec![self.event(
                            &by,
                            actions::NOTIFICATION_FAILED,
                            n.incident,
                            incident.team,
                            details(vec![
                                ("status", status(tried.status)),
                                ("error", error.into()),
                            ]),
                        )?],
                    }
                } else {
                    report.retrying += 1;
                    let wait = self.policy.backoff.delay(total);
                    let next = at + wait;
                    NotificationOutcome {
                        id: n.id,
                        expected_status: n.status.clone(),
                        status: n.status.clone(),
                        attempts: added,
                        tries,
                        next_attempt_at: Some(next),
                        at,
                        error: Some(error.clone()),
                        timeline: Some(self.entry(
                            &by,
                            "notification",
                            format!(
                                "{} notification to {} failed (try {total} of {max}): {error}; next try after {}",
                                n.reason,
                                n.channel,
                                rfc3339(next)
                            ),
                        )),
                        events: vec![self.event(
                            &by,
                            actions::NOTIFICATION_RETRYING,
                            n.incident,
                            incident.team,
                            details(vec![
                                ("status", status(tried.status)),
                                ("error", error.into()),
                                ("next_attempt_at", rfc3339(next).into()),
                            ]),
                        )?],
                    }
                }
            };
            match self.store.record_notification(outcome).await {
                // Another node recorded this notification meanwhile.
                Ok(()) | Err(StoreError::Conflict(_)) => {}
                Err(e) => return Err(e.into()),
            }
        }
        Ok(report)
    }

    /// Re-reads the channels and delivers due notifications every
    /// `interval` until `shutdown` completes.
    pub async fn run_notifier(
        self: Arc<Self>,
        interval: std::time::Duration,
        shutdown: impl Future<Output = ()> + Send,
    ) {
        tokio::pin!(shutdown);
        loop {
            if let Err(e) = self.refresh_channels().await {
                tracing::warn!(error = %e, "incident channels could not be re-read");
            }
            if let Err(e) = self.deliver_notifications().await {
                tracing::warn!(error = %e, "incident notifications could not be delivered");
            }
            tokio::select! {
                biased;
                () = &mut shutdown => break,
                () = tokio::time::sleep(interval) => {}
            }
        }
    }
}
