//! Project chores as `cargo xtask <command>`.
//!
//! `cargo xtask test` is the one command that runs every test: it installs
//! the outside tools the tests talk to (on Debian, with `apt-get`, when they
//! are missing) and then runs the whole workspace's tests.

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
}

/// Debian packages the tests need, with a command that proves each is there.
const DEBIAN_PEERS: &[(&str, &str)] = &[
    // `openssl s_client` is the independent TLS client in the server tests.
    ("openssl", "openssl"),
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
            install_debian_peers()?;
            run_tests(&args)
        }
    }
}

fn have(program: &str) -> bool {
    Command::new("sh")
        .arg("-c")
        .arg(format!("command -v {program}"))
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false)
}

fn install_debian_peers() -> anyhow::Result<()> {
    let missing: Vec<&str> = DEBIAN_PEERS
        .iter()
        .filter(|(_, program)| !have(program))
        .map(|(package, _)| *package)
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    if !have("apt-get") {
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
