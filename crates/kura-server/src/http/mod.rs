//! The HTTP application: routes, shared state and the middleware stack.

pub mod api;
mod approval_links;
pub(crate) mod fmi;
mod health;
mod hooks;
mod metrics;
pub(crate) mod middleware;
mod oauth_callback;
mod problem;

use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::Duration;

use axum::Router;
use axum::routing::get;
use kura_config::Config;

use crate::bootstrap::Installation;
use kura_events::EventSink;
use kura_identity::Identity;
use kura_store::PlatformStore;
use kura_types::Clock;
use tower::ServiceBuilder;
use tower_http::catch_panic::CatchPanicLayer;
use tower_http::limit::RequestBodyLimitLayer;
use tower_http::timeout::TimeoutLayer;

pub use metrics::Metrics;
pub use problem::Problem;

/// What handlers share: one reference-counted handle, so the copy every
/// middleware layer and extractor takes is one counter increment, not one
/// per service. Fields are reached through `Deref` (`state.identity`).
#[derive(Debug, Clone)]
pub struct AppState(Arc<AppStateInner>);

impl std::ops::Deref for AppState {
    type Target = AppStateInner;

    fn deref(&self) -> &AppStateInner {
        &self.0
    }
}

/// The services behind [`AppState`].
#[derive(Debug)]
pub struct AppStateInner {
    /// Platform state.
    pub platform: Arc<dyn PlatformStore>,
    /// Request metrics.
    pub metrics: Arc<Metrics>,
    /// Cleared when shutdown begins so load balancers stop sending traffic.
    pub ready: Arc<AtomicBool>,
    /// The injected clock.
    pub clock: Arc<dyn Clock>,
    /// Where security events go.
    pub events: Arc<dyn EventSink>,
    /// Header policy.
    pub headers: Arc<middleware::HeaderPolicy>,
    /// Kura ID: authentication and the one policy function.
    pub identity: Identity,
    /// The security event log behind `events`, for queries.
    pub event_log: kura_events::EventLog,
    /// Incidents (their changes are recorded in the same log).
    pub incidents: Arc<kura_events::IncidentService>,
    /// Hosted apps and the Data API's sessions.
    pub apps: kura_apps::Apps,
    /// Signs container download URLs (a fresh key per process: URLs die
    /// with it, as they do after an hour).
    pub container_key: Arc<kura_crypto::hmac::HmacKey>,
    /// The edge: firewall, rate limits and WAF, and their policies.
    pub edge: Arc<crate::edge::Edge>,
    /// Kura ID's records, for existence checks the policy does not make.
    pub identity_store: Arc<dyn kura_store::IdentityStore>,
    /// Kura Connect.
    pub connect: kura_connect::Connect,
    /// The largest webhook body Kura Connect takes.
    pub webhook_body_limit: usize,
    /// The data-key registry and its KMS: key status and master-key
    /// rotation for operators.
    pub keys: kura_store::KeyService,
}

impl AppState {
    /// State for serving `installation` under `config`.
    pub fn new(config: &Config, installation: &Installation) -> Self {
        Self(Arc::new(AppStateInner {
            platform: Arc::clone(&installation.storage.platform),
            metrics: Arc::new(Metrics::new()),
            ready: Arc::new(AtomicBool::new(true)),
            clock: Arc::clone(&installation.clock),
            events: Arc::new(installation.events.clone()),
            headers: Arc::new(middleware::HeaderPolicy::new(config.tls.hsts_max_age_secs)),
            identity: installation.identity.clone(),
            event_log: installation.events.log().clone(),
            incidents: Arc::clone(&installation.incidents),
            apps: installation.apps.clone(),
            container_key: Arc::clone(&installation.container_key),
            edge: Arc::clone(&installation.edge),
            identity_store: installation.identity_store(),
            connect: installation.connect.clone(),
            webhook_body_limit: config.connect.webhook_body_limit_bytes,
            keys: installation.storage.keys.clone(),
        }))
    }
}

/// The whole application: the platform's own routes merged with `routes`
/// (the domain crates' routers), all behind one middleware stack.
pub fn router(state: AppState, config: &Config, routes: Router<AppState>) -> Router {
    let timeout = Duration::from_secs(config.server.request_timeout_secs);
    Router::new()
        .merge(routes)
        .merge(api::api_router())
        .merge(fmi::router())
        .merge(crate::console::router())
        .route("/hooks/{token}", axum::routing::post(hooks::receive))
        .route(
            kura_connect::oauth::CALLBACK_PATH,
            get(oauth_callback::callback),
        )
        .route(
            "/hooks/approvals/{token}",
            get(approval_links::show).post(approval_links::decide),
        )
        .route("/healthz", get(health::healthz))
        .route("/readyz", get(health::readyz))
        .route("/metrics", get(metrics::render))
        .fallback(problem::not_found)
        .layer(
            // Outermost first: every response, errors included, passes back
            // through the request-id, logging, header and problem layer.
            ServiceBuilder::new()
                .layer(axum::middleware::from_fn_with_state(
                    state.clone(),
                    middleware::every_request,
                ))
                .layer(CatchPanicLayer::custom(problem::panic_response))
                .layer(TimeoutLayer::with_status_code(
                    http::StatusCode::REQUEST_TIMEOUT,
                    timeout,
                ))
                // The edge refuses before any handler runs, and reads a body
                // it inspects under the request timeout.
                .layer(axum::middleware::from_fn_with_state(
                    state.clone(),
                    crate::edge::layer::edge,
                ))
                .layer(RequestBodyLimitLayer::new(config.server.body_limit_bytes)),
        )
        .with_state(state)
}
