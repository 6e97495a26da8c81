//! The event pipeline end to end on real encrypted storage: concurrent
//! durable recording, tamper detection against the raw store, events that
//! commit with the state change they describe, secrets kept out, detection.
//! One binary for the crate.

// Helpers outside `#[test]` functions are not covered by clippy.toml's
// allow-*-in-tests settings; a failing helper should fail the test.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::Arc;

use kura_crypto::{LocalKms, SealParams};
use kura_events::{
    BreakKind, Detector, EventLog, EventLogOptions, EventQuery, EventSink, LogSink, Order,
    VerifyOptions, actions, prepare,
};
use kura_store::{DataDir, Durability, Storage, StorageOptions, open_encrypted, open_storage};
use kura_types::{Action, Actor, Clock, KeyScope, Outcome, SecurityEvent, SystemClock, TeamId};
use rusqlite::Connection;
use time::OffsetDateTime;

struct Env {
    _tmp: tempfile::TempDir,
    dir: DataDir,
    storage: Storage,
    sink: LogSink,
}

async fn fresh(checkpoint_every: u64, detect: bool) -> Env {
    let tmp = tempfile::tempdir().unwrap();
    let dir = DataDir::new(tmp.path().join("kura-data"));
    dir.prepare().unwrap();
    let kms = Arc::new(
        LocalKms::create(
            &dir.master_key_file(),
            None,
            SealParams::default(),
            OffsetDateTime::now_utc(),
        )
        .unwrap(),
    );
    let storage = open_storage(&dir, kms, Arc::new(SystemClock), StorageOptions::default())
        .await
        .unwrap();
    let log = EventLog::open(
        &storage,
        Arc::new(SystemClock),
        EventLogOptions {
            checkpoint_every,
            ..EventLogOptions::default()
        },
    )
    .await
    .unwrap();
    let sink = if detect {
        LogSink::with_detector(log, Detector::new())
    } else {
        LogSink::new(log)
    };
    Env {
        _tmp: tmp,
        dir,
        storage,
        sink,
    }
}

impl Env {
    async fn raw(&self) -> Connection {
        let key = self.storage.keys.get(KeyScope::Platform).await.unwrap();
        open_encrypted(&self.dir.platform_db(), Some(&key), false, Durability::Full).unwrap()
    }
}

