//! The persistence boundary of incidents: incidents, the alerts that opened
//! or joined them, linked events, timelines and notifications.
//!
//! The rules (which state may follow which, when an alert joins an incident,
//! which channels hear of which severity) live in `kura-events`; this trait
//! only stores and fetches. States and severities cross it as their stable
//! text names. Every change is one [`IncidentWrite`], applied in one
//! transaction together with the security events that describe it, so an
//! incident never changes without its event and never records an event for a
//! change that did not happen. Updates are compare-and-swap on the
//! incident's `version`: a change decided on a stale copy fails with
//! [`StoreError::Conflict`] and writes nothing.

use async_trait::async_trait;
use kura_types::{AlertId, EventId, IncidentId, NotificationId, TeamId};
use time::OffsetDateTime;

use crate::StoreError;
use crate::events::{EventRecord, StoredEvent};

/// An incident row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IncidentRecord {
    /// Its id (UUIDv7, so ids sort by creation).
    pub id: IncidentId,
    /// One line for responders.
    pub title: String,
    /// `sev1` .. `sev4`.
    pub severity: String,
    /// `open`, `triaged`, `investigating`, `contained`, `resolved`, `closed`.
    pub state: String,
    /// The responder who owns it, as an actor key (`account:<id>`).
    pub owner: Option<String>,
    /// The team concerned, if any.
    pub team: Option<TeamId>,
    /// The detection rule that opened it, if an alert did.
    pub rule: Option<String>,
    /// What the rule fired about (an account, an address), for joining.
    pub subject: Option<String>,
    /// When it was opened.
    pub opened_at: OffsetDateTime,
    /// When it last changed.
    pub updated_at: OffsetDateTime,
    /// When its latest alert was raised.
    pub last_alert_at: Option<OffsetDateTime>,
    /// Bumped by every change; updates name the version they were decided on.
    pub version: u64,
}

/// A stored alert; every alert belongs to the incident it opened or joined.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AlertRecord {
    /// Its id.
    pub id: AlertId,
    /// Its incident.
    pub incident: IncidentId,
    /// The rule that fired.
    pub rule: String,
    /// `sev1` .. `sev4`.
    pub severity: String,
    /// What the rule fired about.
    pub subject: String,
    /// One sentence for a responder.
    pub summary: String,
    /// The team concerned, if any.
    pub team: Option<TeamId>,
    /// When it was raised.
    pub raised_at: OffsetDateTime,
    /// The events that caused it.
    pub events: Vec<EventId>,
}

/// One line of an incident's timeline.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TimelineEntry {
    /// When.
    pub at: OffsetDateTime,
    /// Who, as an actor key.
    pub actor: String,
    /// `opened`, `alert`, `state`, `severity`, `assigned`, `note`,
    /// `notification`.
    pub kind: String,
    /// What, for people.
    pub text: String,
}

/// One notification of an incident to one channel, with its delivery state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NotificationRecord {
    /// Its id.
    pub id: NotificationId,
    /// The incident.
    pub incident: IncidentId,
    /// The channel's name in the communication plan.
    pub channel: String,
    /// Why it is sent (`opened`, `escalated`, `state`).
    pub reason: String,
    /// The incident's severity when it was queued.
    pub severity: String,
    /// The message.
    pub text: String,
    /// When it was queued.
    pub created_at: OffsetDateTime,
    /// `pending`, `delivered` or `failed`.
    pub status: String,
    /// Delivery tries so far.
    pub attempts: u32,
    /// When it was last tried.
    pub last_attempt_at: Option<OffsetDateTime>,
    /// Why the last try failed.
    pub last_error: Option<String>,
    /// When it was delivered.
    pub delivered_at: Option<OffsetDateTime>,
    /// When a pending notification is tried next (`None`: now).
    pub next_attempt_at: Option<OffsetDateTime>,
}

