//! Request and connection metrics in the Prometheus/OpenMetrics text format.

use std::fmt;
use std::hash::{Hash, Hasher};

use axum::extract::{MatchedPath, State};
use axum::response::{IntoResponse, Response};
use http::{HeaderValue, Method, StatusCode, header};
use prometheus_client::encoding::text::encode;
use prometheus_client::encoding::{EncodeLabelSet, EncodeLabelValue, LabelValueEncoder};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

use super::{AppState, Problem};

/// A request's method as a label value; the standard methods are copied
/// without an allocation.
#[derive(Clone, Debug, Hash, PartialEq, Eq)]
struct MethodLabel(Method);

impl EncodeLabelValue for MethodLabel {
    fn encode(&self, encoder: &mut LabelValueEncoder) -> Result<(), fmt::Error> {
        EncodeLabelValue::encode(&self.0.as_str(), encoder)
    }
}

/// The route a request matched, or `unmatched`. A matched path shares its
/// text with the router, so labelling a request allocates nothing.
#[derive(Clone, Debug)]
struct RouteLabel(Option<MatchedPath>);

impl RouteLabel {
    fn as_str(&self) -> &str {
        route_name(self.0.as_ref())
    }
}

/// How metrics and the access log name a request's route: the router's
/// path pattern, or `unmatched`.
pub(crate) fn route_name(route: Option<&MatchedPath>) -> &str {
    route.map_or("unmatched", MatchedPath::as_str)
}

impl PartialEq for RouteLabel {
    fn eq(&self, other: &Self) -> bool {
        self.as_str() == other.as_str()
    }
}

impl Eq for RouteLabel {}

impl Hash for RouteLabel {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.as_str().hash(state);
    }
}

impl EncodeLabelValue for RouteLabel {
    fn encode(&self, encoder: &mut LabelValueEncoder) -> Result<(), fmt::Error> {
        EncodeLabelValue::encode(&self.as_str(), encoder)
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    method: MethodLabel,
    route: RouteLabel,
    status: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RouteLabels {
    method: MethodLabel,
    route: RouteLabel,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReasonLabels {
    reason: String,
}

type HistogramFamily = Family<RouteLabels, Histogram, fn() -> Histogram>;

fn latency_histogram() -> Histogram {
    // 0.25 ms … about 8 s.
    Histogram::new(exponential_buckets(0.000_25, 2.0, 16))
}

/// Server metrics.
pub struct Metrics {
    registry: Registry,
    requests: Family<RequestLabels, Counter>,
    durations: HistogramFamily,
    in_flight: Gauge,
    /// Connections accepted.
    pub connections: Counter,
    /// Connections open now.
    pub connections_open: Gauge,
    /// TLS handshakes that failed (wrong protocol, plain HTTP, timeouts).
    pub tls_handshake_failures: Counter,
    /// Kura Connect webhook calls refused (bad signature, too large,
    /// disabled flow).
    pub connect_webhooks_refused: Counter,
    ingest_accepted: Counter,
    ingest_rejected: Family<ReasonLabels, Counter>,
}

impl fmt::Debug for Metrics {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// A registry with Kura's server metrics.
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("kura");
        let requests = Family::<RequestLabels, Counter>::default();
        let durations: HistogramFamily = Family::new_with_constructor(latency_histogram);
        let in_flight = Gauge::default();
        let connections = Counter::default();
        let connections_open = Gauge::default();
        let tls_handshake_failures = Counter::default();
        let connect_webhooks_refused = Counter::default();
        registry.register(
            "connect_webhooks_refused",
            "Kura Connect webhook calls refused (bad signature, too large, disabled flow)",
            connect_webhooks_refused.clone(),
        );
        let ingest_accepted = Counter::default();
        let ingest_rejected = Family::<ReasonLabels, Counter>::default();
        registry.register(
            "event_ingest_accepted",
            "Security events accepted over HTTPS ingest",
            ingest_accepted.clone(),
        );
        registry.register(
            "event_ingest_rejected",
            "HTTPS ingest requests refused, by reason",
            ingest_rejected.clone(),
        );
        registry.register("http_requests", "HTTP requests answered", requests.clone());
        registry.register(
            "http_request_duration_seconds",
            "Time to answer HTTP requests",
            durations.clone(),
        );
        registry.register(
            "http_requests_in_flight",
            "HTTP requests being answered",
            in_flight.clone(),
        );
        registry.register(
            "connections",
            "TCP connections accepted",
            connections.clone(),
        );
        registry.register(
            "connections_open",
            "TCP connections open",
            connections_open.clone(),
        );
        registry.register(
            "tls_handshake_failures",
            "TLS handshakes that failed",
            tls_handshake_failures.clone(),
        );
        Self {
            registry,
            requests,
            durations,
            in_flight,
            connections,
            connections_open,
            tls_handshake_failures,
            connect_webhooks_refused,
            ingest_accepted,
            ingest_rejected,
        }
    }

    pub(crate) fn ingest_accepted(&self, events: usize) {
        self.ingest_accepted
            .inc_by(u64::try_from(events).unwrap_or(u64::MAX));
    }

    pub(crate) fn ingest_rejected(&self, reason: &str) {
        self.ingest_rejected
            .get_or_create(&ReasonLabels {
                reason: reason.to_owned(),
            })
            .inc();
    }

    /// How many ingest requests were refused for `reason` (a
    /// `kura_event_ingest_rejected` label).
    pub fn ingest_rejections(&self, reason: &str) -> u64 {
        self.ingest_rejected
            .get_or_create(&ReasonLabels {
                reason: reason.to_owned(),
            })
            .get()
    }

    pub(crate) fn request_started(&self) {
        self.in_flight.inc();
    }

    /// Counts a finished request under its method and the route it
    /// matched (`None`: no route did).
    pub(crate) fn request_finished(
        &self,
        method: Method,
        route: Option<MatchedPath>,
        status: u16,
        seconds: f64,
    ) {
        self.in_flight.dec();
        let labels = RouteLabels {
            method: MethodLabel(method),
            route: RouteLabel(route),
        };
        self.durations.get_or_create(&labels).observe(seconds);
        self.requests
            .get_or_create(&RequestLabels {
                method: labels.method,
                route: labels.route,
                status,
            })
            .inc();
    }

    /// The metrics in OpenMetrics text.
    pub fn encode(&self) -> Result<String, fmt::Error> {
        let mut out = String::new();
        encode(&mut out, &self.registry)?;
        Ok(out)
    }
}

/// `GET /metrics`.
pub async fn render(State(state): State<AppState>) -> Response {
    match state.metrics.encode() {
        Ok(body) => {
            let mut response = body.into_response();
            response.headers_mut().insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static(
                    "application/openmetrics-text; version=1.0.0; charset=utf-8",
                ),
            );
            response
        }
        Err(_) => Problem::status(StatusCode::INTERNAL_SERVER_ERROR).into_response(),
    }
}
