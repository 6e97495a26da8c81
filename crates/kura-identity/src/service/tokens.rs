//! Personal and service API tokens.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

use kura_crypto::token::{SecretToken, TokenHash};
use kura_store::ApiTokenRecord;
use kura_types::{ApiTokenId, TeamId};
use secrecy::{ExposeSecret, SecretString};
use time::{Duration, OffsetDateTime};

use super::Identity;
use crate::account::{Account, AccountKind};
use crate::event::{EventOutcome, Events, IdentityEvent};
use crate::policy::{Action, Credential, Principal, Resource, TeamRole, token_scopes};
use crate::{Audited, IdentityError};

/// Whose authority a token carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ApiTokenKind {
    /// Acts as the account that created it, limited to its scopes.
    Personal,
    /// Acts for a team with one team role (not the creator's), limited to
    /// its scopes; it keeps working when its creator leaves.
    Service,
}

impl ApiTokenKind {
    fn as_str(self) -> &'static str {
        match self {
            Self::Personal => "personal",
            Self::Service => "service",
        }
    }

    fn prefix(self) -> &'static str {
        match self {
            Self::Personal => "kura_pat_",
            Self::Service => "kura_svc_",
        }
    }
}

/// What to create.
#[derive(Debug, Clone)]
pub struct NewApiToken {
    /// A name to recognise it by.
    pub name: String,
    /// Personal or service.
    pub kind: ApiTokenKind,
    /// Scopes (see [`crate::token_scopes`]).
    pub scopes: BTreeSet<String>,
    /// How long it works.
    pub lifetime: Duration,
    /// For a service token: its team and role.
    pub service: Option<(TeamId, TeamRole)>,
}

/// A new token; show the secret once.
#[derive(Debug)]
pub struct IssuedApiToken {
    /// Its id.
    pub id: ApiTokenId,
    /// When it stops working.
    pub expires_at: OffsetDateTime,
    /// The token text (`kura_pat_…` or `kura_svc_…`).
    pub token: SecretString,
}

/// A token as listed (never its secret).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiTokenInfo {
    /// Its id.
    pub id: ApiTokenId,
    /// Its name.
    pub name: String,
    /// Personal or service.
    pub kind: ApiTokenKind,
    /// Its team (service tokens).
    pub team: Option<TeamId>,
    /// Its scopes.
    pub scopes: BTreeSet<String>,
    /// When it was created.
    pub created_at: OffsetDateTime,
    /// When it stops working.
    pub expires_at: OffsetDateTime,
    /// When it was last used.
    pub last_used_at: Option<OffsetDateTime>,
    /// When it was revoked.
    pub revoked_at: Option<OffsetDateTime>,
}

fn parse_kind(s: &str) -> Result<ApiTokenKind, IdentityError> {
    match s {
        "personal" => Ok(ApiTokenKind::Personal),
        "service" => Ok(ApiTokenKind::Service),
        other => Err(IdentityError::Corrupt(format!("token kind `{other}`"))),
    }
}

fn info(r: ApiTokenRecord) -> Result<ApiTokenInfo, IdentityError> {
    Ok(ApiTokenInfo {
        id: r.id,
        kind: parse_kind(&r.kind)?,
        name: r.name,
        team: r.team,
        scopes: r.scopes.into_iter().collect(),
        created_at: r.created_at,
        expires_at: r.expires_at,
        last_used_at: r.last_used_at,
        revoked_at: r.revoked_at,
    })
}

impl Identity {
    /// Creates an API token. Personal tokens need the owner's step-up;
    /// service tokens need the service-token permission in their team and
    /// cannot hold the owner role.
    pub async fn create_api_token(
        &self,
        p: &Principal,
        req: NewApiToken,
    ) -> Audited<IssuedApiToken> {
        let mut ev = Events::default();
        let r = async {
            let team = match (req.kind, req.service) {
                (ApiTokenKind::Personal, None) => {
                    self.require(
                        &mut ev,
                        p,
                        Action::OwnCredentialsChange,
                        &self.self_target(p),
                    )?;
                    None
                }
                (ApiTokenKind::Service, Some((team, role))) => {
                    self.require(
                        &mut ev,
                        p,
                        Action::ServiceTokensManage,
                        &Resource::Team(team),
                    )?;
                    if role == TeamRole::Owner {
                        return Err(IdentityError::InvalidInput(
                            "a service token cannot hold the owner role".into(),
                        ));
                    }
                    Some((team, role))
                }
                _ => {
                    return Err(IdentityError::InvalidInput(
                        "a service token needs a team and role; a personal token has none".into(),
                    ));
                }
            };
            let name = req.name.trim();
            if name.is_empty() || name.chars().count() > 100 || name.chars().any(char::is_control) {
                return Err(IdentityError::InvalidInput(
                    "a token name must be 1 to 100 characters".into(),
                ));
            }
            let known = token_scopes();
            if req.scopes.is_empty() {
                return Err(IdentityError::InvalidInput("a token needs a scope".into()));
            }
            if let Some(bad) = req.scopes.iter().find(|s| !known.contains(s.as_str())) {
                return Err(IdentityError::InvalidInput(format!(
                    "unknown scope `{bad}`"
                )));
            }
            if req.lifetime <= Duration::ZERO || req.lifetime > self.inner.config.max_token_lifetime
            {
                return Err(IdentityError::InvalidInput(
                    "the token lifetime is out of range".into(),
                ));
            }
            let now = self.now();
            let secret =
                SecretToken::generate().map_err(|e| IdentityError::Internal(e.to_string()))?;
            let text = SecretString::from(format!("{}{}", req.kind.prefix(), secret.reveal()));
            let id = ApiTokenId::new();
            let expires_at = now + req.lifetime;
            let record = ApiTokenRecord {
                id,
                token_hash: TokenHash::of(text.expose_secret()),
                account: p.account,
                team: team.map(|(t, _)| t),
                kind: req.kind.as_str().into(),
                role: team.map(|(_, r)| r.as_str().to_owned()),
                name: name.to_owned(),
                scopes: req.scopes.iter().cloned().collect(),
                created_at: now,
                expires_at,
                last_used_at: None,
                revoked_at: None,
            };
            let mut e = IdentityEvent::new("token.created", EventOutcome::Success, now)
                .actor(p.account)
                .detail("token", id)
                .detail("kind", req.kind.as_str())
                .detail(
                    "scopes",
                    req.scopes.iter().cloned().collect::<Vec<_>>().join(" "),
                )
                .detail("expires_at", expires_at);
            if let Some((t, role)) = team {
                e = e.team(t).detail("role", role.as_str());
            }
            self.described(
                &mut ev,
                move |_: &()| vec![e],
                |events| self.store().insert_api_token(record, events),
            )
            .await?;
            Ok(IssuedApiToken {
                id,
                expires_at,
                token: text,
            })
        }
        .await;
        ev.finish(r)
    }

