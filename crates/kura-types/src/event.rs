//! The security event: one typed record of something a responder may need to
//! see later (a sign-in decision, a permission denial, an administrative
//! change, a key operation, a WAF block, a data export).
//!
//! Every component emits the same [`SecurityEvent`]. Its [`Action`] is parsed,
//! not validated: once you hold one it is a stable dotted lowercase name. Its
//! details are cleaned by [`SecurityEvent::sanitize`] before they are stored,
//! so secrets and payment card numbers never enter the log, and its
//! [`SecurityEvent::canonical_json`] is the exact byte string the log's hash
//! chain commits to.

mod sanitize;

use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use time::{OffsetDateTime, UtcOffset};

use crate::{AppId, EventId, TeamId};

pub use sanitize::{REDACTED, REDACTED_CARD, is_secret_key, sanitize_details};

/// Who did it.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum Actor {
    /// A signed-in account (operator or customer user).
    Account {
        /// The account's id.
        id: String,
    },
    /// An API token acting on its own.
    Token {
        /// The token's id (never the token itself).
        id: String,
    },
    /// An account of a hosted app.
    AppAccount {
        /// The app.
        app: AppId,
        /// The account name within the app.
        name: String,
    },
    /// Kura itself, or an outside system feeding events in.
    System {
        /// The component (`kms`, `retention`, `edge.waf`, `ingest:<name>`).
        component: String,
    },
    /// Nobody identified (a failed sign-in with an unknown name, a blocked
    /// request).
    Anonymous,
}

impl Actor {
    /// A short stable key for indexing and filtering: `account:<id>`,
    /// `token:<id>`, `app:<app id>/<name>`, `system:<component>` or
    /// `anonymous`.
    pub fn key(&self) -> String {
        match self {
            Actor::Account { id } => format!("account:{id}"),
            Actor::Token { id } => format!("token:{id}"),
            Actor::AppAccount { app, name } => format!("app:{app}/{name}"),
            Actor::System { component } => format!("system:{component}"),
            Actor::Anonymous => "anonymous".to_owned(),
        }
    }
}

/// A name that is not a valid event action.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "`{input}` is not a valid event action: {reason} (expected dotted lowercase segments such as `auth.signin.failed`)"
)]
pub struct ActionParseError {
    input: String,
    reason: &'static str,
}

/// The longest action name accepted.
pub const ACTION_MAX_LEN: usize = 96;

/// What happened, as a stable dotted lowercase name such as
/// `auth.signin.failed`, `admin.role.granted`, `keys.rotated`,
/// `edge.waf.blocked` or `data.export`.
///
/// At least two segments; each starts with a letter and holds only `a-z`,
/// `0-9` and `_`; at most [`ACTION_MAX_LEN`] characters in all. Names are part
/// of Kura's interface: detection rules, queries and SIEM exports match on
/// them, so once shipped a name is never reused for something else.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Action(String);

impl Action {
    /// Parses an action name.
    pub fn parse(s: &str) -> Result<Self, ActionParseError> {
        let fail = |reason| ActionParseError {
            input: s.chars().take(ACTION_MAX_LEN + 8).collect(),
            reason,
        };
        if s.len() > ACTION_MAX_LEN {
            return Err(fail("it is too long"));
        }
        let mut segments = 0;
        for segment in s.split('.') {
            segments += 1;
            let mut chars = segment.chars();
            match chars.next() {
                None => return Err(fail("it has an empty segment")),
                Some(c) if !c.is_ascii_lowercase() => {
                    return Err(fail("a segment does not start with a lowercase letter"));
                }
                Some(_) => {}
            }
            if !chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_') {
                return Err(fail("it holds characters other than a-z, 0-9, `_` and `.`"));
            }
        }
        if segments < 2 {
            return Err(fail("it needs at least two segments"));
        }
        Ok(Self(s.to_owned()))
    }

    /// The name.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Whether this action is `prefix` or lies under it (`auth` matches
    /// `auth.signin.failed` but not `authz.check`).
    pub fn has_prefix(&self, prefix: &str) -> bool {
        let prefix = prefix.trim_end_matches('.');
        self.0 == prefix
            || (self.0.starts_with(prefix) && self.0.as_bytes().get(prefix.len()) == Some(&b'.'))
    }
}

impl TryFrom<String> for Action {
    type Error = ActionParseError;

