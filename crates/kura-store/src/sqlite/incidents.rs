//! [`IncidentStore`] on the platform database (tables from the platform
//! migration "SIEM export cursors, delivery attempts, alerts and incidents").
//! Times are Unix nanoseconds (UTC), like the event log's.

use async_trait::async_trait;
use kura_types::{EventId, IncidentId, SecurityEvent, TeamId};
use rusqlite::types::Value as SqlValue;
use rusqlite::{Connection, OptionalExtension as _, Row, Transaction, params, params_from_iter};
use time::OffsetDateTime;

use super::Pool;
use super::events::append_in_tx;
use crate::StoreError;
use crate::events::{ChainHash, EventRecord, StoredEvent};
use crate::incidents::{
    AlertRecord, IncidentFilter, IncidentPage, IncidentRecord, IncidentStore, IncidentTarget,
    IncidentWrite, LinkedEvent, NotificationOutcome, NotificationRecord, TimelineEntry,
};
use crate::incidents::{ChannelRecord, NotificationAttempt};

/// Incidents in the platform database.
#[derive(Debug, Clone)]
pub struct SqliteIncidentStore {
    pool: Pool,
}

impl SqliteIncidentStore {
    /// A store over the platform database's pool (the one the event log
    /// lives in, so changes and their events share a transaction).
    pub fn new(pool: Pool) -> Self {
        Self { pool }
    }
}

fn ns(t: OffsetDateTime) -> Result<i64, StoreError> {
    i64::try_from(t.unix_timestamp_nanos())
        .map_err(|_| StoreError::Malformed("time is out of range".into()))
}

fn from_ns(n: i64) -> Result<OffsetDateTime, StoreError> {
    OffsetDateTime::from_unix_timestamp_nanos(i128::from(n))
        .map_err(|e| StoreError::Malformed(e.to_string()))
}

fn opt_ns(t: Option<OffsetDateTime>) -> Result<Option<i64>, StoreError> {
    t.map(ns).transpose()
}

fn opt_from_ns(n: Option<i64>) -> Result<Option<OffsetDateTime>, StoreError> {
    n.map(from_ns).transpose()
}

fn parse<T: std::str::FromStr>(s: &str, what: &str) -> Result<T, StoreError> {
    s.parse()
        .map_err(|_| StoreError::Malformed(format!("stored {what} `{s}` does not parse")))
}

fn opt_parse<T: std::str::FromStr>(s: Option<String>, what: &str) -> Result<Option<T>, StoreError> {
    s.map(|s| parse(&s, what)).transpose()
}

fn version(v: u64) -> Result<i64, StoreError> {
    i64::try_from(v).map_err(|_| StoreError::Malformed("version out of range".into()))
}

const INCIDENT_COLUMNS: &str = "id, title, severity, state, owner, team, rule, subject, \
     opened_at, updated_at, last_alert_at, version";

fn incident_row(r: &Row<'_>) -> Result<IncidentRecord, StoreError> {
    let id: String = r.get(0)?;
    let v: i64 = r.get(11)?;
    Ok(IncidentRecord {
        id: parse(&id, "incident id")?,
        title: r.get(1)?,
        severity: r.get(2)?,
        state: r.get(3)?,
        owner: r.get(4)?,
        team: opt_parse(r.get(5)?, "team id")?,
        rule: r.get(6)?,
        subject: r.get(7)?,
        opened_at: from_ns(r.get(8)?)?,
        updated_at: from_ns(r.get(9)?)?,
        last_alert_at: opt_from_ns(r.get(10)?)?,
        version: u64::try_from(v).map_err(|_| StoreError::Malformed("negative version".into()))?,
    })
}