/// One delivery try of a notification.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NotificationAttempt {
    /// Which notification.
    pub notification: NotificationId,
    /// 1 for the first try.
    pub attempt: u32,
    /// When.
    pub at: OffsetDateTime,
    /// Whether the receiver acknowledged it.
    pub ok: bool,
    /// The receiver's status code (HTTP status, SMTP reply), if it answered.
    pub status: Option<u16>,
    /// Why it failed.
    pub error: Option<String>,
}

/// A notification channel added through the API. Channels from the
/// configuration file are not stored.
#[derive(Clone, PartialEq, Eq)]
pub struct ChannelRecord {
    /// Unique name.
    pub name: String,
    /// `webhook` (the kinds are `kura-events`' to define).
    pub kind: String,
    /// `sev1` .. `sev4`: the least severe incidents it hears of.
    pub min_severity: String,
    /// The channel's settings as JSON, without secrets.
    pub settings: String,
    /// The signing secret, for kinds that sign.
    pub secret: Option<Vec<u8>>,
    /// Who added it, as an actor key.
    pub created_by: String,
    /// When.
    pub created_at: OffsetDateTime,
}

impl std::fmt::Debug for ChannelRecord {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ChannelRecord")
            .field("name", &self.name)
            .field("kind", &self.kind)
            .field("min_severity", &self.min_severity)
            .field("settings", &self.settings)
            .field("secret", &self.secret.as_ref().map(|_| "[REDACTED]"))
            .field("created_by", &self.created_by)
            .field("created_at", &self.created_at)
            .finish()
    }
}

/// Filters for [`IncidentStore::list`]; all set filters must match.
#[derive(Debug, Clone, Default)]
pub struct IncidentFilter {
    /// Only incidents in one of these states (empty: any).
    pub states: Vec<String>,
    /// Only incidents of one of these severities (empty: any).
    pub severities: Vec<String>,
    /// Only this team's incidents.
    pub team: Option<TeamId>,
    /// Continue after this incident (the previous page's `next_cursor`).
    pub cursor: Option<IncidentId>,
    /// Page size, clamped to 1..=500; 0 means 50.
    pub limit: usize,
}

/// One page of incidents, newest first.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IncidentPage {
    /// The incidents.
    pub incidents: Vec<IncidentRecord>,
    /// Pass as [`IncidentFilter::cursor`] for the next page; `None` at the end.
    pub next_cursor: Option<IncidentId>,
}

/// The columns an update changes; `None` leaves a column alone.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IncidentUpdate {
    /// New state.
    pub state: Option<String>,
    /// New severity.
    pub severity: Option<String>,
    /// New owner (`Some(None)` clears it).
    pub owner: Option<Option<String>>,
    /// New latest-alert time.
    pub last_alert_at: Option<OffsetDateTime>,
    /// The change's time.
    pub updated_at: OffsetDateTime,
}

/// Whether a write creates an incident or changes one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IncidentTarget {
    /// Insert this new incident.
    Create(IncidentRecord),
    /// Change an existing incident, if it is still at `expected_version`.
    Update {
        /// Which.
        id: IncidentId,
        /// The version the change was decided on.
        expected_version: u64,
        /// What changes.
        set: IncidentUpdate,
    },
}

/// Everything one change to an incident writes, in one transaction.
#[derive(Debug, Clone)]
pub struct IncidentWrite {
    /// The incident row.
    pub target: IncidentTarget,
    /// An alert that opened or joined it.
    pub alert: Option<AlertRecord>,
    /// Events to link (duplicates are ignored).
    pub link_events: Vec<EventId>,
    /// Timeline lines to add.
    pub timeline: Vec<TimelineEntry>,
    /// Notifications to queue.
    pub notifications: Vec<NotificationRecord>,
    /// The security events describing the change, appended to the log in
    /// the same transaction.
    pub events: Vec<EventRecord>,
}

