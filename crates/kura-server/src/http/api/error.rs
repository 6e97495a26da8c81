//! The one mapping from API failures to RFC 9457 problem details.
//!
//! Every [`IdentityError`] and [`IncidentError`] variant has its own status
//! here and nowhere else; nothing defaults to 400. Internal failures answer with a generic message
//! and are logged with their detail.

use axum::response::{IntoResponse, Response};
use http::{HeaderValue, StatusCode, header};
use kura_events::IncidentError;
use kura_identity::{DenyReason, IdentityError, TokenProblem};
use time::OffsetDateTime;

use crate::http::Problem;

/// Why an API request failed.
#[derive(Debug)]
pub enum ApiError {
    /// The identity service refused.
    Identity(IdentityError),
    /// The incident service refused (or failed).
    Incident(IncidentError),
    /// The hosted apps service refused (or failed).
    Apps(kura_apps::AppsError),
    /// Kura Connect refused (or failed).
    Connect(kura_connect::ConnectError),
    /// A Kura Connect approval decision was refused.
    Approval(kura_connect::steps::approval::ApprovalError),
    /// A flow document has problems, each with its JSON path (422).
    Document(Vec<kura_connect::validate::DocumentError>),
    /// Too many failures: retry after this many seconds.
    Throttled(u64),
    /// No `Authorization` header and no session cookie.
    NoCredentials,
    /// The `Authorization` header is not a bearer token.
    BadAuthorization,
    /// A cookie-authenticated change without a matching CSRF token.
    Csrf,
    /// The request body is not JSON at all.
    UnsupportedMediaType,
    /// The body is not well-formed JSON (400).
    Malformed(String),
    /// A field is missing, unknown or of the wrong type or value (422).
    Invalid {
        /// The field at fault (a JSON path, a path parameter or a query
        /// parameter).
        field: String,
        /// What is wrong with it.
        message: String,
    },
    /// A query parameter (a filter) is unknown or malformed (400).
    BadFilter {
        /// The parameter.
        field: String,
        /// What is wrong with it.
        message: String,
    },
    /// The body is larger than the limit.
    TooLarge,
    /// The change was decided on a stale copy, or would contradict the
    /// state it applies to (409).
    Conflict(String),
    /// A security event could not be recorded, so the request fails.
    EventNotRecorded,
    /// Something internal failed (logged where it happened).
    Internal,
}

impl ApiError {
    /// The mapping of an identity error, with `now` to turn a throttling
    /// deadline into a `Retry-After` delay.
    pub fn identity(e: IdentityError, now: OffsetDateTime) -> Self {
        match e {
            IdentityError::Throttled { retry_after } => {
                let secs = (retry_after - now).whole_seconds().max(1);
                Self::Throttled(u64::try_from(secs).unwrap_or(1))
            }
            other => Self::Identity(other),
        }
    }

    /// An invalid field.
    pub fn invalid(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self::Invalid {
            field: field.into(),
            message: message.into(),
        }
    }
}

fn problem(status: StatusCode, slug: &str, title: &str, detail: impl Into<String>) -> Problem {
    Problem {
        kind: format!("urn:kura:problem:{slug}"),
        title: title.to_owned(),
        status: status.as_u16(),
        detail: Some(detail.into()),
        request_id: None,
        errors: None,
    }
}

fn incident_problem(e: &IncidentError) -> Problem {
    use IncidentError as E;
    match e {
        E::NotFound(_) => problem(
            StatusCode::NOT_FOUND,
            "not-found",
            "Not found",
            e.to_string(),
        ),
        // The message names the states the incident may move to.
        E::InvalidTransition { .. } => problem(
            StatusCode::CONFLICT,
            "invalid-transition",
            "Transition not allowed",
            e.to_string(),
        ),
        E::Invalid(_) => problem(
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid-incident",
            "Invalid incident change",
            e.to_string(),
        ),
        E::Conflict(_) => problem(
            StatusCode::CONFLICT,
            "incident-changed",
            "Incident changed meanwhile",
            e.to_string(),
        ),
        E::ChannelNotFound(_) => problem(
            StatusCode::NOT_FOUND,
            "not-found",
            "Not found",
            e.to_string(),
        ),
        E::ChannelExists(_) => problem(
            StatusCode::CONFLICT,
            "channel-exists",
            "Channel exists",
            e.to_string(),
        ),
        E::ChannelFixed(_) => problem(
            StatusCode::CONFLICT,
            "channel-configured",
            "Channel comes from the configuration file",
            e.to_string(),
        ),
        E::Event(_) | E::Store(_) => {
            tracing::error!(error = %e, "incident service failed");
            Problem::status(StatusCode::INTERNAL_SERVER_ERROR)
        }
    }
}

