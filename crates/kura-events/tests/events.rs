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
        let sink = LogSink::with_detector(log, Detector::new());
        // As the server does when it starts: detection begins here.
        sink.catch_up().await;
        sink
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_is_recorded_whole_and_contiguous_or_not_at_all() {
    let env = fresh(0, false).await;
    let sink: Arc<dyn EventSink> = Arc::new(env.sink.clone());
    // Single records race the batches; each batch still lands as one run
    // of consecutive entries.
    let mut tasks = Vec::new();
    for b in 0..20 {
        let batcher = Arc::clone(&sink);
        tasks.push(tokio::spawn(async move {
            let batch = (0..25)
                .map(|i| {
                    event("edge.waf.blocked", Outcome::Denied)
                        .with_detail("batch", b)
                        .with_detail("i", i)
                })
                .collect();
            batcher.record_all(batch).await
        }));
        let single = Arc::clone(&sink);
        tasks.push(tokio::spawn(async move {
            single
                .record(event("auth.signin.succeeded", Outcome::Success))
                .await
        }));
    }
    for t in tasks {
        t.await.unwrap().unwrap();
    }
    let page = env
        .sink
        .log()
        .query(EventQuery {
            limit: 1000,
            order: Order::OldestFirst,
            ..EventQuery::default()
        })
        .await
        .unwrap();
    assert_eq!(page.events.len(), 20 * 25 + 20);
    for b in 0..20 {
        let seqs: Vec<(u64, i64)> = page
            .events
            .iter()
            .filter(|e| e.event.details.get("batch") == Some(&serde_json::json!(b)))
            .map(|e| (e.seq, e.event.details["i"].as_i64().unwrap()))
            .collect();
        assert_eq!(seqs.len(), 25);
        let first = seqs[0].0;
        for (k, (seq, i)) in seqs.iter().enumerate() {
            assert_eq!((*seq, *i), (first + k as u64, k as i64), "batch {b}");
        }
    }

    // One event the log refuses (too large) refuses the whole batch.
    let before = env.sink.log().query(EventQuery::default()).await.unwrap();
    let bad = vec![
        event("edge.waf.blocked", Outcome::Denied),
        event("edge.waf.blocked", Outcome::Denied)
            .with_detail("blob", "x".repeat(kura_events::MAX_EVENT_BYTES)),
    ];
    let err = sink.record_all(bad).await.unwrap_err();
    assert!(err.to_string().contains("limit"), "{err}");
    let after = env.sink.log().query(EventQuery::default()).await.unwrap();
    assert_eq!(after.events[0].seq, before.events[0].seq, "nothing landed");
    assert!(
        env.sink
            .verify(VerifyOptions::default())
            .await
            .unwrap()
            .is_intact()
    );
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
    assert_eq!((seq, kind), (4, BreakKind::HashMismatch), "{text}");
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
    assert_eq!((seq, kind), (15, BreakKind::HashMismatch), "{text}");

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

/// Events a store appended inside its own write (as Kura ID does) are not
/// seen by the detector until they are observed; observing them raises the
/// same alert recording them would, linked to the stored events.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_committed_with_a_change_reach_detection_when_observed() {
    let env = fresh(0, true).await;
    let team = TeamId::new();
    let events: Vec<SecurityEvent> = (0..5)
        .map(|_| {
            event(actions::SIGNIN_FAILED, Outcome::Failure)
                .with_team(team)
                .with_target("account:ann")
        })
        .collect();
    let records = events
        .iter()
        .cloned()
        .map(prepare)
        .collect::<Result<Vec<_>, _>>()
        .unwrap();
    env.sink
        .log()
        .pool()
        .write(move |tx| kura_store::events::append_in_tx(tx, &records).map(|_| ()))
        .await
        .unwrap();
    let alerts = async || {
        env.sink
            .log()
            .query(EventQuery {
                action_prefix: Some("detect".into()),
                team: Some(team),
                ..EventQuery::default()
            })
            .await
            .unwrap()
            .events
    };
    assert!(alerts().await.is_empty(), "nothing observed yet");

    env.sink.observe(&events).await;
    let raised = alerts().await;
    assert_eq!(raised.len(), 1);
    let linked = raised[0].event.details["events"].as_array().unwrap().len();
    assert_eq!(linked, 5);
    assert!(
        env.sink
            .verify(VerifyOptions::default())
            .await
            .unwrap()
            .is_intact()
    );
}

/// SIEM exports (JSON lines files and signed webhooks) and incidents, on the
/// real encrypted platform database.
mod exports_and_incidents {
    use super::*;

    use std::os::unix::fs::PermissionsExt as _;
    use std::path::Path;
    use std::sync::atomic::{AtomicU32, Ordering};
    use std::time::Duration;

    use axum::Router;
    use axum::body::Bytes;
    use axum::extract::State;
    use axum::http::{HeaderMap, StatusCode};
    use axum::routing::post;
    use kura_crypto::hmac::HmacKey;
    use kura_events::export::{
        Backoff, ExporterOptions, JsonlConfig, JsonlSink, RetryPolicy, WebhookClient,
        WebhookConfig, WebhookSink, verify_signature,
    };
    use kura_events::incident::{
        CommunicationPlan, IncidentListQuery, NewIncident, NewWebhookChannel, NotificationPolicy,
        NotificationReport, Route, WebhookChannel,
    };
    use kura_events::{Alert, Exporter, IncidentError, IncidentService, IncidentState, Severity};
    use kura_store::events::{GENESIS, chain_hash};
    use kura_store::exports::ExportStore;
    use kura_store::{SqliteExportStore, SqliteIncidentStore};
    use parking_lot::Mutex;

    const SECRET: &[u8] = b"test-webhook-secret-0123456789abcdef";

    fn clock() -> Arc<dyn Clock> {
        Arc::new(SystemClock)
    }

    async fn record_n(env: &Env, from: u64, n: u64) {
        for i in from..from + n {
            env.sink
                .record(event("auth.signin.succeeded", Outcome::Success).with_detail("n", i))
                .await
                .unwrap();
        }
    }

