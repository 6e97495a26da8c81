//! The Kura server: everything between the network and the domain crates.
//!
//! Principal types:
//! - [`Platform`]: an opened installation — data directory, KMS, storage and
//!   TLS material — created by [`Platform::open`], which performs the first-run
//!   set-up and refuses damaged state with an actionable [`StartError`].
//! - [`BoundServer`]: the HTTPS listener, bound but not yet serving, so
//!   callers (and the test kit) can learn the port before traffic flows.
//! - [`router`]: the axum application with its middleware stack (request
//!   ids, JSON access logs, security headers, limits, timeouts, metrics).
//!
//! HTTP and TLS live only here. This crate holds no SQL (it calls the
//! [`kura_store::PlatformStore`] trait) and no cryptographic primitives (it
//! calls `kura-crypto`); TLS policy is configured here, on rustls.

mod bootstrap;
mod http;
mod serve;
mod tls;

pub use bootstrap::{Installation, Platform, SetupLink, StartError};
pub use http::{AppState, Problem, router};
pub use kura_events;
pub use serve::{BoundServer, ShutdownSignal};
pub use tls::{TlsError, TlsMaterial, tls_server_config};
