//! The HTTPS listener and its graceful shutdown.
//!
//! Every connection is TLS: a plain-HTTP client fails the handshake and is
//! closed without an HTTP answer. Connections are capped, handshakes and
//! request headers have deadlines, and shutdown stops accepting, marks the
//! server not-ready, and lets in-flight requests finish within a grace period.

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::ConnectInfo;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto::Builder;
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_rustls::TlsAcceptor;
use tower::ServiceExt as _;

use crate::bootstrap::{Platform, StartError};
use crate::http::{AppState, router};
use crate::tls::tls_server_config;

/// How often the edge's housekeeping runs.
const EDGE_MAINTENANCE: Duration = Duration::from_secs(10);

/// Records a connection refused by the platform firewall (aggregated).
async fn refuse_connection(edge: &crate::edge::Edge, ip: std::net::IpAddr) {
    use crate::edge::report::{FIREWALL_BLOCKED, Refusal};
    let refusal = Refusal {
        action: FIREWALL_BLOCKED,
        source: Some(crate::edge::firewall::canonical_ip(ip)),
        rule: "platform".into(),
        team: None,
    };
    if let Some(first) = edge.reporter().first_of(refusal)
        && let Err(e) = edge
            .reporter()
            .record_first(
                &first,
                None,
                vec![("stage", serde_json::json!("connection"))],
            )
            .await
    {
        tracing::error!(error = %e, "firewall refusal not recorded");
    }
    tracing::debug!(%ip, "connection refused by the platform firewall");
}

/// A future that resolves when the server should stop.
pub type ShutdownSignal = Pin<Box<dyn Future<Output = ()> + Send>>;

/// A bound, not yet serving, HTTPS listener.
pub struct BoundServer {
    listener: TcpListener,
    local_addr: SocketAddr,
    acceptor: TlsAcceptor,
    router: Router,
    state: AppState,
    handshake_timeout: Duration,
    shutdown_grace: Duration,
    max_connections: usize,
}

impl std::fmt::Debug for BoundServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BoundServer")
            .field("local_addr", &self.local_addr)
            .finish_non_exhaustive()
    }
}

impl BoundServer {
    /// Binds the configured address with the platform's TLS material, to
    /// serve the platform's routes plus `routes`.
    pub async fn bind(
        platform: &Platform,
        state: AppState,
        routes: Router<AppState>,
    ) -> Result<Self, StartError> {
        let config = &platform.config;
        let tls = tls_server_config(&platform.tls, config.tls.min_version)?;
        let addr = config.server.bind;
        let listener = TcpListener::bind(addr).await.map_err(|e| StartError::Bind {
            addr,
            detail: match e.kind() {
                std::io::ErrorKind::AddrInUse => {
                    "the address is already in use (is another Kura or service running there?); choose another with --bind or server.bind".into()
                }
                std::io::ErrorKind::PermissionDenied => {
                    "permission denied (ports below 1024 need privileges)".into()
                }
                std::io::ErrorKind::AddrNotAvailable => {
                    "no network interface has that address".into()
                }
                _ => e.to_string(),
            },
        })?;
        let local_addr = listener.local_addr().map_err(|e| StartError::Bind {
            addr,
            detail: e.to_string(),
        })?;
        Ok(Self {
            listener,
            local_addr,
            acceptor: TlsAcceptor::from(tls),
            router: router(state.clone(), config, routes),
            state,
            handshake_timeout: Duration::from_secs(config.server.handshake_timeout_secs),
            shutdown_grace: Duration::from_secs(config.server.shutdown_grace_secs),
            max_connections: config.server.max_connections,
        })
    }

