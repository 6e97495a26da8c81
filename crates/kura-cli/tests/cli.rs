//! The `kura` binary as an operator meets it: first run, later runs, bad
//! configuration, damaged keys and databases, signals, and key commands.
//! One integration binary for the crate.

// Helpers outside `#[test]` functions are not covered by clippy.toml's
// allow-*-in-tests settings; a failing helper should fail the test.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::io::{BufRead as _, BufReader};
use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc;
use std::time::Duration;

#[path = "cli/app_apply.rs"]
mod app_apply;
#[path = "cli/app_import.rs"]
mod app_import;
#[path = "cli/baseline.rs"]
mod baseline;
#[path = "cli/connect_crash.rs"]
mod connect_crash;

const KURA: &str = env!("CARGO_BIN_EXE_kura");

fn kura(data_dir: &Path) -> Command {
    let mut cmd = Command::new(KURA);
    cmd.arg("--data-dir").arg(data_dir);
    // Keep the test independent of the developer's environment.
    for (key, _) in std::env::vars() {
        if key.starts_with("KURA_") {
            cmd.env_remove(key);
        }
    }
    cmd
}

fn run(cmd: &mut Command) -> Output {
    cmd.stdin(Stdio::null()).output().unwrap()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// A running `kura serve`, with what it printed on its way up.
struct Serving {
    child: Child,
    base_url: String,
    banner: Vec<String>,
}

impl Serving {
    fn start(mut cmd: Command) -> Serving {
        let mut child = cmd
            .arg("serve")
            .arg("--bind")
            .arg("127.0.0.1:0")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let out = child.stdout.take().unwrap();
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let mut banner = Vec::new();
        let mut base_url = None;
        while let Ok(line) = rx.recv_timeout(Duration::from_secs(60)) {
            if let Some(url) = line.split("is serving ").nth(1) {
                base_url = Some(url.trim().to_owned());
            }
            let last = line.starts_with("Stop with");
            banner.push(line);
            if last {
                break;
            }
        }
        let Some(base_url) = base_url else {
            let _ = child.kill();
            let err = child
                .wait_with_output()
                .map(|o| stderr(&o))
                .unwrap_or_default();
            panic!("kura serve did not come up; printed {banner:?}; stderr: {err}");
        };
        Serving {
            child,
            base_url,
            banner,
        }
    }

    fn setup_link(&self) -> Option<String> {
        self.banner
            .iter()
            .find(|l| l.contains("/setup?token="))
            .map(|l| l.trim().to_owned())
    }

    /// Sends SIGTERM and returns the exit status and standard error.
    fn terminate(mut self) -> (std::process::ExitStatus, String) {
        let status = Command::new("kill")
            .arg("-TERM")
            .arg(self.child.id().to_string())
            .status()
            .unwrap();
        assert!(status.success());
        let mut err = String::new();
        if let Some(mut e) = self.child.stderr.take() {
            use std::io::Read as _;
            let _ = e.read_to_string(&mut err);
        }
        let status = self.child.wait().unwrap();
        (status, err)
    }
}

impl Drop for Serving {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn client(data_dir: &Path) -> reqwest::Client {
    kura_testkit::client_trusting(&data_dir.join("tls").join("cert.pem"))
}

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}

fn fresh() -> (tempfile::TempDir, PathBuf) {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("kura-data");
    (tmp, dir)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn first_run_creates_everything_and_later_runs_reuse_it() {
    let (_tmp, dir) = fresh();
    let first = Serving::start(kura(&dir));
    let link = first.setup_link().expect("first run prints a setup link");
    assert!(
        link.starts_with(&format!("{}/console/setup?token=", first.base_url)),
        "{link}"
    );
    assert_eq!(mode(&dir), 0o700);
    assert_eq!(mode(&dir.join("master.key")), 0o600);
    assert_eq!(mode(&dir.join("platform.key")), 0o600);
    assert_eq!(mode(&dir.join("platform.db")), 0o600);
    assert_eq!(mode(&dir.join("tls/key.pem")), 0o600);
    assert_eq!(mode(&dir.join("tls")), 0o700);
    let health = client(&dir)
        .get(format!("{}/healthz", first.base_url))
        .send()
        .await
        .unwrap();
    assert_eq!(health.status(), 200);
    let key_before = std::fs::read(dir.join("master.key")).unwrap();
    let cert_before = std::fs::read(dir.join("tls/cert.pem")).unwrap();
    let (status, err) = first.terminate();
    assert!(
        status.success(),
        "SIGTERM is a clean stop: {status:?}\n{err}"
    );
    assert!(err.contains("generated a new master key"), "{err}");
    assert!(
        err.contains("\"stopped\"") || err.contains("stopped"),
        "{err}"
    );

    let second = Serving::start(kura(&dir));
    let second_link = second
        .setup_link()
        .expect("setup still pending, so a new link");
    assert_ne!(second_link, link);
    let (status, err) = second.terminate();
    assert!(status.success());
    assert!(!err.contains("generated a new master key"), "{err}");
    assert_eq!(std::fs::read(dir.join("master.key")).unwrap(), key_before);
    assert_eq!(
        std::fs::read(dir.join("tls/cert.pem")).unwrap(),
        cert_before
    );
}

#[test]
fn a_port_in_use_is_a_clear_error() {
    let (_tmp, dir) = fresh();
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port();
    let out = run(kura(&dir).args(["serve", "--bind", &format!("127.0.0.1:{port}")]));
    assert!(!out.status.success());
    let err = stderr(&out);
    assert!(
        err.contains(&format!("127.0.0.1:{port}")) && err.contains("already in use"),
        "{err}"
    );
}

#[test]
fn bad_configuration_names_the_key_and_exits_non_zero() {
    let (tmp, dir) = fresh();
    let out = run(kura(&dir)
        .args(["config", "check"])
        .env("KURA_SERVER__BIND", "nowhere"));
    assert!(!out.status.success());
    let err = stderr(&out);
    assert!(
        err.contains("`server.bind`") && err.contains("KURA_SERVER__BIND"),
        "{err}"
    );

    let file = tmp.path().join("kura.toml");
    std::fs::write(&file, "[server]\nbind = '127.0.0.1:9443'\ntimeout = 3\n").unwrap();
    let out = run(kura(&dir)
        .arg("--config")
        .arg(&file)
        .args(["config", "check"]));
    assert!(!out.status.success());
    let err = stderr(&out);
    assert!(
        err.contains("`server.timeout`") && err.contains("kura.toml"),
        "{err}"
    );
    assert!(!dir.exists(), "checking configuration touched no data");

    std::fs::write(&file, "[server]\nbind = '127.0.0.1:9443'\n").unwrap();
    let out = run(kura(&dir)
        .arg("--config")
        .arg(&file)
        .args(["config", "check", "--bind", "127.0.0.1:9555"])
        .env("KURA_MASTER_KEY_PASSPHRASE", "do-not-print-me")
        .env("KURA_STORAGE__READERS", "6"));
    assert!(out.status.success(), "{}", stderr(&out));
    let text = stdout(&out);
    assert!(
        text.contains("bind = \"127.0.0.1:9555\""),
        "flag wins: {text}"
    );
    assert!(text.contains("readers = 6"), "{text}");
    assert!(
        text.contains("[REDACTED]") && !text.contains("do-not-print-me"),
        "{text}"
    );
}

fn init(dir: &Path) {
    let s = Serving::start(kura(dir));
    let (status, _) = s.terminate();
    assert!(status.success());
}

#[test]
fn damaged_keys_and_databases_are_refused_without_replacing_anything() {
    let (_tmp, dir) = fresh();
    init(&dir);
    let key = dir.join("master.key");
    let good = std::fs::read(&key).unwrap();

    std::fs::write(&key, &good[..good.len() / 3]).unwrap();
    let out = run(kura(&dir).args(["serve", "--bind", "127.0.0.1:0"]));
    assert!(!out.status.success());
    let err = stderr(&out);
    assert!(
        err.contains("master.key") && err.contains("corrupt or truncated"),
        "{err}"
    );
    assert_eq!(
        std::fs::read(&key).unwrap(),
        &good[..good.len() / 3],
        "left as it was"
    );

    std::fs::remove_file(&key).unwrap();
    let out = run(kura(&dir).args(["serve", "--bind", "127.0.0.1:0"]));
    assert!(!out.status.success());
    let err = stderr(&out);
    assert!(
        err.contains("master.key") && err.contains("restore the key file"),
        "{err}"
    );
    assert!(!key.exists(), "no new key over existing data");

    std::fs::write(&key, &good).unwrap();
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).unwrap();
    let db = dir.join("platform.db");
    for suffix in ["-wal", "-shm"] {
        let _ = std::fs::remove_file(format!("{}{suffix}", db.display()));
    }
    let mut bytes = std::fs::read(&db).unwrap();
    bytes.iter_mut().take(2048).for_each(|b| *b = !*b);
    std::fs::write(&db, &bytes).unwrap();
    let out = run(kura(&dir).args(["serve", "--bind", "127.0.0.1:0"]));
    assert!(!out.status.success());
    let err = stderr(&out);
    assert!(
        err.contains("platform.db") && err.contains("corrupt"),
        "{err}"
    );
}

#[test]
fn sealed_master_keys_need_the_passphrase() {
    let (_tmp, dir) = fresh();
    init(&dir);
    let out = run(kura(&dir)
        .args(["keys", "seal"])
        .env("KURA_NEW_MASTER_KEY_PASSPHRASE", "short"));
    assert!(!out.status.success());
    assert!(stderr(&out).contains("at least 12"));
    let out = run(kura(&dir).args(["keys", "seal"]).env(
        "KURA_NEW_MASTER_KEY_PASSPHRASE",
        "a sufficiently long passphrase",
    ));
    assert!(out.status.success(), "{}", stderr(&out));

    let out = run(kura(&dir).args(["serve", "--bind", "127.0.0.1:0"]));
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("KURA_MASTER_KEY_PASSPHRASE"),
        "{}",
        stderr(&out)
    );
    let out = run(kura(&dir)
        .args(["serve", "--bind", "127.0.0.1:0"])
        .env("KURA_MASTER_KEY_PASSPHRASE", "not the passphrase"));
    assert!(!out.status.success());
    assert!(stderr(&out).contains("does not unseal"), "{}", stderr(&out));

    let mut cmd = kura(&dir);
    cmd.env(
        "KURA_MASTER_KEY_PASSPHRASE",
        "a sufficiently long passphrase",
    );
    let s = Serving::start(cmd);
    let (status, _) = s.terminate();
    assert!(status.success());
    let out = run(kura(&dir).args(["keys", "status", "--json"]).env(
        "KURA_MASTER_KEY_PASSPHRASE",
        "a sufficiently long passphrase",
    ));
    let status: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(status["sealed"], true);
}

