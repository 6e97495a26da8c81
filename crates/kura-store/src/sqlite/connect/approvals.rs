//! [`ApprovalStore`] on the platform database (platform migration 11).
//! Decisions are compare-and-swaps on `status = 'pending'` in the same
//! transaction that spends the link, wakes the run and appends the events.

use async_trait::async_trait;
use kura_types::{ApprovalId, RunId, TeamId};
use rusqlite::{OptionalExtension as _, Row, params};
use time::OffsetDateTime;

use super::SqliteConnectStore;
use super::rows::{from_ns, ns, opt_ns, parse_id};
use crate::StoreError;
use crate::connect_approvals::{
    ApprovalDecision, ApprovalLinkRecord, ApprovalRecord, ApprovalStatus, ApprovalStore,
    DecisionOutcome,
};
use crate::sqlite::events::append_in_tx;

const COLS: &str = "id, team, flow, run, step, approvers, message, status, decided_by, \
                    decided_via, comment, created_at, expires_at, decided_at, closed";

type Row15 = ([String; 8], [Option<String>; 3], i64, i64, Option<i64>, i64);

fn row(r: &Row<'_>) -> rusqlite::Result<Row15> {
    Ok((
        [
            r.get(0)?,
            r.get(1)?,
            r.get(2)?,
            r.get(3)?,
            r.get(4)?,
            r.get(5)?,
            r.get(6)?,
            r.get(7)?,
        ],
        [r.get(8)?, r.get(9)?, r.get(10)?],
        r.get(11)?,
        r.get(12)?,
        r.get(13)?,
        r.get(14)?,
    ))
}

fn record(r: Row15) -> Result<ApprovalRecord, StoreError> {
    let ([id, team, flow, run, step, approvers, message, status], [by, via, comment], c, e, d, x) =
        r;
    Ok(ApprovalRecord {
        id: parse_id(&id)?,
        team: parse_id(&team)?,
        flow: parse_id(&flow)?,
        run: parse_id(&run)?,
        step,
        approvers: serde_json::from_str(&approvers)
            .map_err(|e| StoreError::Malformed(format!("approvers: {e}")))?,
        message,
        status: ApprovalStatus::parse(&status)
            .ok_or_else(|| StoreError::Malformed(format!("approval status `{status}`")))?,
        decided_by: by,
        decided_via: via,
        comment,
        created_at: from_ns(c)?,
        expires_at: from_ns(e)?,
        decided_at: opt_ns(d)?,
        closed: x != 0,
    })
}

fn hash_of(v: Vec<u8>) -> Result<[u8; 32], StoreError> {
    v.try_into()
        .map_err(|_| StoreError::Malformed("a link hash is not 32 bytes".into()))
}

