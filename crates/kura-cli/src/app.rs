//! `kura app apply`: sends a definition file to a running server's admin
//! API (`PUT /api/v1/teams/{team}/apps/{app}/schema`) and prints what
//! changed. The file is parsed and checked for shape here, so a typo is
//! reported with its path before anything is sent; the server checks the
//! rest and applies the change in one transaction, or not at all.

use std::path::Path;

use anyhow::{Context as _, bail};
use kura_apps::schema::Definition;
use serde_json::{Value, json};

use crate::cli::AppCommand;

/// Runs an `app` subcommand.
pub async fn run(cmd: AppCommand) -> anyhow::Result<()> {
    match cmd {
        AppCommand::Apply {
            file,
            url,
            token,
            team,
            app,
            ca,
            allow_data_loss,
            dry_run,
        } => {
            let definition = read_definition(&file)?;
            let client = client(ca.as_deref())?;
            let endpoint = format!(
                "{}/api/v1/teams/{team}/apps/{app}/schema",
                url.trim_end_matches('/')
            );
            let response = client
                .put(&endpoint)
                .bearer_auth(token)
                .json(&json!({
                    "definition": definition,
                    "allow_data_loss": allow_data_loss,
                    "dry_run": dry_run,
                }))
                .send()
                .await
                .with_context(|| format!("sending the definition to {endpoint}"))?;
            let status = response.status();
            let body: Value = response.json().await.unwrap_or(Value::Null);
            if !status.is_success() {
                let detail = body["detail"].as_str().unwrap_or("no detail");
                bail!("the server refused the definition ({status}): {detail}");
            }
            let changes = body["changes"].as_array().cloned().unwrap_or_default();
            let applied = body["applied"].as_bool().unwrap_or(false);
            let version = body["version"].as_i64().unwrap_or(0);
            if changes.is_empty() {
                eprintln!(
                    "kura: the app already matches {} (schema version {version})",
                    file.display()
                );
            } else {
                let verb = if applied {
                    "applied"
                } else {
                    "would apply (dry run)"
                };
                eprintln!("kura: {verb}, schema version {version}:");
                for c in changes {
                    eprintln!("  - {}", c.as_str().unwrap_or_default());
                }
            }
            Ok(())
        }
    }
}

fn read_definition(file: &Path) -> anyhow::Result<Definition> {
    let text =
        std::fs::read_to_string(file).with_context(|| format!("reading {}", file.display()))?;
    let format = file
        .extension()
        .and_then(|e| e.to_str())
        .unwrap_or("")
        .to_ascii_lowercase();
    Definition::parse(&text, &format).map_err(|e| anyhow::anyhow!("{}: {e}", file.display()))
}

fn client(ca: Option<&Path>) -> anyhow::Result<reqwest::Client> {
    let builder = reqwest::Client::builder().https_only(true);
    let builder = match ca {
        Some(path) => {
            let pem = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
            let cert = reqwest::Certificate::from_pem(&pem)
                .with_context(|| format!("{} is not a PEM certificate", path.display()))?;
            builder.tls_certs_only([cert])
        }
        None => builder,
    };
    builder.build().context("building the HTTPS client")
}