    fn try_from(s: String) -> Result<Self, Self::Error> {
        Self::parse(&s)
    }
}

impl From<Action> for String {
    fn from(a: Action) -> Self {
        a.0
    }
}

impl FromStr for Action {
    type Err = ActionParseError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

impl fmt::Display for Action {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// How it ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// The action was carried out.
    Success,
    /// The action was attempted and failed (wrong password, error).
    Failure,
    /// Policy refused the action (missing permission, blocked address).
    Denied,
}

impl Outcome {
    /// The lowercase name used in storage, filters and exports.
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Success => "success",
            Outcome::Failure => "failure",
            Outcome::Denied => "denied",
        }
    }
}

/// A string that is not an outcome.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("`{0}` is not an outcome (expected success, failure or denied)")]
pub struct OutcomeParseError(String);

impl FromStr for Outcome {
    type Err = OutcomeParseError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "success" => Ok(Outcome::Success),
            "failure" => Ok(Outcome::Failure),
            "denied" => Ok(Outcome::Denied),
            other => Err(OutcomeParseError(other.chars().take(32).collect())),
        }
    }
}

impl fmt::Display for Outcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One security event.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SecurityEvent {
    /// Its identifier (UUIDv7, so ids sort roughly by creation time).
    pub id: EventId,
    /// When it happened, from the injected clock.
    #[serde(with = "time::serde::rfc3339")]
    pub time: OffsetDateTime,
    /// Who did it.
    pub actor: Actor,
    /// The team it concerns, if any (platform events have none).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub team: Option<TeamId>,
    /// What happened.
    pub action: Action,
    /// What it was done to (`account:<id>`, `app:<id>`, a role name).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target: Option<String>,
    /// How it ended.
    pub outcome: Outcome,
    /// The client's network address.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<IpAddr>,
    /// The client's `User-Agent`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_agent: Option<String>,
    /// The request that caused it, to join with access logs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request_id: Option<String>,
    /// Structured extra facts. Never secrets: see [`SecurityEvent::sanitize`].
    #[serde(default, skip_serializing_if = "Map::is_empty")]
    pub details: Map<String, Value>,
}

/// An event that cannot be encoded for the log.
#[derive(Debug, thiserror::Error)]
#[error("security event cannot be encoded: {0}")]
pub struct EventEncodeError(String);

impl SecurityEvent {
    /// A new event with a fresh id and nothing but the required fields; add the
    /// rest with the builder methods.
    pub fn new(time: OffsetDateTime, actor: Actor, action: Action, outcome: Outcome) -> Self {
        Self {
            id: EventId::new(),
            time: time.to_offset(UtcOffset::UTC),
            actor,
            team: None,
            action,
            target: None,
            outcome,
            source: None,
            user_agent: None,
            request_id: None,
            details: Map::new(),
        }
    }

    /// Sets the team.
    #[must_use]
    pub fn with_team(mut self, team: TeamId) -> Self {
        self.team = Some(team);
        self
    }

    /// Sets the target.
    #[must_use]
    pub fn with_target(mut self, target: impl Into<String>) -> Self {
        self.target = Some(target.into());
        self
    }

    /// Sets the source address.
    #[must_use]
    pub fn with_source(mut self, source: IpAddr) -> Self {
        self.source = Some(source);
        self
    }

    /// Sets the user agent.
    #[must_use]
    pub fn with_user_agent(mut self, user_agent: impl Into<String>) -> Self {
        self.user_agent = Some(user_agent.into());
        self
    }

    /// Sets the request id.
    #[must_use]
    pub fn with_request_id(mut self, request_id: impl Into<String>) -> Self {
        self.request_id = Some(request_id.into());
        self
    }

    /// Adds one detail.
    #[must_use]
    pub fn with_detail(mut self, key: impl Into<String>, value: impl Into<Value>) -> Self {
        self.details.insert(key.into(), value.into());
        self
    }

    /// Removes secrets: the values of secret-looking detail keys become
    /// [`REDACTED`], and payment card numbers anywhere in the details, target,
    /// user agent or request id become [`REDACTED_CARD`]. Returns how many
    /// values were changed. The event sink calls this on every event before it
    /// is stored, so a careless caller cannot put a password into the log.
    pub fn sanitize(&mut self) -> usize {
        let mut n = sanitize_details(&mut self.details);
        for field in [&mut self.target, &mut self.user_agent, &mut self.request_id]
            .into_iter()
            .flatten()
        {
            if let Some(clean) = sanitize::redact_card_numbers(field) {
                *field = clean;
                n += 1;
            }
        }
        n
    }

