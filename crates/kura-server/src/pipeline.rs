//! The background half of the security event pipeline, started with the
//! server: SIEM exporters (one task per configured sink — JSON lines, signed
//! webhooks, syslog over TLS — each with its own durable cursor), the RFC 5425
//! syslog listener for events from other systems, the incident notifier
//! (channels by severity, retried with back-off), and the retention job that
//! prunes events older than the configured period while keeping the rest
//! verifiable.

use std::sync::Arc;
use std::time::Duration;

use kura_config::EventsConfig;
use kura_crypto::hmac::HmacKey;
use kura_events::export::{
    ExporterOptions, JsonlConfig, JsonlSink, RetryPolicy, WebhookClient, WebhookConfig, WebhookSink,
};
use kura_events::{EventError, ExportSink, Exporter};
use kura_store::SqliteExportStore;
use kura_store::exports::ExportStore;
use kura_types::Outcome;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::bootstrap::{Platform, StartError};
use crate::syslog::{SyslogExportConfig, SyslogExporter, SyslogLimits, SyslogListener};

/// The smallest webhook secret accepted, in bytes.
const MIN_SECRET_BYTES: usize = 32;

/// How often detection looks for events committed outside the sink.
const DETECTION_INTERVAL: Duration = Duration::from_secs(1);

/// How often retention runs.
const RETENTION_INTERVAL: Duration = Duration::from_secs(6 * 3600);

/// Running pipeline tasks.
#[derive(Debug)]
pub struct Pipeline {
    stop: watch::Sender<bool>,
    tasks: Vec<JoinHandle<()>>,
    /// Exporters by sink name, for status and metrics.
    pub exporters: Vec<(String, Arc<kura_events::export::ExportStats>)>,
    /// Where the syslog listener listens, when it is on.
    pub syslog: Option<std::net::SocketAddr>,
}

