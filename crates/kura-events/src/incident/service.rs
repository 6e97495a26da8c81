//! [`IncidentService`]: the incident API the HTTP layer and the detector
//! call.

use std::sync::Arc;

use async_trait::async_trait;
use kura_store::StoreError;
use kura_store::events::EventRecord;
use kura_store::incidents::{
    AlertRecord, IncidentFilter, IncidentRecord, IncidentStore, IncidentTarget, IncidentUpdate,
    IncidentWrite, NotificationRecord, TimelineEntry,
};
use kura_types::{
    Action, Actor, AlertId, Clock, IncidentId, NotificationId, Outcome, SecurityEvent, TeamId,
};
use serde_json::Value;
use time::OffsetDateTime;

use super::channels::Channels;
use super::model::{
    AlertOutcome, Incident, IncidentDetail, IncidentList, IncidentListQuery, NewIncident,
};
use super::notify::{CommunicationPlan, NotificationChannel, NotificationPolicy, Route};
use super::{IncidentError, IncidentState, JOIN_WINDOW, MAX_NOTE, MAX_TITLE, Severity, actions};
use crate::detect::Alert;
use crate::sink::{AlertHandler, prepare};

/// Incidents: the rules over an [`IncidentStore`].
#[derive(Debug)]
pub struct IncidentService {
    pub(super) store: Arc<dyn IncidentStore>,
    pub(super) clock: Arc<dyn Clock>,
    pub(super) channels: Channels,
    pub(super) policy: NotificationPolicy,
    // Alerts are handled one at a time so two alerts about one subject
    // cannot both open an incident.
    alerts: tokio::sync::Mutex<()>,
}

pub(super) const SYSTEM: &str = "incidents";

fn system() -> Actor {
    Actor::System {
        component: SYSTEM.into(),
    }
}

fn clean_text(
    what: &str,
    text: &str,
    max: usize,
    multiline: bool,
) -> Result<String, IncidentError> {
    let text = text.trim();
    if text.is_empty() {
        return Err(IncidentError::Invalid(format!("the {what} is empty")));
    }
    if text.chars().count() > max {
        return Err(IncidentError::Invalid(format!(
            "the {what} is longer than {max} characters"
        )));
    }
    if text
        .chars()
        .any(|c| c.is_control() && !(multiline && (c == '\n' || c == '\t')))
    {
        return Err(IncidentError::Invalid(format!(
            "the {what} holds control characters"
        )));
    }
    Ok(text.to_owned())
}

fn truncate(text: &str, max: usize) -> String {
    let clean: String = text.chars().filter(|c| !c.is_control()).collect();
    if clean.chars().count() <= max {
        clean
    } else {
        let mut out: String = clean.chars().take(max.saturating_sub(1)).collect();
        out.push('…');
        out
    }
}

impl IncidentService {
    /// A service over `store` with a communication plan; add channels with
    /// [`IncidentService::with_channel`]. The store must share the event
    /// log's database (the SQLite store does) so changes and their events
    /// commit together.
    pub fn new(
        store: Arc<dyn IncidentStore>,
        clock: Arc<dyn Clock>,
        plan: CommunicationPlan,
    ) -> Self {
        Self {
            store,
            clock,
            channels: Channels::new(plan),
            policy: NotificationPolicy::default(),
            alerts: tokio::sync::Mutex::new(()),
        }
    }

    /// Adds a notification channel (by its name in the plan).
    #[must_use]
    pub fn with_channel(mut self, channel: Arc<dyn NotificationChannel>) -> Self {
        self.channels.add_fixed(channel);
        self
    }

    /// Adds a channel and its route to the fixed plan (a channel from the
    /// configuration file).
    #[must_use]
    pub fn with_routed_channel(
        mut self,
        channel: Arc<dyn NotificationChannel>,
        min_severity: Severity,
    ) -> Self {
        self.channels.add_fixed_route(Route {
            channel: channel.name().to_owned(),
            min_severity,
        });
        self.channels.add_fixed(channel);
        self
    }