#[async_trait]
impl ApprovalStore for SqliteConnectStore {
    async fn open_approval(
        &self,
        owner: &str,
        a: ApprovalRecord,
        links: Vec<ApprovalLinkRecord>,
        events: Vec<crate::events::EventRecord>,
    ) -> Result<bool, StoreError> {
        let owner = owner.to_owned();
        self.pool
            .write(move |tx| {
                if !super::rows::holds(tx, &a.run.to_string(), &owner)? {
                    return Ok(false);
                }
                let approvers = serde_json::to_string(&a.approvers)
                    .map_err(|e| StoreError::Malformed(e.to_string()))?;
                tx.execute(
                    &format!(
                        "INSERT INTO connect_approvals ({COLS})
                         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15)"
                    ),
                    params![
                        a.id.to_string(),
                        a.team.to_string(),
                        a.flow.to_string(),
                        a.run.to_string(),
                        a.step,
                        approvers,
                        a.message,
                        a.status.as_str(),
                        a.decided_by,
                        a.decided_via,
                        a.comment,
                        ns(a.created_at)?,
                        ns(a.expires_at)?,
                        a.decided_at.map(ns).transpose()?,
                        i64::from(a.closed),
                    ],
                )?;
                for l in &links {
                    tx.execute(
                        "INSERT INTO connect_approval_links (token_hash, approval, approver, expires_at, used_at)
                         VALUES (?1, ?2, ?3, ?4, NULL)",
                        params![&l.token_hash[..], l.approval.to_string(), l.approver, ns(l.expires_at)?],
                    )?;
                }
                append_in_tx(tx, &events)?;
                Ok(true)
            })
            .await
    }

    async fn open_approval_of_step(
        &self,
        run: RunId,
        step: &str,
    ) -> Result<Option<ApprovalRecord>, StoreError> {
        let step = step.to_owned();
        self.pool
            .read(move |c| {
                c.query_row(
                    &format!(
                        "SELECT {COLS} FROM connect_approvals
                         WHERE run = ?1 AND step = ?2 AND closed = 0
                         ORDER BY created_at DESC, id DESC LIMIT 1"
                    ),
                    params![run.to_string(), step],
                    row,
                )
                .optional()?
                .map(record)
                .transpose()
            })
            .await
    }

    async fn approval(&self, id: ApprovalId) -> Result<Option<ApprovalRecord>, StoreError> {
        self.pool
            .read(move |c| {
                c.query_row(
                    &format!("SELECT {COLS} FROM connect_approvals WHERE id = ?1"),
                    params![id.to_string()],
                    row,
                )
                .optional()?
                .map(record)
                .transpose()
            })
            .await
    }

    async fn approvals(
        &self,
        team: TeamId,
        pending_only: bool,
    ) -> Result<Vec<ApprovalRecord>, StoreError> {
        self.pool
            .read(move |c| {
                let mut stmt = c.prepare(&format!(
                    "SELECT {COLS} FROM connect_approvals
                     WHERE team = ?1 AND (?2 = 0 OR status = 'pending')
                     ORDER BY created_at DESC, id DESC LIMIT 500"
                ))?;
                let rows = stmt.query_map(params![team.to_string(), pending_only], row)?;
                rows.map(|r| record(r?)).collect()
            })
            .await
    }

    async fn approval_link(
        &self,
        token_hash: [u8; 32],
    ) -> Result<Option<ApprovalLinkRecord>, StoreError> {
        self.pool
            .read(move |c| {
                let found: Option<(Vec<u8>, String, String, i64, Option<i64>)> = c
                    .query_row(
                        "SELECT token_hash, approval, approver, expires_at, used_at
                         FROM connect_approval_links WHERE token_hash = ?1",
                        params![&token_hash[..]],
                        |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?)),
                    )
                    .optional()?;
                found
                    .map(|(h, approval, approver, e, u)| {
                        Ok(ApprovalLinkRecord {
                            token_hash: hash_of(h)?,
                            approval: parse_id(&approval)?,
                            approver,
                            expires_at: from_ns(e)?,
                            used_at: opt_ns(u)?,
                        })
                    })
                    .transpose()
            })
            .await
    }

    async fn decide(&self, d: ApprovalDecision) -> Result<DecisionOutcome, StoreError> {
        if !matches!(
            d.status,
            ApprovalStatus::Approved | ApprovalStatus::Rejected
        ) {
            return Err(StoreError::Malformed(
                "a decision approves or rejects".into(),
            ));
        }
        self.pool
            .write(move |tx| {
                let at = ns(d.at)?;
                let id = d.approval.to_string();
                let found: Option<(String, String, i64)> = tx
                    .query_row(
                        "SELECT a.status, r.status, a.expires_at
                         FROM connect_approvals a JOIN connect_runs r ON r.id = a.run
                         WHERE a.id = ?1",
                        params![id],
                        |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
                    )
                    .optional()?;
                let Some((status, run_status, expires)) = found else {
                    return Ok(DecisionOutcome::NotFound);
                };
                // A run still `running` has just opened the approval and is
                // about to pause; once paused its worker looks at the
                // approval again (`wake_waiting_run`).
                if status != "pending" || !matches!(run_status.as_str(), "waiting" | "running") {
                    return Ok(DecisionOutcome::NotPending);
                }
                if at >= expires {
                    return Ok(DecisionOutcome::Expired);
                }
                if let Some(hash) = d.link {
                    let spent = tx.execute(
                        "UPDATE connect_approval_links SET used_at = ?1
                         WHERE token_hash = ?2 AND approval = ?3 AND used_at IS NULL
                           AND expires_at > ?1",
                        params![at, &hash[..], id],
                    )?;
                    if spent == 0 {
                        return Ok(DecisionOutcome::LinkUsed);
                    }
                }
                tx.execute(
                    "UPDATE connect_approvals SET status = ?1, decided_by = ?2, decided_via = ?3,
                         comment = ?4, decided_at = ?5
                     WHERE id = ?6 AND status = 'pending'",
                    params![d.status.as_str(), d.by, d.via, d.comment, at, id],
                )?;
                // Every other link of the approval dies with the decision.
                tx.execute(
                    "UPDATE connect_approval_links SET used_at = ?1
                     WHERE approval = ?2 AND used_at IS NULL",
                    params![at, id],
                )?;
                tx.execute(
                    "UPDATE connect_runs SET not_before = ?1
                     WHERE id = (SELECT run FROM connect_approvals WHERE id = ?2)
                       AND status = 'waiting'",
                    params![at, id],
                )?;
                append_in_tx(tx, &d.events)?;
                Ok(DecisionOutcome::Recorded)
            })
            .await
    }

    async fn time_out_approval(
        &self,
        id: ApprovalId,
        at: OffsetDateTime,
        events: Vec<crate::events::EventRecord>,
    ) -> Result<bool, StoreError> {
        self.pool
            .write(move |tx| {
                let at = ns(at)?;
                let n = tx.execute(
                    "UPDATE connect_approvals SET status = 'timed_out', decided_by = 'system',
                         decided_via = 'timeout', decided_at = ?1
                     WHERE id = ?2 AND status = 'pending' AND expires_at <= ?1",
                    params![at, id.to_string()],
                )?;
                if n == 0 {
                    return Ok(false);
                }
                tx.execute(
                    "UPDATE connect_approval_links SET used_at = ?1
                     WHERE approval = ?2 AND used_at IS NULL",
                    params![at, id.to_string()],
                )?;
                append_in_tx(tx, &events)?;
                Ok(true)
            })
            .await
    }

    async fn wake_waiting_run(&self, run: RunId, at: OffsetDateTime) -> Result<bool, StoreError> {
        self.pool
            .write(move |tx| {
                let n = tx.execute(
                    "UPDATE connect_runs SET not_before = ?1 WHERE id = ?2 AND status = 'waiting'",
                    params![ns(at)?, run.to_string()],
                )?;
                Ok(n > 0)
            })
            .await
    }

    async fn close_approval(&self, id: ApprovalId) -> Result<(), StoreError> {
        self.pool
            .write(move |tx| {
                tx.execute(
                    "UPDATE connect_approvals SET closed = 1 WHERE id = ?1",
                    params![id.to_string()],
                )?;
                Ok(())
            })
            .await
    }
}
