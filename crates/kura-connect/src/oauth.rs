//! OAuth 2.0 authorisation-code credentials with PKCE and refresh, on the
//! `oauth2` crate.
//!
//! A team member asks for an authorise URL: a random `state` (its SHA-256
//! stored, single use, ten minutes) and a random PKCE verifier (sealed
//! under the team's data key) are kept beside the credential. The
//! provider sends the browser back to `/hooks/oauth2/callback`, where the
//! state is taken once and the code exchanged for tokens; the tokens are
//! sealed under the team's data key (bound to the team and credential) and
//! stored with a `connect.credential.authorized` event in one transaction.
//! An HTTP step naming the credential sends its access token, refreshing
//! it first when it expires within a minute, and stores the new tokens.
//! Every token request goes through the outbound SSRF guard; tokens never
//! leave through the API and are redacted from run records.

use std::time::Duration;

use kura_store::connect::FlowCredentialRecord;
use kura_store::connect_oauth::OAuthStateRecord;
use kura_types::{Actor, FlowCredentialId, Outcome, SecurityEvent, TeamId};
use oauth2::basic::BasicClient;
use oauth2::{
    AuthUrl, AuthorizationCode, ClientId, ClientSecret, CsrfToken, EndpointNotSet, EndpointSet,
    HttpRequest, HttpResponse, PkceCodeChallenge, PkceCodeVerifier, RedirectUrl, RefreshToken,
    Scope, TokenResponse, TokenUrl,
};
use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

use crate::ConnectError;
use crate::credentials::{CredentialKind, CredentialSettings, Secret};
use crate::outbound::{OutboundError, OutboundPolicy, OutboundRequest};
use crate::service::Connect;

/// How long an authorise URL works.
const STATE_LIFETIME: Duration = Duration::from_secs(600);
/// A token this close to its expiry is refreshed before use.
const REFRESH_MARGIN: time::Duration = time::Duration::seconds(60);
/// Where providers send the browser back, under the public URL.
pub const CALLBACK_PATH: &str = "/hooks/oauth2/callback";

/// Per-credential locks, so runs of one process that find the same token
/// due refresh it once (a provider that rotates refresh tokens would refuse
/// the second refresh).
#[derive(Debug, Default)]
pub(crate) struct RefreshLocks(
    parking_lot::Mutex<
        std::collections::HashMap<FlowCredentialId, std::sync::Arc<tokio::sync::Mutex<()>>>,
    >,
);

impl RefreshLocks {
    fn of(&self, id: FlowCredentialId) -> std::sync::Arc<tokio::sync::Mutex<()>> {
        std::sync::Arc::clone(self.0.lock().entry(id).or_default())
    }
}

type Client = BasicClient<EndpointSet, EndpointNotSet, EndpointNotSet, EndpointNotSet, EndpointSet>;

/// The tokens of an authorised credential (sealed at rest).
#[derive(Serialize, Deserialize)]
struct Tokens {
    access: String,
    refresh: Option<String>,
    /// Unix seconds.
    expires_at: Option<i64>,
}

impl Drop for Tokens {
    fn drop(&mut self) {
        use zeroize::Zeroize as _;
        self.access.zeroize();
        if let Some(r) = &mut self.refresh {
            r.zeroize();
        }
    }
}

fn tokens_context(team: TeamId, id: FlowCredentialId) -> Vec<u8> {
    format!("kura-connect oauth tokens v1 {team} {id}").into_bytes()
}

fn verifier_context(team: TeamId, id: FlowCredentialId) -> Vec<u8> {
    format!("kura-connect oauth pkce v1 {team} {id}").into_bytes()
}

/// Checks an `oauth2` credential's settings on creation.
pub(crate) fn check_settings(s: &CredentialSettings) -> Result<(), ConnectError> {
    let bad = |m: &str| Err(ConnectError::Invalid(m.to_owned()));
    if s.client_id.as_deref().is_none_or(str::is_empty) {
        return bad("oauth2 credentials need a client_id");
    }
    for (name, url) in [("auth_url", &s.auth_url), ("token_url", &s.token_url)] {
        let Some(url) = url else {
            return Err(ConnectError::Invalid(format!(
                "oauth2 credentials need {name}"
            )));
        };
        match url::Url::parse(url) {
            Ok(u) if matches!(u.scheme(), "https" | "http") => {}
            _ => {
                return Err(ConnectError::Invalid(format!(
                    "{name} must be an http(s) URL"
                )));
            }
        }
    }
    if s.scopes.len() > 50 || s.scopes.iter().any(|x| x.is_empty() || x.contains(' ')) {
        return bad("scopes are up to 50 words without spaces");
    }
    Ok(())
}

