//! What each subcommand does.

use std::io::IsTerminal as _;
use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::{Context as _, bail};
use kura_config::{Config, Layers};
use kura_crypto::{Kms as _, LocalKms, SealParams};
use kura_server::kura_events::{PublicKey, VerifyOptions, actions};
use kura_server::{AppState, BoundServer, Installation, Pipeline, Platform, ShutdownSignal};
use kura_types::{Clock, Outcome, SystemClock};
use secrecy::{ExposeSecret as _, SecretString};

use crate::cli::{Cli, Command, ConfigCommand, EventsCommand, Global, KeysCommand};
use crate::logging;

/// Runs one command.
pub async fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Serve(args) => serve(load(&cli.global, args.bind)?).await,
        Command::Config(ConfigCommand::Check { bind }) => {
            let config = load(&cli.global, bind)?;
            print!("{}", config.to_redacted_toml()?);
            println!("# configuration is valid");
            Ok(())
        }
        Command::Keys(cmd) => keys(load(&cli.global, None)?, cmd).await,
        Command::Events(cmd) => events(load(&cli.global, None)?, cmd).await,
        Command::Doctor { json } => doctor(load(&cli.global, None)?, json).await,
        Command::App(cmd) => crate::app::run(cmd).await,
    }
}

/// `kura doctor`: the file and configuration checks, then (when those found
/// nothing failing and an installation exists) the checks of its state.
async fn doctor(mut config: Config, json: bool) -> anyhow::Result<()> {
    use kura_server::doctor::{self, Check, Status};
    logging::init(&kura_config::LogConfig {
        level: "error".into(),
        format: kura_config::LogFormat::Pretty,
    });
    let mut checks = doctor::file_checks(&config, time::OffsetDateTime::now_utc());
    let dir = kura_store::DataDir::new(&config.data_dir);
    if doctor::failed(&checks) {
        checks.push(Check {
            id: "state",
            status: Status::Warn,
            summary: "the installation's state was not checked because of the failures above"
                .into(),
            remediation: Some("fix them and run `kura doctor` again".into()),
        });
    } else if dir.is_initialised() {
        ask_passphrase_if_sealed(&mut config)?;
        match Installation::open(&config, Arc::new(SystemClock)).await {
            Ok(installation) => checks.extend(doctor::state_checks(&config, &installation).await),
            Err(e) => checks.push(Check {
                id: "state",
                status: Status::Fail,
                summary: format!("the installation cannot be opened: {e}"),
                remediation: Some(
                    "see the message; set KURA_MASTER_KEY_PASSPHRASE for a sealed key".into(),
                ),
            }),
        }
    }
    checks.push(doctor::advisory_check(doctor::cargo_home().as_deref()));
    let count = |s: Status| checks.iter().filter(|c| c.status == s).count();
    let (passed, warned, failed) = (
        count(Status::Pass),
        count(Status::Warn),
        count(Status::Fail),
    );
    if json {
        let doc = serde_json::json!({
            "checks": checks,
            "summary": { "pass": passed, "warn": warned, "fail": failed },
        });
        println!("{}", serde_json::to_string_pretty(&doc)?);
    } else {
        for c in &checks {
            println!(
                "{:<5} {:<24} {}",
                c.status.as_str().to_ascii_uppercase(),
                c.id,
                c.summary
            );
            if let Some(fix) = &c.remediation {
                println!("{:<30} fix: {fix}", "");
            }
        }
        println!("{passed} passed, {warned} warned, {failed} failed");
    }
    if failed > 0 {
        bail!("{failed} baseline check(s) failed");
    }
    Ok(())
}

/// Layers defaults, the config file, `KURA_*` variables and flags.
fn load(global: &Global, bind: Option<SocketAddr>) -> anyhow::Result<Config> {
    let mut layers = Layers::from_process(global.config.clone());
    if let Some(dir) = &global.data_dir {
        layers = layers.flag(
            "data_dir",
            "data-dir",
            toml::Value::String(dir.display().to_string()),
        );
    }
    if let Some(bind) = bind {
        layers = layers.flag("server.bind", "bind", toml::Value::String(bind.to_string()));
    }
    Ok(layers.load()?)
}

