//! [`SyslogListener`]: RFC 5425 ingest with mutual TLS.
//!
//! Each connection is read only as fast as its events become durable: a
//! frame is parsed, normalised and recorded through the sink, and only then
//! is the next one taken, so a slow log pushes back on senders through TCP
//! instead of growing a queue. A refused frame is counted and skipped; a
//! stream that is not octet-counted cannot be resynchronised and is closed.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use kura_config::TlsVersion;
use kura_events::syslog::{Frame, FrameDecoder, IngestPolicy, Provenance, RejectReason, ingest};
use kura_events::{EventError, EventSink};
use kura_types::{Clock, SystemClock};
use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject as _;
use rustls::server::WebPkiClientVerifier;
use rustls::{RootCertStore, ServerConfig};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Semaphore, watch};
use tokio::task::JoinSet;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;

use crate::serve::ShutdownSignal;
use crate::tls::{TlsError, TlsMaterial, kura_provider, protocol_versions};

/// Limits of the syslog listener.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SyslogLimits {
    /// Frame size and timestamp window.
    pub ingest: IngestPolicy,
    /// Connections served at once; more are closed on accept and counted.
    pub max_connections: usize,
    /// Time allowed for the TLS handshake.
    pub handshake_timeout: Duration,
    /// A connection that sends nothing for this long is closed (senders
    /// such as rsyslog reconnect when they next have something to say).
    pub idle_timeout: Duration,
    /// A connection whose frames are refused more often than this is closed:
    /// it is misconfigured or hostile, and its refusals are already counted.
    pub max_rejects_per_connection: u64,
    /// The lowest TLS version accepted (the server's `tls.min_version`).
    pub min_tls_version: TlsVersion,
}

impl Default for SyslogLimits {
    fn default() -> Self {
        Self {
            ingest: IngestPolicy::default(),
            max_connections: 256,
            handshake_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(600),
            max_rejects_per_connection: 1000,
            min_tls_version: TlsVersion::V1_2,
        }
    }
}

/// Why the listener could not start.
#[derive(Debug, thiserror::Error)]
pub enum SyslogListenerError {
    /// The server certificate or the TLS policy was refused.
    #[error(transparent)]
    Tls(#[from] TlsError),
    /// The client CA is missing or unusable.
    #[error("syslog client CA: {0}")]
    ClientCa(String),
    /// The address could not be bound.
    #[error("cannot listen for syslog on {addr}: {detail}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// What went wrong.
        detail: String,
    },
}

/// Counters since the listener was bound.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SyslogStats {
    /// Events recorded.
    pub accepted: u64,
    /// Frames refused, by reason.
    pub rejected: BTreeMap<RejectReason, u64>,
    /// Connections that completed the TLS handshake.
    pub connections: u64,
    /// Connections whose handshake failed or timed out (including clients
    /// without an acceptable certificate).
    pub handshake_failures: u64,
    /// Connections closed on accept because `max_connections` were open.
    pub connections_refused: u64,
    /// Connections closed because the sink could not record an event.
    pub sink_failures: u64,
}

impl SyslogStats {
    /// Frames refused for `reason`.
    pub fn rejected(&self, reason: RejectReason) -> u64 {
        self.rejected.get(&reason).copied().unwrap_or(0)
    }
}

#[derive(Debug, Default)]
struct Counters {
    accepted: AtomicU64,
    rejected: [AtomicU64; RejectReason::ALL.len()],
    connections: AtomicU64,
    handshake_failures: AtomicU64,
    connections_refused: AtomicU64,
    sink_failures: AtomicU64,
}

impl Counters {
    fn snapshot(&self) -> SyslogStats {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        SyslogStats {
            accepted: get(&self.accepted),
            rejected: RejectReason::ALL
                .iter()
                .map(|r| (*r, get(&self.rejected[r.index()])))
                .collect(),
            connections: get(&self.connections),
            handshake_failures: get(&self.handshake_failures),
            connections_refused: get(&self.connections_refused),
            sink_failures: get(&self.sink_failures),
        }
    }

    fn bump(c: &AtomicU64) {
        c.fetch_add(1, Ordering::Relaxed);
    }
}

/// What every connection task shares.
#[derive(Debug)]
struct Shared {
    sink: Arc<dyn EventSink>,
    clock: Arc<dyn Clock>,
    limits: SyslogLimits,
    counters: Arc<Counters>,
}

/// A bound, not yet serving, RFC 5425 syslog listener.
pub struct SyslogListener {
    listener: TcpListener,
    local_addr: SocketAddr,
    acceptor: TlsAcceptor,
    shared: Shared,
}

impl std::fmt::Debug for SyslogListener {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SyslogListener")
            .field("local_addr", &self.local_addr)
            .field("limits", &self.shared.limits)
            .finish_non_exhaustive()
    }
}

