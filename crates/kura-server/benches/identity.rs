//! Kura ID throughput, side by side in one run on this machine:
//!
//! 1. raw Argon2id: password verifications per second at the parameters
//!    Kura uses (`HashParams::OWASP`), on as many threads as there are
//!    cores, which is the most the machine can do;
//! 2. end-to-end password sign-ins per second through the HTTPS API
//!    (`POST /api/v1/sessions`: TLS, JSON, throttle checks, one Argon2id
//!    verification, a new session row and its security event, both
//!    durable), with enough concurrent clients to keep every core busy;
//! 3. requests per second on one trivial endpoint with a bearer session
//!    token against the same endpoint without authentication, both over
//!    the same HTTPS client;
//! 4. the same authenticated endpoint once more, recording one security
//!    event durably (hash chain, group commit, `synchronous=FULL`) before it
//!    answers, at the same concurrency and with 64 concurrent clients;
//! 5. an authenticated write (the account's profile, one durable
//!    transaction) with its security event appended in the same
//!    transaction, against the same write without the event, at the same
//!    concurrencies: what an audited state change costs over an unaudited
//!    one.
//!
//! Run with `cargo bench -p kura-server --bench identity`. Counts can be
//! changed with `KURA_BENCH_HASHES`, `KURA_BENCH_SIGNINS`,
//! `KURA_BENCH_REQUESTS` and `KURA_BENCH_CONCURRENCY`; `KURA_BENCH_ROUNDS`
//! sets the rounds of the write comparison and `KURA_BENCH_WRITES_ONLY=1`
//! runs only that (for profiling it); `KURA_BENCH_WRITE_PATH=audited` (or
//! `plain`) runs only one side of it.

// A benchmark is a program whose failure should stop loudly.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stdout)]

use std::sync::Arc;
use std::time::Instant;

use axum::Router;
use axum::routing::{get, post};
use kura_server::AppState;
use kura_server::Authenticated;
use kura_server::kura_identity::{HashParams, Passwords};
use kura_store::events::{EventRecord, TxEvents};
use kura_testkit::{Options, TestServer};
use kura_types::{Action, Actor, Outcome, SecurityEvent};
use secrecy::SecretString;
use serde_json::{Value, json};

const PASSWORD: &str = "benchmark passphrase 4471";
const EMAIL: &str = "bench@example.com";

fn env_u64(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn cores() -> u64 {
    std::thread::available_parallelism().map_or(1, |n| n.get() as u64)
}

/// Argon2id verifications per second on every core.
fn raw_argon2(total: u64) -> f64 {
    let passwords = Arc::new(Passwords::new(HashParams::OWASP).unwrap());
    let password = SecretString::from(PASSWORD.to_owned());
    let phc = Arc::new(passwords.hash(&password).unwrap());
    let threads = cores();
    let per = total.div_ceil(threads);
    let start = Instant::now();
    let handles: Vec<_> = (0..threads)
        .map(|_| {
            let passwords = Arc::clone(&passwords);
            let phc = Arc::clone(&phc);
            let password = password.clone();
            std::thread::spawn(move || {
                for _ in 0..per {
                    assert!(passwords.verify(&password, &phc));
                }
            })
        })
        .collect();
    for h in handles {
        h.join().unwrap();
    }
    (per * threads) as f64 / start.elapsed().as_secs_f64()
}

/// Runs `total` requests made by `make`, `concurrency` at a time; returns
/// requests per second. Every answer must have `status`.
async fn hammer<F, Fut>(total: u64, concurrency: u64, status: u16, make: F) -> f64
where
    F: Fn() -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = reqwest::Response> + Send,
{
    let make = Arc::new(make);
    let per = total.div_ceil(concurrency);
    let start = Instant::now();
    let tasks: Vec<_> = (0..concurrency)
        .map(|_| {
            let make = Arc::clone(&make);
            tokio::spawn(async move {
                for _ in 0..per {
                    let r = make().await;
                    assert_eq!(r.status().as_u16(), status);
                    r.bytes().await.unwrap();
                }
            })
        })
        .collect();
    for t in tasks {
        t.await.unwrap();
    }
    (per * concurrency) as f64 / start.elapsed().as_secs_f64()
}

async fn ok() -> &'static str {
    "ok"
}

async fn ok_authenticated(_: Authenticated) -> &'static str {
    "ok"
}

/// The authenticated handler, recording one event before it answers (an
/// event that cannot be recorded fails the request, as everywhere).
async fn ok_audited(
    axum::extract::State(state): axum::extract::State<AppState>,
    _: Authenticated,
) -> Result<&'static str, axum::http::StatusCode> {
    let event = SecurityEvent::new(
        state.clock.now(),
        Actor::Account { id: "bench".into() },
        Action::parse("data.read").map_err(|_| axum::http::StatusCode::INTERNAL_SERVER_ERROR)?,
        Outcome::Success,
    );
    state
        .events
        .record(event)
        .await
        .map_err(|_| axum::http::StatusCode::INTERNAL_SERVER_ERROR)?;
    Ok("ok")
}