    /// How many tries (across delivery rounds) a notification gets before it
    /// is marked failed, and how long to wait between them.
    #[must_use]
    pub fn with_notification_policy(mut self, policy: NotificationPolicy) -> Self {
        self.policy = NotificationPolicy {
            max_attempts: policy.max_attempts.max(1),
            ..policy
        };
        self
    }

    /// How many tries (across delivery rounds) a notification gets before it
    /// is marked failed. Default 10.
    #[must_use]
    pub fn with_max_notification_attempts(mut self, attempts: u32) -> Self {
        self.policy.max_attempts = attempts.max(1);
        self
    }

    pub(super) fn event(
        &self,
        by: &Actor,
        action: &str,
        incident: IncidentId,
        team: Option<TeamId>,
        details: Vec<(&str, Value)>,
    ) -> Result<EventRecord, IncidentError> {
        let action = Action::parse(action).map_err(|e| IncidentError::Invalid(e.to_string()))?;
        let mut event = SecurityEvent::new(self.clock.now(), by.clone(), action, Outcome::Success)
            .with_target(format!("incident:{incident}"))
            .with_detail("incident", incident.to_string());
        if let Some(team) = team {
            event = event.with_team(team);
        }
        for (k, v) in details {
            event = event.with_detail(k, v);
        }
        Ok(prepare(event)?)
    }

    fn notifications(
        &self,
        incident: IncidentId,
        severity: Severity,
        reason: &str,
        text: &str,
        now: OffsetDateTime,
    ) -> Vec<NotificationRecord> {
        self.channels
            .channels_for(severity)
            .into_iter()
            .map(|channel| NotificationRecord {
                id: NotificationId::new(),
                incident,
                channel,
                reason: reason.to_owned(),
                severity: severity.as_str().to_owned(),
                text: text.to_owned(),
                created_at: now,
                status: "pending".into(),
                attempts: 0,
                last_attempt_at: None,
                last_error: None,
                delivered_at: None,
                next_attempt_at: None,
            })
            .collect()
    }

    pub(super) fn entry(&self, by: &Actor, kind: &str, text: String) -> TimelineEntry {
        TimelineEntry {
            at: self.clock.now(),
            actor: by.key(),
            kind: kind.to_owned(),
            text,
        }
    }

    pub(super) async fn load(&self, id: IncidentId) -> Result<Incident, IncidentError> {
        self.store
            .incident(id)
            .await?
            .ok_or(IncidentError::NotFound(id))
            .and_then(Incident::try_from)
    }

    async fn write(&self, id: IncidentId, change: IncidentWrite) -> Result<(), IncidentError> {
        self.store.write(change).await.map_err(|e| match e {
            StoreError::Conflict(_) => IncidentError::Conflict(id),
            StoreError::NotFound(_) => IncidentError::NotFound(id),
            other => IncidentError::Store(other),
        })
    }

    fn update(&self, incident: &Incident, set: IncidentUpdate) -> IncidentTarget {
        IncidentTarget::Update {
            id: incident.id,
            expected_version: incident.version,
            set,
        }
    }

    fn unchanged(&self) -> IncidentUpdate {
        IncidentUpdate {
            state: None,
            severity: None,
            owner: None,
            last_alert_at: None,
            updated_at: self.clock.now(),
        }
    }