/// A handle to read a listener's counters while it serves.
#[derive(Debug, Clone)]
pub struct SyslogStatsHandle(Arc<Counters>);

impl SyslogStatsHandle {
    /// The counters now.
    pub fn snapshot(&self) -> SyslogStats {
        self.0.snapshot()
    }
}

impl SyslogListener {
    /// Binds `addr` and prepares TLS: the server's certificate and cipher
    /// policy (`crate::tls::kura_provider`), plus mandatory client certificates
    /// that chain to a CA in `client_ca_pem`.
    pub async fn bind(
        addr: SocketAddr,
        tls: &TlsMaterial,
        client_ca_pem: &[u8],
        sink: Arc<dyn EventSink>,
        limits: SyslogLimits,
    ) -> Result<Self, SyslogListenerError> {
        let config = server_config(tls, client_ca_pem, limits.min_tls_version)?;
        let listener = TcpListener::bind(addr)
            .await
            .map_err(|e| SyslogListenerError::Bind {
                addr,
                detail: e.to_string(),
            })?;
        let local_addr = listener
            .local_addr()
            .map_err(|e| SyslogListenerError::Bind {
                addr,
                detail: e.to_string(),
            })?;
        Ok(Self {
            listener,
            local_addr,
            acceptor: TlsAcceptor::from(config),
            shared: Shared {
                sink,
                clock: Arc::new(SystemClock),
                limits,
                counters: Arc::new(Counters::default()),
            },
        })
    }

    /// Uses `clock` for receive times and the timestamp window (tests).
    #[must_use]
    pub fn with_clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.shared.clock = clock;
        self
    }

    /// The address actually bound (useful with port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// A handle to the counters, usable while and after the listener serves.
    pub fn stats(&self) -> SyslogStatsHandle {
        SyslogStatsHandle(Arc::clone(&self.shared.counters))
    }

    /// Serves until `shutdown` resolves: then stops accepting, lets each
    /// connection finish the event it is recording, closes them and returns.
    pub async fn serve(self, shutdown: ShutdownSignal) {
        let Self {
            listener,
            acceptor,
            shared,
            local_addr,
        } = self;
        let shared = Arc::new(shared);
        tracing::info!(%local_addr, "syslog listener serving (RFC 5425, mutual TLS)");
        let (stop_tx, stop_rx) = watch::channel(false);
        let permits = Arc::new(Semaphore::new(shared.limits.max_connections.max(1)));
        let mut tasks = JoinSet::new();
        let mut shutdown = shutdown;
        loop {
            tokio::select! {
                () = &mut shutdown => break,
                Some(_) = tasks.join_next(), if !tasks.is_empty() => {}
                accepted = listener.accept() => {
                    let (tcp, peer) = match accepted {
                        Ok(pair) => pair,
                        Err(e) => {
                            // Out of descriptors and similar: back off
                            // briefly rather than spin.
                            tracing::warn!(error = %e, "syslog accept failed");
                            tokio::time::sleep(Duration::from_millis(50)).await;
                            continue;
                        }
                    };
                    let Ok(permit) = Arc::clone(&permits).try_acquire_owned() else {
                        Counters::bump(&shared.counters.connections_refused);
                        tracing::warn!(%peer, "syslog connection refused: too many open");
                        drop(tcp);
                        continue;
                    };
                    let acceptor = acceptor.clone();
                    let shared = Arc::clone(&shared);
                    let stop = stop_rx.clone();
                    tasks.spawn(async move {
                        connection(tcp, peer, acceptor, shared, stop).await;
                        drop(permit);
                    });
                }
            }
        }
        drop(listener);
        let _ = stop_tx.send(true);
        while tasks.join_next().await.is_some() {}
        tracing::info!(%local_addr, "syslog listener stopped");
    }
}

fn server_config(
    tls: &TlsMaterial,
    client_ca_pem: &[u8],
    min_version: TlsVersion,
) -> Result<Arc<ServerConfig>, SyslogListenerError> {
    // The same provider and versions as the HTTPS listener.
    let provider = kura_provider();
    let mut roots = RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(client_ca_pem) {
        let cert = cert.map_err(|e| SyslogListenerError::ClientCa(e.to_string()))?;
        roots
            .add(cert)
            .map_err(|e| SyslogListenerError::ClientCa(e.to_string()))?;
    }
    if roots.is_empty() {
        return Err(SyslogListenerError::ClientCa(
            "holds no PEM certificate; senders must be authenticated with client certificates"
                .into(),
        ));
    }
    let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider.clone())
        .build()
        .map_err(|e| SyslogListenerError::ClientCa(e.to_string()))?;
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(protocol_versions(min_version))
        .map_err(TlsError::from)?
        .with_client_cert_verifier(verifier)
        .with_single_cert(tls.chain.clone(), tls.key.clone_key())
        .map_err(TlsError::from)?;
    config.ignore_client_order = true;
    Ok(Arc::new(config))
}

