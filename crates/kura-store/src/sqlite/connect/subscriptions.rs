//! App-event subscriptions: each enabled flow with an app-event trigger
//! keeps its place (the outbox sequence number) in its app's change
//! outbox. The place moves in the same transaction that queues the runs
//! for the entries it passes, so an entry becomes runs exactly once.

use kura_types::FlowId;
use rusqlite::{OptionalExtension as _, params};

use super::rows::{insert_queued, parse_id};
use crate::StoreError;
use crate::connect::{AppSubscriptionRecord, NewRun};
use crate::sqlite::Pool;

type Raw = (String, String, String, i64);

fn record((flow, team, app, cursor): Raw) -> Result<AppSubscriptionRecord, StoreError> {
    Ok(AppSubscriptionRecord {
        flow: parse_id(&flow)?,
        team: parse_id(&team)?,
        app: parse_id(&app)?,
        cursor,
    })
}

fn raw(r: &rusqlite::Row<'_>) -> rusqlite::Result<Raw> {
    Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?))
}

pub(super) async fn set(
    pool: &Pool,
    flow: FlowId,
    subscription: Option<AppSubscriptionRecord>,
) -> Result<(), StoreError> {
    pool.write(move |tx| {
        tx.execute(
            "DELETE FROM connect_app_subscriptions WHERE flow = ?1",
            params![flow.to_string()],
        )?;
        if let Some(s) = subscription {
            tx.execute(
                "INSERT INTO connect_app_subscriptions (flow, team, app, cursor)
                 VALUES (?1, ?2, ?3, ?4)",
                params![
                    s.flow.to_string(),
                    s.team.to_string(),
                    s.app.to_string(),
                    s.cursor
                ],
            )?;
        }
        Ok(())
    })
    .await
}

pub(super) async fn one(
    pool: &Pool,
    flow: FlowId,
) -> Result<Option<AppSubscriptionRecord>, StoreError> {
    pool.read(move |c| {
        c.query_row(
            "SELECT flow, team, app, cursor FROM connect_app_subscriptions WHERE flow = ?1",
            params![flow.to_string()],
            raw,
        )
        .optional()?
        .map(record)
        .transpose()
    })
    .await
}

pub(super) async fn enabled(pool: &Pool) -> Result<Vec<AppSubscriptionRecord>, StoreError> {
    pool.read(|c| {
        let mut stmt = c.prepare_cached(
            "SELECT s.flow, s.team, s.app, s.cursor
             FROM connect_app_subscriptions s JOIN connect_flows f ON f.id = s.flow
             WHERE f.enabled = 1 ORDER BY s.flow",
        )?;
        let rows = stmt.query_map([], raw)?;
        rows.map(|r| record(r?)).collect()
    })
    .await
}

pub(super) async fn deliver(
    pool: &Pool,
    from: &AppSubscriptionRecord,
    to: i64,
    runs: Vec<NewRun>,
) -> Result<bool, StoreError> {
    let (flow, expected) = (from.flow, from.cursor);
    pool.write(move |tx| {
        let moved = tx.execute(
            "UPDATE connect_app_subscriptions SET cursor = ?1 WHERE flow = ?2 AND cursor = ?3",
            params![to, flow.to_string(), expected],
        )?;
        if moved == 0 {
            return Ok(false);
        }
        for run in &runs {
            insert_queued(tx, run)?;
        }
        Ok(true)
    })
    .await
}
