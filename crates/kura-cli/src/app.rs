//! `kura app apply`: sends a definition file to a running server's admin
//! API (`PUT /api/v1/teams/{team}/apps/{app}/schema`) and prints what
//! changed. The file is parsed and checked for shape here, so a typo is
//! reported with its path before anything is sent; the server checks the
//! rest and applies the change in one transaction, or not at all.
//!
//! `kura app import`: streams a CSV file to
//! `POST /api/v1/teams/{team}/apps/{app}/tables/{table}/import` in one
//! request, with a progress bar of the bytes sent. The server imports
//! every row in one transaction after the whole file has arrived, so an
//! interrupted upload or a bad row changes nothing.

use std::io::IsTerminal as _;
use std::path::Path;
use std::pin::Pin;
use std::task::{Context, Poll};

use anyhow::{Context as _, bail};
use kura_apps::schema::Definition;
use serde_json::{Value, json};
use tokio::io::{AsyncRead, ReadBuf};

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
        AppCommand::Import {
            file,
            table,
            url,
            token,
            team,
            app,
            ca,
            quiet,
        } => {
            import(
                &file,
                &table,
                &url,
                &token,
                &team,
                &app,
                ca.as_deref(),
                quiet,
            )
            .await
        }
    }
}

/// A reader that moves a progress bar by the bytes read through it.
struct Counted<R> {
    inner: R,
    bar: indicatif::ProgressBar,
}

impl<R: AsyncRead + Unpin> AsyncRead for Counted<R> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let poll = Pin::new(&mut self.inner).poll_read(cx, buf);
        if let Poll::Ready(Ok(())) = poll {
            self.bar.inc((buf.filled().len() - before) as u64);
        }
        poll
    }
}

#[allow(clippy::too_many_arguments)]
async fn import(
    file: &Path,
    table: &str,
    url: &str,
    token: &str,
    team: &str,
    app: &str,
    ca: Option<&Path>,
    quiet: bool,
) -> anyhow::Result<()> {
    let handle = tokio::fs::File::open(file)
        .await
        .with_context(|| format!("opening {}", file.display()))?;
    let size = handle
        .metadata()
        .await
        .with_context(|| format!("reading {}", file.display()))?
        .len();
    let bar = indicatif::ProgressBar::new(size);
    if quiet || !std::io::stderr().is_terminal() {
        bar.set_draw_target(indicatif::ProgressDrawTarget::hidden());
    }
    if let Ok(style) = indicatif::ProgressStyle::with_template(
        "{msg} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec} {eta}",
    ) {
        bar.set_style(style);
    }
    bar.set_message(format!("uploading {}", file.display()));
    let stream = tokio_util::io::ReaderStream::new(Counted {
        inner: handle,
        bar: bar.clone(),
    });
    let client = client(ca)?;
    let endpoint = format!(
        "{}/api/v1/teams/{team}/apps/{app}/tables/{table}/import",
        url.trim_end_matches('/')
    );
    // Once the file is sent the server checks and writes it; the bar
    // says so instead of sitting at 100%.
    let waiting = bar.clone();
    let watch = tokio::spawn(async move {
        while waiting.position() < waiting.length().unwrap_or(0) {
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
        waiting.set_message("importing (one transaction)");
    });
    let sent = client
        .post(&endpoint)
        .bearer_auth(token)
        .header(reqwest::header::CONTENT_TYPE, "text/csv; charset=utf-8")
        .header(reqwest::header::CONTENT_LENGTH, size)
        .body(reqwest::Body::wrap_stream(stream))
        .send()
        .await;
    watch.abort();
    bar.finish_and_clear();
    let response = sent.with_context(|| format!("sending {} to {endpoint}", file.display()))?;
    let status = response.status();
    let body: Value = response.json().await.unwrap_or(Value::Null);
    if !status.is_success() {
        let detail = body["detail"].as_str().unwrap_or("no detail");
        bail!("the server refused the import ({status}): {detail}; nothing was imported");
    }
    eprintln!(
        "kura: imported {} record(s) into `{}` ({})",
        body["imported"].as_u64().unwrap_or(0),
        body["table"].as_str().unwrap_or(table),
        body["fields"]
            .as_array()
            .map(|f| f
                .iter()
                .filter_map(Value::as_str)
                .collect::<Vec<_>>()
                .join(", "))
            .unwrap_or_default()
    );
    Ok(())
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