    /// The address actually bound (useful with port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Serves until `shutdown` resolves, then drains in-flight requests.
    pub async fn serve(self, shutdown: ShutdownSignal) {
        let Self {
            listener,
            acceptor,
            router,
            state,
            handshake_timeout,
            shutdown_grace,
            max_connections,
            ..
        } = self;
        let mut builder = Builder::new(TokioExecutor::new());
        builder
            .http1()
            .timer(TokioTimer::new())
            .header_read_timeout(Duration::from_secs(10));
        builder.http2().timer(TokioTimer::new());
        let graceful = GracefulShutdown::new();
        // Edge housekeeping: refusal summaries, idle rate buckets, policy
        // changes made on other nodes.
        let (maintenance_stop, mut maintenance_stopped) = tokio::sync::watch::channel(false);
        let edge = Arc::clone(&state.edge);
        let maintenance = tokio::spawn(async move {
            let mut ticker = tokio::time::interval(EDGE_MAINTENANCE);
            loop {
                tokio::select! {
                    _ = ticker.tick() => {}
                    _ = maintenance_stopped.changed() => break,
                }
                if let Err(e) = edge.maintain().await {
                    tracing::error!(error = %e, "edge maintenance failed");
                }
            }
            if let Err(e) = edge.reporter().flush(true).await {
                tracing::error!(error = %e, "edge refusal summaries not recorded at shutdown");
            }
        });
        // Kura Connect's workers run beside the listener: they resume runs
        // left by an earlier process and run queued and due ones.
        let workers = state.connect.start_workers();
        let permits = Arc::new(Semaphore::new(max_connections));
        let mut shutdown = shutdown;
        loop {
            let permit = tokio::select! {
                permit = Arc::clone(&permits).acquire_owned() => match permit {
                    Ok(p) => p,
                    Err(_) => break,
                },
                () = &mut shutdown => break,
            };
            let (tcp, peer) = tokio::select! {
                accepted = listener.accept() => match accepted {
                    Ok(pair) => pair,
                    Err(e) => {
                        // Out of descriptors and similar: back off briefly
                        // rather than spin.
                        tracing::warn!(error = %e, "accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                },
                () = &mut shutdown => break,
            };
            let _ = tcp.set_nodelay(true);
            state.metrics.connections.inc();
            state.metrics.connections_open.inc();
            let acceptor = acceptor.clone();
            let router = router.clone();
            let builder = builder.clone();
            let watcher = graceful.watcher();
            let metrics = Arc::clone(&state.metrics);
            let edge = Arc::clone(&state.edge);
            tokio::spawn(async move {
                let _permit = permit;
                // The platform's lists refuse a connection before any TLS
                // work. A trusted proxy's connection carries other clients,
                // judged one request at a time at the HTTP layer.
                if edge.enabled()
                    && !edge.proxies().client_is_proxy(peer.ip())
                    && !edge.snapshot().platform_permits(peer.ip())
                {
                    refuse_connection(&edge, peer.ip()).await;
                    metrics.connections_open.dec();
                    return;
                }
                let handshake = tokio::time::timeout(handshake_timeout, acceptor.accept(tcp)).await;
                let stream = match handshake {
                    Ok(Ok(stream)) => stream,
                    Ok(Err(e)) => {
                        metrics.tls_handshake_failures.inc();
                        metrics.connections_open.dec();
                        tracing::debug!(%peer, error = %e, "TLS handshake failed");
                        return;
                    }
                    Err(_) => {
                        metrics.tls_handshake_failures.inc();
                        metrics.connections_open.dec();
                        tracing::debug!(%peer, "TLS handshake timed out");
                        return;
                    }
                };
                let service = hyper::service::service_fn(move |req: hyper::Request<Incoming>| {
                    let mut req = req.map(Body::new);
                    req.extensions_mut().insert(ConnectInfo(peer));
                    router.clone().oneshot(req)
                });
                let conn = builder.serve_connection_with_upgrades(TokioIo::new(stream), service);
                if let Err(e) = watcher.watch(conn.into_owned()).await {
                    tracing::debug!(%peer, error = %e, "connection ended with an error");
                }
                metrics.connections_open.dec();
            });
        }
        drop(listener);
        state.ready.store(false, Ordering::Release);
        let _ = maintenance_stop.send(true);
        let _ = maintenance.await;
        tracing::info!("shutting down: draining in-flight requests");
        if tokio::time::timeout(shutdown_grace, graceful.shutdown())
            .await
            .is_err()
        {
            tracing::warn!(
                grace_secs = shutdown_grace.as_secs(),
                "some connections did not finish within the shutdown grace period"
            );
        }
        workers.stop().await;
        tracing::info!("stopped");
    }
}