fn apps_problem(e: &kura_apps::AppsError) -> Problem {
    use kura_apps::AppsError as E;
    match e {
        E::Invalid { .. } => problem(
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid-app-change",
            "Invalid input",
            e.to_string(),
        ),
        E::NotFound(_) => problem(
            StatusCode::NOT_FOUND,
            "not-found",
            "Not found",
            e.to_string(),
        ),
        E::Conflict(_) => problem(StatusCode::CONFLICT, "conflict", "Conflict", e.to_string()),
        E::DataLoss(_) => problem(
            StatusCode::CONFLICT,
            "data-loss",
            "Change would discard data",
            e.to_string(),
        ),
        E::Store(_) => {
            tracing::error!(error = %e, "apps service failed");
            Problem::status(StatusCode::INTERNAL_SERVER_ERROR)
        }
    }
}

fn connect_problem(e: &kura_connect::ConnectError) -> Problem {
    use kura_connect::ConnectError as E;
    use kura_store::StoreError as S;
    match e {
        E::NotFound(_) | E::Store(S::NotFound(_)) => problem(
            StatusCode::NOT_FOUND,
            "not-found",
            "Not found",
            e.to_string(),
        ),
        E::Invalid(_) => problem(
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid-request",
            "Invalid request",
            e.to_string(),
        ),
        E::Store(S::Conflict(_)) => {
            problem(StatusCode::CONFLICT, "conflict", "Conflict", e.to_string())
        }
        _ => {
            tracing::error!(error = %e, "kura connect failed");
            Problem::status(StatusCode::INTERNAL_SERVER_ERROR)
        }
    }
}

/// The mapping of an approval decision's refusal (also used by the link
/// endpoint outside `/api/v1`).
pub(crate) fn approval_problem(e: &kura_connect::steps::approval::ApprovalError) -> Problem {
    use kura_connect::steps::approval::ApprovalError as E;
    match e {
        E::NotFound => problem(
            StatusCode::NOT_FOUND,
            "not-found",
            "Not found",
            e.to_string(),
        ),
        E::NotApprover => problem(
            StatusCode::FORBIDDEN,
            "not-an-approver",
            "Not an approver",
            e.to_string(),
        ),
        E::NotPending | E::Expired => problem(
            StatusCode::CONFLICT,
            "approval-closed",
            "Approval closed",
            e.to_string(),
        ),
        E::LinkUsed => problem(StatusCode::GONE, "link-used", "Link used", e.to_string()),
        E::Invalid(_) => problem(
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid-request",
            "Invalid request",
            e.to_string(),
        ),
        E::Connect(c) => connect_problem(c),
    }
}

