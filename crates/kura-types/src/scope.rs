//! What a data key protects.

use std::fmt;
use std::str::FromStr;

use crate::{AppId, TeamId};

/// The owner of a data key. Every app and every team has its own key; the
/// platform database has one too. The scope is also the context (additional
/// authenticated data) a wrapped key is bound to, so a wrapped key copied onto
/// another scope's row fails to unwrap.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum KeyScope {
    /// The platform database.
    Platform,
    /// One team's secrets (credentials, exports).
    Team(TeamId),
    /// One hosted app's database file.
    App(AppId),
}

/// A stored scope string that does not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("`{0}` is not a valid key scope")]
pub struct KeyScopeParseError(String);

impl fmt::Display for KeyScope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            KeyScope::Platform => f.write_str("platform"),
            KeyScope::Team(id) => write!(f, "team:{id}"),
            KeyScope::App(id) => write!(f, "app:{id}"),
        }
    }
}

impl FromStr for KeyScope {
    type Err = KeyScopeParseError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || KeyScopeParseError(s.chars().take(80).collect());
        if s == "platform" {
            return Ok(KeyScope::Platform);
        }
        match s.split_once(':') {
            Some(("team", id)) => id.parse().map(KeyScope::Team).map_err(|_| bad()),
            Some(("app", id)) => id.parse().map(KeyScope::App).map_err(|_| bad()),
            _ => Err(bad()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scopes_round_trip() {
        for scope in [
            KeyScope::Platform,
            KeyScope::Team(TeamId::new()),
            KeyScope::App(AppId::new()),
        ] {
            assert_eq!(scope.to_string().parse::<KeyScope>().unwrap(), scope);
        }
        assert!("app:nope".parse::<KeyScope>().is_err());
        assert!("tenant:1".parse::<KeyScope>().is_err());
    }
}