/// The authenticated write without an event: the account's display name,
/// through the identity store, one durable transaction.
async fn write_plain(
    axum::extract::State(state): axum::extract::State<AppState>,
    auth: Authenticated,
) -> Result<&'static str, axum::http::StatusCode> {
    write_profile(&state, &auth, TxEvents::none()).await
}

/// The same write with its `account.profile.changed` event appended in the
/// same transaction, as every Kura ID state change does.
async fn write_audited(
    axum::extract::State(state): axum::extract::State<AppState>,
    auth: Authenticated,
) -> Result<&'static str, axum::http::StatusCode> {
    let event = auth.ctx.decorate(
        SecurityEvent::new(
            state.clock.now(),
            Actor::Account {
                id: auth.principal.account.to_string(),
            },
            Action::parse("account.profile.changed")
                .map_err(|_| axum::http::StatusCode::INTERNAL_SERVER_ERROR)?,
            Outcome::Success,
        )
        .with_target(format!("account:{}", auth.principal.account)),
    );
    let record =
        EventRecord::new(event).map_err(|_| axum::http::StatusCode::INTERNAL_SERVER_ERROR)?;
    write_profile(&state, &auth, TxEvents::fixed(vec![record])).await
}

/// Gives every write a new display name. SQLite skips writing a row whose
/// bytes do not change, and such a commit has no page to sync: a write of
/// the same name each time would not be a durable write at all, and the
/// comparison with the audited write (which always appends) would be void.
static WRITES: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

async fn write_profile(
    state: &AppState,
    auth: &Authenticated,
    events: TxEvents<()>,
) -> Result<&'static str, axum::http::StatusCode> {
    let n = WRITES.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    state
        .identity_store
        .update_profile(
            auth.principal.account,
            &format!("Bench {n}"),
            None,
            state.clock.now(),
            events,
        )
        .await
        .map_err(|_| axum::http::StatusCode::INTERNAL_SERVER_ERROR)?;
    Ok("ok")
}

async fn run() {
    let hashes = env_u64("KURA_BENCH_HASHES", 200);
    let signins = env_u64("KURA_BENCH_SIGNINS", 200);
    let requests = env_u64("KURA_BENCH_REQUESTS", 20_000);
    let concurrency = env_u64("KURA_BENCH_CONCURRENCY", 2 * cores());

    // The same trivial handler, once behind authentication.
    let routes: Router<AppState> = Router::new()
        .route("/bench/open", get(ok))
        .route("/bench/authenticated", get(ok_authenticated))
        .route("/bench/audited", get(ok_audited))
        .route("/bench/write", post(write_plain))
        .route("/bench/write-audited", post(write_audited));
    let server = Arc::new(
        TestServer::spawn_with(Options {
            routes,
            // The edge's sign-in budget would answer 429 within the first
            // second; the edge has its own benchmark (`--bench edge`).
            configure: Box::new(|config| config.edge.enabled = false),
            ..Options::default()
        })
        .await,
    );
    let setup = server
        .setup_link
        .as_ref()
        .unwrap()
        .token
        .reveal()
        .to_owned();
    let r = server
        .client
        .post(server.url("/api/v1/setup"))
        .json(&json!({
            "token": setup, "email": EMAIL, "display_name": "Bench", "password": PASSWORD,
        }))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201, "{}", r.text().await.unwrap());
    let token = r.json::<Value>().await.unwrap()["token"]
        .as_str()
        .unwrap()
        .to_owned();

    println!("cores: {}, concurrent clients: {concurrency}", cores());
    if std::env::var_os("KURA_BENCH_WRITES_ONLY").is_none() {
        reads(&server, &token, hashes, signins, requests, concurrency).await;
    }
    writes(&server, &token, requests, concurrency).await;
}

