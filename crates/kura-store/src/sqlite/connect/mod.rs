//! [`ConnectStore`] on the platform database (the tables of the platform
//! migration "Kura Connect"). Times are Unix nanoseconds (UTC); row
//! encodings are in `rows`.

mod approvals;
mod oauth;
mod rows;
mod subscriptions;

use async_trait::async_trait;
use kura_types::{FlowCredentialId, FlowId, RunId, TeamId};
use rusqlite::{OptionalExtension as _, params};
use time::OffsetDateTime;

use self::rows::*;
use super::Pool;
use super::events::append_in_tx;
use crate::StoreError;
use crate::connect::{
    AppSubscriptionRecord, ConnectStore, FinishedRun, FlowCredentialRecord, FlowMetrics,
    FlowRecord, FlowVersionRecord, NewRun, RunAdvance, RunFilter, RunRecord, RunStatus,
    ScheduleRecord, StepRecord,
};
use crate::events::EventRecord;

/// Kura Connect's tables in the platform database.
#[derive(Debug, Clone)]
pub struct SqliteConnectStore {
    pool: Pool,
}

impl SqliteConnectStore {
    /// A store over the platform database's pool.
    pub fn new(pool: Pool) -> Self {
        Self { pool }
    }
}

#[async_trait]
impl ConnectStore for SqliteConnectStore {
    async fn create_flow(
        &self,
        flow: FlowRecord,
        version: FlowVersionRecord,
        events: Vec<EventRecord>,
    ) -> Result<(), StoreError> {
        self.pool
            .write(move |tx| {
                tx.execute(
                    &format!("INSERT INTO connect_flows ({FLOW_COLS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)"),
                    params![
                        flow.id.to_string(),
                        flow.team.to_string(),
                        flow.name,
                        i64::from(flow.enabled),
                        flow.version,
                        flow.webhook_token,
                        flow.webhook_secret,
                        ns(flow.created_at)?,
                        ns(flow.updated_at)?,
                    ],
                )?;
                tx.execute(
                    "INSERT INTO connect_flow_versions (flow, version, document, created_by, created_at)
                     VALUES (?1, ?2, ?3, ?4, ?5)",
                    params![
                        version.flow.to_string(),
                        version.version,
                        version.document,
                        version.created_by,
                        ns(version.created_at)?,
                    ],
                )?;
                append_in_tx(tx, &events)?;
                Ok(())
            })
            .await
    }

    async fn add_version(
        &self,
        team: TeamId,
        version: FlowVersionRecord,
        name: String,
        expected: u32,
        events: Vec<EventRecord>,
    ) -> Result<(), StoreError> {
        self.pool
            .write(move |tx| {
                let changed = tx.execute(
                    "UPDATE connect_flows SET version = ?1, name = ?2, updated_at = ?3
                     WHERE id = ?4 AND team = ?5 AND version = ?6",
                    params![
                        version.version,
                        name,
                        ns(version.created_at)?,
                        version.flow.to_string(),
                        team.to_string(),
                        expected,
                    ],
                )?;
                if changed == 0 {
                    return Err(StoreError::Conflict(format!(
                        "version {} of flow {}",
                        version.version, version.flow
                    )));
                }
                tx.execute(
                    "INSERT INTO connect_flow_versions (flow, version, document, created_by, created_at)
                     VALUES (?1, ?2, ?3, ?4, ?5)",
                    params![
                        version.flow.to_string(),
                        version.version,
                        version.document,
                        version.created_by,
                        ns(version.created_at)?,
                    ],
                )?;
                append_in_tx(tx, &events)?;
                Ok(())
            })
            .await
    }

    async fn flow(&self, team: TeamId, id: FlowId) -> Result<Option<FlowRecord>, StoreError> {
        self.pool
            .read(move |c| {
                c.query_row(
                    &format!("SELECT {FLOW_COLS} FROM connect_flows WHERE id = ?1 AND team = ?2"),
                    params![id.to_string(), team.to_string()],
                    flow_row,
                )
                .optional()?
                .map(flow_of)
                .transpose()
            })
            .await
    }