/// The result of one delivery try of a notification.
#[derive(Debug, Clone)]
pub struct NotificationOutcome {
    /// Which notification.
    pub id: NotificationId,
    /// The status it was in when the try was decided on (`pending`).
    pub expected_status: String,
    /// Its status now: `pending` (try again later), `delivered` or `failed`.
    pub status: String,
    /// Tries this outcome adds.
    pub attempts: u32,
    /// The tries themselves, kept beside the notification.
    pub tries: Vec<NotificationAttempt>,
    /// For a notification left pending: not before this time.
    pub next_attempt_at: Option<OffsetDateTime>,
    /// When.
    pub at: OffsetDateTime,
    /// Why it failed.
    pub error: Option<String>,
    /// A timeline line for the incident.
    pub timeline: Option<TimelineEntry>,
    /// Security events describing the outcome.
    pub events: Vec<EventRecord>,
}

/// A linked event: its id and, unless retention pruned it, the event.
#[derive(Debug, Clone, PartialEq)]
pub struct LinkedEvent {
    /// The event's id.
    pub id: EventId,
    /// The stored event, or `None` if it has been pruned.
    pub stored: Option<StoredEvent>,
}

/// Incidents, whatever the backend.
#[async_trait]
pub trait IncidentStore: Send + Sync + std::fmt::Debug {
    /// Applies one change with its events, all or nothing. An update of an
    /// incident that does not exist fails with [`StoreError::NotFound`]; one
    /// whose version moved fails with [`StoreError::Conflict`].
    async fn write(&self, change: IncidentWrite) -> Result<(), StoreError>;

    /// One incident.
    async fn incident(&self, id: IncidentId) -> Result<Option<IncidentRecord>, StoreError>;

    /// Incidents, newest first.
    async fn list(&self, filter: IncidentFilter) -> Result<IncidentPage, StoreError>;

    /// The newest incident opened by `rule` about `subject` in `team` that is
    /// in one of `states` and had an alert at or after `since`.
    async fn joinable(
        &self,
        rule: &str,
        subject: &str,
        team: Option<TeamId>,
        states: Vec<String>,
        since: OffsetDateTime,
    ) -> Result<Option<IncidentRecord>, StoreError>;

    /// The timeline, oldest first.
    async fn timeline(&self, id: IncidentId) -> Result<Vec<TimelineEntry>, StoreError>;

    /// The alerts, oldest first.
    async fn alerts(&self, id: IncidentId) -> Result<Vec<AlertRecord>, StoreError>;

    /// The linked events, in log order (pruned ones last).
    async fn linked_events(&self, id: IncidentId) -> Result<Vec<LinkedEvent>, StoreError>;

    /// The notifications, oldest first.
    async fn notifications(&self, id: IncidentId) -> Result<Vec<NotificationRecord>, StoreError>;

    /// Pending notifications due at `now` (never tried, or held back until
    /// at most `now`), oldest first.
    async fn pending_notifications(
        &self,
        limit: usize,
        now: OffsetDateTime,
    ) -> Result<Vec<NotificationRecord>, StoreError>;

    /// Every delivery try of the incident's notifications, oldest first.
    async fn notification_attempts(
        &self,
        id: IncidentId,
    ) -> Result<Vec<NotificationAttempt>, StoreError>;

    /// The channels added through the API, by name.
    async fn channels(&self) -> Result<Vec<ChannelRecord>, StoreError>;

    /// Adds a channel with the events describing it; fails with
    /// [`StoreError::Conflict`] if the name is taken.
    async fn add_channel(
        &self,
        channel: ChannelRecord,
        events: Vec<EventRecord>,
    ) -> Result<(), StoreError>;

    /// Removes a channel with the events describing it; fails with
    /// [`StoreError::NotFound`] if there is none of that name.
    async fn remove_channel(
        &self,
        name: String,
        events: Vec<EventRecord>,
    ) -> Result<(), StoreError>;

    /// Records one delivery try with its events; fails with
    /// [`StoreError::Conflict`] if the notification left `expected_status`.
    async fn record_notification(&self, outcome: NotificationOutcome) -> Result<(), StoreError>;
}
