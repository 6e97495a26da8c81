//! Boots the real Kura server for tests.
//!
//! [`TestServer::spawn`] opens a fresh installation in a temporary data
//! directory, binds `127.0.0.1:0` (so parallel tests never race for ports)
//! and serves HTTPS in-process; tests get its URL, a [`reqwest::Client`]
//! that trusts exactly the server's generated certificate, and the setup link
//! it issued. Dropping the server stops it and removes the directory.
//! [`TestServer::sign_up_first_operator`] walks the Kura ID setup through
//! the API (TOTP codes from `pyotp`, see [`pyotp_code`]) and hands back a
//! signed-in [`SignedInOperator`].
//!
//! This crate is test support: it may assume a cooperative caller and panics
//! with a clear message when the server cannot start, which in a test is the
//! right outcome.

// Test support: failing loudly is the point.
#![allow(clippy::expect_used, clippy::unwrap_used, clippy::panic)]

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use axum::Router;
use kura_config::Config;
use kura_server::{AppState, BoundServer, Platform, SetupLink};
use kura_store::{PlatformStore, Storage};
use kura_types::{Clock, SystemClock};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// Options for a test server.
pub struct Options {
    /// Adjusts the configuration before the server opens.
    pub configure: Box<dyn FnOnce(&mut Config) + Send>,
    /// Extra routes, as the domain crates will add them.
    pub routes: Router<AppState>,
    /// The clock the server reads.
    pub clock: Arc<dyn Clock>,
    /// Reuse this data directory instead of a fresh one.
    pub data_dir: Option<PathBuf>,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            configure: Box::new(|_| {}),
            routes: Router::new(),
            clock: Arc::new(SystemClock),
            data_dir: None,
        }
    }
}

impl std::fmt::Debug for Options {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Options").finish_non_exhaustive()
    }
}

/// A running server and what a test needs to talk to it.
#[derive(Debug)]
pub struct TestServer {
    /// `https://127.0.0.1:<port>`.
    pub base_url: String,
    /// The bound address.
    pub addr: SocketAddr,
    /// A client that trusts the server's certificate.
    pub client: reqwest::Client,
    /// The setup link issued at start.
    pub setup_link: Option<SetupLink>,
    /// The server's storage, for assertions on state.
    pub storage: Storage,
    /// The effective configuration.
    pub config: Config,
    /// The security event log.
    pub events: kura_server::kura_events::LogSink,
    /// Incidents that detection alerts open.
    pub incidents: Arc<kura_server::kura_events::IncidentService>,
    /// The clock the server reads (TOTP codes are computed for its time).
    pub clock: Arc<dyn Clock>,
    data_dir: PathBuf,
    cert_file: PathBuf,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<()>>,
    _tmp: Option<tempfile::TempDir>,
}

impl TestServer {
    /// A server with default settings in a fresh data directory.
    pub async fn spawn() -> Self {
        Self::spawn_with(Options::default()).await
    }

    /// A server with adjusted settings.
    pub async fn spawn_with(options: Options) -> Self {
        let (tmp, data_dir) = match options.data_dir {
            Some(dir) => (None, dir),
            None => {
                let tmp = tempfile::tempdir().expect("temporary directory");
                let dir = tmp.path().join("kura-data");
                (Some(tmp), dir)
            }
        };
        let mut config = Config {
            data_dir: data_dir.clone(),
            ..Config::default()
        };
        config.server.bind = SocketAddr::from(([127, 0, 0, 1], 0));
        config.server.shutdown_grace_secs = 5;
        (options.configure)(&mut config);

        let platform = Platform::open(config.clone(), Arc::clone(&options.clock))
            .await
            .unwrap_or_else(|e| panic!("test server cannot open: {e}"));
        let state = AppState::new(&config, &platform.installation);
        let events = platform.installation.events.clone();
        let incidents = Arc::clone(&platform.installation.incidents);
        let bound = BoundServer::bind(&platform, state, options.routes)
            .await
            .unwrap_or_else(|e| panic!("test server cannot bind: {e}"));
        let addr = bound.local_addr();
        let base_url = format!("https://127.0.0.1:{}", addr.port());
        let setup_link = platform
            .issue_setup_link(&base_url)
            .await
            .expect("setup link");
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(bound.serve(Box::pin(async move {
            let _ = stopped.await;
        })));
        let cert_file = config
            .tls
            .cert_file
            .clone()
            .unwrap_or_else(|| platform.installation.dir.tls_dir().join("cert.pem"));
        let client = client_trusting(&cert_file);
        TestServer {
            base_url,
            addr,
            client,
            setup_link,
            storage: platform.installation.storage.clone(),
            config,
            events,
            incidents,
            clock: Arc::clone(&options.clock),
            data_dir,
            cert_file,
            stop: Some(stop),
            task: Some(task),
            _tmp: tmp,
        }
    }

