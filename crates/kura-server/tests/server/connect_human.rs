//! Kura Connect's steps that reach people, through the real server: e-mail
//! through a local SMTP server (Python's standard `smtpd`) under the
//! outbound policy, sent once across a restart; and approvals — the
//! approve path through the API (across a restart), the reject path
//! through a mailed one-time link, the timeout path, forged and replayed
//! links and non-members refused without changing anything, and every
//! decision in the security event log. (OAuth credentials: `connect_oauth`.)

use std::io::BufRead as _;
use std::path::Path;
use std::time::Duration;

use kura_testkit::{Options, TestServer};
use serde_json::{Value, json};

use super::kura_id_api::{call, get, logged_actions, post, tenant};

/// Python's own SMTP server writing every message it receives to `out`;
/// returns it and its port.
fn smtp_sink(out: &Path) -> (std::process::Child, u16) {
    const SINK: &str = r#"
import asyncore, smtpd, sys
class Sink(smtpd.SMTPServer):
    def process_message(self, peer, mailfrom, rcpttos, data, **kw):
        with open(sys.argv[1], "ab") as f:
            f.write(b"MAIL FROM " + mailfrom.encode() + b" TO " + ",".join(rcpttos).encode() + b"\n" + data + b"\n.\n")
s = Sink(("127.0.0.1", 0), None)
print(s.socket.getsockname()[1], flush=True)
asyncore.loop()
"#;
    let mut child = std::process::Command::new("python3")
        .args(["-W", "ignore", "-c", SINK])
        .arg(out)
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("python3 runs (the SMTP sink is its standard library's smtpd)");
    let mut line = String::new();
    std::io::BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let port = line
        .trim()
        .parse()
        .unwrap_or_else(|_| panic!("the SMTP sink did not start: {line:?}"));
    (child, port)
}

/// The messages the sink holds, quoted-printable soft breaks undone.
fn mailbox(path: &Path) -> Vec<String> {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    text.replace("=\r\n", "")
        .replace("=\n", "")
        .split("\n.\n")
        .filter(|m| !m.trim().is_empty())
        .map(str::to_owned)
        .collect()
}

/// A server whose `[connect.smtp]` is the sink; loopback is allow-listed
/// only when `allow` says so.
pub(super) fn options(port: u16, allow: bool) -> Options {
    Options {
        configure: Box::new(move |c| {
            if allow {
                c.connect.outbound_allow = vec!["127.0.0.1/32".into()];
            }
            c.server.public_url = Some("https://kura.example".into());
            c.connect.smtp = Some(kura_config::ConnectSmtp {
                relay: format!("127.0.0.1:{port}"),
                security: "none".into(),
                ca_file: None,
                username: None,
                password_file: None,
                from: "flows@kura.example".into(),
                timeout_secs: 5,
            });
        }),
        ..Options::default()
    }
}

pub(super) async fn create_flow(
    server: &TestServer,
    team: &str,
    owner: &str,
    doc: Value,
) -> String {
    let r = post(
        server,
        &format!("/api/v1/teams/{team}/flows"),
        Some(owner),
        json!({ "document": doc }),
    )
    .await;
    assert_eq!(r.status, 201, "{}", r.text);
    r.json()["flow"]["id"].as_str().unwrap().to_owned()
}

pub(super) async fn start(
    server: &TestServer,
    team: &str,
    owner: &str,
    flow: &str,
    input: Value,
) -> String {
    let r = post(
        server,
        &format!("/api/v1/teams/{team}/flows/{flow}/runs"),
        Some(owner),
        json!({ "input": input }),
    )
    .await;
    assert_eq!(r.status, 202, "{}", r.text);
    r.json()["id"].as_str().unwrap().to_owned()
}

/// Polls a run until `done` says so (or fails after 20 s).
pub(super) async fn wait_for(
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

pub(super) fn over(v: &Value) -> bool {
    ["succeeded", "failed", "cancelled", "dead_letter"]
        .contains(&v["status"].as_str().unwrap_or(""))
}

fn step_ids(run: &Value) -> Vec<String> {
    run["steps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            format!(
                "{}:{}",
                s["step"].as_str().unwrap(),
                s["status"].as_str().unwrap()
            )
        })
        .collect()
}