    /// The canonical encoding the log stores and the hash chain commits to:
    /// compact JSON with object keys in byte order at every level, time in
    /// RFC 3339 UTC, absent optional fields omitted. Two equal events always
    /// encode to the same bytes.
    ///
    /// Every recorded event is encoded once, on the request's path, so the
    /// encoding is written straight from the fields in their sorted order
    /// rather than through a `serde_json::Value` tree.
    pub fn canonical_json(&self) -> Result<Vec<u8>, EventEncodeError> {
        let mut out = Vec::with_capacity(512);
        serde_json::to_writer(&mut out, &Canonical(self))
            .map_err(|e| EventEncodeError(e.to_string()))?;
        Ok(out)
    }

    /// Decodes an event from its canonical (or any JSON) encoding.
    pub fn from_json(bytes: &[u8]) -> Result<Self, EventEncodeError> {
        serde_json::from_slice(bytes).map_err(|e| EventEncodeError(e.to_string()))
    }
}

/// An event in its canonical encoding: the fields [`SecurityEvent`]'s
/// `Serialize` writes, with the same values, under names in byte order, and
/// the time in UTC. The test `canonical_json_is_the_derived_encoding_with_sorted_keys`
/// holds it to the derived encoding with every object's keys sorted.
struct Canonical<'a>(&'a SecurityEvent);

impl Serialize for Canonical<'_> {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap as _;
        let e = self.0;
        let mut map = serializer.serialize_map(None)?;
        map.serialize_entry("action", e.action.as_str())?;
        map.serialize_entry("actor", &CanonicalActor(&e.actor))?;
        if !e.details.is_empty() {
            map.serialize_entry("details", &SortedMap(&e.details))?;
        }
        map.serialize_entry("id", &e.id)?;
        map.serialize_entry("outcome", &e.outcome)?;
        if let Some(request_id) = &e.request_id {
            map.serialize_entry("request_id", request_id)?;
        }
        if let Some(source) = &e.source {
            map.serialize_entry("source", source)?;
        }
        if let Some(target) = &e.target {
            map.serialize_entry("target", target)?;
        }
        if let Some(team) = &e.team {
            map.serialize_entry("team", team)?;
        }
        map.serialize_entry("time", &Rfc3339Utc(e.time))?;
        if let Some(user_agent) = &e.user_agent {
            map.serialize_entry("user_agent", user_agent)?;
        }
        map.end()
    }
}

/// An [`Actor`] as its derived, internally tagged encoding has it, with the
/// `kind` tag among the fields in byte order.
struct CanonicalActor<'a>(&'a Actor);

impl Serialize for CanonicalActor<'_> {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap as _;
        let mut map = serializer.serialize_map(None)?;
        match self.0 {
            Actor::Account { id } => {
                map.serialize_entry("id", id)?;
                map.serialize_entry("kind", "account")?;
            }
            Actor::Token { id } => {
                map.serialize_entry("id", id)?;
                map.serialize_entry("kind", "token")?;
            }
            Actor::AppAccount { app, name } => {
                map.serialize_entry("app", app)?;
                map.serialize_entry("kind", "app_account")?;
                map.serialize_entry("name", name)?;
            }
            Actor::System { component } => {
                map.serialize_entry("component", component)?;
                map.serialize_entry("kind", "system")?;
            }
            Actor::Anonymous => map.serialize_entry("kind", "anonymous")?,
        }
        map.end()
    }
}

/// A JSON object written with its keys in byte order at every level, whether
/// or not `serde_json`'s map keeps them sorted itself.
struct SortedMap<'a>(&'a Map<String, Value>);

impl Serialize for SortedMap<'_> {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap as _;
        let mut map = serializer.serialize_map(Some(self.0.len()))?;
        // Without serde_json's `preserve_order` feature (the workspace's
        // case) the map iterates in key order already and nothing is copied.
        if self.0.keys().is_sorted() {
            for (key, value) in self.0 {
                map.serialize_entry(key, &Sorted(value))?;
            }
        } else {
            let mut entries: Vec<(&String, &Value)> = self.0.iter().collect();
            entries.sort_unstable_by(|a, b| a.0.cmp(b.0));
            for (key, value) in entries {
                map.serialize_entry(key, &Sorted(value))?;
            }
        }
        map.end()
    }
}

