//! [`SyslogExporter`]: stored events to a syslog receiver over TLS, as an
//! [`ExportSink`] that the export runner (`kura_events::Exporter`) drives
//! with its durable cursor. Each event is one RFC 5425 frame formatted by
//! [`kura_events::syslog::format_event`].
//!
//! Syslog has no acknowledgements. A batch counts as delivered once its
//! frames are written and flushed to a connection the receiver had not
//! closed; the exporter checks for a close before reusing a connection, so
//! the common loss (writing into a connection the receiver dropped while
//! idle) becomes a reconnect instead. A failed batch is returned as an error
//! for the runner to retry, which may repeat events the receiver already
//! has: the `seq` and `id` parameters let a SIEM drop duplicates.

use std::sync::Arc;

use kura_config::TlsVersion;
use std::time::Duration;

use async_trait::async_trait;
use kura_events::StoredEvent;
use kura_events::export::{ExportError, ExportSink};
use kura_events::syslog::{ExportFormat, format_event, frame};
use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls::{ClientConfig, RootCertStore};
use secrecy::{ExposeSecret as _, SecretSlice};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;
use tokio::sync::Mutex;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;

/// How to reach one syslog receiver.
#[derive(Debug)]
pub struct SyslogExportConfig {
    /// The exporter's name (for its cursor, logs and metrics).
    pub name: String,
    /// `host:port` of the receiver (RFC 5425's port is 6514).
    pub address: String,
    /// The name the receiver's certificate must carry; by default the host
    /// part of `address`.
    pub server_name: Option<String>,
    /// PEM CA certificates the receiver's certificate must chain to.
    pub ca_pem: Vec<u8>,
    /// A PEM client certificate chain, for receivers that authenticate
    /// senders.
    pub client_cert_pem: Option<Vec<u8>>,
    /// The client certificate's PEM private key.
    pub client_key_pem: Option<SecretSlice<u8>>,
    /// HOSTNAME, APP-NAME and facility of the messages.
    pub format: ExportFormat,
    /// Time allowed to connect and complete the handshake.
    pub connect_timeout: Duration,
    /// Time allowed to write one batch.
    pub write_timeout: Duration,
}

impl SyslogExportConfig {
    /// A configuration with default format and timeouts (10 s each).
    pub fn new(name: impl Into<String>, address: impl Into<String>, ca_pem: Vec<u8>) -> Self {
        Self {
            name: name.into(),
            address: address.into(),
            server_name: None,
            ca_pem,
            client_cert_pem: None,
            client_key_pem: None,
            format: ExportFormat::default(),
            connect_timeout: Duration::from_secs(10),
            write_timeout: Duration::from_secs(10),
        }
    }
}

/// Sends events to one syslog receiver as RFC 5425 frames, keeping one
/// connection open between batches.
pub struct SyslogExporter {
    name: String,
    address: String,
    server_name: ServerName<'static>,
    connector: TlsConnector,
    format: ExportFormat,
    connect_timeout: Duration,
    write_timeout: Duration,
    connection: Mutex<Option<TlsStream<TcpStream>>>,
}

impl std::fmt::Debug for SyslogExporter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SyslogExporter")
            .field("name", &self.name)
            .field("address", &self.address)
            .field("server_name", &self.server_name)
            .finish_non_exhaustive()
    }
}

impl SyslogExporter {
    /// Checks the configuration and prepares TLS; does not connect yet.
    pub fn new(config: SyslogExportConfig) -> Result<Self, ExportError> {
        let name = config.name;
        let bad = |detail: String| ExportError::Config {
            sink: name.clone(),
            detail,
        };
        let host = match &config.server_name {
            Some(s) => s.clone(),
            None => host_of(&config.address)
                .ok_or_else(|| bad(format!("`{}` is not host:port", config.address)))?,
        };
        let server_name = ServerName::try_from(host.clone())
            .map_err(|e| bad(format!("server name `{host}`: {e}")))?;

        let mut roots = RootCertStore::empty();
        for cert in CertificateDer::pem_slice_iter(&config.ca_pem) {
            let cert = cert.map_err(|e| bad(format!("CA certificate: {e}")))?;
            roots
                .add(cert)
                .map_err(|e| bad(format!("CA certificate: {e}")))?;
        }
        if roots.is_empty() {
            return Err(bad("the CA file holds no PEM certificate".into()));
        }
        // The server's cipher policy (ECDHE + AEAD only); TLS 1.2 stays
        // allowed because receivers such as older rsyslog builds may not
        // speak 1.3.
        let builder = ClientConfig::builder_with_provider(crate::tls::kura_provider())
            .with_protocol_versions(crate::tls::protocol_versions(TlsVersion::V1_2))
            .map_err(|e| bad(e.to_string()))?
            .with_root_certificates(roots);
        let tls = match (&config.client_cert_pem, &config.client_key_pem) {
            (Some(cert), Some(key)) => {
                let chain = CertificateDer::pem_slice_iter(cert)
                    .collect::<Result<Vec<_>, _>>()
                    .map_err(|e| bad(format!("client certificate: {e}")))?;
                if chain.is_empty() {
                    return Err(bad(
                        "the client certificate file holds no PEM certificate".into()
                    ));
                }
                let key = PrivateKeyDer::from_pem_slice(key.expose_secret())
                    .map_err(|e| bad(format!("client key: {e}")))?;
                builder
                    .with_client_auth_cert(chain, key)
                    .map_err(|e| bad(format!("client certificate and key: {e}")))?
            }
            (None, None) => builder.with_no_client_auth(),
            _ => {
                return Err(bad(
                    "a client certificate needs its key, and a key its certificate".into(),
                ));
            }
        };
        Ok(Self {
            name,
            address: config.address,
            server_name,
            connector: TlsConnector::from(Arc::new(tls)),
            format: config.format,
            connect_timeout: config.connect_timeout,
            write_timeout: config.write_timeout,
            connection: Mutex::new(None),
        })
    }