fn notification_row(r: &Row<'_>) -> Result<NotificationRecord, StoreError> {
    let id: String = r.get(0)?;
    let incident: String = r.get(1)?;
    Ok(NotificationRecord {
        id: parse(&id, "notification id")?,
        incident: parse(&incident, "incident id")?,
        channel: r.get(2)?,
        reason: r.get(3)?,
        severity: r.get(4)?,
        text: r.get(5)?,
        created_at: from_ns(r.get(6)?)?,
        status: r.get(7)?,
        attempts: r.get(8)?,
        last_attempt_at: opt_from_ns(r.get(9)?)?,
        last_error: r.get(10)?,
        delivered_at: opt_from_ns(r.get(11)?)?,
        next_attempt_at: opt_from_ns(r.get(12)?)?,
    })
}

const NOTIFICATION_COLUMNS: &str = "id, incident_id, channel, reason, severity, text, created_at, \
     status, attempts, last_attempt_at, last_error, delivered_at, next_attempt_at";

fn attempt_row(r: &Row<'_>) -> Result<NotificationAttempt, StoreError> {
    let id: String = r.get(0)?;
    let status: Option<i64> = r.get(4)?;
    Ok(NotificationAttempt {
        notification: parse(&id, "notification id")?,
        attempt: r.get(1)?,
        at: from_ns(r.get(2)?)?,
        ok: r.get::<_, i64>(3)? != 0,
        status: status.and_then(|s| u16::try_from(s).ok()),
        error: r.get(5)?,
    })
}

fn channel_row(r: &Row<'_>) -> Result<ChannelRecord, StoreError> {
    Ok(ChannelRecord {
        name: r.get(0)?,
        kind: r.get(1)?,
        min_severity: r.get(2)?,
        settings: r.get(3)?,
        secret: r.get(4)?,
        created_by: r.get(5)?,
        created_at: from_ns(r.get(6)?)?,
    })
}

fn insert_timeline(
    tx: &Transaction<'_>,
    incident: IncidentId,
    entries: &[TimelineEntry],
) -> Result<(), StoreError> {
    let mut stmt = tx.prepare_cached(
        "INSERT INTO incident_timeline (incident_id, at, actor, kind, text) VALUES (?1, ?2, ?3, ?4, ?5)",
    )?;
    for e in entries {
        stmt.execute(params![
            incident.to_string(),
            ns(e.at)?,
            e.actor,
            e.kind,
            e.text
        ])?;
    }
    Ok(())
}

fn apply(tx: &Transaction<'_>, change: &IncidentWrite) -> Result<(), StoreError> {
    let id = match &change.target {
        IncidentTarget::Create(i) => {
            tx.execute(
                "INSERT INTO incidents (id, title, severity, state, owner, team, rule, subject,
                                        opened_at, updated_at, last_alert_at, version)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12)",
                params![
                    i.id.to_string(),
                    i.title,
                    i.severity,
                    i.state,
                    i.owner,
                    i.team.map(|t| t.to_string()),
                    i.rule,
                    i.subject,
                    ns(i.opened_at)?,
                    ns(i.updated_at)?,
                    opt_ns(i.last_alert_at)?,
                    version(i.version)?,
                ],
            )?;
            i.id
        }
        IncidentTarget::Update {
            id,
            expected_version,
            set,
        } => {
            let (owner_set, owner) = match &set.owner {
                Some(o) => (true, o.clone()),
                None => (false, None),
            };
            let changed = tx.execute(
                "UPDATE incidents
                    SET state = coalesce(?3, state),
                        severity = coalesce(?4, severity),
                        owner = CASE WHEN ?5 THEN ?6 ELSE owner END,
                        last_alert_at = coalesce(?7, last_alert_at),
                        updated_at = ?8,
                        version = version + 1
                  WHERE id = ?1 AND version = ?2",
                params![
                    id.to_string(),
                    version(*expected_version)?,
                    set.state,
                    set.severity,
                    owner_set,
                    owner,
                    opt_ns(set.last_alert_at)?,
                    ns(set.updated_at)?,
                ],
            )?;
            if changed != 1 {
                let exists: bool = tx.query_row(
                    "SELECT EXISTS (SELECT 1 FROM incidents WHERE id = ?1)",
                    [id.to_string()],
                    |r| r.get(0),
                )?;
                return Err(if exists {
                    StoreError::Conflict(format!(
                        "a newer version of incident {id} (it changed meanwhile; reload and retry)"
                    ))
                } else {
                    StoreError::NotFound(format!("incident {id}"))
                });
            }
            *id
        }
    };
    if let Some(a) = &change.alert {
        let events: Vec<String> = a.events.iter().map(ToString::to_string).collect();
        let events =
            serde_json::to_string(&events).map_err(|e| StoreError::Malformed(e.to_string()))?;
        tx.execute(
            "INSERT INTO alerts (id, incident_id, rule, severity, subject, summary, team, raised_at, events)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
            params![
                a.id.to_string(),
                id.to_string(),
                a.rule,
                a.severity,
                a.subject,
                a.summary,
                a.team.map(|t| t.to_string()),
                ns(a.raised_at)?,
                events,
            ],
        )?;
    }
    {
        let mut stmt = tx.prepare_cached(
            "INSERT INTO incident_events (incident_id, event_id) VALUES (?1, ?2)
             ON CONFLICT DO NOTHING",
        )?;
        for e in &change.link_events {
            stmt.execute(params![id.to_string(), e.to_string()])?;
        }
    }
    insert_timeline(tx, id, &change.timeline)?;
    for n in &change.notifications {
        tx.execute(
            "INSERT INTO incident_notifications (id, incident_id, channel, reason, severity, text,
                 created_at, status, attempts, last_attempt_at, last_error, delivered_at,
                 next_attempt_at)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13)",
            params![
                n.id.to_string(),
                id.to_string(),
                n.channel,
                n.reason,
                n.severity,
                n.text,
                ns(n.created_at)?,
                n.status,
                n.attempts,
                opt_ns(n.last_attempt_at)?,
                n.last_error,
                opt_ns(n.delivered_at)?,
                opt_ns(n.next_attempt_at)?,
            ],
        )?;
    }
    append_in_tx(tx, &change.events)?;
    Ok(())
}