    async fn flow_by_token(&self, token: &str) -> Result<Option<FlowRecord>, StoreError> {
        let token = token.to_owned();
        // One row by a unique key, on every webhook call: a short read.
        self.pool
            .read_quick(move |c| {
                c.query_row(
                    &format!("SELECT {FLOW_COLS} FROM connect_flows WHERE webhook_token = ?1"),
                    params![token],
                    flow_row,
                )
                .optional()?
                .map(flow_of)
                .transpose()
            })
            .await
    }

    async fn flows(&self, team: TeamId) -> Result<Vec<FlowRecord>, StoreError> {
        self.pool
            .read(move |c| {
                let mut stmt = c.prepare(&format!(
                    "SELECT {FLOW_COLS} FROM connect_flows WHERE team = ?1 ORDER BY name, id"
                ))?;
                let rows = stmt.query_map(params![team.to_string()], flow_row)?;
                rows.map(|r| flow_of(r?)).collect()
            })
            .await
    }

    async fn version(
        &self,
        team: TeamId,
        id: FlowId,
        version: u32,
    ) -> Result<Option<FlowVersionRecord>, StoreError> {
        self.pool
            .read(move |c| {
                let row: Option<(String, String, i64)> = c
                    .query_row(
                        "SELECT v.document, v.created_by, v.created_at
                         FROM connect_flow_versions v JOIN connect_flows f ON f.id = v.flow
                         WHERE v.flow = ?1 AND v.version = ?2 AND f.team = ?3",
                        params![id.to_string(), version, team.to_string()],
                        |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
                    )
                    .optional()?;
                row.map(|(document, created_by, at)| {
                    Ok(FlowVersionRecord {
                        flow: id,
                        version,
                        document,
                        created_by,
                        created_at: from_ns(at)?,
                    })
                })
                .transpose()
            })
            .await
    }

    async fn versions(
        &self,
        team: TeamId,
        id: FlowId,
    ) -> Result<Vec<FlowVersionRecord>, StoreError> {
        self.pool
            .read(move |c| {
                let mut stmt = c.prepare(
                    "SELECT v.version, v.created_by, v.created_at
                     FROM connect_flow_versions v JOIN connect_flows f ON f.id = v.flow
                     WHERE v.flow = ?1 AND f.team = ?2 ORDER BY v.version",
                )?;
                let rows = stmt.query_map(params![id.to_string(), team.to_string()], |r| {
                    Ok((
                        r.get::<_, i64>(0)?,
                        r.get::<_, String>(1)?,
                        r.get::<_, i64>(2)?,
                    ))
                })?;
                let mut out = Vec::new();
                for row in rows {
                    let (version, created_by, at) = row?;
                    out.push(FlowVersionRecord {
                        flow: id,
                        version: u32_of(version)?,
                        document: String::new(),
                        created_by,
                        created_at: from_ns(at)?,
                    });
                }
                Ok(out)
            })
            .await
    }

    async fn set_enabled(
        &self,
        team: TeamId,
        id: FlowId,
        enabled: bool,
        at: OffsetDateTime,
        events: Vec<EventRecord>,
    ) -> Result<bool, StoreError> {
        self.pool
            .write(move |tx| {
                let n = tx.execute(
                    "UPDATE connect_flows SET enabled = ?1, updated_at = ?2 WHERE id = ?3 AND team = ?4",
                    params![i64::from(enabled), ns(at)?, id.to_string(), team.to_string()],
                )?;
                if n > 0 {
                    append_in_tx(tx, &events)?;
                }
                Ok(n > 0)
            })
            .await
    }

