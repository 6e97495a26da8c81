//! `/api/v1/incident-channels` over the real server: channels from the
//! configuration file (a webhook and an e-mail relay) and one a responder
//! adds all hear a SEV1 incident, webhooks signed each with its own secret,
//! and every try, failed or not, shows in the incident.

use std::sync::{Arc, Mutex};

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post as route_post;
use kura_crypto::hmac::HmacKey;
use kura_server::kura_events::export::verify_signature;
use kura_testkit::{Options, TestServer};
use reqwest::Method;
use serde_json::json;

use super::kura_id_api::{call, get, logged_actions, post, tenant};

const PAGER_SECRET: &str = "pager-secret-from-a-file-0123456789abcdef";

/// Every request the receiver got: (path, signature header, body).
type Seen = Arc<Mutex<Vec<(String, String, Bytes)>>>;

async fn keep(
    State(seen): State<Seen>,
    Path(name): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> StatusCode {
    let signature = headers
        .get("x-kura-signature")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    seen.lock().unwrap().push((name, signature, body));
    StatusCode::NO_CONTENT
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn responders_manage_channels_and_both_kinds_hear_an_incident_by_severity() {
    let seen: Seen = Arc::default();
    let app = Router::new()
        .route("/{name}", route_post(keep))
        .with_state(Arc::clone(&seen));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let receiver = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });

    let secrets = tempfile::tempdir().unwrap();
    let secret_file = secrets.path().join("pager.secret");
    std::fs::write(&secret_file, PAGER_SECRET).unwrap();
    let pager_url = format!("{receiver}/pager");
    // A configured e-mail channel to a relay that is not there: its tries
    // fail and are retried, beside the webhooks that succeed.
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let server = TestServer::spawn_with(Options {
        configure: Box::new(move |c| {
            let incidents = &mut c.events.incidents;
            incidents.webhook.push(kura_config::IncidentWebhook {
                name: "pager".into(),
                url: pager_url,
                secret_file,
                min_severity: "sev1".into(),
                timeout_secs: 5,
            });
            incidents.email.push(kura_config::IncidentEmail {
                name: "mail".into(),
                relay: closed.to_string(),
                security: "none".into(),
                ca_file: None,
                username: None,
                password_file: None,
                from: "kura@example.org".into(),
                to: vec!["security@example.org".into()],
                min_severity: "sev2".into(),
                timeout_secs: 5,
            });
        }),
        ..Options::default()
    })
    .await;
    let op = server.sign_up_first_operator().await;
    let path = "/api/v1/incident-channels";

    let r = get(&server, path, &op.token).await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(
        r.json()["channels"],
        json!([{
            "name": "pager", "kind": "webhook", "target": format!("{receiver}/pager"),
            "min_severity": "sev1", "origin": "config", "created_by": null, "created_at": null,
        }, {
            "name": "mail", "kind": "email",
            "target": format!("smtp://{closed} → security@example.org"),
            "min_severity": "sev2", "origin": "config", "created_by": null, "created_at": null,
        }])
    );

    // Bad input is refused with the field named, and changes nothing.
    let good = json!({
        "name": "chat", "kind": "webhook", "url": format!("{receiver}/chat"),
        "min_severity": "sev3",
    });
    for (field, value) in [
        ("kind", json!("email")),
        ("min_severity", json!("sev9")),
        ("url", json!("http://10.0.0.1/hook")),
        ("name", json!("Chat Room")),
        ("name", json!("pager")),
        ("name", json!("mail")),
    ] {
        let mut bad = good.clone();
        bad[field] = value.clone();
        let r = post(&server, path, Some(&op.token), bad).await;
        assert!(
            r.status == 422 || r.status == 409,
            "{field}={value}: {} {}",
            r.status,
            r.text
        );
    }
    assert_eq!(
        get(&server, path, &op.token).await.json()["channels"]
            .as_array()
            .unwrap()
            .len(),
        2
    );

    let r = post(&server, path, Some(&op.token), good).await;
    assert_eq!(r.status, 201, "{}", r.text);
    let added = r.json();
    let chat_secret = added["secret"].as_str().unwrap().to_owned();
    assert_eq!(chat_secret.len(), 64);
    assert_eq!(added["channel"]["origin"], "api");
    assert_eq!(
        added["channel"]["created_by"],
        format!("account:{}", op.account_id)
    );
    // The secret is shown once, never listed.
    let listed = get(&server, path, &op.token).await;
    assert!(!listed.text.contains(&chat_secret));
    assert_eq!(listed.json()["channels"].as_array().unwrap().len(), 3);

    // A configured channel is the configuration file's.
    call(
        &server,
        Method::DELETE,
        &format!("{path}/pager"),
        Some(&op.token),
        None,
    )
    .await
    .problem(409);
    // A team owner is not a security responder.
    let team = tenant(&server, &op, "alpha").await;
    get(&server, path, &team.owner).await.problem(403);

    // A SEV1 incident reaches both channels, each signed with its secret.
    let r = post(
        &server,
        "/api/v1/incidents",
        Some(&op.token),
        json!({ "title": "Master key file copied", "severity": "sev1" }),
    )
    .await;
    assert_eq!(r.status, 201, "{}", r.text);
    let id = r.json()["id"].as_str().unwrap().to_owned();
    let report = server.incidents.deliver_notifications().await.unwrap();
    assert_eq!(
        (report.delivered, report.retrying, report.failed),
        (2, 1, 0)
    );
    let mut got: Vec<String> = Vec::new();
    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    for (name, signature, body) in seen.lock().unwrap().iter() {
        let key = match name.as_str() {
            "pager" => HmacKey::new(PAGER_SECRET.as_bytes()),
            _ => HmacKey::new(chat_secret.as_bytes()),
        };
        verify_signature(&key, signature, body, now, 300).unwrap();
        let v: serde_json::Value = serde_json::from_slice(body).unwrap();
        assert_eq!(v["incident"], id.as_str());
        assert_eq!(v["severity"], "sev1");
        got.push(name.clone());
    }
    got.sort();
    assert_eq!(got, ["chat", "pager"]);

    let detail = get(&server, &format!("/api/v1/incidents/{id}"), &op.token)
        .await
        .json();
    for n in detail["notifications"].as_array().unwrap() {
        if n["channel"] == "mail" {
            assert_eq!(n["status"], "pending", "{n}");
            assert_eq!(n["tries"][0]["ok"], false, "{n}");
            assert!(n["next_attempt_at"].is_string(), "{n}");
        } else {
            assert_eq!(n["status"], "delivered", "{n}");
            assert_eq!(n["tries"][0]["ok"], true, "{n}");
            assert_eq!(n["tries"][0]["status"], 204, "{n}");
        }
    }
    let notes: Vec<&str> = detail["timeline"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|t| t["kind"] == "notification")
        .map(|t| t["text"].as_str().unwrap())
        .collect();
    assert_eq!(notes.len(), 3, "{detail}");
    assert!(
        notes
            .iter()
            .any(|t| t.contains("to mail failed (try 1 of 10)")),
        "{notes:?}"
    );

    let r = call(
        &server,
        Method::DELETE,
        &format!("{path}/chat"),
        Some(&op.token),
        None,
    )
    .await;
    assert_eq!(r.status, 204, "{}", r.text);
    call(
        &server,
        Method::DELETE,
        &format!("{path}/chat"),
        Some(&op.token),
        None,
    )
    .await
    .problem(404);

    let by = format!("account:{}", op.account_id);
    let changes: Vec<String> = logged_actions(&server.events)
        .await
        .into_iter()
        .filter(|e| e.action.as_str().starts_with("incident.channel"))
        .map(|e| {
            assert_eq!(e.actor.key(), by);
            e.action.as_str().to_owned()
        })
        .collect();
    assert_eq!(
        changes,
        ["incident.channel.added", "incident.channel.removed"]
    );
}