#[test]
fn loose_permissions_are_repaired_and_reported() {
    let (_tmp, dir) = fresh();
    init(&dir);
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::set_permissions(
        dir.join("master.key"),
        std::fs::Permissions::from_mode(0o644),
    )
    .unwrap();
    let s = Serving::start(kura(&dir));
    let (status, err) = s.terminate();
    assert!(status.success());
    assert!(err.contains("master.key had mode 0644"), "{err}");
    assert_eq!(mode(&dir), 0o700);
    assert_eq!(mode(&dir.join("master.key")), 0o600);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_rotate_online_while_the_server_runs() {
    let (_tmp, dir) = fresh();
    let serving = Serving::start(kura(&dir));
    let out = run(kura(&dir).args(["keys", "status", "--json"]));
    assert!(out.status.success(), "{}", stderr(&out));
    let before: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(before["versions"][0]["version"], 1);
    assert_eq!(before["versions"][0]["state"], "current");
    assert_eq!(before["versions"][0]["data_keys"], 1);

    let out = run(kura(&dir).args(["keys", "rotate"]));
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stdout(&out).contains("version 2 is current; re-wrapped 1"),
        "{}",
        stdout(&out)
    );

    // The running server keeps answering from its database.
    let ready = client(&dir)
        .get(format!("{}/readyz", serving.base_url))
        .send()
        .await
        .unwrap();
    assert_eq!(ready.status(), 200);

    let out = run(kura(&dir).args(["keys", "retire", "1"]));
    assert!(out.status.success(), "{}", stderr(&out));
    let out = run(kura(&dir).args(["keys", "status"]));
    let table = stdout(&out);
    assert!(
        table.contains("retired") && table.contains("current"),
        "{table}"
    );
    let out = run(kura(&dir).args(["keys", "retire", "2"]));
    assert!(
        !out.status.success(),
        "the current version cannot be retired"
    );

    let (status, _) = serving.terminate();
    assert!(status.success());
    // A restart opens everything under version 2 alone.
    let again = Serving::start(kura(&dir));
    let (status, _) = again.terminate();
    assert!(status.success());
}

