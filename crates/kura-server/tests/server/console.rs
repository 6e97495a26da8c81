//! The Customer Console in a real browser: Debian's Chromium driven by
//! playwright-core (`peers/console/e2e.mjs`) against a server booted by the
//! test kit. The script walks first-operator setup with TOTP enrolment
//! (codes from the independent `otpauth` package), sign-in with TOTP and a
//! recovery code, teams, hosts, apps and their schema, records (create,
//! find, sort, edit as the privilege set allows), CSV import with upload
//! progress, host and app deletion confirmed with the name and a fresh
//! code, groups and roles, invitations, CSRF refusal, the return to the
//! page after an ended session, the platform overview, incidents and
//! the event search, "remember this device", the operator's key status and a master-key rotation
//! confirmed with a fresh TOTP code, the platform firewall lists, and passkey registration and sign-in through
//! Chromium's virtual authenticator; it saves a screenshot of every page
//! open when a scenario fails.
//!
//! Page screenshots at 1280 and 390 pixels go to a temporary directory, or
//! to `docs/screenshots/` with `KURA_UPDATE_SCREENSHOTS=1`.

use std::path::Path;

use kura_testkit::{Options, TestServer};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn console_works_in_chromium() {
    // Passkeys are bound to `localhost` on the listening port, so the
    // server listens on a known port and the browser uses that name.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let server = TestServer::spawn_with(Options {
        configure: Box::new(move |c| {
            c.server.bind = std::net::SocketAddr::from(([127, 0, 0, 1], port));
        }),
        ..Options::default()
    })
    .await;
    let base = format!("https://localhost:{port}");
    let link = server
        .setup_link
        .as_ref()
        .expect("a setup link")
        .url
        .clone();
    assert!(link.contains("/console/setup?token="), "{link}");
    let link = link.replace(&server.base_url, &base);
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
    let script = manifest.join("tests/peers/console/e2e.mjs");
    let tmp = tempfile::tempdir().unwrap();
    let shots = if std::env::var_os("KURA_UPDATE_SCREENSHOTS").is_some() {
        manifest.join("../../docs/screenshots")
    } else {
        tmp.path().join("shots")
    };
    let cert = tmp.path().join("kura-cert.pem");
    std::fs::write(&cert, server.certificate_pem()).unwrap();
    let fail_shots = Path::new(env!("CARGO_TARGET_TMPDIR")).join("console-failures");
    let out = tokio::task::block_in_place(|| {
        std::process::Command::new("node")
            .arg(&script)
            .env("KURA_URL", &base)
            .env("KURA_CERT", &cert)
            .env("KURA_SETUP_LINK", &link)
            .env("KURA_SHOTS", &shots)
            .env("KURA_FAIL_SHOTS", &fail_shots)
            .output()
            .unwrap_or_else(|e| panic!("node could not run ({e}); `cargo xtask test` installs it"))
    });
    eprintln!("{}", String::from_utf8_lossy(&out.stdout));
    assert!(
        out.status.success(),
        "the console scenarios failed\n--- stdout\n{}\n--- stderr\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    // The refused forged posts were recorded as CSRF denials.
    let denied = super::kura_id_api::logged_actions(&server.events)
        .await
        .into_iter()
        .filter(|e| e.action.as_str() == "authz.denied")
        .filter(|e| e.details.get("reason") == Some(&serde_json::json!("csrf")))
        .count();
    assert!(denied >= 2, "CSRF refusals recorded: {denied}");
    // The rotation confirmed with a fresh code was recorded once, by the
    // operator's account; the wrong code before it as a failed MFA check.
    let events = super::kura_id_api::logged_actions(&server.events).await;
    let rotations: Vec<_> = events
        .iter()
        .filter(|e| e.action.as_str() == "keys.master.rotated")
        .collect();
    assert_eq!(rotations.len(), 1, "{rotations:?}");
    assert!(matches!(
        rotations[0].actor,
        kura_types::Actor::Account { .. }
    ));
    assert_eq!(
        rotations[0].details.get("version"),
        Some(&serde_json::json!(2))
    );
    // The firewall was changed once (the refused attempts changed nothing).
    let firewall: Vec<_> = events
        .iter()
        .filter(|e| e.action.as_str() == "edge.firewall.changed")
        .collect();
    assert_eq!(firewall.len(), 1, "{firewall:?}");
    assert_eq!(
        firewall[0].details.get("after"),
        Some(&serde_json::json!({"allow": [], "deny": ["203.0.113.0/24", "198.51.100.7/32"]}))
    );
}