fn list_conn(conn: &Connection, f: &IncidentFilter) -> Result<IncidentPage, StoreError> {
    let mut clauses: Vec<String> = Vec::new();
    let mut args: Vec<SqlValue> = Vec::new();
    let mut any_of = |column: &str, values: &[String]| {
        if values.is_empty() {
            return;
        }
        let marks = vec!["?"; values.len()].join(", ");
        clauses.push(format!("{column} IN ({marks})"));
        args.extend(values.iter().cloned().map(SqlValue::Text));
    };
    any_of("state", &f.states);
    any_of("severity", &f.severities);
    if let Some(team) = f.team {
        clauses.push("team = ?".into());
        args.push(SqlValue::Text(team.to_string()));
    }
    if let Some(cursor) = f.cursor {
        clauses.push("id < ?".into());
        args.push(SqlValue::Text(cursor.to_string()));
    }
    let limit = match f.limit {
        0 => 50,
        n => n.min(500),
    };
    let where_sql = if clauses.is_empty() {
        String::new()
    } else {
        format!("WHERE {}", clauses.join(" AND "))
    };
    // Only fixed column names and placeholders are interpolated.
    let sql = format!(
        "SELECT {INCIDENT_COLUMNS} FROM incidents {where_sql} ORDER BY id DESC LIMIT {}",
        limit + 1
    );
    let mut stmt = conn.prepare(&sql)?;
    let mut rows = stmt.query(params_from_iter(args))?;
    let mut incidents = Vec::new();
    let mut more = false;
    while let Some(r) = rows.next()? {
        if incidents.len() == limit {
            more = true;
            break;
        }
        incidents.push(incident_row(r)?);
    }
    let next_cursor = if more {
        incidents.last().map(|i: &IncidentRecord| i.id)
    } else {
        None
    };
    Ok(IncidentPage {
        incidents,
        next_cursor,
    })
}

#[async_trait]
impl IncidentStore for SqliteIncidentStore {
    async fn write(&self, change: IncidentWrite) -> Result<(), StoreError> {
        self.pool.write(move |tx| apply(tx, &change)).await
    }