fn identity_problem(e: &IdentityError) -> Problem {
    use IdentityError as E;
    match e {
        E::InvalidAttribute(a) => problem(
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid-attribute",
            "Invalid attribute",
            a.to_string(),
        ),
        E::WeakPassword(w) => problem(
            StatusCode::UNPROCESSABLE_ENTITY,
            "weak-password",
            "Password rejected",
            format!("password: {w}"),
        ),
        E::InvalidInput(m) => problem(
            StatusCode::BAD_REQUEST,
            "invalid-input",
            "Invalid input",
            m.clone(),
        ),
        E::EmailTaken => problem(
            StatusCode::CONFLICT,
            "email-taken",
            "Email address taken",
            e.to_string(),
        ),
        E::Conflict(_) => problem(StatusCode::CONFLICT, "conflict", "Conflict", e.to_string()),
        E::InvalidCredentials => problem(
            StatusCode::UNAUTHORIZED,
            "invalid-credentials",
            "Sign-in failed",
            e.to_string(),
        ),
        // Converted to `ApiError::Throttled` by `ApiError::identity`; kept
        // here so the mapping is total.
        E::Throttled { .. } => problem(
            StatusCode::TOO_MANY_REQUESTS,
            "throttled",
            "Too many attempts",
            "too many failed attempts; try again later",
        ),
        E::Unauthenticated => problem(
            StatusCode::UNAUTHORIZED,
            "unauthenticated",
            "Not signed in",
            e.to_string(),
        ),
        E::InvalidCode => problem(
            StatusCode::UNAUTHORIZED,
            "invalid-code",
            "Code rejected",
            e.to_string(),
        ),
        E::MfaNotEnrolled => problem(
            StatusCode::CONFLICT,
            "mfa-not-enrolled",
            "No second factor enrolled",
            e.to_string(),
        ),
        E::Denied(DenyReason::SessionIncomplete) => problem(
            StatusCode::UNAUTHORIZED,
            "session-incomplete",
            "Sign-in not finished",
            "complete the second factor (or enrol one) before doing this",
        ),
        E::Denied(reason) => problem(
            StatusCode::FORBIDDEN,
            &format!("denied-{}", reason.as_str().replace('_', "-")),
            "Forbidden",
            e.to_string(),
        ),
        E::BadToken(TokenProblem::Unknown) => problem(
            StatusCode::BAD_REQUEST,
            "token-unknown",
            "Unknown link",
            e.to_string(),
        ),
        E::BadToken(p) => problem(
            StatusCode::GONE,
            &format!("token-{}", p.as_str()),
            "Link no longer valid",
            e.to_string(),
        ),
        E::SetupComplete => problem(
            StatusCode::CONFLICT,
            "setup-complete",
            "Setup already complete",
            e.to_string(),
        ),
        E::NotFound(_) => problem(
            StatusCode::NOT_FOUND,
            "not-found",
            "Not found",
            e.to_string(),
        ),
        E::AccountStatus(_) => problem(
            StatusCode::CONFLICT,
            "account-status",
            "Account status does not allow this",
            e.to_string(),
        ),
        E::PasskeyRejected(_) => problem(
            StatusCode::UNAUTHORIZED,
            "passkey-rejected",
            "Passkey rejected",
            e.to_string(),
        ),
        E::PasskeyChallengeUnknown => problem(
            StatusCode::BAD_REQUEST,
            "passkey-challenge-unknown",
            "Unknown passkey challenge",
            e.to_string(),
        ),
        E::PasskeysUnavailable(_) => problem(
            StatusCode::SERVICE_UNAVAILABLE,
            "passkeys-unavailable",
            "Passkeys unavailable",
            e.to_string(),
        ),
        E::LastOwner => problem(
            StatusCode::CONFLICT,
            "last-owner",
            "Last owner",
            e.to_string(),
        ),
        E::Corrupt(_) | E::Internal(_) | E::Store(_) => {
            tracing::error!(error = %e, "identity service failed");
            Problem::status(StatusCode::INTERNAL_SERVER_ERROR)
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (p, retry_after) = match &self {
            Self::Identity(e) => (identity_problem(e), None),
            Self::Incident(e) => (incident_problem(e), None),
            Self::Apps(e) => (apps_problem(e), None),
            Self::Connect(e) => (connect_problem(e), None),
            Self::Approval(e) => (approval_problem(e), None),
            Self::Document(errors) => return document_problem(errors),
            Self::Throttled(secs) => (
                problem(
                    StatusCode::TOO_MANY_REQUESTS,
                    "throttled",
                    "Too many attempts",
                    "too many failed attempts; try again later",
                ),
                Some(*secs),
            ),
            Self::NoCredentials => (
                problem(
                    StatusCode::UNAUTHORIZED,
                    "unauthenticated",
                    "Not signed in",
                    "send `Authorization: Bearer <token>` or a session cookie",
                ),
                None,
            ),
            Self::BadAuthorization => (
                problem(
                    StatusCode::UNAUTHORIZED,
                    "unauthenticated",
                    "Not signed in",
                    "the Authorization header must be `Bearer <token>`",
                ),
                None,
            ),
            Self::Csrf => (
                problem(
                    StatusCode::FORBIDDEN,
                    "csrf",
                    "CSRF token missing or wrong",
                    "cookie-authenticated changes need the X-CSRF-Token header issued at sign-in",
                ),
                None,
            ),
            Self::UnsupportedMediaType => (
                problem(
                    StatusCode::UNSUPPORTED_MEDIA_TYPE,
                    "unsupported-media-type",
                    "Unsupported media type",
                    "the body must be application/json",
                ),
                None,
            ),
            Self::Malformed(m) => (
                problem(
                    StatusCode::BAD_REQUEST,
                    "malformed-body",
                    "Malformed body",
                    m.clone(),
                ),
                None,
            ),
            Self::Invalid { field, message } => (
                problem(
                    StatusCode::UNPROCESSABLE_ENTITY,
                    "invalid-field",
                    "Invalid field",
                    format!("field `{field}`: {message}"),
                ),
                None,
            ),
            Self::BadFilter { field, message } => (
                problem(
                    StatusCode::BAD_REQUEST,
                    "invalid-filter",
                    "Invalid filter",
                    format!("filter `{field}`: {message}"),
                ),
                None,
            ),
            Self::TooLarge => (
                problem(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    "too-large",
                    "Body too large",
                    "the body is larger than the limit",
                ),
                None,
            ),
            Self::Conflict(m) => (
                problem(StatusCode::CONFLICT, "conflict", "Conflict", m.clone()),
                None,
            ),
            Self::Internal => (Problem::status(StatusCode::INTERNAL_SERVER_ERROR), None),
            Self::EventNotRecorded => {
                tracing::error!("a security event could not be recorded; request refused");
                (Problem::status(StatusCode::INTERNAL_SERVER_ERROR), None)
            }
        };
        let unauthorized = p.status == 401;
        let mut response = p.into_response();
        if let Some(secs) = retry_after
            && let Ok(v) = HeaderValue::from_str(&secs.to_string())
        {
            response.headers_mut().insert(header::RETRY_AFTER, v);
        }
        if unauthorized {
            response.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Bearer realm=\"kura\""),
            );
        }
        response
    }
}

