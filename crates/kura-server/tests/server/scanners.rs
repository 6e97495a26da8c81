//! Tools nobody here wrote, pointed at the running server: `testssl` judges
//! the TLS endpoint and `sqlmap` hunts for SQL injection in the admin API's
//! list endpoints. Both exit 0 whatever they find, so the tests read their
//! reports. Like `openssl` and `rsyslog`, the tools are never skipped: the
//! test command installs them (`cargo xtask test`), and a missing one fails.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use kura_testkit::TestServer;
use reqwest::Method;
use serde_json::{Value, json};

use crate::kura_id_api::{call, get, logged_actions, tenant};

fn tool(name: &str, package: &str) -> PathBuf {
    std::env::var_os("PATH")
        .into_iter()
        .flat_map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .map(|d| d.join(name))
        .find(|p| p.exists())
        .unwrap_or_else(|| {
            panic!("`{name}` is not installed; `apt-get install -y {package}` (`cargo xtask test` does this)")
        })
}

/// Runs a scanner off the async runtime, so the server keeps answering.
async fn scan(mut cmd: Command) -> Output {
    tokio::task::spawn_blocking(move || cmd.output().unwrap())
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn testssl_finds_only_tls_1_2_and_up_with_pfs_aead_suites_and_no_known_vulnerability() {
    let testssl = tool("testssl", "testssl.sh");
    let server = TestServer::spawn().await;
    let dir = tempfile::tempdir().unwrap();
    let report = dir.path().join("testssl.json");
    let mut cmd = Command::new(testssl);
    cmd.args([
        "--quiet",
        "--color",
        "0",
        "--warnings",
        "batch",
        "--ip",
        "one",
    ])
    // Protocols, cipher categories, forward secrecy, vulnerabilities.
    .args(["-p", "-s", "-f", "-U"])
    .arg("--jsonfile")
    .arg(&report)
    .arg(format!("127.0.0.1:{}", server.addr.port()));
    let out = scan(cmd).await;
    let text = std::fs::read_to_string(&report).unwrap_or_else(|e| {
        panic!(
            "testssl wrote no report ({e}): {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    });
    let findings: Vec<Value> = serde_json::from_str(&text).unwrap();
    let finding = |id: &str| -> String {
        findings
            .iter()
            .find(|f| f["id"] == id)
            .and_then(|f| f["finding"].as_str())
            .unwrap_or_else(|| panic!("testssl reported nothing for {id}: {text}"))
            .to_owned()
    };
    for old in ["SSLv2", "SSLv3", "TLS1", "TLS1_1"] {
        assert!(
            finding(old).starts_with("not offered"),
            "{old}: {}",
            finding(old)
        );
    }
    assert!(finding("TLS1_2").starts_with("offered"));
    assert!(finding("TLS1_3").starts_with("offered"));
    // NULL, anonymous, export, low, 3DES/IDEA and CBC ("average") suites:
    // only AEAD suites remain.
    for weak in [
        "cipherlist_NULL",
        "cipherlist_aNULL",
        "cipherlist_EXPORT",
        "cipherlist_LOW",
        "cipherlist_3DES_IDEA",
        "cipherlist_AVERAGE",
    ] {
        assert!(
            finding(weak).starts_with("not offered"),
            "{weak}: {}",
            finding(weak)
        );
    }
    assert!(finding("PFS").starts_with("offered"));
    for vuln in [
        "heartbleed",
        "CCS",
        "ticketbleed",
        "ROBOT",
        "CRIME_TLS",
        "POODLE_SSL",
        "SWEET32",
        "FREAK",
        "DROWN",
        "LOGJAM",
        "BEAST",
        "LUCKY13",
        "RC4",
    ] {
        let f = findings
            .iter()
            .find(|f| f["id"] == vuln)
            .unwrap_or_else(|| panic!("no {vuln} result"));
        assert_eq!(f["severity"], "OK", "{vuln}: {f}");
    }
    let bad: Vec<&Value> = findings
        .iter()
        .filter(|f| {
            ["LOW", "MEDIUM", "HIGH", "CRITICAL", "FATAL"]
                .contains(&f["severity"].as_str().unwrap_or(""))
        })
        .collect();
    assert!(bad.is_empty(), "testssl findings: {bad:?}");
}

fn csv_rows(path: &Path) -> Vec<String> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .skip(1)
        .filter(|l| !l.trim().is_empty())
        .map(str::to_owned)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlmap_finds_no_injectable_parameter_in_the_admin_api_list_endpoints() {
    let sqlmap = tool("sqlmap", "sqlmap");
    let server = TestServer::spawn().await;
    let op = server.sign_up_first_operator().await;
    let team = tenant(&server, &op, "alpha").await;

    // Let sqlmap's payloads reach the handlers: the WAF's injection rules
    // only record (detect mode) and the budgets are large, so what is
    // tested is the endpoints' own handling of hostile input.
    let r = call(
        &server,
        Method::PUT,
        "/api/v1/edge/waf",
        Some(&op.token),
        Some(json!({ "rules": { "150": "detect", "160": "detect", "140": "detect" } })),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text);
    let mut limits = get(&server, "/api/v1/edge", &op.token).await.json()["rate_limits"].clone();
    for family in ["sign_in", "data_api", "admin_api", "webhooks"] {
        for key in ["per_source", "per_credential", "per_team"] {
            limits[family][key] = json!({ "per_minute": 1_000_000, "burst": 1_000_000 });
        }
    }
    for k in ["scope", "version", "updated_at", "updated_by"] {
        limits.as_object_mut().unwrap().remove(k);
    }
    let r = call(
        &server,
        Method::PUT,
        "/api/v1/edge/rate-limits",
        Some(&op.token),
        Some(limits),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text);

    let dir = tempfile::tempdir().unwrap();
    let base = server.base_url.clone();
    let targets = [
        format!("{base}/api/v1/events?action=auth.signin.failed&outcome=failure&limit=10"),
        format!("{base}/api/v1/teams/{}*/members", team.id),
        format!("{base}/api/v1/incidents?state=open&severity=sev2&limit=5"),
    ];
    let bulk = dir.path().join("targets.txt");
    std::fs::write(&bulk, targets.join("\n") + "\n").unwrap();
    let results = dir.path().join("results.csv");
    let mut cmd = Command::new(sqlmap);
    cmd.arg("-m")
        .arg(&bulk)
        .args([
            "--batch",
            "--level",
            "1",
            "--risk",
            "1",
            "--technique",
            "BEU",
            "--flush-session",
            "--disable-coloring",
            "--skip-waf",
        ])
        .arg(format!("--headers=Authorization: Bearer {}", op.token))
        .arg("--output-dir")
        .arg(dir.path().join("out"))
        .arg("--results-file")
        .arg(&results);
    let out = scan(cmd).await;
    let log = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(results.exists(), "sqlmap wrote no results file: {log}");
    assert!(
        csv_rows(&results).is_empty(),
        "sqlmap found injectable parameters: {:?}\n{log}",
        csv_rows(&results)
    );
    // It really tested each endpoint's parameters.
    for param in ["action", "outcome", "state", "severity", "#1*"] {
        assert!(
            log.contains(&format!(
                "parameter '{param}' does not seem to be injectable"
            )),
            "sqlmap did not test {param}: {log}"
        );
    }
    // And its payloads were recognised as SQL injection on the way in.
    let detected = logged_actions(&server.events)
        .await
        .into_iter()
        .filter(|e| e.action.as_str() == "edge.waf.detected" && e.details["rule"] == "150")
        .count();
    assert!(
        detected > 0,
        "no SQL injection was detected in sqlmap's requests"
    );
}
