//! Credentials for outbound calls: sealed (AES-256-GCM through kura-crypto)
//! under the team's data key, bound to the team and the credential's id, so
//! a sealed secret copied to another team or credential does not open.
//! Secrets never leave through the API and are redacted from run records.

use base64::Engine as _;
use kura_types::{FlowCredentialId, TeamId};
use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

/// The credential kinds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CredentialKind {
    /// `Authorization: Bearer <secret>`.
    Bearer,
    /// `Authorization: Basic base64(<username>:<secret>)`.
    Basic,
    /// `<header>: <secret>` (API keys).
    Header,
    /// An SMTP relay for `email` steps: the secret is the SMTP AUTH
    /// password; host, port, security, sender and user are settings.
    Smtp,
    /// OAuth 2.0 authorisation code with PKCE and refresh: the secret is
    /// the client secret; client id, URLs and scopes are settings; the
    /// tokens, once authorised, are sealed beside it. HTTP steps send
    /// `Authorization: Bearer <access token>`.
    Oauth2,
}

impl CredentialKind {
    /// Its stable name.
    pub fn as_str(self) -> &'static str {
        match self {
            CredentialKind::Bearer => "bearer",
            CredentialKind::Basic => "basic",
            CredentialKind::Header => "header",
            CredentialKind::Smtp => "smtp",
            CredentialKind::Oauth2 => "oauth2",
        }
    }

    /// Parses a stable name.
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "bearer" => Some(CredentialKind::Bearer),
            "basic" => Some(CredentialKind::Basic),
            "header" => Some(CredentialKind::Header),
            "smtp" => Some(CredentialKind::Smtp),
            "oauth2" => Some(CredentialKind::Oauth2),
            _ => None,
        }
    }
}

/// A credential's non-secret settings.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CredentialSettings {
    /// The user name of `basic`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub username: Option<String>,
    /// The header of `header`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub header: Option<String>,
    /// The relay host of `smtp`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host: Option<String>,
    /// The relay port of `smtp` (default 587).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<u16>,
    /// How `smtp` reaches the relay (default `starttls`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub security: Option<crate::steps::email::SmtpSecurity>,
    /// The sender address of `smtp`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from: Option<String>,
    /// The client id of `oauth2`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_id: Option<String>,
    /// The provider's authorisation endpoint (`oauth2`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auth_url: Option<String>,
    /// The provider's token endpoint (`oauth2`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token_url: Option<String>,
    /// The scopes asked for (`oauth2`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub scopes: Vec<String>,
}

/// An opened credential, for one request.
pub(crate) struct Secret {
    pub kind: CredentialKind,
    pub settings: CredentialSettings,
    pub value: Zeroizing<String>,
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Secret")
            .field("kind", &self.kind)
            .field("value", &"[REDACTED]")
            .finish()
    }
}

impl Secret {
    /// The header to send, and the strings to redact from records (`None`
    /// for a kind that is not for HTTP).
    pub fn header(&self) -> Option<(String, String, Vec<String>)> {
        let v = self.value.as_str().to_owned();
        Some(match self.kind {
            CredentialKind::Smtp | CredentialKind::Oauth2 => return None,
            CredentialKind::Bearer => ("Authorization".into(), format!("Bearer {v}"), vec![v]),
            CredentialKind::Basic => {
                let user = self.settings.username.clone().unwrap_or_default();
                let encoded =
                    base64::engine::general_purpose::STANDARD.encode(format!("{user}:{v}"));
                (
                    "Authorization".into(),
                    format!("Basic {encoded}"),
                    vec![v, encoded],
                )
            }
            CredentialKind::Header => (
                self.settings
                    .header
                    .clone()
                    .unwrap_or_else(|| "X-Api-Key".into()),
                v.clone(),
                vec![v],
            ),
        })
    }
}

/// The AEAD context a credential is sealed under.
pub(crate) fn context(team: TeamId, id: FlowCredentialId) -> Vec<u8> {
    format!("kura-connect credential v1 {team} {id}").into_bytes()
}

/// Replaces every secret (and its JSON-escaped form) with `[REDACTED]`.
pub fn redact(mut text: String, secrets: &[String]) -> String {
    for s in secrets {
        if s.len() < 4 {
            // Too short to redact without mangling unrelated text; such
            // secrets are refused at creation.
            continue;
        }
        text = text.replace(s.as_str(), kura_types::event::REDACTED);
        if let Ok(escaped) = serde_json::to_string(s) {
            let inner = &escaped[1..escaped.len() - 1];
            if inner != s {
                text = text.replace(inner, kura_types::event::REDACTED);
            }
        }
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_are_redacted_raw_and_escaped() {
        let out = redact(
            r#"{"echo":"Bearer s3cr\"et!","x":"s3cr"et!"}"#.into(),
            &["s3cr\"et!".into()],
        );
        assert!(!out.contains("s3cr"), "{out}");
    }
}
