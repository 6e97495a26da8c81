//! Kura's storage: the data directory, encrypted databases and the key registry.
//!
//! Principal types:
//! - [`DataDir`]: the on-disk layout and its permission rules.
//! - [`PlatformStore`]: the trait every platform-state backend implements;
//!   code above this crate sees only the trait, never SQL or the backend.
//! - [`SqlitePlatformStore`]: the embedded backend on SQLCipher (AES-256).
//! - [`KeyService`]: data keys per scope, wrapped by the KMS, with master-key
//!   rotation that re-wraps every data key without touching data.
//! - [`AppDatabases`]: one encrypted database file per hosted app, each under
//!   its own data key.
//! - [`AppRegistry`]: hosts and apps; [`app_data`]: the record store inside
//!   each app's file (typed cells, structured filters compiled to
//!   parameterised SQL, containers, serials, app accounts).
//! - [`Pool`]: many readers and one writer per database file, with all
//!   blocking database work moved off the async runtime.
//! - [`IdentityStore`] and [`SqliteIdentityStore`]: Kura ID's accounts,
//!   credentials, teams, roles, sessions, tokens, MFA and throttle counters
//!   (the rules live in `kura-identity`).
//! - [`events`]: the tamper-evident security event log (hash chain, signed
//!   checkpoints, group-commit [`events::EventLog`], verification, queries,
//!   retention) in the platform database.
//! - [`exports::ExportStore`] and [`incidents::IncidentStore`] with their
//!   SQLite implementations [`SqliteExportStore`] and [`SqliteIncidentStore`]:
//!   SIEM export cursors and delivery attempts; incidents, alerts, timelines
//!   and notifications, each change committed with its security events.
//! - [`edge::EdgeStore`] and [`SqliteEdgeStore`]: the edge's firewall lists,
//!   rate limits and WAF rule modes, each change committed with its events.
//!
//! - [`connect::ConnectStore`] and [`SqliteConnectStore`]: Kura Connect's
//!   flows, versions, leased runs, step records, key-value store and sealed
//!   credentials.
//!
//! SQL lives only in this crate. It knows nothing of HTTP, configuration files
//! or how a KMS keeps its master key.

mod access;
pub mod app_data;
mod app_registry;
mod apps;
pub mod connect;
pub mod connect_approvals;
pub mod connect_oauth;
mod credentials;
mod datadir;
pub mod edge;
mod error;
pub mod events;
pub mod exports;
mod identity;
pub mod incidents;
mod keys;
mod open;
mod passkeys;
mod platform;
mod sqlite;
mod teams;

pub use access::{OperatorAccessRecord, OperatorAccessStore};
pub use app_registry::{AppRecord, AppRegistry, AppStatus, HostRecord};
pub use apps::AppDatabases;
pub use credentials::{CredentialStore, FactorOutcome, FactorProof, FactorStep, SessionChange};
pub use datadir::{DataDir, PermissionNotice};
pub use error::StoreError;
pub use identity::{
    AccountFacts, AccountRecord, ApiTokenRecord, FirstOperator, FirstOperatorOutcome, GrantSubject,
    GroupRecord, IdentityStore, InvitationRecord, MemberRecord, MfaReset, NewAccount, PasswordSet,
    RoleGrant, SessionRecord, SessionRevocation, TeamRecord, ThrottleRecord, TotpRecord,
};
pub use keys::{KeyService, KeyUsage, RotationReport};
pub use open::{Storage, StorageOptions, open_storage};
pub use passkeys::{CeremonyRecord, PasskeyRecord, PasskeyStore, PasskeyUse};
pub use platform::{PlatformStore, SETUP_COMPLETED, SetupTokenCheck, StoredDataKey};
pub use sqlite::SqliteConnectStore;
pub use sqlite::SqliteIdentityStore;
pub use sqlite::{Durability, Pool, SqlitePlatformStore, open_encrypted};
pub use sqlite::{SqliteEdgeStore, SqliteExportStore, SqliteIncidentStore};
pub use teams::TeamStore;