/// The `oauth2` client over a credential's settings.
fn client(s: &CredentialSettings, secret: &Secret, redirect: &str) -> Result<Client, ConnectError> {
    let bad = |e: url::ParseError| ConnectError::Invalid(format!("oauth2 URL: {e}"));
    Ok(
        BasicClient::new(ClientId::new(s.client_id.clone().unwrap_or_default()))
            .set_client_secret(ClientSecret::new(secret.value.as_str().to_owned()))
            .set_auth_uri(AuthUrl::new(s.auth_url.clone().unwrap_or_default()).map_err(bad)?)
            .set_token_uri(TokenUrl::new(s.token_url.clone().unwrap_or_default()).map_err(bad)?)
            .set_redirect_uri(RedirectUrl::new(redirect.to_owned()).map_err(bad)?),
    )
}

/// Sends the `oauth2` crate's requests through the SSRF guard.
async fn send(policy: &OutboundPolicy, req: HttpRequest) -> Result<HttpResponse, OutboundError> {
    let (parts, body) = req.into_parts();
    let mut content_type = "application/x-www-form-urlencoded".to_owned();
    let mut headers = Vec::new();
    for (k, v) in &parts.headers {
        let v = v.to_str().unwrap_or_default().to_owned();
        if k == http::header::CONTENT_TYPE {
            content_type = v;
        } else {
            headers.push((k.as_str().to_owned(), v));
        }
    }
    let method = reqwest::Method::from_bytes(parts.method.as_str().as_bytes())
        .map_err(|e| OutboundError::Failed(e.to_string()))?;
    let resp = policy
        .send(OutboundRequest {
            method,
            url: parts.uri.to_string(),
            headers,
            body: (!body.is_empty()).then_some((body, content_type)),
            timeout: Some(Duration::from_secs(15)),
        })
        .await?;
    let mut out = http::Response::builder().status(resp.status);
    for (k, v) in &resp.headers {
        out = out.header(k.as_str(), v.as_str());
    }
    out.body(resp.body)
        .map_err(|e| OutboundError::Failed(e.to_string()))
}

fn token_error<E: std::error::Error>(
    e: oauth2::RequestTokenError<E, impl oauth2::ErrorResponse>,
) -> ConnectError {
    match e {
        oauth2::RequestTokenError::ServerResponse(r) => {
            ConnectError::Invalid(format!("the provider refused: {r}"))
        }
        oauth2::RequestTokenError::Request(e) => {
            ConnectError::Invalid(format!("the token endpoint could not be reached: {e}"))
        }
        other => ConnectError::Invalid(format!("the token answer is unusable: {other}")),
    }
}

impl Connect {
    fn redirect_url(&self) -> Result<String, ConnectError> {
        let base = self.inner.config.public_url.as_deref().ok_or_else(|| {
            ConnectError::Invalid("OAuth needs the server's public_url for its callback".into())
        })?;
        Ok(format!("{}{CALLBACK_PATH}", base.trim_end_matches('/')))
    }

    async fn oauth_credential(
        &self,
        team: TeamId,
        id: FlowCredentialId,
    ) -> Result<(FlowCredentialRecord, Secret), ConnectError> {
        let record = self
            .inner
            .store
            .credentials(team)
            .await?
            .into_iter()
            .find(|c| c.id == id)
            .ok_or(ConnectError::NotFound("credential"))?;
        let secret = self.open_credential(team, &record.name).await?;
        if secret.kind != CredentialKind::Oauth2 {
            return Err(ConnectError::Invalid(format!(
                "credential `{}` is not an oauth2 credential",
                record.name
            )));
        }
        Ok((record, secret))
    }

