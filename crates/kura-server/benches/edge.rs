//! What the edge (firewall + rate limits + WAF) costs: two real servers over
//! TLS, one with the edge and one with `edge.enabled = false`, answering the
//! same small authenticated JSON requests from the same client, in
//! alternating rounds so both see the same machine load. Prints requests
//! per second and the ratio (with / without) for each request kind.
//!
//! The edge server has a platform firewall list, the default WAF in block
//! mode, and rate-limit budgets raised so that every request is checked
//! against its buckets but none is refused.
//!
//! `cargo bench -p kura-server --bench edge` (release build). Environment:
//! `EDGE_BENCH_REQUESTS` per round (default 4000), `EDGE_BENCH_ROUNDS`
//! (default 3), `EDGE_BENCH_CONCURRENCY` (default 16).

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::print_stdout
)]

use std::sync::Arc;
use std::time::Instant;

use kura_testkit::{Options, TestServer};
use serde_json::{Value, json};

fn env(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

#[derive(Clone, Copy, Debug)]
enum Kind {
    /// `GET /api/v1/me`: bearer token in, a small JSON object out.
    Me,
    /// `PATCH /api/v1/me` with a small JSON body the WAF parses and scans.
    /// The update is a durable write, so the database dominates.
    UpdateMe,
}

async fn one(server: &TestServer, token: &str, kind: Kind, i: usize) {
    let r = match kind {
        Kind::Me => server
            .client
            .get(server.url("/api/v1/me"))
            .bearer_auth(token)
            .send()
            .await
            .unwrap(),
        Kind::UpdateMe => server
            .client
            .patch(server.url("/api/v1/me"))
            .bearer_auth(token)
            .json(&json!({ "display_name": format!("Renée O'Brien {}", i % 7) }))
            .send()
            .await
            .unwrap(),
    };
    assert_eq!(r.status(), 200, "{kind:?}");
    let _ = r.bytes().await.unwrap();
}

/// Requests per second for `n` requests at `concurrency`.
async fn round(
    server: Arc<TestServer>,
    token: Arc<String>,
    kind: Kind,
    n: usize,
    concurrency: usize,
) -> f64 {
    let start = Instant::now();
    let mut tasks = Vec::new();
    for worker in 0..concurrency {
        let server = Arc::clone(&server);
        let token = Arc::clone(&token);
        tasks.push(tokio::spawn(async move {
            let mut i = worker;
            while i < n {
                one(&server, &token, kind, i).await;
                i += concurrency;
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    n as f64 / start.elapsed().as_secs_f64()
}

async fn prepare(edge: bool) -> (Arc<TestServer>, Arc<String>) {
    let server = TestServer::spawn_with(Options {
        configure: Box::new(move |c| c.edge.enabled = edge),
        ..Options::default()
    })
    .await;
    let op = server.sign_up_first_operator().await;
    if edge {
        let put = |path: &str, body: Value| {
            server
                .client
                .put(server.url(path))
                .bearer_auth(&op.token)
                .json(&body)
                .send()
        };
        let r = put(
            "/api/v1/edge/firewall",
            json!({ "allow": ["127.0.0.0/8", "10.0.0.0/8"], "deny": ["192.0.2.0/24"] }),
        )
        .await
        .unwrap();
        assert_eq!(r.status(), 200);
        let mut limits: Value = server
            .client
            .get(server.url("/api/v1/edge"))
            .bearer_auth(&op.token)
            .send()
            .await
            .unwrap()
            .json::<Value>()
            .await
            .unwrap()["rate_limits"]
            .clone();
        for family in ["sign_in", "data_api", "admin_api", "webhooks"] {
            for key in ["per_source", "per_credential", "per_team"] {
                limits[family][key] = json!({ "per_minute": 1_000_000, "burst": 1_000_000 });
            }
        }
        for k in ["scope", "version", "updated_at", "updated_by"] {
            limits.as_object_mut().unwrap().remove(k);
        }
        let r = put("/api/v1/edge/rate-limits", limits).await.unwrap();
        assert_eq!(r.status(), 200);
    }
    (Arc::new(server), Arc::new(op.token))
}

fn main() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let n = env("EDGE_BENCH_REQUESTS", 4000);
        let rounds = env("EDGE_BENCH_ROUNDS", 3);
        let concurrency = env("EDGE_BENCH_CONCURRENCY", 16);
        let (with, with_token) = prepare(true).await;
        let (without, without_token) = prepare(false).await;
        println!("edge bench: {n} requests per round, {rounds} rounds, concurrency {concurrency}");
        println!("| request | with edge (req/s) | without edge (req/s) | with / without |");
        println!("|---|---:|---:|---:|");
        for kind in [Kind::Me, Kind::UpdateMe] {
            // Warm both up (connections, caches).
            round(
                Arc::clone(&with),
                Arc::clone(&with_token),
                kind,
                n / 10 + 1,
                concurrency,
            )
            .await;
            round(
                Arc::clone(&without),
                Arc::clone(&without_token),
                kind,
                n / 10 + 1,
                concurrency,
            )
            .await;
            let n = match kind {
                Kind::Me => n,
                Kind::UpdateMe => (n / 8).max(1),
            };
            let (mut a, mut b) = (Vec::new(), Vec::new());
            for _ in 0..rounds {
                a.push(
                    round(
                        Arc::clone(&with),
                        Arc::clone(&with_token),
                        kind,
                        n,
                        concurrency,
                    )
                    .await,
                );
                b.push(
                    round(
                        Arc::clone(&without),
                        Arc::clone(&without_token),
                        kind,
                        n,
                        concurrency,
                    )
                    .await,
                );
            }
            let median = |v: &mut Vec<f64>| {
                v.sort_by(f64::total_cmp);
                v[v.len() / 2]
            };
            let (a, b) = (median(&mut a), median(&mut b));
            println!("| {kind:?} | {a:.0} | {b:.0} | {:.3} |", a / b);
        }
    });
}