#[test]
fn key_commands_refuse_an_empty_directory() {
    let (_tmp, dir) = fresh();
    let out = run(kura(&dir).args(["keys", "status"]));
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("run `kura serve` once"),
        "{}",
        stderr(&out)
    );
    assert!(!dir.join("master.key").exists());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn key_operations_are_security_events_and_the_log_verifies_until_tampered() {
    let (tmp, dir) = fresh();
    init(&dir);
    let out = run(kura(&dir).args(["keys", "rotate"]));
    assert!(out.status.success(), "{}", stderr(&out));

    let out = run(kura(&dir).args(["events", "verify", "--json"]));
    assert!(out.status.success(), "{}\n{}", stdout(&out), stderr(&out));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["intact"], true);
    // platform.started, platform.setup.link_issued, keys.master.rotated
    assert!(report["entries_checked"].as_u64().unwrap() >= 3, "{report}");

    // Checkpoints export and verify against a pinned key.
    let key = stdout(&run(kura(&dir).args(["events", "public-key"])))
        .trim()
        .to_owned();
    assert_eq!(key.len(), 64, "{key}");
    let export = tmp.path().join("checkpoints.json");
    let out = run(kura(&dir)
        .args(["events", "checkpoints", "--output"])
        .arg(&export));
    assert!(out.status.success(), "{}", stderr(&out));
    let doc: serde_json::Value = serde_json::from_slice(&std::fs::read(&export).unwrap()).unwrap();
    assert!(
        doc.to_string().contains(&key),
        "the export names its key: {doc}"
    );
    let out = run(kura(&dir).args(["audit", "verify", "--trusted-key", &key]));
    assert!(out.status.success(), "{}", stdout(&out));
    let stranger = "00".repeat(32);
    let out = run(kura(&dir).args(["events", "verify", "--trusted-key", &stranger]));
    assert!(
        !out.status.success(),
        "checkpoints signed by an unpinned key are refused"
    );

    // Alter one stored event behind Kura's back.
    {
        let kms = std::sync::Arc::new(
            kura_crypto::LocalKms::open(&dir.join("master.key"), None).unwrap(),
        );
        let storage = kura_store::open_storage(
            &kura_store::DataDir::new(&dir),
            kms,
            std::sync::Arc::new(kura_types::SystemClock),
            kura_store::StorageOptions::default(),
        )
        .await
        .unwrap();
        let changed = storage
            .sqlite
            .pool()
            .write(|tx| {
                Ok(tx.execute(
                    "UPDATE events SET body = CAST(replace(CAST(body AS TEXT), 'kura-cli', 'kura-xyz') AS BLOB)
                      WHERE json_extract(CAST(body AS TEXT), '$.action') = 'keys.master.rotated'",
                    [],
                )?)
            })
            .await
            .unwrap();
        assert_eq!(changed, 1);
    }
    let out = run(kura(&dir).args(["events", "verify"]));
    assert!(!out.status.success());
    let text = stdout(&out);
    assert!(text.contains("TAMPERED"), "{text}");
}