    /// Opens an incident by hand.
    pub async fn create(&self, by: &Actor, new: NewIncident) -> Result<Incident, IncidentError> {
        let title = clean_text("title", &new.title, MAX_TITLE, false)?;
        let owner = new
            .owner
            .as_deref()
            .map(|o| clean_text("owner", o, MAX_TITLE, false))
            .transpose()?;
        let note = new
            .note
            .as_deref()
            .map(|n| clean_text("note", n, MAX_NOTE, true))
            .transpose()?;
        let now = self.clock.now();
        let id = IncidentId::new();
        let record = IncidentRecord {
            id,
            title: title.clone(),
            severity: new.severity.as_str().into(),
            state: IncidentState::Open.as_str().into(),
            owner: owner.clone(),
            team: new.team,
            rule: None,
            subject: None,
            opened_at: now,
            updated_at: now,
            last_alert_at: None,
            version: 1,
        };
        let mut timeline = vec![self.entry(
            by,
            "opened",
            format!("opened as {} by {}", new.severity.as_str(), by.key()),
        )];
        if let Some(owner) = &owner {
            timeline.push(self.entry(by, "assigned", format!("assigned to {owner}")));
        }
        if let Some(note) = note {
            timeline.push(self.entry(by, "note", note));
        }
        let events = vec![self.event(
            by,
            actions::OPENED,
            id,
            new.team,
            vec![
                ("severity", new.severity.as_str().into()),
                ("title", title.clone().into()),
                ("owner", owner.clone().map_or(Value::Null, Value::from)),
            ],
        )?];
        let text = format!(
            "{} incident opened: {title}",
            new.severity.as_str().to_uppercase()
        );
        self.write(
            id,
            IncidentWrite {
                target: IncidentTarget::Create(record.clone()),
                alert: None,
                link_events: new.events,
                timeline,
                notifications: self.notifications(id, new.severity, "opened", &text, now),
                events,
            },
        )
        .await?;
        Incident::try_from(record)
    }

    /// Incidents matching `query`, newest first.
    pub async fn list(&self, query: IncidentListQuery) -> Result<IncidentList, IncidentError> {
        let page = self
            .store
            .list(IncidentFilter {
                states: query.states.iter().map(|s| s.as_str().to_owned()).collect(),
                severities: query
                    .severities
                    .iter()
                    .map(|s| s.as_str().to_owned())
                    .collect(),
                team: query.team,
                cursor: query.cursor,
                limit: query.limit,
            })
            .await?;
        Ok(IncidentList {
            incidents: page
                .incidents
                .into_iter()
                .map(Incident::try_from)
                .collect::<Result<_, _>>()?,
            next_cursor: page.next_cursor,
        })
    }

    /// One incident with its timeline, alerts, events and notifications.
    pub async fn get(&self, id: IncidentId) -> Result<IncidentDetail, IncidentError> {
        let incident = self.load(id).await?;
        Ok(IncidentDetail {
            incident,
            timeline: self.store.timeline(id).await?,
            alerts: self.store.alerts(id).await?,
            events: self.store.linked_events(id).await?,
            notifications: self.store.notifications(id).await?,
            attempts: self.store.notification_attempts(id).await?,
        })
    }

    /// Gives the incident an owner (an actor key such as `account:<id>`),
    /// or takes it away with `None`.
    pub async fn assign(
        &self,
        by: &Actor,
        id: IncidentId,
        owner: Option<String>,
    ) -> Result<Incident, IncidentError> {
        let owner = owner
            .as_deref()
            .map(|o| clean_text("owner", o, MAX_TITLE, false))
            .transpose()?;
        let incident = self.load(id).await?;
        if incident.owner == owner {
            return Ok(incident);
        }
        let text = match &owner {
            Some(o) => format!("assigned to {o}"),
            None => "unassigned".to_owned(),
        };
        let events = vec![self.event(
            by,
            actions::ASSIGNED,
            id,
            incident.team,
            vec![
                ("owner", owner.clone().map_or(Value::Null, Value::from)),
                (
                    "previous_owner",
                    incident.owner.clone().map_or(Value::Null, Value::from),
                ),
            ],
        )?];
        self.write(
            id,
            IncidentWrite {
                target: self.update(
                    &incident,
                    IncidentUpdate {
                        owner: Some(owner),
                        ..self.unchanged()
                    },
                ),
                alert: None,
                link_events: Vec::new(),
                timeline: vec![self.entry(by, "assigned", text)],
                notifications: Vec::new(),
                events,
            },
        )
        .await?;
        self.load(id).await
    }

