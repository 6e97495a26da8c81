//! Hosted apps: the rules behind Kura's FileMaker-Data-API-compatible
//! databases.
//!
//! - [`schema`]: the app definition document (tables, fields with types and
//!   validation, relationships, layouts with portals, value lists, scripts,
//!   privilege sets), its checked form, and planning a migration that never
//!   discards data silently.
//! - [`privileges`]: privilege sets — record, field and extended access.
//! - [`find`]: FileMaker find criteria → store filters (bound parameters).
//! - [`value`]: typed values on the wire (FileMaker date formats) and in
//!   storage (sortable ISO text).
//! - [`data`]: record operations with FileMaker semantics and error codes.
//! - [`script`]: the small, safe script language.
//! - [`sessions`]: Data API tokens with FileMaker's 15-minute idle expiry.
//! - [`service`]: [`Apps`], tying the registry, the app files, accounts and
//!   sessions together.
//!
//! Knows no HTTP and no SQL: records live in `kura_store::app_data`, and
//! who may manage a team's apps is decided by `kura_identity`'s policy.

pub mod data;
pub mod error;
pub mod find;
pub mod import;
pub mod privileges;
pub mod schema;
pub mod script;
pub mod service;
pub mod sessions;
pub mod value;

pub use error::{AppsError, FmError};
pub use service::{
    AppAccount, AppCredential, ApplyReport, Apps, AutomationError, LoadedApp, LoginFailure,
    NewAccountCredential, RecordOp, Target,
};
