//! Kura Connect's webhook path under load: a flow of three steps (webhook →
//! transform with two computed fields → respond) with run history on, over
//! HTTPS on loopback with 16 concurrent connections.
//!
//! The server runs as its own process — the real `kura` binary, on a data
//! directory the test kit prepared (operator, team, owner, enabled flow) —
//! so its CPU time and memory are read from `/proc/<pid>/stat` and
//! `/proc/<pid>/status` alone, without the load client. Reports runs per
//! second, p50/p99 latency, server CPU milliseconds per run, and the
//! server's resident memory idle (after start, and after a warm-up) and
//! after the load.
//!
//! Run with `cargo build --release -p kura-cli && cargo bench -p
//! kura-server --bench connect` (the binary is looked up next to the
//! benchmark's target directory, or at `KURA_BIN`). `KURA_BENCH_RUNS`
//! (default 5000) and `KURA_BENCH_CONCURRENCY` (default 16) change it.

// A benchmark is a program whose failure should stop loudly.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::print_stdout,
    clippy::panic
)]

use std::io::{BufRead as _, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use kura_testkit::{Options, TestServer};
use serde_json::{Value, json};

fn env_u64(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// User + system CPU time of a process.
fn cpu_time(pid: u32) -> Duration {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    // Fields after the command name (which is in parentheses).
    let rest = &stat[stat.rfind(')').unwrap() + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks: u64 = fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap();
    // Linux reports in USER_HZ, 100 on every mainstream configuration.
    Duration::from_millis(ticks * 10)
}

fn rss_mib(pid: u32) -> f64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let kib: f64 = status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap();
    kib / 1024.0
}

/// The `kura` binary: `KURA_BIN`, or `kura` in the target directory this
/// benchmark was built into.
fn kura_bin() -> PathBuf {
    if let Some(p) = std::env::var_os("KURA_BIN") {
        return PathBuf::from(p);
    }
    let exe = std::env::current_exe().unwrap();
    let bin = exe
        .parent()
        .and_then(Path::parent)
        .map(|d| d.join("kura"))
        .unwrap();
    assert!(
        bin.exists(),
        "{} is missing: run `cargo build --release -p kura-cli` first, or set KURA_BIN",
        bin.display()
    );
    bin
}

/// Starts `kura serve` on `dir` and returns it with its base URL.
fn serve(dir: &Path, config: &Path) -> (Child, String) {
    let mut cmd = Command::new(kura_bin());
    for (key, _) in std::env::vars() {
        if key.starts_with("KURA_") {
            cmd.env_remove(key);
        }
    }
    let mut child = cmd
        .env("KURA_CONFIG", config)
        .env("KURA_LOG", "warn")
        .arg("--data-dir")
        .arg(dir)
        .args(["serve", "--bind", "127.0.0.1:0"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let out = BufReader::new(child.stdout.take().unwrap());
    let mut base = None;
    for line in out.lines() {
        let line = line.unwrap();
        if let Some(url) = line.split("is serving ").nth(1) {
            base = Some(url.trim().to_owned());
        }
        if line.starts_with("Stop with") {
            break;
        }
    }
    (child, base.expect("kura serve printed no URL"))
}

async fn post(server: &TestServer, path: &str, token: Option<&str>, body: Value) -> Value {
    let mut req = server.client.post(server.url(path)).json(&body);
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    let resp = req.send().await.unwrap();
    assert!(resp.status().is_success(), "{path}: {}", resp.status());
    resp.json().await.unwrap()
}

/// The operator's team, its signed-in owner and the enabled webhook flow;
/// returns the flow's webhook path.
async fn prepare(server: &TestServer, operator: &str) -> String {
    let team = post(
        server,
        "/api/v1/teams",
        Some(operator),
        json!({"name": "bench", "owner_email": "owner@bench.test"}),
    )
    .await;
    let team_id = team["id"].as_str().unwrap().to_owned();
    let invite = team["owner_invitation"]["token"].as_str().unwrap();
    let password = "bench owner passphrase 9912";
    post(
        server,
        "/api/v1/invitations/accept",
        None,
        json!({"token": invite, "display_name": "Owner", "password": password}),
    )
    .await;
    let session = post(
        server,
        "/api/v1/sessions",
        None,
        json!({"email": "owner@bench.test", "password": password}),
    )
    .await;
    let owner = session["token"].as_str().unwrap().to_owned();
    let created = post(
        server,
        &format!("/api/v1/teams/{team_id}/flows"),
        Some(&owner),
        json!({"document": {
            "name": "bench",
            "trigger": {"kind": "webhook"},
            "steps": [
                {"id": "calc", "kind": "transform", "set": {
                    "total": "input.qty * input.price",
                    "label": "input.item | upper"}},
                {"id": "reply", "kind": "respond",
                 "body": "{'total': steps.calc.total, 'label': steps.calc.label}"}
            ]
        }}),
    )
    .await;
    let flow = created["flow"]["id"].as_str().unwrap();
    post(
        server,
        &format!("/api/v1/teams/{team_id}/flows/{flow}/enable"),
        Some(&owner),
        json!({}),
    )
    .await;
    created["flow"]["webhook_url"].as_str().unwrap().to_owned()
}

#[tokio::main]
async fn main() {
    let runs = env_u64("KURA_BENCH_RUNS", 5000);
    let concurrency = env_u64("KURA_BENCH_CONCURRENCY", 16);
    // The test kit prepares the data directory, then the real binary
    // serves it. One loopback client would exhaust the edge's per-address
    // webhook budget within a second; the edge has its own benchmark.
    let server = TestServer::spawn_with(Options {
        configure: Box::new(|config| config.edge.enabled = false),
        ..Options::default()
    })
    .await;
    let op = server.sign_up_first_operator().await;
    let hook_path = prepare(&server, &op.token).await;
    let (dir, tmp) = server.stop_keeping_data().await;
    let config = tmp.as_ref().unwrap().path().join("bench.toml");
    std::fs::write(&config, "[edge]\nenabled = false\n").unwrap();
    let (mut child, base) = serve(&dir, &config);
    let pid = child.id();
    let client = kura_testkit::client_trusting(&dir.join("tls").join("cert.pem"));
    tokio::time::sleep(Duration::from_secs(2)).await;
    let started_rss = rss_mib(pid);
    let hook = format!("{base}{hook_path}");

    let body = br#"{"qty": 3, "price": 7, "item": "widget"}"#.to_vec();
    // Warm-up: connections, caches, the flow's document.
    for _ in 0..200 {
        let r = client
            .post(&hook)
            .header("content-type", "application/json")
            .body(body.clone())
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    let idle_rss = rss_mib(pid);

    let cpu_before = cpu_time(pid);
    let start = Instant::now();
    let per_task = runs / concurrency;
    let hook = Arc::new(hook);
    let tasks: Vec<_> = (0..concurrency)
        .map(|_| {
            let client = client.clone();
            let hook = Arc::clone(&hook);
            let body = body.clone();
            tokio::spawn(async move {
                let mut latencies = Vec::with_capacity(per_task as usize);
                for _ in 0..per_task {
                    let t = Instant::now();
                    let r = client
                        .post(hook.as_str())
                        .header("content-type", "application/json")
                        .body(body.clone())
                        .send()
                        .await
                        .unwrap();
                    assert_eq!(r.status(), 200);
                    let v: Value = r.json().await.unwrap();
                    assert_eq!(v["total"], 21);
                    latencies.push(t.elapsed());
                }
                latencies
            })
        })
        .collect();
    let mut latencies = Vec::new();
    for t in tasks {
        latencies.extend(t.await.unwrap());
    }
    let elapsed = start.elapsed();
    let cpu = cpu_time(pid) - cpu_before;
    let done = latencies.len() as f64;
    latencies.sort_unstable();
    let pct = |p: f64| latencies[((done * p) as usize).min(latencies.len() - 1)];
    println!("kura connect webhook→transform→respond, {concurrency} connections, {done} runs");
    println!("  runs/s:           {:.0}", done / elapsed.as_secs_f64());
    println!(
        "  p50 latency:      {:.2} ms",
        pct(0.50).as_secs_f64() * 1000.0
    );
    println!(
        "  p99 latency:      {:.2} ms",
        pct(0.99).as_secs_f64() * 1000.0
    );
    println!(
        "  server CPU/run:   {:.3} ms (the `kura` process alone)",
        cpu.as_secs_f64() * 1000.0 / done
    );
    println!(
        "  server RSS idle:  {started_rss:.1} MiB after start, {idle_rss:.1} MiB after warm-up"
    );
    println!("  server RSS after: {:.1} MiB", rss_mib(pid));
    let _ = child.kill();
    let _ = child.wait();
    drop(tmp);
}