    /// Starts an authorisation: the URL to send the person's browser to.
    pub async fn oauth_authorize(
        &self,
        team: TeamId,
        id: FlowCredentialId,
        audit: &crate::audit::Audit<'_>,
    ) -> Result<String, ConnectError> {
        let (record, secret) = self.oauth_credential(team, id).await?;
        let client = client(&secret.settings, &secret, &self.redirect_url()?)?;
        let random = || {
            kura_crypto::random::array::<32>()
                .map(hex::encode)
                .map_err(|_| ConnectError::Random)
        };
        let state = random()?;
        let verifier = Zeroizing::new(random()?);
        let challenge = PkceCodeChallenge::from_code_verifier_sha256(&PkceCodeVerifier::new(
            verifier.to_string(),
        ));
        let (url, _) = client
            .authorize_url(|| CsrfToken::new(state.clone()))
            .add_scopes(secret.settings.scopes.iter().cloned().map(Scope::new))
            .set_pkce_challenge(challenge)
            .url();
        let key = self.team_key(team).await?;
        let sealed_verifier = kura_crypto::aead::seal(
            key.expose(),
            &verifier_context(team, id),
            verifier.as_bytes(),
        )
        .map_err(|e| ConnectError::Crypto(e.to_string()))?;
        let now = self.inner.clock.now();
        let event = audit.event(
            now,
            team,
            "connect.credential.authorization_started",
            format!("credential:{id}"),
            &[("name", record.name.clone())],
        )?;
        self.inner
            .store
            .put_oauth_state(
                OAuthStateRecord {
                    state_hash: kura_crypto::digest::sha256(state.as_bytes()),
                    team,
                    credential: id,
                    sealed_verifier,
                    created_by: audit.key(),
                    expires_at: now + STATE_LIFETIME,
                },
                vec![event],
            )
            .await?;
        Ok(url.to_string())
    }

    /// Finishes an authorisation: takes the state once, exchanges the code
    /// and stores the sealed tokens with their event. Answers the team and
    /// the credential.
    pub async fn oauth_callback(
        &self,
        state: &str,
        code: &str,
    ) -> Result<(TeamId, FlowCredentialRecord), ConnectError> {
        let pending = self
            .inner
            .store
            .take_oauth_state(kura_crypto::digest::sha256(state.as_bytes()))
            .await?
            .ok_or(ConnectError::NotFound("authorisation"))?;
        if pending.expires_at <= self.inner.clock.now() {
            return Err(ConnectError::Invalid(
                "the authorisation expired; start it again".into(),
            ));
        }
        let (team, id) = (pending.team, pending.credential);
        let (record, secret) = self.oauth_credential(team, id).await?;
        let key = self.team_key(team).await?;
        let verifier = Zeroizing::new(
            String::from_utf8(
                kura_crypto::aead::open(
                    key.expose(),
                    &verifier_context(team, id),
                    &pending.sealed_verifier,
                )
                .map_err(|e| ConnectError::Crypto(e.to_string()))?,
            )
            .map_err(|_| ConnectError::Corrupt("PKCE verifier".into()))?,
        );
        let client = client(&secret.settings, &secret, &self.redirect_url()?)?;
        let policy = self.inner.config.outbound.clone();
        let http = move |req: HttpRequest| {
            let policy = policy.clone();
            async move { send(&policy, req).await }
        };
        let answer = client
            .exchange_code(AuthorizationCode::new(code.to_owned()))
            .set_pkce_verifier(PkceCodeVerifier::new(verifier.to_string()))
            .request_async(&http)
            .await
            .map_err(token_error)?;
        let tokens = self.tokens_of(&answer, None);
        let event = self.credential_event(
            team,
            &record,
            "connect.credential.authorized",
            &pending.created_by,
        )?;
        self.store_tokens(team, id, &tokens, event).await?;
        Ok((team, record))
    }

    fn tokens_of(
        &self,
        answer: &oauth2::basic::BasicTokenResponse,
        old_refresh: Option<&str>,
    ) -> Tokens {
        let now = self.inner.clock.now().unix_timestamp();
        Tokens {
            access: answer.access_token().secret().clone(),
            // A provider that does not rotate refresh tokens keeps the old.
            refresh: answer
                .refresh_token()
                .map(|r| r.secret().clone())
                .or_else(|| old_refresh.map(str::to_owned)),
            expires_at: answer
                .expires_in()
                .map(|d| now.saturating_add(i64::try_from(d.as_secs()).unwrap_or(i64::MAX))),
        }
    }

