//! Kura Connect in the console over HTTP: a team's flows (create from JSON
//! or YAML with each problem shown beside the field, new versions, enable,
//! disable, delete after typing the name), manual runs, the runs list with
//! its filters and pages, the run page and its cancel and re-run buttons —
//! each checked against what the API then reports, with forged posts,
//! refused documents and other teams' flows changing nothing.

use std::time::Duration;

use serde_json::{Value, json};

use super::console_pages::Console;
use super::console_records::member;
use super::kura_id_api::{get, post, tenant};

/// The flows the API lists for the team.
async fn api_flows(c: &Console, team: &str, token: &str) -> Vec<Value> {
    let r = get(&c.server, &format!("/api/v1/teams/{team}/flows"), token).await;
    assert_eq!(r.status, 200, "{}", r.text);
    r.json()["flows"].as_array().unwrap().clone()
}

/// Polls a run through the API until it is over.
async fn finished(c: &Console, team: &str, token: &str, run: &str) -> Value {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let r = get(
            &c.server,
            &format!("/api/v1/teams/{team}/runs/{run}"),
            token,
        )
        .await;
        assert_eq!(r.status, 200, "{}", r.text);
        let v = r.json();
        if ["succeeded", "failed", "cancelled", "dead_letter"]
            .contains(&v["status"].as_str().unwrap_or(""))
        {
            return v;
        }
        assert!(tokio::time::Instant::now() < deadline, "run stuck: {v}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A new account that joined `team` with `role`; returns its session.
async fn joined(c: &Console, team: &str, owner: &str, email: &str, role: &str) -> String {
    let r = post(
        &c.server,
        &format!("/api/v1/teams/{team}/invitations"),
        Some(owner),
        json!({ "email": email, "role": role }),
    )
    .await;
    assert_eq!(r.status, 201, "{}", r.text);
    let token = r.json()["token"].as_str().unwrap().to_owned();
    let password = "a long auditor passphrase 9931";
    let r = post(
        &c.server,
        "/api/v1/invitations/accept",
        None,
        json!({ "token": token, "display_name": email, "password": password }),
    )
    .await;
    assert_eq!(r.status, 201, "{}", r.text);
    let r = post(
        &c.server,
        "/api/v1/sessions",
        None,
        json!({ "email": email, "password": password }),
    )
    .await;
    assert_eq!(r.status, 201, "{}", r.text);
    r.json()["token"].as_str().unwrap().to_owned()
}

/// The id at the end of a redirect to `…/runs/{id}?ok=…`.
fn run_of(location: Option<&str>) -> String {
    let l = location.expect("a redirect");
    let tail = l.rsplit("/runs/").next().unwrap();
    tail.split('?').next().unwrap().to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn flows_are_created_versioned_toggled_and_deleted_in_the_console() {
    let c = Console::boot().await;
    let t = tenant(&c.server, &c.op, "flowco").await;
    let owner = t.owner.as_str();
    let list = format!("/console/teams/{}/flows", t.id);
    let page = c.get(owner, &list).await;
    assert_eq!(page.status, 200, "{}", page.body);
    assert!(page.body.contains("id=\"no-flows\""), "the empty state");
    let csrf = page.csrf();
    let hook = json!({"name": "orders", "trigger": {"kind": "webhook"},
        "steps": [{"id": "t", "kind": "transform", "set": {"x": "input.a"}}]})
    .to_string();

    // A post without the form's token is refused and creates nothing.
    let r = c
        .post(owner, &list, &[("format", "json"), ("document", &hook)])
        .await;
    assert_eq!(r.status, 403, "{}", r.body);
    assert!(api_flows(&c, &t.id, owner).await.is_empty());

    // Text that does not parse, and a document with a bad step: each
    // refused with the path beside the field, the text kept, nothing made.
    let r = c
        .post(
            owner,
            &list,
            &[("csrf", &csrf), ("format", "json"), ("document", "{ nope")],
        )
        .await;
    assert_eq!(r.status, 422, "{}", r.body);
    assert!(r.has_error("f-document") && r.body.contains("{ nope"));
    let bad = json!({"name": "orders", "trigger": {"kind": "webhook"},
        "steps": [{"id": "t", "kind": "transform", "set": {"x": "input.a +"}}]})
    .to_string();
    let r = c
        .post(
            owner,
            &list,
            &[("csrf", &csrf), ("format", "json"), ("document", &bad)],
        )
        .await;
    assert_eq!(r.status, 422, "{}", r.body);
    assert!(r.has_error("f-document"), "{}", r.body);
    assert!(r.body.contains("<code>steps[0].set.x</code>"), "{}", r.body);
    assert!(api_flows(&c, &t.id, owner).await.is_empty());

    // A good one: created disabled, the webhook URL and secret shown.
    let r = c
        .post(
            owner,
            &list,
            &[("csrf", &csrf), ("format", "json"), ("document", &hook)],
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.body);
    let flows = api_flows(&c, &t.id, owner).await;
    assert_eq!(flows.len(), 1);
    let flow = flows[0]["id"].as_str().unwrap().to_owned();
    assert_eq!(flows[0]["enabled"], false);
    let hook_url = flows[0]["webhook_url"].as_str().unwrap();
    assert!(r.body.contains(hook_url), "webhook URL shown");
    assert!(r.body.contains("id=\"webhook-secret\""));
    let secret = r
        .body
        .split("<code class=\"secret\">")
        .nth(1)
        .and_then(|s| s.split('<').next())
        .unwrap()
        .to_owned();
    assert_eq!(secret.len(), 64, "a 32-byte hex key: {secret}");
    // It is shown once: neither the flow page nor the list has it later.
    let fpath = format!("{list}/{flow}");
    let page = c.get(owner, &fpath).await;
    assert_eq!(page.status, 200);
    assert!(!page.body.contains(&secret) && page.body.contains(hook_url));
    let page = c.get(owner, &list).await;
    assert!(page.body.contains("orders") && page.body.contains("webhook"));
    assert!(page.body.contains("never"), "no run yet");

    // A bad YAML save changes nothing; a good one is version 2.
    let save = format!("{fpath}/versions");
    let r = c
        .post(
            owner,
            &save,
            &[("csrf", &csrf), ("format", "yaml"), ("document", "name: [")],
        )
        .await;
    assert_eq!(r.status, 422, "{}", r.body);
    assert!(r.has_error("f-document") && r.body.contains("name: ["));
    let yaml = "name: orders v2\ntrigger: {kind: manual}\nsteps:\n  - id: t\n    kind: transform\n    set: {x: \"1\"}\n";
    let r = c
        .post(
            owner,
            &save,
            &[("csrf", &csrf), ("format", "yaml"), ("document", yaml)],
        )
        .await;
    assert_eq!(r.status, 303, "{}", r.body);
    let api = get(
        &c.server,
        &format!("/api/v1/teams/{}/flows/{flow}", t.id),
        owner,
    )
    .await;
    assert_eq!(api.json()["version"], 2);
    assert_eq!(api.json()["name"], "orders v2");
    let page = c.get(owner, &fpath).await;
    assert!(page.body.contains("data-version=\"1\"") && page.body.contains("data-version=\"2\""));
    assert!(
        page.body.contains("id=\"manual-run\""),
        "a manual trigger now"
    );

    // Enable, then disable, as the API then reports.
    let r = c
        .post(owner, &format!("{fpath}/enable"), &[("csrf", &csrf)])
        .await;
    assert_eq!(r.status, 303, "{}", r.body);
    assert_eq!(api_flows(&c, &t.id, owner).await[0]["enabled"], true);
    let r = c
        .post(owner, &format!("{fpath}/disable"), &[("csrf", &csrf)])
        .await;
    assert_eq!(r.status, 303);
    assert_eq!(api_flows(&c, &t.id, owner).await[0]["enabled"], false);

    // Delete needs the name typed exactly.
    let del = format!("{fpath}/delete");
    let r = c
        .post(owner, &del, &[("csrf", &csrf), ("confirm", "orders")])
        .await;
    assert_eq!(r.status, 422, "{}", r.body);
    assert!(r.has_error("f-confirm"));
    assert_eq!(api_flows(&c, &t.id, owner).await.len(), 1);
    let r = c.post(owner, &del, &[("confirm", "orders v2")]).await;
    assert_eq!(r.status, 403, "no token, no delete");
    assert_eq!(api_flows(&c, &t.id, owner).await.len(), 1);
    let r = c
        .post(owner, &del, &[("csrf", &csrf), ("confirm", "orders v2")])
        .await;
    assert_eq!(r.status, 303, "{}", r.body);
    assert!(api_flows(&c, &t.id, owner).await.is_empty());
    assert_eq!(c.get(owner, &fpath).await.status, 404);

    let actions = c.actions().await;
    for a in [
        "connect.flow.created",
        "connect.flow.saved",
        "connect.flow.enabled",
        "connect.flow.disabled",
        "connect.flow.deleted",
    ] {
        assert!(actions.iter().any(|x| x == a), "{a} in {actions:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn runs_are_started_listed_filtered_paged_cancelled_and_rerun() {
    let c = Console::boot().await;
    let t = tenant(&c.server, &c.op, "runco").await;
    let owner = t.owner.as_str();
    let doc = json!({"name": "half", "trigger": {"kind": "manual"}, "steps": [
        {"id": "a", "kind": "transform", "set": {"n": "input.n"}},
        {"id": "b", "kind": "fail", "message": "stop here"}]});
    let r = post(
        &c.server,
        &format!("/api/v1/teams/{}/flows", t.id),
        Some(owner),
        json!({ "document": doc }),
    )
    .await;
    assert_eq!(r.status, 201, "{}", r.text);
    let flow = r.json()["flow"]["id"].as_str().unwrap().to_owned();
    let fpath = format!("/console/teams/{}/flows/{flow}", t.id);
    let page = c.get(owner, &fpath).await;
    let csrf = page.csrf();
    let runs_api = format!("/api/v1/teams/{}/runs?flow={flow}", t.id);

    // Input that is not JSON starts nothing.
    let start = format!("{fpath}/runs");
    let r = c
        .post(owner, &start, &[("csrf", &csrf), ("input", "{n: 1")])
        .await;
    assert_eq!(r.status, 422, "{}", r.body);
    assert!(r.has_error("f-input") && r.body.contains("{n: 1"));
    let none = get(&c.server, &runs_api, owner).await.json();
    assert_eq!(none["runs"].as_array().unwrap().len(), 0);
    let r = c.post(owner, &start, &[("input", "{\"n\": 1}")]).await;
    assert_eq!(r.status, 403, "no token, no run");

    // A run: the second step fails; the page shows each step.
    let r = c
        .post(owner, &start, &[("csrf", &csrf), ("input", "{\"n\": 41}")])
        .await;
    assert_eq!(r.status, 303, "{}", r.body);
    let run = run_of(r.location.as_deref());
    let v = finished(&c, &t.id, owner, &run).await;
    assert_eq!(v["status"], "failed", "{v}");
    let rpath = format!("/console/teams/{}/runs/{run}", t.id);
    let page = c.get(owner, &rpath).await;
    assert_eq!(page.status, 200, "{}", page.body);
    assert!(
        page.body
            .contains("data-step=\"a\" data-status=\"succeeded\"")
    );
    assert!(page.body.contains("data-step=\"b\" data-status=\"failed\""));
    assert!(page.body.contains("stop here") && page.body.contains("41"));
    assert!(page.body.contains("Re-run from the failed step"));

    // Cancelling a finished run is refused and changes nothing.
    let r = c
        .post(owner, &format!("{rpath}/cancel"), &[("csrf", &csrf)])
        .await;
    assert_eq!(r.status, 409, "{}", r.body);

    // Re-run from the failed step: a new run that starts at `b`.
    let r = c
        .post(
            owner,
            &format!("{rpath}/rerun"),
            &[("csrf", &csrf), ("from", "failed_step")],
        )
        .await;
    assert_eq!(r.status, 303, "{}", r.body);
    let again = run_of(r.location.as_deref());
    assert_ne!(again, run);
    let v = finished(&c, &t.id, owner, &again).await;
    assert_eq!(v["trigger"], "rerun");
    let steps: Vec<&str> = v["steps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["step"].as_str().unwrap())
        .collect();
    assert_eq!(steps, ["b"], "{v}");
    let r = c
        .post(
            owner,
            &format!("{rpath}/rerun"),
            &[("csrf", &csrf), ("from", "start")],
        )
        .await;
    assert_eq!(r.status, 303, "{}", r.body);
    finished(&c, &t.id, owner, &run_of(r.location.as_deref())).await;

    // 27 more runs through the API: the list pages 25 at a time (the
    // clock stands still, so the runs share one instant), with filters.
    for _ in 0..27 {
        let r = post(
            &c.server,
            &format!("/api/v1/teams/{}/flows/{flow}/runs", t.id),
            Some(owner),
            json!({"input": {"n": 1}}),
        )
        .await;
        assert_eq!(r.status, 202, "{}", r.text);
    }
    let list = format!("{fpath}/runs");
    let first = c.get(owner, &list).await;
    assert_eq!(first.status, 200, "{}", first.body);
    let prefix = format!("/console/teams/{}/runs/", t.id);
    let page1 = first.ids_after(&prefix);
    assert_eq!(page1.len(), 25);
    let older = first
        .body
        .split("id=\"older\" href=\"")
        .nth(1)
        .and_then(|s| s.split('"').next())
        .expect("an older page")
        .replace("&amp;", "&");
    let second = c.get(owner, &older).await;
    assert_eq!(second.status, 200, "{}", second.body);
    let page2 = second.ids_after(&prefix);
    assert_eq!(page2.len(), 5, "30 runs in all");
    assert!(page2.iter().all(|id| !page1.contains(id)), "no run twice");
    assert!(!second.body.contains("id=\"older\""));

    let succeeded = c.get(owner, &format!("{list}?status=succeeded")).await;
    assert!(succeeded.body.contains("id=\"no-runs\""), "every run fails");
    let failed = c
        .get(owner, &format!("{list}?status=failed&window=1h"))
        .await;
    assert_eq!(failed.status, 200, "{}", failed.body);
    assert_eq!(
        failed.ids_after(&prefix).len(),
        25,
        "a full page of failures"
    );
    assert!(
        failed
            .body
            .contains("status=failed&amp;window=1h&amp;before="),
        "paging keeps the filters"
    );
    assert_eq!(
        c.get(owner, &format!("{list}?status=bogus")).await.status,
        400
    );
    assert_eq!(c.get(owner, &format!("{list}?window=2y")).await.status, 400);

    // The flow page counts them.
    let page = c.get(owner, &fpath).await;
    assert!(page.body.contains("id=\"m-runs\">"), "{}", page.body);
    assert!(page.body.contains("id=\"m-p50\""), "latency shown");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_waiting_run_is_cancelled_and_other_teams_see_nothing() {
    let c = Console::boot().await;
    let a = tenant(&c.server, &c.op, "flows-a").await;
    let b = tenant(&c.server, &c.op, "flows-b").await;
    let doc = json!({"name": "slow", "trigger": {"kind": "manual"},
        "steps": [{"id": "d", "kind": "delay", "seconds": 3600}]});
    let r = post(
        &c.server,
        &format!("/api/v1/teams/{}/flows", b.id),
        Some(&b.owner),
        json!({ "document": doc }),
    )
    .await;
    assert_eq!(r.status, 201, "{}", r.text);
    let flow = r.json()["flow"]["id"].as_str().unwrap().to_owned();
    let r = post(
        &c.server,
        &format!("/api/v1/teams/{}/flows/{flow}/runs", b.id),
        Some(&b.owner),
        json!({}),
    )
    .await;
    let run = r.json()["id"].as_str().unwrap().to_owned();

    // Team A's owner names B's flow and run under A: not found, and the
    // posts change nothing.
    let csrf = c
        .get(&a.owner, &format!("/console/teams/{}/flows", a.id))
        .await
        .csrf();
    for path in [
        format!("/console/teams/{}/flows/{flow}", a.id),
        format!("/console/teams/{}/flows/{flow}/runs", a.id),
        format!("/console/teams/{}/runs/{run}", a.id),
    ] {
        assert_eq!(c.get(&a.owner, &path).await.status, 404, "{path}");
    }
    let r = c
        .post(
            &a.owner,
            &format!("/console/teams/{}/runs/{run}/cancel", a.id),
            &[("csrf", &csrf)],
        )
        .await;
    assert_eq!(r.status, 404);
    let r = c
        .post(
            &a.owner,
            &format!("/console/teams/{}/flows/{flow}/delete", a.id),
            &[("csrf", &csrf), ("confirm", "slow")],
        )
        .await;
    assert_eq!(r.status, 404);
    // Nor under B's own path: A holds no role in B.
    let r = c
        .get(&a.owner, &format!("/console/teams/{}/flows/{flow}", b.id))
        .await;
    assert!(r.status == 403 || r.status == 404, "{}", r.status);
    assert_eq!(
        get(
            &c.server,
            &format!("/api/v1/teams/{}/flows", b.id),
            &b.owner
        )
        .await
        .json()["flows"]
            .as_array()
            .unwrap()
            .len(),
        1
    );

    // A member of B (members may run flows) sees the run and cancels it.
    // An auditor of B holds no flow role: refused, and nothing is made.
    let auditor = joined(&c, &b.id, &b.owner, "aud@flows-b.test", "auditor").await;
    let list = format!("/console/teams/{}/flows", b.id);
    let r = c.get(&auditor, &list).await;
    assert_eq!(r.status, 403);
    assert!(r.body.contains("You are not allowed"), "{}", r.body);
    let home = c.get(&auditor, "/console/").await;
    let r = c
        .post(
            &auditor,
            &list,
            &[
                ("csrf", &home.csrf()),
                ("format", "json"),
                ("document", &doc.to_string()),
            ],
        )
        .await;
    assert_eq!(r.status, 403, "{}", r.body);
    assert_eq!(api_flows(&c, &b.id, &b.owner).await.len(), 1);

    let m = member(&c, &b.id, &b.owner, "m@flows-b.test").await;
    let rpath = format!("/console/teams/{}/runs/{run}", b.id);
    let page = c.get(&m, &rpath).await;
    assert_eq!(page.status, 200, "{}", page.body);
    assert!(page.body.contains("Cancel run"));
    let r = c
        .post(&m, &format!("{rpath}/cancel"), &[("csrf", &page.csrf())])
        .await;
    assert_eq!(r.status, 303, "{}", r.body);
    let v = get(&c.server, &format!("/api/v1/teams/{}/runs/{run}", b.id), &m).await;
    assert_eq!(v.json()["status"], "cancelled");
    assert!(
        c.actions()
            .await
            .iter()
            .any(|x| x == "connect.run.cancelled")
    );
}
