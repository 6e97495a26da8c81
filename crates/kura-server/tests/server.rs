//! The server over real TLS: protocol policy checked with independent clients
//! (rustls and the OpenSSL command line), headers, errors, limits, metrics,
//! graceful shutdown and the setup link. One integration binary for the crate.

// Helpers outside `#[test]` functions are not covered by clippy.toml's
// allow-*-in-tests settings; a failing helper should fail the test.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

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

#[path = "server/edge.rs"]
mod edge;
#[path = "server/scanners.rs"]
mod scanners;

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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_requests_time_out_with_a_problem() {
    let server = TestServer::spawn_with(Options {
        configure: Box::new(|c| c.server.request_timeout_secs = 1),
        routes: Router::new().route(
            "/stall",
            get(|| async {
                tokio::time::sleep(Duration::from_secs(30)).await;
                "never"
            }),
        ),
        ..Options::default()
    })
    .await;
    let response = server
        .client
        .get(server.url("/stall"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 408);
    assert_eq!(
        response.headers()["content-type"],
        "application/problem+json"
    );
    assert_security_headers(&response);
}

/// Syslog over TLS (RFC 5424 in RFC 5425 frames) against a real peer:
/// rsyslog relays `logger` messages into Kura's listener with a client
/// certificate, and receives Kura's exports. Bad frames and unauthenticated
/// senders are driven with rustls directly, since rsyslog will not send them.
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod syslog_peers {
    use std::net::SocketAddr;
    use std::path::{Path, PathBuf};
    use std::process::{Child, Command, Stdio};
    use std::sync::Arc;
    use std::time::{Duration, Instant};

    use kura_config::TlsConfig;
    use kura_crypto::{LocalKms, SealParams};
    use kura_events::Exporter;
    use kura_events::export::ExporterOptions;
    use kura_events::syslog::{IngestPolicy, RejectReason};
    use kura_events::{
        EventLog, EventLogOptions, EventQuery, EventSink, LogSink, Order, StoredEvent,
        VerifyOptions,
    };
    use kura_server::syslog::{
        SyslogExportConfig, SyslogExporter, SyslogLimits, SyslogListener, SyslogStatsHandle,
    };
    use kura_server::{ShutdownSignal, TlsMaterial};
    use kura_store::{DataDir, SqliteExportStore, StorageOptions, open_storage};
    use kura_types::{Action, Actor, Outcome, SecurityEvent, SystemClock, TeamId};
    use rcgen::{
        BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer,
        KeyPair, KeyUsagePurpose,
    };
    use rustls::pki_types::pem::PemObject as _;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
    use serde_json::{Value, json};
    use time::OffsetDateTime;
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    use tokio::net::TcpStream;
    use tokio::sync::oneshot;
    use tokio::task::JoinHandle;

    const INSTALL_HINT: &str = "install the syslog test peers with \
        `apt-get install -y rsyslog rsyslog-gnutls bsdutils` (`cargo xtask test` does this)";
    const DEADLINE: Duration = Duration::from_secs(30);

    /// rsyslogd, with its GnuTLS network stream driver; never skipped.
    fn rsyslogd() -> PathBuf {
        let bin = ["/usr/sbin/rsyslogd", "/sbin/rsyslogd"]
            .into_iter()
            .map(PathBuf::from)
            .find(|p| p.exists())
            .unwrap_or_else(|| panic!("rsyslogd is not installed; {INSTALL_HINT}"));
        let gtls = std::fs::read_dir("/usr/lib")
            .into_iter()
            .flatten()
            .flatten()
            .map(|d| d.path().join("rsyslog/lmnsd_gtls.so"))
            .chain([PathBuf::from("/usr/lib/rsyslog/lmnsd_gtls.so")])
            .any(|p| p.exists());
        assert!(gtls, "rsyslog's GnuTLS driver is missing; {INSTALL_HINT}");
        bin
    }

    fn logger() -> PathBuf {
        ["/usr/bin/logger", "/bin/logger"]
            .into_iter()
            .map(PathBuf::from)
            .find(|p| p.exists())
            .unwrap_or_else(|| panic!("logger is not installed; {INSTALL_HINT}"))
    }

    /// A test CA with a server certificate for localhost and client
    /// certificates, all written as PEM files into `dir`.
    struct Pki {
        dir: PathBuf,
        ca: Issuer<'static, KeyPair>,
    }

    impl Pki {
        fn new(dir: &Path, name: &str) -> Self {
            let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
            params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
            params
                .distinguished_name
                .push(DnType::CommonName, format!("{name} test CA"));
            params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
            let key = KeyPair::generate().unwrap();
            let cert = params.self_signed(&key).unwrap();
            let dir = dir.join(name);
            std::fs::create_dir_all(&dir).unwrap();
            std::fs::write(dir.join("ca.pem"), cert.pem()).unwrap();
            Self {
                dir,
                ca: Issuer::new(params, key),
            }
        }

        fn path(&self, file: &str) -> PathBuf {
            self.dir.join(file)
        }

        fn pem(&self, file: &str) -> Vec<u8> {
            std::fs::read(self.path(file)).unwrap()
        }

        /// Issues `<name>.pem` and `<name>.key`.
        fn issue(&self, name: &str, sans: &[&str], usage: ExtendedKeyUsagePurpose) {
            let mut params =
                CertificateParams::new(sans.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>())
                    .unwrap();
            params.distinguished_name.push(DnType::CommonName, name);
            params.extended_key_usages = vec![usage];
            params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
            let key = KeyPair::generate().unwrap();
            let cert = params.signed_by(&key, &self.ca).unwrap();
            std::fs::write(self.path(&format!("{name}.pem")), cert.pem()).unwrap();
            std::fs::write(self.path(&format!("{name}.key")), key.serialize_pem()).unwrap();
        }

        fn material(&self, name: &str) -> TlsMaterial {
            let config = TlsConfig {
                cert_file: Some(self.path(&format!("{name}.pem"))),
                key_file: Some(self.path(&format!("{name}.key"))),
                ..TlsConfig::default()
            };
            TlsMaterial::load_or_generate(&config, &self.dir).unwrap()
        }
    }

    /// A foreground rsyslogd with its own configuration, stopped on drop.
    struct Rsyslog {
        child: Child,
        dir: PathBuf,
    }

    impl Rsyslog {
        /// Starts rsyslogd with `config` (where `{dir}` is its directory)
        /// and waits for the port its one input announces.
        fn start(dir: PathBuf, config: &str) -> (Self, u16) {
            Self::start_on(dir, config, None)
        }

        /// Like [`Rsyslog::start`], with `{port}` in `config` replaced by
        /// `port` (or 0, to have rsyslog choose and announce one).
        fn start_on(dir: PathBuf, config: &str, port: Option<u16>) -> (Self, u16) {
            std::fs::create_dir_all(dir.join("work")).unwrap();
            let conf = dir.join("rsyslog.conf");
            let config = config
                .replace("{dir}", dir.to_str().unwrap())
                .replace("{port}", &port.unwrap_or(0).to_string());
            std::fs::write(&conf, config).unwrap();
            let child = Command::new(rsyslogd())
                .arg("-n")
                .arg("-f")
                .arg(&conf)
                .arg("-i")
                .arg(dir.join("rsyslogd.pid"))
                .stdout(std::fs::File::create(dir.join("stdout")).unwrap())
                .stderr(std::fs::File::create(dir.join("stderr")).unwrap())
                .stdin(Stdio::null())
                .spawn()
                .unwrap_or_else(|e| panic!("cannot start rsyslogd ({e}); {INSTALL_HINT}"));
            let mut rsyslog = Self { child, dir };
            let port_file = rsyslog.dir.join("port");
            let start = Instant::now();
            let port = loop {
                // rsyslog announces only ports it chose; a fixed one is
                // ready when it accepts connections.
                let ready = match port {
                    Some(p) => std::net::TcpStream::connect(("127.0.0.1", p))
                        .is_ok()
                        .then_some(p),
                    None => std::fs::read_to_string(&port_file)
                        .ok()
                        .and_then(|s| s.trim().parse::<u16>().ok()),
                };
                if let Some(port) = ready {
                    break port;
                }
                if let Ok(Some(status)) = rsyslog.child.try_wait() {
                    panic!("rsyslogd exited ({status}): {}", rsyslog.output());
                }
                assert!(
                    start.elapsed() < DEADLINE,
                    "rsyslogd announced no port: {}",
                    rsyslog.output()
                );
                std::thread::sleep(Duration::from_millis(20));
            };
            (rsyslog, port)
        }

        fn output(&self) -> String {
            let read = |f: &str| std::fs::read_to_string(self.dir.join(f)).unwrap_or_default();
            format!("stdout: {} stderr: {}", read("stdout"), read("stderr"))
        }
    }

    impl Drop for Rsyslog {
        fn drop(&mut self) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }

    /// Polls `check` until it returns `Some` or the deadline passes.
    async fn eventually<T>(what: &str, mut check: impl AsyncFnMut() -> Option<T>) -> T {
        let start = Instant::now();
        loop {
            if let Some(v) = check().await {
                return v;
            }
            assert!(start.elapsed() < DEADLINE, "timed out waiting for {what}");
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }

    struct Env {
        tmp: tempfile::TempDir,
        sink: LogSink,
        pki: Pki,
    }

    async fn env() -> Env {
        let tmp = tempfile::tempdir().unwrap();
        let dir = DataDir::new(tmp.path().join("kura-data"));
        dir.prepare().unwrap();
        let kms = Arc::new(
            LocalKms::create(
                &dir.master_key_file(),
                None,
                SealParams::default(),
                OffsetDateTime::now_utc(),
            )
            .unwrap(),
        );
        let storage = open_storage(&dir, kms, Arc::new(SystemClock), StorageOptions::default())
            .await
            .unwrap();
        let log = EventLog::open(&storage, Arc::new(SystemClock), EventLogOptions::default())
            .await
            .unwrap();
        let pki = Pki::new(tmp.path(), "pki");
        pki.issue(
            "server",
            &["localhost", "127.0.0.1"],
            ExtendedKeyUsagePurpose::ServerAuth,
        );
        pki.issue("relay", &[], ExtendedKeyUsagePurpose::ClientAuth);
        Env {
            tmp,
            sink: LogSink::new(log),
            pki,
        }
    }

    struct Running {
        addr: SocketAddr,
        stats: SyslogStatsHandle,
        stop: oneshot::Sender<()>,
        task: JoinHandle<()>,
    }

    impl Running {
        async fn stop(self) {
            let _ = self.stop.send(());
            tokio::time::timeout(DEADLINE, self.task)
                .await
                .expect("the listener stops on shutdown")
                .unwrap();
        }
    }

    async fn listen(env: &Env, limits: SyslogLimits) -> Running {
        let sink: Arc<dyn EventSink> = Arc::new(env.sink.clone());
        let listener = SyslogListener::bind(
            "127.0.0.1:0".parse().unwrap(),
            &env.pki.material("server"),
            &env.pki.pem("ca.pem"),
            sink,
            limits,
        )
        .await
        .unwrap();
        let (stop, rx) = oneshot::channel::<()>();
        let shutdown: ShutdownSignal = Box::pin(async move {
            let _ = rx.await;
        });
        Running {
            addr: listener.local_addr(),
            stats: listener.stats(),
            stop,
            task: tokio::spawn(listener.serve(shutdown)),
        }
    }

    async fn events(sink: &LogSink) -> Vec<StoredEvent> {
        sink.log()
            .query(EventQuery {
                order: Order::OldestFirst,
                limit: 1000,
                ..EventQuery::default()
            })
            .await
            .unwrap()
            .events
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn rsyslog_relays_logger_messages_over_mutual_tls_into_the_log() {
        let env = env().await;
        let kura = listen(&env, SyslogLimits::default()).await;
        let pki = &env.pki;
        // rsyslog takes plain TCP from `logger` on loopback and forwards over
        // TLS with its client certificate, checking Kura's name.
        let config = format!(
            r#"
global(workDirectory="{{dir}}/work"
  DefaultNetstreamDriverCAFile="{ca}"
  DefaultNetstreamDriverCertFile="{cert}"
  DefaultNetstreamDriverKeyFile="{key}")
module(load="imtcp")
input(type="imtcp" address="127.0.0.1" port="0" listenPortFileName="{{dir}}/port" ruleset="to_kura")
ruleset(name="to_kura") {{
  action(type="omfwd" target="127.0.0.1" port="{port}" protocol="tcp"
    StreamDriver="gtls" StreamDriverMode="1" StreamDriverAuthMode="x509/name"
    StreamDriverPermittedPeers="localhost" TCP_Framing="octet-counted"
    template="RSYSLOG_SyslogProtocol23Format")
}}
"#,
            ca = pki.path("ca.pem").display(),
            cert = pki.path("relay.pem").display(),
            key = pki.path("relay.key").display(),
            port = kura.addr.port(),
        );
        let (_rsyslog, relay_port) = Rsyslog::start(env.tmp.path().join("relay"), &config);

        let send = |args: &[&str]| {
            let status = Command::new(logger())
                .args(["--tcp", "--octet-count", "--rfc5424", "-n", "127.0.0.1"])
                .args([
                    "-P",
                    &relay_port.to_string(),
                    "-t",
                    "edge-fw",
                    "-p",
                    "auth.warning",
                ])
                .args(args)
                .status()
                .unwrap();
            assert!(status.success(), "logger {args:?}");
        };
        send(&[
            "--sd-id",
            "kura@32473",
            "--sd-param",
            r#"action="edge.firewall.blocked""#,
            "--sd-param",
            r#"outcome="denied""#,
            "--sd-param",
            r#"src="192.0.2.7""#,
            "blocked 192.0.2.7 -> 22/tcp",
        ]);
        send(&["--msgid", "edge.waf.blocked", "WAF rule 942100 matched"]);

        let got = eventually("two relayed events in the log", async || {
            let got = events(&env.sink).await;
            (got.len() >= 2).then_some(got)
        })
        .await;
        assert_eq!(got.len(), 2, "{got:?}");
        let relay_fingerprint = kura_crypto::digest::sha256_hex(
            CertificateDer::from_pem_file(pki.path("relay.pem"))
                .unwrap()
                .as_ref(),
        );
        let hostname = std::fs::read_to_string("/proc/sys/kernel/hostname")
            .unwrap()
            .trim()
            .to_owned();
        let first = &got[0].event;
        assert_eq!(first.action.as_str(), "edge.firewall.blocked");
        assert_eq!(first.outcome, Outcome::Denied);
        assert_eq!(first.source, Some("192.0.2.7".parse().unwrap()));
        assert_eq!(
            first.actor,
            Actor::System {
                component: format!("{hostname}/edge-fw")
            }
        );
        assert_eq!(first.team, None);
        let d = &first.details;
        assert_eq!(d["message"], json!("blocked 192.0.2.7 -> 22/tcp"));
        assert_eq!(d["severity"], json!("warning"));
        assert_eq!(d["facility"], json!("auth"));
        assert_eq!(d["ingest"], json!("syslog"));
        assert_eq!(d["peer_certificate_sha256"], json!(relay_fingerprint));
        assert!(
            d["structured_data"]["timeQuality"].is_object(),
            "logger's own element is kept: {d:?}"
        );
        let age = OffsetDateTime::now_utc() - first.time;
        assert!(age < time::Duration::minutes(1), "the sender's time: {age}");

        let second = &got[1].event;
        assert_eq!(second.action.as_str(), "edge.waf.blocked");
        assert_eq!(second.outcome, Outcome::Success);
        assert_eq!(second.details["message"], json!("WAF rule 942100 matched"));

        // The listener counts an event after recording it, so the counter
        // may trail the log by a moment.
        let stats = eventually("both frames counted", async || {
            let stats = kura.stats.snapshot();
            (stats.accepted == 2).then_some(stats)
        })
        .await;
        assert_eq!(stats.rejected.values().sum::<u64>(), 0, "{stats:?}");
        assert!(stats.connections >= 1);
        let report = env.sink.verify(VerifyOptions::default()).await.unwrap();
        assert!(report.is_intact(), "{report}");
        kura.stop().await;
    }

    fn client_config(pki: &Pki, identity: Option<(&Pki, &str)>) -> Arc<rustls::ClientConfig> {
        let mut roots = rustls::RootCertStore::empty();
        roots
            .add(CertificateDer::from_pem_file(pki.path("ca.pem")).unwrap())
            .unwrap();
        let builder = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::aws_lc_rs::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots);
        Arc::new(match identity {
            Some((issuer, name)) => builder
                .with_client_auth_cert(
                    vec![
                        CertificateDer::from_pem_file(issuer.path(&format!("{name}.pem"))).unwrap(),
                    ],
                    PrivateKeyDer::from_pem_file(issuer.path(&format!("{name}.key"))).unwrap(),
                )
                .unwrap(),
            None => builder.with_no_client_auth(),
        })
    }

    async fn connect(
        addr: SocketAddr,
        config: Arc<rustls::ClientConfig>,
    ) -> std::io::Result<tokio_rustls::client::TlsStream<TcpStream>> {
        let tcp = TcpStream::connect(addr).await?;
        tokio_rustls::TlsConnector::from(config)
            .connect(ServerName::try_from("localhost").unwrap(), tcp)
            .await
    }

    fn framed(message: &[u8]) -> Vec<u8> {
        [format!("{} ", message.len()).as_bytes(), message].concat()
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn bad_frames_are_refused_and_counted_while_good_ones_land() {
        let env = env().await;
        let kura = listen(
            &env,
            SyslogLimits {
                ingest: IngestPolicy {
                    max_frame_bytes: 4096,
                    ..IngestPolicy::default()
                },
                ..SyslogLimits::default()
            },
        )
        .await;
        // RFC 5424 allows at most six fractional digits.
        let now = OffsetDateTime::now_utc().replace_nanosecond(0).unwrap();
        let stamp = |t: OffsetDateTime| {
            t.format(&time::format_description::well_known::Rfc3339)
                .unwrap()
        };
        let good = |n: u32| {
            format!(
                r#"<38>1 {} fw1 pf - - [kura@32473 action="edge.firewall.blocked" target="n{n}"] good {n}"#,
                stamp(now)
            )
            .into_bytes()
        };
        let mut stream = Vec::new();
        stream.extend(framed(&good(1)));
        stream.extend(framed(
            br#"<38>1 - fw1 pf - - [kura@32473 src="not-an-ip"] bad sd"#,
        ));
        stream.extend(framed(b"<38>1 - fw1 pf - - - caf\xe9"));
        stream.extend(framed(
            format!(
                "<38>1 {} fw1 pf - - - forged future",
                stamp(now + time::Duration::hours(2))
            )
            .as_bytes(),
        ));
        stream.extend(framed(
            format!(
                "<38>1 {} fw1 pf - - - replayed",
                stamp(now - time::Duration::days(3))
            )
            .as_bytes(),
        ));
        stream.extend(framed("x".repeat(5000).as_bytes()));
        stream.extend(framed(b"<38>1 - fw1 pf - - [unterminated"));
        stream.extend(framed(&good(2)));

        let client = client_config(&env.pki, Some((&env.pki, "relay")));
        let mut tls = connect(kura.addr, Arc::clone(&client)).await.unwrap();
        tls.write_all(&stream).await.unwrap();
        tls.shutdown().await.unwrap();

        let stats = eventually("every frame of the stream handled", async || {
            let s = kura.stats.snapshot();
            (s.accepted + s.rejected.values().sum::<u64>() >= 8).then_some(s)
        })
        .await;
        assert_eq!(stats.accepted, 2, "{stats:?}");
        for (reason, n) in [
            (RejectReason::StructuredData, 2),
            (RejectReason::InvalidUtf8, 1),
            (RejectReason::Timestamp, 2),
            (RejectReason::Oversized, 1),
            (RejectReason::Framing, 0),
        ] {
            assert_eq!(stats.rejected(reason), n, "{reason}: {stats:?}");
        }
        let got = events(&env.sink).await;
        let targets: Vec<_> = got.iter().map(|e| e.event.target.clone()).collect();
        assert_eq!(targets, [Some("n1".to_owned()), Some("n2".to_owned())]);

        // Newline framing cannot be resynchronised: counted, then closed.
        let mut tls = connect(kura.addr, client).await.unwrap();
        tls.write_all(b"<38>1 - fw1 pf - - - hello\n")
            .await
            .unwrap();
        let mut rest = Vec::new();
        let _ = tokio::time::timeout(DEADLINE, tls.read_to_end(&mut rest))
            .await
            .expect("the listener closes the connection");
        assert!(rest.is_empty());
        assert_eq!(kura.stats.snapshot().rejected(RejectReason::Framing), 1);
        assert_eq!(events(&env.sink).await.len(), 2);
        kura.stop().await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn senders_without_a_certificate_from_the_ca_are_refused() {
        let env = env().await;
        let kura = listen(&env, SyslogLimits::default()).await;
        let rogue = Pki::new(env.tmp.path(), "rogue");
        rogue.issue("relay", &[], ExtendedKeyUsagePurpose::ClientAuth);
        let frame = framed(b"<38>1 - fw1 pf - edge.waf.blocked - sneaky");
        for (attempt, client) in [
            client_config(&env.pki, None),
            client_config(&env.pki, Some((&rogue, "relay"))),
        ]
        .into_iter()
        .enumerate()
        {
            // With TLS 1.3 the client may finish its side before the server
            // refuses; then the refusal arrives on the first read.
            if let Ok(mut tls) = connect(kura.addr, client).await {
                let _ = tls.write_all(&frame).await;
                let mut buf = Vec::new();
                let read = tokio::time::timeout(DEADLINE, tls.read_to_end(&mut buf))
                    .await
                    .expect("the listener ends the connection");
                assert!(read.is_err() || buf.is_empty(), "attempt {attempt}");
            }
            let n = attempt as u64 + 1;
            eventually("the refused handshake counted", async || {
                (kura.stats.snapshot().handshake_failures >= n).then_some(())
            })
            .await;
        }
        let stats = kura.stats.snapshot();
        assert_eq!((stats.accepted, stats.connections), (0, 0), "{stats:?}");
        assert!(events(&env.sink).await.is_empty());
        kura.stop().await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn surplus_and_idle_connections_are_closed_and_a_ca_is_required() {
        let env = env().await;
        let err = SyslogListener::bind(
            "127.0.0.1:0".parse().unwrap(),
            &env.pki.material("server"),
            b"",
            Arc::new(env.sink.clone()),
            SyslogLimits::default(),
        )
        .await
        .unwrap_err();
        assert!(err.to_string().contains("client CA"), "{err}");

        let kura = listen(
            &env,
            SyslogLimits {
                max_connections: 1,
                idle_timeout: Duration::from_millis(1500),
                ..SyslogLimits::default()
            },
        )
        .await;
        let client = client_config(&env.pki, Some((&env.pki, "relay")));
        let mut first = connect(kura.addr, Arc::clone(&client)).await.unwrap();
        first
            .write_all(&framed(b"<38>1 - fw1 pf - edge.waf.blocked - one"))
            .await
            .unwrap();
        eventually("the first connection's event", async || {
            (kura.stats.snapshot().accepted == 1).then_some(())
        })
        .await;
        // The only slot is taken: a second sender is turned away at once.
        if let Ok(mut second) = connect(kura.addr, Arc::clone(&client)).await {
            let mut buf = Vec::new();
            let _ = tokio::time::timeout(DEADLINE, second.read_to_end(&mut buf))
                .await
                .expect("the surplus connection is closed");
        }
        assert_eq!(kura.stats.snapshot().connections_refused, 1);
        // The idle first connection is closed by the listener, freeing the slot.
        let mut buf = Vec::new();
        let _ = tokio::time::timeout(DEADLINE, first.read_to_end(&mut buf))
            .await
            .expect("the idle connection is closed");
        let mut third = eventually("a free slot", async || {
            let mut tls = connect(kura.addr, Arc::clone(&client)).await.ok()?;
            tls.write_all(&framed(b"<38>1 - fw1 pf - edge.waf.blocked - three"))
                .await
                .ok()?;
            Some(tls)
        })
        .await;
        eventually("the third connection's event", async || {
            (kura.stats.snapshot().accepted == 2).then_some(())
        })
        .await;
        third.shutdown().await.unwrap();
        kura.stop().await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn kura_exports_to_an_rsyslog_tls_receiver() {
        let env = env().await;
        let pki = &env.pki;
        pki.issue("kura-exporter", &[], ExtendedKeyUsagePurpose::ClientAuth);
        // rsyslog requires a client certificate from the CA, parses the
        // structured data with mmpstrucdata and writes one JSON line per
        // message, so the test sees what rsyslog understood.
        let config = format!(
            r#"
global(workDirectory="{{dir}}/work"
  DefaultNetstreamDriverCAFile="{ca}"
  DefaultNetstreamDriverCertFile="{cert}"
  DefaultNetstreamDriverKeyFile="{key}")
module(load="imtcp" StreamDriver.Name="gtls" StreamDriver.Mode="1" StreamDriver.AuthMode="x509/certvalid")
module(load="mmpstrucdata")
input(type="imtcp" address="127.0.0.1" port="{{port}}" listenPortFileName="{{dir}}/port" ruleset="from_kura")
template(name="fields" type="list") {{
  property(name="hostname") constant(value=" ")
  property(name="app-name") constant(value=" ")
  property(name="msgid") constant(value=" ")
  property(name="$!") constant(value=" ")
  property(name="msg" droplastlf="on") constant(value="\n")
}}
ruleset(name="from_kura") {{
  action(type="mmpstrucdata")
  action(type="omfile" file="{{dir}}/received.log" template="fields")
}}
"#,
            ca = pki.path("ca.pem").display(),
            cert = pki.path("server.pem").display(),
            key = pki.path("server.key").display(),
        );
        let dir = env.tmp.path().join("siem");
        let (rsyslog, port) = Rsyslog::start(dir.clone(), &config);

        let mut export =
            SyslogExportConfig::new("siem", format!("127.0.0.1:{port}"), pki.pem("ca.pem"));
        export.server_name = Some("localhost".into());
        export.client_cert_pem = Some(pki.pem("kura-exporter.pem"));
        export.client_key_pem = Some(pki.pem("kura-exporter.key").into());
        export.format.hostname = "kura.test".into();
        // The export runner drives the sink with its durable cursor, two
        // events per batch, so the second batch reuses the connection.
        let exporter = Exporter::new(
            Arc::new(SyslogExporter::new(export).unwrap()),
            env.sink.log().clone(),
            Arc::new(SqliteExportStore::new(env.sink.log().pool().clone())),
            Arc::new(SystemClock),
            ExporterOptions {
                batch_size: 2,
                ..ExporterOptions::default()
            },
        );
        assert_eq!(exporter.name(), "siem");

        // Real stored events: recorded (and so sanitised) by the log.
        let event = |action: &str, outcome| {
            SecurityEvent::new(
                OffsetDateTime::now_utc(),
                Actor::Account {
                    id: "ann \"the admin\"".into(),
                },
                Action::parse(action).unwrap(),
                outcome,
            )
        };
        for e in [
            event("auth.signin.failed", Outcome::Failure)
                .with_source("192.0.2.7".parse().unwrap())
                .with_detail("password", "hunter2")
                .with_detail("reason", r#"bad "password" ] \ café"#),
            event("admin.role.granted", Outcome::Success)
                .with_team(TeamId::new())
                .with_target("role:owner]"),
            event("data.export", Outcome::Denied),
        ] {
            env.sink.record(e).await.unwrap();
        }
        let stored = events(&env.sink).await;
        assert_eq!(stored.len(), 3);
        assert_eq!(exporter.export_once().await.unwrap(), 2);
        assert_eq!(exporter.export_once().await.unwrap(), 1);
        assert_eq!(exporter.export_once().await.unwrap(), 0);
        assert_eq!(exporter.stats().cursor(), stored[2].seq);

        let received = dir.join("received.log");
        let lines = eventually("three lines in rsyslog's file", async || {
            let text = std::fs::read_to_string(&received).unwrap_or_default();
            let lines: Vec<String> = text.lines().map(str::to_owned).collect();
            (lines.len() >= 3).then_some(lines)
        })
        .await;
        assert_eq!(lines.len(), 3, "{lines:?}");
        assert!(!lines.concat().contains("hunter2"), "secrets stay home");
        for (line, stored) in lines.iter().zip(&stored) {
            let mut parts = line.splitn(4, ' ');
            let (host, app, msgid) = (
                parts.next().unwrap(),
                parts.next().unwrap(),
                parts.next().unwrap(),
            );
            assert_eq!((host, app), ("kura.test", "kura"), "{line}");
            assert_eq!(msgid, stored.event.action.as_str());
            let rest = parts.next().unwrap();
            let mut de = serde_json::Deserializer::from_str(rest).into_iter::<Value>();
            let parsed = de.next().unwrap().unwrap();
            let sd = &parsed["rfc5424-sd"]["kura@32473"];
            assert_eq!(sd["seq"], json!(stored.seq.to_string()), "{line}");
            assert_eq!(sd["action"], json!(stored.event.action.as_str()));
            assert_eq!(sd["outcome"], json!(stored.event.outcome.as_str()));
            assert_eq!(sd["actor"], json!("account:ann \"the admin\""));
            assert_eq!(sd["id"], json!(stored.event.id.to_string()));
            assert_eq!(
                sd["hash"],
                json!(
                    stored
                        .hash
                        .iter()
                        .map(|b| format!("{b:02x}"))
                        .collect::<String>()
                )
            );
            // MSG is the verifiable export record, as in every other sink;
            // rsyslog parsed it out of the frame intact.
            let msg = rest[de.byte_offset()..]
                .trim()
                .trim_start_matches('\u{feff}');
            let record = kura_events::export::export_record(stored).unwrap();
            assert_eq!(msg, record, "{line}");
            let record: Value = serde_json::from_str(msg).unwrap();
            assert_eq!(record["seq"], json!(stored.seq));
        }
        let sd = |i: usize| {
            let rest = lines[i].splitn(4, ' ').nth(3).unwrap().to_owned();
            let parsed: Value = serde_json::Deserializer::from_str(&rest)
                .into_iter::<Value>()
                .next()
                .unwrap()
                .unwrap();
            parsed["rfc5424-sd"]["kura@32473"].clone()
        };
        assert_eq!(sd(0)["src"], json!("192.0.2.7"));
        assert_eq!(sd(1)["target"], json!("role:owner]"));
        assert_eq!(
            sd(1)["team"],
            json!(stored[1].event.team.unwrap().to_string())
        );
        assert!(lines[0].contains("[REDACTED]"), "{}", lines[0]);

        // The receiver restarts: the exporter notices its connection was
        // closed and reconnects, instead of writing the next batch into a
        // dead socket (where it would be lost while reporting success).
        drop(rsyslog);
        let again = env.tmp.path().join("siem-again");
        let (_rsyslog, _) = Rsyslog::start_on(again.clone(), &config, Some(port));
        env.sink
            .record(event("keys.rotated", Outcome::Success))
            .await
            .unwrap();
        assert_eq!(exporter.export_once().await.unwrap(), 1);
        let received = again.join("received.log");
        let line = eventually("the batch after the restart", async || {
            std::fs::read_to_string(&received)
                .ok()
                .filter(|t| t.ends_with('\n'))
        })
        .await;
        assert!(line.contains(r#""seq": "4""#), "{line}");
        assert_eq!(exporter.stats().cursor(), 4);
    }
}

// ===================================================================
// Kura ID admin API (`/api/v1/`): setup, sign-in with TOTP from pyotp,
// bearer and cookie+CSRF sessions, problem details, throttling, the
// cross-tenant sweep over every team-scoped route, the OpenAPI document
// and the security events all of this leaves in the log.
// ===================================================================
// Helpers outside `#[test]` functions are test code too.
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod kura_id_api {
    use std::collections::BTreeSet;
    use std::sync::Arc;

    use kura_server::kura_events::LogSink;
    use kura_server::kura_events::{EventQuery, Order};
    use kura_testkit::{OPERATOR_PASSWORD, Options, SignedInOperator, TestServer, pyotp_code};
    use kura_types::ManualClock;
    use reqwest::{Method, StatusCode};
    use serde_json::{Value, json};
    use time::{Duration, OffsetDateTime};

    const OWNER_PASSWORD: &str = "team owner passphrase 7731";

    pub(super) struct Reply {
        pub(super) status: StatusCode,
        pub(super) headers: reqwest::header::HeaderMap,
        pub(super) text: String,
    }

    impl Reply {
        pub(super) fn json(&self) -> Value {
            serde_json::from_str(&self.text)
                .unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.text))
        }

        pub(super) fn header(&self, name: &str) -> Option<&str> {
            self.headers.get(name).and_then(|v| v.to_str().ok())
        }

        /// Asserts a problem-details answer with `status`, returning it.
        pub(super) fn problem(&self, status: u16) -> Value {
            assert_eq!(self.status.as_u16(), status, "{}", self.text);
            assert_eq!(
                self.header("content-type"),
                Some("application/problem+json"),
                "{}",
                self.text
            );
            let p = self.json();
            assert_eq!(p["status"], status);
            assert!(p["type"].is_string() && p["title"].is_string(), "{p}");
            p
        }
    }

    pub(super) async fn call(
        server: &TestServer,
        method: Method,
        path: &str,
        bearer: Option<&str>,
        body: Option<Value>,
    ) -> Reply {
        let mut req = server
            .client
            .request(method, server.url(path))
            .header("user-agent", "kura-api-tests/1");
        if let Some(t) = bearer {
            req = req.bearer_auth(t);
        }
        if let Some(b) = body {
            req = req.json(&b);
        }
        let resp = req.send().await.unwrap();
        Reply {
            status: resp.status(),
            headers: resp.headers().clone(),
            text: resp.text().await.unwrap(),
        }
    }

    pub(super) async fn get(server: &TestServer, path: &str, token: &str) -> Reply {
        call(server, Method::GET, path, Some(token), None).await
    }

    pub(super) async fn post(
        server: &TestServer,
        path: &str,
        token: Option<&str>,
        body: Value,
    ) -> Reply {
        call(server, Method::POST, path, token, Some(body)).await
    }

    fn manual_clock() -> (ManualClock, Options) {
        let clock = ManualClock::new(OffsetDateTime::now_utc());
        let options = Options {
            clock: Arc::new(clock.clone()),
            ..Options::default()
        };
        (clock, options)
    }

    pub(super) async fn logged_actions(sink: &LogSink) -> Vec<kura_types::SecurityEvent> {
        sink.log()
            .query(EventQuery {
                order: Order::OldestFirst,
                limit: 1000,
                ..EventQuery::default()
            })
            .await
            .unwrap()
            .events
            .into_iter()
            .map(|e| e.event)
            .collect()
    }

    /// Password sign-in, then TOTP with a code `ahead` steps after the
    /// server's clock (pyotp computes it); returns the complete token.
    async fn sign_in_with_totp(server: &TestServer, op: &SignedInOperator, ahead: i64) -> String {
        let r = post(
            server,
            "/api/v1/sessions",
            None,
            json!({ "email": op.email, "password": OPERATOR_PASSWORD }),
        )
        .await;
        assert_eq!(r.status, 201, "{}", r.text);
        assert_eq!(r.json()["next"], "verify_mfa");
        let pending = r.json()["token"].as_str().unwrap().to_owned();
        let code = pyotp_code(
            &op.totp_secret,
            server.clock.now() + Duration::seconds(30 * ahead),
        );
        let r = post(
            server,
            "/api/v1/sessions/mfa/totp",
            Some(&pending),
            json!({ "code": code }),
        )
        .await;
        assert_eq!(r.status, 200, "{}", r.text);
        assert_eq!(r.json()["next"], "done");
        r.json()["token"].as_str().unwrap().to_owned()
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn first_operator_setup_is_one_time_and_needs_mfa_before_anything_administrative() {
        let server = TestServer::spawn().await;
        let token = server
            .setup_link
            .as_ref()
            .unwrap()
            .token
            .reveal()
            .to_owned();
        let body = json!({
            "token": token,
            "email": "root@kura.test",
            "display_name": "Root",
            "password": OPERATOR_PASSWORD,
        });
        let r = post(&server, "/api/v1/setup", None, body.clone()).await;
        assert_eq!(r.status, 201, "{}", r.text);
        let setup = r.json();
        assert_eq!(setup["next"], "enrol_mfa");
        assert_eq!(setup["stage"], "mfa_enrolment");
        let enrol = setup["token"].as_str().unwrap().to_owned();
        // 256-bit tokens: at least 43 characters of base64url or 64 hex.
        assert!(enrol.len() >= 43, "{enrol}");

        // The link is dead after use.
        let again = post(&server, "/api/v1/setup", None, body).await;
        let status = again.status.as_u16();
        assert!(status == 409 || status == 410, "{}", again.text);
        again.problem(status);

        // Nothing administrative before MFA is enrolled.
        let refused = post(
            &server,
            "/api/v1/teams",
            Some(&enrol),
            json!({ "name": "Acme", "owner_email": "owner@acme.test" }),
        )
        .await;
        refused.problem(401);
        assert!(refused.header("www-authenticate").is_some());
        let r = post(
            &server,
            "/api/v1/operators",
            Some(&enrol),
            json!({
                "email": "second@kura.test", "display_name": "Second",
                "password": OPERATOR_PASSWORD, "roles": ["support"],
            }),
        )
        .await;
        r.problem(401);

        // Enrol: a wrong code is refused, a pyotp code confirms.
        let r = call(
            &server,
            Method::POST,
            "/api/v1/me/mfa/totp",
            Some(&enrol),
            None,
        )
        .await;
        assert_eq!(r.status, 200, "{}", r.text);
        let secret = r.json()["secret"].as_str().unwrap().to_owned();
        assert!(
            r.json()["otpauth_uri"]
                .as_str()
                .unwrap()
                .starts_with("otpauth://totp/"),
        );
        let right = pyotp_code(&secret, server.clock.now());
        let wrong = if right == "000000" {
            "111111"
        } else {
            "000000"
        };
        let r = post(
            &server,
            "/api/v1/me/mfa/totp/confirm",
            Some(&enrol),
            json!({ "code": wrong }),
        )
        .await;
        r.problem(401);
        let r = post(
            &server,
            "/api/v1/me/mfa/totp/confirm",
            Some(&enrol),
            json!({ "code": right }),
        )
        .await;
        assert_eq!(r.status, 200, "{}", r.text);
        let confirmed = r.json();
        assert_eq!(confirmed["recovery_codes"].as_array().unwrap().len(), 10);
        let complete = confirmed["session"]["token"].as_str().unwrap().to_owned();
        assert_ne!(complete, enrol);
        // The enrolment session was replaced.
        get(&server, "/api/v1/me", &enrol).await.problem(401);
        let me = get(&server, "/api/v1/me", &complete).await;
        assert_eq!(me.status, 200, "{}", me.text);
        assert_eq!(me.json()["kind"], "operator");
        let r = post(
            &server,
            "/api/v1/teams",
            Some(&complete),
            json!({ "name": "Acme", "owner_email": "owner@acme.test" }),
        )
        .await;
        assert_eq!(r.status, 201, "{}", r.text);

        let actions: Vec<String> = logged_actions(&server.events)
            .await
            .iter()
            .map(|e| e.action.as_str().to_owned())
            .collect();
        for expected in ["auth.mfa.enrolled", "authz.denied", "auth.mfa.failed"] {
            assert!(
                actions.iter().any(|a| a == expected),
                "{expected} in {actions:?}"
            );
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn totp_sign_in_refuses_a_replayed_code_and_accepts_a_fresh_one_or_a_recovery_code() {
        let (clock, options) = manual_clock();
        let server = TestServer::spawn_with(options).await;
        let op = server.sign_up_first_operator().await;

        let r = post(
            &server,
            "/api/v1/sessions",
            None,
            json!({ "email": op.email, "password": OPERATOR_PASSWORD }),
        )
        .await;
        assert_eq!(r.status, 201, "{}", r.text);
        assert_eq!(r.json()["next"], "verify_mfa");
        let pending = r.json()["token"].as_str().unwrap().to_owned();
        // A half-signed-in session can do nothing administrative.
        post(
            &server,
            "/api/v1/teams",
            Some(&pending),
            json!({ "name": "X", "owner_email": "x@x.test" }),
        )
        .await
        .problem(401);
        // The code that confirmed the enrolment is spent.
        let replay = pyotp_code(&op.totp_secret, server.clock.now());
        let r = post(
            &server,
            "/api/v1/sessions/mfa/totp",
            Some(&pending),
            json!({ "code": replay }),
        )
        .await;
        r.problem(401);
        // The next step's code works and replaces the token.
        let fresh = pyotp_code(&op.totp_secret, server.clock.now() + Duration::seconds(30));
        let r = post(
            &server,
            "/api/v1/sessions/mfa/totp",
            Some(&pending),
            json!({ "code": fresh }),
        )
        .await;
        assert_eq!(r.status, 200, "{}", r.text);
        let complete = r.json()["token"].as_str().unwrap().to_owned();
        get(&server, "/api/v1/me", &pending).await.problem(401);
        assert_eq!(get(&server, "/api/v1/me", &complete).await.status, 200);
        // ... and cannot be replayed either.
        let r = post(
            &server,
            "/api/v1/sessions",
            None,
            json!({ "email": op.email, "password": OPERATOR_PASSWORD }),
        )
        .await;
        let pending = r.json()["token"].as_str().unwrap().to_owned();
        post(
            &server,
            "/api/v1/sessions/mfa/totp",
            Some(&pending),
            json!({ "code": fresh }),
        )
        .await
        .problem(401);
        // A recovery code works once.
        let code = &op.recovery_codes[0];
        let r = post(
            &server,
            "/api/v1/sessions/mfa/recovery",
            Some(&pending),
            json!({ "code": code }),
        )
        .await;
        assert_eq!(r.status, 200, "{}", r.text);
        assert_eq!(r.json()["next"], "done");
        let r = post(
            &server,
            "/api/v1/sessions",
            None,
            json!({ "email": op.email, "password": OPERATOR_PASSWORD }),
        )
        .await;
        let pending = r.json()["token"].as_str().unwrap().to_owned();
        post(
            &server,
            "/api/v1/sessions/mfa/recovery",
            Some(&pending),
            json!({ "code": code }),
        )
        .await
        .problem(401);

        // Sessions are listed; sign-out ends the session on the server.
        let listed = get(&server, "/api/v1/sessions", &complete).await;
        assert_eq!(listed.status, 200, "{}", listed.text);
        let listed = listed.json();
        assert!(listed.as_array().unwrap().len() >= 2, "{listed}");
        assert_eq!(
            listed
                .as_array()
                .unwrap()
                .iter()
                .filter(|s| s["current"] == true)
                .count(),
            1
        );
        let r = call(
            &server,
            Method::DELETE,
            "/api/v1/sessions/current",
            Some(&complete),
            None,
        )
        .await;
        assert_eq!(r.status, 204, "{}", r.text);
        get(&server, "/api/v1/me", &complete).await.problem(401);
        // "Everywhere" ends the other sessions too (two steps later, past
        // the short delay the failed codes above earned).
        clock.advance(Duration::seconds(60));
        let a = sign_in_with_totp(&server, &op, 0).await;
        let r = call(&server, Method::DELETE, "/api/v1/sessions", Some(&a), None).await;
        assert_eq!(r.status, 200, "{}", r.text);
        assert!(r.json()["revoked"].as_u64().unwrap() >= 1);
        get(&server, "/api/v1/me", &a).await.problem(401);
        get(&server, "/api/v1/me", &op.token).await.problem(401);

        let actions: Vec<String> = logged_actions(&server.events)
            .await
            .iter()
            .map(|e| e.action.as_str().to_owned())
            .collect();
        for expected in [
            "auth.mfa.failed",
            "auth.mfa.verified",
            "auth.mfa.recovery_used",
            "auth.session.revoked",
            "auth.session.revoked_all",
        ] {
            assert!(
                actions.iter().any(|a| a == expected),
                "{expected} in {actions:?}"
            );
        }
    }

    /// The attributes of a `Set-Cookie` header, lower-cased names.
    fn parse_set_cookie(raw: &str) -> (String, String, Vec<(String, String)>) {
        let mut parts = raw.split(';').map(str::trim);
        let (name, value) = parts.next().unwrap().split_once('=').unwrap();
        let attrs = parts
            .map(|a| match a.split_once('=') {
                Some((k, v)) => (k.to_ascii_lowercase(), v.to_owned()),
                None => (a.to_ascii_lowercase(), String::new()),
            })
            .collect();
        (name.to_owned(), value.to_owned(), attrs)
    }

    fn session_cookie(reply: &Reply) -> String {
        let raw: Vec<&str> = reply
            .headers
            .get_all("set-cookie")
            .iter()
            .map(|v| v.to_str().unwrap())
            .collect();
        assert_eq!(raw.len(), 1, "{raw:?}");
        let (name, value, attrs) = parse_set_cookie(raw[0]);
        assert_eq!(name, "__Host-kura_session");
        let has = |k: &str| attrs.iter().any(|(n, _)| n == k);
        let val = |k: &str| attrs.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str());
        assert!(has("secure"), "{raw:?}");
        assert!(has("httponly"), "{raw:?}");
        assert_eq!(val("samesite"), Some("Strict"), "{raw:?}");
        assert_eq!(val("path"), Some("/"), "{raw:?}");
        assert!(!has("domain"), "{raw:?}");
        value
    }

    async fn with_cookie(
        server: &TestServer,
        method: Method,
        path: &str,
        cookie: &str,
        csrf: Option<&str>,
        body: Option<Value>,
    ) -> Reply {
        let mut req = server
            .client
            .request(method, server.url(path))
            .header("cookie", format!("__Host-kura_session={cookie}"));
        if let Some(c) = csrf {
            req = req.header("x-csrf-token", c);
        }
        if let Some(b) = body {
            req = req.json(&b);
        }
        let resp = req.send().await.unwrap();
        Reply {
            status: resp.status(),
            headers: resp.headers().clone(),
            text: resp.text().await.unwrap(),
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn cookie_sessions_need_the_csrf_token_for_every_change() {
        let (_clock, options) = manual_clock();
        let server = TestServer::spawn_with(options).await;
        let op = server.sign_up_first_operator().await;

        let r = post(
            &server,
            "/api/v1/sessions",
            None,
            json!({ "email": op.email, "password": OPERATOR_PASSWORD, "cookie": true }),
        )
        .await;
        assert_eq!(r.status, 201, "{}", r.text);
        assert!(
            r.json().get("token").is_none(),
            "cookie sessions keep the token out of the body"
        );
        let pending = session_cookie(&r);
        let csrf = r.json()["csrf_token"].as_str().unwrap().to_owned();
        let code = pyotp_code(&op.totp_secret, server.clock.now() + Duration::seconds(30));
        // Even the MFA step is a change: no CSRF header, no verification.
        with_cookie(
            &server,
            Method::POST,
            "/api/v1/sessions/mfa/totp",
            &pending,
            None,
            Some(json!({ "code": code })),
        )
        .await
        .problem(403);
        let r = with_cookie(
            &server,
            Method::POST,
            "/api/v1/sessions/mfa/totp",
            &pending,
            Some(&csrf),
            Some(json!({ "code": code })),
        )
        .await;
        assert_eq!(r.status, 200, "{}", r.text);
        let cookie = session_cookie(&r);
        assert_ne!(cookie, pending);
        let csrf = r.json()["csrf_token"].as_str().unwrap().to_owned();

        // Reads need no CSRF token.
        let me = with_cookie(&server, Method::GET, "/api/v1/me", &cookie, None, None).await;
        assert_eq!(me.status, 200, "{}", me.text);

        let team = json!({ "name": "Acme", "owner_email": "owner@acme.test" });
        with_cookie(
            &server,
            Method::POST,
            "/api/v1/teams",
            &cookie,
            None,
            Some(team.clone()),
        )
        .await
        .problem(403);
        with_cookie(
            &server,
            Method::POST,
            "/api/v1/teams",
            &cookie,
            Some(&"0".repeat(64)),
            Some(team.clone()),
        )
        .await
        .problem(403);
        // Another session's CSRF token does not fit this one.
        with_cookie(
            &server,
            Method::POST,
            "/api/v1/teams",
            &cookie,
            Some(&op.token),
            Some(team.clone()),
        )
        .await
        .problem(403);
        // Nothing changed.
        let teams = get(&server, "/api/v1/teams", &op.token).await;
        assert_eq!(teams.json(), json!([]));
        let team_events = logged_actions(&server.events)
            .await
            .iter()
            .filter(|e| e.action.as_str().starts_with("team"))
            .count();
        assert_eq!(team_events, 0);

        let r = with_cookie(
            &server,
            Method::POST,
            "/api/v1/teams",
            &cookie,
            Some(&csrf),
            Some(team),
        )
        .await;
        assert_eq!(r.status, 201, "{}", r.text);
        // Bearer requests need no CSRF token.
        let r = post(
            &server,
            "/api/v1/teams",
            Some(&op.token),
            json!({ "name": "Beta", "owner_email": "owner@beta.test" }),
        )
        .await;
        assert_eq!(r.status, 201, "{}", r.text);

        // Signing out by cookie clears the cookie and ends the session.
        let r = with_cookie(
            &server,
            Method::DELETE,
            "/api/v1/sessions/current",
            &cookie,
            Some(&csrf),
            None,
        )
        .await;
        assert_eq!(r.status, 204, "{}", r.text);
        let cleared = r.header("set-cookie").unwrap().to_owned();
        assert!(cleared.starts_with("__Host-kura_session=;"), "{cleared}");
        assert!(cleared.contains("Max-Age=0"), "{cleared}");
        with_cookie(&server, Method::GET, "/api/v1/me", &cookie, None, None)
            .await
            .problem(401);

        let denied = logged_actions(&server.events)
            .await
            .into_iter()
            .filter(|e| e.action.as_str() == "authz.denied")
            .filter(|e| e.details.get("reason") == Some(&json!("csrf")))
            .count();
        assert_eq!(denied, 4);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn bad_bodies_are_refused_with_the_field_named_and_change_nothing() {
        let server = TestServer::spawn().await;
        let op = server.sign_up_first_operator().await;
        let r = post(
            &server,
            "/api/v1/sessions",
            None,
            json!({ "email": op.email, "password": "x", "role": "owner" }),
        )
        .await;
        let p = r.problem(422);
        assert!(p["detail"].as_str().unwrap().contains("`role`"), "{p}");

        // Mass assignment: email, kind or status cannot be patched.
        let r = call(
            &server,
            Method::PATCH,
            "/api/v1/me",
            Some(&op.token),
            Some(json!({ "display_name": "Mallory", "kind": "operator" })),
        )
        .await;
        let p = r.problem(422);
        assert!(p["detail"].as_str().unwrap().contains("`kind`"), "{p}");
        let me = get(&server, "/api/v1/me", &op.token).await.json();
        assert_eq!(me["display_name"], "First Operator");

        let r = post(
            &server,
            "/api/v1/teams",
            Some(&op.token),
            json!({ "name": "Acme" }),
        )
        .await;
        let p = r.problem(422);
        assert!(
            p["detail"].as_str().unwrap().contains("`owner_email`"),
            "{p}"
        );
        let r = post(
            &server,
            "/api/v1/teams",
            Some(&op.token),
            json!({ "name": "Acme", "owner_email": "not an email" }),
        )
        .await;
        r.problem(422);
        let r = post(&server, "/api/v1/operators", Some(&op.token), json!({
            "email": "two@kura.test", "display_name": "Two", "password": OPERATOR_PASSWORD, "roles": ["root"],
        }))
        .await;
        let p = r.problem(422);
        assert!(p["detail"].as_str().unwrap().contains("`roles"), "{p}");

        // Not JSON at all.
        let r = server
            .client
            .post(server.url("/api/v1/sessions"))
            .body("email=a&password=b")
            .header("content-type", "application/x-www-form-urlencoded")
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 415);
        let r = server
            .client
            .post(server.url("/api/v1/sessions"))
            .body("{\"email\":")
            .header("content-type", "application/json")
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 400);
        // Malformed identifiers name the path parameter.
        let r = get(&server, "/api/v1/teams/not-a-uuid", &op.token).await;
        let p = r.problem(422);
        assert!(p["detail"].as_str().unwrap().contains("`id`"), "{p}");
        // No teams were created by any of this.
        assert_eq!(
            get(&server, "/api/v1/teams", &op.token).await.json(),
            json!([])
        );
        // Without credentials: 401 everywhere but the public routes.
        let r = call(&server, Method::GET, "/api/v1/me", None, None).await;
        r.problem(401);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn sign_in_failures_look_alike_are_throttled_with_retry_after_and_are_logged() {
        let (_clock, options) = manual_clock();
        let server = TestServer::spawn_with(options).await;
        let op = server.sign_up_first_operator().await;

        let attempt = async |email: &str, password: &str| {
            post(
                &server,
                "/api/v1/sessions",
                None,
                json!({ "email": email, "password": password }),
            )
            .await
        };
        let normalised = |r: &Reply| {
            let id = r.header("x-request-id").unwrap().to_owned();
            r.text.replace(&id, "<request-id>")
        };
        let wrong = attempt(&op.email, "not the password at all").await;
        let unknown = attempt("nobody@kura.test", "not the password at all").await;
        wrong.problem(401);
        unknown.problem(401);
        assert_eq!(normalised(&wrong), normalised(&unknown));
        assert_eq!(
            wrong.header("www-authenticate"),
            unknown.header("www-authenticate")
        );

        // Three failures are free; then the account is delayed (429 with
        // Retry-After), even for the right password.
        for _ in 0..2 {
            attempt(&op.email, "not the password at all")
                .await
                .problem(401);
        }
        let throttled = attempt(&op.email, OPERATOR_PASSWORD).await;
        throttled.problem(429);
        let retry: u64 = throttled.header("retry-after").unwrap().parse().unwrap();
        assert!(retry >= 1, "{retry}");
        // Other accounts are not affected by this account's lockout.
        let other = attempt("nobody-else@kura.test", "not the password at all").await;
        other.problem(401);

        let events = logged_actions(&server.events).await;
        let failed: Vec<_> = events
            .iter()
            .filter(|e| e.action.as_str() == "auth.signin.failed")
            .collect();
        assert!(failed.len() >= 4, "{failed:?}");
        let first = failed
            .iter()
            .find(|e| e.request_id.as_deref() == wrong.header("x-request-id"))
            .expect("the failed sign-in event carries the request id");
        assert_eq!(first.user_agent.as_deref(), Some("kura-api-tests/1"));
        assert_eq!(first.source, Some("127.0.0.1".parse().unwrap()));
        assert!(
            events
                .iter()
                .any(|e| e.action.as_str() == "auth.signin.throttled"),
            "{events:?}"
        );
        // No password ever reaches the log.
        let dump = serde_json::to_string(&events).unwrap();
        assert!(!dump.contains("not the password at all"));
        assert!(!dump.contains(OPERATOR_PASSWORD));
        assert!(!dump.contains(&op.token));
    }

    /// Kura ID stores the event of a state change in the change's own
    /// transaction, so the request's facts must reach it there.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn events_stored_with_identity_changes_carry_the_request_facts() {
        let server = TestServer::spawn().await;
        let op = server.sign_up_first_operator().await;
        let r = post(
            &server,
            "/api/v1/sessions",
            None,
            json!({ "email": op.email, "password": OPERATOR_PASSWORD }),
        )
        .await;
        assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
        let request_id = r.header("x-request-id").unwrap().to_owned();
        let session = r.json()["session_id"].as_str().unwrap().to_owned();

        let events = logged_actions(&server.events).await;
        let signed_in = events
            .iter()
            .find(|e| e.request_id.as_deref() == Some(request_id.as_str()))
            .expect("the sign-in's event carries its request id");
        assert_eq!(signed_in.action.as_str(), "auth.signin.succeeded");
        assert_eq!(signed_in.details["session"], session.as_str());
        assert_eq!(signed_in.user_agent.as_deref(), Some("kura-api-tests/1"));
        assert_eq!(signed_in.source, Some("127.0.0.1".parse().unwrap()));
    }

    pub(super) struct Tenant {
        pub(super) id: String,
        pub(super) owner: String,
        pub(super) owner_account: String,
    }

    pub(super) async fn tenant(server: &TestServer, op: &SignedInOperator, name: &str) -> Tenant {
        let email = format!("owner@{name}.test");
        let r = post(
            server,
            "/api/v1/teams",
            Some(&op.token),
            json!({ "name": name, "owner_email": email }),
        )
        .await;
        assert_eq!(r.status, 201, "{}", r.text);
        let id = r.json()["id"].as_str().unwrap().to_owned();
        let invite = r.json()["owner_invitation"]["token"]
            .as_str()
            .unwrap()
            .to_owned();
        let r = post(server, "/api/v1/invitations/accept", None, json!({
            "token": invite, "display_name": format!("{name} owner"), "password": OWNER_PASSWORD,
        }))
        .await;
        assert_eq!(r.status, 201, "{}", r.text);
        let owner_account = r.json()["account_id"].as_str().unwrap().to_owned();
        // The invitation is single-use.
        let again = post(
            server,
            "/api/v1/invitations/accept",
            None,
            json!({
                "token": invite, "display_name": "again", "password": OWNER_PASSWORD,
            }),
        )
        .await;
        let status = again.status.as_u16();
        assert!(status == 409 || status == 410, "{}", again.text);
        let r = post(
            server,
            "/api/v1/sessions",
            None,
            json!({ "email": email, "password": OWNER_PASSWORD }),
        )
        .await;
        assert_eq!(r.status, 201, "{}", r.text);
        assert_eq!(r.json()["next"], "done");
        Tenant {
            id,
            owner: r.json()["token"].as_str().unwrap().to_owned(),
            owner_account,
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn no_team_scoped_route_lets_team_a_touch_team_b() {
        let server = TestServer::spawn().await;
        let op = server.sign_up_first_operator().await;
        let a = tenant(&server, &op, "alpha").await;
        let b = tenant(&server, &op, "bravo").await;

        // Team A: an admin (through an invitation) and a personal token.
        let r = post(
            &server,
            &format!("/api/v1/teams/{}/invitations", a.id),
            Some(&a.owner),
            json!({
                "email": "admin@alpha.test", "role": "admin",
            }),
        )
        .await;
        assert_eq!(r.status, 201, "{}", r.text);
        let invite = r.json()["token"].as_str().unwrap().to_owned();
        let r = post(
            &server,
            "/api/v1/invitations/accept",
            None,
            json!({
                "token": invite, "display_name": "Alpha admin", "password": OWNER_PASSWORD,
            }),
        )
        .await;
        assert_eq!(r.status, 201, "{}", r.text);
        let r = post(
            &server,
            "/api/v1/sessions",
            None,
            json!({ "email": "admin@alpha.test", "password": OWNER_PASSWORD }),
        )
        .await;
        let a_admin = r.json()["token"].as_str().unwrap().to_owned();
        let r = post(&server, "/api/v1/tokens", Some(&a.owner), json!({
            "name": "ci", "kind": "personal", "scopes": ["team:read", "members:read", "account:read"], "expires_in_days": 30,
        }))
        .await;
        assert_eq!(r.status, 201, "{}", r.text);
        let a_token = r.json()["token"].as_str().unwrap().to_owned();
        // The token works in its own team.
        let own = get(
            &server,
            &format!("/api/v1/teams/{}/members", a.id),
            &a_token,
        )
        .await;
        assert_eq!(own.status, 200, "{}", own.text);

        // Team B's objects.
        let r = post(
            &server,
            &format!("/api/v1/teams/{}/groups", b.id),
            Some(&b.owner),
            json!({ "name": "ops" }),
        )
        .await;
        assert_eq!(r.status, 201, "{}", r.text);
        let b_group = r.json()["id"].as_str().unwrap().to_owned();
        let r = post(
            &server,
            &format!("/api/v1/teams/{}/invitations", b.id),
            Some(&b.owner),
            json!({
                "email": "someone@bravo.test", "role": "member",
            }),
        )
        .await;
        assert_eq!(r.status, 201, "{}", r.text);
        let b_invitation = r.json()["id"].as_str().unwrap().to_owned();
        let r = post(
            &server,
            &format!("/api/v1/teams/{}/hosts", b.id),
            Some(&b.owner),
            json!({ "name": "bravo" }),
        )
        .await;
        assert_eq!(r.status, 201, "{}", r.text);
        let b_host = r.json()["id"].as_str().unwrap().to_owned();
        let r = post(
            &server,
            &format!("/api/v1/teams/{}/hosts/{b_host}/apps", b.id),
            Some(&b.owner),
            json!({ "name": "Ledger" }),
        )
        .await;
        assert_eq!(r.status, 201, "{}", r.text);
        let b_app = r.json()["id"].as_str().unwrap().to_owned();
        let flow_doc = json!({ "name": "b", "trigger": { "kind": "manual" },
            "steps": [{ "id": "d", "kind": "delay", "seconds": 3600 }] });
        let r = post(
            &server,
            &format!("/api/v1/teams/{}/flows", b.id),
            Some(&b.owner),
            json!({ "document": flow_doc }),
        )
        .await;
        assert_eq!(r.status, 201, "{}", r.text);
        let b_flow = r.json()["flow"]["id"].as_str().unwrap().to_owned();
        let r = post(
            &server,
            &format!("/api/v1/teams/{}/flows/{b_flow}/runs", b.id),
            Some(&b.owner),
            json!({ "input": {} }),
        )
        .await;
        assert_eq!(r.status, 202, "{}", r.text);
        let b_run = r.json()["id"].as_str().unwrap().to_owned();
        let r = post(
            &server,
            &format!("/api/v1/teams/{}/flow-credentials", b.id),
            Some(&b.owner),
            json!({ "name": "crm", "kind": "bearer", "secret": "bravo-secret-123" }),
        )
        .await;
        assert_eq!(r.status, 201, "{}", r.text);
        let b_credential = r.json()["id"].as_str().unwrap().to_owned();
        // A run of team B waiting for an approval that names team A's
        // owner (who is no member of B, so still may not decide).
        let r = post(
            &server,
            &format!("/api/v1/teams/{}/flows", b.id),
            Some(&b.owner),
            json!({ "document": { "name": "ask", "trigger": { "kind": "manual" }, "steps": [
                { "id": "ask", "kind": "approval", "approvers": ["owner@alpha.test", "owner@bravo.test"],
                  "message": "ok?", "timeout_seconds": 3600,
                  "on_approve": "d", "on_reject": "d", "on_timeout": "d" },
                { "id": "d", "kind": "delay", "seconds": 1 }
            ] } }),
        )
        .await;
        assert_eq!(r.status, 201, "{}", r.text);
        let b_ask = r.json()["flow"]["id"].as_str().unwrap().to_owned();
        let r = post(
            &server,
            &format!("/api/v1/teams/{}/flows/{b_ask}/runs", b.id),
            Some(&b.owner),
            json!({ "input": {} }),
        )
        .await;
        assert_eq!(r.status, 202, "{}", r.text);
        let b_pending = format!("/api/v1/teams/{}/approvals?status=pending", b.id);
        let b_approval = loop {
            let r = get(&server, &b_pending, &b.owner).await;
            if let Some(id) = r.json()["approvals"][0]["id"].as_str() {
                break id.to_owned();
            }
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        };
        let b_before = (
            get(&server, &format!("/api/v1/teams/{}", b.id), &b.owner)
                .await
                .text,
            get(
                &server,
                &format!("/api/v1/teams/{}/members", b.id),
                &b.owner,
            )
            .await
            .text,
            get(
                &server,
                &format!("/api/v1/teams/{}/invitations", b.id),
                &b.owner,
            )
            .await
            .text,
            get(&server, &format!("/api/v1/teams/{}/groups", b.id), &b.owner)
                .await
                .text,
        );

        let routes: Vec<_> = kura_server::api_routes()
            .into_iter()
            .filter(|r| r.path.starts_with("/api/v1/teams/{id}"))
            .collect();
        assert!(routes.len() >= 12, "{routes:?}");
        let mut checked = 0;
        for route in &routes {
            let path = route
                .path
                .replace("{id}", &b.id)
                .replace("{account}", &b.owner_account)
                .replace("{invitation}", &b_invitation)
                .replace("{group}", &b_group)
                .replace("{kind}", "account")
                .replace("{subject}", &b.owner_account)
                .replace("{role}", "owner")
                .replace("{host}", &b_host)
                .replace("{app}", &b_app)
                .replace("{name}", "admin")
                .replace("{table}", "contacts")
                .replace("{flow}", &b_flow)
                .replace("{run}", &b_run)
                .replace("{credential}", &b_credential)
                .replace("{approval}", &b_approval)
                .replace("{grant}", "0195d7c4-0000-7000-8000-000000000000");
            assert!(
                !path.contains('{'),
                "no test value for a parameter of {path}"
            );
            let body = match (route.method, route.path) {
                ("GET" | "DELETE", _) => None,
                ("PUT", "/api/v1/teams/{id}/mfa-policy") => {
                    Some(json!({ "applies_to": "all_members", "strength": "any" }))
                }
                ("POST", "/api/v1/teams/{id}/invitations") => {
                    Some(json!({ "email": "evil@alpha.test", "role": "owner" }))
                }
                ("POST", "/api/v1/teams/{id}/groups") => Some(json!({ "name": "evil" })),
                ("PUT", "/api/v1/teams/{id}/groups/{group}/members/{account}") => {
                    Some(json!({ "member": false }))
                }
                ("POST", "/api/v1/teams/{id}/role-grants") => Some(json!({
                    "subject_kind": "account", "subject_id": a.owner_account, "role": "owner",
                })),
                ("POST", "/api/v1/teams/{id}/hosts") => Some(json!({ "name": "evil" })),
                ("PATCH", "/api/v1/teams/{id}/hosts/{host}") => Some(json!({ "name": "evil" })),
                ("POST", "/api/v1/teams/{id}/hosts/{host}/apps") => Some(json!({ "name": "Evil" })),
                ("PATCH", "/api/v1/teams/{id}/apps/{app}") => Some(json!({ "status": "closed" })),
                ("PUT", "/api/v1/teams/{id}/apps/{app}/schema") => {
                    Some(json!({ "definition": {}, "allow_data_loss": true }))
                }
                ("POST", "/api/v1/teams/{id}/apps/{app}/accounts") => Some(json!({
                    "name": "evil", "password": "evil password 12345", "privilege_set": "[Full Access]",
                })),
                ("PATCH", "/api/v1/teams/{id}/apps/{app}/accounts/{name}") => {
                    Some(json!({ "active": false }))
                }
                ("POST", "/api/v1/teams/{id}/apps/{app}/tables/{table}/import") => {
                    Some(json!("name\nevil"))
                }
                ("PUT", "/api/v1/teams/{id}/firewall") => {
                    Some(json!({ "allow": ["203.0.113.0/24"] }))
                }
                ("PUT", "/api/v1/teams/{id}/waf") => Some(json!({ "rules": { "150": "off" } })),
                ("PUT", "/api/v1/teams/{id}/hosts/{host}/firewall") => {
                    Some(json!({ "allow": ["203.0.113.0/24"] }))
                }
                ("PUT", "/api/v1/teams/{id}/hosts/{host}/waf") => {
                    Some(json!({ "rules": { "150": "off" } }))
                }
                ("POST", "/api/v1/teams/{id}/flows")
                | ("PUT", "/api/v1/teams/{id}/flows/{flow}") => {
                    Some(json!({ "document": flow_doc }))
                }
                (
                    "POST",
                    "/api/v1/teams/{id}/flows/{flow}/enable"
                    | "/api/v1/teams/{id}/flows/{flow}/disable"
                    | "/api/v1/teams/{id}/runs/{run}/cancel",
                ) => Some(json!({})),
                ("POST", "/api/v1/teams/{id}/flows/{flow}/runs") => Some(json!({ "input": {} })),
                ("POST", "/api/v1/teams/{id}/runs/{run}/rerun") => Some(json!({ "from": "start" })),
                ("POST", "/api/v1/teams/{id}/flow-credentials") => Some(json!({
                    "name": "evil", "kind": "bearer", "secret": "evil secret 12345",
                })),
                ("POST", "/api/v1/teams/{id}/flow-credentials/{credential}/authorize") => {
                    Some(json!({}))
                }
                ("POST", "/api/v1/teams/{id}/approvals/{approval}/decision") => {
                    Some(json!({ "decision": "approve" }))
                }
                ("POST", "/api/v1/teams/{id}/operator-access") => Some(json!({
                    "operator_id": a.owner_account, "role": "admin", "minutes": 60,
                    "reason": "let me in",
                })),
                other => panic!("add a valid body for the new team-scoped route {other:?}"),
            };
            let method = Method::from_bytes(route.method.as_bytes()).unwrap();
            for (who, credential) in [
                ("owner", &a.owner),
                ("admin", &a_admin),
                ("token", &a_token),
            ] {
                let r = call(
                    &server,
                    method.clone(),
                    &path,
                    Some(credential),
                    body.clone(),
                )
                .await;
                let status = r.status.as_u16();
                assert!(
                    status == 403 || status == 404,
                    "team A's {who} got {status} on {} {}: {}",
                    route.method,
                    route.path,
                    r.text
                );
                r.problem(status);
                checked += 1;
            }
        }
        assert_eq!(checked, routes.len() * 3);
        let b_after = (
            get(&server, &format!("/api/v1/teams/{}", b.id), &b.owner)
                .await
                .text,
            get(
                &server,
                &format!("/api/v1/teams/{}/members", b.id),
                &b.owner,
            )
            .await
            .text,
            get(
                &server,
                &format!("/api/v1/teams/{}/invitations", b.id),
                &b.owner,
            )
            .await
            .text,
            get(&server, &format!("/api/v1/teams/{}/groups", b.id), &b.owner)
                .await
                .text,
        );
        assert_eq!(b_before, b_after, "team B changed");
        let r = get(&server, &b_pending, &b.owner).await;
        assert_eq!(
            r.json()["approvals"][0]["id"],
            b_approval.as_str(),
            "still pending"
        );
        // Team A's owner does not see team B in its list either.
        let listed = get(&server, "/api/v1/teams", &a.owner).await.json();
        let ids: BTreeSet<&str> = listed
            .as_array()
            .unwrap()
            .iter()
            .map(|t| t["id"].as_str().unwrap())
            .collect();
        assert_eq!(ids, BTreeSet::from([a.id.as_str()]));
        let denied = logged_actions(&server.events)
            .await
            .into_iter()
            .filter(|e| e.action.as_str() == "authz.denied")
            .count();
        assert!(denied >= routes.len(), "{denied}");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn security_events_are_queryable_by_responders_and_team_auditors_only() {
        let server = TestServer::spawn().await;
        let op = server.sign_up_first_operator().await;
        let a = tenant(&server, &op, "alpha").await;
        let b = tenant(&server, &op, "bravo").await;
        let failed = post(
            &server,
            "/api/v1/sessions",
            None,
            json!({
                "email": "owner@alpha.test", "password": "not the password at all",
            }),
        )
        .await;
        failed.problem(401);
        let failed_id = failed.header("x-request-id").unwrap().to_owned();
        // Team A's events carry its team; give it one.
        let r = post(
            &server,
            &format!("/api/v1/teams/{}/groups", a.id),
            Some(&a.owner),
            json!({ "name": "ops" }),
        )
        .await;
        assert_eq!(r.status, 201, "{}", r.text);

        // The operator (security responder) filters the whole log.
        let r = get(
            &server,
            &format!("/api/v1/events?action=auth.signin&outcome=failure&request_id={failed_id}"),
            &op.token,
        )
        .await;
        assert_eq!(r.status, 200, "{}", r.text);
        let page = r.json();
        let events = page["events"].as_array().unwrap();
        assert_eq!(events.len(), 1, "{page}");
        assert_eq!(events[0]["action"], "auth.signin.failed");
        assert_eq!(events[0]["outcome"], "failure");
        assert_eq!(events[0]["source"], "127.0.0.1");

        // Cursor pagination walks everything exactly once.
        let all = get(&server, "/api/v1/events?limit=1000", &op.token)
            .await
            .json();
        let total = all["events"].as_array().unwrap().len();
        assert!(total > 4, "{all}");
        let mut seen = Vec::new();
        let mut cursor: Option<String> = None;
        loop {
            let path = match &cursor {
                Some(c) => format!("/api/v1/events?limit=3&cursor={c}"),
                None => "/api/v1/events?limit=3".to_owned(),
            };
            let page = get(&server, &path, &op.token).await.json();
            for e in page["events"].as_array().unwrap() {
                seen.push(e["seq"].as_u64().unwrap());
            }
            match page["next_cursor"].as_str() {
                Some(c) => cursor = Some(c.to_owned()),
                None => break,
            }
        }
        let unique: BTreeSet<u64> = seen.iter().copied().collect();
        assert_eq!(unique.len(), seen.len());
        assert!(seen.len() >= total, "{} < {total}", seen.len());

        // CSV by Accept header and by parameter.
        let r = server
            .client
            .get(server.url("/api/v1/events?action=auth.signin.failed"))
            .bearer_auth(&op.token)
            .header("accept", "text/csv")
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        assert_eq!(r.headers()["content-type"], "text/csv; charset=utf-8");
        let text = r.text().await.unwrap();
        let mut lines = text.lines();
        assert!(
            lines
                .next()
                .unwrap()
                .starts_with("seq,time,action,outcome,actor")
        );
        assert!(
            lines.any(|l| l.contains(",auth.signin.failed,failure,")),
            "{text}"
        );
        let r = get(&server, "/api/v1/events?format=csv&limit=1", &op.token).await;
        assert_eq!(r.header("content-type"), Some("text/csv; charset=utf-8"));

        // Invalid filters are named.
        for (query, name) in [
            ("since=yesterday", "since"),
            ("outcome=maybe", "outcome"),
            ("source=localhost", "source"),
            ("team=x", "team"),
            ("colour=red", "colour"),
        ] {
            let r = get(&server, &format!("/api/v1/events?{query}"), &op.token).await;
            let p = r.problem(400);
            assert!(
                p["detail"].as_str().unwrap().contains(&format!("`{name}`")),
                "{p}"
            );
        }

        // A team owner reads only its own team's events.
        get(&server, "/api/v1/events", &a.owner).await.problem(403);
        let denied = get(&server, &format!("/api/v1/events?team={}", b.id), &a.owner).await;
        assert!(
            denied.status == 403 || denied.status == 404,
            "{}",
            denied.text
        );
        let r = get(&server, &format!("/api/v1/events?team={}", a.id), &a.owner).await;
        assert_eq!(r.status, 200, "{}", r.text);
        let own = r.json();
        let own = own["events"].as_array().unwrap();
        assert!(!own.is_empty());
        assert!(own.iter().all(|e| e["team"] == a.id.as_str()), "{own:?}");

        // Every export is itself on the record.
        let exports = logged_actions(&server.events)
            .await
            .into_iter()
            .filter(|e| e.action.as_str() == "data.export")
            .count();
        assert!(exports >= 6, "{exports}");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn disabling_an_account_ends_its_sessions_and_tokens() {
        let server = TestServer::spawn().await;
        let op = server.sign_up_first_operator().await;
        let a = tenant(&server, &op, "alpha").await;
        let r = post(
            &server,
            &format!("/api/v1/teams/{}/invitations", a.id),
            Some(&a.owner),
            json!({
                "email": "member@alpha.test", "role": "member",
            }),
        )
        .await;
        assert_eq!(r.status, 201, "{}", r.text);
        let invite = r.json()["token"].as_str().unwrap().to_owned();
        let r = post(
            &server,
            "/api/v1/invitations/accept",
            None,
            json!({
                "token": invite, "display_name": "Member", "password": OWNER_PASSWORD,
            }),
        )
        .await;
        assert_eq!(r.status, 201, "{}", r.text);
        let member = r.json()["account_id"].as_str().unwrap().to_owned();
        let r = post(
            &server,
            "/api/v1/sessions",
            None,
            json!({ "email": "member@alpha.test", "password": OWNER_PASSWORD }),
        )
        .await;
        let session = r.json()["token"].as_str().unwrap().to_owned();
        let r = post(
            &server,
            "/api/v1/tokens",
            Some(&session),
            json!({
                "name": "ci", "kind": "personal", "scopes": ["account:read"], "expires_in_days": 1,
            }),
        )
        .await;
        assert_eq!(r.status, 201, "{}", r.text);
        let token = r.json()["token"].as_str().unwrap().to_owned();
        assert_eq!(get(&server, "/api/v1/me", &token).await.status, 200);
        // A member cannot disable its owner (higher privilege).
        let r = call(
            &server,
            Method::POST,
            &format!("/api/v1/accounts/{}/disable", a.owner_account),
            Some(&session),
            None,
        )
        .await;
        let status = r.status.as_u16();
        assert!(status == 403 || status == 404, "{}", r.text);
        // The owner disables the member: every session and token ends.
        let r = call(
            &server,
            Method::POST,
            &format!("/api/v1/accounts/{member}/disable"),
            Some(&a.owner),
            None,
        )
        .await;
        assert_eq!(r.status, 204, "{}", r.text);
        get(&server, "/api/v1/me", &session).await.problem(401);
        get(&server, "/api/v1/me", &token).await.problem(401);
        let r = post(
            &server,
            "/api/v1/sessions",
            None,
            json!({ "email": "member@alpha.test", "password": OWNER_PASSWORD }),
        )
        .await;
        r.problem(401);
        assert_eq!(get(&server, "/api/v1/me", &a.owner).await.status, 200);
        // The member cannot re-enable itself or anyone; the owner can, once.
        let enable = format!("/api/v1/accounts/{member}/enable");
        let r = call(&server, Method::POST, &enable, Some(&a.owner), None).await;
        assert_eq!(r.status, 204, "{}", r.text);
        let p = call(&server, Method::POST, &enable, Some(&a.owner), None)
            .await
            .problem(409);
        assert_eq!(p["type"], "urn:kura:problem:account-status");
        let r = post(
            &server,
            "/api/v1/sessions",
            None,
            json!({ "email": "member@alpha.test", "password": OWNER_PASSWORD }),
        )
        .await;
        assert_eq!(r.status, 201, "{}", r.text);
        // Revoked sessions and tokens stay revoked.
        get(&server, "/api/v1/me", &session).await.problem(401);
        get(&server, "/api/v1/me", &token).await.problem(401);
        let session = r.json()["token"].as_str().unwrap().to_owned();
        let owner_enable = format!("/api/v1/accounts/{}/enable", a.owner_account);
        let status = call(&server, Method::POST, &owner_enable, Some(&session), None)
            .await
            .status
            .as_u16();
        assert!(status == 403 || status == 404, "{status}");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_openapi_document_describes_exactly_the_routes() {
        let server = TestServer::spawn().await;
        let r = server
            .client
            .get(server.url("/api/v1/openapi.json"))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        let doc: Value = r.json().await.unwrap();
        assert_eq!(doc["openapi"], "3.1.0");
        let mut documented = BTreeSet::new();
        for (path, ops) in doc["paths"].as_object().unwrap() {
            for (method, op) in ops.as_object().unwrap() {
                assert!(op["operationId"].is_string(), "{method} {path}");
                assert!(op["responses"].is_object(), "{method} {path}");
                documented.insert((method.to_ascii_uppercase(), path.clone()));
            }
        }
        let routed: BTreeSet<(String, String)> = kura_server::api_routes()
            .into_iter()
            .map(|r| (r.method.to_owned(), r.path.to_owned()))
            .collect();
        let undocumented: Vec<_> = routed.difference(&documented).collect();
        let unrouted: Vec<_> = documented.difference(&routed).collect();
        assert!(
            undocumented.is_empty(),
            "routes missing from the document: {undocumented:?}"
        );
        assert!(
            unrouted.is_empty(),
            "documented but not routed: {unrouted:?}"
        );
        // Every route answers something other than the 404 fallback.
        for (method, path) in &routed {
            let r = server
                .client
                .request(
                    Method::from_bytes(method.as_bytes()).unwrap(),
                    server.url(path),
                )
                .send()
                .await
                .unwrap();
            assert_ne!(r.status(), 404, "{method} {path} is not routed");
            assert_ne!(r.status(), 405, "{method} {path} is not routed");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn repeated_sign_in_failures_open_an_incident() {
    use kura_server::kura_events::EventSink as _;
    use kura_server::kura_events::incident::IncidentListQuery;
    use kura_types::{Action, Actor, Outcome, SecurityEvent};

    let server = TestServer::spawn().await;
    let before = server
        .incidents
        .list(IncidentListQuery::default())
        .await
        .unwrap();
    assert!(before.incidents.is_empty());
    for _ in 0..kura_server::kura_events::detect::SIGNIN_FAILURES_PER_ACCOUNT {
        let event = SecurityEvent::new(
            time::OffsetDateTime::now_utc(),
            Actor::Anonymous,
            Action::parse("auth.signin.failed").unwrap(),
            Outcome::Failure,
        )
        .with_target("victim@example.com");
        server.events.record(event).await.unwrap();
    }
    let after = server
        .incidents
        .list(IncidentListQuery::default())
        .await
        .unwrap();
    assert_eq!(after.incidents.len(), 1, "{after:?}");
    let detail = server.incidents.get(after.incidents[0].id).await.unwrap();
    assert!(!detail.alerts.is_empty());
    assert!(detail.events.len() >= kura_server::kura_events::detect::SIGNIN_FAILURES_PER_ACCOUNT);
}

/// `/api/v1/incidents` for responders and `/api/v1/events/ingest` for
/// outside systems holding a team's ingest token, over the real server.
mod incident_and_ingest_api {
    use kura_server::kura_events::VerifyOptions;
    use kura_testkit::{SignedInOperator, TestServer};
    use reqwest::Method;
    use serde_json::{Value, json};
    use time::format_description::well_known::Rfc3339;
    use time::{Duration, OffsetDateTime};

    use super::kura_id_api::{Reply, Tenant, call, get, logged_actions, post, tenant};

    fn at(offset: Duration) -> String {
        (OffsetDateTime::now_utc() + offset)
            .format(&Rfc3339)
            .unwrap()
    }

    fn external(action: &str) -> Value {
        json!({
            "time": at(Duration::minutes(-5)),
            "action": action,
            "outcome": "denied",
            "actor": "fw1.example/pf",
            "target": "port:22",
            "source": "198.51.100.9",
            "details": { "rule": "ssh-bruteforce" },
        })
    }

    async fn transition(
        server: &TestServer,
        op: &SignedInOperator,
        id: &str,
        state: &str,
        note: Option<&str>,
    ) -> Reply {
        let mut body = json!({ "state": state });
        if let Some(n) = note {
            body["note"] = json!(n);
        }
        post(
            server,
            &format!("/api/v1/incidents/{id}/transitions"),
            Some(&op.token),
            body,
        )
        .await
    }

    /// A service token of `team` created by its owner; returns (token, id).
    async fn service_token(
        server: &TestServer,
        team: &Tenant,
        scopes: &[&str],
    ) -> (String, String) {
        let r = post(
            server,
            "/api/v1/tokens",
            Some(&team.owner),
            json!({
                "name": "firewall", "kind": "service", "scopes": scopes,
                "expires_in_days": 1, "team_id": team.id, "role": "member",
            }),
        )
        .await;
        assert_eq!(r.status, 201, "{}", r.text);
        let j = r.json();
        (
            j["token"].as_str().unwrap().to_owned(),
            j["id"].as_str().unwrap().to_owned(),
        )
    }

    async fn ingested(server: &TestServer) -> Vec<kura_types::SecurityEvent> {
        logged_actions(&server.events)
            .await
            .into_iter()
            .filter(|e| e.actor.key().starts_with("system:ingest:"))
            .collect()
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn responders_run_an_incident_from_open_to_closed_and_invalid_moves_change_nothing() {
        let server = TestServer::spawn().await;
        let op = server.sign_up_first_operator().await;
        let linked = logged_actions(&server.events).await[0].id.to_string();

        let r = post(
            &server,
            "/api/v1/incidents",
            Some(&op.token),
            json!({
                "title": "Suspicious sign-ins", "severity": "sev2",
                "events": [linked], "note": "seen by the night shift",
            }),
        )
        .await;
        assert_eq!(r.status, 201, "{}", r.text);
        let incident = r.json();
        let id = incident["id"].as_str().unwrap().to_owned();
        assert_eq!(incident["state"], "open");
        assert_eq!(incident["severity"], "sev2");
        assert_eq!(incident["next_states"], json!(["triaged"]));

        let me = format!("account:{}", op.account_id);
        let r = call(
            &server,
            Method::PUT,
            &format!("/api/v1/incidents/{id}/owner"),
            Some(&op.token),
            Some(json!({ "owner": me })),
        )
        .await;
        assert_eq!(r.status, 200, "{}", r.text);
        assert_eq!(r.json()["owner"], me.as_str());

        let steps = [
            "triaged",
            "investigating",
            "contained",
            "resolved",
            "closed",
        ];
        for state in steps {
            let r = transition(&server, &op, &id, state, Some(&format!("now {state}"))).await;
            assert_eq!(r.status, 200, "{state}: {}", r.text);
            assert_eq!(r.json()["state"], state);
        }
        let r = post(
            &server,
            &format!("/api/v1/incidents/{id}/notes"),
            Some(&op.token),
            json!({ "text": "post-incident review done" }),
        )
        .await;
        assert_eq!(r.status, 204, "{}", r.text);

        let r = get(&server, &format!("/api/v1/incidents/{id}"), &op.token).await;
        assert_eq!(r.status, 200, "{}", r.text);
        let detail = r.json();
        assert_eq!(detail["incident"]["state"], "closed");
        assert_eq!(detail["incident"]["next_states"], json!([]));
        let timeline = detail["timeline"].as_array().unwrap();
        let moves: Vec<&str> = timeline
            .iter()
            .filter(|t| t["kind"] == "state")
            .map(|t| t["text"].as_str().unwrap())
            .collect();
        assert_eq!(
            moves,
            [
                "open → triaged",
                "triaged → investigating",
                "investigating → contained",
                "contained → resolved",
                "resolved → closed",
            ]
        );
        assert!(
            timeline.iter().all(|t| t["actor"] == me.as_str()),
            "{timeline:?}"
        );
        let notes: Vec<&str> = timeline
            .iter()
            .filter(|t| t["kind"] == "note")
            .map(|t| t["text"].as_str().unwrap())
            .collect();
        assert_eq!(notes.first(), Some(&"seen by the night shift"));
        assert_eq!(notes.last(), Some(&"post-incident review done"));
        assert_eq!(detail["events"].as_array().unwrap().len(), 1);
        assert_eq!(detail["events"][0]["id"], linked.as_str());
        assert!(detail["alerts"].is_array() && detail["notifications"].is_array());

        // Every change is an event by the acting operator.
        let changes: Vec<_> = logged_actions(&server.events)
            .await
            .into_iter()
            .filter(|e| e.target.as_deref() == Some(&format!("incident:{id}")))
            .collect();
        let actions: Vec<&str> = changes.iter().map(|e| e.action.as_str()).collect();
        assert_eq!(actions.first(), Some(&"incident.opened"));
        assert_eq!(
            actions
                .iter()
                .filter(|a| **a == "incident.state.changed")
                .count(),
            5
        );
        assert!(actions.contains(&"incident.assigned"));
        assert!(actions.contains(&"incident.note.added"));
        assert!(changes.iter().all(|e| e.actor.key() == me), "{changes:?}");

        // Closed is final; from open only triaged is allowed. Neither
        // refusal changes the incident or records an event.
        let r = post(
            &server,
            "/api/v1/incidents",
            Some(&op.token),
            json!({ "title": "Port scan", "severity": "sev4" }),
        )
        .await;
        assert_eq!(r.status, 201, "{}", r.text);
        let second = r.json()["id"].as_str().unwrap().to_owned();
        let before_events = logged_actions(&server.events).await.len();
        let before = get(&server, &format!("/api/v1/incidents/{second}"), &op.token)
            .await
            .json();
        let p = transition(&server, &op, &second, "closed", Some("skip ahead"))
            .await
            .problem(409);
        let detail_text = p["detail"].as_str().unwrap();
        assert!(
            detail_text.contains("from open it may move to triaged"),
            "{p}"
        );
        transition(&server, &op, &id, "investigating", None)
            .await
            .problem(409);
        let after = get(&server, &format!("/api/v1/incidents/{second}"), &op.token)
            .await
            .json();
        assert_eq!(before, after);
        assert_eq!(after["incident"]["state"], "open");
        let changed = logged_actions(&server.events)
            .await
            .into_iter()
            .skip(before_events)
            .filter(|e| e.action.as_str().starts_with("incident."))
            .count();
        assert_eq!(changed, 0);

        // Bad input is named; an unknown incident is 404.
        transition(&server, &op, &second, "reopened", None)
            .await
            .problem(422);
        let r = post(
            &server,
            "/api/v1/incidents",
            Some(&op.token),
            json!({ "title": "x", "severity": "sev9" }),
        )
        .await;
        assert!(
            r.problem(422)["detail"]
                .as_str()
                .unwrap()
                .contains("severity")
        );
        let unknown = "0190f000-0000-7000-8000-000000000000";
        get(&server, &format!("/api/v1/incidents/{unknown}"), &op.token)
            .await
            .problem(404);

        // Lists filter by state and severity.
        let closed = get(&server, "/api/v1/incidents?state=closed", &op.token)
            .await
            .json();
        let ids: Vec<&str> = closed["incidents"]
            .as_array()
            .unwrap()
            .iter()
            .map(|i| i["id"].as_str().unwrap())
            .collect();
        assert_eq!(ids, [id.as_str()]);
        let open = get(
            &server,
            "/api/v1/incidents?state=open&severity=sev4",
            &op.token,
        )
        .await
        .json();
        assert_eq!(open["incidents"][0]["id"], second.as_str());
        assert_eq!(open["incidents"].as_array().unwrap().len(), 1);
        get(&server, "/api/v1/incidents?state=reopened", &op.token)
            .await
            .problem(400);
        // The cursor pages through both, newest first, each once.
        let first = get(&server, "/api/v1/incidents?limit=1", &op.token)
            .await
            .json();
        assert_eq!(first["incidents"][0]["id"], second.as_str());
        let cursor = first["next_cursor"].as_str().unwrap().to_owned();
        let next = get(
            &server,
            &format!("/api/v1/incidents?limit=1&cursor={cursor}"),
            &op.token,
        )
        .await
        .json();
        assert_eq!(next["incidents"][0]["id"], id.as_str());
        assert_eq!(next["incidents"].as_array().unwrap().len(), 1);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn principals_without_the_responder_role_are_refused_incidents() {
        let server = TestServer::spawn().await;
        let op = server.sign_up_first_operator().await;
        let a = tenant(&server, &op, "alpha").await;
        let r = post(
            &server,
            "/api/v1/incidents",
            Some(&op.token),
            json!({ "title": "Team alpha compromise", "severity": "sev1", "team": a.id }),
        )
        .await;
        assert_eq!(r.status, 201, "{}", r.text);
        let id = r.json()["id"].as_str().unwrap().to_owned();

        // Not even a team owner, for its own team's incident.
        get(&server, "/api/v1/incidents", &a.owner)
            .await
            .problem(403);
        get(&server, &format!("/api/v1/incidents/{id}"), &a.owner)
            .await
            .problem(403);
        post(
            &server,
            "/api/v1/incidents",
            Some(&a.owner),
            json!({ "title": "mine", "severity": "sev4", "team": a.id }),
        )
        .await
        .problem(403);
        post(
            &server,
            &format!("/api/v1/incidents/{id}/transitions"),
            Some(&a.owner),
            json!({ "state": "triaged" }),
        )
        .await
        .problem(403);
        post(
            &server,
            &format!("/api/v1/incidents/{id}/notes"),
            Some(&a.owner),
            json!({ "text": "hello" }),
        )
        .await
        .problem(403);
        let list = server
            .incidents
            .list(Default::default())
            .await
            .unwrap()
            .incidents;
        assert_eq!(list.len(), 1);
        assert_eq!(list[0].state.as_str(), "open");
        let denied = logged_actions(&server.events)
            .await
            .into_iter()
            .filter(|e| {
                e.action.as_str() == "authz.denied"
                    && e.details.get("action") == Some(&json!("platform.incidents.manage"))
            })
            .count();
        assert_eq!(denied, 5);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn ingest_tokens_write_only_their_own_team_and_batches_are_all_or_nothing() {
        let server = TestServer::spawn().await;
        let op = server.sign_up_first_operator().await;
        let a = tenant(&server, &op, "alpha").await;
        let b = tenant(&server, &op, "bravo").await;
        let (token_a, token_a_id) = service_token(&server, &a, &["events:ingest"]).await;
        let (token_b, _) = service_token(&server, &b, &["events:ingest"]).await;
        let (read_only, _) = service_token(&server, &a, &["events:read"]).await;
        let path = "/api/v1/events/ingest";

        // A scoped token lands its events as its team, by a system actor.
        let r = post(
            &server,
            path,
            Some(&token_a),
            json!([external("edge.waf.blocked"), external("host.ssh.failed")]),
        )
        .await;
        assert_eq!(r.status, 202, "{}", r.text);
        assert_eq!(r.json()["accepted"], 2);
        let landed = ingested(&server).await;
        assert_eq!(landed.len(), 2, "{landed:?}");
        let team_a: kura_types::TeamId = a.id.parse().unwrap();
        for e in &landed {
            assert_eq!(e.team, Some(team_a));
            assert_eq!(e.actor.key(), format!("system:ingest:{token_a_id}"));
            assert_eq!(e.source, Some("198.51.100.9".parse().unwrap()));
            assert_eq!(e.details["external_actor"], "fw1.example/pf");
            assert_eq!(e.details["ingest"], "https");
        }
        assert_eq!(landed[0].action.as_str(), "edge.waf.blocked");
        let report = server
            .events
            .verify(VerifyOptions::default())
            .await
            .unwrap();
        assert!(report.is_intact(), "{report}");
        // The team's owner reads them among its team's events.
        let own = get(
            &server,
            &format!("/api/v1/events?team={}&action=edge.waf", a.id),
            &a.owner,
        )
        .await;
        assert_eq!(own.status, 200, "{}", own.text);
        assert_eq!(own.json()["events"].as_array().unwrap().len(), 1);

        // Without the scope, with a session, or with a personal token: 403.
        post(
            &server,
            path,
            Some(&read_only),
            json!([external("edge.waf.blocked")]),
        )
        .await
        .problem(403);
        post(
            &server,
            path,
            Some(&a.owner),
            json!([external("edge.waf.blocked")]),
        )
        .await
        .problem(403);
        let r = post(
            &server,
            "/api/v1/tokens",
            Some(&a.owner),
            json!({
                "name": "mine", "kind": "personal", "scopes": ["events:ingest"],
                "expires_in_days": 1,
            }),
        )
        .await;
        assert_eq!(r.status, 201, "{}", r.text);
        let personal = r.json()["token"].as_str().unwrap().to_owned();
        let p = post(
            &server,
            path,
            Some(&personal),
            json!([external("edge.waf.blocked")]),
        )
        .await
        .problem(403);
        assert!(
            p["type"]
                .as_str()
                .unwrap()
                .contains("service-token-required"),
            "{p}"
        );
        post(&server, path, None, json!([external("edge.waf.blocked")]))
            .await
            .problem(401);

        // Team A's token cannot write into team B: naming a team is refused
        // (even its own), and nothing of the batch is recorded.
        for team in [&b.id, &a.id] {
            let mut forged = external("edge.waf.blocked");
            forged["team"] = json!(team);
            let p = post(
                &server,
                path,
                Some(&token_a),
                json!([external("edge.waf.blocked"), forged]),
            )
            .await
            .problem(422);
            assert!(p["detail"].as_str().unwrap().contains("[1].team"), "{p}");
        }
        // A batch with one bad event is refused whole, naming the event.
        let bad_batches = [
            (
                json!({ "time": at(Duration::minutes(-1)), "action": "Not An Action", "outcome": "success" }),
                "[2].action",
            ),
            (
                json!({ "time": at(Duration::minutes(30)), "action": "host.clock.skewed", "outcome": "success" }),
                "[2].time",
            ),
            (
                json!({ "time": at(Duration::hours(-25)), "action": "host.replayed.old", "outcome": "success" }),
                "[2].time",
            ),
            (
                json!({ "time": at(Duration::minutes(-1)), "action": "host.login.ok", "outcome": "maybe" }),
                "[2].outcome",
            ),
        ];
        for (bad, field) in bad_batches {
            let p = post(
                &server,
                path,
                Some(&token_a),
                json!([
                    external("edge.waf.blocked"),
                    external("host.ssh.failed"),
                    bad
                ]),
            )
            .await
            .problem(422);
            assert!(
                p["detail"].as_str().unwrap().contains(field),
                "{field}: {p}"
            );
        }
        let too_many: Vec<Value> = (0..501).map(|_| external("edge.waf.blocked")).collect();
        post(&server, path, Some(&token_a), Value::Array(too_many))
            .await
            .problem(422);
        let r = server
            .client
            .post(server.url(path))
            .bearer_auth(&token_a)
            .header("content-type", "application/json")
            .body(vec![b' '; 2 * 1024 * 1024])
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 413);
        assert_eq!(
            ingested(&server).await.len(),
            2,
            "a refused batch left events"
        );

        // Team B's token writes team B's events, never team A's.
        let r = post(
            &server,
            path,
            Some(&token_b),
            json!([external("edge.waf.blocked")]),
        )
        .await;
        assert_eq!(r.status, 202, "{}", r.text);
        let team_b: kura_types::TeamId = b.id.parse().unwrap();
        let all = ingested(&server).await;
        assert_eq!(all.len(), 3);
        assert_eq!(all.iter().filter(|e| e.team == Some(team_b)).count(), 1);
        assert_eq!(all.iter().filter(|e| e.team == Some(team_a)).count(), 2);
        let report = server
            .events
            .verify(VerifyOptions::default())
            .await
            .unwrap();
        assert!(report.is_intact(), "{report}");

        // Every refusal is counted by reason.
        let metrics = server
            .client
            .get(server.url("/metrics"))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        for reason in [
            "team",
            "action",
            "future",
            "stale",
            "outcome",
            "batch",
            "forbidden",
        ] {
            let line = metrics
                .lines()
                .find(|l| {
                    l.starts_with("kura_event_ingest_rejected")
                        && l.contains(&format!("reason=\"{reason}\""))
                })
                .unwrap_or_else(|| panic!("no counter for {reason}: {metrics}"));
            assert!(!line.ends_with(" 0"), "{line}");
        }
        assert!(
            metrics
                .lines()
                .any(|l| l.starts_with("kura_event_ingest_accepted") && l.ends_with(" 3")),
            "{metrics}"
        );
    }
}

#[path = "server/fmi.rs"]
mod fmi;

#[path = "server/apps_import.rs"]
mod apps_import;

#[path = "server/incident_channels.rs"]
mod incident_channels;

#[path = "server/connect.rs"]
mod connect;
#[path = "server/connect_apps.rs"]
mod connect_apps;
#[path = "server/connect_human.rs"]
mod connect_human;
#[path = "server/connect_inline.rs"]
mod connect_inline;
#[path = "server/connect_oauth.rs"]
mod connect_oauth;
#[path = "server/connect_smtp_credential.rs"]
mod connect_smtp_credential;
#[path = "server/console.rs"]
mod console;
#[path = "server/console_device.rs"]
mod console_device;
#[path = "server/console_flows.rs"]
mod console_flows;
#[path = "server/console_import.rs"]
mod console_import;
#[path = "server/console_pages.rs"]
mod console_pages;
#[path = "server/console_records.rs"]
mod console_records;
#[path = "server/console_schema.rs"]
mod console_schema;
#[path = "server/console_team.rs"]
mod console_team;
