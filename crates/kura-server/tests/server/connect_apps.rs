//! Kura Connect and hosted apps through the real server: app steps acting
//! as a service account under its privilege set (and refused on save when
//! the app, layout or account is not the team's), the app-event trigger
//! delivering each change once across a restart, and loops that run each
//! item once with a concurrency limit and resume without repeating
//! finished iterations.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::routing::post as axum_post;
use kura_testkit::{Options, TestServer};
use parking_lot::Mutex;
use serde_json::{Value, json};

use super::kura_id_api::{Tenant, get, post, tenant};

async fn created(server: &TestServer, path: &str, token: &str, body: Value) -> Value {
    let r = post(server, path, Some(token), body).await;
    assert_eq!(r.status, 201, "{path}: {}", r.text);
    r.json()
}

/// A host and an app `Shop` with an `orders` table, and a service account
/// `connect` under the `flows` set (view, create and edit every order, no
/// deletion, `secret` hidden). Returns the app id.
async fn shop(server: &TestServer, t: &Tenant, host: &str) -> String {
    let host = created(
        server,
        &format!("/api/v1/teams/{}/hosts", t.id),
        &t.owner,
        json!({"name": host}),
    )
    .await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let definition = json!({
        "tables": [{"name": "orders", "fields": [
            {"name": "name", "type": "text", "required": true},
            {"name": "total", "type": "number"},
            {"name": "status", "type": "text"},
            {"name": "secret", "type": "text"}
        ]}],
        "layouts": [{"name": "orders", "table": "orders"}],
        "privilege_sets": [{"name": "flows", "extended": [],
            "tables": {"orders": {"view": "all", "edit": "all", "create": true,
                                  "delete": "none", "fields": {"secret": "none"}}}}]
    });
    let app = created(
        server,
        &format!("/api/v1/teams/{}/hosts/{host}/apps", t.id),
        &t.owner,
        json!({"name": "Shop", "definition": definition}),
    )
    .await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let account = created(
        server,
        &format!("/api/v1/teams/{}/apps/{app}/accounts", t.id),
        &t.owner,
        json!({"name": "connect", "service": true, "privilege_set": "flows"}),
    )
    .await;
    assert_eq!(account["kind"], "service");
    app
}

async fn flow(server: &TestServer, t: &Tenant, doc: Value) -> String {
    created(
        server,
        &format!("/api/v1/teams/{}/flows", t.id),
        &t.owner,
        json!({"document": doc}),
    )
    .await["flow"]["id"]
        .as_str()
        .unwrap()
        .to_owned()
}

async fn enable(server: &TestServer, t: &Tenant, flow: &str) {
    let r = post(
        server,
        &format!("/api/v1/teams/{}/flows/{flow}/enable", t.id),
        Some(&t.owner),
        json!({}),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text);
}

async fn start(server: &TestServer, t: &Tenant, flow: &str, input: Value) -> String {
    let r = post(
        server,
        &format!("/api/v1/teams/{}/flows/{flow}/runs", t.id),
        Some(&t.owner),
        json!({"input": input}),
    )
    .await;
    assert_eq!(r.status, 202, "{}", r.text);
    r.json()["id"].as_str().unwrap().to_owned()
}