pub(super) async fn actions(server: &TestServer) -> Vec<String> {
    logged_actions(&server.events)
        .await
        .iter()
        .map(|e| e.action.as_str().to_owned())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn email_steps_reach_an_smtp_server_once_and_obey_the_outbound_policy() {
    let dir = tempfile::tempdir().unwrap();
    let mail = dir.path().join("mail.txt");
    let (mut sink, port) = smtp_sink(&mail);
    let server = TestServer::spawn_with(options(port, true)).await;
    let op = server.sign_up_first_operator().await;
    let t = tenant(&server, &op, "connect-mail").await;

    // Bad e-mail steps are refused with their paths.
    let bad = |step: Value| json!({"document": {"name": "m", "trigger": {"kind": "manual"}, "steps": [step]}});
    for (step, path) in [
        (
            json!({"id": "m", "kind": "email", "to": [], "subject": "s", "body": "b"}),
            "steps[0].to",
        ),
        (
            json!({"id": "m", "kind": "email", "to": ["{{ x"], "subject": "s", "body": "b"}),
            "steps[0].to[0]",
        ),
        (
            json!({"id": "m", "kind": "email", "to": ["a@b.c"], "subject": "s", "body": "b", "credential": "nope"}),
            "steps[0].credential",
        ),
        (
            json!({"id": "m", "kind": "email", "to": ["a@b.c"], "subject": "s"}),
            "steps[0]",
        ),
    ] {
        let r = post(
            &server,
            &format!("/api/v1/teams/{}/flows", t.id),
            Some(&t.owner),
            bad(step),
        )
        .await;
        assert_eq!(r.status, 422, "{}", r.text);
        assert!(r.text.contains(path), "{path}: {}", r.text);
    }

    // Mail, wait (through a restart), mail again: each message goes out
    // once, the first is not sent again when the run resumes.
    let flow = create_flow(
        &server,
        &t.id,
        &t.owner,
        json!({
        "name": "order mail", "trigger": {"kind": "manual"}, "steps": [
            {"id": "first", "kind": "email", "to": ["{{ input.to }}"],
             "subject": "Order {{ input.id }} received", "body": "Total: {{ input.total }} EUR"},
            {"id": "wait", "kind": "delay", "until": "input.at"},
            {"id": "second", "kind": "email", "to": ["{{ input.to }}", "audit@example.org"],
             "subject": "Order {{ input.id }} shipped", "body": "On its way."}
        ]}),
    )
    .await;
    let at = (time::OffsetDateTime::now_utc() + time::Duration::seconds(2))
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap();
    let run = start(
        &server,
        &t.id,
        &t.owner,
        &flow,
        json!({"to": "buyer@example.org", "id": 42, "total": 99, "at": at}),
    )
    .await;
    let waiting = wait_for(&server, &t.id, &t.owner, &run, |v| v["status"] == "waiting").await;
    let sent = &waiting["steps"][0];
    assert_eq!(sent["status"], "succeeded", "{waiting}");
    let message_id = sent["output"]["message_id"].as_str().unwrap().to_owned();
    assert!(sent["idempotency_key"].as_str().is_some(), "{sent}");
    let (data_dir, tmp) = server.stop_keeping_data().await;
    let server = TestServer::spawn_with(Options {
        data_dir: Some(data_dir),
        ..options(port, true)
    })
    .await;
    let done = wait_for(&server, &t.id, &t.owner, &run, over).await;
    assert_eq!(done["status"], "succeeded", "{done}");
    assert_eq!(
        step_ids(&done),
        ["first:succeeded", "wait:succeeded", "second:succeeded"]
    );
    let messages = mailbox(&mail);
    assert_eq!(messages.len(), 2, "{messages:?}");
    assert!(
        messages[0].starts_with("MAIL FROM flows@kura.example TO buyer@example.org\n"),
        "{}",
        messages[0]
    );
    assert!(
        messages[0].contains("Subject: Order 42 received"),
        "{}",
        messages[0]
    );
    assert!(messages[0].contains("Total: 99 EUR"), "{}", messages[0]);
    assert!(
        messages[0].contains(&format!("Message-ID: <{message_id}>")),
        "{}",
        messages[0]
    );
    assert!(
        messages[1].contains("TO buyer@example.org,audit@example.org"),
        "{}",
        messages[1]
    );
    assert!(
        messages[1].contains("Subject: Order 42 shipped"),
        "{}",
        messages[1]
    );
    drop(server);
    drop(tmp);

    // Without the allow-list the loopback relay is refused: the step
    // fails, nothing is sent, and the refusal is a security event.
    let server = TestServer::spawn_with(options(port, false)).await;
    let op = server.sign_up_first_operator().await;
    let t = tenant(&server, &op, "connect-mail-ssrf").await;
    let flow = create_flow(
        &server,
        &t.id,
        &t.owner,
        json!({
        "name": "blocked", "trigger": {"kind": "manual"}, "steps": [
            {"id": "m", "kind": "email", "to": ["x@example.org"], "subject": "s", "body": "b"}
        ]}),
    )
    .await;
    let run = start(&server, &t.id, &t.owner, &flow, json!({})).await;
    let done = wait_for(&server, &t.id, &t.owner, &run, over).await;
    assert_eq!(done["status"], "failed", "{done}");
    assert!(
        done["error"].as_str().unwrap().contains("refused"),
        "{done}"
    );
    assert_eq!(mailbox(&mail).len(), 2, "nothing more was sent");
    assert!(
        actions(&server)
            .await
            .contains(&"connect.outbound.refused".to_owned())
    );

    // An smtp credential is checked on creation and its password never
    // comes back.
    let creds = format!("/api/v1/teams/{}/flow-credentials", t.id);
    let r = post(
        &server,
        &creds,
        Some(&t.owner),
        json!({
            "name": "mailer", "kind": "smtp", "secret": "relay-password-1", "username": "kura"
        }),
    )
    .await;
    assert_eq!(
        r.status, 422,
        "a relay host and sender are needed: {}",
        r.text
    );
    let r = post(&server, &creds, Some(&t.owner), json!({
        "name": "mailer", "kind": "smtp", "secret": "relay-password-1", "username": "kura",
        "host": "smtp.example.org", "port": 587, "security": "starttls", "from": "flows@example.org"
    })).await;
    assert_eq!(r.status, 201, "{}", r.text);
    assert!(!r.text.contains("relay-password-1"));
    let r = post(
        &server,
        &creds,
        Some(&t.owner),
        json!({
            "name": "api", "kind": "bearer", "secret": "token-0123456789", "host": "x.example"
        }),
    )
    .await;
    assert_eq!(r.status, 422, "{}", r.text);
    sink.kill().unwrap();
    sink.wait().unwrap();
}

/// A flow whose approval goes to `yes`, `no` or `late`.
fn approval_flow(approvers: &[&str], timeout: u64) -> Value {
    json!({"name": "ship it?", "trigger": {"kind": "manual"}, "steps": [
        {"id": "ask", "kind": "approval", "approvers": approvers,
         "message": "Ship order {{ input.id }}?", "timeout_seconds": timeout,
         "on_approve": "yes", "on_reject": "no", "on_timeout": "late", "send_links": true},
        {"id": "yes", "kind": "transform", "set": {"r": "'shipped'"}, "next": "end"},
        {"id": "no", "kind": "transform", "set": {"r": "'held'"}, "next": "end"},
        {"id": "late", "kind": "transform", "set": {"r": "'expired'"}, "next": "end"},
        {"id": "end", "kind": "transform", "set": {"done": "true"}}
    ]})
}

/// The one-time link mailed to `to` in the message asking about `order`.
fn link_for(mail: &Path, to: &str, order: &str) -> String {
    let messages = mailbox(mail);
    let m = messages
        .iter()
        .find(|m| {
            m.lines()
                .next()
                .is_some_and(|l| l.ends_with(&format!(" TO {to}")))
                && m.contains(&format!("Ship order {order}?"))
        })
        .unwrap_or_else(|| panic!("no link for {to} about {order}: {messages:?}"));
    let at = m.find("https://kura.example/hooks/approvals/").unwrap();
    m[at + "https://kura.example".len()..]
        .chars()
        .take("/hooks/approvals/".len() + 64)
        .collect()
}

async fn decide(
    server: &TestServer,
    team: &str,
    token: &str,
    approval: &str,
    decision: &str,
) -> super::kura_id_api::Reply {
    post(
        server,
        &format!("/api/v1/teams/{team}/approvals/{approval}/decision"),
        Some(token),
        json!({"decision": decision, "comment": "looked fine"}),
    )
    .await
}

async fn pending(server: &TestServer, team: &str, token: &str) -> Vec<Value> {
    let r = get(
        server,
        &format!("/api/v1/teams/{team}/approvals?status=pending"),
        token,
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text);
    r.json()["approvals"].as_array().unwrap().clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn approvals_take_their_paths_and_refuse_forged_replayed_and_outside_deciders() {
    let dir = tempfile::tempdir().unwrap();
    let mail = dir.path().join("mail.txt");
    let (mut sink, port) = smtp_sink(&mail);
    let server = TestServer::spawn_with(options(port, true)).await;
    let op = server.sign_up_first_operator().await;
    let t = tenant(&server, &op, "appr").await;
    let outsider = tenant(&server, &op, "outsider").await;
    let owner_email = "owner@appr.test";
    // The outsider is named but is no member of the team.
    let flow = create_flow(
        &server,
        &t.id,
        &t.owner,
        approval_flow(&[owner_email, "owner@outsider.test"], 600),
    )
    .await;

    // Bad approval steps are refused with their paths.
    let mut bad = approval_flow(&[owner_email], 0);
    bad["steps"][0]["on_reject"] = json!("nowhere");
    bad["steps"][0]["approvers"] = json!(["not an address"]);
    let r = post(
        &server,
        &format!("/api/v1/teams/{}/flows", t.id),
        Some(&t.owner),
        json!({"document": bad}),
    )
    .await;
    assert_eq!(r.status, 422, "{}", r.text);
    for path in [
        "steps[0].timeout_seconds",
        "steps[0].on_reject",
        "steps[0].approvers[0]",
    ] {
        assert!(r.text.contains(path), "{path}: {}", r.text);
    }

    // Approve through the API, with a restart while the run waits (no
    // worker holds it; its state is in the database).
    let run = start(&server, &t.id, &t.owner, &flow, json!({"id": 1})).await;
    let waiting = wait_for(&server, &t.id, &t.owner, &run, |v| v["status"] == "waiting").await;
    assert_eq!(step_ids(&waiting), ["ask:waiting"]);
    let (data_dir, tmp) = server.stop_keeping_data().await;
    let server = TestServer::spawn_with(Options {
        data_dir: Some(data_dir),
        ..options(port, true)
    })
    .await;
    let open = pending(&server, &t.id, &t.owner).await;
    assert_eq!(open.len(), 1, "{open:?}");
    let approval = open[0]["id"].as_str().unwrap().to_owned();
    assert_eq!(open[0]["message"], "Ship order 1?");
    // The outsider, though named, is not a member: refused, nothing moves.
    let r = decide(&server, &t.id, &outsider.owner, &approval, "approve").await;
    assert_eq!(r.status, 404, "{}", r.text);
    // A member who is not named is refused too.
    let r = post(
        &server,
        &format!("/api/v1/teams/{}/invitations", t.id),
        Some(&t.owner),
        json!({"email": "member@appr.test", "role": "member"}),
    )
    .await;
    assert_eq!(r.status, 201, "{}", r.text);
    let invite = r.json()["token"].as_str().unwrap().to_owned();
    let password = "member passphrase for approvals 4471";
    let r = post(
        &server,
        "/api/v1/invitations/accept",
        None,
        json!({
            "token": invite, "display_name": "Member", "password": password,
        }),
    )
    .await;
    assert_eq!(r.status, 201, "{}", r.text);
    let r = post(
        &server,
        "/api/v1/sessions",
        None,
        json!({"email": "member@appr.test", "password": password}),
    )
    .await;
    let member = r.json()["token"].as_str().unwrap().to_owned();
    let r = decide(&server, &t.id, &member, &approval, "approve").await;
    assert_eq!(r.status, 403, "{}", r.text);
    let r = decide(&server, &t.id, &t.owner, &approval, "maybe").await;
    assert_eq!(r.status, 422, "{}", r.text);
    assert_eq!(pending(&server, &t.id, &t.owner).await.len(), 1);
    let r = decide(&server, &t.id, &t.owner, &approval, "approve").await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.json()["status"], "approved");
    assert_eq!(
        r.json()["decided_by"],
        format!("account:{}", t.owner_account)
    );
    assert_eq!(r.json()["decided_via"], "api");
    let done = wait_for(&server, &t.id, &t.owner, &run, over).await;
    assert_eq!(done["status"], "succeeded", "{done}");
    assert_eq!(
        step_ids(&done),
        [
            "ask:waiting",
            "ask:succeeded",
            "yes:succeeded",
            "end:succeeded"
        ]
    );
    assert_eq!(done["steps"][1]["output"]["decision"], "approved");
    assert_eq!(done["steps"][1]["output"]["comment"], "looked fine");
    // A second decision changes nothing.
    let r = decide(&server, &t.id, &t.owner, &approval, "reject").await;
    assert_eq!(r.status, 409, "{}", r.text);
    let r = get(
        &server,
        &format!("/api/v1/teams/{}/approvals/{approval}", t.id),
        &t.owner,
    )
    .await;
    assert_eq!(r.json()["status"], "approved");

    // Reject through the mailed link.
    let run = start(&server, &t.id, &t.owner, &flow, json!({"id": 2})).await;
    wait_for(&server, &t.id, &t.owner, &run, |v| v["status"] == "waiting").await;
    let link = link_for(&mail, owner_email, "2");
    let outsider_link = link_for(&mail, "owner@outsider.test", "2");
    let forged = format!("/hooks/approvals/{}", "ab".repeat(32));
    let body = json!({"decision": "reject"});
    let r = post(&server, &forged, None, body.clone()).await;
    assert_eq!(r.status, 404, "{}", r.text);
    let r = post(&server, &outsider_link, None, body.clone()).await;
    assert_eq!(r.status, 403, "a non-member's link is refused: {}", r.text);
    let r = call(&server, reqwest::Method::GET, &link, None, None).await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(
        r.json()["approval"]["status"],
        "pending",
        "opening the link decides nothing"
    );
    assert_eq!(r.json()["approver"], owner_email);
    let r = post(&server, &link, None, body.clone()).await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.json()["status"], "rejected");
    assert_eq!(r.json()["decided_via"], "link");
    let done = wait_for(&server, &t.id, &t.owner, &run, over).await;
    assert_eq!(
        step_ids(&done),
        [
            "ask:waiting",
            "ask:succeeded",
            "no:succeeded",
            "end:succeeded"
        ]
    );
    // The link works once.
    let r = post(&server, &link, None, json!({"decision": "approve"})).await;
    assert!(
        r.status == 409 || r.status == 410,
        "{} {}",
        r.status,
        r.text
    );
    let again = wait_for(&server, &t.id, &t.owner, &run, over).await;
    assert_eq!(step_ids(&again), step_ids(&done));

    // Nobody decides: the timeout path.
    let quick = create_flow(&server, &t.id, &t.owner, approval_flow(&[owner_email], 1)).await;
    let run = start(&server, &t.id, &t.owner, &quick, json!({"id": 3})).await;
    let done = wait_for(&server, &t.id, &t.owner, &run, over).await;
    assert_eq!(done["status"], "succeeded", "{done}");
    assert_eq!(
        step_ids(&done),
        [
            "ask:waiting",
            "ask:succeeded",
            "late:succeeded",
            "end:succeeded"
        ]
    );
    assert_eq!(done["steps"][1]["output"]["decision"], "timed_out");
    let link = link_for(&mail, owner_email, "3");
    let r = post(&server, &link, None, json!({"decision": "approve"})).await;
    assert!(
        r.status == 409 || r.status == 410,
        "an expired link is refused: {}",
        r.text
    );

    let logged = actions(&server).await;
    for action in [
        "connect.approval.requested",
        "connect.approval.approved",
        "connect.approval.rejected",
        "connect.approval.timed_out",
        "connect.approval.refused",
    ] {
        assert!(
            logged.contains(&action.to_owned()),
            "{action} in {logged:?}"
        );
    }
    drop(server);
    drop(tmp);
    sink.kill().unwrap();
    sink.wait().unwrap();
}