    async fn incident(&self, id: IncidentId) -> Result<Option<IncidentRecord>, StoreError> {
        self.pool
            .read(move |conn| {
                conn.query_row(
                    &format!("SELECT {INCIDENT_COLUMNS} FROM incidents WHERE id = ?1"),
                    [id.to_string()],
                    |r| Ok(incident_row(r)),
                )
                .optional()?
                .transpose()
            })
            .await
    }

    async fn list(&self, filter: IncidentFilter) -> Result<IncidentPage, StoreError> {
        self.pool.read(move |conn| list_conn(conn, &filter)).await
    }

    async fn joinable(
        &self,
        rule: &str,
        subject: &str,
        team: Option<TeamId>,
        states: Vec<String>,
        since: OffsetDateTime,
    ) -> Result<Option<IncidentRecord>, StoreError> {
        if states.is_empty() {
            return Ok(None);
        }
        let mut args = vec![
            SqlValue::Text(rule.to_owned()),
            SqlValue::Text(subject.to_owned()),
            SqlValue::Integer(ns(since)?),
        ];
        let team_clause = match team {
            Some(t) => {
                args.push(SqlValue::Text(t.to_string()));
                "team = ?"
            }
            None => "team IS NULL",
        };
        let marks = vec!["?"; states.len()].join(", ");
        args.extend(states.into_iter().map(SqlValue::Text));
        let sql = format!(
            "SELECT {INCIDENT_COLUMNS} FROM incidents
              WHERE rule = ? AND subject = ? AND last_alert_at >= ? AND {team_clause}
                AND state IN ({marks})
              ORDER BY id DESC LIMIT 1"
        );
        self.pool
            .read(move |conn| {
                conn.query_row(&sql, params_from_iter(args), |r| Ok(incident_row(r)))
                    .optional()?
                    .transpose()
            })
            .await
    }

    async fn timeline(&self, id: IncidentId) -> Result<Vec<TimelineEntry>, StoreError> {
        self.pool
            .read(move |conn| {
                let mut stmt = conn.prepare(
                    "SELECT at, actor, kind, text FROM incident_timeline
                      WHERE incident_id = ?1 ORDER BY id",
                )?;
                let mut rows = stmt.query([id.to_string()])?;
                let mut out = Vec::new();
                while let Some(r) = rows.next()? {
                    out.push(TimelineEntry {
                        at: from_ns(r.get(0)?)?,
                        actor: r.get(1)?,
                        kind: r.get(2)?,
                        text: r.get(3)?,
                    });
                }
                Ok(out)
            })
            .await
    }

    async fn alerts(&self, id: IncidentId) -> Result<Vec<AlertRecord>, StoreError> {
        self.pool
            .read(move |conn| {
                let mut stmt = conn.prepare(
                    "SELECT id, rule, severity, subject, summary, team, raised_at, events
                       FROM alerts WHERE incident_id = ?1 ORDER BY raised_at, id",
                )?;
                let mut rows = stmt.query([id.to_string()])?;
                let mut out = Vec::new();
                while let Some(r) = rows.next()? {
                    let alert_id: String = r.get(0)?;
                    let events: String = r.get(7)?;
                    let events: Vec<String> = serde_json::from_str(&events)
                        .map_err(|e| StoreError::Malformed(format!("alert events: {e}")))?;
                    out.push(AlertRecord {
                        id: parse(&alert_id, "alert id")?,
                        incident: id,
                        rule: r.get(1)?,
                        severity: r.get(2)?,
                        subject: r.get(3)?,
                        summary: r.get(4)?,
                        team: opt_parse(r.get(5)?, "team id")?,
                        raised_at: from_ns(r.get(6)?)?,
                        events: events
                            .iter()
                            .map(|e| parse::<EventId>(e, "event id"))
                            .collect::<Result<_, _>>()?,
                    });
                }
                Ok(out)
            })
            .await
    }

