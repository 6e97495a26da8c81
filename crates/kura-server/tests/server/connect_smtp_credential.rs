//! An `email` step through a team's `smtp` credential, against a loopback
//! SMTP server that asks for AUTH PLAIN: the credential's relay, sender,
//! user and password are used, and the password never appears in the run.

use std::sync::{Arc, Mutex};

use base64::Engine as _;
use kura_testkit::TestServer;
use serde_json::json;
use tokio::io::{AsyncBufReadExt as _, AsyncWriteExt as _, BufReader};

use super::connect_human::{create_flow, options, over, start, wait_for};
use super::kura_id_api::{post, tenant};

/// What the relay saw: AUTH credentials, envelope lines and data.
type Seen = Arc<Mutex<Vec<String>>>;

/// A minimal SMTP relay that offers and requires AUTH PLAIN.
async fn auth_relay() -> (u16, Seen) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let seen: Seen = Arc::default();
    let keep = Arc::clone(&seen);
    tokio::spawn(async move {
        loop {
            let (stream, _) = listener.accept().await.unwrap();
            let keep = Arc::clone(&keep);
            tokio::spawn(async move {
                let (read, mut write) = stream.into_split();
                let mut lines = BufReader::new(read).lines();
                write.write_all(b"220 relay ESMTP\r\n").await.unwrap();
                let mut authed = false;
                while let Ok(Some(line)) = lines.next_line().await {
                    let upper = line.to_ascii_uppercase();
                    let reply: &[u8] = if upper.starts_with("EHLO") {
                        b"250-relay\r\n250 AUTH PLAIN\r\n"
                    } else if let Some(b64) = line.strip_prefix("AUTH PLAIN ") {
                        let raw = base64::engine::general_purpose::STANDARD
                            .decode(b64.trim())
                            .unwrap();
                        keep.lock().unwrap().push(format!(
                            "AUTH {}",
                            String::from_utf8_lossy(&raw).replace('\0', "|")
                        ));
                        authed = true;
                        b"235 ok\r\n"
                    } else if upper.starts_with("MAIL") && !authed {
                        b"530 authentication required\r\n"
                    } else if upper.starts_with("MAIL") || upper.starts_with("RCPT") {
                        keep.lock().unwrap().push(line.clone());
                        b"250 ok\r\n"
                    } else if upper.starts_with("DATA") {
                        write.write_all(b"354 go on\r\n").await.unwrap();
                        let mut data = String::new();
                        while let Ok(Some(l)) = lines.next_line().await {
                            if l == "." {
                                break;
                            }
                            data.push_str(&l);
                            data.push('\n');
                        }
                        keep.lock().unwrap().push(data);
                        b"250 queued\r\n"
                    } else if upper.starts_with("QUIT") {
                        write.write_all(b"221 bye\r\n").await.unwrap();
                        break;
                    } else {
                        b"250 ok\r\n"
                    };
                    write.write_all(reply).await.unwrap();
                }
            });
        }
    });
    (port, seen)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn email_steps_send_through_a_team_smtp_credential_with_its_password() {
    let (port, seen) = auth_relay().await;
    // The server's own relay (port 1) is not used: the step names the
    // team's credential.
    let server = TestServer::spawn_with(options(1, true)).await;
    let op = server.sign_up_first_operator().await;
    let t = tenant(&server, &op, "connect-relay").await;
    let r = post(
        &server,
        &format!("/api/v1/teams/{}/flow-credentials", t.id),
        Some(&t.owner),
        json!({
            "name": "mailer", "kind": "smtp", "secret": "relay-password-1", "username": "kura",
            "host": "127.0.0.1", "port": port, "security": "none", "from": "team@relay.test",
        }),
    )
    .await;
    assert_eq!(r.status, 201, "{}", r.text);
    let flow = create_flow(
        &server,
        &t.id,
        &t.owner,
        json!({
        "name": "relay", "trigger": {"kind": "manual"}, "steps": [
            {"id": "m", "kind": "email", "to": ["ops@example.org"], "subject": "Hi",
             "body": "password relay-password-1 must not show in the run", "credential": "mailer"}
        ]}),
    )
    .await;
    let run = start(&server, &t.id, &t.owner, &flow, json!({})).await;
    let done = wait_for(&server, &t.id, &t.owner, &run, over).await;
    assert_eq!(done["status"], "succeeded", "{done}");
    assert!(!done.to_string().contains("relay-password-1"), "{done}");
    let seen = seen.lock().unwrap().clone();
    assert_eq!(seen[0], "AUTH |kura|relay-password-1", "{seen:?}");
    assert_eq!(seen[1], "MAIL FROM:<team@relay.test>", "{seen:?}");
    assert_eq!(seen[2], "RCPT TO:<ops@example.org>", "{seen:?}");
    assert!(seen[3].contains("Subject: Hi"), "{seen:?}");
}
