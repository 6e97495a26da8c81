//! `kura app import` against a running server: a CSV file is streamed and
//! imported, a file with a bad row is refused with its line and field and
//! imports nothing (not even the good rows before it), and a missing file
//! fails before anything is sent.

use std::process::Command;

use kura_testkit::TestServer;
use serde_json::{Value, json};

use super::{KURA, stderr};

async fn api(server: &TestServer, path: &str, token: &str, body: Value) -> Value {
    let resp = server
        .client
        .post(server.url(path))
        .bearer_auth(token)
        .json(&body)
        .send()
        .await
        .unwrap();
    assert!(resp.status().is_success(), "{path}: {}", resp.status());
    resp.json().await.unwrap()
}

fn import(
    server: &TestServer,
    token: &str,
    ids: (&str, &str),
    ca: &std::path::Path,
    file: &std::path::Path,
) -> std::process::Output {
    Command::new(KURA)
        .env_remove("KURA_URL")
        .env("KURA_TOKEN", token)
        .args(["app", "import"])
        .arg(file)
        .args([
            "--table",
            "people",
            "--url",
            server.url("").trim_end_matches('/'),
            "--team",
            ids.0,
            "--app",
            ids.1,
        ])
        .arg("--ca")
        .arg(ca)
        .output()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn app_import_streams_a_csv_and_is_all_or_nothing() {
    let server = TestServer::spawn().await;
    let op = server.sign_up_first_operator().await;
    let t = op.token.as_str();
    let team = api(
        &server,
        "/api/v1/teams",
        t,
        json!({ "name": "Acme", "owner_email": "owner@acme.test" }),
    )
    .await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let host = api(
        &server,
        &format!("/api/v1/teams/{team}/hosts"),
        t,
        json!({ "name": "acme" }),
    )
    .await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let definition = json!({
        "tables": [{ "name": "people", "fields": [
            { "name": "name", "type": "text", "required": true },
            { "name": "email", "type": "text", "unique": true },
            { "name": "age", "type": "number" }
        ]}],
        "layouts": [{ "name": "people", "table": "people" }]
    });
    let app = api(
        &server,
        &format!("/api/v1/teams/{team}/hosts/{host}/apps"),
        t,
        json!({ "name": "People", "definition": definition }),
    )
    .await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let dir = tempfile::tempdir().unwrap();
    let ca = dir.path().join("ca.pem");
    std::fs::write(&ca, server.certificate_pem()).unwrap();
    let ids = (team.as_str(), app.as_str());

    // Row 2 is fine, row 3 repeats its email: nothing is imported.
    let bad = dir.path().join("bad.csv");
    std::fs::write(
        &bad,
        "name,email,age\nAda,ada@x.test,36\nEve,ada@x.test,30\n",
    )
    .unwrap();
    let out = import(&server, t, ids, &ca, &bad);
    assert!(!out.status.success());
    let err = stderr(&out);
    assert!(
        err.contains("line 3") && err.contains("email") && err.contains("nothing was imported"),
        "{err}"
    );

    // So Ada's row can still be imported: the failed import left nothing.
    let mut good = String::from("name,email,age\nAda,ada@x.test,36\n");
    for i in 0..1_000 {
        good.push_str(&format!("Person {i},p{i}@x.test,{}\n", i % 80));
    }
    let file = dir.path().join("people.csv");
    std::fs::write(&file, good).unwrap();
    let out = import(&server, t, ids, &ca, &file);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("imported 1001 record(s) into `people`"),
        "{}",
        stderr(&out)
    );
    // The same rows again break uniqueness on line 2.
    let again = import(&server, t, ids, &ca, &file);
    assert!(!again.status.success());
    assert!(stderr(&again).contains("line 2"), "{}", stderr(&again));

    let missing = import(&server, t, ids, &ca, &dir.path().join("nope.csv"));
    assert!(!missing.status.success());
    assert!(
        stderr(&missing).contains("nope.csv"),
        "{}",
        stderr(&missing)
    );
}