    /// Revokes a token: one's own, or a service token of a team where the
    /// principal manages service tokens.
    pub async fn revoke_api_token(&self, p: &Principal, id: ApiTokenId) -> Audited<()> {
        let mut ev = Events::default();
        let r = async {
            let token = self
                .store()
                .api_token(id)
                .await?
                .ok_or(IdentityError::NotFound("token"))?;
            match token.team {
                Some(team) if token.kind == "service" => {
                    self.require(
                        &mut ev,
                        p,
                        Action::ServiceTokensManage,
                        &Resource::Team(team),
                    )?;
                }
                _ => {
                    // Someone else's personal token is reported as missing.
                    if token.account != p.account {
                        return Err(IdentityError::NotFound("token"));
                    }
                    self.require(&mut ev, p, Action::OwnAccountRead, &self.self_target(p))?;
                }
            }
            let now = self.now();
            let e = IdentityEvent::new("token.revoked", EventOutcome::Success, now)
                .actor(p.account)
                .detail("token", id);
            let revoked = self
                .described(
                    &mut ev,
                    move |revoked: &bool| if *revoked { vec![e] } else { Vec::new() },
                    |events| self.store().revoke_api_token(id, now, events),
                )
                .await?;
            if !revoked {
                return Err(IdentityError::NotFound("token"));
            }
            Ok(())
        }
        .await;
        ev.finish(r)
    }

    /// The tokens the principal created.
    pub async fn api_tokens(&self, p: &Principal) -> Audited<Vec<ApiTokenInfo>> {
        let mut ev = Events::default();
        let r = async {
            self.require(&mut ev, p, Action::OwnAccountRead, &self.self_target(p))?;
            self.store()
                .api_tokens_of(p.account)
                .await?
                .into_iter()
                .map(info)
                .collect()
        }
        .await;
        ev.finish(r)
    }

    /// Resolves an API token into a principal, or
    /// [`IdentityError::Unauthenticated`] when it is unknown, expired or
    /// revoked, or its account cannot sign in. Records its use.
    pub async fn authenticate_api_token(
        &self,
        token: &str,
        source: Option<IpAddr>,
    ) -> Audited<Principal> {
        let mut ev = Events::default();
        let r = async {
            let now = self.now();
            // One read for the token and everything the policy needs about
            // its account.
            let Some((t, facts)) = self
                .store()
                .api_token_facts(&TokenHash::of(token), now)
                .await?
            else {
                return Err(IdentityError::Unauthenticated);
            };
            let reason = if t.revoked_at.is_some() {
                Some("revoked")
            } else if now >= t.expires_at {
                Some("expired")
            } else {
                None
            };
            if let Some(reason) = reason {
                ev.push(
                    IdentityEvent::new("token.rejected", EventOutcome::Failure, now)
                        .actor(t.account)
                        .source(source)
                        .detail("token", t.id)
                        .detail("reason", reason),
                );
                return Err(IdentityError::Unauthenticated);
            }
            let account = facts
                .account
                .clone()
                .map(Account::from_record)
                .transpose()?;
            let Some(account) = Self::active(account) else {
                return Err(IdentityError::Unauthenticated);
            };
            if t.last_used_at
                .is_none_or(|at| now - at >= super::TOUCH_EVERY)
            {
                self.store().touch_api_token(t.id, now).await?;
            }
            let credential = Credential::ApiToken {
                id: t.id,
                scopes: t.scopes.iter().cloned().collect(),
                service_team: if t.kind == "service" { t.team } else { None },
            };
            match parse_kind(&t.kind)? {
                ApiTokenKind::Personal => Self::principal_from(&account, credential, &facts),
                ApiTokenKind::Service => {
                    let (Some(team), Some(role)) =
                        (t.team, t.role.as_deref().and_then(TeamRole::parse))
                    else {
                        return Err(IdentityError::Corrupt(format!("service token {}", t.id)));
                    };
                    Ok(Principal {
                        account: account.id,
                        kind: AccountKind::Customer,
                        operator_roles: BTreeSet::new(),
                        team_roles: BTreeMap::from([(team, BTreeSet::from([role]))]),
                        mfa_required_by: BTreeMap::new(),
                        mfa_enrolled: false,
                        credential,
                    })
                }
            }
        }
        .await;
        ev.finish(r)
    }
}