/// Asks for the passphrase of a sealed key file when none was given and a
/// person is at the terminal.
fn ask_passphrase_if_sealed(config: &mut Config) -> anyhow::Result<()> {
    let key_file = kura_store::DataDir::new(&config.data_dir).master_key_file();
    if config.keys.passphrase.is_some() || !key_file.exists() {
        return Ok(());
    }
    if LocalKms::file_is_sealed(&key_file)? && std::io::stdin().is_terminal() {
        let pass = rpassword::prompt_password(format!(
            "Passphrase for master key {}: ",
            key_file.display()
        ))?;
        config.keys.passphrase = Some(SecretString::from(pass));
    }
    Ok(())
}

async fn serve(mut config: Config) -> anyhow::Result<()> {
    logging::init(&config.log);
    ask_passphrase_if_sealed(&mut config)?;
    let clock: Arc<dyn Clock> = Arc::new(SystemClock);
    let platform = Platform::open(config.clone(), Arc::clone(&clock)).await?;
    for notice in &platform.installation.notices {
        tracing::warn!(notice = %notice, "start-up notice");
        eprintln!("notice: {notice}");
    }
    let state = AppState::new(&config, &platform.installation);
    let bound = BoundServer::bind(&platform, state, axum::Router::new()).await?;
    let addr = bound.local_addr();
    let base = config
        .server
        .public_url
        .clone()
        .unwrap_or_else(|| base_url(addr));
    platform
        .installation
        .record_system_event(
            "kura-serve",
            actions::PLATFORM_STARTED,
            Outcome::Success,
            &[
                ("version", env!("CARGO_PKG_VERSION").into()),
                ("bind", addr.to_string().into()),
            ],
        )
        .await?;
    let link = platform.issue_setup_link(&base).await?;
    let pipeline = Pipeline::start(&platform).await?;
    let shutdown = shutdown_signal()?;
    println!("Kura {} is serving {base}", env!("CARGO_PKG_VERSION"));
    println!("  data directory: {}", config.data_dir.display());
    if let Some(syslog) = pipeline.syslog {
        println!("  syslog listener (RFC 5425, mutual TLS): {syslog}");
    }
    if let Some(link) = link {
        let minutes = (link.expires_at - time::OffsetDateTime::now_utc()
            + time::Duration::seconds(30))
        .whole_minutes();
        println!();
        println!(
            "Create the first operator account with this one-time link (valid {minutes} minutes, works once):"
        );
        println!("  {}", link.url);
        println!();
        println!("A new link is printed at each start until the first operator exists.");
    }
    println!("Stop with Ctrl-C or SIGTERM; in-flight requests finish first.");
    tracing::info!(%addr, "listening");
    bound.serve(shutdown).await;
    pipeline.stop().await;
    Ok(())
}

async fn open_installation(mut config: Config) -> anyhow::Result<Installation> {
    let dir = kura_store::DataDir::new(&config.data_dir);
    if !dir.is_initialised() {
        bail!(
            "{} holds no Kura installation; run `kura serve` once to create it",
            dir.root().display()
        );
    }
    ask_passphrase_if_sealed(&mut config)?;
    Ok(Installation::open(&config, Arc::new(SystemClock)).await?)
}

