//! The server over real TLS: protocol policy checked with independent clients
//! (rustls and the OpenSSL command line), headers, errors, limits, metrics,
//! graceful shutdown and the setup link. One integration binary for the crate.

use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::routing::get;
use kura_crypto::token::TokenHash;
use kura_store::SetupTokenCheck;
use kura_testkit::{Options, TestServer};
use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, ServerName};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;

const SECURITY_HEADERS: &[(&str, &str)] = &[
    (
        "strict-transport-security",
        "max-age=31536000; includeSubDomains",
    ),
    ("x-content-type-options", "nosniff"),
    ("referrer-policy", "no-referrer"),
    ("x-frame-options", "DENY"),
];

fn assert_security_headers(response: &reqwest::Response) {
    for (name, value) in SECURITY_HEADERS {
        assert_eq!(
            response.headers().get(*name).and_then(|v| v.to_str().ok()),
            Some(*value),
            "{name} on {}",
            response.url()
        );
    }
    let csp = response.headers()["content-security-policy"]
        .to_str()
        .unwrap();
    assert!(csp.contains("frame-ancestors 'none'"), "{csp}");
    assert!(
        response.headers().get("server").is_none(),
        "no version banner"
    );
    assert!(response.headers().get("x-request-id").is_some());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_ready_and_metrics_answer_with_security_headers() {
    let server = TestServer::spawn().await;
    let health = server
        .client
        .get(server.url("/healthz"))
        .send()
        .await
        .unwrap();
    assert_eq!(health.status(), 200);
    assert_security_headers(&health);
    assert_eq!(
        health.json::<serde_json::Value>().await.unwrap()["status"],
        "ok"
    );

    let ready = server
        .client
        .get(server.url("/readyz"))
        .send()
        .await
        .unwrap();
    assert_eq!(ready.status(), 200);
    assert_eq!(
        ready.json::<serde_json::Value>().await.unwrap()["storage"],
        "sqlite"
    );

    let metrics = server
        .client
        .get(server.url("/metrics"))
        .send()
        .await
        .unwrap();
    assert_eq!(metrics.status(), 200);
    assert!(
        metrics.headers()["content-type"]
            .to_str()
            .unwrap()
            .contains("openmetrics-text")
    );
    let text = metrics.text().await.unwrap();
    assert!(
        text.contains(r#"kura_http_requests_total{method="GET",route="/healthz",status="200"} 1"#),
        "{text}"
    );
    assert!(text.contains("kura_connections_total"), "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn errors_are_problem_details_with_the_request_id() {
    let server = TestServer::spawn().await;
    let a = server
        .client
        .get(server.url("/no/such/thing"))
        .send()
        .await
        .unwrap();
    assert_eq!(a.status(), 404);
    assert_security_headers(&a);
    assert_eq!(a.headers()["content-type"], "application/problem+json");
    let id = a.headers()["x-request-id"].to_str().unwrap().to_owned();
    let body: serde_json::Value = a.json().await.unwrap();
    assert_eq!(body["status"], 404);
    assert_eq!(body["title"], "Not Found");
    assert_eq!(body["request_id"], id.as_str());

    // The router's own 405 is converted too.
    let b = server
        .client
        .post(server.url("/healthz"))
        .send()
        .await
        .unwrap();
    assert_eq!(b.status(), 405);
    assert_eq!(b.headers()["content-type"], "application/problem+json");
    let other = b.headers()["x-request-id"].to_str().unwrap().to_owned();
    assert_ne!(id, other, "every request gets its own id");

    // A client cannot choose the request id.
    let c = server
        .client
        .get(server.url("/healthz"))
        .header("x-request-id", "attacker-chosen")
        .send()
        .await
        .unwrap();
    assert_ne!(c.headers()["x-request-id"], "attacker-chosen");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_bodies_are_refused() {
    let server = TestServer::spawn_with(Options {
        configure: Box::new(|c| c.server.body_limit_bytes = 4096),
        routes: Router::new().route(
            "/echo",
            axum::routing::post(|body: String| async move { body.len().to_string() }),
        ),
        ..Options::default()
    })
    .await;
    let ok = server
        .client
        .post(server.url("/echo"))
        .body(vec![b'a'; 4000])
        .send()
        .await
        .unwrap();
    assert_eq!(ok.status(), 200);
    let big = server
        .client
        .post(server.url("/echo"))
        .body(vec![b'a'; 5000])
        .send()
        .await
        .unwrap();
    assert_eq!(big.status(), 413);
    assert_eq!(big.headers()["content-type"], "application/problem+json");
}

async fn rustls_handshake(
    server: &TestServer,
    versions: &[&'static rustls::SupportedProtocolVersion],
) -> Result<(rustls::ProtocolVersion, rustls::CipherSuite), String> {
    let pem = server.certificate_pem();
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(&pem) {
        roots.add(cert.unwrap()).unwrap();
    }
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::aws_lc_rs::default_provider(),
    ))
    .with_protocol_versions(versions)
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let tcp = TcpStream::connect(server.addr).await.unwrap();
    let tls = connector
        .connect(ServerName::try_from("localhost").unwrap(), tcp)
        .await
        .map_err(|e| e.to_string())?;
    let (_, conn) = tls.get_ref();
    Ok((
        conn.protocol_version().unwrap(),
        conn.negotiated_cipher_suite().unwrap().suite(),
    ))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_1_2_and_1_3_work_with_forward_secret_aead_suites() {
    let server = TestServer::spawn().await;
    let (v, suite) = rustls_handshake(&server, &[&rustls::version::TLS13])
        .await
        .unwrap();
    assert_eq!(v, rustls::ProtocolVersion::TLSv1_3);
    assert_eq!(
        suite,
        rustls::CipherSuite::TLS13_AES_256_GCM_SHA384,
        "strongest suite preferred"
    );
    let (v, suite) = rustls_handshake(&server, &[&rustls::version::TLS12])
        .await
        .unwrap();
    assert_eq!(v, rustls::ProtocolVersion::TLSv1_2);
    let name = format!("{suite:?}");
    assert!(
        name.starts_with("TLS_ECDHE_") && (name.contains("GCM") || name.contains("CHACHA20")),
        "{name}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_1_3_only_mode_refuses_1_2() {
    let server = TestServer::spawn_with(Options {
        configure: Box::new(|c| c.tls.min_version = kura_config::TlsVersion::V1_3),
        ..Options::default()
    })
    .await;
    assert!(
        rustls_handshake(&server, &[&rustls::version::TLS12])
            .await
            .is_err()
    );
    assert!(
        rustls_handshake(&server, &[&rustls::version::TLS13])
            .await
            .is_ok()
    );
}

/// Runs `openssl s_client` against the server; returns whether a session was
/// established, with the transcript for messages.
fn openssl_connect(port: u16, args: &[&str]) -> (bool, String) {
    let output = Command::new("openssl")
        .arg("s_client")
        .arg("-connect")
        .arg(format!("127.0.0.1:{port}"))
        .args(args)
        .stdin(std::process::Stdio::null())
        .output()
        .expect("the openssl command line tool is installed (the test command installs it)");
    let text = format!(
        "{}\n{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    let established = output.status.success()
        && !text.contains("Cipher is (NONE)")
        && text.contains("Cipher is ");
    (established, text)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn openssl_client_old_protocols_and_non_pfs_or_cbc_suites_are_refused() {
    // An RSA certificate from the operator's own files, so RSA key exchange
    // and CBC suites would be possible if the policy allowed them.
    let dir = tempfile::tempdir().unwrap();
    let cert = dir.path().join("cert.pem");
    let key = dir.path().join("key.pem");
    let status = Command::new("openssl")
        .args([
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "2",
            "-subj",
            "/CN=localhost",
        ])
        .args(["-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1"])
        .arg("-keyout")
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .unwrap();
    assert!(status.success());
    let (c, k) = (cert.clone(), key.clone());
    let server = TestServer::spawn_with(Options {
        configure: Box::new(move |cfg| {
            cfg.tls.cert_file = Some(c);
            cfg.tls.key_file = Some(k);
        }),
        ..Options::default()
    })
    .await;
    let port = server.addr.port();

    // Positive controls: the configured certificate is served, ECDHE+AEAD works.
    let (ok, text) = openssl_connect(port, &["-tls1_2", "-cipher", "ECDHE-RSA-AES128-GCM-SHA256"]);
    assert!(ok, "TLS 1.2 ECDHE-RSA-AES128-GCM-SHA256 must work:\n{text}");
    assert!(
        text.contains("CN = localhost") || text.contains("CN=localhost"),
        "{text}"
    );
    let (ok, text) = openssl_connect(port, &["-tls1_3"]);
    assert!(ok, "TLS 1.3 must work:\n{text}");

    for (what, args) in [
        ("TLS 1.0", &["-tls1", "-cipher", "DEFAULT:@SECLEVEL=0"][..]),
        (
            "TLS 1.1",
            &["-tls1_1", "-cipher", "DEFAULT:@SECLEVEL=0"][..],
        ),
        (
            "RSA key exchange (no forward secrecy)",
            &["-tls1_2", "-cipher", "AES128-GCM-SHA256"][..],
        ),
        (
            "RSA key exchange AES256",
            &["-tls1_2", "-cipher", "AES256-GCM-SHA384"][..],
        ),
        (
            "CBC suite",
            &["-tls1_2", "-cipher", "ECDHE-RSA-AES128-SHA"][..],
        ),
        (
            "CBC SHA-256 suite",
            &["-tls1_2", "-cipher", "ECDHE-RSA-AES256-SHA384"][..],
        ),
    ] {
        let (ok, text) = openssl_connect(port, args);
        assert!(!ok, "{what} must be refused:\n{text}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plain_http_on_the_tls_port_gets_no_http_answer() {
    let server = TestServer::spawn().await;
    let mut tcp = TcpStream::connect(server.addr).await.unwrap();
    tcp.write_all(b"GET /healthz HTTP/1.1\r\nHost: localhost\r\n\r\n")
        .await
        .unwrap();
    let mut buf = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), tcp.read_to_end(&mut buf)).await;
    assert!(
        !buf.starts_with(b"HTTP/"),
        "got an HTTP answer: {:?}",
        String::from_utf8_lossy(&buf)
    );
    assert!(!String::from_utf8_lossy(&buf).contains("ok"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_drains_in_flight_requests_and_stops_accepting() {
    let mut server = TestServer::spawn_with(Options {
        routes: Router::new().route(
            "/slow",
            get(|| async {
                tokio::time::sleep(Duration::from_millis(800)).await;
                "finished"
            }),
        ),
        ..Options::default()
    })
    .await;
    let client = server.client.clone();
    let url = server.url("/slow");
    let in_flight = tokio::spawn(async move { client.get(url).send().await });
    // Let the request reach the handler before shutdown starts.
    for _ in 0..100 {
        let text = server
            .client
            .get(server.url("/metrics"))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        if text.contains("kura_http_requests_in_flight 2") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let task = server.begin_shutdown().unwrap();
    let response = in_flight.await.unwrap().unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.text().await.unwrap(), "finished");
    tokio::time::timeout(Duration::from_secs(10), task)
        .await
        .unwrap()
        .unwrap();
    assert!(
        TcpStream::connect(server.addr).await.is_err(),
        "listener is closed"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn setup_link_is_stored_hashed_and_replaced_on_restart() {
    let mut server = TestServer::spawn().await;
    let link = server
        .setup_link
        .take()
        .expect("a fresh install issues a setup link");
    assert!(link.url.starts_with(&server.base_url));
    let token = link.url.split("token=").nth(1).unwrap().to_owned();
    assert!(token.len() >= 43, "256-bit token");
    let now = time::OffsetDateTime::now_utc();
    let remaining = link.expires_at - now;
    assert!(remaining <= time::Duration::hours(1) && remaining > time::Duration::minutes(59));
    let platform = server.platform().clone();
    assert_eq!(
        platform
            .check_setup_token(&TokenHash::of(&token), now, false)
            .await
            .unwrap(),
        SetupTokenCheck::Valid
    );
    let (dir, tmp) = server.stop_keeping_data().await;
    drop(platform);

    let again = TestServer::spawn_with(Options {
        data_dir: Some(dir),
        ..Options::default()
    })
    .await;
    let second = again.setup_link.as_ref().unwrap();
    assert_ne!(second.url, link.url);
    let p = again.platform();
    assert_eq!(
        p.check_setup_token(&TokenHash::of(&token), now, false)
            .await
            .unwrap(),
        SetupTokenCheck::Unknown,
        "the earlier link died with the restart"
    );
    drop(tmp);
}
