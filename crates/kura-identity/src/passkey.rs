//! The WebAuthn relying party: who Kura is to an authenticator (its domain
//! and origin), and the ceremonies it runs through `webauthn-rs`.
//!
//! [`PasskeyConfig`] names the relying party; [`RelyingParty`] wraps the
//! library so the service code sees Kura's own types: a challenge to send
//! as JSON, opaque state to keep until the answer, and a [`StoredPasskey`]
//! whose counter and backup flags are read out for storage. Verification
//! (origin, challenge, signature, user verification, counter) is the
//! library's; this module decides nothing about accounts or sessions.

use kura_store::PasskeyRecord;
use serde::de::DeserializeOwned;
use time::{Duration, OffsetDateTime};
use webauthn_rs::prelude::{
    AuthenticationResult, CreationChallengeResponse, Credential, DiscoverableAuthentication,
    Passkey, PasskeyAuthentication, PasskeyRegistration, PublicKeyCredential,
    RegisterPublicKeyCredential, RequestChallengeResponse, Url, Uuid, Webauthn, WebauthnBuilder,
};

use crate::IdentityError;

/// Who Kura is to authenticators.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PasskeyConfig {
    /// The relying party id: the domain name passkeys are bound to (the
    /// host of the public URL, or `localhost`).
    pub rp_id: String,
    /// The origin browsers report, `https://host[:port]`.
    pub origin: String,
    /// The name authenticators show.
    pub rp_name: String,
    /// How long a challenge may be answered.
    pub challenge_ttl: Duration,
}

impl Default for PasskeyConfig {
    fn default() -> Self {
        Self {
            rp_id: "localhost".into(),
            origin: "https://localhost:8443".into(),
            rp_name: "Kura".into(),
            challenge_ttl: Duration::minutes(5),
        }
    }
}

impl PasskeyConfig {
    /// The relying party for a public URL (`https://host[:port]/…`); the
    /// host must be a domain name, since WebAuthn binds credentials to one.
    pub fn for_public_url(url: &str) -> Result<Self, String> {
        let parsed = Url::parse(url).map_err(|e| format!("public URL `{url}`: {e}"))?;
        let host = parsed
            .domain()
            .ok_or_else(|| format!("public URL `{url}` has no domain name"))?
            .to_owned();
        Ok(Self {
            rp_id: host,
            origin: parsed.origin().ascii_serialization(),
            ..Self::default()
        })
    }
}

/// A started ceremony: the options to send to the client, and the state to
/// keep until it answers.
#[derive(Debug)]
pub(crate) struct Started {
    pub(crate) options: serde_json::Value,
    pub(crate) state: String,
}

/// A passkey as the library keeps it, with what storage shows beside it.
#[derive(Debug, Clone)]
pub(crate) struct StoredPasskey {
    pub(crate) passkey: Passkey,
    pub(crate) credential_id: String,
    pub(crate) counter: u32,
    pub(crate) backup_eligible: bool,
    pub(crate) backup_state: bool,
}

impl StoredPasskey {
    fn of(passkey: Passkey) -> Self {
        let credential = Credential::from(passkey.clone());
        Self {
            credential_id: credential_id_text(passkey.cred_id().as_ref()),
            counter: credential.counter,
            backup_eligible: credential.backup_eligible,
            backup_state: credential.backup_state,
            passkey,
        }
    }

    /// Decodes a stored row.
    pub(crate) fn from_record(r: &PasskeyRecord) -> Result<Self, IdentityError> {
        let passkey: Passkey = serde_json::from_str(&r.data)
            .map_err(|e| IdentityError::Corrupt(format!("passkey {}: {e}", r.id)))?;
        Ok(Self::of(passkey))
    }

    /// The serialised form to store.
    pub(crate) fn data(&self) -> Result<String, IdentityError> {
        serde_json::to_string(&self.passkey).map_err(|e| IdentityError::Internal(e.to_string()))
    }

    /// Applies a successful assertion (counter, backup flags).
    pub(crate) fn update(&mut self, result: &AuthenticationResult) {
        self.passkey.update_credential(result);
        *self = Self::of(self.passkey.clone());
    }
}

/// The text form of a credential id (base64url without padding, as WebAuthn
/// JSON writes it).
pub(crate) fn credential_id_text(raw: &[u8]) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(raw)
}

/// The relying party, built once from [`PasskeyConfig`].
#[derive(Debug)]
pub(crate) struct RelyingParty {
    webauthn: Webauthn,
    pub(crate) config: PasskeyConfig,
}