/// Phases 1–4: Argon2id, sign-ins, bearer requests, audited reads.
async fn reads(
    server: &Arc<TestServer>,
    token: &str,
    hashes: u64,
    signins: u64,
    requests: u64,
    concurrency: u64,
) {
    let token = token.to_owned();

    let raw = tokio::task::spawn_blocking(move || raw_argon2(hashes))
        .await
        .unwrap();
    println!("argon2id verify (raw, {hashes} on every core): {raw:.1}/s");

    let s = Arc::clone(server);
    let signin_rate = hammer(signins, concurrency, 201, move || {
        let s = Arc::clone(&s);
        async move {
            s.client
                .post(s.url("/api/v1/sessions"))
                .json(&json!({ "email": EMAIL, "password": PASSWORD }))
                .send()
                .await
                .unwrap()
        }
    })
    .await;
    println!(
        "HTTPS password sign-ins ({signins}): {signin_rate:.1}/s = {:.2} of raw",
        signin_rate / raw
    );

    // Warm both paths (connections, caches) before timing them.
    for path in ["/bench/open", "/bench/authenticated", "/bench/audited"] {
        let r = server
            .client
            .get(server.url(path))
            .bearer_auth(&token)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
    }
    let s = Arc::clone(server);
    let open = hammer(requests, concurrency, 200, move || {
        let s = Arc::clone(&s);
        async move { s.client.get(s.url("/bench/open")).send().await.unwrap() }
    })
    .await;
    let s = Arc::clone(server);
    let t = token.clone();
    let authed = hammer(requests, concurrency, 200, move || {
        let s = Arc::clone(&s);
        let t = t.clone();
        async move {
            s.client
                .get(s.url("/bench/authenticated"))
                .bearer_auth(t)
                .send()
                .await
                .unwrap()
        }
    })
    .await;
    println!("trivial endpoint without authentication ({requests}): {open:.0}/s");
    println!(
        "trivial endpoint with a bearer session ({requests}): {authed:.0}/s = {:.2} of unauthenticated",
        authed / open
    );

    for clients in [concurrency, 64] {
        let s = Arc::clone(server);
        let t = token.clone();
        let plain = hammer(requests, clients, 200, move || {
            let s = Arc::clone(&s);
            let t = t.clone();
            async move {
                s.client
                    .get(s.url("/bench/authenticated"))
                    .bearer_auth(t)
                    .send()
                    .await
                    .unwrap()
            }
        })
        .await;
        let s = Arc::clone(server);
        let t = token.clone();
        let audited = hammer(requests, clients, 200, move || {
            let s = Arc::clone(&s);
            let t = t.clone();
            async move {
                s.client
                    .get(s.url("/bench/audited"))
                    .bearer_auth(t)
                    .send()
                    .await
                    .unwrap()
            }
        })
        .await;
        println!(
            "{clients} clients: authenticated {plain:.0}/s, recording one durable event {audited:.0}/s = {:.2} of it (overhead {:.0}%)",
            audited / plain,
            (1.0 - audited / plain) * 100.0
        );
    }
}

/// Phase 5: the write with and without its event, in alternating order
/// over `KURA_BENCH_ROUNDS` rounds (default 3), so both see the same
/// machine and the same growth of the database; the median ratio is the
/// figure.
async fn writes(server: &Arc<TestServer>, token: &str, requests: u64, concurrency: u64) {
    // Writes are slower than reads (each waits for a durable commit), so a
    // tenth as many.
    let writes = (requests / 10).max(1);
    let rounds = env_u64("KURA_BENCH_ROUNDS", 3).max(1);
    for clients in [concurrency, 64] {
        let rate = |path: &'static str| {
            let s = Arc::clone(server);
            let t = token.to_owned();
            hammer(writes, clients, 200, move || {
                let s = Arc::clone(&s);
                let t = t.clone();
                async move {
                    s.client
                        .post(s.url(path))
                        .bearer_auth(t)
                        .send()
                        .await
                        .unwrap()
                }
            })
        };
        // For profiling one side: only that path, `rounds` times.
        if let Ok(path) = std::env::var("KURA_BENCH_WRITE_PATH") {
            let path: &'static str = match path.as_str() {
                "audited" => Some("/bench/write-audited"),
                "plain" => Some("/bench/write"),
                _ => None,
            }
            .expect("KURA_BENCH_WRITE_PATH is `plain` or `audited`");
            for _ in 0..rounds {
                println!("{clients} clients: {path} {:.0}/s", rate(path).await);
            }
            continue;
        }
        let mut ratios = Vec::new();
        for round in 0..rounds {
            let (plain, audited) = if round % 2 == 0 {
                let plain = rate("/bench/write").await;
                (plain, rate("/bench/write-audited").await)
            } else {
                let audited = rate("/bench/write-audited").await;
                (rate("/bench/write").await, audited)
            };
            println!(
                "{clients} clients, round {}: authenticated write {plain:.0}/s, with its event in the same transaction {audited:.0}/s = {:.2} of it",
                round + 1,
                audited / plain,
            );
            ratios.push(audited / plain);
        }
        ratios.sort_by(f64::total_cmp);
        let median = ratios[ratios.len() / 2];
        println!(
            "{clients} clients: write with its event / write, median of {rounds} rounds = {median:.2} (overhead {:.0}%)",
            (1.0 - median) * 100.0
        );
    }
}

fn main() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(cores() as usize)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(run());
}
