//! Typed identifiers. Each kind of thing has its own type so an app id can
//! never be passed where a team id is expected.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// A string that is not a valid identifier of the expected kind.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("`{input}` is not a valid {kind} id")]
pub struct IdParseError {
    kind: &'static str,
    input: String,
}

macro_rules! typed_id {
    ($(#[$doc:meta])* $name:ident, $kind:literal) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
        #[serde(transparent)]
        pub struct $name(Uuid);

        impl $name {
            /// A new, time-ordered identifier (UUIDv7).
            pub fn new() -> Self {
                Self(Uuid::now_v7())
            }

            /// The identifier as a UUID.
            pub fn as_uuid(&self) -> Uuid {
                self.0
            }

            /// Wraps an existing UUID.
            pub fn from_uuid(id: Uuid) -> Self {
                Self(id)
            }
        }

        impl Default for $name {
            fn default() -> Self {
                Self::new()
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                self.0.fmt(f)
            }
        }

        impl FromStr for $name {
            type Err = IdParseError;

            fn from_str(s: &str) -> Result<Self, Self::Err> {
                Uuid::parse_str(s).map(Self).map_err(|_| IdParseError {
                    kind: $kind,
                    input: s.chars().take(64).collect(),
                })
            }
        }
    };
}

typed_id!(
    /// A team (customer tenant).
    TeamId,
    "team"
);
typed_id!(
    /// A host: a team's named place for apps, with its own settings.
    HostId,
    "host"
);

typed_id!(
    /// A hosted app (one encrypted database file).
    AppId,
    "app"
);
typed_id!(
    /// A data key record in the key registry.
    DataKeyId,
    "data key"
);
typed_id!(
    /// A security event in the tamper-evident log.
    EventId,
    "event"
);

typed_id!(
    /// A Kura ID account (an operator or a customer).
    AccountId,
    "account"
);
typed_id!(
    /// A group of accounts inside one team.
    GroupId,
    "group"
);
typed_id!(
    /// A sign-in session.
    SessionId,
    "session"
);
typed_id!(
    /// A personal or service API token.
    ApiTokenId,
    "API token"
);
typed_id!(
    /// An invitation to join a team.
    InvitationId,
    "invitation"
);
typed_id!(
    /// A security incident.
    IncidentId,
    "incident"
);
typed_id!(
    /// A stored detection alert.
    AlertId,
    "alert"
);
typed_id!(
    /// One notification of an incident to one channel.
    NotificationId,
    "notification"
);

typed_id!(
    /// A Kura Connect flow.
    FlowId,
    "flow"
);
typed_id!(
    /// One run of a Kura Connect flow.
    RunId,
    "run"
);
typed_id!(
    /// A credential a team stores for its flows' outbound calls.
    FlowCredentialId,
    "credential"
);
typed_id!(
    /// A Kura Connect approval: one pause of a run for a person's decision.
    ApprovalId,
    "approval"
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_round_trip_through_strings_and_json() {
        let id = AppId::new();
        let parsed: AppId = id.to_string().parse().unwrap();
        assert_eq!(parsed, id);
        let json = serde_json::to_string(&id).unwrap();
        assert_eq!(json, format!("\"{id}\""));
    }

    #[test]
    fn invalid_ids_name_their_kind() {
        let err = "not-a-uuid".parse::<TeamId>().unwrap_err();
        assert_eq!(err.to_string(), "`not-a-uuid` is not a valid team id");
    }
}