    /// Moves the incident to `to`, if the state machine allows it, with an
    /// optional note. A refused move changes nothing and records no event.
    pub async fn transition(
        &self,
        by: &Actor,
        id: IncidentId,
        to: IncidentState,
        note: Option<String>,
    ) -> Result<Incident, IncidentError> {
        let note = note
            .as_deref()
            .map(|n| clean_text("note", n, MAX_NOTE, true))
            .transpose()?;
        let incident = self.load(id).await?;
        incident.state.check_transition(to)?;
        let from = incident.state;
        let mut timeline = vec![self.entry(by, "state", format!("{from} → {to}"))];
        if let Some(note) = note {
            timeline.push(self.entry(by, "note", note));
        }
        let events = vec![self.event(
            by,
            actions::STATE_CHANGED,
            id,
            incident.team,
            vec![("from", from.as_str().into()), ("to", to.as_str().into())],
        )?];
        let text = format!(
            "{} incident {to}: {}",
            incident.severity.as_str().to_uppercase(),
            incident.title
        );
        self.write(
            id,
            IncidentWrite {
                target: self.update(
                    &incident,
                    IncidentUpdate {
                        state: Some(to.as_str().into()),
                        ..self.unchanged()
                    },
                ),
                alert: None,
                link_events: Vec::new(),
                timeline,
                notifications: self.notifications(
                    id,
                    incident.severity,
                    "state",
                    &text,
                    self.clock.now(),
                ),
                events,
            },
        )
        .await?;
        self.load(id).await
    }

    /// Adds a note to the timeline. Notes are kept with the incident; the
    /// event records that a note was added and its length, not its text.
    pub async fn add_note(
        &self,
        by: &Actor,
        id: IncidentId,
        text: &str,
    ) -> Result<(), IncidentError> {
        let text = clean_text("note", text, MAX_NOTE, true)?;
        let incident = self.load(id).await?;
        let events = vec![self.event(
            by,
            actions::NOTE_ADDED,
            id,
            incident.team,
            vec![("length", text.chars().count().into())],
        )?];
        self.write(
            id,
            IncidentWrite {
                target: self.update(&incident, self.unchanged()),
                alert: None,
                link_events: Vec::new(),
                timeline: vec![self.entry(by, "note", text)],
                notifications: Vec::new(),
                events,
            },
        )
        .await
    }