    async fn linked_events(&self, id: IncidentId) -> Result<Vec<LinkedEvent>, StoreError> {
        self.pool
            .read(move |conn| {
                // The id lookup covers the log up to `upto`; a linked event
                // after that is found in the log's short unindexed tail.
                let upto = super::events::lookups_upto(conn)?;
                let mut stmt = conn.prepare(
                    "SELECT l.event_id, e.seq, e.hash, e.body
                       FROM incident_events l
                       LEFT JOIN events e
                         ON e.seq = coalesce(
                                (SELECT k.seq FROM event_ids k WHERE k.id = l.event_id),
                                (SELECT t.seq FROM events t
                                  WHERE t.seq > ?2
                                    AND json_extract(CAST(t.body AS TEXT), '$.id') = l.event_id))
                        AND json_extract(CAST(e.body AS TEXT), '$.id') = l.event_id
                      WHERE l.incident_id = ?1
                      ORDER BY e.seq IS NULL, e.seq, l.event_id",
                )?;
                let mut rows = stmt.query(params![id.to_string(), upto])?;
                let mut out = Vec::new();
                while let Some(r) = rows.next()? {
                    let event_id: String = r.get(0)?;
                    let seq: Option<i64> = r.get(1)?;
                    let stored = match seq {
                        None => None,
                        Some(seq) => {
                            let hash: Vec<u8> = r.get(2)?;
                            let body: Vec<u8> = r.get(3)?;
                            let hash: ChainHash = hash.as_slice().try_into().map_err(|_| {
                                StoreError::Malformed(format!("event {seq}: hash is not 32 bytes"))
                            })?;
                            Some(StoredEvent {
                                seq: u64::try_from(seq).map_err(|_| {
                                    StoreError::Malformed(format!("negative sequence {seq}"))
                                })?,
                                hash,
                                event: SecurityEvent::from_json(&body).map_err(|e| {
                                    StoreError::Malformed(format!("event {seq}: {e}"))
                                })?,
                            })
                        }
                    };
                    out.push(LinkedEvent {
                        id: parse(&event_id, "event id")?,
                        stored,
                    });
                }
                Ok(out)
            })
            .await
    }

    async fn notifications(&self, id: IncidentId) -> Result<Vec<NotificationRecord>, StoreError> {
        self.pool
            .read(move |conn| {
                let mut stmt = conn.prepare(&format!(
                    "SELECT {NOTIFICATION_COLUMNS} FROM incident_notifications
                      WHERE incident_id = ?1 ORDER BY created_at, id"
                ))?;
                let mut rows = stmt.query([id.to_string()])?;
                let mut out = Vec::new();
                while let Some(r) = rows.next()? {
                    out.push(notification_row(r)?);
                }
                Ok(out)
            })
            .await
    }

    async fn pending_notifications(
        &self,
        limit: usize,
        now: OffsetDateTime,
    ) -> Result<Vec<NotificationRecord>, StoreError> {
        let limit = i64::try_from(limit.clamp(1, 1000)).unwrap_or(100);
        let now = ns(now)?;
        self.pool
            .read(move |conn| {
                let mut stmt = conn.prepare(&format!(
                    "SELECT {NOTIFICATION_COLUMNS} FROM incident_notifications
                      WHERE status = 'pending'
                        AND (next_attempt_at IS NULL OR next_attempt_at <= ?2)
                      ORDER BY created_at, id LIMIT ?1"
                ))?;
                let mut rows = stmt.query(params![limit, now])?;
                let mut out = Vec::new();
                while let Some(r) = rows.next()? {
                    out.push(notification_row(r)?);
                }
                Ok(out)
            })
            .await
    }