/// A JSON value whose objects, however deep, are written as [`SortedMap`]s.
struct Sorted<'a>(&'a Value);

impl Serialize for Sorted<'_> {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeSeq as _;
        match self.0 {
            Value::Object(map) => SortedMap(map).serialize(serializer),
            Value::Array(items) => {
                let mut seq = serializer.serialize_seq(Some(items.len()))?;
                for item in items {
                    seq.serialize_element(&Sorted(item))?;
                }
                seq.end()
            }
            other => other.serialize(serializer),
        }
    }
}

/// A time in RFC 3339 at UTC, as `time::serde::rfc3339` writes it.
struct Rfc3339Utc(OffsetDateTime);

impl Serialize for Rfc3339Utc {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        time::serde::rfc3339::serialize(&self.0.to_offset(UtcOffset::UTC), serializer)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use time::macros::datetime;

    fn check_action(input: &str, ok: bool) {
        assert_eq!(Action::parse(input).is_ok(), ok, "{input}");
    }

    #[test]
    fn actions_parse_only_stable_dotted_lowercase_names() {
        for good in [
            "auth.signin.failed",
            "admin.role.granted",
            "keys.rotated",
            "edge.waf.blocked",
            "data.export",
            "auth.mfa_totp.failed2",
        ] {
            check_action(good, true);
        }
        for bad in [
            "",
            "auth",
            "auth.",
            ".auth",
            "auth..failed",
            "Auth.signin",
            "auth.signin-failed",
            "auth.1signin",
            "auth signin",
            "auth.sign\u{e9}",
            &"a.".repeat(60),
        ] {
            check_action(bad, false);
        }
        let err = Action::parse("Auth.x").unwrap_err().to_string();
        assert!(
            err.contains("`Auth.x`") && err.contains("lowercase"),
            "{err}"
        );
    }

    #[test]
    fn action_prefixes_match_whole_segments() {
        let a = Action::parse("auth.signin.failed").unwrap();
        assert!(a.has_prefix("auth"));
        assert!(a.has_prefix("auth."));
        assert!(a.has_prefix("auth.signin"));
        assert!(a.has_prefix("auth.signin.failed"));
        assert!(!a.has_prefix("auth.sign"));
        assert!(!a.has_prefix("aut"));
        assert!(!Action::parse("authz.check").unwrap().has_prefix("auth"));
    }

    #[test]
    fn actions_and_outcomes_refuse_bad_json() {
        assert!(serde_json::from_str::<Action>("\"keys.rotated\"").is_ok());
        assert!(serde_json::from_str::<Action>("\"KEYS\"").is_err());
        assert_eq!(
            serde_json::from_str::<Outcome>("\"denied\"").unwrap(),
            Outcome::Denied
        );
        assert!("maybe".parse::<Outcome>().is_err());
        assert_eq!("failure".parse::<Outcome>().unwrap(), Outcome::Failure);
    }

    fn sample() -> SecurityEvent {
        SecurityEvent::new(
            datetime!(2025-03-01 12:00:00.5 +02:00),
            Actor::Account { id: "acc-1".into() },
            Action::parse("auth.signin.failed").unwrap(),
            Outcome::Failure,
        )
        .with_team(TeamId::new())
        .with_source("192.0.2.7".parse().unwrap())
        .with_request_id("req-1")
        .with_detail("zeta", 1)
        .with_detail("alpha", json!({"b": 2, "a": [{"y": 1, "x": 2}]}))
    }

