//! Kura Connect's crash test on the real `kura` binary: 1,000 webhook runs
//! are queued, each calling a loopback receiver with its step's
//! idempotency key; the server is killed with SIGKILL half-way through,
//! restarted on the same data directory, and every run must finish with
//! its side effect applied exactly once (the receiver applies a key once
//! and counts deliveries that repeat one).
//!
//! The figures it prints are recorded in BENCHMARKS.md (Connect).

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::routing::post;
use kura_testkit::TestServer;
use serde_json::{Value, json};

use super::{Serving, client, kura};

const RUNS: usize = 1_000;

/// What the receiver saw: applied `n` per idempotency key, and how many
/// deliveries repeated a key already applied.
#[derive(Default)]
struct Ledger {
    applied: HashMap<String, u64>,
    repeats: usize,
}

async fn receiver() -> (String, Arc<Mutex<Ledger>>) {
    let ledger: Arc<Mutex<Ledger>> = Arc::default();
    let seen = Arc::clone(&ledger);
    let app = Router::new().route(
        "/apply",
        post(
            move |headers: axum::http::HeaderMap, axum::Json(body): axum::Json<Value>| {
                let seen = Arc::clone(&seen);
                async move {
                    // Work that takes a moment, so the kill lands mid-way.
                    tokio::time::sleep(Duration::from_millis(15)).await;
                    let key = headers
                        .get("idempotency-key")
                        .and_then(|v| v.to_str().ok())
                        .unwrap_or("")
                        .to_owned();
                    let n = body["n"].as_u64().unwrap_or(u64::MAX);
                    let mut l = seen.lock().unwrap();
                    match l.applied.entry(key) {
                        std::collections::hash_map::Entry::Occupied(_) => l.repeats += 1,
                        std::collections::hash_map::Entry::Vacant(v) => {
                            v.insert(n);
                        }
                    }
                    axum::Json(json!({"ok": true}))
                }
            },
        ),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        axum::serve(listener, app).await.unwrap();
    });
    (format!("http://127.0.0.1:{}/apply", addr.port()), ledger)
}

async fn send(http: &reqwest::Client, url: &str, token: Option<&str>, body: Value) -> Value {
    let mut req = http.post(url).json(&body);
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    let resp = req.send().await.unwrap();
    assert!(resp.status().is_success(), "{url}: {}", resp.status());
    resp.json().await.unwrap()
}

/// A team with a signed-in owner and an enabled webhook flow whose one
/// step POSTs `{"n": input.n}` to `target`. Returns (team, owner token,
/// flow id, webhook path).
async fn prepare(server: &TestServer, target: &str) -> (String, String, String, String) {
    let op = server.sign_up_first_operator().await;
    let http = &server.client;
    let team = send(
        http,
        &server.url("/api/v1/teams"),
        Some(&op.token),
        json!({"name": "crash", "owner_email": "owner@crash.test"}),
    )
    .await;
    let team_id = team["id"].as_str().unwrap().to_owned();
    let password = "crash test owner passphrase 31";
    send(
        http,
        &server.url("/api/v1/invitations/accept"),
        None,
        json!({"token": team["owner_invitation"]["token"], "display_name": "Owner",
               "password": password}),
    )
    .await;
    let owner = send(
        http,
        &server.url("/api/v1/sessions"),
        None,
        json!({"email": "owner@crash.test", "password": password}),
    )
    .await["token"]
        .as_str()
        .unwrap()
        .to_owned();
    let created = send(
        http,
        &server.url(&format!("/api/v1/teams/{team_id}/flows")),
        Some(&owner),
        json!({"document": {"name": "apply", "trigger": {"kind": "webhook"}, "steps": [
            {"id": "apply", "kind": "http", "method": "POST", "url": target,
             "body": {"type": "json", "value": "{'n': input.n}"},
             "retry": {"max_attempts": 5, "initial_backoff_ms": 50}}
        ]}}),
    )
    .await;
    let flow = created["flow"]["id"].as_str().unwrap().to_owned();
    let hook = created["flow"]["webhook_url"].as_str().unwrap().to_owned();
    send(
        http,
        &server.url(&format!("/api/v1/teams/{team_id}/flows/{flow}/enable")),
        Some(&owner),
        json!({}),
    )
    .await;
    (team_id, owner, flow, hook)
}