    fn cursors(env: &Env) -> Arc<dyn ExportStore> {
        Arc::new(SqliteExportStore::new(env.sink.log().pool().clone()))
    }

    fn options(batch_size: usize) -> ExporterOptions {
        ExporterOptions {
            batch_size,
            poll_interval: Duration::from_millis(20),
            backoff: Backoff {
                initial: Duration::from_millis(5),
                max: Duration::from_millis(20),
            },
        }
    }

    /// Every line of the JSON lines files under `dir`, oldest file first
    /// (rotated files by name, then the current file), as (seq, hash, event
    /// JSON text).
    fn exported_lines(dir: &Path) -> Vec<(u64, String, String)> {
        let mut files: Vec<_> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.file_name().unwrap() != "events.jsonl")
            .collect();
        files.sort();
        files.push(dir.join("events.jsonl"));
        let mut out = Vec::new();
        for f in files {
            for line in std::fs::read_to_string(&f).unwrap().lines() {
                let v: serde_json::Value = serde_json::from_str(line).unwrap();
                // The event is embedded byte for byte as the chain stores it.
                let event = line
                    .split_once(",\"event\":")
                    .unwrap()
                    .1
                    .strip_suffix('}')
                    .unwrap()
                    .to_owned();
                out.push((
                    v["seq"].as_u64().unwrap(),
                    v["hash"].as_str().unwrap().to_owned(),
                    event,
                ));
            }
        }
        out
    }

    /// An outside party can check an exported stream against the chain
    /// without Kura: each hash binds its seq, the previous hash and the body.
    fn check_chain(lines: &[(u64, String, String)]) {
        let mut prev = GENESIS;
        for (seq, hash, body) in lines {
            let expected = chain_hash(*seq, &prev, body.as_bytes());
            assert_eq!(hex::encode(expected), *hash, "entry {seq}");
            prev = expected;
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn an_exporter_restarted_mid_stream_neither_misses_nor_repeats_events() {
        let env = fresh(0, false).await;
        let out = env._tmp.path().join("siem");
        record_n(&env, 0, 25).await;

        // First run: two batches of ten, then the process "stops".
        let first = Exporter::new(
            Arc::new(JsonlSink::new(JsonlConfig::new("files", &out), clock()).unwrap()),
            env.sink.log().clone(),
            cursors(&env),
            clock(),
            options(10),
        );
        assert_eq!(first.export_once().await.unwrap(), 10);
        assert_eq!(first.export_once().await.unwrap(), 10);
        drop(first);
        let cursor = cursors(&env).cursor("files").await.unwrap().unwrap();
        assert_eq!((cursor.seq, cursor.exported), (20, 20));

        // More events arrive while it is down; a new process resumes from the
        // stored cursor and runs until told to stop.
        record_n(&env, 25, 10).await;
        let second = Exporter::new(
            Arc::new(JsonlSink::new(JsonlConfig::new("files", &out), clock()).unwrap()),
            env.sink.log().clone(),
            cursors(&env),
            clock(),
            options(10),
        );
        let stats = second.stats();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let task = second.spawn(async move {
            let _ = stopped.await;
        });
        tokio::time::timeout(Duration::from_secs(30), async {
            while stats.exported() < 15 {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        })
        .await
        .unwrap();
        // Events recorded while it runs are picked up too.
        record_n(&env, 35, 3).await;
        tokio::time::timeout(Duration::from_secs(30), async {
            while stats.exported() < 18 {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        })
        .await
        .unwrap();
        stop.send(()).unwrap();
        task.await.unwrap();

        let lines = exported_lines(&out);
        let seqs: Vec<u64> = lines.iter().map(|l| l.0).collect();
        assert_eq!(
            seqs,
            (1..=38).collect::<Vec<_>>(),
            "each event exactly once, in order"
        );
        check_chain(&lines);
        assert_eq!(stats.failed(), 0);
        assert_eq!(
            cursors(&env).cursor("files").await.unwrap().unwrap().seq,
            38
        );
        let mode = std::fs::metadata(out.join("events.jsonl"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
    }

    /// A sink that refuses its first `fail` batches, to show a failed batch
    /// leaves the cursor where it was.
    #[derive(Debug)]
    struct Flaky {
        fail: AtomicU32,
        seen: Mutex<Vec<u64>>,
    }

    #[async_trait::async_trait]
    impl kura_events::ExportSink for Flaky {
        fn name(&self) -> &str {
            "flaky"
        }

        async fn deliver(
            &self,
            batch: &[kura_events::StoredEvent],
        ) -> Result<(), kura_events::ExportError> {
            if self
                .fail
                .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
                .is_ok()
            {
                return Err(kura_events::ExportError::delivery("flaky", "receiver down"));
            }
            self.seen.lock().extend(batch.iter().map(|e| e.seq));
            Ok(())
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_failed_batch_keeps_the_cursor_and_is_retried_whole() {
        let env = fresh(0, false).await;
        record_n(&env, 0, 7).await;
        let sink = Arc::new(Flaky {
            fail: AtomicU32::new(1),
            seen: Mutex::new(Vec::new()),
        });
        let exporter = Exporter::new(
            sink.clone(),
            env.sink.log().clone(),
            cursors(&env),
            clock(),
            options(5),
        );
        assert!(exporter.export_once().await.is_err());
        assert_eq!(cursors(&env).cursor("flaky").await.unwrap(), None);
        assert_eq!(exporter.export_once().await.unwrap(), 5);
        assert_eq!(exporter.export_once().await.unwrap(), 2);
        assert_eq!(exporter.export_once().await.unwrap(), 0);
        assert_eq!(*sink.seen.lock(), (1..=7).collect::<Vec<_>>());
        let stats = exporter.stats();
        assert_eq!((stats.exported(), stats.failed()), (7, 1));
        // Two exporters under one name cannot both move the cursor.
        let stale = cursors(&env)
            .advance("flaky", Some(5), 6, 1, SystemClock.now())
            .await;
        assert!(
            matches!(stale, Err(kura_store::StoreError::Conflict(_))),
            "{stale:?}"
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn jsonl_rotation_keeps_the_newest_n_files() {
        let env = fresh(0, false).await;
        let out = env._tmp.path().join("rotating");
        record_n(&env, 0, 30).await;
        let one_line = exported_lines_len(&env).await;
        let mut config = JsonlConfig::new("rotating", &out);
        // Room for three lines per file.
        config.max_bytes = one_line * 3 + one_line / 2;
        config.keep = 2;
        let exporter = Exporter::new(
            Arc::new(JsonlSink::new(config, clock()).unwrap()),
            env.sink.log().clone(),
            cursors(&env),
            clock(),
            options(7),
        );
        while exporter.export_once().await.unwrap() > 0 {}
        let mut names: Vec<String> = std::fs::read_dir(&out)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        names.sort();
        // 30 lines, three per file: nine rotated files were made, the two
        // newest are kept beside the current file.
        assert_eq!(
            names,
            [
                "events-00000000000000000022.jsonl",
                "events-00000000000000000025.jsonl",
                "events.jsonl"
            ]
        );
        let seqs: Vec<u64> = exported_lines(&out).iter().map(|l| l.0).collect();
        assert_eq!(seqs, (22..=30).collect::<Vec<_>>());
        for name in names {
            let mode = std::fs::metadata(out.join(name))
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600);
        }
    }

    /// The length of the longest exported line (with its newline) of the
    /// events recorded so far; the test events differ only in a counter.
    async fn exported_lines_len(env: &Env) -> u64 {
        let page = env
            .sink
            .log()
            .query(EventQuery {
                limit: 1000,
                ..EventQuery::default()
            })
            .await
            .unwrap();
        page.events
            .iter()
            .map(|e| kura_events::export::export_record(e).unwrap().len() as u64 + 1)
            .max()
            .unwrap()
    }

    /// A webhook receiver on loopback that checks signatures, fails its
    /// first `fail` valid requests with 500, and keeps what it accepted.
    #[derive(Clone, Default)]
    struct Hook {
        fail: Arc<AtomicU32>,
        requests: Arc<Mutex<Vec<Option<String>>>>,
        bad_signatures: Arc<AtomicU32>,
        accepted: Arc<Mutex<Vec<serde_json::Value>>>,
        /// The signing secret expected (empty: [`SECRET`]).
        secret: Arc<Mutex<Vec<u8>>>,
    }

    async fn receive(State(hook): State<Hook>, headers: HeaderMap, body: Bytes) -> StatusCode {
        let delivery = headers
            .get("x-kura-delivery")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        hook.requests.lock().push(delivery);
        let signature = headers
            .get("x-kura-signature")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default();
        let now = SystemClock.now().unix_timestamp();
        let secret = {
            let s = hook.secret.lock();
            if s.is_empty() {
                SECRET.to_vec()
            } else {
                s.clone()
            }
        };
        if verify_signature(&HmacKey::new(&secret), signature, &body, now, 300).is_err() {
            hook.bad_signatures.fetch_add(1, Ordering::SeqCst);
            return StatusCode::UNAUTHORIZED;
        }
        if hook
            .fail
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
            .is_ok()
        {
            return StatusCode::INTERNAL_SERVER_ERROR;
        }
        hook.accepted
            .lock()
            .push(serde_json::from_slice(&body).unwrap());
        StatusCode::NO_CONTENT
    }

    async fn hook_server(fail: u32) -> (String, Hook) {
        let hook = Hook::default();
        hook.fail.store(fail, Ordering::SeqCst);
        let app = Router::new()
            .route("/hook", post(receive))
            .with_state(hook.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        (format!("http://{addr}/hook"), hook)
    }

    fn webhook(env: &Env, name: &str, url: &str, secret: &[u8]) -> WebhookClient {
        let mut config = WebhookConfig::new(name, url, HmacKey::new(secret));
        config.retry = RetryPolicy {
            max_attempts: 4,
            backoff: Backoff {
                initial: Duration::from_millis(5),
                max: Duration::from_millis(20),
            },
        };
        WebhookClient::new(config, clock(), Some(cursors(env))).unwrap()
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_webhook_failing_twice_then_succeeding_delivers_exactly_once_with_retries() {
        let env = fresh(0, false).await;
        let (url, hook) = hook_server(2).await;
        record_n(&env, 0, 5).await;
        let exporter = Exporter::new(
            Arc::new(WebhookSink::new(webhook(&env, "siem", &url, SECRET))),
            env.sink.log().clone(),
            cursors(&env),
            clock(),
            options(100),
        );
        assert_eq!(exporter.export_once().await.unwrap(), 5);
        assert_eq!(
            exporter.export_once().await.unwrap(),
            0,
            "nothing is sent twice"
        );

        let requests = hook.requests.lock().clone();
        assert_eq!(requests.len(), 3, "two failures, then success");
        assert!(
            requests.iter().all(|d| d.as_deref() == Some("siem:1-5")),
            "one delivery id across retries: {requests:?}"
        );
        assert_eq!(hook.bad_signatures.load(Ordering::SeqCst), 0);
        let accepted = hook.accepted.lock().clone();
        assert_eq!(accepted.len(), 1);
        assert_eq!(accepted[0]["sink"], "siem");
        let seqs: Vec<u64> = accepted[0]["events"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["seq"].as_u64().unwrap())
            .collect();
        assert_eq!(seqs, [1, 2, 3, 4, 5]);

        // Every try was recorded, newest first.
        let attempts = cursors(&env).attempts("siem", 10).await.unwrap();
        let summary: Vec<(u32, bool, Option<u16>)> = attempts
            .iter()
            .map(|a| (a.attempt, a.ok, a.status))
            .collect();
        assert_eq!(
            summary,
            [
                (3, true, Some(204)),
                (2, false, Some(500)),
                (1, false, Some(500))
            ]
        );
        assert!(attempts.iter().all(|a| a.subject == "events 1..=5"));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_webhook_with_the_wrong_secret_is_refused_and_not_retried() {
        let env = fresh(0, false).await;
        let (url, hook) = hook_server(0).await;
        record_n(&env, 0, 2).await;
        let exporter = Exporter::new(
            Arc::new(WebhookSink::new(webhook(
                &env,
                "siem",
                &url,
                b"wrong secret",
            ))),
            env.sink.log().clone(),
            cursors(&env),
            clock(),
            options(100),
        );
        let err = exporter.export_once().await.unwrap_err();
        assert!(err.to_string().contains("401"), "{err}");
        assert_eq!(hook.requests.lock().len(), 1, "a 401 is not retried");
        assert_eq!(hook.bad_signatures.load(Ordering::SeqCst), 1);
        assert!(hook.accepted.lock().is_empty());
        assert_eq!(cursors(&env).cursor("siem").await.unwrap(), None);
    }

    fn incidents(env: &Env, plan: CommunicationPlan) -> IncidentService {
        IncidentService::new(
            Arc::new(SqliteIncidentStore::new(env.sink.log().pool().clone())),
            clock(),
            plan,
        )
    }

    async fn incident_events(env: &Env) -> Vec<SecurityEvent> {
        env.sink
            .log()
            .query(EventQuery {
                action_prefix: Some("incident".into()),
                order: Order::OldestFirst,
                limit: 1000,
                ..EventQuery::default()
            })
            .await
            .unwrap()
            .events
            .into_iter()
            .map(|e| e.event)
            .collect()
    }

    fn responder() -> Actor {
        Actor::Account { id: "resp".into() }
    }

    fn alert(
        rule: &'static str,
        subject: &str,
        severity: Severity,
        events: Vec<kura_types::EventId>,
    ) -> Alert {
        Alert {
            rule,
            severity,
            subject: subject.into(),
            summary: format!("{rule} about {subject}"),
            events,
            team: None,
            at: SystemClock.now(),
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn an_invalid_incident_transition_changes_nothing_and_records_no_event() {
        let env = fresh(0, false).await;
        let service = incidents(&env, CommunicationPlan::default());
        let incident = service
            .create(
                &responder(),
                NewIncident {
                    title: "Suspicious admin activity".into(),
                    severity: Severity::Sev2,
                    team: None,
                    owner: None,
                    events: Vec::new(),
                    note: None,
                },
            )
            .await
            .unwrap();
        let before = service.get(incident.id).await.unwrap();
        let events_before = incident_events(&env).await;
        assert_eq!(events_before.len(), 1);
        assert_eq!(events_before[0].action.as_str(), "incident.opened");

        for to in [
            IncidentState::Closed,
            IncidentState::Contained,
            IncidentState::Open,
        ] {
            let err = service
                .transition(&responder(), incident.id, to, Some("skip ahead".into()))
                .await
                .unwrap_err();
            assert!(
                matches!(err, IncidentError::InvalidTransition { from: IncidentState::Open, to: t } if t == to),
                "{err}"
            );
        }
        assert_eq!(
            service.get(incident.id).await.unwrap(),
            before,
            "nothing changed"
        );
        assert_eq!(
            incident_events(&env).await,
            events_before,
            "no event recorded"
        );

        // A valid path records one event per move, and the final state is
        // final.
        let by = responder();
        for to in [
            IncidentState::Triaged,
            IncidentState::Investigating,
            IncidentState::Contained,
            IncidentState::Resolved,
            IncidentState::Closed,
        ] {
            let moved = service
                .transition(&by, incident.id, to, None)
                .await
                .unwrap();
            assert_eq!(moved.state, to);
        }
        assert!(
            service
                .transition(&by, incident.id, IncidentState::Investigating, None)
                .await
                .is_err()
        );
        let events = incident_events(&env).await;
        let moves: Vec<String> = events
            .iter()
            .filter(|e| e.action.as_str() == "incident.state.changed")
            .map(|e| {
                format!(
                    "{}>{}",
                    e.details["from"].as_str().unwrap(),
                    e.details["to"].as_str().unwrap()
                )
            })
            .collect();
        assert_eq!(
            moves,
            [
                "open>triaged",
                "triaged>investigating",
                "investigating>contained",
                "contained>resolved",
                "resolved>closed"
            ]
        );
        assert!(
            events.iter().all(|e| e.actor == by
                && e.target.as_deref() == Some(&*format!("incident:{}", incident.id)))
        );
        assert!(
            env.sink
                .verify(VerifyOptions::default())
                .await
                .unwrap()
                .is_intact()
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn responders_add_and_remove_channels_and_failing_ones_give_up_after_the_last_try() {
        use kura_events::incident::ChannelOrigin;
        let env = fresh(0, false).await;
        let (url, hook) = hook_server(0).await;
        let manual = kura_types::ManualClock::new(OffsetDateTime::now_utc());
        let fixed = CommunicationPlan {
            routes: vec![Route {
                channel: "pager".into(),
                min_severity: Severity::Sev1,
            }],
        };
        // The configured pager points at a loopback port nobody listens on.
        let service = IncidentService::new(
            Arc::new(SqliteIncidentStore::new(env.sink.log().pool().clone())),
            Arc::new(manual.clone()),
            fixed,
        )
        .with_notification_policy(NotificationPolicy {
            max_attempts: 2,
            backoff: Backoff {
                initial: Duration::from_secs(1),
                max: Duration::from_secs(1),
            },
        })
        .with_channel(Arc::new(
            WebhookChannel::one_try(
                "pager",
                "http://127.0.0.1:9/none",
                SECRET,
                Duration::from_secs(2),
                clock(),
            )
            .unwrap(),
        ));
        let by = Actor::Account {
            id: "responder".into(),
        };
        let new = |name: &str, url: &str, min_severity| NewWebhookChannel {
            name: name.into(),
            url: url.into(),
            min_severity,
            timeout_secs: None,
        };

        // Bad input is refused and changes nothing.
        for (name, bad_url) in [
            ("Bad Name", url.as_str()),
            ("chat", "http://10.0.0.1/hook"),
            ("chat", "ftp://127.0.0.1/hook"),
        ] {
            let err = service
                .add_webhook_channel(&by, new(name, bad_url, Severity::Sev3))
                .await
                .unwrap_err();
            assert!(
                matches!(err, IncidentError::Invalid(_)),
                "{name} {bad_url}: {err}"
            );
        }
        let err = service
            .add_webhook_channel(&by, new("pager", &url, Severity::Sev3))
            .await
            .unwrap_err();
        assert!(matches!(err, IncidentError::ChannelExists(_)), "{err}");
        assert_eq!(service.list_channels().await.unwrap().len(), 1);

        let added = service
            .add_webhook_channel(&by, new("chat", &url, Severity::Sev3))
            .await
            .unwrap();
        assert_eq!(added.secret.len(), 64);
        assert!(!format!("{added:?}").contains(added.secret.as_str()));
        *hook.secret.lock() = added.secret.as_bytes().to_vec();
        let listed: Vec<(String, ChannelOrigin, Severity)> = service
            .list_channels()
            .await
            .unwrap()
            .into_iter()
            .map(|c| (c.name, c.origin, c.min_severity))
            .collect();
        assert_eq!(
            listed,
            [
                ("pager".into(), ChannelOrigin::Config, Severity::Sev1),
                ("chat".into(), ChannelOrigin::Api, Severity::Sev3)
            ]
        );
        // Another node on the same store (or a restart) sees it too.
        let other = incidents(&env, CommunicationPlan::default());
        assert_eq!(other.list_channels().await.unwrap()[0].name, "chat");

        // A SEV3 incident reaches the chat only; a SEV1 reaches both.
        let open = |title: &str, severity| NewIncident {
            title: title.into(),
            severity,
            team: None,
            owner: None,
            events: Vec::new(),
            note: None,
        };
        let sev3 = service
            .create(&by, open("odd traffic", Severity::Sev3))
            .await
            .unwrap();
        let sev1 = service
            .create(&by, open("keys leaked", Severity::Sev1))
            .await
            .unwrap();
        let r = service.deliver_notifications().await.unwrap();
        assert_eq!((r.delivered, r.retrying, r.failed), (2, 1, 0));
        assert_eq!(hook.accepted.lock().len(), 2);
        assert_eq!(hook.bad_signatures.load(Ordering::SeqCst), 0);
        assert_eq!(service.get(sev3.id).await.unwrap().notifications.len(), 1);
        // The pager's second and last try fails too: it gives up.
        manual.advance(time::Duration::seconds(2));
        let r = service.deliver_notifications().await.unwrap();
        assert_eq!((r.delivered, r.retrying, r.failed), (0, 0, 1));
        let d = service.get(sev1.id).await.unwrap();
        let pager = d
            .notifications
            .iter()
            .find(|n| n.channel == "pager")
            .unwrap();
        assert_eq!((pager.status.as_str(), pager.attempts), ("failed", 2));
        assert!(pager.last_error.is_some());
        assert_eq!(
            d.attempts
                .iter()
                .filter(|a| a.notification == pager.id)
                .count(),
            2
        );
        assert!(
            d.timeline
                .iter()
                .any(|t| t.text.contains("to pager failed for good after 2 tries")),
            "{:?}",
            d.timeline
        );

        // Configured channels are not the API's to remove.
        let err = service.remove_channel(&by, "pager").await.unwrap_err();
        assert!(matches!(err, IncidentError::ChannelFixed(_)), "{err}");
        let err = service.remove_channel(&by, "nope").await.unwrap_err();
        assert!(matches!(err, IncidentError::ChannelNotFound(_)), "{err}");
        service.remove_channel(&by, "chat").await.unwrap();
        let later = service
            .create(&by, open("more odd traffic", Severity::Sev3))
            .await
            .unwrap();
        assert!(
            service
                .get(later.id)
                .await
                .unwrap()
                .notifications
                .is_empty()
        );

        // Notifications of one round go out in id order, so only the
        // channel changes have a fixed place.
        let mut actions: Vec<String> = incident_events(&env)
            .await
            .iter()
            .map(|e| e.action.as_str().to_owned())
            .filter(|a| a.starts_with("incident.channel") || a.contains("notification"))
            .collect();
        assert_eq!(actions.first().unwrap(), "incident.channel.added");
        assert_eq!(actions.last().unwrap(), "incident.channel.removed");
        actions.sort();
        assert_eq!(
            actions,
            [
                "incident.channel.added",
                "incident.channel.removed",
                "incident.notification.delivered",
                "incident.notification.delivered",
                "incident.notification.failed",
                "incident.notification.retrying",
            ]
        );
    }

    /// Python's own SMTP server (the standard library's `smtpd`), writing
    /// every message it receives to `out`; returns it and its port.
    fn smtp_sink(out: &Path) -> (std::process::Child, u16) {
        use std::io::BufRead as _;
        const SINK: &str = r#"
import asyncore, smtpd, sys
class Sink(smtpd.SMTPServer):
    def process_message(self, peer, mailfrom, rcpttos, data, **kw):
        with open(sys.argv[1], "ab") as f:
            f.write(b"MAIL FROM " + mailfrom.encode() + b" TO " + ",".join(rcpttos).encode() + b"\n" + data + b"\n.\n")
s = Sink(("127.0.0.1", 0), None)
print(s.socket.getsockname()[1], flush=True)
asyncore.loop()
"#;
        let mut child = std::process::Command::new("python3")
            .args(["-W", "ignore", "-c", SINK])
            .arg(out)
            .stdout(std::process::Stdio::piped())
            .spawn()
            .expect("python3 runs (the SMTP sink is its standard library's smtpd)");
        let mut line = String::new();
        std::io::BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let port = line
            .trim()
            .parse()
            .unwrap_or_else(|_| panic!("the SMTP sink did not start: {line:?}"));
        (child, port)
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn email_notifications_reach_a_real_smtp_server_and_failures_are_retried() {
        use kura_events::incident::{EmailChannel, EmailConfig, SmtpSecurity};
        let env = fresh(0, false).await;
        let mailbox = env._tmp.path().join("mail.txt");
        let (mut sink, port) = smtp_sink(&mailbox);
        let email = |name: &str, port: u16| {
            Arc::new(
                EmailChannel::new(EmailConfig {
                    name: name.into(),
                    host: "127.0.0.1".into(),
                    port,
                    security: SmtpSecurity::None,
                    ca_pem: None,
                    credentials: None,
                    from: "kura@example.org".into(),
                    to: vec!["security@example.org".into(), "oncall@example.org".into()],
                    timeout: Duration::from_secs(5),
                })
                .unwrap(),
            )
        };
        // A second relay address where nothing listens, to see a failure.
        let closed = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap().port()
        };
        let manual = kura_types::ManualClock::new(OffsetDateTime::now_utc());
        let service = IncidentService::new(
            Arc::new(SqliteIncidentStore::new(env.sink.log().pool().clone())),
            Arc::new(manual.clone()),
            CommunicationPlan::default(),
        )
        .with_notification_policy(NotificationPolicy {
            max_attempts: 5,
            backoff: Backoff {
                initial: Duration::from_secs(10),
                max: Duration::from_secs(10),
            },
        })
        .with_routed_channel(email("security-mail", port), Severity::Sev2)
        .with_routed_channel(email("backup-mail", closed), Severity::Sev2);
        let by = Actor::Account { id: "ann".into() };
        let incident = service
            .create(
                &by,
                NewIncident {
                    title: "Data key destroyed outside a change window".into(),
                    severity: Severity::Sev2,
                    team: None,
                    owner: None,
                    events: Vec::new(),
                    note: None,
                },
            )
            .await
            .unwrap();
        let r = service.deliver_notifications().await.unwrap();
        assert_eq!((r.delivered, r.retrying, r.failed), (1, 1, 0));
        sink.kill().unwrap();
        let _ = sink.wait();

        let mail = std::fs::read_to_string(&mailbox).unwrap();
        assert!(
            mail.starts_with(
                "MAIL FROM kura@example.org TO security@example.org,oncall@example.org"
            ),
            "{mail}"
        );
        assert!(
            mail.contains("Subject: [Kura SEV2] Data key destroyed outside a change window"),
            "{mail}"
        );
        assert!(
            mail.contains(&format!("Incident: {}", incident.id)),
            "{mail}"
        );
        let d = service.get(incident.id).await.unwrap();
        let sent = d
            .notifications
            .iter()
            .find(|n| n.channel == "security-mail")
            .unwrap();
        assert!(
            mail.contains(&format!("X-Kura-Notification: {}", sent.id)),
            "{mail}"
        );
        assert_eq!(sent.status, "delivered");
        let tries: Vec<_> = d
            .attempts
            .iter()
            .filter(|a| a.notification == sent.id)
            .collect();
        assert_eq!(
            (tries.len(), tries[0].ok, tries[0].status),
            (1, true, Some(250))
        );
        let failed = d
            .notifications
            .iter()
            .find(|n| n.channel == "backup-mail")
            .unwrap();
        assert_eq!((failed.status.as_str(), failed.attempts), ("pending", 1));
        assert!(failed.last_error.is_some());
        assert!(failed.next_attempt_at.is_some());
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn alerts_open_or_join_incidents_and_notify_by_severity() {
        let env = fresh(0, false).await;
        let (url, hook) = hook_server(1).await;
        let plan = CommunicationPlan {
            routes: vec![Route {
                channel: "pager".into(),
                min_severity: Severity::Sev2,
            }],
        };
        // The service's clock is manual so back-off can be stepped through.
        let manual = kura_types::ManualClock::new(OffsetDateTime::now_utc());
        let service = IncidentService::new(
            Arc::new(SqliteIncidentStore::new(env.sink.log().pool().clone())),
            Arc::new(manual.clone()),
            plan,
        )
        .with_notification_policy(NotificationPolicy {
            max_attempts: 3,
            backoff: Backoff {
                initial: Duration::from_secs(60),
                max: Duration::from_secs(600),
            },
        })
        .with_channel(Arc::new(
            WebhookChannel::one_try("pager", &url, SECRET, Duration::from_secs(5), clock())
                .unwrap(),
        ));

        let e1 = event(actions::SIGNIN_FAILED, Outcome::Failure);
        let e2 = event(actions::SIGNIN_FAILED, Outcome::Failure);
        env.sink.record(e1.clone()).await.unwrap();
        // e1 is in the id lookup, e2 only in the log's tail: links find both.
        env.sink.log().catch_up_lookups().await.unwrap();
        env.sink.record(e2.clone()).await.unwrap();

        let first = service
            .handle_alert(&alert(
                "signin_failures_account",
                "account:ann",
                Severity::Sev3,
                vec![e1.id],
            ))
            .await
            .unwrap();
        assert!(first.opened);
        // Same rule, same subject: joins, and being more severe, escalates.
        let joined = service
            .handle_alert(&alert(
                "signin_failures_account",
                "account:ann",
                Severity::Sev2,
                vec![e2.id],
            ))
            .await
            .unwrap();
        assert_eq!((joined.incident, joined.opened), (first.incident, false));
        // Another subject or another rule opens its own incident.
        let other = service
            .handle_alert(&alert(
                "signin_failures_account",
                "account:bob",
                Severity::Sev3,
                vec![],
            ))
            .await
            .unwrap();
        assert!(other.opened && other.incident != first.incident);

        let detail = service.get(first.incident).await.unwrap();
        assert_eq!(detail.incident.severity, Severity::Sev2);
        assert_eq!(detail.incident.state, IncidentState::Open);
        assert_eq!(detail.alerts.len(), 2);
        let linked: Vec<_> = detail
            .events
            .iter()
            .map(|l| l.stored.as_ref().unwrap().event.id)
            .collect();
        assert_eq!(linked, [e1.id, e2.id]);
        let kinds: Vec<&str> = detail.timeline.iter().map(|t| t.kind.as_str()).collect();
        assert_eq!(kinds, ["opened", "alert", "severity"]);
        assert_eq!(
            detail.incident.acknowledge_by - detail.incident.opened_at,
            time::Duration::hours(1)
        );
        // The SEV3 opening did not page; the escalation to SEV2 did.
        assert_eq!(detail.notifications.len(), 1);
        assert_eq!(detail.notifications[0].reason, "escalated");

        // The pager fails its first try: the notification stays pending,
        // held back by the back-off, and the try shows in the timeline.
        let report = service.deliver_notifications().await.unwrap();
        assert_eq!(
            (report.delivered, report.retrying, report.failed),
            (0, 1, 0)
        );
        let d = service.get(first.incident).await.unwrap();
        let n = &d.notifications[0];
        assert_eq!((n.status.as_str(), n.attempts), ("pending", 1));
        let next = n.next_attempt_at.unwrap();
        let now = manual.now();
        assert!(
            next >= now + time::Duration::seconds(30) && next <= now + time::Duration::seconds(60),
            "{next} after {now}"
        );
        assert_eq!(d.attempts.len(), 1);
        assert_eq!(
            (
                d.attempts[0].attempt,
                d.attempts[0].ok,
                d.attempts[0].status
            ),
            (1, false, Some(500))
        );
        let last = d.timeline.last().unwrap();
        assert_eq!(last.kind, "notification");
        assert!(last.text.contains("failed (try 1 of 3)"), "{}", last.text);
        // Not due yet: nothing is sent.
        assert_eq!(
            service.deliver_notifications().await.unwrap(),
            NotificationReport::default()
        );
        assert_eq!(hook.requests.lock().len(), 1);
        // Once due, the second try is delivered, signed, exactly once.
        manual.advance(time::Duration::seconds(61));
        let report = service.deliver_notifications().await.unwrap();
        assert_eq!(
            (report.delivered, report.retrying, report.failed),
            (1, 0, 0)
        );
        assert_eq!(hook.bad_signatures.load(Ordering::SeqCst), 0);
        assert_eq!(hook.accepted.lock().len(), 1);
        assert_eq!(
            hook.accepted.lock()[0]["incident"],
            first.incident.to_string()
        );
        assert_eq!(hook.accepted.lock()[0]["severity"], "sev2");
        let d = service.get(first.incident).await.unwrap();
        let n = &d.notifications[0];
        assert_eq!((n.status.as_str(), n.attempts), ("delivered", 2));
        let tries: Vec<(u32, bool)> = d.attempts.iter().map(|a| (a.attempt, a.ok)).collect();
        assert_eq!(tries, [(1, false), (2, true)]);
        assert!(
            d.timeline
                .last()
                .unwrap()
                .text
                .contains("delivered to pager (try 2)")
        );
        manual.advance(time::Duration::hours(2));
        assert_eq!(service.deliver_notifications().await.unwrap().delivered, 0);

        let actions: Vec<String> = incident_events(&env)
            .await
            .iter()
            .map(|e| e.action.as_str().to_owned())
            .collect();
        assert_eq!(
            actions,
            [
                "incident.opened",
                "incident.alert.joined",
                "incident.severity.raised",
                "incident.opened",
                "incident.notification.retrying",
                "incident.notification.delivered"
            ]
        );

        // Listing filters by state and severity and pages by cursor.
        let sev2 = service
            .list(IncidentListQuery {
                severities: vec![Severity::Sev2],
                ..IncidentListQuery::default()
            })
            .await
            .unwrap();
        assert_eq!(sev2.incidents.len(), 1);
        let page1 = service
            .list(IncidentListQuery {
                states: vec![IncidentState::Open],
                limit: 1,
                ..IncidentListQuery::default()
            })
            .await
            .unwrap();
        assert_eq!(page1.incidents[0].id, other.incident, "newest first");
        let page2 = service
            .list(IncidentListQuery {
                states: vec![IncidentState::Open],
                limit: 1,
                cursor: page1.next_cursor,
                ..IncidentListQuery::default()
            })
            .await
            .unwrap();
        assert_eq!(page2.incidents[0].id, first.incident);
        assert_eq!(page2.next_cursor, None);

        // Assigning and notes are events too.
        let assigned = service
            .assign(&responder(), first.incident, Some("account:resp".into()))
            .await
            .unwrap();
        assert_eq!(assigned.owner.as_deref(), Some("account:resp"));
        service
            .add_note(
                &responder(),
                first.incident,
                "Password reset forced for ann.",
            )
            .await
            .unwrap();
        assert!(
            service
                .add_note(&responder(), first.incident, "  ")
                .await
                .is_err()
        );
        let last: Vec<String> = incident_events(&env)
            .await
            .iter()
            .rev()
            .take(2)
            .map(|e| e.action.as_str().to_owned())
            .collect();
        assert_eq!(last, ["incident.note.added", "incident.assigned"]);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_detector_feeds_alerts_into_incidents() {
        let tmp_env = fresh(0, false).await;
        let service = Arc::new(incidents(&tmp_env, CommunicationPlan::default()));
        let sink = LogSink::with_detector(tmp_env.sink.log().clone(), Detector::new())
            .with_alert_handler(service.clone());
        for _ in 0..5 {
            sink.record(event(actions::SIGNIN_FAILED, Outcome::Failure).with_target("account:ann"))
                .await
                .unwrap();
        }
        let open = service.list(IncidentListQuery::default()).await.unwrap();
        assert_eq!(open.incidents.len(), 1);
        let incident = &open.incidents[0];
        assert_eq!(incident.rule.as_deref(), Some("signin_failures_account"));
        assert_eq!(incident.subject.as_deref(), Some("account:ann"));
        let detail = service.get(incident.id).await.unwrap();
        assert_eq!(detail.events.len(), 5);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retention_prunes_old_events_and_what_remains_still_verifies() {
    let env = fresh(1000, false).await;
    let log = env.sink.log().clone();
    let old = SystemClock.now() - time::Duration::days(500);
    for i in 0..5 {
        let mut e = event("auth.signin.succeeded", Outcome::Success).with_detail("n", i);
        e.time = old + time::Duration::minutes(i);
        env.sink.record(e).await.unwrap();
    }
    for i in 5..8 {
        env.sink
            .record(event("auth.signin.succeeded", Outcome::Success).with_detail("n", i))
            .await
            .unwrap();
    }

    // Nothing is older than ten years: nothing changes.
    let none = log
        .prune_older_than(time::Duration::days(3650))
        .await
        .unwrap();
    assert_eq!((none.removed, none.anchor_seq), (0, None));
    assert_eq!(
        env.sink
            .verify(VerifyOptions::default())
            .await
            .unwrap()
            .0
            .entries_checked,
        8
    );

    let report = log
        .prune_older_than(time::Duration::days(400))
        .await
        .unwrap();
    assert_eq!((report.removed, report.anchor_seq), (5, Some(5)));
    let check = env.sink.verify(VerifyOptions::default()).await.unwrap();
    assert!(check.is_intact(), "{check}");
    assert_eq!((check.0.first_seq, check.0.entries_checked), (Some(6), 3));

    // A second run finds nothing more and keeps the anchor.
    let again = log
        .prune_older_than(time::Duration::days(400))
        .await
        .unwrap();
    assert_eq!((again.removed, again.anchor_seq), (0, Some(5)));

    // A tampered log is never pruned: tampering must not hide behind an anchor.
    let env = fresh(1000, false).await;
    for i in 0..3 {
        let mut e = event("auth.signin.succeeded", Outcome::Success).with_detail("n", i);
        e.time = old;
        env.sink.record(e).await.unwrap();
    }
    env.sink
        .record(event("auth.signin.succeeded", Outcome::Success))
        .await
        .unwrap();
    env.raw()
        .await
        .execute(
            "UPDATE events SET body = CAST(replace(CAST(body AS TEXT), 'ann', 'bob') AS BLOB) WHERE seq = 2",
            [],
        )
        .unwrap();
    assert!(
        env.sink
            .log()
            .prune_older_than(time::Duration::days(400))
            .await
            .is_err()
    );
    let raw = env.raw().await;
    let n: i64 = raw
        .query_row("SELECT count(*) FROM events", [], |r| r.get(0))
        .unwrap();
    assert_eq!(n, 4, "nothing was deleted");
}

/// Detection follows the log, not only the sink: a privileged grant whose
/// event committed in the grant's own transaction raises its alert at the
/// next catch-up, or at the next event recorded through the sink, once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_committed_in_their_own_transactions_are_detected_once() {
    let env = fresh(0, true).await;
    let pool = env.sink.log().pool().clone();
    let alerts = || async {
        env.sink
            .log()
            .query(EventQuery {
                action_prefix: Some("detect.alert".into()),
                ..EventQuery::default()
            })
            .await
            .unwrap()
            .events
            .len()
    };
    let grant = |role: &str| {
        prepare(event("admin.role.granted", Outcome::Success).with_detail("role", role.to_owned()))
            .unwrap()
    };

    let record = grant("operator.security_responder");
    pool.write(move |tx| kura_store::events::append_in_tx(tx, &[record]))
        .await
        .unwrap();
    assert_eq!(alerts().await, 0, "nothing observed it yet");
    env.sink.catch_up().await;
    assert_eq!(alerts().await, 1);
    env.sink.catch_up().await;
    assert_eq!(alerts().await, 1, "observed once");

    // Committed elsewhere, then an ordinary event through the sink: the
    // sink reads the gap before its own event.
    let record = grant("team.owner");
    pool.write(move |tx| kura_store::events::append_in_tx(tx, &[record]))
        .await
        .unwrap();
    env.sink
        .record(event("auth.signin.succeeded", Outcome::Success))
        .await
        .unwrap();
    assert_eq!(alerts().await, 2);
    env.sink.catch_up().await;
    assert_eq!(alerts().await, 2);
}

/// Many callers at once, some recording through the sink and some
/// committing events in their own transactions: the detector, which only
/// one caller holds at a time while the others leave their events pending,
/// still observes every event exactly once and in order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_callers_have_every_event_detected_exactly_once() {
    let env = fresh(0, true).await;
    let pool = env.sink.log().pool().clone();
    let targets = 20;
    let per_target = kura_events::detect::SIGNIN_FAILURES_PER_ACCOUNT;
    let mut tasks = Vec::new();
    for i in 0..targets * per_target {
        let sink = env.sink.clone();
        tasks.push(tokio::spawn(async move {
            let e = event(actions::SIGNIN_FAILED, Outcome::Failure)
                .with_target(format!("account:{}", i % targets));
            sink.record(e).await.unwrap();
        }));
    }
    for i in 0..10 {
        let sink = env.sink.clone();
        let pool = pool.clone();
        tasks.push(tokio::spawn(async move {
            let e = event("admin.role.granted", Outcome::Success)
                .with_detail("role", "team.owner")
                .with_target(format!("account:granted-{i}"));
            let record = prepare(e.clone()).unwrap();
            pool.write(move |tx| kura_store::events::append_in_tx(tx, &[record]))
                .await
                .unwrap();
            sink.observe(&[e]).await;
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    env.sink.catch_up().await;
    let alerts = env
        .sink
        .log()
        .query(EventQuery {
            action_prefix: Some("detect.alert".into()),
            limit: 500,
            ..EventQuery::default()
        })
        .await
        .unwrap()
        .events;
    let rule =
        |a: &kura_store::events::StoredEvent| a.event.details["rule"].as_str().map(str::to_owned);
    let signin: Vec<_> = alerts
        .iter()
        .filter(|a| rule(a).as_deref() == Some("signin_failures_account"))
        .collect();
    assert_eq!(signin.len(), targets, "one alert per target: {alerts:#?}");
    let mut linked = std::collections::BTreeSet::new();
    for a in &signin {
        let ids = a.event.details["events"].as_array().unwrap();
        assert_eq!(ids.len(), per_target);
        for id in ids {
            assert!(
                linked.insert(id.as_str().unwrap().to_owned()),
                "an event observed twice"
            );
        }
    }
    assert_eq!(linked.len(), targets * per_target);
    let grants = alerts.len() - signin.len();
    assert_eq!(grants, 10, "one alert per grant committed elsewhere");
    // Nothing is observed again.
    env.sink.catch_up().await;
    let again = env
        .sink
        .log()
        .query(EventQuery {
            action_prefix: Some("detect.alert".into()),
            limit: 500,
            ..EventQuery::default()
        })
        .await
        .unwrap()
        .events;
    assert_eq!(again.len(), alerts.len());
}
