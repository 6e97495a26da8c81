//! Webhook runs of flows whose steps only compute (`transform`,
//! `condition`, `respond`, `fail`): they run in the request and are
//! recorded whole in one transaction. Their records must read exactly as
//! the durable engine's do (a re-run from the start goes through the
//! engine and is compared step by step), branches and error branches work,
//! a failing run answers 202 with its status, and a saved new version is
//! what the next call runs (parsed versions are cached by version).

use std::time::Duration;

use kura_testkit::TestServer;
use reqwest::Method;
use serde_json::{Value, json};

use super::kura_id_api::{call, get, post, tenant};

struct Flow {
    team: String,
    owner: String,
    id: String,
    url: String,
}

async fn enabled_flow(server: &TestServer, name: &str, doc: Value) -> Flow {
    let op = server.sign_up_first_operator().await;
    let t = tenant(server, &op, name).await;
    let r = post(
        server,
        &format!("/api/v1/teams/{}/flows", t.id),
        Some(&t.owner),
        json!({ "document": doc }),
    )
    .await;
    assert_eq!(r.status, 201, "{}", r.text);
    let created = r.json();
    let id = created["flow"]["id"].as_str().unwrap().to_owned();
    let r = post(
        server,
        &format!("/api/v1/teams/{}/flows/{id}/enable", t.id),
        Some(&t.owner),
        json!({}),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text);
    Flow {
        team: t.id,
        owner: t.owner,
        id,
        url: created["flow"]["webhook_url"].as_str().unwrap().to_owned(),
    }
}

/// Calls the webhook: (status, body).
async fn call_hook(server: &TestServer, url: &str, body: Value) -> (u16, Value) {
    let resp = server
        .client
        .post(server.url(url))
        .json(&body)
        .send()
        .await
        .unwrap();
    let status = resp.status().as_u16();
    (status, resp.json().await.unwrap())
}

/// The flow's runs, newest first.
async fn runs(server: &TestServer, f: &Flow) -> Vec<Value> {
    let r = get(
        server,
        &format!("/api/v1/teams/{}/runs?flow={}", f.team, f.id),
        &f.owner,
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text);
    r.json()["runs"].as_array().unwrap().clone()
}

async fn run(server: &TestServer, f: &Flow, id: &str) -> Value {
    let r = get(
        server,
        &format!("/api/v1/teams/{}/runs/{id}", f.team),
        &f.owner,
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text);
    r.json()
}