fn start(dir: &std::path::Path, config: &std::path::Path) -> Serving {
    let mut cmd = kura(dir);
    cmd.env("KURA_CONFIG", config).env("KURA_LOG", "warn");
    let mut serving = Serving::start(cmd);
    // Drain the log so a full pipe never blocks the server.
    if let Some(err) = serving.child.stderr.take() {
        std::thread::spawn(move || {
            let _ = std::io::copy(&mut std::io::BufReader::new(err), &mut std::io::sink());
        });
    }
    serving
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sigkill_during_a_thousand_queued_runs_loses_and_doubles_nothing() {
    let began = Instant::now();
    let (target, ledger) = receiver().await;
    let setup = TestServer::spawn().await;
    let (team, owner, flow, hook) = prepare(&setup, &target).await;
    let (dir, tmp) = setup.stop_keeping_data().await;
    let config = tmp.as_ref().unwrap().path().join("crash.toml");
    std::fs::write(
        &config,
        "[connect]\noutbound_allow = [\"127.0.0.1/32\"]\nlease_secs = 10\nteam_concurrency = 16\nworkers = 8\n\n[edge]\nenabled = false\n",
    )
    .unwrap();

    let mut serving = start(&dir, &config);
    let http = client(&dir);
    let base = serving.base_url.clone();
    // Queue the runs: 32 senders, each webhook answered 202 with its run.
    let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let mut senders = Vec::new();
    for _ in 0..32 {
        let (http, url, next) = (http.clone(), format!("{base}{hook}"), Arc::clone(&next));
        senders.push(tokio::spawn(async move {
            let mut ids = Vec::new();
            loop {
                let n = next.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                if n >= RUNS {
                    return ids;
                }
                let resp = http.post(&url).json(&json!({"n": n})).send().await.unwrap();
                assert_eq!(resp.status().as_u16(), 202);
                let v: Value = resp.json().await.unwrap();
                ids.push(v["run"].as_str().unwrap().to_owned());
            }
        }));
    }
    let mut runs = Vec::new();
    for s in senders {
        runs.extend(s.await.unwrap());
    }
    assert_eq!(runs.iter().collect::<HashSet<_>>().len(), RUNS);
    let queued_in = began.elapsed();

    // Kill it while the queue drains.
    let deadline = Instant::now() + Duration::from_secs(30);
    while ledger.lock().unwrap().applied.len() < RUNS / 5 {
        assert!(Instant::now() < deadline, "the runs did not start");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    serving.child.kill().unwrap(); // SIGKILL
    serving.child.wait().unwrap();
    let at_kill = ledger.lock().unwrap().applied.len();
    assert!(at_kill < RUNS, "the kill came after the last run");
    drop(serving);

    // Restart on the same directory; the runs left running are taken
    // over when their leases expire, the queued ones run as usual.
    let restarted = Instant::now();
    let serving = start(&dir, &config);
    let metrics_url = format!(
        "{}/api/v1/teams/{team}/flows/{flow}/metrics",
        serving.base_url
    );
    let deadline = Instant::now() + Duration::from_secs(50);
    let metrics = loop {
        let m: Value = http
            .get(&metrics_url)
            .bearer_auth(&owner)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        if m["succeeded"].as_u64().unwrap_or(0) + m["failed"].as_u64().unwrap_or(0) >= RUNS as u64 {
            break m;
        }
        assert!(Instant::now() < deadline, "runs still open: {m}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let drained_in = restarted.elapsed();
    assert_eq!(metrics["runs"], RUNS as u64, "{metrics}");
    assert_eq!(metrics["succeeded"], RUNS as u64, "{metrics}");

    let l = ledger.lock().unwrap();
    // One key per run, each applied once, and every webhook's `n` exactly
    // once: nothing lost, nothing doubled.
    assert_eq!(l.applied.len(), RUNS);
    let mut ns: Vec<u64> = l.applied.values().copied().collect();
    ns.sort_unstable();
    assert_eq!(ns, (0..RUNS as u64).collect::<Vec<_>>());
    println!(
        "crash test: {RUNS} runs queued in {:.1} s; SIGKILL after {at_kill} applied; \
         restart drained the rest in {:.1} s; {} repeated deliveries deduplicated by key; \
         {RUNS} applied exactly once; total {:.1} s",
        queued_in.as_secs_f64(),
        drained_in.as_secs_f64(),
        l.repeats,
        began.elapsed().as_secs_f64()
    );
    drop(serving);
    drop(tmp);
}
