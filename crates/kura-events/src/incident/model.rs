//! The incident types the service hands out, parsed from storage records.

use kura_store::StoreError;
use kura_store::incidents::{
    AlertRecord, IncidentRecord, LinkedEvent, NotificationAttempt, NotificationRecord,
    TimelineEntry,
};
use kura_types::{AlertId, EventId, IncidentId, TeamId};
use time::OffsetDateTime;

use super::{IncidentError, IncidentState, Severity, deadlines};

/// What a person opens by hand.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewIncident {
    /// One line for responders (1..=200 characters).
    pub title: String,
    /// How bad.
    pub severity: Severity,
    /// The team concerned, if any.
    pub team: Option<TeamId>,
    /// Who owns it from the start (an actor key such as `account:<id>`).
    pub owner: Option<String>,
    /// Events to link.
    pub events: Vec<EventId>,
    /// A first note.
    pub note: Option<String>,
}

/// An incident, parsed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Incident {
    /// Its id.
    pub id: IncidentId,
    /// One line for responders.
    pub title: String,
    /// How bad.
    pub severity: Severity,
    /// Where it stands.
    pub state: IncidentState,
    /// Who owns it (an actor key).
    pub owner: Option<String>,
    /// The team concerned.
    pub team: Option<TeamId>,
    /// The rule that opened it, if an alert did.
    pub rule: Option<String>,
    /// What that rule fired about.
    pub subject: Option<String>,
    /// When it was opened.
    pub opened_at: OffsetDateTime,
    /// When it last changed.
    pub updated_at: OffsetDateTime,
    /// When its latest alert was raised.
    pub last_alert_at: Option<OffsetDateTime>,
    /// Its version (bumped by every change).
    pub version: u64,
    /// When it should have left `open`, by its severity's target.
    pub acknowledge_by: OffsetDateTime,
    /// When it should be contained, by its severity's target.
    pub contain_by: OffsetDateTime,
}

impl TryFrom<IncidentRecord> for Incident {
    type Error = IncidentError;

    fn try_from(r: IncidentRecord) -> Result<Self, Self::Error> {
        let bad = |e: String| IncidentError::Store(StoreError::Malformed(e));
        let severity: Severity = r.severity.parse().map_err(|e| bad(format!("{e}")))?;
        let state: IncidentState = r.state.parse().map_err(|e| bad(format!("{e}")))?;
        let (acknowledge_by, contain_by) = deadlines(severity, r.opened_at);
        Ok(Self {
            id: r.id,
            title: r.title,
            severity,
            state,
            owner: r.owner,
            team: r.team,
            rule: r.rule,
            subject: r.subject,
            opened_at: r.opened_at,
            updated_at: r.updated_at,
            last_alert_at: r.last_alert_at,
            version: r.version,
            acknowledge_by,
            contain_by,
        })
    }
}

/// An incident with everything attached to it.
#[derive(Debug, Clone, PartialEq)]
pub struct IncidentDetail {
    /// The incident.
    pub incident: Incident,
    /// Its timeline, oldest first.
    pub timeline: Vec<TimelineEntry>,
    /// Its alerts, oldest first.
    pub alerts: Vec<AlertRecord>,
    /// Its linked events, in log order.
    pub events: Vec<LinkedEvent>,
    /// Its notifications and their delivery state.
    pub notifications: Vec<NotificationRecord>,
    /// Every delivery try of its notifications, oldest first.
    pub attempts: Vec<NotificationAttempt>,
}

/// Filters for [`IncidentService::list`].
#[derive(Debug, Clone, Default)]
pub struct IncidentListQuery {
    /// Only these states (empty: any).
    pub states: Vec<IncidentState>,
    /// Only these severities (empty: any).
    pub severities: Vec<Severity>,
    /// Only this team's incidents (team responders are always given this).
    pub team: Option<TeamId>,
    /// The previous page's `next_cursor`.
    pub cursor: Option<IncidentId>,
    /// Page size (0: 50; at most 500).
    pub limit: usize,
}

/// One page of incidents, newest first.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IncidentList {
    /// The incidents.
    pub incidents: Vec<Incident>,
    /// Pass as [`IncidentListQuery::cursor`] for the next page.
    pub next_cursor: Option<IncidentId>,
}

/// What [`IncidentService::handle_alert`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AlertOutcome {
    /// The stored alert.
    pub alert: AlertId,
    /// The incident it opened or joined.
    pub incident: IncidentId,
    /// Whether it opened a new incident.
    pub opened: bool,
}
