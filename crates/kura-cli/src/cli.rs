//! The command-line grammar.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

/// Kura: a self-hostable, security-first cloud platform.
#[derive(Debug, Parser)]
#[command(name = "kura", version, about, propagate_version = true)]
pub struct Cli {
    #[command(flatten)]
    pub global: Global,
    #[command(subcommand)]
    pub command: Command,
}

/// Options every subcommand accepts.
#[derive(Debug, Args)]
pub struct Global {
    /// TOML configuration file (also KURA_CONFIG).
    #[arg(long, global = true, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Data directory (default ./kura-data; also KURA_DATA_DIR).
    #[arg(long, global = true, value_name = "DIR")]
    pub data_dir: Option<PathBuf>,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the server: HTTPS API, console and background work.
    Serve(ServeArgs),
    /// Inspect the configuration.
    #[command(subcommand)]
    Config(ConfigCommand),
    /// Manage the master key and data keys.
    #[command(subcommand)]
    Keys(KeysCommand),
    /// Check and export the tamper-evident security event log.
    #[command(subcommand, visible_alias = "audit")]
    Events(EventsCommand),
    /// Check the data directory and configuration against the hardened
    /// baseline: each check passes, warns or fails with what to do. Exits
    /// non-zero when any check fails.
    Doctor {
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Hosted apps on a running server.
    #[command(subcommand)]
    App(AppCommand),
}

/// `kura app …`: talks to a running server's admin API.
#[derive(Debug, Subcommand)]
pub enum AppCommand {
    /// Create or migrate an app's schema from a definition file
    /// (`.toml` or `.json`). Idempotent; a change that would discard values
    /// is refused unless `--allow-data-loss`.
    Apply {
        /// The definition file.
        file: PathBuf,
        /// The server, e.g. https://127.0.0.1:8443.
        #[arg(long, env = "KURA_URL")]
        url: String,
        /// An API token (scope `apps:write`) or session token.
        #[arg(long, env = "KURA_TOKEN", hide_env_values = true)]
        token: String,
        /// The team's id.
        #[arg(long)]
        team: String,
        /// The app's id.
        #[arg(long)]
        app: String,
        /// A PEM certificate to trust for the server (its self-signed
        /// certificate is `<data dir>/tls/cert.pem`).
        #[arg(long)]
        ca: Option<PathBuf>,
        /// Apply even if fields or tables holding values are dropped.
        #[arg(long)]
        allow_data_loss: bool,
        /// Report what would change without changing anything.
        #[arg(long)]
        dry_run: bool,
    },
    /// Import a CSV file into a table of an app. The first row names the
    /// fields; every row is imported, or (on the first bad row, which the
    /// error names) none is.
    Import {
        /// The CSV file (UTF-8, comma-separated).
        file: PathBuf,
        /// The table to import into.
        #[arg(long)]
        table: String,
        /// The server, e.g. https://127.0.0.1:8443.
        #[arg(long, env = "KURA_URL")]
        url: String,
        /// An API token (scope `apps:write`) or session token.
        #[arg(long, env = "KURA_TOKEN", hide_env_values = true)]
        token: String,
        /// The team's id.
        #[arg(long)]
        team: String,
        /// The app's id.
        #[arg(long)]
        app: String,
        /// A PEM certificate to trust for the server (its self-signed
        /// certificate is `<data dir>/tls/cert.pem`).
        #[arg(long)]
        ca: Option<PathBuf>,
        /// No progress bar (also when stderr is not a terminal).
        #[arg(long)]
        quiet: bool,
    },
}

#[derive(Debug, Args)]
pub struct ServeArgs {
    /// Address to listen on (default 127.0.0.1:8443; also KURA_SERVER__BIND).
    #[arg(long, value_name = "ADDR")]
    pub bind: Option<SocketAddr>,
}

#[derive(Debug, Subcommand)]
pub enum ConfigCommand {
    /// Validate the configuration and print the effective settings, secrets redacted.
    Check {
        /// Address to listen on, as `kura serve --bind` would take it.
        #[arg(long, value_name = "ADDR")]
        bind: Option<SocketAddr>,
    },
}

#[derive(Debug, Subcommand)]
pub enum KeysCommand {
    /// Show the master key's versions and how many data keys each protects.
    Status {
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Create a new master-key version and re-wrap every data key under it.
    /// Works while the server runs; data is not re-encrypted.
    Rotate,
    /// Destroy an old master-key version once no data key uses it.
    Retire {
        /// The version to retire.
        #[arg(value_name = "VERSION")]
        master_version: u32,
    },
    /// Seal the local master-key file with a passphrase (Argon2id).
    Seal,
}

#[derive(Debug, Subcommand)]
pub enum EventsCommand {
    /// Walk the hash chain and signed checkpoints; report the first break.
    /// Exits non-zero when the log does not verify.
    Verify {
        /// An Ed25519 public key (hex) obtained out of band; checkpoints must
        /// be signed by one of these instead of the keys stored in the data.
        #[arg(long, value_name = "HEX")]
        trusted_key: Vec<String>,
        /// Print the result as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Sign a checkpoint now and export every signed checkpoint as JSON, for
    /// an outside party to hold and check later.
    Checkpoints {
        /// Write to this file instead of standard output.
        #[arg(long, value_name = "FILE")]
        output: Option<PathBuf>,
    },
    /// Print the log's checkpoint-signing public key (hex).
    PublicKey,
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory as _;

    #[test]
    fn the_grammar_is_consistent() {
        super::Cli::command().debug_assert();
    }
}
