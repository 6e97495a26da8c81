//! Account attributes that parse: email, display name, phone, status, kind.
//!
//! A value of these types has passed validation, so code holding an [`Email`]
//! never re-checks it.

use std::fmt;

use serde::{Deserialize, Serialize};

/// Why an account attribute was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AttributeError {
    /// The email address is malformed.
    #[error("invalid email address: {0}")]
    Email(&'static str),
    /// The display name is empty, too long or holds control characters.
    #[error("invalid display name: {0}")]
    DisplayName(&'static str),
    /// The phone number is not in international format.
    #[error("invalid phone number: {0}")]
    Phone(&'static str),
}

/// A normalised email address: trimmed, with the domain lowercased. The local
/// part keeps its case (RFC 5321 leaves its meaning to the receiving domain).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(transparent)]
pub struct Email(String);

/// Longest address accepted (RFC 5321 path limit minus the angle brackets).
pub const EMAIL_MAX_LEN: usize = 254;

impl Email {
    /// Parses and normalises an address.
    pub fn parse(input: &str) -> Result<Self, AttributeError> {
        let fail = AttributeError::Email;
        let s = input.trim();
        if s.is_empty() {
            return Err(fail("it is empty"));
        }
        if s.len() > EMAIL_MAX_LEN {
            return Err(fail("it is longer than 254 bytes"));
        }
        if s.chars().any(|c| c.is_control() || c.is_whitespace()) {
            return Err(fail("it contains spaces or control characters"));
        }
        let Some((local, domain)) = s.rsplit_once('@') else {
            return Err(fail("it has no `@`"));
        };
        if local.is_empty() || local.len() > 64 {
            return Err(fail("the part before `@` must be 1 to 64 bytes"));
        }
        if local.starts_with('.') || local.ends_with('.') || local.contains("..") {
            return Err(fail("the part before `@` has a misplaced dot"));
        }
        if local.chars().any(|c| {
            matches!(
                c,
                '@' | '<' | '>' | '(' | ')' | '[' | ']' | '\\' | ',' | ';' | ':' | '"'
            )
        }) {
            return Err(fail("the part before `@` has characters that need quoting"));
        }
        let domain = domain.to_lowercase();
        if domain.is_empty() || domain.len() > 253 {
            return Err(fail("the domain must be 1 to 253 bytes"));
        }
        let labels: Vec<&str> = domain.split('.').collect();
        if labels.len() < 2 {
            return Err(fail("the domain needs a dot"));
        }
        for label in &labels {
            if label.is_empty() || label.len() > 63 {
                return Err(fail("a domain label is empty or longer than 63 bytes"));
            }
            if label.starts_with('-') || label.ends_with('-') {
                return Err(fail("a domain label starts or ends with `-`"));
            }
            if !label.chars().all(|c| c.is_alphanumeric() || c == '-') {
                return Err(fail(
                    "the domain has characters other than letters, digits and `-`",
                ));
            }
        }
        Ok(Self(format!("{local}@{domain}")))
    }

    /// Wraps an address read back from storage (already normalised).
    pub(crate) fn from_stored(s: String) -> Self {
        Self(s)
    }

    /// The address.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Email {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for Email {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Self::parse(&s).map_err(serde::de::Error::custom)
    }
}

/// The name shown for an account: 1 to 100 characters, no control characters.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(transparent)]
pub struct DisplayName(String);

impl DisplayName {
    /// Parses a display name (trimmed).
    pub fn parse(input: &str) -> Result<Self, AttributeError> {
        let s = input.trim();
        let n = s.chars().count();
        if n == 0 {
            return Err(AttributeError::DisplayName("it is empty"));
        }
        if n > 100 {
            return Err(AttributeError::DisplayName(
                "it is longer than 100 characters",
            ));
        }
        if s.chars().any(char::is_control) {
            return Err(AttributeError::DisplayName(
                "it contains control characters",
            ));
        }
        Ok(Self(s.to_owned()))
    }

    /// The name.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// A phone number in E.164 form (`+` and 8 to 15 digits); spaces, dots,
/// dashes and parentheses in the input are dropped.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(transparent)]
pub struct Phone(String);

impl Phone {
    /// Parses a phone number.
    pub fn parse(input: &str) -> Result<Self, AttributeError> {
        let s = input.trim();
        let Some(rest) = s.strip_prefix('+') else {
            return Err(AttributeError::Phone(
                "it must start with `+` and the country code",
            ));
        };
        let digits: String = rest
            .chars()
            .filter(|c| !matches!(c, ' ' | '-' | '.' | '(' | ')'))
            .collect();
        if !digits.chars().all(|c| c.is_ascii_digit()) {
            return Err(AttributeError::Phone("it may hold only digits after `+`"));
        }
        if !(8..=15).contains(&digits.len()) || digits.starts_with('0') {
            return Err(AttributeError::Phone(
                "it must have 8 to 15 digits, not starting with 0",
            ));
        }
        Ok(Self(format!("+{digits}")))
    }

    /// The number.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// Where an account is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AccountStatus {
    /// Created through an invitation that has not been accepted.
    Invited,
    /// Can sign in.
    Active,
    /// Cannot sign in; its sessions and tokens were revoked.
    Disabled,
}

/// An operator (runs the platform) or a customer (belongs to teams).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AccountKind {
    /// Staff of the organisation running Kura.
    Operator,
    /// A member of one or more teams.
    Customer,
}

macro_rules! text_enum {
    ($ty:ident { $($variant:ident => $text:literal),+ $(,)? }) => {
        impl $ty {
            /// Every value.
            pub const ALL: &'static [$ty] = &[$($ty::$variant),+];

            /// The stable name stored and shown in APIs.
            pub fn as_str(self) -> &'static str {
                match self { $($ty::$variant => $text),+ }
            }

            /// Parses a stable name.
            pub fn parse(s: &str) -> Option<Self> {
                match s { $($text => Some($ty::$variant),)+ _ => None }
            }
        }

        impl std::fmt::Display for $ty {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(self.as_str())
            }
        }
    };
}
pub(crate) use text_enum;

