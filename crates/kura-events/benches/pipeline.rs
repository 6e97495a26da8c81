//! Throughput of the security event pipeline, measured end to end on real
//! SQLCipher storage with `synchronous=FULL`:
//!
//! 1. durable recording: many concurrent producers call `EventSink::record`,
//!    each returning only after its event is committed (group commit);
//!    compared, in the same run, with one producer recording serially (one
//!    commit per event) to show what grouping buys;
//! 2. verification: `verify` over a log of `KURA_BENCH_VERIFY_EVENTS` events
//!    (default one million), in events per second;
//! 3. two queries on that log through filters without an index of their own
//!    (the worst case and a common one), in seconds.
//!
//! Run with `cargo bench -p kura-events --bench pipeline`. Sizes can be
//! lowered with `KURA_BENCH_RECORD_EVENTS` and `KURA_BENCH_VERIFY_EVENTS`.

// A benchmark is a program whose failure should stop loudly.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stdout)]

use std::sync::Arc;
use std::time::Instant;

use kura_crypto::{LocalKms, SealParams};
use kura_events::{EventLog, EventLogOptions, EventSink, LogSink, VerifyOptions, prepare};
use kura_store::{DataDir, StorageOptions, open_storage};
use kura_types::{Action, Actor, Outcome, SecurityEvent, SystemClock, TeamId};
use time::OffsetDateTime;

fn sample(i: u64, team: TeamId) -> SecurityEvent {
    SecurityEvent::new(
        OffsetDateTime::now_utc(),
        Actor::Account {
            id: format!("acct-{}", i % 97),
        },
        Action::parse("auth.signin.failed").unwrap(),
        Outcome::Failure,
    )
    .with_team(team)
    .with_source(std::net::IpAddr::from([127, 0, 0, (i % 250) as u8 + 1]))
    .with_request_id(format!("req-{i}"))
    .with_detail("reason", "wrong password")
}

fn env_u64(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

async fn open_log(dir: &std::path::Path) -> (LogSink, kura_store::Storage) {
    let data = DataDir::new(dir.join("kura-data"));
    data.prepare().unwrap();
    let kms = Arc::new(
        LocalKms::create(
            &data.master_key_file(),
            None,
            SealParams::default(),
            OffsetDateTime::now_utc(),
        )
        .unwrap(),
    );
    let storage = open_storage(&data, kms, Arc::new(SystemClock), StorageOptions::default())
        .await
        .unwrap();
    let log = EventLog::open(
        &storage,
        Arc::new(SystemClock),
        EventLogOptions {
            checkpoint_every: 10_000,
            // `KURA_BENCH_SPLIT_VERIFY_AT=0` walks the log in one piece.
            split_verify_at: match env_u64("KURA_BENCH_SPLIT_VERIFY_AT", 100_000) {
                0 => u64::MAX,
                n => n,
            },
            ..EventLogOptions::default()
        },
    )
    .await
    .unwrap();
    (LogSink::new(log), storage)
}

async fn record_concurrently(sink: &LogSink, events: u64, producers: u64) -> f64 {
    let team = TeamId::new();
    let start = Instant::now();
    let mut tasks = Vec::new();
    for p in 0..producers {
        let sink = sink.clone();
        tasks.push(tokio::spawn(async move {
            let mut i = p;
            while i < events {
                sink.record(sample(i, team)).await.unwrap();
                i += producers;
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    events as f64 / start.elapsed().as_secs_f64()
}

fn main() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let record_events = env_u64("KURA_BENCH_RECORD_EVENTS", 200_000);
        let verify_events = env_u64("KURA_BENCH_VERIFY_EVENTS", 1_000_000);

        let tmp = tempfile::tempdir().unwrap();
        let (sink, _storage) = open_log(tmp.path()).await;
        let serial = record_concurrently(&sink, 2_000, 1).await;
        let grouped = record_concurrently(&sink, record_events, 512).await;
        println!("record/serial (1 producer, one commit per event): {serial:>10.0} events/s");
        println!(
            "record/group-commit (512 producers, {record_events} events): {grouped:>10.0} events/s  ({:.1}x serial)",
            grouped / serial
        );
        drop(sink);

        // Build a large log quickly through the same append path, in big
        // transactions, then time verification alone.
        let tmp = tempfile::tempdir().unwrap();
        let (sink, _storage) = open_log(tmp.path()).await;
        let team = TeamId::new();
        let pool = sink.log().pool().clone();
        let mut written = 0;
        let build = Instant::now();
        let mut prepare_secs = 0.0;
        let mut middle = None;
        while written < verify_events {
            if written >= verify_events / 2 && middle.is_none() {
                middle = Some(OffsetDateTime::now_utc());
            }
            let n = (verify_events - written).min(50_000);
            let t = Instant::now();
            let records: Vec<_> = (written..written + n)
                .map(|i| prepare(sample(i, team)).unwrap())
                .collect();
            prepare_secs += t.elapsed().as_secs_f64();
            pool.write(move |tx| kura_store::events::append_in_tx(tx, &records).map(|_| ()))
                .await
                .unwrap();
            written += n;
        }
        let build_secs = build.elapsed().as_secs_f64();
        println!(
            "append_in_tx (50,000-event transactions): {:>10.0} events/s; of which event preparation {:>10.0} events/s",
            verify_events as f64 / build_secs,
            verify_events as f64 / prepare_secs
        );
        sink.log().checkpoint().await.unwrap();
        let start = Instant::now();
        let report = sink.verify(VerifyOptions::default()).await.unwrap();
        let elapsed = start.elapsed().as_secs_f64();
        assert!(report.is_intact(), "{report}");
        println!(
            "verify ({verify_events} events): {:>10.0} events/s  ({elapsed:.2} s)",
            verify_events as f64 / elapsed
        );

        // Filters without an index of their own walk the log by `seq`; the
        // worst case is a selective filter whose match is at the far end.
        let start = Instant::now();
        let page = sink
            .log()
            .query(kura_store::events::EventQuery {
                request_id: Some("req-0".into()),
                ..Default::default()
            })
            .await
            .unwrap();
        assert_eq!(page.events.len(), 1);
        println!(
            "query by request id, match at the far end of {verify_events} events: {:.3} s",
            start.elapsed().as_secs_f64()
        );
        // A narrow time window in the middle of the log: the time blocks
        // turn it into a short walk of `seq` ranges.
        if let Some(since) = middle {
            let start = Instant::now();
            let page = sink
                .log()
                .query(kura_store::events::EventQuery {
                    since: Some(since),
                    until: Some(since + time::Duration::milliseconds(20)),
                    limit: 100,
                    ..Default::default()
                })
                .await
                .unwrap();
            assert!(!page.events.is_empty());
            println!(
                "query by time window, newest {} of the events in 20 ms in the middle of {verify_events}: {:.3} s",
                page.events.len(),
                start.elapsed().as_secs_f64()
            );
        }
        let start = Instant::now();
        let page = sink
            .log()
            .query(kura_store::events::EventQuery {
                team: Some(team),
                actor: Some("account:acct-5".into()),
                limit: 100,
                ..Default::default()
            })
            .await
            .unwrap();
        assert_eq!(page.events.len(), 100);
        println!(
            "query by team and actor, newest 100 matches: {:.3} s",
            start.elapsed().as_secs_f64()
        );
    });
}