    /// The absolute URL of `path`.
    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.base_url, path)
    }

    /// Creates the first operator through `POST /api/v1/setup` with the
    /// setup link's token, enrols TOTP (codes from `pyotp`, an independent
    /// implementation), and returns the operator with a complete bearer
    /// session.
    pub async fn sign_up_first_operator(&self) -> SignedInOperator {
        let link = self
            .setup_link
            .as_ref()
            .expect("the server issued a setup link");
        let email = "root@kura.test".to_owned();
        let setup = self
            .client
            .post(self.url("/api/v1/setup"))
            .json(&serde_json::json!({
                "token": link.token.reveal(),
                "email": email,
                "display_name": "First Operator",
                "password": OPERATOR_PASSWORD,
            }))
            .send()
            .await
            .expect("setup request");
        assert_eq!(setup.status(), 201, "setup: {:?}", setup.text().await);
        let setup: serde_json::Value = setup.json().await.expect("setup JSON");
        assert_eq!(setup["next"], "enrol_mfa");
        let enrol_token = setup["token"].as_str().expect("token").to_owned();
        let enrolment: serde_json::Value = self
            .client
            .post(self.url("/api/v1/me/mfa/totp"))
            .bearer_auth(&enrol_token)
            .send()
            .await
            .expect("enrol request")
            .json()
            .await
            .expect("enrol JSON");
        let secret = enrolment["secret"].as_str().expect("secret").to_owned();
        let confirmed = self
            .client
            .post(self.url("/api/v1/me/mfa/totp/confirm"))
            .bearer_auth(&enrol_token)
            .json(&serde_json::json!({ "code": pyotp_code(&secret, self.clock.now()) }))
            .send()
            .await
            .expect("confirm request");
        assert_eq!(
            confirmed.status(),
            200,
            "confirm: {:?}",
            confirmed.text().await
        );
        let confirmed: serde_json::Value = confirmed.json().await.expect("confirm JSON");
        let recovery_codes = confirmed["recovery_codes"]
            .as_array()
            .expect("recovery codes")
            .iter()
            .map(|c| c.as_str().expect("code").to_owned())
            .collect();
        let session = &confirmed["session"];
        assert_eq!(session["next"], "done");
        SignedInOperator {
            token: session["token"].as_str().expect("token").to_owned(),
            account_id: session["account_id"].as_str().expect("account").to_owned(),
            email,
            totp_secret: secret,
            recovery_codes,
        }
    }

    /// The data directory.
    pub fn data_dir(&self) -> &Path {
        &self.data_dir
    }

    /// The platform store.
    pub fn platform(&self) -> &Arc<dyn PlatformStore> {
        &self.storage.platform
    }

    /// The PEM of the server's certificate, for other clients.
    pub fn certificate_pem(&self) -> Vec<u8> {
        std::fs::read(&self.cert_file).expect("certificate")
    }

    /// Starts graceful shutdown and waits until the server has drained.
    pub async fn shutdown(mut self) {
        self.begin_shutdown();
        if let Some(task) = self.task.take() {
            task.await.expect("server task");
        }
    }

    /// Signals shutdown without waiting; returns the serving task to await.
    pub fn begin_shutdown(&mut self) -> Option<JoinHandle<()>> {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        self.task.take()
    }

    /// Stops the server but keeps the data directory (for restart tests).
    pub async fn stop_keeping_data(mut self) -> (PathBuf, Option<tempfile::TempDir>) {
        if let Some(task) = self.begin_shutdown() {
            task.await.expect("server task");
        }
        (self.data_dir.clone(), self._tmp.take())
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

/// The password [`TestServer::sign_up_first_operator`] gives the operator.
pub const OPERATOR_PASSWORD: &str = "correct horse battery staple 42";

/// The first operator, signed in with TOTP done.
#[derive(Debug, Clone)]
pub struct SignedInOperator {
    /// A complete session's bearer token.
    pub token: String,
    /// The account id.
    pub account_id: String,
    /// The email address.
    pub email: String,
    /// The TOTP secret (base32).
    pub totp_secret: String,
    /// The ten recovery codes.
    pub recovery_codes: Vec<String>,
}

/// The Python interpreter that has `pyotp`: `$KURA_PYOTP_PYTHON`, else the
/// virtualenv `cargo xtask test` prepares at `$HOME/.cache/kura-venv`, else
/// `python3` from `PATH`.
pub fn pyotp_python() -> String {
    if let Ok(p) = std::env::var("KURA_PYOTP_PYTHON") {
        return p;
    }
    if let Ok(home) = std::env::var("HOME") {
        let venv = format!("{home}/.cache/kura-venv/bin/python");
        if Path::new(&venv).exists() {
            return venv;
        }
    }
    "python3".into()
}

/// The TOTP code for a base32 secret at time `t`, computed by `pyotp`
/// (RFC 6238, SHA-1, 6 digits, 30 s), never by the code under test.
pub fn pyotp_code(secret_b32: &str, t: time::OffsetDateTime) -> String {
    let python = pyotp_python();
    let out = std::process::Command::new(&python)
        .args([
            "-c",
            "import sys, pyotp; print(pyotp.TOTP(sys.argv[1]).at(int(sys.argv[2])))",
            secret_b32,
            &t.unix_timestamp().to_string(),
        ])
        .output()
        .unwrap_or_else(|e| panic!("cannot run {python}: {e}; install pyotp"));
    assert!(
        out.status.success(),
        "pyotp failed under {python}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap().trim().to_owned()
}

/// A client trusting exactly the certificate in `cert_file`.
pub fn client_trusting(cert_file: &Path) -> reqwest::Client {
    let pem = std::fs::read(cert_file).expect("server certificate");
    let cert = reqwest::Certificate::from_pem(&pem).expect("PEM certificate");
    reqwest::Client::builder()
        .tls_certs_only([cert])
        .build()
        .expect("HTTPS client")
}