/// Waits (bounded) until `check` holds, polling.
fn eventually(what: &str, mut check: impl FnMut() -> bool) {
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while std::time::Instant::now() < deadline {
        if check() {
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!("timed out waiting for {what}");
}

fn exported_lines(dir: &Path) -> Vec<serde_json::Value> {
    let mut lines = Vec::new();
    let Ok(entries) = std::fs::read_dir(dir) else {
        return lines;
    };
    let mut files: Vec<PathBuf> = entries.map(|e| e.unwrap().path()).collect();
    files.sort();
    for file in files {
        for line in std::fs::read_to_string(&file).unwrap_or_default().lines() {
            if let Ok(v) = serde_json::from_str(line) {
                lines.push(v);
            }
        }
    }
    lines
}

#[test]
fn security_events_stream_to_a_jsonl_export_once_each_across_restarts() {
    let (tmp, dir) = fresh();
    let exports = tmp.path().join("exports");
    let config = tmp.path().join("kura.toml");
    std::fs::write(
        &config,
        format!(
            "[events.export]\npoll_interval_ms = 50\n[[events.export.jsonl]]\nname = \"local\"\ndir = \"{}\"\n",
            exports.display()
        ),
    )
    .unwrap();
    let mut cmd = kura(&dir);
    cmd.arg("--config").arg(&config);
    let first = Serving::start(cmd);
    eventually("platform.started in the export", || {
        exported_lines(&exports)
            .iter()
            .any(|l| l.to_string().contains("platform.started"))
    });
    let (status, _) = first.terminate();
    assert!(status.success());

    let mut cmd = kura(&dir);
    cmd.arg("--config").arg(&config);
    let second = Serving::start(cmd);
    eventually("the second start in the export", || {
        exported_lines(&exports)
            .iter()
            .filter(|l| l.to_string().contains("platform.started"))
            .count()
            == 2
    });
    let (status, _) = second.terminate();
    assert!(status.success());
    let lines = exported_lines(&exports);
    let seqs: Vec<u64> = lines.iter().filter_map(|l| l["seq"].as_u64()).collect();
    assert!(!seqs.is_empty(), "{lines:?}");
    let expected: Vec<u64> = (1..=seqs.len() as u64).collect();
    assert_eq!(seqs, expected, "every event once, in order");
    let mode = std::fs::metadata(exports.join("events.jsonl"))
        .unwrap()
        .permissions()
        .mode()
        & 0o777;
    assert_eq!(mode, 0o600);
}