fn event(action: &str, outcome: Outcome) -> SecurityEvent {
    SecurityEvent::new(
        SystemClock.now(),
        Actor::Account { id: "ann".into() },
        Action::parse(action).unwrap(),
        outcome,
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_concurrent_records_all_land_in_one_valid_chain() {
    let env = fresh(250, false).await;
    let sink: Arc<dyn EventSink> = Arc::new(env.sink.clone());
    let mut tasks = Vec::new();
    for i in 0..1000 {
        let sink = Arc::clone(&sink);
        tasks.push(tokio::spawn(async move {
            sink.record(event("auth.signin.succeeded", Outcome::Success).with_detail("n", i))
                .await
        }));
    }
    for t in tasks {
        t.await.unwrap().unwrap();
    }
    let report = env.sink.verify(VerifyOptions::default()).await.unwrap();
    assert!(report.is_intact(), "{report}");
    assert_eq!(report.0.entries_checked, 1000);
    assert_eq!(
        (report.0.first_seq, report.0.last_seq),
        (Some(1), Some(1000))
    );
    // Every one of the thousand distinct events is there exactly once.
    let mut seen = std::collections::BTreeSet::new();
    let mut cursor = None;
    loop {
        let page = env
            .sink
            .log()
            .query(EventQuery {
                cursor,
                limit: 1000,
                order: Order::OldestFirst,
                ..EventQuery::default()
            })
            .await
            .unwrap();
        for e in &page.events {
            assert!(seen.insert(e.event.details["n"].as_u64().unwrap()));
        }
        match page.next_cursor {
            Some(c) => cursor = Some(c),
            None => break,
        }
    }
    assert_eq!(seen.len(), 1000);
}

/// Records 20 events, applies `tamper` to the raw store, and returns the
/// report's first break and its text.
async fn tampered(tamper: &str) -> (u64, BreakKind, String) {
    let env = fresh(10, false).await;
    for i in 0..20 {
        env.sink
            .record(event("admin.role.granted", Outcome::Success).with_detail("i", i))
            .await
            .unwrap();
    }
    assert!(
        env.sink
            .verify(VerifyOptions::default())
            .await
            .unwrap()
            .is_intact()
    );
    env.raw().await.execute_batch(tamper).unwrap();
    let report = env.sink.verify(VerifyOptions::default()).await.unwrap();
    let text = report.to_string();
    let problem = report.problem().cloned().unwrap();
    (problem.seq, problem.kind, text)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mutation_deletion_and_reordering_in_the_raw_store_are_reported_at_the_right_entry() {
    let (seq, kind, text) = tampered(
        "UPDATE events SET body = CAST(replace(CAST(body AS TEXT), 'granted', 'revoked') AS BLOB) WHERE seq = 4",
    )
    .await;
    assert_eq!((seq, kind), (4, BreakKind::ContentAltered), "{text}");
    assert!(text.starts_with("TAMPERED: entry 4 "), "{text}");

    let (seq, kind, text) = tampered("DELETE FROM events WHERE seq = 12").await;
    assert_eq!(
        (seq, kind),
        (
            12,
            BreakKind::Missing {
                next_present: Some(13)
            }
        ),
        "{text}"
    );

    let (seq, kind, text) = tampered(
        "UPDATE events SET seq = -1 WHERE seq = 15;
         UPDATE events SET seq = 15 WHERE seq = 16;
         UPDATE events SET seq = 16 WHERE seq = -1;",
    )
    .await;
    assert_eq!((seq, kind), (15, BreakKind::LinkBroken), "{text}");

    let (seq, kind, text) = tampered("DELETE FROM events WHERE seq >= 18").await;
    assert_eq!(
        (seq, kind),
        (18, BreakKind::Truncated { checkpoint: 20 }),
        "{text}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_state_change_and_its_event_commit_or_fail_together() {
    let env = fresh(0, false).await;
    let pool = env.sink.log().pool().clone();
    pool.write(|tx| Ok(tx.execute_batch("CREATE TABLE roles(name TEXT NOT NULL)")?))
        .await
        .unwrap();

    let record = prepare(event("admin.role.granted", Outcome::Success)).unwrap();
    pool.write(move |tx| {
        tx.execute("INSERT INTO roles VALUES ('auditor')", [])?;
        kura_store::events::append_in_tx(tx, &[record])?;
        Ok(())
    })
    .await
    .unwrap();

    let record = prepare(event("admin.role.granted", Outcome::Success)).unwrap();
    let failed = pool
        .write(move |tx| {
            kura_store::events::append_in_tx(tx, &[record])?;
            tx.execute("INSERT INTO roles VALUES (NULL)", [])?;
            Ok(())
        })
        .await;
    assert!(failed.is_err());

    let events = env.sink.log().query(EventQuery::default()).await.unwrap();
    assert_eq!(events.events.len(), 1, "the failed change left no event");
    let roles: i64 = pool
        .read(|c| Ok(c.query_row("SELECT count(*) FROM roles", [], |r| r.get(0))?))
        .await
        .unwrap();
    assert_eq!(roles, 1);
    // Events appended inside callers' transactions and through the writer
    // share one chain.
    env.sink
        .record(event("admin.role.revoked", Outcome::Success))
        .await
        .unwrap();
    let report = env.sink.verify(VerifyOptions::default()).await.unwrap();
    assert!(report.is_intact(), "{report}");
    assert_eq!(report.0.last_seq, Some(2));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn secrets_and_card_numbers_never_reach_the_stored_log() {
    let env = fresh(0, false).await;
    env.sink
        .record(
            event("auth.signin.failed", Outcome::Failure)
                .with_detail("password", "correct-horse-battery-staple")
                .with_detail("note", "card 4111 1111 1111 1111")
                .with_user_agent("Bearer-ish agent 5555555555554444"),
        )
        .await
        .unwrap();
    let raw = env.raw().await;
    let bodies: Vec<Vec<u8>> = raw
        .prepare("SELECT body FROM events")
        .unwrap()
        .query_map([], |r| r.get(0))
        .unwrap()
        .map(Result::unwrap)
        .collect();
    let text = String::from_utf8(bodies.concat()).unwrap();
    assert!(!text.contains("correct-horse"), "{text}");
    assert!(!text.contains("4111 1111"), "{text}");
    assert!(!text.contains("5555555555554444"), "{text}");
    assert!(text.contains("[REDACTED]"), "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn detection_records_alerts_linked_to_their_events() {
    let env = fresh(0, true).await;
    let team = TeamId::new();
    let mut ids = Vec::new();
    for _ in 0..5 {
        let e = event(actions::SIGNIN_FAILED, Outcome::Failure)
            .with_team(team)
            .with_target("account:ann")
            .with_source("192.0.2.1".parse().unwrap());
        ids.push(e.id.to_string());
        env.sink.record(e).await.unwrap();
    }
    let alerts = env
        .sink
        .log()
        .query(EventQuery {
            action_prefix: Some("detect".into()),
            team: Some(team),
            ..EventQuery::default()
        })
        .await
        .unwrap();
    assert_eq!(alerts.events.len(), 1);
    let alert = &alerts.events[0].event;
    assert_eq!(alert.details["rule"], "signin_failures_account");
    let linked: Vec<String> = alert.details["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap().to_owned())
        .collect();
    assert_eq!(linked, ids);
    assert!(
        env.sink
            .verify(VerifyOptions::default())
            .await
            .unwrap()
            .is_intact()
    );
}
