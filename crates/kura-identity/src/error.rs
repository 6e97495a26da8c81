//! Kura ID's errors, named for domain conditions. The HTTP layer maps each
//! variant to one status in one place.

use time::OffsetDateTime;

use crate::account::AttributeError;
use crate::password::PasswordRejection;
use crate::policy::DenyReason;

/// What was wrong with a presented one-time token (setup link, invitation).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenProblem {
    /// Never issued, replaced, or revoked.
    Unknown,
    /// Past its expiry.
    Expired,
    /// Already used.
    Used,
}

impl TokenProblem {
    /// A stable name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Unknown => "unknown",
            Self::Expired => "expired",
            Self::Used => "used",
        }
    }
}

/// Why a Kura ID operation did not happen.
#[derive(Debug, thiserror::Error)]
pub enum IdentityError {
    /// An email, display name or phone number is malformed (400).
    #[error(transparent)]
    InvalidAttribute(#[from] AttributeError),
    /// A new password breaks the policy (400).
    #[error(transparent)]
    WeakPassword(#[from] PasswordRejection),
    /// Some other input is malformed (400).
    #[error("invalid input: {0}")]
    InvalidInput(String),
    /// The email address already has an account (409).
    #[error("an account with this email address already exists")]
    EmailTaken,
    /// A name is already used (409).
    #[error("{0} already exists")]
    Conflict(String),
    /// Email or password wrong, or the account cannot sign in. Deliberately
    /// the same for an unknown account, a wrong password and a disabled
    /// account (401).
    #[error("the email address or password is wrong")]
    InvalidCredentials,
    /// Too many failures; try again later (429 with Retry-After).
    #[error("too many failed attempts; try again after {retry_after}")]
    Throttled {
        /// When the next attempt is allowed.
        retry_after: OffsetDateTime,
    },
    /// The session or API token is missing, unknown, expired or revoked (401).
    #[error("not signed in, or the session has ended")]
    Unauthenticated,
    /// A TOTP or recovery code is wrong or was already used (401).
    #[error("the code is wrong or was already used")]
    InvalidCode,
    /// A WebAuthn answer failed verification: wrong origin or challenge, a
    /// bad signature, no user verification, an unknown credential, a
    /// counter that went backwards (401).
    #[error("the passkey was not accepted: {0}")]
    PasskeyRejected(String),
    /// A passkey challenge is unknown, expired, already answered, or was
    /// issued to another session (400).
    #[error("the passkey challenge is unknown, expired or already answered")]
    PasskeyChallengeUnknown,
    /// Passkeys cannot be used: the relying party is not configured (a
    /// public URL without a domain name) (503).
    #[error("passkeys are unavailable: {0}")]
    PasskeysUnavailable(String),
    /// There is no TOTP enrolment to verify or confirm (409).
    #[error("no authenticator app is enrolled for this account")]
    MfaNotEnrolled,
    /// The policy refused (403; 401 for an incomplete session).
    #[error("not allowed: {}", .0.as_str())]
    Denied(DenyReason),
    /// A setup link or invitation cannot be used (400/410).
    #[error("the link is {}", .0.as_str())]
    BadToken(TokenProblem),
    /// The installation already has its first operator (409).
    #[error("setup is already complete")]
    SetupComplete,
    /// The record does not exist, or the principal may not know it does (404).
    #[error("{0} not found")]
    NotFound(&'static str),
    /// The account's status does not allow the change, such as re-enabling
    /// an account that is not disabled (409).
    #[error("the account is {0}")]
    AccountStatus(&'static str),
    /// The change would leave a team without an owner (409).
    #[error("a team must keep at least one owner")]
    LastOwner,
    /// Stored data does not decode (500).
    #[error("stored identity data is malformed: {0}")]
    Corrupt(String),
    /// Hashing, randomness or TOTP machinery failed (500).
    #[error("internal error: {0}")]
    Internal(String),
    /// Storage failed (500).
    #[error(transparent)]
    Store(#[from] kura_store::StoreError),
}
