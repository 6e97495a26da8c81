//! Row encodings of the Kura Connect tables: times as Unix nanoseconds,
//! ids as text, and the shared inserts and lease checks.

use kura_types::TeamId;
use rusqlite::{OptionalExtension as _, Row, Transaction, params};
use time::OffsetDateTime;

use crate::StoreError;
use crate::connect::{FlowCredentialRecord, FlowRecord, NewRun, RunRecord, RunStatus, StepRecord};

pub(super) fn ns(t: OffsetDateTime) -> Result<i64, StoreError> {
    i64::try_from(t.unix_timestamp_nanos())
        .map_err(|_| StoreError::Malformed("time is out of range".into()))
}

pub(super) fn from_ns(v: i64) -> Result<OffsetDateTime, StoreError> {
    OffsetDateTime::from_unix_timestamp_nanos(i128::from(v))
        .map_err(|e| StoreError::Malformed(e.to_string()))
}

pub(super) fn opt_ns(v: Option<i64>) -> Result<Option<OffsetDateTime>, StoreError> {
    v.map(from_ns).transpose()
}

pub(super) fn parse_id<T: std::str::FromStr>(s: &str) -> Result<T, StoreError> {
    s.parse()
        .map_err(|_| StoreError::Malformed(format!("bad id `{s}`")))
}

pub(super) fn u32_of(v: i64) -> Result<u32, StoreError> {
    u32::try_from(v).map_err(|_| StoreError::Malformed("count out of range".into()))
}

pub(super) const FLOW_COLS: &str =
    "id, team, name, enabled, version, webhook_token, webhook_secret, created_at, updated_at";

pub(super) type FlowRow = (String, String, String, i64, i64, String, Vec<u8>, i64, i64);

pub(super) fn flow_row(r: &Row<'_>) -> rusqlite::Result<FlowRow> {
    Ok((
        r.get(0)?,
        r.get(1)?,
        r.get(2)?,
        r.get(3)?,
        r.get(4)?,
        r.get(5)?,
        r.get(6)?,
        r.get(7)?,
        r.get(8)?,
    ))
}

pub(super) fn flow_of(row: FlowRow) -> Result<FlowRecord, StoreError> {
    let (id, team, name, enabled, version, token, secret, created, updated) = row;
    Ok(FlowRecord {
        id: parse_id(&id)?,
        team: parse_id(&team)?,
        name,
        enabled: enabled != 0,
        version: u32_of(version)?,
        webhook_token: token,
        webhook_secret: secret,
        created_at: from_ns(created)?,
        updated_at: from_ns(updated)?,
    })
}

pub(super) const RUN_COLS: &str = "id, team, flow, version, status, trigger, input, context, next_step, steps_done, response, error, claims, lease_owner, lease_until, not_before, created_at, started_at, finished_at";

pub(super) struct RunRow {
    text: [String; 7],
    next_step: Option<String>,
    response: Option<String>,
    error: Option<String>,
    lease_owner: Option<String>,
    nums: [i64; 5],
    opt: [Option<i64>; 3],
}

pub(super) fn run_row(r: &Row<'_>) -> rusqlite::Result<RunRow> {
    Ok(RunRow {
        text: [
            r.get(0)?,
            r.get(1)?,
            r.get(2)?,
            r.get(4)?,
            r.get(5)?,
            r.get(6)?,
            r.get(7)?,
        ],
        next_step: r.get(8)?,
        response: r.get(10)?,
        error: r.get(11)?,
        lease_owner: r.get(13)?,
        nums: [r.get(3)?, r.get(9)?, r.get(12)?, r.get(15)?, r.get(16)?],
        opt: [r.get(14)?, r.get(17)?, r.get(18)?],
    })
}

pub(super) fn run_of(row: RunRow) -> Result<RunRecord, StoreError> {
    let [id, team, flow, status, trigger, input, context] = row.text;
    let [version, steps_done, claims, not_before, created] = row.nums;
    let [lease_until, started, finished] = row.opt;
    Ok(RunRecord {
        id: parse_id(&id)?,
        team: parse_id(&team)?,
        flow: parse_id(&flow)?,
        version: u32_of(version)?,
        status: RunStatus::parse(&status)
            .ok_or_else(|| StoreError::Malformed(format!("run status `{status}`")))?,
        trigger,
        input,
        context,
        next_step: row.next_step,
        steps_done: u32_of(steps_done)?,
        response: row.response,
        error: row.error,
        claims: u32_of(claims)?,
        lease_owner: row.lease_owner,
        lease_until: opt_ns(lease_until)?,
        not_before: from_ns(not_before)?,
        created_at: from_ns(created)?,
        started_at: opt_ns(started)?,
        finished_at: opt_ns(finished)?,
    })
}

