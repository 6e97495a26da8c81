//! Storing and opening a team's credentials: sealed (AES-256-GCM through
//! kura-crypto) under the team's data key, which is created on first use.
//! Creating one records `connect.credential.created` in the same
//! transaction.

use kura_store::StoreError;
use kura_store::connect::FlowCredentialRecord;
use kura_types::{FlowCredentialId, KeyScope, TeamId};
use zeroize::Zeroizing;

use crate::ConnectError;
use crate::audit::Audit;
use crate::credentials::{CredentialKind, CredentialSettings, Secret, context};
use crate::service::Connect;

impl Connect {
    /// Stores a credential sealed under the team's data key.
    pub async fn create_credential(
        &self,
        team: TeamId,
        audit: &Audit<'_>,
        name: &str,
        kind: CredentialKind,
        settings: CredentialSettings,
        secret: Zeroizing<String>,
    ) -> Result<FlowCredentialRecord, ConnectError> {
        let valid_name = !name.is_empty()
            && name.len() <= 64
            && name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
        if !valid_name {
            return Err(ConnectError::Invalid(
                "a credential name is 1-64 characters of a-z, A-Z, 0-9, `_` and `-`".into(),
            ));
        }
        if secret.len() < 8 || secret.len() > 4096 {
            return Err(ConnectError::Invalid(
                "a secret has 8 to 4096 characters".into(),
            ));
        }
        match kind {
            CredentialKind::Basic if settings.username.is_none() => {
                return Err(ConnectError::Invalid(
                    "basic credentials need a username".into(),
                ));
            }
            CredentialKind::Header if settings.header.is_none() => {
                return Err(ConnectError::Invalid(
                    "header credentials need a header".into(),
                ));
            }
            CredentialKind::Smtp => {
                let host = settings.host.as_deref().unwrap_or_default();
                if host.is_empty() || host.len() > 253 || host.contains(char::is_whitespace) {
                    return Err(ConnectError::Invalid(
                        "smtp credentials need the relay's host".into(),
                    ));
                }
                let from = settings.from.as_deref().ok_or_else(|| {
                    ConnectError::Invalid("smtp credentials need a sender address (`from`)".into())
                })?;
                crate::steps::email::parse_mailbox(from).map_err(ConnectError::Invalid)?;
                if settings.username.is_none() {
                    return Err(ConnectError::Invalid(
                        "smtp credentials need a username (the secret is its password)".into(),
                    ));
                }
            }
            CredentialKind::Oauth2 => crate::oauth::check_settings(&settings)?,
            _ => {}
        }
        if kind != CredentialKind::Oauth2
            && (settings.client_id.is_some()
                || settings.auth_url.is_some()
                || settings.token_url.is_some()
                || !settings.scopes.is_empty())
        {
            return Err(ConnectError::Invalid(
                "client_id, auth_url, token_url and scopes are settings of oauth2 credentials only"
                    .into(),
            ));
        }
        if kind != CredentialKind::Smtp
            && (settings.host.is_some()
                || settings.port.is_some()
                || settings.security.is_some()
                || settings.from.is_some())
        {
            return Err(ConnectError::Invalid(
                "host, port, security and from are settings of smtp credentials only".into(),
            ));
        }
        let key = self.team_key(team).await?;
        let id = FlowCredentialId::new();
        let sealed = kura_crypto::aead::seal(key.expose(), &context(team, id), secret.as_bytes())
            .map_err(|e| ConnectError::Crypto(e.to_string()))?;
        let record = FlowCredentialRecord {
            id,
            team,
            name: name.to_owned(),
            kind: kind.as_str().to_owned(),
            settings: serde_json::to_string(&settings)
                .map_err(|e| ConnectError::Corrupt(e.to_string()))?,
            sealed,
            created_by: audit.key(),
            created_at: self.inner.clock.now(),
        };
        let event = audit.event(
            record.created_at,
            team,
            "connect.credential.created",
            format!("credential:{}", record.id),
            &[("name", record.name.clone()), ("kind", record.kind.clone())],
        )?;
        self.inner
            .store
            .create_credential(record.clone(), vec![event])
            .await?;
        Ok(record)
    }

    /// The team's data key, created on first use.
    pub(crate) async fn team_key(
        &self,
        team: TeamId,
    ) -> Result<kura_crypto::DataKey, ConnectError> {
        match self.inner.keys.get(KeyScope::Team(team)).await {
            Ok(k) => Ok(k),
            Err(StoreError::NotFound(_)) => {
                match self.inner.keys.create(KeyScope::Team(team)).await {
                    Ok(k) => Ok(k),
                    // Another request created it first.
                    Err(StoreError::Conflict(_)) => {
                        Ok(self.inner.keys.get(KeyScope::Team(team)).await?)
                    }
                    Err(e) => Err(e.into()),
                }
            }
            Err(e) => Err(e.into()),
        }
    }

    pub(crate) async fn open_credential(
        &self,
        team: TeamId,
        name: &str,
    ) -> Result<Secret, ConnectError> {
        let record = self
            .inner
            .store
            .credential(team, name)
            .await?
            .ok_or(ConnectError::NotFound("credential"))?;
        let key = self.team_key(team).await?;
        let plain =
            kura_crypto::aead::open(key.expose(), &context(team, record.id), &record.sealed)
                .map_err(|e| ConnectError::Crypto(e.to_string()))?;
        let value = Zeroizing::new(
            String::from_utf8(plain).map_err(|_| ConnectError::Corrupt("credential".into()))?,
        );
        Ok(Secret {
            kind: CredentialKind::parse(&record.kind)
                .ok_or(ConnectError::Corrupt("credential kind".into()))?,
            settings: serde_json::from_str(&record.settings).unwrap_or_default(),
            value,
        })
    }
}
