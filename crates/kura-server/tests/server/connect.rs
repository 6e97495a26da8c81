//! Kura Connect through the real server: flow documents refused with their
//! paths, versioning, webhooks (signatures, size, disabled flows), the
//! webhook → transform → respond flow, HTTP steps against an allow-listed
//! loopback target and SSRF refusals without it, credentials that never
//! come back and are redacted from run records, and a run that survives a
//! restart with its side effect applied once.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use axum::Router;
use axum::routing::post as axum_post;
use kura_testkit::{Options, TestServer};
use reqwest::Method;
use serde_json::{Value, json};

use super::kura_id_api::{Reply, call, get, logged_actions, post, tenant};

/// A plain-HTTP target on loopback that counts calls and echoes the
/// `Authorization` and `Idempotency-Key` headers it got.
async fn sink() -> (String, Arc<AtomicUsize>) {
    let count = Arc::new(AtomicUsize::new(0));
    let seen = Arc::clone(&count);
    let app = Router::new().route(
        "/sink",
        axum_post(move |headers: http::HeaderMap, body: String| {
            let seen = Arc::clone(&seen);
            async move {
                let n = seen.fetch_add(1, Ordering::SeqCst) + 1;
                let h = |k: &str| {
                    headers
                        .get(k)
                        .and_then(|v| v.to_str().ok())
                        .unwrap_or("")
                        .to_owned()
                };
                axum::Json(json!({
                    "calls": n,
                    "auth": h("authorization"),
                    "idempotency_key": h("idempotency-key"),
                    "got": body,
                }))
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        axum::serve(listener, app).await.unwrap();
    });
    (format!("http://127.0.0.1:{}/sink", addr.port()), count)
}

fn with_loopback_allowed() -> Options {
    Options {
        configure: Box::new(|c| {
            c.connect.outbound_allow = vec!["127.0.0.1/32".into()];
            c.connect.webhook_body_limit_bytes = 1024;
        }),
        ..Options::default()
    }
}

async fn create_flow(server: &TestServer, team: &str, owner: &str, doc: Value) -> Value {
    let r = post(
        server,
        &format!("/api/v1/teams/{team}/flows"),
        Some(owner),
        json!({ "document": doc }),
    )
    .await;
    assert_eq!(r.status, 201, "{}", r.text);
    r.json()
}

async fn enable(server: &TestServer, team: &str, owner: &str, flow: &str) {
    let r = post(
        server,
        &format!("/api/v1/teams/{team}/flows/{flow}/enable"),
        Some(owner),
        json!({}),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.json()["enabled"], true);
}

/// Polls a run until `done` says so (or fails after 20 s).
async fn wait_for_run(
    server: &TestServer,
    team: &str,
    owner: &str,
    run: &str,
    done: impl Fn(&Value) -> bool,
) -> Value {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let r = get(server, &format!("/api/v1/teams/{team}/runs/{run}"), owner).await;
        assert_eq!(r.status, 200, "{}", r.text);
        let v = r.json();
        if done(&v) {
            return v;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the run did not get there: {v}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn signed(secret_hex: &str, body: &[u8]) -> String {
    let key = kura_crypto::hmac::HmacKey::new(&hex::decode(secret_hex).unwrap());
    format!("sha256={}", key.sign_hex(body))
}

async fn hook(server: &TestServer, url: &str, body: &[u8], signature: Option<&str>) -> Reply {
    let mut req = server
        .client
        .post(server.url(url))
        .header("content-type", "application/json")
        .body(body.to_vec());
    if let Some(s) = signature {
        req = req.header("x-kura-signature", s);
    }
    let resp = req.send().await.unwrap();
    Reply {
        status: resp.status(),
        headers: resp.headers().clone(),
        text: resp.text().await.unwrap(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn documents_are_refused_with_paths_and_every_save_is_a_version() {
    let server = TestServer::spawn().await;
    let op = server.sign_up_first_operator().await;
    let t = tenant(&server, &op, "connect-docs").await;
    let flows = format!("/api/v1/teams/{}/flows", t.id);
    let bad = |steps: Value| json!({"document": {"name": "f", "trigger": {"kind": "manual"}, "steps": steps}});
    for (body, path) in [
        (
            bad(json!([{"id": "a", "kind": "teleport"}])),
            "steps[0].kind",
        ),
        (
            bad(json!([{"id": "a", "kind": "transform", "set": {"x": "input.a +"}}])),
            "steps[0].set.x",
        ),
        (
            bad(json!([{"id": "a", "kind": "delay", "seconds": 1, "next": "nowhere"}])),
            "steps[0].next",
        ),
        (
            bad(
                json!([{"id": "a", "kind": "http", "method": "GET", "url": "https://example.com",
                        "credential": "missing"}]),
            ),
            "steps[0].credential",
        ),
        (
            bad(json!([
                {"id": "a", "kind": "delay", "seconds": 1},
                {"id": "b", "kind": "condition", "branches": [{"when": "true", "goto": "a"}]}
            ])),
            "steps[1].branches[0].goto",
        ),
        (
            json!({"document": {"name": "f", "trigger": {"kind": "schedule", "cron": "not cron"},
                   "steps": [{"id": "a", "kind": "delay", "seconds": 1}]}}),
            "trigger.cron",
        ),
    ] {
        let r = post(&server, &flows, Some(&t.owner), body).await;
        let p = r.problem(422);
        assert_eq!(p["type"], "urn:kura:problem:invalid-flow");
        assert_eq!(p["errors"][0]["path"], path, "{p}");
    }
    // Nothing was saved.
    let listed = get(&server, &flows, &t.owner).await.json();
    assert_eq!(listed["flows"], json!([]));

    // YAML in, version 1; a JSON save makes version 2; both stay readable.
    let yaml = "name: greet\ntrigger: {kind: manual}\nsteps:\n  - id: t\n    kind: transform\n    set: {greeting: \"'hello ' ~ input.name\"}\n";
    let r = post(&server, &flows, Some(&t.owner), json!({ "yaml": yaml })).await;
    assert_eq!(r.status, 201, "{}", r.text);
    let flow = r.json()["flow"]["id"].as_str().unwrap().to_owned();
    assert_eq!(r.json()["flow"]["version"], 1);
    let v2 = json!({"name": "greet v2", "trigger": {"kind": "manual"}, "steps": [
        {"id": "t", "kind": "transform", "set": {"greeting": "'hi ' ~ input.name"}}]});
    let r = call(
        &server,
        Method::PUT,
        &format!("{flows}/{flow}"),
        Some(&t.owner),
        Some(json!({ "document": v2 })),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.json()["version"], 2);
    // A refused save leaves the flow at version 2.
    let r = call(
        &server,
        Method::PUT,
        &format!("{flows}/{flow}"),
        Some(&t.owner),
        Some(bad(json!([{"id": "A!", "kind": "delay", "seconds": 1}]))),
    )
    .await;
    assert_eq!(r.problem(422)["errors"][0]["path"], "steps[0].id");
    let old = get(&server, &format!("{flows}/{flow}?version=1"), &t.owner)
        .await
        .json();
    assert_eq!(old["document"]["name"], "greet");
    assert_eq!(old["version"], 2);
    let versions = get(&server, &format!("{flows}/{flow}/versions"), &t.owner)
        .await
        .json();
    assert_eq!(versions["versions"].as_array().unwrap().len(), 2);
    let export = get(
        &server,
        &format!("{flows}/{flow}/export?format=yaml"),
        &t.owner,
    )
    .await;
    assert_eq!(export.status, 200);
    assert!(export.text.contains("greet v2"), "{}", export.text);

    // A manual run records the version it ran and its step.
    let r = post(
        &server,
        &format!("{flows}/{flow}/runs"),
        Some(&t.owner),
        json!({"input": {"name": "Ada"}}),
    )
    .await;
    assert_eq!(r.status, 202, "{}", r.text);
    let run = r.json()["id"].as_str().unwrap().to_owned();
    let done = wait_for_run(&server, &t.id, &t.owner, &run, |v| {
        v["status"] == "succeeded"
    })
    .await;
    assert_eq!(done["version"], 2);
    assert_eq!(done["steps"][0]["output"]["greeting"], "hi Ada");
    assert_eq!(done["steps"][0]["attempts"], 1);
    let m = get(&server, &format!("{flows}/{flow}/metrics"), &t.owner)
        .await
        .json();
    assert_eq!(m["runs"], 1);
    assert_eq!(m["succeeded"], 1);
    // The schema is published.
    let schema = server
        .client
        .get(server.url("/api/v1/connect/flow-schema.json"))
        .send()
        .await
        .unwrap();
    let schema: Value = schema.json().await.unwrap();
    assert!(schema.to_string().contains("transform"), "{schema}");
    let actions: Vec<String> = logged_actions(&server.events)
        .await
        .iter()
        .map(|e| e.action.as_str().to_owned())
        .collect();
    assert!(actions.contains(&"connect.flow.created".to_owned()));
    assert!(actions.contains(&"connect.flow.saved".to_owned()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_signed_webhook_flow_transforms_and_responds() {
    let server = TestServer::spawn_with(with_loopback_allowed()).await;
    let op = server.sign_up_first_operator().await;
    let t = tenant(&server, &op, "connect-hooks").await;
    let created = create_flow(
        &server,
        &t.id,
        &t.owner,
        json!({
            "name": "orders",
            "trigger": {"kind": "webhook", "verify_signature": true},
            "steps": [
                {"id": "calc", "kind": "transform", "set": {
                    "total": "input.qty * input.price",
                    "label": "input.item | upper"
                }},
                {"id": "reply", "kind": "respond", "status": 201,
                 "body": "{'total': steps.calc.total, 'label': steps.calc.label}"}
            ]
        }),
    )
    .await;
    let url = created["flow"]["webhook_url"].as_str().unwrap().to_owned();
    let flow = created["flow"]["id"].as_str().unwrap().to_owned();
    let secret = created["webhook_secret"].as_str().unwrap().to_owned();
    assert_eq!(secret.len(), 64);
    let body = br#"{"qty": 3, "price": 7, "item": "widget"}"#;

    // Disabled flows refuse calls.
    let r = hook(&server, &url, body, Some(&signed(&secret, body))).await;
    r.problem(409);
    enable(&server, &t.id, &t.owner, &flow).await;

    // Good signature: the respond step answers.
    let r = hook(&server, &url, body, Some(&signed(&secret, body))).await;
    assert_eq!(r.status, 201, "{}", r.text);
    assert_eq!(r.json(), json!({"total": 21, "label": "WIDGET"}));

    // Bad or missing signatures and oversized bodies are refused.
    let r = hook(
        &server,
        &url,
        body,
        Some(&signed(&secret, b"something else")),
    )
    .await;
    r.problem(401);
    let r = hook(&server, &url, body, None).await;
    r.problem(401);
    let big = vec![b' '; 2048];
    let r = hook(&server, &url, &big, Some(&signed(&secret, &big))).await;
    r.problem(413);
    let r = hook(&server, "/hooks/00ff", body, None).await;
    r.problem(404);

    // One run, with both steps recorded.
    let runs = get(
        &server,
        &format!("/api/v1/teams/{}/runs?flow={flow}", t.id),
        &t.owner,
    )
    .await
    .json();
    let runs = runs["runs"].as_array().unwrap();
    assert_eq!(runs.len(), 1, "{runs:?}");
    assert_eq!(runs[0]["status"], "succeeded");
    assert_eq!(runs[0]["trigger"], "webhook");
    let one = get(
        &server,
        &format!(
            "/api/v1/teams/{}/runs/{}",
            t.id,
            runs[0]["id"].as_str().unwrap()
        ),
        &t.owner,
    )
    .await
    .json();
    let steps = one["steps"].as_array().unwrap();
    assert_eq!(steps.len(), 2);
    assert_eq!(steps[0]["output"], json!({"total": 21, "label": "WIDGET"}));

    let refusals: Vec<String> = logged_actions(&server.events)
        .await
        .iter()
        .filter(|e| e.action.as_str() == "connect.webhook.refused")
        .map(|e| e.details["reason"].as_str().unwrap_or("").to_owned())
        .collect();
    assert_eq!(
        refusals,
        [
            "flow_disabled",
            "bad_signature",
            "bad_signature",
            "body_too_large"
        ]
    );
    let metrics = server
        .client
        .get(server.url("/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains("kura_connect_webhooks_refused_total 4"),
        "{metrics}"
    );
}

fn http_flow(url: &str, credential: Option<&str>) -> Value {
    let mut step = json!({"id": "call", "kind": "http", "method": "POST", "url": url,
        "body": {"type": "json", "value": "{'order': input.order}"}});
    if let Some(c) = credential {
        step["credential"] = json!(c);
    }
    json!({"name": "caller", "trigger": {"kind": "manual"}, "steps": [step]})
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_steps_use_sealed_credentials_that_never_come_back() {
    let (target, calls) = sink().await;
    let server = TestServer::spawn_with(with_loopback_allowed()).await;
    let op = server.sign_up_first_operator().await;
    let t = tenant(&server, &op, "connect-http").await;
    let secret = "tok-3f9a8b7c6d5e4f30";
    let r = post(
        &server,
        &format!("/api/v1/teams/{}/flow-credentials", t.id),
        Some(&t.owner),
        json!({"name": "crm", "kind": "bearer", "secret": secret}),
    )
    .await;
    assert_eq!(r.status, 201, "{}", r.text);
    assert!(!r.text.contains(secret), "{}", r.text);
    let listed = get(
        &server,
        &format!("/api/v1/teams/{}/flow-credentials", t.id),
        &t.owner,
    )
    .await;
    assert!(!listed.text.contains(secret), "{}", listed.text);
    assert_eq!(listed.json()["credentials"][0]["name"], "crm");

    let flow = create_flow(&server, &t.id, &t.owner, http_flow(&target, Some("crm"))).await;
    let flow = flow["flow"]["id"].as_str().unwrap().to_owned();
    let r = post(
        &server,
        &format!("/api/v1/teams/{}/flows/{flow}/runs", t.id),
        Some(&t.owner),
        json!({"input": {"order": 42}}),
    )
    .await;
    let run = r.json()["id"].as_str().unwrap().to_owned();
    let done = wait_for_run(&server, &t.id, &t.owner, &run, |v| {
        v["status"] != "queued" && v["status"] != "running"
    })
    .await;
    assert_eq!(done["status"], "succeeded", "{done}");
    assert_eq!(calls.load(Ordering::SeqCst), 1);
    let out = &done["steps"][0]["output"];
    assert_eq!(out["status"], 200);
    // The target saw the secret; the run record does not show it.
    assert_eq!(out["body"]["auth"], "Bearer [REDACTED]");
    assert_eq!(out["body"]["got"], "{\"order\":42}");
    assert!(
        out["body"]["idempotency_key"]
            .as_str()
            .unwrap()
            .starts_with(&run),
        "{out}"
    );
    assert!(!done.to_string().contains(secret), "{done}");
    let events = serde_json::to_string(&logged_actions(&server.events).await).unwrap();
    assert!(!events.contains(secret));
    assert!(events.contains("connect.credential.created"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_steps_refuse_internal_addresses_without_the_allow_list() {
    let (target, calls) = sink().await;
    let server = TestServer::spawn().await;
    let op = server.sign_up_first_operator().await;
    let t = tenant(&server, &op, "connect-ssrf").await;
    for url in [
        target.clone(),
        "http://169.254.169.254/latest/meta-data/".to_owned(),
        "http://[::1]:9/x".to_owned(),
        "http://localhost:9/x".to_owned(),
    ] {
        let flow = create_flow(&server, &t.id, &t.owner, http_flow(&url, None)).await;
        let flow = flow["flow"]["id"].as_str().unwrap().to_owned();
        let r = post(
            &server,
            &format!("/api/v1/teams/{}/flows/{flow}/runs", t.id),
            Some(&t.owner),
            json!({"input": {"order": 1}}),
        )
        .await;
        let run = r.json()["id"].as_str().unwrap().to_owned();
        let done = wait_for_run(&server, &t.id, &t.owner, &run, |v| v["status"] == "failed").await;
        let error = done["error"].as_str().unwrap();
        assert!(error.contains("refused"), "{url}: {error}");
    }
    assert_eq!(calls.load(Ordering::SeqCst), 0, "no call got out");
    let refused = logged_actions(&server.events)
        .await
        .into_iter()
        .filter(|e| e.action.as_str() == "connect.outbound.refused")
        .count();
    assert_eq!(refused, 4);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn teams_see_only_their_own_flows_runs_and_credentials() {
    let server = TestServer::spawn().await;
    let op = server.sign_up_first_operator().await;
    let a = tenant(&server, &op, "connect-a").await;
    let b = tenant(&server, &op, "connect-b").await;
    let flow = create_flow(
        &server,
        &b.id,
        &b.owner,
        json!({"name": "b", "trigger": {"kind": "manual"},
               "steps": [{"id": "d", "kind": "delay", "seconds": 3600}]}),
    )
    .await;
    let flow = flow["flow"]["id"].as_str().unwrap().to_owned();
    let r = post(
        &server,
        &format!("/api/v1/teams/{}/flows/{flow}/runs", b.id),
        Some(&b.owner),
        json!({}),
    )
    .await;
    let run = r.json()["id"].as_str().unwrap().to_owned();
    // Team A names B's objects under its own team: not found.
    for path in [
        format!("/api/v1/teams/{}/flows/{flow}", a.id),
        format!("/api/v1/teams/{}/runs/{run}", a.id),
        format!("/api/v1/teams/{}/flows/{flow}/metrics", a.id),
    ] {
        get(&server, &path, &a.owner).await.problem(404);
    }
    let r = post(
        &server,
        &format!("/api/v1/teams/{}/runs/{run}/cancel", a.id),
        Some(&a.owner),
        json!({}),
    )
    .await;
    r.problem(404);
    // A flow in team A cannot use B's credential.
    let r = post(
        &server,
        &format!("/api/v1/teams/{}/flow-credentials", b.id),
        Some(&b.owner),
        json!({"name": "bsecret", "kind": "bearer", "secret": "b-only-secret-1234"}),
    )
    .await;
    assert_eq!(r.status, 201);
    let r = post(
        &server,
        &format!("/api/v1/teams/{}/flows", a.id),
        Some(&a.owner),
        json!({"document": http_flow("https://example.com", Some("bsecret"))}),
    )
    .await;
    assert_eq!(r.problem(422)["errors"][0]["path"], "steps[0].credential");
    // B's run is untouched; B cancels it.
    let r = post(
        &server,
        &format!("/api/v1/teams/{}/runs/{run}/cancel", b.id),
        Some(&b.owner),
        json!({}),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.json()["status"], "cancelled");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_resumes_after_a_restart_and_applies_its_side_effect_once() {
    let (target, calls) = sink().await;
    let server = TestServer::spawn_with(with_loopback_allowed()).await;
    let op = server.sign_up_first_operator().await;
    let t = tenant(&server, &op, "connect-restart").await;
    let flow = create_flow(
        &server,
        &t.id,
        &t.owner,
        json!({"name": "later", "trigger": {"kind": "manual"}, "steps": [
            {"id": "wait", "kind": "delay", "until": "input.at"},
            {"id": "call", "kind": "http", "method": "POST", "url": target,
             "body": {"type": "json", "value": "input"}},
            {"id": "note", "kind": "store_set", "key": "last-{{ input.order }}",
             "value": "steps.call.body.calls"}
        ]}),
    )
    .await;
    let flow = flow["flow"]["id"].as_str().unwrap().to_owned();
    let r = post(
        &server,
        &format!("/api/v1/teams/{}/flows/{flow}/runs", t.id),
        Some(&t.owner),
        json!({"input": {"order": 7, "at": (time::OffsetDateTime::now_utc() + time::Duration::seconds(2))
            .format(&time::format_description::well_known::Rfc3339).unwrap()}}),
    )
    .await;
    let run = r.json()["id"].as_str().unwrap().to_owned();
    wait_for_run(&server, &t.id, &t.owner, &run, |v| v["status"] == "waiting").await;

    // Stop mid-run (the run is paused in its delay) and reopen the same
    // data directory.
    let (dir, tmp) = server.stop_keeping_data().await;
    assert_eq!(calls.load(Ordering::SeqCst), 0);
    let server = TestServer::spawn_with(Options {
        data_dir: Some(dir),
        ..with_loopback_allowed()
    })
    .await;
    let done = wait_for_run(&server, &t.id, &t.owner, &run, |v| {
        v["status"] == "succeeded" || v["status"] == "failed"
    })
    .await;
    assert_eq!(done["status"], "succeeded", "{done}");
    assert_eq!(calls.load(Ordering::SeqCst), 1, "the call happened once");
    let steps: Vec<&str> = done["steps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["step"].as_str().unwrap())
        .collect();
    assert_eq!(steps, ["wait", "call", "note"]);
    drop(server);
    drop(tmp);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scheduled_flows_fire_once_per_time_and_call_other_flows() {
    let server = TestServer::spawn().await;
    let op = server.sign_up_first_operator().await;
    let t = tenant(&server, &op, "connect-cron").await;
    let child = create_flow(
        &server,
        &t.id,
        &t.owner,
        json!({"name": "child", "trigger": {"kind": "manual"}, "steps": [
            {"id": "echo", "kind": "transform", "set": {"got": "input.n * 2"}}]}),
    )
    .await;
    let child = child["flow"]["id"].as_str().unwrap().to_owned();
    let parent = create_flow(
        &server,
        &t.id,
        &t.owner,
        json!({"name": "ticker",
               "trigger": {"kind": "schedule", "cron": "* * * * * *", "timezone": "Europe/Paris"},
               "steps": [{"id": "spawn", "kind": "call_flow", "flow": child, "input": "{'n': 21}"}]}),
    )
    .await;
    let parent = parent["flow"]["id"].as_str().unwrap().to_owned();
    let runs_of = |flow: String| {
        let server = &server;
        let t = &t;
        async move {
            get(
                server,
                &format!("/api/v1/teams/{}/runs?flow={flow}&limit=500", t.id),
                &t.owner,
            )
            .await
            .json()["runs"]
                .as_array()
                .unwrap()
                .clone()
        }
    };
    // Disabled: it does not fire.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert!(runs_of(parent.clone()).await.is_empty());
    enable(&server, &t.id, &t.owner, &parent).await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while runs_of(parent.clone()).await.len() < 2 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the schedule did not fire"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let r = post(
        &server,
        &format!("/api/v1/teams/{}/flows/{parent}/disable", t.id),
        Some(&t.owner),
        json!({}),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text);
    let parents = runs_of(parent.clone()).await;
    for p in &parents {
        let id = p["id"].as_str().unwrap();
        wait_for_run(&server, &t.id, &t.owner, id, |v| v["status"] == "succeeded").await;
    }
    // Each fire time ran once.
    let mut times: Vec<&str> = parents
        .iter()
        .map(|p| p["input"]["scheduled_for"].as_str().unwrap())
        .collect();
    let fired = times.len();
    times.sort_unstable();
    times.dedup();
    assert_eq!(times.len(), fired, "a fire time ran twice: {parents:?}");
    // Each parent run started exactly one child run, which ran.
    let children = runs_of(child.clone()).await;
    assert_eq!(children.len(), parents.len());
    for c in &children {
        assert_eq!(c["trigger"], "flow");
        let id = c["id"].as_str().unwrap();
        let done = wait_for_run(&server, &t.id, &t.owner, id, |v| v["status"] == "succeeded").await;
        assert_eq!(done["steps"][0]["output"]["got"], 42);
    }
}
