//! Kura Connect: durable workflow automation for teams.
//!
//! Principal types:
//! - [`document::FlowDocument`]: a flow — one trigger and ordered steps with
//!   branches — as JSON or YAML, with its JSON Schema ([`document::schema`]).
//! - [`validate`]: the checks on save; each problem names its JSON path.
//! - [`expr::Expressions`]: the sandboxed expression/template language
//!   (minijinja with a fuel limit; no file, network or process access).
//! - [`Connect`]: saving flows as immutable versions, starting runs,
//!   sealed credentials, and the worker pool ([`Workers`]) that claims runs
//!   with a lease and resumes those whose worker stopped. Flow versions
//!   are parsed once ([`CompiledFlow`], cached: versions never change);
//!   a webhook run of a flow of computing steps only runs in the request
//!   and is recorded in one transaction (`inline`).
//! - Hosted-app steps and the app-event trigger, which act through
//!   `kura_apps::Apps` as a service account of the app, under the same
//!   privilege checks as the Data API.
//! - [`outbound::OutboundPolicy`]: HTTP steps' SSRF guard (own DNS
//!   resolution, address checks on every redirect hop, connection pinned to
//!   the checked address).
//!
//! It persists through `kura_store::connect::ConnectStore` and records
//! security events through `kura_events::EventSink`. It knows no SQL and
//! serves no HTTP (outbound requests are its only network use).

mod app_events;
pub mod audit;
mod compiled;
mod credential_store;
pub mod credentials;
pub mod document;
mod engine;
pub mod expr;
mod inline;
pub mod oauth;
pub mod outbound;
pub mod schedule;
mod service;
pub mod steps;
pub mod validate;

pub use compiled::CompiledFlow;
pub use service::{Connect, EngineConfig, InlineRun, SaveError, SavedFlow, Workers};

/// Kura Connect's errors.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    /// No such thing (in this team).
    #[error("{0} not found")]
    NotFound(&'static str),
    /// The request cannot be carried out as asked.
    #[error("{0}")]
    Invalid(String),
    /// Storage failed.
    #[error(transparent)]
    Store(#[from] kura_store::StoreError),
    /// Stored data does not parse.
    #[error("stored data is malformed: {0}")]
    Corrupt(String),
    /// Sealing or opening a credential failed.
    #[error("credential crypto failed: {0}")]
    Crypto(String),
    /// The system random source failed.
    #[error("the random source failed")]
    Random,
    /// A security event for the change could not be prepared or recorded
    /// (the change did not happen).
    #[error("security event not recorded: {0}")]
    Event(String),
    /// A run's task failed.
    #[error("run task failed: {0}")]
    Worker(String),
}