/// Polls a run until it is over (or fails after 40 s).
async fn finished(server: &TestServer, t: &Tenant, run: &str) -> Value {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(40);
    loop {
        let v = get(
            server,
            &format!("/api/v1/teams/{}/runs/{run}", t.id),
            &t.owner,
        )
        .await
        .json();
        if ["succeeded", "failed", "dead_letter", "cancelled"]
            .contains(&v["status"].as_str().unwrap_or(""))
        {
            return v;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the run did not end: {v}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn step<'v>(run: &'v Value, id: &str) -> &'v Value {
    run["steps"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["step"] == id)
        .unwrap_or_else(|| panic!("no step {id} in {run}"))
}

async fn runs_of(server: &TestServer, t: &Tenant, flow: &str) -> Vec<Value> {
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

fn app_step(app: &str, op: &str, extra: Value) -> Value {
    let mut s =
        json!({"kind": "app", "app": app, "layout": "orders", "account": "connect", "op": op});
    for (k, v) in extra.as_object().unwrap() {
        s[k] = v.clone();
    }
    s
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn app_steps_act_as_a_service_account_under_its_privilege_set() {
    let server = TestServer::spawn().await;
    let op = server.sign_up_first_operator().await;
    let t = tenant(&server, &op, "connect-apps").await;
    let app = shop(&server, &t, "shop").await;
    let other = tenant(&server, &op, "connect-apps-other").await;
    let foreign = shop(&server, &other, "elsewhere").await;

    // Targets are checked on save, each problem at its path.
    let flows = format!("/api/v1/teams/{}/flows", t.id);
    let doc = |mut s: Value| {
        s["id"] = json!("a");
        json!({"document": {"name": "f", "trigger": {"kind": "manual"}, "steps": [s]}})
    };
    for (s, path) in [
        (app_step(&foreign, "find", json!({})), "steps[0].app"),
        (
            app_step(&app, "find", json!({"layout": "nope"})),
            "steps[0].layout",
        ),
        (
            app_step(&app, "find", json!({"account": "owner"})),
            "steps[0].account",
        ),
        (app_step(&app, "get", json!({})), "steps[0].record_id"),
        (
            app_step(&app, "create", json!({"fields": {"name": "input.+"}})),
            "steps[0].fields.name",
        ),
    ] {
        let r = post(&server, &flows, Some(&t.owner), doc(s)).await;
        let p = r.problem(422);
        assert_eq!(p["errors"][0]["path"], path, "{p}");
    }
    assert_eq!(
        get(&server, &flows, &t.owner).await.json()["flows"],
        json!([])
    );

    let f = flow(
        &server,
        &t,
        json!({"name": "orders", "trigger": {"kind": "manual"}, "steps": [
            {"id": "make", "kind": "app", "app": app, "layout": "orders", "account": "connect",
             "op": "create", "fields": {"name": "input.name", "total": "input.total", "secret": "'x'"},
             "on_error": "continue"},
            {"id": "add", "kind": "app", "app": app, "layout": "orders", "account": "connect",
             "op": "create", "fields": {"name": "input.name", "total": "input.total"}},
            {"id": "pay", "kind": "app", "app": app, "layout": "orders", "account": "connect",
             "op": "edit", "record_id": "steps.add.recordId", "fields": {"status": "'paid'"}},
            {"id": "read", "kind": "app", "app": app, "layout": "orders", "account": "connect",
             "op": "get", "record_id": "steps.add.recordId"},
            {"id": "paid", "kind": "app", "app": app, "layout": "orders", "account": "connect",
             "op": "find", "query": "[{'status': 'paid'}]", "sort": [{"field": "total", "descending": true}]},
            {"id": "drop", "kind": "app", "app": app, "layout": "orders", "account": "connect",
             "op": "delete", "record_id": "steps.add.recordId", "on_error": "continue"}
        ]}),
    )
    .await;
    let run = start(&server, &t, &f, json!({"name": "Ada", "total": 42})).await;
    let done = finished(&server, &t, &run).await;
    assert_eq!(done["status"], "succeeded", "{done}");
    // A hidden field cannot be written: the Data API's error 102.
    let make = step(&done, "make");
    assert_eq!(make["status"], "failed");
    assert!(make["error"].as_str().unwrap().contains("102"), "{make}");
    let read = &step(&done, "read")["output"]["record"];
    assert_eq!(read["fieldData"]["name"], "Ada");
    assert_eq!(read["fieldData"]["total"], 42);
    assert_eq!(read["fieldData"]["status"], "paid");
    assert!(read["fieldData"].get("secret").is_none(), "{read}");
    let paid = &step(&done, "paid")["output"];
    assert_eq!(paid["found"], 1, "{paid}");
    assert_eq!(paid["records"][0]["recordId"], read["recordId"]);
    // The set may not delete: the Data API's error 200, and nothing changed.
    let drop = step(&done, "drop");
    assert_eq!(drop["status"], "failed");
    assert!(drop["error"].as_str().unwrap().contains("200"), "{drop}");
    assert_eq!(
        step(&done, "add")["idempotency_key"]
            .as_str()
            .map(|k| !k.is_empty()),
        Some(true),
        "writes carry an idempotency key"
    );

    // An account that is no longer a service account's: the step fails
    // with a clear error at run time.
    let r = super::kura_id_api::call(
        &server,
        reqwest::Method::PATCH,
        &format!("/api/v1/teams/{}/apps/{app}/accounts/connect", t.id),
        Some(&t.owner),
        Some(json!({"active": false})),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text);
    let run = start(&server, &t, &f, json!({"name": "Bob", "total": 1})).await;
    let done = finished(&server, &t, &run).await;
    assert_eq!(done["status"], "failed", "{done}");
    assert!(
        done["error"].as_str().unwrap().contains("inactive"),
        "{done}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn app_events_start_one_run_per_change_across_a_restart() {
    let server = TestServer::spawn().await;
    let op = server.sign_up_first_operator().await;
    let t = tenant(&server, &op, "connect-events").await;
    let app = shop(&server, &t, "events").await;
    let writer = flow(
        &server,
        &t,
        json!({"name": "writer", "trigger": {"kind": "manual"}, "steps": [
            {"id": "w", "kind": "app", "app": app, "layout": "orders", "account": "connect",
             "op": "create", "fields": {"name": "input.name"}},
            {"id": "e", "kind": "app", "app": app, "layout": "orders", "account": "connect",
             "op": "edit", "record_id": "steps.w.recordId", "fields": {"status": "'seen'"}}
        ]}),
    )
    .await;
    let write = |name: &'static str| {
        let (server, t, writer) = (&server, &t, &writer);
        async move {
            let run = start(server, t, writer, json!({"name": name})).await;
            let done = finished(server, t, &run).await;
            assert_eq!(done["status"], "succeeded", "{done}");
        }
    };
    let listener = flow(
        &server,
        &t,
        json!({"name": "on new orders",
               "trigger": {"kind": "app_event", "app": app, "layout": "orders",
                           "account": "connect", "events": ["created"]},
               "steps": [{"id": "t", "kind": "transform",
                          "set": {"who": "input.record.fieldData.name", "what": "input.event"}}]}),
    )
    .await;
    // Changes before the flow is enabled start nothing.
    write("before").await;
    enable(&server, &t, &listener).await;
    write("one").await;
    write("two").await;
    let wait_for = |n: usize| {
        let (server, t, listener) = (&server, &t, &listener);
        async move {
            let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
            loop {
                let runs = runs_of(server, t, listener).await;
                if runs.len() >= n {
                    return runs;
                }
                assert!(
                    tokio::time::Instant::now() < deadline,
                    "{} of {n} runs",
                    runs.len()
                );
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    };
    wait_for(2).await;

    let (dir, tmp) = server.stop_keeping_data().await;
    let server = TestServer::spawn_with(Options {
        data_dir: Some(dir),
        ..Options::default()
    })
    .await;
    let write = |name: &'static str| {
        let (server, t, writer) = (&server, &t, &writer);
        async move {
            let run = start(server, t, writer, json!({"name": name})).await;
            let done = finished(server, t, &run).await;
            assert_eq!(done["status"], "succeeded", "{done}");
        }
    };
    write("three").await;
    let wait_for = |n: usize| {
        let (server, t, listener) = (&server, &t, &listener);
        async move {
            let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
            loop {
                let runs = runs_of(server, t, listener).await;
                if runs.len() >= n {
                    return runs;
                }
                assert!(
                    tokio::time::Instant::now() < deadline,
                    "{} of {n} runs",
                    runs.len()
                );
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    };
    let runs = wait_for(3).await;
    // A moment more: nothing else arrives (edits are not subscribed, the
    // change before enabling is not delivered, nothing is doubled).
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let runs = if runs.len() == 3 {
        runs_of(&server, &t, &listener).await
    } else {
        runs
    };
    assert_eq!(runs.len(), 3, "{runs:?}");
    let mut names = Vec::new();
    for r in &runs {
        assert_eq!(r["trigger"], "app_event");
        let done = finished(&server, &t, r["id"].as_str().unwrap()).await;
        assert_eq!(done["status"], "succeeded", "{done}");
        assert_eq!(step(&done, "t")["output"]["what"], "created");
        names.push(
            step(&done, "t")["output"]["who"]
                .as_str()
                .unwrap()
                .to_owned(),
        );
    }
    names.sort();
    assert_eq!(names, ["one", "three", "two"]);
    drop(server);
    drop(tmp);
}

/// A loopback target that answers after `delay`, recording every call's
/// `Idempotency-Key` and body.
async fn slow_sink(delay: Duration) -> (String, Arc<Mutex<Vec<(String, Value)>>>) {
    let calls: Arc<Mutex<Vec<(String, Value)>>> = Arc::default();
    let seen = Arc::clone(&calls);
    let app = Router::new().route(
        "/",
        axum_post(
            move |headers: http::HeaderMap, axum::Json(body): axum::Json<Value>| {
                let seen = Arc::clone(&seen);
                async move {
                    tokio::time::sleep(delay).await;
                    let key = headers
                        .get("idempotency-key")
                        .and_then(|v| v.to_str().ok())
                        .unwrap_or("")
                        .to_owned();
                    seen.lock().push((key, body.clone()));
                    axum::Json(json!({"echo": body}))
                }
            },
        ),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        axum::serve(listener, app).await.unwrap();
    });
    (format!("http://127.0.0.1:{}/", addr.port()), calls)
}

fn loopback() -> Options {
    Options {
        configure: Box::new(|c| {
            c.connect.outbound_allow = vec!["127.0.0.1/32".into()];
            c.connect.lease_secs = 10;
        }),
        ..Options::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn loops_run_each_item_once_and_resume_without_repeating_finished_items() {
    let (target, calls) = slow_sink(Duration::from_secs(2)).await;
    let server = TestServer::spawn_with(loopback()).await;
    let op = server.sign_up_first_operator().await;
    let t = tenant(&server, &op, "connect-loops").await;

    // Bad loops are refused at their paths.
    let flows = format!("/api/v1/teams/{}/flows", t.id);
    for (s, path) in [
        (
            json!({"over": "input.items", "concurrency": 99,
                "each": {"kind": "transform", "set": {"x": "item"}}}),
            "steps[0].concurrency",
        ),
        (
            json!({"over": "input.items", "each": {"kind": "delay", "seconds": 1}}),
            "steps[0].each.kind",
        ),
        (
            json!({"over": "input.items", "each": {"kind": "transform", "set": {"x": "item +"}}}),
            "steps[0].each.set.x",
        ),
    ] {
        let mut st = json!({"id": "l", "kind": "loop"});
        for (k, v) in s.as_object().unwrap() {
            st[k] = v.clone();
        }
        let r = post(
            &server,
            &flows,
            Some(&t.owner),
            json!({"document": {"name": "f", "trigger": {"kind": "manual"}, "steps": [st]}}),
        )
        .await;
        assert_eq!(r.problem(422)["errors"][0]["path"], path);
    }

    let f = flow(
        &server,
        &t,
        json!({"name": "fan out", "trigger": {"kind": "manual"}, "steps": [
            {"id": "each", "kind": "loop", "over": "input.items", "concurrency": 2,
             "each": {"kind": "http", "method": "POST", "url": target,
                      "body": {"type": "json", "value": "{'item': item, 'index': index}"}}},
            {"id": "sum", "kind": "transform",
             "set": {"n": "steps.each | length", "last": "(steps.each | last).body.echo.item"}}
        ]}),
    )
    .await;
    let items: Vec<String> = (0..12).map(|i| format!("item-{i}")).collect();
    let run = start(&server, &t, &f, json!({"items": items})).await;
    // Stop while the loop is half done: the worker is stopped with
    // iterations in flight, leaving the run to its lease.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while calls.lock().len() < 3 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the loop did not start"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let (dir, tmp) = server.stop_keeping_data().await;
    let before: Vec<String> = calls.lock().iter().map(|(k, _)| k.clone()).collect();
    assert!(before.len() < items.len(), "the loop ended before the stop");
    let server = TestServer::spawn_with(Options {
        data_dir: Some(dir),
        ..loopback()
    })
    .await;
    let done = finished(&server, &t, &run).await;
    assert_eq!(done["status"], "succeeded", "{done}");
    let out = &step(&done, "each")["output"];
    let echoed: Vec<&str> = out
        .as_array()
        .unwrap()
        .iter()
        .map(|o| o["body"]["echo"]["item"].as_str().unwrap())
        .collect();
    assert_eq!(echoed, items.iter().map(String::as_str).collect::<Vec<_>>());
    assert_eq!(step(&done, "sum")["output"]["n"], 12);
    assert_eq!(step(&done, "sum")["output"]["last"], "item-11");
    // Every item was delivered under one key of its own, and only the
    // iterations in flight at the stop (at most two) were sent again, with
    // the same key: the ones recorded as finished were not repeated.
    let all = calls.lock().clone();
    let mut by_key: HashMap<String, Vec<Value>> = HashMap::new();
    for (k, body) in &all {
        assert!(!k.is_empty());
        by_key.entry(k.clone()).or_default().push(body.clone());
    }
    assert_eq!(by_key.len(), 12, "{all:?}");
    assert!(before.len() >= 3);
    assert!(
        all.len() <= 12 + 2,
        "at most the two in-flight items repeat: {all:?}"
    );
    let records: Vec<&str> = done["steps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["step"].as_str().unwrap())
        .collect();
    assert_eq!(records.len(), 14, "{records:?}");
    assert_eq!(records[12..], ["each", "sum"]);
    drop(server);
    drop(tmp);
}