impl Pipeline {
    /// Starts exporters, the syslog listener and retention as the
    /// platform's configuration says. Refuses to start when a sink or the
    /// listener is misconfigured, naming it.
    pub async fn start(platform: &Platform) -> Result<Self, StartError> {
        let installation = &platform.installation;
        let config: &EventsConfig = &platform.config.events;
        let (stop, stopped) = watch::channel(false);
        let log = installation.events.log().clone();
        let clock = Arc::clone(&installation.clock);
        let store: Arc<dyn ExportStore> = Arc::new(SqliteExportStore::new(log.pool().clone()));
        let options = ExporterOptions {
            batch_size: config.export.batch_size,
            poll_interval: Duration::from_millis(config.export.poll_interval_ms),
            ..ExporterOptions::default()
        };
        let bad = |e: kura_events::ExportError| {
            StartError::Event(EventError::Invalid(format!("event export: {e}")))
        };

        let mut sinks: Vec<Arc<dyn ExportSink>> = Vec::new();
        for j in &config.export.jsonl {
            let mut jc = JsonlConfig::new(j.name.clone(), j.dir.clone());
            jc.prefix = j.prefix.clone();
            jc.max_bytes = j.max_bytes;
            jc.max_age = time::Duration::hours(i64::try_from(j.max_age_hours).unwrap_or(24));
            jc.keep = j.keep;
            sinks.push(Arc::new(
                JsonlSink::new(jc, Arc::clone(&clock)).map_err(bad)?,
            ));
        }
        for w in &config.export.webhook {
            let secret = std::fs::read(&w.secret_file).map_err(|e| {
                StartError::Event(EventError::Invalid(format!(
                    "webhook export `{}`: cannot read secret_file {}: {e}",
                    w.name,
                    w.secret_file.display()
                )))
            })?;
            let secret = zeroize::Zeroizing::new(secret);
            if secret.len() < MIN_SECRET_BYTES {
                return Err(StartError::Event(EventError::Invalid(format!(
                    "webhook export `{}`: secret_file {} holds fewer than {MIN_SECRET_BYTES} bytes",
                    w.name,
                    w.secret_file.display()
                ))));
            }
            let mut wc = WebhookConfig::new(w.name.clone(), w.url.clone(), HmacKey::new(&secret));
            wc.timeout = Duration::from_secs(w.timeout_secs);
            wc.retry = RetryPolicy {
                max_attempts: w.max_attempts,
                ..RetryPolicy::default()
            };
            let client = WebhookClient::new(wc, Arc::clone(&clock), Some(Arc::clone(&store)))
                .map_err(bad)?;
            sinks.push(Arc::new(WebhookSink::new(client)));
        }
        for x in &config.export.syslog {
            let read = |path: &std::path::Path| {
                std::fs::read(path).map_err(|e| {
                    StartError::Event(EventError::Invalid(format!(
                        "syslog export `{}`: cannot read {}: {e}",
                        x.name,
                        path.display()
                    )))
                })
            };
            let mut sc =
                SyslogExportConfig::new(x.name.clone(), x.address.clone(), read(&x.ca_file)?);
            sc.server_name = x.server_name.clone();
            if let (Some(cert), Some(key)) = (&x.client_cert_file, &x.client_key_file) {
                sc.client_cert_pem = Some(read(cert)?);
                sc.client_key_pem = Some(read(key)?.into());
            }
            sinks.push(Arc::new(SyslogExporter::new(sc).map_err(bad)?));
        }

        let mut tasks = Vec::new();
        let mut exporters = Vec::new();
        for sink in sinks {
            let name = sink.name().to_owned();
            let exporter = Exporter::new(
                sink,
                log.clone(),
                Arc::clone(&store),
                Arc::clone(&clock),
                options,
            );
            exporters.push((name, exporter.stats()));
            tasks.push(exporter.spawn(wait_for_stop(stopped.clone())));
        }

        let mut syslog = None;
        if let (Some(addr), Some(ca_file)) = (config.syslog.bind, &config.syslog.client_ca_file) {
            let ca = std::fs::read(ca_file).map_err(|e| {
                StartError::Event(EventError::Invalid(format!(
                    "events.syslog.client_ca_file {}: {e}",
                    ca_file.display()
                )))
            })?;
            let limits = SyslogLimits {
                max_connections: config.syslog.max_connections,
                idle_timeout: Duration::from_secs(config.syslog.idle_timeout_secs),
                min_tls_version: platform.config.tls.min_version,
                ..SyslogLimits::default()
            };
            let listener = SyslogListener::bind(
                addr,
                &platform.tls,
                &ca,
                Arc::new(installation.events.clone()),
                limits,
            )
            .await
            .map_err(|e| StartError::Bind {
                addr,
                detail: format!("syslog listener: {e}"),
            })?;
            syslog = Some(listener.local_addr());
            tasks.push(tokio::spawn(
                listener.serve(Box::pin(wait_for_stop(stopped.clone()))),
            ));
        }

        // Incident notifications: due ones are sent every interval, retried
        // with back-off, and every try lands in the incident's timeline.
        tasks.push(tokio::spawn(
            Arc::clone(&installation.incidents).run_notifier(
                Duration::from_secs(config.incidents.poll_interval_secs),
                wait_for_stop(stopped.clone()),
            ),
        ));

        // Detection follows the log: events that components committed in
        // their own transactions (not through the sink) are observed here.
        let detection = installation.events.clone();
        let mut stop_detection = stopped.clone();
        tasks.push(tokio::spawn(async move {
            let mut ticker = tokio::time::interval(DETECTION_INTERVAL);
            loop {
                tokio::select! {
                    _ = ticker.tick() => detection.catch_up().await,
                    _ = stop_detection.changed() => break,
                }
            }
        }));

        let retention = time::Duration::days(i64::from(config.retention_days));
        let events = installation.events.clone();
        let installation = installation.clone();
        let mut stop_retention = stopped.clone();
        tasks.push(tokio::spawn(async move {
            let mut ticker = tokio::time::interval(RETENTION_INTERVAL);
            loop {
                tokio::select! {
                    _ = ticker.tick() => {}
                    _ = stop_retention.changed() => break,
                }
                match events.log().prune_older_than(retention).await {
                    Ok(report) if report.removed > 0 => {
                        tracing::info!(
                            removed = report.removed,
                            "pruned security events past retention"
                        );
                        let recorded = installation
                            .record_system_event(
                                "retention",
                                "events.retention.pruned",
                                Outcome::Success,
                                &[
                                    ("removed", report.removed.into()),
                                    ("anchor_seq", report.anchor_seq.into()),
                                ],
                            )
                            .await;
                        if let Err(e) = recorded {
                            tracing::error!(error = %e, "cannot record the retention event");
                        }
                    }
                    Ok(_) => {}
                    Err(e) => tracing::error!(error = %e, "security event retention failed"),
                }
            }
        }));
        Ok(Self {
            stop,
            tasks,
            exporters,
            syslog,
        })
    }

    /// Stops every task and waits for them (exporters finish their batch).
    pub async fn stop(self) {
        let _ = self.stop.send(true);
        for task in self.tasks {
            let _ = task.await;
        }
    }
}

async fn wait_for_stop(mut stopped: watch::Receiver<bool>) {
    while !*stopped.borrow() {
        if stopped.changed().await.is_err() {
            return;
        }
    }
}