/// A flow document's problems: the first in `detail`, all of them (each
/// with its JSON path) in the `errors` extension member.
fn document_problem(errors: &[kura_connect::validate::DocumentError]) -> Response {
    let detail = errors
        .first()
        .map(ToString::to_string)
        .unwrap_or_else(|| "the flow document is invalid".into());
    let mut p = problem(
        StatusCode::UNPROCESSABLE_ENTITY,
        "invalid-flow",
        "Invalid flow document",
        detail,
    );
    p.errors = serde_json::to_value(errors).ok();
    p.into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_identity_error_has_its_own_status() {
        let cases: Vec<(IdentityError, u16)> = vec![
            (IdentityError::InvalidInput("x".into()), 400),
            (IdentityError::EmailTaken, 409),
            (IdentityError::Conflict("team".into()), 409),
            (IdentityError::InvalidCredentials, 401),
            (IdentityError::Unauthenticated, 401),
            (IdentityError::InvalidCode, 401),
            (IdentityError::MfaNotEnrolled, 409),
            (IdentityError::Denied(DenyReason::SessionIncomplete), 401),
            (IdentityError::Denied(DenyReason::NoRole), 403),
            (IdentityError::Denied(DenyReason::OtherTeam), 403),
            (IdentityError::BadToken(TokenProblem::Unknown), 400),
            (IdentityError::BadToken(TokenProblem::Used), 410),
            (IdentityError::BadToken(TokenProblem::Expired), 410),
            (IdentityError::SetupComplete, 409),
            (IdentityError::NotFound("team"), 404),
            (IdentityError::LastOwner, 409),
            (IdentityError::AccountStatus("active"), 409),
            (IdentityError::PasskeyRejected("x".into()), 401),
            (IdentityError::PasskeyChallengeUnknown, 400),
            (IdentityError::PasskeysUnavailable("x".into()), 503),
            (IdentityError::Internal("boom".into()), 500),
        ];
        for (e, status) in cases {
            let name = format!("{e:?}");
            assert_eq!(identity_problem(&e).status, status, "{name}");
        }
        let now = OffsetDateTime::UNIX_EPOCH;
        let throttled = ApiError::identity(
            IdentityError::Throttled {
                retry_after: now + time::Duration::seconds(7),
            },
            now,
        )
        .into_response();
        assert_eq!(throttled.status(), StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(throttled.headers()[header::RETRY_AFTER], "7");
    }

    #[test]
    fn every_incident_error_has_its_own_status() {
        use kura_events::IncidentState;
        use kura_types::IncidentId;
        let id = IncidentId::new();
        let cases: Vec<(IncidentError, u16)> = vec![
            (IncidentError::NotFound(id), 404),
            (
                IncidentError::InvalidTransition {
                    from: IncidentState::Open,
                    to: IncidentState::Closed,
                },
                409,
            ),
            (IncidentError::Invalid("empty".into()), 422),
            (IncidentError::Conflict(id), 409),
            (IncidentError::ChannelNotFound("x".into()), 404),
            (IncidentError::ChannelExists("x".into()), 409),
            (IncidentError::ChannelFixed("x".into()), 409),
        ];
        for (e, status) in cases {
            let name = format!("{e:?}");
            assert_eq!(incident_problem(&e).status, status, "{name}");
        }
        let p = incident_problem(&IncidentError::InvalidTransition {
            from: IncidentState::Triaged,
            to: IncidentState::Closed,
        });
        let detail = p.detail.unwrap_or_default();
        assert!(detail.contains("investigating, resolved"), "{detail}");
    }
}