    async fn delete_flow(
        &self,
        team: TeamId,
        id: FlowId,
        events: Vec<EventRecord>,
    ) -> Result<bool, StoreError> {
        self.pool
            .write(move |tx| {
                let n = tx.execute(
                    "DELETE FROM connect_flows WHERE id = ?1 AND team = ?2",
                    params![id.to_string(), team.to_string()],
                )?;
                if n > 0 {
                    append_in_tx(tx, &events)?;
                }
                Ok(n > 0)
            })
            .await
    }

    async fn set_schedule(
        &self,
        flow: FlowId,
        schedule: Option<ScheduleRecord>,
    ) -> Result<(), StoreError> {
        self.pool
            .write(move |tx| {
                tx.execute(
                    "DELETE FROM connect_schedules WHERE flow = ?1",
                    params![flow.to_string()],
                )?;
                if let Some(s) = schedule {
                    tx.execute(
                        "INSERT INTO connect_schedules (flow, team, cron, timezone, next_fire_at)
                         VALUES (?1, ?2, ?3, ?4, ?5)",
                        params![
                            flow.to_string(),
                            s.team.to_string(),
                            s.cron,
                            s.timezone,
                            ns(s.next_fire_at)?,
                        ],
                    )?;
                }
                Ok(())
            })
            .await
    }

    async fn due_schedules(&self, now: OffsetDateTime) -> Result<Vec<ScheduleRecord>, StoreError> {
        self.pool
            .read(move |c| {
                let mut stmt = c.prepare(
                    "SELECT s.flow, s.team, s.cron, s.timezone, s.next_fire_at
                     FROM connect_schedules s JOIN connect_flows f ON f.id = s.flow
                     WHERE f.enabled = 1 AND s.next_fire_at <= ?1
                     ORDER BY s.next_fire_at LIMIT 100",
                )?;
                let rows = stmt.query_map(params![ns(now)?], |r| {
                    Ok((
                        r.get::<_, String>(0)?,
                        r.get::<_, String>(1)?,
                        r.get::<_, String>(2)?,
                        r.get::<_, String>(3)?,
                        r.get::<_, i64>(4)?,
                    ))
                })?;
                let mut out = Vec::new();
                for row in rows {
                    let (flow, team, cron, timezone, at) = row?;
                    out.push(ScheduleRecord {
                        flow: parse_id(&flow)?,
                        team: parse_id(&team)?,
                        cron,
                        timezone,
                        next_fire_at: from_ns(at)?,
                    });
                }
                Ok(out)
            })
            .await
    }

    async fn fire_schedule(
        &self,
        due: &ScheduleRecord,
        next: OffsetDateTime,
        run: NewRun,
    ) -> Result<bool, StoreError> {
        let (flow, expected) = (due.flow, ns(due.next_fire_at)?);
        self.pool
            .write(move |tx| {
                let moved = tx.execute(
                    "UPDATE connect_schedules SET next_fire_at = ?1
                     WHERE flow = ?2 AND next_fire_at = ?3",
                    params![ns(next)?, flow.to_string(), expected],
                )?;
                if moved == 0 {
                    return Ok(false);
                }
                insert_queued(tx, &run)?;
                Ok(true)
            })
            .await
    }

    async fn set_app_subscription(
        &self,
        flow: FlowId,
        subscription: Option<AppSubscriptionRecord>,
    ) -> Result<(), StoreError> {
        subscriptions::set(&self.pool, flow, subscription).await
    }

    async fn app_subscription(
        &self,
        flow: FlowId,
    ) -> Result<Option<AppSubscriptionRecord>, StoreError> {
        subscriptions::one(&self.pool, flow).await
    }

    async fn app_subscriptions(&self) -> Result<Vec<AppSubscriptionRecord>, StoreError> {
        subscriptions::enabled(&self.pool).await
    }

    async fn deliver_app_events(
        &self,
        from: &AppSubscriptionRecord,
        to: i64,
        runs: Vec<NewRun>,
    ) -> Result<bool, StoreError> {
        subscriptions::deliver(&self.pool, from, to, runs).await
    }