/// The size of one read; frames may span several.
const READ_CHUNK: usize = 16 * 1024;

async fn connection(
    tcp: TcpStream,
    peer: SocketAddr,
    acceptor: TlsAcceptor,
    shared: Arc<Shared>,
    mut stop: watch::Receiver<bool>,
) {
    let counters = &shared.counters;
    let limits = shared.limits;
    let mut stream =
        match tokio::time::timeout(limits.handshake_timeout, acceptor.accept(tcp)).await {
            Ok(Ok(stream)) => stream,
            Ok(Err(e)) => {
                Counters::bump(&counters.handshake_failures);
                tracing::warn!(%peer, error = %e, "syslog TLS handshake failed");
                return;
            }
            Err(_) => {
                Counters::bump(&counters.handshake_failures);
                tracing::warn!(%peer, "syslog TLS handshake timed out");
                return;
            }
        };
    Counters::bump(&counters.connections);
    let fingerprint = stream
        .get_ref()
        .1
        .peer_certificates()
        .and_then(|chain| chain.first())
        .map(|leaf| kura_crypto::digest::sha256_hex(leaf.as_ref()));
    tracing::info!(%peer, client_certificate_sha256 = fingerprint.as_deref().unwrap_or("-"), "syslog sender connected");

    let mut decoder = FrameDecoder::new(limits.ingest.frame_limit());
    let mut buf = vec![0u8; READ_CHUNK];
    let mut rejects = 0u64;
    let reject = |reason: RejectReason, detail: &dyn std::fmt::Display| {
        Counters::bump(&counters.rejected[reason.index()]);
        tracing::info!(%peer, %reason, %detail, "syslog frame refused");
    };
    loop {
        // Everything already buffered is recorded before reading more.
        loop {
            let frame = match decoder.next_frame() {
                Ok(Some(frame)) => frame,
                Ok(None) => break,
                Err(e) => {
                    reject(e.reason(), &e);
                    close(&mut stream).await;
                    return;
                }
            };
            let bytes = match frame {
                Frame::Message(bytes) => bytes,
                Frame::Oversized { len } => {
                    rejects += 1;
                    reject(
                        RejectReason::Oversized,
                        &format_args!(
                            "frame of {len} bytes exceeds {}",
                            limits.ingest.frame_limit()
                        ),
                    );
                    continue;
                }
            };
            let provenance = Provenance {
                received_at: shared.clock.now(),
                peer: Some(peer),
                peer_certificate_sha256: fingerprint.clone(),
            };
            match ingest(&bytes, &limits.ingest, &provenance) {
                Ok(event) => match shared.sink.record(event).await {
                    Ok(()) => Counters::bump(&counters.accepted),
                    Err(EventError::Invalid(detail)) => {
                        rejects += 1;
                        reject(RejectReason::Oversized, &detail);
                    }
                    Err(e @ EventError::Unavailable(_)) => {
                        // Closing tells the sender to keep (and resend) what
                        // it has; reading on would lose events.
                        Counters::bump(&counters.sink_failures);
                        tracing::error!(%peer, error = %e, "syslog event not recorded; closing the connection");
                        close(&mut stream).await;
                        return;
                    }
                },
                Err(e) => {
                    rejects += 1;
                    reject(e.reason(), &e);
                }
            }
            if rejects > limits.max_rejects_per_connection {
                tracing::warn!(%peer, rejects, "syslog sender closed after too many refused frames");
                close(&mut stream).await;
                return;
            }
        }
        if *stop.borrow() {
            close(&mut stream).await;
            return;
        }
        let read = tokio::select! {
            read = tokio::time::timeout(limits.idle_timeout, stream.read(&mut buf)) => read,
            _ = stop.changed() => {
                close(&mut stream).await;
                return;
            }
        };
        match read {
            Ok(Ok(0)) => {
                if !decoder.is_idle() {
                    reject(
                        RejectReason::Framing,
                        &"the connection ended inside a frame",
                    );
                }
                return;
            }
            Ok(Ok(n)) => decoder.push(&buf[..n]),
            Ok(Err(e)) => {
                tracing::info!(%peer, error = %e, "syslog connection failed");
                return;
            }
            Err(_) => {
                tracing::info!(%peer, "syslog connection idle; closing");
                close(&mut stream).await;
                return;
            }
        }
    }
}

/// Sends TLS close_notify, without waiting long for a peer that is gone.
async fn close(stream: &mut TlsStream<TcpStream>) {
    let _ = tokio::time::timeout(Duration::from_secs(2), stream.shutdown()).await;
}
