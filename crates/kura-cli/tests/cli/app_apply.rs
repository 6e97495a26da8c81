//! `kura app apply` against a running server: a TOML definition creates the
//! schema, applying it again changes nothing, a change that would discard
//! values is refused with the server's reason (and changes nothing) unless
//! `--allow-data-loss`, and a malformed file is refused before sending.

use std::process::Command;

use kura_testkit::TestServer;
use serde_json::{Value, json};

use super::{KURA, stderr};

const V1: &str = r#"
[[tables]]
name = "contacts"
fields = [
  { name = "id", type = "number", auto_enter = { serial = { next = 1, increment = 1 } } },
  { name = "name", type = "text", required = true },
  { name = "notes", type = "text" },
]

[[layouts]]
name = "contacts"
table = "contacts"
"#;

const V2_DROPS_NOTES: &str = r#"
[[tables]]
name = "contacts"
fields = [
  { name = "id", type = "number", auto_enter = { serial = { next = 1, increment = 1 } } },
  { name = "name", type = "text", required = true },
]

[[layouts]]
name = "contacts"
table = "contacts"
"#;

async fn api(
    server: &TestServer,
    method: reqwest::Method,
    path: &str,
    token: &str,
    body: Option<Value>,
) -> Value {
    let mut req = server
        .client
        .request(method, server.url(path))
        .bearer_auth(token);
    if let Some(b) = body {
        req = req.json(&b);
    }
    let resp = req.send().await.unwrap();
    assert!(resp.status().is_success(), "{path}: {}", resp.status());
    resp.json().await.unwrap_or(Value::Null)
}

fn apply(
    server: &TestServer,
    token: &str,
    team: &str,
    app: &str,
    ca: &std::path::Path,
    file: &std::path::Path,
    extra: &[&str],
) -> std::process::Output {
    Command::new(KURA)
        .env_remove("KURA_TOKEN")
        .env_remove("KURA_URL")
        .args(["app", "apply"])
        .arg(file)
        .args([
            "--url",
            server.url("").trim_end_matches('/'),
            "--team",
            team,
            "--app",
            app,
        ])
        .arg("--ca")
        .arg(ca)
        .env("KURA_TOKEN", token)
        .args(extra)
        .output()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn app_apply_creates_migrates_and_refuses_data_loss() {
    let server = TestServer::spawn().await;
    let op = server.sign_up_first_operator().await;
    let t = op.token.as_str();
    let post = reqwest::Method::POST;
    let team = api(
        &server,
        post.clone(),
        "/api/v1/teams",
        t,
        Some(json!({ "name": "Acme", "owner_email": "owner@acme.test" })),
    )
    .await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let host = api(
        &server,
        post.clone(),
        &format!("/api/v1/teams/{team}/hosts"),
        t,
        Some(json!({ "name": "acme" })),
    )
    .await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let app = api(
        &server,
        post.clone(),
        &format!("/api/v1/teams/{team}/hosts/{host}/apps"),
        t,
        Some(json!({ "name": "Contacts" })),
    )
    .await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let dir = tempfile::tempdir().unwrap();
    let ca = dir.path().join("ca.pem");
    std::fs::write(&ca, server.certificate_pem()).unwrap();
    let v1 = dir.path().join("app.toml");
    std::fs::write(&v1, V1).unwrap();

    let out = apply(&server, t, &team, &app, &ca, &v1, &[]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("create table `contacts`"),
        "{}",
        stderr(&out)
    );
    let again = apply(&server, t, &team, &app, &ca, &v1, &[]);
    assert!(again.status.success(), "{}", stderr(&again));
    assert!(
        stderr(&again).contains("already matches"),
        "{}",
        stderr(&again)
    );

    // A record with a note, then a definition that drops `notes`.
    let schema_path = format!("/api/v1/teams/{team}/apps/{app}/schema");
    let before = api(&server, reqwest::Method::GET, &schema_path, t, None).await["version"].clone();
    let acc = json!({ "name": "admin", "password": "cli admin password 77", "privilege_set": "[Full Access]" });
    api(
        &server,
        post.clone(),
        &format!("/api/v1/teams/{team}/apps/{app}/accounts"),
        t,
        Some(acc),
    )
    .await;
    let login = server
        .client
        .post(server.url("/hosts/acme/fmi/data/vLatest/databases/Contacts/sessions"))
        .basic_auth("admin", Some("cli admin password 77"))
        .send()
        .await
        .unwrap();
    let fm_token = login.headers()["x-fm-data-access-token"]
        .to_str()
        .unwrap()
        .to_owned();
    let created: Value = server
        .client
        .post(
            server.url("/hosts/acme/fmi/data/vLatest/databases/Contacts/layouts/contacts/records"),
        )
        .bearer_auth(&fm_token)
        .json(&json!({ "fieldData": { "name": "Ada", "notes": "keep me" } }))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(created["messages"][0]["code"], "0", "{created}");
    let v2 = dir.path().join("v2.toml");
    std::fs::write(&v2, V2_DROPS_NOTES).unwrap();
    let refused = apply(&server, t, &team, &app, &ca, &v2, &[]);
    assert!(!refused.status.success());
    assert!(
        stderr(&refused).contains("contacts::notes"),
        "{}",
        stderr(&refused)
    );
    assert_eq!(
        api(&server, reqwest::Method::GET, &schema_path, t, None).await["version"],
        before
    );
    let forced = apply(&server, t, &team, &app, &ca, &v2, &["--allow-data-loss"]);
    assert!(forced.status.success(), "{}", stderr(&forced));
    assert!(
        stderr(&forced).contains("drop field `contacts::notes`"),
        "{}",
        stderr(&forced)
    );

    // A malformed file never reaches the server.
    let bad = dir.path().join("bad.toml");
    std::fs::write(
        &bad,
        "[[tables]]\nname = \"t\"\nfields = [ { name = \"a\", type = \"blob\" } ]\n",
    )
    .unwrap();
    let out = apply(&server, t, &team, &app, &ca, &bad, &[]);
    assert!(!out.status.success());
    assert!(stderr(&out).contains("bad.toml"), "{}", stderr(&out));
}