    fn credential_event(
        &self,
        team: TeamId,
        record: &FlowCredentialRecord,
        action: &str,
        by: &str,
    ) -> Result<kura_store::events::EventRecord, ConnectError> {
        let action =
            kura_types::Action::parse(action).map_err(|e| ConnectError::Invalid(e.to_string()))?;
        let actor = match by.strip_prefix("account:") {
            Some(id) => Actor::Account { id: id.to_owned() },
            None => Actor::System {
                component: "kura-connect".into(),
            },
        };
        let e = SecurityEvent::new(self.inner.clock.now(), actor, action, Outcome::Success)
            .with_team(team)
            .with_target(format!("credential:{}", record.id))
            .with_detail("name", record.name.clone());
        kura_events::prepare(e).map_err(|e| ConnectError::Invalid(e.to_string()))
    }

    async fn store_tokens(
        &self,
        team: TeamId,
        id: FlowCredentialId,
        tokens: &Tokens,
        event: kura_store::events::EventRecord,
    ) -> Result<(), ConnectError> {
        let plain = Zeroizing::new(
            serde_json::to_vec(tokens).map_err(|e| ConnectError::Corrupt(e.to_string()))?,
        );
        let key = self.team_key(team).await?;
        let sealed = kura_crypto::aead::seal(key.expose(), &tokens_context(team, id), &plain)
            .map_err(|e| ConnectError::Crypto(e.to_string()))?;
        if !self
            .inner
            .store
            .set_oauth_tokens(team, id, sealed, vec![event])
            .await?
        {
            return Err(ConnectError::NotFound("credential"));
        }
        Ok(())
    }

    /// The access token to send for an `oauth2` credential, refreshed (and
    /// stored) when it expires within a minute. The tokens join `secrets`.
    pub(crate) async fn oauth_access_token(
        &self,
        team: TeamId,
        name: &str,
        secret: &Secret,
        secrets: &mut Vec<String>,
    ) -> Result<Zeroizing<String>, ConnectError> {
        let record = self
            .inner
            .store
            .credential(team, name)
            .await?
            .ok_or(ConnectError::NotFound("credential"))?;
        let tokens = self.read_tokens(team, record.id, name).await?;
        secrets.push(tokens.access.clone());
        secrets.extend(tokens.refresh.clone());
        if !self.due(&tokens) {
            return Ok(Zeroizing::new(tokens.access.clone()));
        }
        // Refresh once: whoever waited for the lock reads what the holder
        // stored.
        let lock = self.inner.refreshing.of(record.id);
        let _held = lock.lock().await;
        let tokens = self.read_tokens(team, record.id, name).await?;
        secrets.push(tokens.access.clone());
        secrets.extend(tokens.refresh.clone());
        let Some(refresh) = tokens.refresh.clone().filter(|_| self.due(&tokens)) else {
            return Ok(Zeroizing::new(tokens.access.clone()));
        };
        let client = client(&secret.settings, secret, &self.redirect_url()?)?;
        let policy = self.inner.config.outbound.clone();
        let http = move |req: HttpRequest| {
            let policy = policy.clone();
            async move { send(&policy, req).await }
        };
        let answer = client
            .exchange_refresh_token(&RefreshToken::new(refresh.clone()))
            .request_async(&http)
            .await
            .map_err(token_error)?;
        let fresh = self.tokens_of(&answer, Some(&refresh));
        secrets.push(fresh.access.clone());
        secrets.extend(fresh.refresh.clone());
        let event =
            self.credential_event(team, &record, "connect.credential.refreshed", "system")?;
        self.store_tokens(team, record.id, &fresh, event).await?;
        Ok(Zeroizing::new(fresh.access.clone()))
    }

    /// Whether a token expires within the margin.
    fn due(&self, tokens: &Tokens) -> bool {
        tokens
            .expires_at
            .is_some_and(|at| at <= (self.inner.clock.now() + REFRESH_MARGIN).unix_timestamp())
    }

    /// A credential's tokens, opened.
    async fn read_tokens(
        &self,
        team: TeamId,
        id: FlowCredentialId,
        name: &str,
    ) -> Result<Tokens, ConnectError> {
        let sealed = self
            .inner
            .store
            .oauth_tokens(team, id)
            .await?
            .ok_or_else(|| {
                ConnectError::Invalid(format!("credential `{name}` has not been authorised yet"))
            })?;
        let key = self.team_key(team).await?;
        let plain = Zeroizing::new(
            kura_crypto::aead::open(key.expose(), &tokens_context(team, id), &sealed)
                .map_err(|e| ConnectError::Crypto(e.to_string()))?,
        );
        serde_json::from_slice(&plain).map_err(|e| ConnectError::Corrupt(e.to_string()))
    }
}