impl RelyingParty {
    pub(crate) fn new(config: PasskeyConfig) -> Result<Self, String> {
        let origin = Url::parse(&config.origin)
            .map_err(|e| format!("passkey origin `{}`: {e}", config.origin))?;
        let webauthn = WebauthnBuilder::new(&config.rp_id, &origin)
            .map_err(|e| format!("passkey relying party `{}`: {e}", config.rp_id))?
            .rp_name(&config.rp_name)
            .build()
            .map_err(|e| format!("passkey relying party `{}`: {e}", config.rp_id))?;
        Ok(Self { webauthn, config })
    }

    pub(crate) fn expiry(&self, now: OffsetDateTime) -> OffsetDateTime {
        now + self.config.challenge_ttl
    }

    pub(crate) fn start_registration(
        &self,
        user: Uuid,
        name: &str,
        display_name: &str,
        existing: &[StoredPasskey],
    ) -> Result<Started, IdentityError> {
        let exclude = existing
            .iter()
            .map(|p| p.passkey.cred_id().clone())
            .collect();
        let (options, state) = self
            .webauthn
            .start_passkey_registration(user, name, display_name, Some(exclude))
            .map_err(|e| IdentityError::Internal(format!("passkey registration: {e}")))?;
        started::<CreationChallengeResponse, PasskeyRegistration>(&options, &state)
    }

    pub(crate) fn finish_registration(
        &self,
        state: &str,
        answer: serde_json::Value,
    ) -> Result<StoredPasskey, IdentityError> {
        let state: PasskeyRegistration = decode_state(state)?;
        let answer: RegisterPublicKeyCredential = decode_answer(answer)?;
        let passkey = self
            .webauthn
            .finish_passkey_registration(&answer, &state)
            .map_err(|e| IdentityError::PasskeyRejected(e.to_string()))?;
        Ok(StoredPasskey::of(passkey))
    }

    pub(crate) fn start_authentication(
        &self,
        passkeys: &[StoredPasskey],
    ) -> Result<Started, IdentityError> {
        let keys: Vec<Passkey> = passkeys.iter().map(|p| p.passkey.clone()).collect();
        let (options, state) = self
            .webauthn
            .start_passkey_authentication(&keys)
            .map_err(|e| IdentityError::Internal(format!("passkey authentication: {e}")))?;
        started::<RequestChallengeResponse, PasskeyAuthentication>(&options, &state)
    }

    pub(crate) fn finish_authentication(
        &self,
        state: &str,
        answer: &PublicKeyCredential,
    ) -> Result<AuthenticationResult, IdentityError> {
        let state: PasskeyAuthentication = decode_state(state)?;
        self.webauthn
            .finish_passkey_authentication(answer, &state)
            .map_err(|e| IdentityError::PasskeyRejected(e.to_string()))
    }

    pub(crate) fn start_discoverable(&self) -> Result<Started, IdentityError> {
        let (options, state) = self
            .webauthn
            .start_discoverable_authentication()
            .map_err(|e| IdentityError::Internal(format!("passkey sign-in: {e}")))?;
        started::<RequestChallengeResponse, DiscoverableAuthentication>(&options, &state)
    }

    /// The account (user handle) and credential id an answer claims, before
    /// anything is verified.
    pub(crate) fn identify(
        &self,
        answer: &PublicKeyCredential,
    ) -> Result<(Uuid, String), IdentityError> {
        let (user, cred) = self
            .webauthn
            .identify_discoverable_authentication(answer)
            .map_err(|e| IdentityError::PasskeyRejected(e.to_string()))?;
        Ok((user, credential_id_text(cred)))
    }

    pub(crate) fn finish_discoverable(
        &self,
        state: &str,
        answer: &PublicKeyCredential,
        passkey: &StoredPasskey,
    ) -> Result<AuthenticationResult, IdentityError> {
        let state: DiscoverableAuthentication = decode_state(state)?;
        self.webauthn
            .finish_discoverable_authentication_v2(answer, state, &passkey.passkey)
            .map_err(|e| IdentityError::PasskeyRejected(e.to_string()))
    }
}

fn started<O: serde::Serialize, S: serde::Serialize>(
    options: &O,
    state: &S,
) -> Result<Started, IdentityError> {
    Ok(Started {
        options: serde_json::to_value(options)
            .map_err(|e| IdentityError::Internal(e.to_string()))?,
        state: serde_json::to_string(state).map_err(|e| IdentityError::Internal(e.to_string()))?,
    })
}

fn decode_state<S: DeserializeOwned>(state: &str) -> Result<S, IdentityError> {
    serde_json::from_str(state)
        .map_err(|e| IdentityError::Corrupt(format!("passkey ceremony state: {e}")))
}

/// Parses a client's answer, naming what is wrong with it.
pub(crate) fn decode_answer<A: DeserializeOwned>(
    answer: serde_json::Value,
) -> Result<A, IdentityError> {
    serde_json::from_value(answer)
        .map_err(|e| IdentityError::InvalidInput(format!("credential: {e}")))
}
