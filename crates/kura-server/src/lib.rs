//! The Kura server: everything between the network and the domain crates.
//!
//! Principal types:
//! - [`Platform`]: an opened installation — data directory, KMS, storage and
//!   TLS material — created by [`Platform::open`], which performs the first-run
//!   set-up and refuses damaged state with an actionable [`StartError`].
//! - [`BoundServer`]: the HTTPS listener, bound but not yet serving, so
//!   callers (and the test kit) can learn the port before traffic flows.
//! - [`router`]: the axum application with its middleware stack (request
//!   ids, JSON access logs, security headers, limits, timeouts, metrics),
//!   including Kura ID's admin API under `/api/v1/` ([`api_routes`],
//!   [`openapi_document`]).
//! - [`edge::Edge`]: the network firewall, rate limits and WAF every
//!   request passes before a handler (platform firewall lists also before
//!   the TLS handshake), with policies kept in the platform database.
//! - [`doctor`]: the hardened baseline as pass/warn/fail checks, shared by
//!   `kura doctor` and the production start.
//! - [`syslog::SyslogListener`] and [`syslog::SyslogExporter`]: syslog over
//!   TLS (RFC 5425) in both directions; senders authenticate with client
//!   certificates from a configured CA.
//!
//! HTTP and TLS live only here. This crate holds no SQL (it calls the
//! [`kura_store::PlatformStore`] trait) and no cryptographic primitives (it
//! calls `kura-crypto`); TLS policy is configured here, on rustls.

mod bootstrap;
mod console;
pub mod doctor;
pub mod edge;
mod http;
mod notify;
mod pipeline;
mod serve;
pub mod syslog;
mod tls;

pub use bootstrap::{Installation, Platform, SetupLink, StartError};
pub use http::api::{
    ApiRoute, Auth as Authenticated, CSRF_HEADER, SESSION_COOKIE, api_routes,
    document as openapi_document,
};
pub use http::{AppState, Problem, router};
pub use kura_events;
pub use kura_identity;
pub use pipeline::Pipeline;
pub use serve::{BoundServer, ShutdownSignal};
pub use tls::{TlsError, TlsMaterial, tls_server_config};