text_enum!(AccountStatus { Invited => "invited", Active => "active", Disabled => "disabled" });
text_enum!(AccountKind { Operator => "operator", Customer => "customer" });

/// An account as the domain sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Account {
    /// Its id.
    pub id: kura_types::AccountId,
    /// Its normalised email.
    pub email: Email,
    /// Its display name.
    pub display_name: String,
    /// Its phone number.
    pub phone: Option<String>,
    /// Its status.
    pub status: AccountStatus,
    /// Operator or customer.
    pub kind: AccountKind,
    /// When it was created.
    pub created_at: time::OffsetDateTime,
}

impl Account {
    pub(crate) fn from_record(r: kura_store::AccountRecord) -> Result<Self, crate::IdentityError> {
        let bad = |what: &str| crate::IdentityError::Corrupt(format!("account {}: {what}", r.id));
        Ok(Self {
            id: r.id,
            email: Email::from_stored(r.email.clone()),
            display_name: r.display_name.clone(),
            phone: r.phone.clone(),
            status: AccountStatus::parse(&r.status).ok_or_else(|| bad("unknown status"))?,
            kind: AccountKind::parse(&r.kind).ok_or_else(|| bad("unknown kind"))?,
            created_at: r.created_at,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn emails_are_trimmed_and_their_domain_lowercased() {
        let e = Email::parse("  Alice.Smith+kura@Example.COM ").unwrap();
        assert_eq!(e.as_str(), "Alice.Smith+kura@example.com");
        assert_eq!(
            Email::parse("bob@müller.DE").unwrap().as_str(),
            "bob@müller.de"
        );
    }

    #[test]
    fn malformed_emails_are_refused() {
        for bad in [
            "",
            "   ",
            "no-at-sign",
            "@example.com",
            "alice@",
            "alice@localhost",
            "alice@exa mple.com",
            "al ice@example.com",
            "alice@-example.com",
            "alice@example..com",
            ".alice@example.com",
            "al..ice@example.com",
            "a\r\nb@example.com",
            "a\"b@example.com",
            "alice@exam_ple.com",
        ] {
            assert!(Email::parse(bad).is_err(), "{bad:?} was accepted");
        }
        let long_local = format!("{}@example.com", "a".repeat(65));
        assert!(Email::parse(&long_local).is_err());
        let long = format!("a@{}.com", "b".repeat(250));
        assert!(Email::parse(&long).is_err());
        let ok_local = format!("{}@example.com", "a".repeat(64));
        assert!(Email::parse(&ok_local).is_ok());
    }

    #[test]
    fn display_names_and_phones_parse() {
        assert_eq!(DisplayName::parse("  Ada  ").unwrap().as_str(), "Ada");
        assert!(DisplayName::parse("").is_err());
        assert!(DisplayName::parse("a\u{7}b").is_err());
        assert!(DisplayName::parse(&"é".repeat(100)).is_ok());
        assert!(DisplayName::parse(&"é".repeat(101)).is_err());
        assert_eq!(
            Phone::parse("+44 (20) 7946-0958").unwrap().as_str(),
            "+442079460958"
        );
        assert!(Phone::parse("020 7946 0958").is_err());
        assert!(Phone::parse("+12").is_err());
        assert!(Phone::parse("+1234567890123456").is_err());
        assert!(Phone::parse("+44abc4567890").is_err());
    }

    #[test]
    fn enums_round_trip_their_names() {
        for s in AccountStatus::ALL {
            assert_eq!(AccountStatus::parse(s.as_str()), Some(*s));
        }
        for k in AccountKind::ALL {
            assert_eq!(AccountKind::parse(k.as_str()), Some(*k));
        }
        assert_eq!(AccountKind::parse("root"), None);
    }
}