    #[test]
    fn canonical_json_sorts_keys_uses_utc_and_round_trips() {
        let event = sample();
        let bytes = event.canonical_json().unwrap();
        let text = String::from_utf8(bytes.clone()).unwrap();
        assert!(
            text.contains("\"time\":\"2025-03-01T10:00:00.5Z\""),
            "{text}"
        );
        assert!(
            text.contains(r#""alpha":{"a":[{"x":2,"y":1}],"b":2}"#),
            "{text}"
        );
        let keys: Vec<&str> = [
            "\"action\"",
            "\"details\"",
            "\"outcome\"",
            "\"source\"",
            "\"time\"",
        ]
        .into_iter()
        .collect();
        let positions: Vec<usize> = keys.iter().map(|k| text.find(k).unwrap()).collect();
        assert!(positions.windows(2).all(|w| w[0] < w[1]), "{text}");
        let back = SecurityEvent::from_json(&bytes).unwrap();
        assert_eq!(back, event);
        assert_eq!(back.canonical_json().unwrap(), bytes);
        assert!(!text.contains("user_agent"), "absent fields are omitted");
    }

    /// The encoding `canonical_json` must equal: the derived one, through a
    /// `Value` tree rebuilt with every object's keys in byte order.
    fn derived_with_sorted_keys(event: &SecurityEvent) -> Vec<u8> {
        fn sorted(value: Value) -> Value {
            match value {
                Value::Object(map) => {
                    let mut entries: Vec<(String, Value)> = map.into_iter().collect();
                    entries.sort_by(|a, b| a.0.cmp(&b.0));
                    Value::Object(entries.into_iter().map(|(k, v)| (k, sorted(v))).collect())
                }
                Value::Array(items) => Value::Array(items.into_iter().map(sorted).collect()),
                other => other,
            }
        }
        let mut event = event.clone();
        event.time = event.time.to_offset(UtcOffset::UTC);
        serde_json::to_vec(&sorted(serde_json::to_value(&event).unwrap())).unwrap()
    }

    #[test]
    fn canonical_json_is_the_derived_encoding_with_sorted_keys() {
        let app = AppId::new();
        let actors = [
            Actor::Account { id: "acc-1".into() },
            Actor::Token {
                id: "tok \"1\"".into(),
            },
            Actor::AppAccount {
                app,
                name: "bob".into(),
            },
            Actor::System {
                component: "edge.waf".into(),
            },
            Actor::Anonymous,
        ];
        for (i, actor) in actors.into_iter().enumerate() {
            let bare = SecurityEvent::new(
                datetime!(2025-03-01 12:00:00.123456789 -05:30),
                actor,
                Action::parse("data.export").unwrap(),
                Outcome::Denied,
            );
            let full = bare
                .clone()
                .with_team(TeamId::new())
                .with_target("app:ä/\u{1F600}")
                .with_source("2001:db8::1".parse().unwrap())
                .with_user_agent("curl/8.5 \t\u{7}")
                .with_request_id(format!("req-{i}"))
                .with_detail(
                    "zeta",
                    json!([{"b": null, "a": 1.5e-7}, "x", [true, {"d": {"c": -1}}]]),
                )
                .with_detail("Alpha", json!({"y": "\u{0}", "x": {}, "B": []}))
                .with_detail("alpha", u64::MAX);
            for event in [bare, full] {
                let bytes = event.canonical_json().unwrap();
                assert_eq!(
                    String::from_utf8(bytes.clone()).unwrap(),
                    String::from_utf8(derived_with_sorted_keys(&event)).unwrap()
                );
                assert_eq!(SecurityEvent::from_json(&bytes).unwrap(), event);
            }
        }
    }

    #[test]
    fn actor_keys_and_json_shapes_are_stable() {
        let app = AppId::new();
        let cases = [
            (Actor::Account { id: "a1".into() }, "account:a1"),
            (Actor::Token { id: "t1".into() }, "token:t1"),
            (
                Actor::AppAccount {
                    app,
                    name: "bob".into(),
                },
                &*format!("app:{app}/bob"),
            ),
            (
                Actor::System {
                    component: "kms".into(),
                },
                "system:kms",
            ),
            (Actor::Anonymous, "anonymous"),
        ];
        for (actor, key) in cases {
            assert_eq!(actor.key(), key);
            let json = serde_json::to_value(&actor).unwrap();
            assert_eq!(serde_json::from_value::<Actor>(json).unwrap(), actor);
        }
        assert_eq!(
            serde_json::to_value(Actor::Token { id: "t".into() }).unwrap(),
            json!({"kind": "token", "id": "t"})
        );
        assert!(serde_json::from_value::<Actor>(json!({"kind": "root"})).is_err());
    }

    #[test]
    fn sanitize_covers_free_text_fields() {
        let mut event = sample()
            .with_target("card 4111 1111 1111 1111")
            .with_detail("password", "hunter2");
        assert_eq!(event.sanitize(), 2);
        assert_eq!(event.target.as_deref(), Some("card [REDACTED CARD NUMBER]"));
        assert_eq!(event.details["password"], json!(REDACTED));
    }
}