/// What a step record says, without its times.
fn shape(steps: &Value) -> Vec<Value> {
    steps
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            json!([
                s["seq"],
                s["step"],
                s["status"],
                s["input"],
                s["output"],
                s["error"],
                s["attempts"],
                s["idempotency_key"]
            ])
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn computing_flows_run_in_the_request_and_record_as_the_engine_does() {
    let server = TestServer::spawn().await;
    let f = enabled_flow(
        &server,
        "connect-inline",
        json!({
            "name": "prices",
            "trigger": {"kind": "webhook"},
            "steps": [
                {"id": "calc", "kind": "transform", "set": {"total": "input.qty * input.price"}},
                {"id": "check", "kind": "condition",
                 "branches": [{"when": "steps.calc.total > 100", "goto": "discount"}],
                 "otherwise": "reply"},
                {"id": "discount", "kind": "transform", "set": {"total": "steps.calc.total - 10"}},
                {"id": "reply", "kind": "respond", "status": 201,
                 "body": "{'total': steps.calc.total, 'discounted': steps.discount.total}"}
            ]
        }),
    )
    .await;

    let (status, body) = call_hook(&server, &f.url, json!({"qty": 3, "price": 7})).await;
    assert_eq!(
        (status, body),
        (201, json!({"total": 21, "discounted": null}))
    );
    let (status, body) = call_hook(&server, &f.url, json!({"qty": 30, "price": 7})).await;
    assert_eq!(
        (status, body),
        (201, json!({"total": 210, "discounted": 200}))
    );

    let all = runs(&server, &f).await;
    assert_eq!(all.len(), 2, "{all:?}");
    for r in &all {
        assert_eq!(r["status"], "succeeded", "{r}");
        assert_eq!(r["trigger"], "webhook");
        assert_eq!(r["next_step"], Value::Null);
        assert!(r["finished_at"].is_string(), "{r}");
    }
    let big = all.iter().find(|r| r["input"]["qty"] == 30).unwrap();
    let inline = run(&server, &f, big["id"].as_str().unwrap()).await;
    assert_eq!(inline["steps_done"], 4);
    assert_eq!(
        shape(&inline["steps"]),
        [
            json!([1, "calc", "succeeded", {"fields": ["total"]}, {"total": 210}, null, 1, null]),
            json!([2, "check", "succeeded", null, {"branch": "discount"}, null, 1, null]),
            json!([3, "discount", "succeeded", {"fields": ["total"]}, {"total": 200}, null, 1, null]),
            json!([4, "reply", "succeeded", null,
                   {"status": 201, "body": {"total": 210, "discounted": 200}}, null, 1, null]),
        ]
    );

    // The same input through the durable engine (a re-run is queued for
    // the workers) leaves the same records.
    let r = post(
        &server,
        &format!(
            "/api/v1/teams/{}/runs/{}/rerun",
            f.team,
            big["id"].as_str().unwrap()
        ),
        Some(&f.owner),
        json!({"from": "start"}),
    )
    .await;
    assert_eq!(r.status, 202, "{}", r.text);
    let again = r.json()["id"].as_str().unwrap().to_owned();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    let engine = loop {
        let v = run(&server, &f, &again).await;
        if v["status"] == "succeeded" {
            break v;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the re-run did not end: {v}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(shape(&engine["steps"]), shape(&inline["steps"]));
    assert_eq!(engine["steps_done"], inline["steps_done"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn error_branches_failures_and_new_versions_of_computing_flows() {
    let server = TestServer::spawn().await;
    let guarded = |on_error: Value| {
        let mut guard = json!({"id": "guard", "kind": "fail", "message": "no {{ input.item }}"});
        if !on_error.is_null() {
            guard["on_error"] = on_error;
        }
        json!({
            "name": "guarded",
            "trigger": {"kind": "webhook"},
            "steps": [
                guard,
                {"id": "ok", "kind": "respond", "body": "{'ok': true}"},
                {"id": "sorry", "kind": "respond", "status": 409, "body": "{'why': steps.guard.error}"}
            ]
        })
    };
    let f = enabled_flow(
        &server,
        "connect-inline-errors",
        guarded(json!({"goto": "sorry"})),
    )
    .await;

    // The failing step sends the run to its error branch.
    let (status, body) = call_hook(&server, &f.url, json!({"item": "widget"})).await;
    assert_eq!((status, body), (409, json!({"why": "no widget"})));
    let first = runs(&server, &f).await;
    let one = run(&server, &f, first[0]["id"].as_str().unwrap()).await;
    assert_eq!(one["status"], "succeeded");
    assert_eq!(
        shape(&one["steps"]),
        [
            json!([1, "guard", "failed", null, null, "no widget", 1, null]),
            json!([2, "sorry", "succeeded", null,
                   {"status": 409, "body": {"why": "no widget"}}, null, 1, null]),
        ]
    );

    // A new version without the error branch: the next call runs it (the
    // cached version 1 is not used), and the run fails.
    let r = call(
        &server,
        Method::PUT,
        &format!("/api/v1/teams/{}/flows/{}", f.team, f.id),
        Some(&f.owner),
        Some(json!({"document": guarded(Value::Null)})),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text);
    let (status, body) = call_hook(&server, &f.url, json!({"item": "gadget"})).await;
    assert_eq!(status, 202, "{body}");
    assert_eq!(body["status"], "failed");
    let failed = run(&server, &f, body["run"].as_str().unwrap()).await;
    assert_eq!(failed["version"], 2);
    assert_eq!(failed["error"], "step `guard` failed: no gadget");
    assert_eq!(failed["steps_done"], 1);
    assert_eq!(
        shape(&failed["steps"]),
        [json!([
            1,
            "guard",
            "failed",
            null,
            null,
            "no gadget",
            1,
            null
        ])]
    );
}
