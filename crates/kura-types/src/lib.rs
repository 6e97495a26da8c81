//! Vocabulary shared by every Kura crate.
//!
//! This crate owns the small types that several layers must agree on: typed
//! identifiers ([`TeamId`], [`AppId`], [`DataKeyId`]), the [`KeyScope`] that
//! says what a data key protects, and the injected [`Clock`] through which all
//! expiry logic reads time.
//!
//! It knows nothing about storage, HTTP, cryptography or configuration; it
//! depends only on `serde`, `time` and `uuid` so every crate can use it.

mod clock;
mod ids;
mod scope;

pub use clock::{Clock, ManualClock, SystemClock};
pub use ids::{AppId, DataKeyId, IdParseError, TeamId};
pub use scope::{KeyScope, KeyScopeParseError};