    /// Stores an alert and opens or joins an incident for it (see the
    /// module documentation for the joining rule).
    pub async fn handle_alert(&self, alert: &Alert) -> Result<AlertOutcome, IncidentError> {
        let _one_at_a_time = self.alerts.lock().await;
        let by = system();
        let active: Vec<String> = IncidentState::ALL
            .into_iter()
            .filter(|s| s.is_active())
            .map(|s| s.as_str().to_owned())
            .collect();
        let mut conflict = None;
        // A person may change the incident between the look-up and the
        // write; the write then fails on the version and is decided again.
        for _ in 0..3 {
            let joinable = self
                .store
                .joinable(
                    alert.rule,
                    &alert.subject,
                    alert.team,
                    active.clone(),
                    alert.at - JOIN_WINDOW,
                )
                .await?;
            let alert_id = AlertId::new();
            let now = self.clock.now();
            let (id, opened, change) = match joinable {
                Some(record) => {
                    let incident = Incident::try_from(record)?;
                    let id = incident.id;
                    let raise = alert.severity < incident.severity;
                    let mut timeline = vec![self.entry(
                        &by,
                        "alert",
                        format!("alert {} joined: {}", alert.rule, alert.summary),
                    )];
                    let mut events = vec![self.event(
                        &by,
                        actions::ALERT_JOINED,
                        id,
                        incident.team,
                        vec![
                            ("alert", alert_id.to_string().into()),
                            ("rule", alert.rule.into()),
                        ],
                    )?];
                    let mut notifications = Vec::new();
                    if raise {
                        timeline.push(self.entry(
                            &by,
                            "severity",
                            format!("{} → {}", incident.severity, alert.severity),
                        ));
                        events.push(self.event(
                            &by,
                            actions::SEVERITY_RAISED,
                            id,
                            incident.team,
                            vec![
                                ("from", incident.severity.as_str().into()),
                                ("to", alert.severity.as_str().into()),
                            ],
                        )?);
                        let text = format!(
                            "incident escalated to {}: {}",
                            alert.severity.as_str().to_uppercase(),
                            incident.title
                        );
                        notifications =
                            self.notifications(id, alert.severity, "escalated", &text, now);
                    }
                    let last = incident.last_alert_at.map_or(alert.at, |t| t.max(alert.at));
                    let change = IncidentWrite {
                        target: self.update(
                            &incident,
                            IncidentUpdate {
                                severity: raise.then(|| alert.severity.as_str().to_owned()),
                                last_alert_at: Some(last),
                                ..self.unchanged()
                            },
                        ),
                        alert: None,
                        link_events: alert.events.clone(),
                        timeline,
                        notifications,
                        events,
                    };
                    (id, false, change)
                }
                None => {
                    let id = IncidentId::new();
                    let title = truncate(&alert.summary, MAX_TITLE);
                    let record = IncidentRecord {
                        id,
                        title: title.clone(),
                        severity: alert.severity.as_str().into(),
                        state: IncidentState::Open.as_str().into(),
                        owner: None,
                        team: alert.team,
                        rule: Some(alert.rule.to_owned()),
                        subject: Some(alert.subject.clone()),
                        opened_at: now,
                        updated_at: now,
                        last_alert_at: Some(alert.at),
                        version: 1,
                    };
                    let events = vec![self.event(
                        &by,
                        actions::OPENED,
                        id,
                        alert.team,
                        vec![
                            ("severity", alert.severity.as_str().into()),
                            ("title", title.clone().into()),
                            ("alert", alert_id.to_string().into()),
                            ("rule", alert.rule.into()),
                        ],
                    )?];
                    let text = format!(
                        "{} incident opened by rule {}: {title}",
                        alert.severity.as_str().to_uppercase(),
                        alert.rule
                    );
                    let change = IncidentWrite {
                        target: IncidentTarget::Create(record),
                        alert: None,
                        link_events: alert.events.clone(),
                        timeline: vec![self.entry(
                            &by,
                            "opened",
                            format!(
                                "opened as {} by alert {}: {}",
                                alert.severity, alert.rule, alert.summary
                            ),
                        )],
                        notifications: self.notifications(id, alert.severity, "opened", &text, now),
                        events,
                    };
                    (id, true, change)
                }
            };
            let change = IncidentWrite {
                alert: Some(AlertRecord {
                    id: alert_id,
                    incident: id,
                    rule: alert.rule.to_owned(),
                    severity: alert.severity.as_str().to_owned(),
                    subject: alert.subject.clone(),
                    summary: alert.summary.clone(),
                    team: alert.team,
                    raised_at: alert.at,
                    events: alert.events.clone(),
                }),
                ..change
            };
            match self.write(id, change).await {
                Ok(()) => {
                    return Ok(AlertOutcome {
                        alert: alert_id,
                        incident: id,
                        opened,
                    });
                }
                Err(IncidentError::Conflict(id)) => conflict = Some(id),
                Err(e) => return Err(e),
            }
        }
        Err(conflict.map_or_else(
            || IncidentError::Invalid("the alert could not be stored".into()),
            IncidentError::Conflict,
        ))
    }
}

#[async_trait]
impl AlertHandler for IncidentService {
    async fn handle_alert(&self, alert: &Alert) {
        if let Err(e) = IncidentService::handle_alert(self, alert).await {
            tracing::error!(rule = alert.rule, error = %e, "cannot open or join an incident for an alert");
        }
    }
}