    async fn renew_lease(
        &self,
        run: RunId,
        owner: &str,
        lease_until: OffsetDateTime,
    ) -> Result<bool, StoreError> {
        let owner = owner.to_owned();
        self.pool
            .write(move |tx| {
                Ok(tx.execute(
                    "UPDATE connect_runs SET lease_until = ?1
                     WHERE id = ?2 AND status = 'running' AND lease_owner = ?3",
                    params![ns(lease_until)?, run.to_string(), owner],
                )? > 0)
            })
            .await
    }

    async fn insert_run(&self, run: NewRun) -> Result<(), StoreError> {
        self.pool.write(move |tx| insert_queued(tx, &run)).await
    }

    async fn insert_claimed_run(
        &self,
        run: NewRun,
        owner: &str,
        lease_until: OffsetDateTime,
        team_limit: u32,
    ) -> Result<bool, StoreError> {
        let owner = owner.to_owned();
        self.pool
            .write(move |tx| {
                let at = ns(run.at)?;
                let claim = under_team_limit(tx, run.team, at, team_limit)?;
                tx.execute(
                    "INSERT INTO connect_runs (id, team, flow, version, status, trigger, input,
                         context, next_step, not_before, created_at, lease_owner, lease_until,
                         started_at)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?10, ?11, ?12, ?13)",
                    params![
                        run.id.to_string(),
                        run.team.to_string(),
                        run.flow.to_string(),
                        run.version,
                        if claim { "running" } else { "queued" },
                        run.trigger,
                        run.input,
                        run.context,
                        run.first_step,
                        at,
                        claim.then_some(owner),
                        if claim { Some(ns(lease_until)?) } else { None },
                        claim.then_some(at),
                    ],
                )?;
                Ok(claim)
            })
            .await
    }

    async fn insert_finished_run(
        &self,
        run: FinishedRun,
        team_limit: u32,
    ) -> Result<bool, StoreError> {
        if !run.status.is_final() {
            return Err(StoreError::Conflict(format!(
                "a run recorded finished cannot be `{}`",
                run.status.as_str()
            )));
        }
        self.pool
            .write(move |tx| {
                let new = &run.new;
                let at = ns(new.at)?;
                if !under_team_limit(tx, new.team, at, team_limit)? {
                    insert_queued(tx, new)?;
                    return Ok(false);
                }
                let steps_done = run.steps.last().map_or(0, |s| s.seq);
                tx.execute(
                    "INSERT INTO connect_runs (id, team, flow, version, status, trigger, input,
                         context, steps_done, response, error, not_before, created_at,
                         started_at, finished_at)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?12, ?12, ?13)",
                    params![
                        new.id.to_string(),
                        new.team.to_string(),
                        new.flow.to_string(),
                        new.version,
                        run.status.as_str(),
                        new.trigger,
                        new.input,
                        run.context,
                        steps_done,
                        run.response,
                        run.error,
                        at,
                        ns(run.finished_at)?,
                    ],
                )?;
                for step in &run.steps {
                    put_step(tx, step)?;
                }
                Ok(true)
            })
            .await
    }

    async fn claim_run(
        &self,
        owner: &str,
        now: OffsetDateTime,
        lease_until: OffsetDateTime,
        team_limit: u32,
        only: Option<RunId>,
    ) -> Result<Option<RunRecord>, StoreError> {
        let owner = owner.to_owned();
        self.pool
            .write(move |tx| {
                let now = ns(now)?;
                let id: Option<String> = tx
                    .query_row(
                        "SELECT r.id FROM connect_runs r
                         WHERE ((r.status IN ('queued', 'waiting') AND r.not_before <= ?1)
                                OR (r.status = 'running' AND r.lease_until < ?1))
                           AND (?2 IS NULL OR r.id = ?2)
                           AND (SELECT count(*) FROM connect_runs x
                                WHERE +x.team = r.team AND x.status = 'running'
                                  AND x.lease_until >= ?1) < ?3
                         ORDER BY r.not_before, r.id LIMIT 1",
                        params![now, only.map(|r| r.to_string()), team_limit],
                        |r| r.get(0),
                    )
                    .optional()?;
                let Some(id) = id else { return Ok(None) };
                tx.execute(
                    "UPDATE connect_runs SET status = 'running', lease_owner = ?1, lease_until = ?2,
                         claims = claims + (status = 'running'), started_at = coalesce(started_at, ?3)
                     WHERE id = ?4",
                    params![owner, ns(lease_until)?, now, id],
                )?;
                load_run(tx, &id)
            })
            .await
    }

    async fn start_step(&self, owner: &str, step: StepRecord) -> Result<bool, StoreError> {
        let owner = owner.to_owned();
        self.pool
            .write(move |tx| {
                if !holds(tx, &step.run.to_string(), &owner)? {
                    return Ok(false);
                }
                put_step(tx, &step)?;
                Ok(true)
            })
            .await
    }

    async fn advance(&self, a: RunAdvance) -> Result<bool, StoreError> {
        self.pool
            .write(move |tx| {
                let id = a.run.to_string();
                if !holds(tx, &id, &a.owner)? {
                    return Ok(false);
                }
                put_step(tx, &a.step)?;
                let running = a.status == RunStatus::Running;
                let at = ns(a.at)?;
                tx.execute(
                    "UPDATE connect_runs SET context = ?1, next_step = ?2, steps_done = ?3,
                         status = ?4, not_before = coalesce(?5, not_before),
                         response = coalesce(?6, response), error = ?7,
                         lease_owner = CASE WHEN ?8 THEN lease_owner ELSE NULL END,
                         lease_until = CASE WHEN ?8 THEN ?9 ELSE NULL END,
                         finished_at = CASE WHEN ?10 THEN ?11 ELSE NULL END
                     WHERE id = ?12",
                    params![
                        a.context,
                        a.next_step,
                        a.step.seq,
                        a.status.as_str(),
                        a.not_before.map(ns).transpose()?,
                        a.response,
                        a.error,
                        running,
                        a.lease_until.map(ns).transpose()?,
                        a.status.is_final(),
                        at,
                        id,
                    ],
                )?;
                Ok(true)
            })
            .await
    }

    async fn finish_run(
        &self,
        run: RunId,
        owner: Option<&str>,
        status: RunStatus,
        error: &str,
        at: OffsetDateTime,
    ) -> Result<bool, StoreError> {
        let owner = owner.map(str::to_owned);
        let error = error.to_owned();
        self.pool
            .write(move |tx| {
                let n = tx.execute(
                    "UPDATE connect_runs SET status = ?1, error = ?2, finished_at = ?3,
                         lease_owner = NULL, lease_until = NULL, next_step = NULL
                     WHERE id = ?4 AND (?5 IS NULL OR lease_owner = ?5)
                       AND status IN ('queued', 'running', 'waiting')",
                    params![status.as_str(), error, ns(at)?, run.to_string(), owner],
                )?;
                Ok(n > 0)
            })
            .await
    }

    async fn cancel_run(
        &self,
        team: TeamId,
        run: RunId,
        at: OffsetDateTime,
        events: Vec<EventRecord>,
    ) -> Result<bool, StoreError> {
        self.pool
            .write(move |tx| {
                let n = tx.execute(
                    "UPDATE connect_runs SET status = 'cancelled', error = 'cancelled through the API',
                         finished_at = ?1, lease_owner = NULL, lease_until = NULL, next_step = NULL
                     WHERE id = ?2 AND team = ?3 AND status IN ('queued', 'running', 'waiting')",
                    params![ns(at)?, run.to_string(), team.to_string()],
                )?;
                if n > 0 {
                    append_in_tx(tx, &events)?;
                }
                Ok(n > 0)
            })
            .await
    }

    async fn run(&self, run: RunId) -> Result<Option<RunRecord>, StoreError> {
        self.pool.read(move |c| load_run(c, &run.to_string())).await
    }

    async fn runs(&self, team: TeamId, f: RunFilter) -> Result<Vec<RunRecord>, StoreError> {
        self.pool
            .read(move |c| {
                let limit = match f.limit {
                    0 => 50,
                    n => n.min(500),
                };
                let mut stmt = c.prepare(&format!(
                    "SELECT {RUN_COLS} FROM connect_runs
                     WHERE team = ?1 AND (?2 IS NULL OR flow = ?2) AND (?3 IS NULL OR status = ?3)
                       AND (?4 IS NULL OR created_at >= ?4) AND (?5 IS NULL OR created_at < ?5)
                     ORDER BY created_at DESC, id DESC LIMIT ?6"
                ))?;
                let rows = stmt.query_map(
                    params![
                        team.to_string(),
                        f.flow.map(|x| x.to_string()),
                        f.status.map(RunStatus::as_str),
                        f.since.map(ns).transpose()?,
                        f.until.map(ns).transpose()?,
                        i64::try_from(limit).unwrap_or(50),
                    ],
                    run_row,
                )?;
                rows.map(|r| run_of(r?)).collect()
            })
            .await
    }

    async fn steps(&self, run: RunId) -> Result<Vec<StepRecord>, StoreError> {
        self.pool
            .read(move |c| {
                let mut stmt = c.prepare(&format!(
                    "SELECT {STEP_COLS} FROM connect_steps WHERE run = ?1 ORDER BY seq"
                ))?;
                let rows = stmt.query_map(params![run.to_string()], step_row)?;
                rows.map(|r| step_of(r?)).collect()
            })
            .await
    }

    async fn started_step(&self, run: RunId, step: &str) -> Result<Option<StepRecord>, StoreError> {
        let step = step.to_owned();
        self.pool
            .read(move |c| {
                c.query_row(
                    &format!(
                        "SELECT {STEP_COLS} FROM connect_steps
                         WHERE run = ?1 AND step = ?2 AND status = 'started'
                         ORDER BY seq DESC LIMIT 1"
                    ),
                    params![run.to_string(), step],
                    step_row,
                )
                .optional()?
                .map(step_of)
                .transpose()
            })
            .await
    }

    async fn metrics(&self, team: TeamId, flow: FlowId) -> Result<FlowMetrics, StoreError> {
        self.pool
            .read(move |c| {
                let (runs, ok, failed, mean, max): (
                    i64,
                    Option<i64>,
                    Option<i64>,
                    Option<f64>,
                    Option<f64>,
                ) = c.query_row(
                    "SELECT count(*),
                            sum(status = 'succeeded'),
                            sum(status IN ('failed', 'dead_letter')),
                            avg(CASE WHEN finished_at IS NOT NULL AND started_at IS NOT NULL
                                     THEN (finished_at - started_at) / 1000000.0 END),
                            max(CASE WHEN finished_at IS NOT NULL AND started_at IS NOT NULL
                                     THEN (finished_at - started_at) / 1000000.0 END)
                     FROM connect_runs WHERE team = ?1 AND flow = ?2",
                    params![team.to_string(), flow.to_string()],
                    |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?)),
                )?;
                let count = |v: i64| u64::try_from(v).unwrap_or(0);
                Ok(FlowMetrics {
                    runs: count(runs),
                    succeeded: count(ok.unwrap_or(0)),
                    failed: count(failed.unwrap_or(0)),
                    mean_ms: mean.unwrap_or(0.0),
                    max_ms: max.unwrap_or(0.0),
                })
            })
            .await
    }

    async fn prune_runs(&self, before: OffsetDateTime) -> Result<u64, StoreError> {
        self.pool
            .write(move |tx| {
                let n = tx.execute(
                    "DELETE FROM connect_runs WHERE finished_at IS NOT NULL AND finished_at < ?1",
                    params![ns(before)?],
                )?;
                Ok(u64::try_from(n).unwrap_or(0))
            })
            .await
    }

    async fn kv_get(&self, team: TeamId, key: &str) -> Result<Option<String>, StoreError> {
        let key = key.to_owned();
        self.pool
            .read(move |c| {
                Ok(c.query_row(
                    "SELECT value FROM connect_kv WHERE team = ?1 AND key = ?2",
                    params![team.to_string(), key],
                    |r| r.get(0),
                )
                .optional()?)
            })
            .await
    }

    async fn kv_set(
        &self,
        team: TeamId,
        key: &str,
        value: &str,
        at: OffsetDateTime,
    ) -> Result<(), StoreError> {
        let (key, value) = (key.to_owned(), value.to_owned());
        self.pool
            .write(move |tx| {
                tx.execute(
                    "INSERT INTO connect_kv (team, key, value, updated_at) VALUES (?1, ?2, ?3, ?4)
                     ON CONFLICT (team, key) DO UPDATE SET value = ?3, updated_at = ?4",
                    params![team.to_string(), key, value, ns(at)?],
                )?;
                Ok(())
            })
            .await
    }

    async fn create_credential(
        &self,
        c: FlowCredentialRecord,
        events: Vec<EventRecord>,
    ) -> Result<(), StoreError> {
        self.pool
            .write(move |tx| {
                let taken: Option<i64> = tx
                    .query_row(
                        "SELECT 1 FROM connect_credentials WHERE team = ?1 AND name = ?2",
                        params![c.team.to_string(), c.name],
                        |r| r.get(0),
                    )
                    .optional()?;
                if taken.is_some() {
                    return Err(StoreError::Conflict(format!("credential `{}`", c.name)));
                }
                tx.execute(
                    &format!("INSERT INTO connect_credentials ({CRED_COLS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)"),
                    params![
                        c.id.to_string(),
                        c.team.to_string(),
                        c.name,
                        c.kind,
                        c.settings,
                        c.sealed,
                        c.created_by,
                        ns(c.created_at)?,
                    ],
                )?;
                append_in_tx(tx, &events)?;
                Ok(())
            })
            .await
    }

    async fn credentials(&self, team: TeamId) -> Result<Vec<FlowCredentialRecord>, StoreError> {
        self.pool
            .read(move |c| {
                let mut stmt = c.prepare(&format!(
                    "SELECT {CRED_COLS} FROM connect_credentials WHERE team = ?1 ORDER BY name"
                ))?;
                let rows = stmt.query_map(params![team.to_string()], credential_of)?;
                rows.map(|r| cred_record(r?)).collect()
            })
            .await
    }

    async fn credential(
        &self,
        team: TeamId,
        name: &str,
    ) -> Result<Option<FlowCredentialRecord>, StoreError> {
        let name = name.to_owned();
        self.pool
            .read(move |c| {
                c.query_row(
                    &format!(
                        "SELECT {CRED_COLS} FROM connect_credentials WHERE team = ?1 AND name = ?2"
                    ),
                    params![team.to_string(), name],
                    credential_of,
                )
                .optional()?
                .map(cred_record)
                .transpose()
            })
            .await
    }

    async fn delete_credential(
        &self,
        team: TeamId,
        id: FlowCredentialId,
        events: Vec<EventRecord>,
    ) -> Result<Option<String>, StoreError> {
        self.pool
            .write(move |tx| {
                let name: Option<String> = tx
                    .query_row(
                        "DELETE FROM connect_credentials WHERE id = ?1 AND team = ?2 RETURNING name",
                        params![id.to_string(), team.to_string()],
                        |r| r.get(0),
                    )
                    .optional()?;
                if name.is_some() {
                    append_in_tx(tx, &events)?;
                }
                Ok(name)
            })
            .await
    }
}

#[cfg(test)]
mod tests;
