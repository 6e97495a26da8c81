//! Errors: FileMaker error codes for the Data API, and management errors
//! for the admin API.

use kura_store::StoreError;

/// A FileMaker error: the numeric code clients key on, and its message.
/// The HTTP status follows FileMaker Server's rule (401 for sign-in and
/// token problems, 500 for every other FileMaker error).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("FileMaker error {code}: {message}")]
pub struct FmError {
    /// The FileMaker error code.
    pub code: i32,
    /// The message (FileMaker's text, sometimes with the offending name).
    pub message: String,
}

impl FmError {
    /// An error with FileMaker's standard text for `code`.
    pub fn code(code: i32) -> Self {
        Self {
            code,
            message: standard_message(code).to_owned(),
        }
    }

    /// An error with a specific message.
    pub fn with(code: i32, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
        }
    }

    /// The HTTP status FileMaker Server answers with.
    pub fn http_status(&self) -> u16 {
        match self.code {
            212 | 952 => 401,
            9 => 401,
            953 | 956 => 503,
            1630 | 1706 | 1707 | 1708 | 1710 | 958 | 960 => 400,
            _ => 500,
        }
    }

    /// Store failures are internal: the client sees a generic error.
    pub fn internal(e: &StoreError) -> Self {
        tracing::error!(error = %e, "app store failure");
        Self::broken_text()
    }

    /// Any other internal failure (an answer that could not be written, a
    /// worker that went away): logged, and the client sees the same generic
    /// error as for a store failure.
    pub fn broken(why: impl std::fmt::Display) -> Self {
        tracing::error!(error = %why, "internal failure in an app request");
        Self::broken_text()
    }

    fn broken_text() -> Self {
        Self::with(
            -1,
            "Internal error; the request id identifies it in the server log",
        )
    }
}

/// FileMaker's text for the codes Kura returns.
pub fn standard_message(code: i32) -> &'static str {
    match code {
        0 => "OK",
        9 => "Insufficient privileges",
        101 => "Record is missing",
        102 => "Field is missing",
        104 => "Script is missing",
        105 => "Layout is missing",
        106 => "Table is missing",
        200 => "Record access is denied",
        201 => "Field cannot be modified",
        212 => "Invalid user account and/or password; please try again",
        301 => "Record is in use by another user",
        306 => "Record modification ID does not match",
        400 => "Find criteria are empty",
        401 => "No records match the request",
        500 => "Date value does not meet validation entry options",
        501 => "Time value does not meet validation entry options",
        502 => "Number value does not meet validation entry options",
        503 => "Value in field is not within the range specified in validation entry options",
        504 => "Value in field is not unique, as required in validation entry options",
        506 => {
            "Value in field is not listed on the value list specified in validation entry option"
        }
        508 => "Invalid value entered in Find mode",
        509 => "Field requires a valid value",
        511 => "Value in field exceeds maximum field size",
        802 => "Unable to open file",
        952 => "Invalid FileMaker Data API token (*)",
        956 => "Maximum number of Data API sessions exceeded",
        958 => "Parameter missing",
        960 => "Parameter is invalid",
        1630 => "URL format is incorrect",
        1708 => "Parameter value is invalid",
        1710 => "Invalid JSON in the request body",
        _ => "Unknown error",
    }
}

/// An admin-API error about apps, hosts, schema or app accounts.
#[derive(Debug, thiserror::Error)]
pub enum AppsError {
    /// Input that does not parse or breaks a rule; names what is wrong.
    #[error("{field}: {message}")]
    Invalid {
        /// The offending field or path (`tables[2].fields[0].type`).
        field: String,
        /// What is wrong and what would be accepted.
        message: String,
    },
    /// No such thing, or not visible to the caller.
    #[error("{0} not found")]
    NotFound(String),
    /// A name is taken, or the state forbids the change.
    #[error("{0}")]
    Conflict(String),
    /// The change would destroy data and was not explicitly allowed.
    #[error("{0}")]
    DataLoss(String),
    /// Storage failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl AppsError {
    /// An invalid-input error.
    pub fn invalid(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self::Invalid {
            field: field.into(),
            message: message.into(),
        }
    }
}