    async fn record_notification(&self, outcome: NotificationOutcome) -> Result<(), StoreError> {
        self.pool
            .write(move |tx| {
                let o = &outcome;
                let delivered_at = (o.status == "delivered").then_some(o.at);
                let changed = tx.execute(
                    "UPDATE incident_notifications
                        SET status = ?3, attempts = attempts + ?4, last_attempt_at = ?5,
                            last_error = ?6, delivered_at = coalesce(?7, delivered_at),
                            next_attempt_at = ?8
                      WHERE id = ?1 AND status = ?2",
                    params![
                        o.id.to_string(),
                        o.expected_status,
                        o.status,
                        o.attempts,
                        ns(o.at)?,
                        o.error,
                        opt_ns(delivered_at)?,
                        opt_ns(o.next_attempt_at)?,
                    ],
                )?;
                if changed != 1 {
                    return Err(StoreError::Conflict(format!(
                        "notification {} is no longer {}",
                        o.id, o.expected_status
                    )));
                }
                if let Some(entry) = &o.timeline {
                    let incident: String = tx.query_row(
                        "SELECT incident_id FROM incident_notifications WHERE id = ?1",
                        [o.id.to_string()],
                        |r| r.get(0),
                    )?;
                    insert_timeline(
                        tx,
                        parse(&incident, "incident id")?,
                        std::slice::from_ref(entry),
                    )?;
                }
                {
                    let mut stmt = tx.prepare_cached(
                        "INSERT INTO incident_notification_attempts
                             (notification_id, attempt, at, ok, status, error)
                         VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                    )?;
                    for t in &o.tries {
                        stmt.execute(params![
                            t.notification.to_string(),
                            t.attempt,
                            ns(t.at)?,
                            i64::from(t.ok),
                            t.status.map(i64::from),
                            t.error,
                        ])?;
                    }
                }
                append_in_tx(tx, &o.events)?;
                Ok(())
            })
            .await
    }

    async fn notification_attempts(
        &self,
        id: IncidentId,
    ) -> Result<Vec<NotificationAttempt>, StoreError> {
        self.pool
            .read(move |conn| {
                let mut stmt = conn.prepare(
                    "SELECT a.notification_id, a.attempt, a.at, a.ok, a.status, a.error
                       FROM incident_notification_attempts a
                       JOIN incident_notifications n ON n.id = a.notification_id
                      WHERE n.incident_id = ?1
                      ORDER BY a.at, a.notification_id, a.attempt",
                )?;
                let mut rows = stmt.query([id.to_string()])?;
                let mut out = Vec::new();
                while let Some(r) = rows.next()? {
                    out.push(attempt_row(r)?);
                }
                Ok(out)
            })
            .await
    }

    async fn channels(&self) -> Result<Vec<ChannelRecord>, StoreError> {
        self.pool
            .read(|conn| {
                let mut stmt = conn.prepare_cached(
                    "SELECT name, kind, min_severity, settings, secret, created_by, created_at
                       FROM incident_channels ORDER BY name",
                )?;
                let mut rows = stmt.query([])?;
                let mut out = Vec::new();
                while let Some(r) = rows.next()? {
                    out.push(channel_row(r)?);
                }
                Ok(out)
            })
            .await
    }

    async fn add_channel(
        &self,
        channel: ChannelRecord,
        events: Vec<EventRecord>,
    ) -> Result<(), StoreError> {
        self.pool
            .write(move |tx| {
                let c = &channel;
                let added = tx.execute(
                    "INSERT INTO incident_channels
                         (name, kind, min_severity, settings, secret, created_by, created_at)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)
                     ON CONFLICT (name) DO NOTHING",
                    params![
                        c.name,
                        c.kind,
                        c.min_severity,
                        c.settings,
                        c.secret,
                        c.created_by,
                        ns(c.created_at)?,
                    ],
                )?;
                if added != 1 {
                    return Err(StoreError::Conflict(format!(
                        "a channel named `{}` exists",
                        c.name
                    )));
                }
                append_in_tx(tx, &events)?;
                Ok(())
            })
            .await
    }

    async fn remove_channel(
        &self,
        name: String,
        events: Vec<EventRecord>,
    ) -> Result<(), StoreError> {
        self.pool
            .write(move |tx| {
                let removed =
                    tx.execute("DELETE FROM incident_channels WHERE name = ?1", [&name])?;
                if removed != 1 {
                    return Err(StoreError::NotFound(format!("channel `{name}`")));
                }
                append_in_tx(tx, &events)?;
                Ok(())
            })
            .await
    }
}
