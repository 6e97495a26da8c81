//! Kura Connect's webhook path under load: a flow of three steps (webhook →
//! transform with two computed fields → respond) with run history on, over
//! HTTPS on loopback with 16 concurrent connections.
//!
//! Reports runs per second, p50/p99 latency, CPU milliseconds per run (the
//! process's user+system time from /proc — server and the in-process
//! client together, so an upper bound for the server), and resident memory
//! idle and after the load.
//!
//! Run with `cargo bench -p kura-server --bench connect`. `KURA_BENCH_RUNS`
//! (default 5000) and `KURA_BENCH_CONCURRENCY` (default 16) change it.

// A benchmark is a program whose failure should stop loudly.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stdout)]

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

/// User + system CPU time of this process.
fn cpu_time() -> Duration {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap();
    // Fields after the command name (which is in parentheses).
    let rest = &stat[stat.rfind(')').unwrap() + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks: u64 = fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap();
    // Linux reports in USER_HZ, 100 on every mainstream configuration.
    Duration::from_millis(ticks * 10)
}

fn rss_mib() -> f64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let kib: f64 = status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap();
    kib / 1024.0
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

#[tokio::main]
async fn main() {
    let runs = env_u64("KURA_BENCH_RUNS", 5000);
    let concurrency = env_u64("KURA_BENCH_CONCURRENCY", 16);
    // One loopback client would exhaust the edge's per-address webhook
    // budget within a second; the edge has its own benchmark.
    let server = TestServer::spawn_with(Options {
        configure: Box::new(|config| config.edge.enabled = false),
        ..Options::default()
    })
    .await;
    let op = server.sign_up_first_operator().await;
    let team = post(
        &server,
        "/api/v1/teams",
        Some(&op.token),
        json!({"name": "bench", "owner_email": "owner@bench.test"}),
    )
    .await;
    let team_id = team["id"].as_str().unwrap().to_owned();
    let invite = team["owner_invitation"]["token"].as_str().unwrap();
    let password = "bench owner passphrase 9912";
    post(
        &server,
        "/api/v1/invitations/accept",
        None,
        json!({"token": invite, "display_name": "Owner", "password": password}),
    )
    .await;
    let session = post(
        &server,
        "/api/v1/sessions",
        None,
        json!({"email": "owner@bench.test", "password": password}),
    )
    .await;
    let owner = session["token"].as_str().unwrap().to_owned();
    let created = post(
        &server,
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
    let hook = server.url(created["flow"]["webhook_url"].as_str().unwrap());
    post(
        &server,
        &format!("/api/v1/teams/{team_id}/flows/{flow}/enable"),
        Some(&owner),
        json!({}),
    )
    .await;

    let body = br#"{"qty": 3, "price": 7, "item": "widget"}"#.to_vec();
    let client = server.client.clone();
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
    let idle_rss = rss_mib();

    let cpu_before = cpu_time();
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
    let cpu = cpu_time() - cpu_before;
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
        "  CPU per run:      {:.3} ms (server + in-process client)",
        cpu.as_secs_f64() * 1000.0 / done
    );
    println!("  RSS idle:         {idle_rss:.1} MiB (server + client + test kit)");
    println!("  RSS after load:   {:.1} MiB", rss_mib());
}