pub(super) fn load_run(
    conn: &rusqlite::Connection,
    id: &str,
) -> Result<Option<RunRecord>, StoreError> {
    conn.query_row(
        &format!("SELECT {RUN_COLS} FROM connect_runs WHERE id = ?1"),
        params![id],
        run_row,
    )
    .optional()?
    .map(run_of)
    .transpose()
}

pub(super) const STEP_COLS: &str = "run, seq, step, status, input, output, error, attempts, idempotency_key, started_at, finished_at";

pub(super) type StepRow = (
    String,
    i64,
    String,
    String,
    String,
    Option<String>,
    Option<String>,
    i64,
    Option<String>,
    i64,
    Option<i64>,
);

pub(super) fn step_row(r: &Row<'_>) -> rusqlite::Result<StepRow> {
    Ok((
        r.get(0)?,
        r.get(1)?,
        r.get(2)?,
        r.get(3)?,
        r.get(4)?,
        r.get(5)?,
        r.get(6)?,
        r.get(7)?,
        r.get(8)?,
        r.get(9)?,
        r.get(10)?,
    ))
}

pub(super) fn step_of(row: StepRow) -> Result<StepRecord, StoreError> {
    let (run, seq, step, status, input, output, error, attempts, key, started, finished) = row;
    Ok(StepRecord {
        run: parse_id(&run)?,
        seq: u32_of(seq)?,
        step,
        status,
        input,
        output,
        error,
        attempts: u32_of(attempts)?,
        idempotency_key: key,
        started_at: from_ns(started)?,
        finished_at: opt_ns(finished)?,
    })
}

pub(super) fn put_step(tx: &Transaction<'_>, s: &StepRecord) -> Result<(), StoreError> {
    tx.execute(
        "INSERT OR REPLACE INTO connect_steps (run, seq, step, status, input, output, error,
             attempts, idempotency_key, started_at, finished_at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)",
        params![
            s.run.to_string(),
            s.seq,
            s.step,
            s.status,
            s.input,
            s.output,
            s.error,
            s.attempts,
            s.idempotency_key,
            ns(s.started_at)?,
            s.finished_at.map(ns).transpose()?,
        ],
    )?;
    Ok(())
}

pub(super) fn insert_queued(tx: &Transaction<'_>, run: &NewRun) -> Result<(), StoreError> {
    let at = ns(run.at)?;
    tx.execute(
        "INSERT INTO connect_runs (id, team, flow, version, status, trigger, input,
             context, next_step, not_before, created_at)
         VALUES (?1, ?2, ?3, ?4, 'queued', ?5, ?6, ?7, ?8, ?9, ?9)",
        params![
            run.id.to_string(),
            run.team.to_string(),
            run.flow.to_string(),
            run.version,
            run.trigger,
            run.input,
            run.context,
            run.first_step,
            at,
        ],
    )?;
    Ok(())
}

/// Whether `owner` holds the running run `id`.
pub(super) fn holds(tx: &Transaction<'_>, id: &str, owner: &str) -> Result<bool, StoreError> {
    let row: Option<(String, Option<String>)> = tx
        .query_row(
            "SELECT status, lease_owner FROM connect_runs WHERE id = ?1",
            params![id],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .optional()?;
    Ok(matches!(row, Some((s, Some(o))) if s == "running" && o == owner))
}

pub(super) fn credential_of(r: &Row<'_>) -> rusqlite::Result<CredRow> {
    Ok((
        r.get(0)?,
        r.get(1)?,
        r.get(2)?,
        r.get(3)?,
        r.get(4)?,
        r.get(5)?,
        r.get(6)?,
        r.get(7)?,
    ))
}

pub(super) type CredRow = (String, String, String, String, String, Vec<u8>, String, i64);

pub(super) fn cred_record(row: CredRow) -> Result<FlowCredentialRecord, StoreError> {
    let (id, team, name, kind, settings, sealed, by, at) = row;
    Ok(FlowCredentialRecord {
        id: parse_id(&id)?,
        team: parse_id(&team)?,
        name,
        kind,
        settings,
        sealed,
        created_by: by,
        created_at: from_ns(at)?,
    })
}

pub(super) const CRED_COLS: &str = "id, team, name, kind, settings, sealed, created_by, created_at";

/// Whether `team` has fewer than `limit` running runs whose lease has not
/// passed at `at` (Unix nanoseconds).
pub(super) fn under_team_limit(
    tx: &Transaction<'_>,
    team: TeamId,
    at: i64,
    limit: u32,
) -> Result<bool, StoreError> {
    // `+team` keeps SQLite off the by-team index, which would walk every
    // run the team ever had (its whole history until pruned, on every
    // webhook call); the status index visits only the running runs.
    let running: i64 = tx.query_row(
        "SELECT count(*) FROM connect_runs
         WHERE +team = ?1 AND status = 'running' AND lease_until >= ?2",
        params![team.to_string(), at],
        |r| r.get(0),
    )?;
    Ok(running < i64::from(limit))
}
