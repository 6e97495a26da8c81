//! Vocabulary shared by every Kura crate.
//!
//! This crate owns the small types that several layers must agree on: typed
//! identifiers ([`TeamId`], [`AppId`], [`DataKeyId`], [`EventId`]), the
//! [`KeyScope`] that says what a data key protects, the injected [`Clock`]
//! through which all expiry logic reads time, and the security event model
//! ([`SecurityEvent`] with its [`Actor`], parsed [`Action`] and [`Outcome`]),
//! including the sanitiser that keeps secrets and card numbers out of events
//! and the canonical encoding the event log's hash chain commits to.
//!
//! It knows nothing about storage, HTTP, cryptography or configuration; it
//! depends only on `serde`, `serde_json`, `time` and `uuid` so every crate can
//! use it.

mod clock;
pub mod event;
mod ids;
mod scope;

pub use clock::{Clock, ManualClock, SystemClock};
pub use event::{
    Action, ActionParseError, Actor, EventEncodeError, Outcome, OutcomeParseError, SecurityEvent,
};
pub use ids::{AccountId, ApiTokenId, GroupId, InvitationId, SessionId};
pub use ids::{AlertId, IncidentId, NotificationId};
pub use ids::{AppId, DataKeyId, EventId, HostId, IdParseError, TeamId};
pub use ids::{ApprovalId, FlowCredentialId, FlowId, RunId};
pub use scope::{KeyScope, KeyScopeParseError};