async fn events(config: Config, cmd: EventsCommand) -> anyhow::Result<()> {
    logging::init(&kura_config::LogConfig {
        level: "warn".into(),
        format: kura_config::LogFormat::Pretty,
    });
    let installation = open_installation(config).await?;
    let log = installation.events.log();
    match cmd {
        EventsCommand::Verify { trusted_key, json } => {
            let trusted_keys = trusted_key
                .iter()
                .map(|k| PublicKey::from_hex(k.trim()))
                .collect::<Result<Vec<_>, _>>()
                .context("--trusted-key must be a hex Ed25519 public key")?;
            let report = installation
                .events
                .verify(VerifyOptions { trusted_keys })
                .await?;
            if json {
                let v = &report.0;
                let doc = serde_json::json!({
                    "intact": report.is_intact(),
                    "entries_checked": v.entries_checked,
                    "first_seq": v.first_seq,
                    "last_seq": v.last_seq,
                    "head_hash": v.head_hash.map(hex::encode),
                    "checkpoints_checked": v.checkpoints_checked,
                    "last_signed": v.last_signed,
                    "problem": v.problem.as_ref().map(|p| serde_json::json!({
                        "seq": p.seq,
                        "message": p.to_string(),
                    })),
                });
                println!("{}", serde_json::to_string_pretty(&doc)?);
            } else {
                println!("{report}");
            }
            if !report.is_intact() {
                bail!("the security event log does not verify");
            }
        }
        EventsCommand::Checkpoints { output } => {
            log.checkpoint().await?;
            let export = log.export_checkpoints().await?;
            let text = serde_json::to_string_pretty(&export)?;
            match output {
                Some(path) => {
                    std::fs::write(&path, text.as_bytes())
                        .with_context(|| format!("writing {}", path.display()))?;
                    eprintln!("wrote signed checkpoints to {}", path.display());
                }
                None => println!("{text}"),
            }
        }
        EventsCommand::PublicKey => println!("{}", log.public_key().to_hex()),
    }
    Ok(())
}

/// The URL people use for a bound address.
fn base_url(addr: SocketAddr) -> String {
    let host = match addr.ip() {
        ip if ip.is_unspecified() => "localhost".to_owned(),
        std::net::IpAddr::V6(ip) => format!("[{ip}]"),
        ip => ip.to_string(),
    };
    format!("https://{host}:{}", addr.port())
}

/// Resolves on SIGTERM or SIGINT. The handlers are installed when this is
/// called, not when the future is first polled, so a signal that arrives
/// right after the banner still means a graceful stop.
fn shutdown_signal() -> anyhow::Result<ShutdownSignal> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).context("listening for SIGTERM")?;
    let mut int = signal(SignalKind::interrupt()).context("listening for SIGINT")?;
    Ok(Box::pin(async move {
        tokio::select! {
            _ = term.recv() => {},
            _ = int.recv() => {},
        }
        tracing::info!("shutdown signal received");
    }))
}

