//! The Kura target when the benchmark runs it itself: the real `kura serve`
//! with its default configuration, on a fresh data directory that
//! `kura-testkit`'s `fm_bench_kura` example prepared (the first operator
//! signed up), then — all through
//! the admin API — a team, the host, the app with the 8 benchmark fields,
//! an app account, and the records, imported as CSV (recordIds 1..=N).

use std::io::{BufRead as _, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use anyhow::{Context as _, bail};
use serde_json::{Value, json};

use super::curl::{self, Request};
use super::ops::KuraTarget;
use super::records;
use super::servers::{Server, niced};

/// The app account's password (a fresh, loopback-only installation).
const PASSWORD: &str = "bench account password 2026";
/// Rows per import request (each well under the default 1 MiB body limit).
const IMPORT_CHUNK: usize = 2_000;

/// Builds the example and the `kura` binary, prepares a data directory
/// with the example, then starts `kura serve` on it: the program people
/// run, with its default configuration, is what gets measured. Returns the
/// server, its operator token and its certificate file.
pub fn start(root: &Path, nice: i32) -> anyhow::Result<(Server, String, String)> {
    // The preparation signs the operator up with codes from pyotp.
    super::super::install_pypi_peers()?;
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    eprintln!("xtask: building Kura and the benchmark's preparation (release)");
    // Two builds: built together, the example's dependencies could unify
    // features into a `kura` that is not the one `cargo build -p kura-cli`
    // makes.
    for package in [
        &["-p", "kura-cli"][..],
        &["-p", "kura-testkit", "--example", "fm_bench_kura"][..],
    ] {
        let status = Command::new(&cargo)
            .current_dir(root)
            .args(["build", "--release", "--quiet"])
            .args(package)
            .status()
            .context("running cargo build")?;
        if !status.success() {
            bail!("cargo build --release {} failed", package.join(" "));
        }
    }
    let target_dir = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| root.join("target"));
    let release = target_dir.join("release");
    let venv_bin = super::super::venv_dir().join("bin");
    let path = format!(
        "{}:{}",
        venv_bin.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let prepared = Command::new(release.join("examples").join("fm_bench_kura"))
        .env("PATH", &path)
        .stderr(Stdio::inherit())
        .output()
        .context("running the fm_bench_kura example")?;
    let line = String::from_utf8_lossy(&prepared.stdout).into_owned();
    let mut parts = line.split_whitespace();
    let (Some("prepared"), Some(scratch), Some(dir), Some(token), Some(cert)) = (
        parts.next(),
        parts.next(),
        parts.next(),
        parts.next(),
        parts.next(),
    ) else {
        bail!("unexpected output from fm_bench_kura: {line:?}");
    };
    let scratch = Scratch(PathBuf::from(scratch));
    let mut cmd = niced(nice, &release.join("kura"));
    // Only the data directory is given: everything else is the default.
    for (key, _) in std::env::vars() {
        if key.starts_with("KURA_") {
            cmd.env_remove(key);
        }
    }
    let mut child = cmd
        .env("KURA_LOG", "warn")
        .arg("--data-dir")
        .arg(dir)
        .args(["serve", "--bind", "127.0.0.1:0"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .spawn()
        .context("starting kura serve")?;
    let stdout = child.stdout.take().context("no stdout from kura serve")?;
    let mut url = None;
    let mut lines = BufReader::new(stdout).lines();
    for line in lines.by_ref() {
        let line = line.context("reading kura serve's output")?;
        if let Some(u) = line.split("is serving ").nth(1) {
            url = Some(u.trim().to_owned());
        }
        if line.starts_with("Stop with") {
            break;
        }
    }
    // Whatever it prints later is read and dropped, so it never writes
    // into a closed pipe.
    std::thread::spawn(move || lines.for_each(drop));
    let mut server = Server::new(child, String::new());
    server.remove_after(scratch.take());
    let Some(url) = url else {
        bail!("kura serve printed no address");
    };
    if !url.starts_with("https://127.0.0.1:") {
        bail!("Kura is not on loopback: {url}");
    }
    eprintln!("xtask: Kura at {url} (pid {})", server.pid());
    server.base_url = url;
    Ok((server, token.to_owned(), cert.to_owned()))
}

/// The prepared directory, removed if the server never takes it over.
struct Scratch(PathBuf);

impl Scratch {
    fn take(mut self) -> PathBuf {
        std::mem::take(&mut self.0)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        if !self.0.as_os_str().is_empty() {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
}

fn admin(
    target: &KuraTarget,
    token: &str,
    method: &'static str,
    path: &str,
    body: Value,
) -> anyhow::Result<Value> {
    let url = format!("{}{path}", target.url);
    curl::send(&Request {
        method,
        url: &url,
        headers: vec![
            ("Authorization".into(), format!("Bearer {token}")),
            ("Content-Type".into(), "application/json".into()),
        ],
        body: Some(body.to_string()),
        ca: target.ca.as_deref(),
    })?
    .ok(&format!("{method} {path}"))?
    .json()
}

fn csv_value(v: &str) -> String {
    if v.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", v.replace('"', "\"\""))
    } else {
        v.to_owned()
    }
}

/// Creates the team, host, app, account and records; returns the target
/// with the app account's password.
pub fn set_up(mut target: KuraTarget, token: &str) -> anyhow::Result<KuraTarget> {
    let team = admin(
        &target,
        token,
        "POST",
        "/api/v1/teams",
        json!({ "name": "Bench", "owner_email": "owner@bench.test" }),
    )?["id"]
        .as_str()
        .context("no team id")?
        .to_owned();
    let host = admin(
        &target,
        token,
        "POST",
        &format!("/api/v1/teams/{team}/hosts"),
        json!({ "name": target.host }),
    )?["id"]
        .as_str()
        .context("no host id")?
        .to_owned();
    let definition = json!({
        "tables": [{ "name": "contacts", "fields": [
            { "name": "first_name", "type": "text" },
            { "name": "last_name", "type": "text" },
            { "name": "email", "type": "text" },
            { "name": "age", "type": "number" },
            { "name": "born", "type": "date" },
            { "name": "active", "type": "number" },
            { "name": "notes", "type": "text" },
            { "name": "created_at", "type": "timestamp", "auto_enter": "creation_timestamp" }
        ],
        // The find combines a range on age with active; PocketBase's
        // collection gets its index on age.
        "indexes": [["age", "active"]] }],
        "layouts": [{ "name": target.layout, "table": "contacts" }]
    });
    let app = admin(
        &target,
        token,
        "POST",
        &format!("/api/v1/teams/{team}/hosts/{host}/apps"),
        json!({ "name": target.db, "definition": definition }),
    )?["id"]
        .as_str()
        .context("no app id")?
        .to_owned();
    admin(
        &target,
        token,
        "POST",
        &format!("/api/v1/teams/{team}/apps/{app}/accounts"),
        json!({ "name": target.user, "password": PASSWORD, "privilege_set": "[Full Access]" }),
    )?;
    target.password = PASSWORD.to_owned();
    // The default budgets (3,000 Data API requests a minute per source)
    // would refuse the load itself; raise the Data API and sign-in budgets
    // to the most the edge accepts. The rest of the edge stays on.
    let url = format!("{}/api/v1/edge", target.url);
    let edge = curl::send(&Request {
        method: "GET",
        url: &url,
        headers: vec![("Authorization".into(), format!("Bearer {token}"))],
        body: None,
        ca: target.ca.as_deref(),
    })?
    .ok("GET /api/v1/edge")?
    .json()?;
    let mut limits = edge["rate_limits"].clone();
    if let Some(o) = limits.as_object_mut() {
        for k in ["scope", "version", "updated_at", "updated_by"] {
            o.remove(k);
        }
    }
    let most = json!({ "per_minute": 1_000_000, "burst": 1_000_000 });
    for family in ["data_api", "sign_in"] {
        for scope in ["per_source", "per_credential", "per_team"] {
            limits[family][scope] = most.clone();
        }
    }
    admin(&target, token, "PUT", "/api/v1/edge/rate-limits", limits)?;
    eprintln!(
        "xtask: importing {} Kura records as CSV through the admin API",
        target.records
    );
    let url = format!(
        "{}/api/v1/teams/{team}/apps/{app}/tables/contacts/import",
        target.url
    );
    let mut start = 0;
    while start < target.records {
        let end = (start + IMPORT_CHUNK).min(target.records);
        let mut csv = String::from("first_name,last_name,email,age,born,active,notes\n");
        for i in start..end {
            let r = records::record(i);
            let row = [
                csv_value(&r.first_name),
                csv_value(&r.last_name),
                csv_value(&r.email),
                r.age.to_string(),
                r.born_us.clone(),
                i32::from(r.active).to_string(),
                csv_value(&r.notes),
            ];
            csv.push_str(&row.join(","));
            csv.push('\n');
        }
        let answer = curl::send(&Request {
            method: "POST",
            url: &url,
            headers: vec![
                ("Authorization".into(), format!("Bearer {token}")),
                ("Content-Type".into(), "text/csv".into()),
            ],
            body: Some(csv),
            ca: target.ca.as_deref(),
        })?
        .ok("CSV import")?
        .json()?;
        if answer["imported"].as_u64() != Some((end - start) as u64) {
            bail!("CSV import: unexpected answer {answer}");
        }
        start = end;
    }
    Ok(target)
}
