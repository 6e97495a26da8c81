//! The Kura target when the benchmark runs it itself: `kura-testkit`'s
//! `fm_bench_kura` example (the real server, default configuration, a
//! fresh data directory, the first operator signed up), then — all through
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

/// Builds and starts the example; returns the server, its operator token
/// and its certificate file.
pub fn start(root: &Path, nice: i32) -> anyhow::Result<(Server, String, String)> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    eprintln!("xtask: building the Kura benchmark server (release)");
    let status = Command::new(&cargo)
        .current_dir(root)
        .args([
            "build",
            "--release",
            "--quiet",
            "-p",
            "kura-testkit",
            "--example",
            "fm_bench_kura",
        ])
        .status()
        .context("running cargo build for the fm_bench_kura example")?;
    if !status.success() {
        bail!("building the fm_bench_kura example failed");
    }
    let target_dir = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| root.join("target"));
    let binary = target_dir
        .join("release")
        .join("examples")
        .join("fm_bench_kura");
    let venv_bin = super::super::venv_dir().join("bin");
    let path = format!(
        "{}:{}",
        venv_bin.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let mut child = niced(nice, &binary)
        .env("PATH", path)
        .stdout(Stdio::piped())
        .spawn()
        .with_context(|| format!("starting {}", binary.display()))?;
    let stdout = child.stdout.take().context("no stdout from Kura")?;
    let mut line = String::new();
    BufReader::new(stdout)
        .read_line(&mut line)
        .context("reading Kura's address")?;
    let mut parts = line.split_whitespace();
    let (Some("kura"), Some(url), Some(token), Some(cert)) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        bail!("unexpected first line from Kura: {line:?}");
    };
    if !url.starts_with("https://127.0.0.1:") {
        bail!("Kura is not on loopback: {url}");
    }
    eprintln!("xtask: Kura at {url}");
    let (token, cert) = (token.to_owned(), cert.to_owned());
    Ok((Server::new(child, url.to_owned()), token, cert))
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
        ]}],
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