async fn keys(config: Config, cmd: KeysCommand) -> anyhow::Result<()> {
    logging::init(&kura_config::LogConfig {
        level: "warn".into(),
        format: kura_config::LogFormat::Pretty,
    });
    let installation = open_installation(config.clone()).await?;
    let keys = &installation.storage.keys;
    let kms = &installation.kms;
    match cmd {
        KeysCommand::Status { json } => {
            let versions = kms.versions().await?;
            let usage = keys.usage().await?;
            if json {
                let doc = serde_json::json!({
                    "provider": kms.provider(),
                    "key_id": kms.key_id(),
                    "sealed": kms.is_sealed(),
                    "versions": versions.iter().map(|v| serde_json::json!({
                        "version": v.version,
                        "state": v.state,
                        "created_at": v.created_at.to_string(),
                        "data_keys": usage.by_version.get(&v.version).copied().unwrap_or(0),
                    })).collect::<Vec<_>>(),
                    "destroyed_data_keys": usage.destroyed,
                });
                println!("{}", serde_json::to_string_pretty(&doc)?);
            } else {
                println!("master key  {} ({})", kms.key_id(), kms.provider());
                println!(
                    "key file    {} ({})",
                    kms.path().display(),
                    if kms.is_sealed() {
                        "sealed with a passphrase"
                    } else {
                        "not sealed"
                    }
                );
                println!();
                println!(
                    "{:>7}  {:<9}  {:<26}  data keys",
                    "version", "state", "created"
                );
                for v in &versions {
                    let state = serde_json::to_value(v.state)?;
                    println!(
                        "{:>7}  {:<9}  {:<26}  {}",
                        v.version,
                        state.as_str().unwrap_or("?"),
                        v.created_at
                            .replace_nanosecond(0)
                            .unwrap_or(v.created_at)
                            .to_string(),
                        usage.by_version.get(&v.version).copied().unwrap_or(0)
                    );
                }
                if usage.destroyed > 0 {
                    println!(
                        "\n{} data key(s) destroyed (crypto-shredded)",
                        usage.destroyed
                    );
                }
            }
        }
        KeysCommand::Rotate => {
            eprintln!("rotating master key {} …", kms.key_id());
            let bar = indicatif::ProgressBar::new(0);
            if !std::io::stderr().is_terminal() {
                bar.set_draw_target(indicatif::ProgressDrawTarget::hidden());
            }
            if let Ok(style) = indicatif::ProgressStyle::with_template(
                "re-wrapping data keys {pos}/{len} [{bar:30}] {eta}",
            ) {
                bar.set_style(style);
            }
            let report = keys
                .rotate_master_with_progress(&|done, total| {
                    bar.set_length(total as u64);
                    bar.set_position(done as u64);
                })
                .await?;
            bar.finish_and_clear();
            installation
                .record_system_event(
                    "kura-cli",
                    actions::MASTER_KEY_ROTATED,
                    Outcome::Success,
                    &[
                        ("key_id", kms.key_id().into()),
                        ("version", report.current_version.into()),
                        ("rewrapped", report.rewrapped.into()),
                    ],
                )
                .await?;
            println!(
                "master key version {} is current; re-wrapped {} data key(s) ({} already current)",
                report.current_version, report.rewrapped, report.already_current
            );
            if !report.unused_versions.is_empty() {
                println!(
                    "versions no longer used: {:?}; destroy them with `kura keys retire <version>` once backups made with them have expired",
                    report.unused_versions
                );
            }
        }
        KeysCommand::Retire { master_version } => {
            keys.retire(master_version).await?;
            installation
                .record_system_event(
                    "kura-cli",
                    actions::MASTER_KEY_RETIRED,
                    Outcome::Success,
                    &[
                        ("key_id", kms.key_id().into()),
                        ("version", master_version.into()),
                    ],
                )
                .await?;
            println!("master key version {master_version} retired; its material is destroyed");
        }
        KeysCommand::Seal => {
            let pass = match std::env::var("KURA_NEW_MASTER_KEY_PASSPHRASE") {
                Ok(p) => SecretString::from(p),
                Err(_) if std::io::stdin().is_terminal() => {
                    let a = rpassword::prompt_password("New passphrase: ")?;
                    let b = rpassword::prompt_password("Repeat it: ")?;
                    if a != b {
                        bail!("the passphrases differ; nothing was changed");
                    }
                    SecretString::from(a)
                }
                Err(_) => bail!(
                    "set KURA_NEW_MASTER_KEY_PASSPHRASE or run in a terminal to be asked for the passphrase"
                ),
            };
            if pass.expose_secret().chars().count() < 12 {
                bail!("the passphrase must have at least 12 characters; nothing was changed");
            }
            let path = kms.path().to_owned();
            let sealer = LocalKms::open(&path, config.keys.passphrase.clone())
                .context("reopening the key file")?;
            sealer.seal(pass, SealParams::default())?;
            installation
                .record_system_event(
                    "kura-cli",
                    actions::MASTER_KEY_SEALED,
                    Outcome::Success,
                    &[("key_id", kms.key_id().into())],
                )
                .await?;
            println!(
                "sealed {}; `kura serve` now needs KURA_MASTER_KEY_PASSPHRASE or a terminal to ask",
                path.display()
            );
        }
    }
    Ok(())
}