    /// Sends `batch` in order, reconnecting if needed. `Ok` means every
    /// frame was written and flushed; on error nothing about the batch is
    /// certain and the caller should retry it (the connection is dropped).
    async fn send(&self, batch: &[StoredEvent]) -> Result<(), ExportError> {
        if batch.is_empty() {
            return Ok(());
        }
        let mut bytes = Vec::new();
        for stored in batch {
            bytes.extend(frame(&format_event(stored, &self.format)?));
        }
        let mut connection = self.connection.lock().await;
        if let Some(stream) = connection.as_mut()
            && !still_open(stream).await
        {
            *connection = None;
        }
        let stream = match connection.as_mut() {
            Some(stream) => stream,
            None => connection.insert(self.connect().await?),
        };
        let written = tokio::time::timeout(self.write_timeout, async {
            stream.write_all(&bytes).await?;
            stream.flush().await
        })
        .await;
        let failure = match written {
            Ok(Ok(())) => return Ok(()),
            Ok(Err(e)) => e.to_string(),
            Err(_) => format!("writing took longer than {:?}", self.write_timeout),
        };
        *connection = None;
        Err(self.delivery(failure))
    }

    async fn connect(&self) -> Result<TlsStream<TcpStream>, ExportError> {
        let attempt = async {
            let tcp = TcpStream::connect(&self.address)
                .await
                .map_err(|e| format!("cannot connect: {e}"))?;
            let _ = tcp.set_nodelay(true);
            self.connector
                .connect(self.server_name.clone(), tcp)
                .await
                .map_err(|e| format!("TLS handshake failed: {e}"))
        };
        match tokio::time::timeout(self.connect_timeout, attempt).await {
            Ok(Ok(stream)) => {
                tracing::info!(exporter = %self.name, address = %self.address, "syslog export connected");
                Ok(stream)
            }
            Ok(Err(detail)) => Err(self.delivery(detail)),
            Err(_) => {
                Err(self.delivery(format!("no connection within {:?}", self.connect_timeout)))
            }
        }
    }

    fn delivery(&self, detail: String) -> ExportError {
        ExportError::delivery(&self.name, format_args!("{}: {detail}", self.address))
    }
}

#[async_trait]
impl ExportSink for SyslogExporter {
    fn name(&self) -> &str {
        &self.name
    }

    /// Syslog has no acknowledgements, so "delivered" here means written
    /// and flushed into a TLS connection the receiver had not closed.
    async fn deliver(&self, batch: &[StoredEvent]) -> Result<(), ExportError> {
        self.send(batch).await
    }
}

/// Whether the receiver has not closed the connection. Receivers never send
/// application data, so a read that completes at once means a close (or an
/// error); one that would block means the connection is still open.
async fn still_open(stream: &mut TlsStream<TcpStream>) -> bool {
    let mut probe = [0u8; 1];
    // A zero timeout polls the read exactly once.
    matches!(
        tokio::time::timeout(Duration::ZERO, stream.read(&mut probe)).await,
        Err(_) | Ok(Ok(1..))
    )
}

/// The host part of `host:port` or `[v6]:port`.
fn host_of(address: &str) -> Option<String> {
    let (host, port) = address.rsplit_once(':')?;
    port.parse::<u16>().ok()?;
    let host = host
        .strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host);
    (!host.is_empty()).then(|| host.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_is_taken_from_the_address() {
        assert_eq!(
            host_of("siem.example:6514").as_deref(),
            Some("siem.example")
        );
        assert_eq!(host_of("[::1]:6514").as_deref(), Some("::1"));
        assert_eq!(host_of("127.0.0.1:6514").as_deref(), Some("127.0.0.1"));
        assert_eq!(host_of("siem.example"), None);
        assert_eq!(host_of(":6514"), None);
    }

    #[test]
    fn unusable_configurations_are_refused_with_the_exporter_named() {
        let err = SyslogExporter::new(SyslogExportConfig::new(
            "siem",
            "siem:6514",
            b"nope".to_vec(),
        ))
        .unwrap_err();
        assert!(
            err.to_string().contains("`siem`") && err.to_string().contains("CA"),
            "{err}"
        );
        let err =
            SyslogExporter::new(SyslogExportConfig::new("siem", "siem", Vec::new())).unwrap_err();
        assert!(err.to_string().contains("host:port"), "{err}");
    }
}
