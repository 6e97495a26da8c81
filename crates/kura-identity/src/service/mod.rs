//! The [`Identity`] service: the rules of this crate applied to stored state.
//!
//! Split by concept: sign-in and sessions (`signin`), passwords, status
//! and profile of an account (`account`), second factors (`mfa`), WebAuthn
//! passkeys (`passkeys`), time-boxed operator access to teams (`access`),
//! teams, members, groups, invitations and roles (`teams`), API tokens
//! (`tokens`).

mod access;
mod account;
mod devices;
mod directory;
mod invitations;
mod mfa;
mod operators;
mod passkeys;
mod signin;
mod teams;
mod tokens;

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::sync::Arc;

use kura_crypto::token::SecretToken;
use kura_store::events::{EventRecord, TxEvents};
use kura_store::{AccountFacts, IdentityStore, PlatformStore, RoleGrant, SessionRecord};
use kura_types::{AccountId, Clock, SessionId};
use secrecy::SecretString;
use time::{Duration, OffsetDateTime};
use tokio::sync::oneshot;

use crate::account::{Account, AccountStatus};
use crate::event::{EventOutcome, Events, IdentityEvent, RequestFacts};
use crate::mfa::TeamMfaPolicy;
use crate::passkey::{PasskeyConfig, RelyingParty};
use crate::password::{HashParams, Passwords};
use crate::policy::{
    AccountTarget, Action, Credential, Decision, MfaMethod, OperatorRole, Principal, Resource,
    SessionStage, TeamRole, authorize,
};
use crate::session::SessionConfig;
use crate::throttle::ThrottlePolicy;
use crate::{Audited, IdentityError};

pub use access::{MAX_OPERATOR_ACCESS, OperatorAccess};
pub use devices::{REMEMBER_DEVICE_FOR, RememberedDevice};
pub use directory::GroupDetail;
pub use mfa::{MfaVerified, TotpConfirmed, TotpEnrolment};
pub use passkeys::{PasskeyChallenge, PasskeyInfo, PasskeyRegistered};
pub use signin::{SessionInfo, SignInStep, SignedIn};
pub use teams::{
    Acceptance, AcceptedInvitation, Group, Invitation, IssuedInvitation, Member, Team, TeamCreated,
};
pub use tokens::{ApiTokenInfo, ApiTokenKind, IssuedApiToken, NewApiToken};

/// How stale a session's last-seen time (and a token's last-used time) may
/// get before a request writes it again. Skipping the write for requests
/// closer together than this keeps authenticated requests off the write
/// path (one fsync each otherwise); a session then looks at most this much
/// older than it is, so its idle timeout can only come early, never late.
pub(crate) const TOUCH_EVERY: Duration = Duration::seconds(30);

/// Kura ID settings.
#[derive(Debug, Clone)]
pub struct IdentityConfig {
    /// Session timing.
    pub session: SessionConfig,
    /// Password hashing cost for new hashes.
    pub hash: HashParams,
    /// Throttling of sign-in failures per account.
    pub account_throttle: ThrottlePolicy,
    /// Throttling of sign-in failures per source address.
    pub source_throttle: ThrottlePolicy,
    /// Throttling of wrong MFA codes per account.
    pub mfa_throttle: ThrottlePolicy,
    /// How long an invitation stays valid.
    pub invitation_ttl: Duration,
    /// The longest lifetime an API token may be given.
    pub max_token_lifetime: Duration,
    /// The issuer name shown in authenticator apps.
    pub totp_issuer: String,
    /// The WebAuthn relying party passkeys are bound to.
    pub passkeys: PasskeyConfig,
}

impl Default for IdentityConfig {
    fn default() -> Self {
        Self {
            session: SessionConfig::default(),
            hash: HashParams::OWASP,
            account_throttle: ThrottlePolicy::ACCOUNT,
            source_throttle: ThrottlePolicy::SOURCE,
            mfa_throttle: ThrottlePolicy::ACCOUNT,
            invitation_ttl: Duration::days(7),
            max_token_lifetime: Duration::days(366),
            totp_issuer: "Kura".into(),
            passkeys: PasskeyConfig::default(),
        }
    }
}

/// Kura ID. Cheap to clone (shared state behind an `Arc`), so it can sit in
/// an axum `State`.
#[derive(Debug, Clone)]
pub struct Identity {
    inner: Arc<Inner>,
    /// The facts of the request this handle serves (see [`Identity::at`]).
    facts: RequestFacts,
}

#[derive(Debug)]
struct Inner {
    store: Arc<dyn IdentityStore>,
    platform: Arc<dyn PlatformStore>,
    clock: Arc<dyn Clock>,
    passwords: Passwords,
    /// The WebAuthn relying party, or why there is none (passkey calls
    /// then fail with `PasskeysUnavailable`; everything else works).
    relying_party: Result<RelyingParty, String>,
    config: IdentityConfig,
}

impl Identity {
    /// The service over the given stores and clock.
    pub fn new(
        store: Arc<dyn IdentityStore>,
        platform: Arc<dyn PlatformStore>,
        clock: Arc<dyn Clock>,
        config: IdentityConfig,
    ) -> Result<Self, IdentityError> {
        let passwords =
            Passwords::new(config.hash).map_err(|e| IdentityError::Internal(e.to_string()))?;
        let relying_party = RelyingParty::new(config.passkeys.clone());
        if let Err(reason) = &relying_party {
            tracing::warn!(%reason, "passkeys are unavailable");
        }
        Ok(Self {
            inner: Arc::new(Inner {
                store,
                platform,
                clock,
                passwords,
                relying_party,
                config,
            }),
            facts: RequestFacts::default(),
        })
    }

    /// The service for one request: events of the state changes it makes
    /// carry `facts` (request id, user agent, client address), since they
    /// are stored in the change's own transaction.
    #[must_use]
    pub fn at(&self, facts: RequestFacts) -> Self {
        Self {
            inner: Arc::clone(&self.inner),
            facts,
        }
    }

    /// The settings in force.
    pub fn config(&self) -> &IdentityConfig {
        &self.inner.config
    }

    fn store(&self) -> &dyn IdentityStore {
        self.inner.store.as_ref()
    }

    fn now(&self) -> OffsetDateTime {
        self.inner.clock.now()
    }

    /// Checks the policy for an action this crate does not carry out itself
    /// (hosts, apps, records, firewall, events); a denial comes with its
    /// `authz.denied` event.
    pub fn check(&self, principal: &Principal, action: Action, resource: &Resource) -> Audited<()> {
        let mut ev = Events::default();
        let r = self.require(&mut ev, principal, action, resource);
        ev.finish(r)
    }

    /// The policy check every service call makes.
    fn require(
        &self,
        ev: &mut Events,
        p: &Principal,
        action: Action,
        resource: &Resource,
    ) -> Result<(), IdentityError> {
        match authorize(p, action, resource) {
            Decision::Allow => Ok(()),
            Decision::Deny(reason) => {
                let mut e = IdentityEvent::new("authz.denied", EventOutcome::Denied, self.now())
                    .actor(p.account)
                    .detail("action", action.as_str())
                    .detail("reason", reason.as_str());
                match resource {
                    Resource::Team(t) => e = e.team(*t),
                    Resource::Account(t) => e = e.subject(t.id),
                    Resource::Platform => {}
                }
                ev.push(e);
                Err(IdentityError::Denied(reason))
            }
        }
    }

    /// Runs one store write with the events `describe` builds from its result
    /// appended in the write's own transaction (with this request's facts),
    /// so the change and its events commit together or not at all. Once
    /// committed, the events are noted in `ev` as recorded.
    async fn described<T, Fut>(
        &self,
        ev: &mut Events,
        describe: impl FnOnce(&T) -> Vec<IdentityEvent> + Send + 'static,
        write: impl FnOnce(TxEvents<T>) -> Fut,
    ) -> Result<T, IdentityError>
    where
        Fut: Future<Output = Result<T, kura_store::StoreError>>,
    {
        let facts = self.facts.clone();
        let (built, mut stored) = oneshot::channel();
        let events = TxEvents::from_result(move |result: &T| {
            let mut records = Vec::new();
            let mut done = Vec::new();
            for e in describe(result) {
                let mut s = facts.apply(
                    e.to_security_event()
                        .map_err(|err| kura_store::StoreError::Malformed(err.to_string()))?,
                );
                s.sanitize();
                records.push(EventRecord::new(s.clone())?);
                done.push((e, s));
            }
            // The receiver waits for the write's answer, which comes after
            // this; it can only be gone if the caller was dropped.
            let _ = built.send(done);
            Ok(records)
        });
        let result = write(events).await?;
        match stored.try_recv() {
            Ok(done) => ev.recorded(done),
            // A store that answered without building the events broke the
            // contract of `TxEvents`: refuse to report success.
            Err(_) => {
                return Err(IdentityError::Internal(
                    "the store did not record the events of a change".into(),
                ));
            }
        }
        Ok(result)
    }

    async fn hash_password(&self, password: &SecretString) -> Result<String, IdentityError> {
        let inner = Arc::clone(&self.inner);
        let pw = password.clone();
        crate::password::run_hashing(move || inner.passwords.hash(&pw))
            .await
            .map_err(|e| IdentityError::Internal(e.to_string()))?
            .map_err(|e| IdentityError::Internal(e.to_string()))
    }

    /// Verifies on a blocking thread; `None` for `phc` runs the dummy
    /// verification and returns false.
    async fn verify_password(&self, password: &SecretString, phc: Option<String>) -> bool {
        let inner = Arc::clone(&self.inner);
        let pw = password.clone();
        crate::password::run_hashing(move || match phc {
            Some(phc) => inner.passwords.verify(&pw, &phc),
            None => {
                inner.passwords.verify_dummy(&pw);
                false
            }
        })
        .await
        .unwrap_or(false)
    }

    async fn load_account(&self, id: AccountId) -> Result<Option<Account>, IdentityError> {
        self.store()
            .account(id)
            .await?
            .map(Account::from_record)
            .transpose()
    }

    /// Roles of an account, split into operator roles and team roles.
    async fn roles_of(
        &self,
        id: AccountId,
    ) -> Result<
        (
            BTreeSet<OperatorRole>,
            BTreeMap<kura_types::TeamId, BTreeSet<TeamRole>>,
        ),
        IdentityError,
    > {
        let grants = self.store().grants_of(id).await?;
        let (operator_roles, mut team_roles) = split_grants(&grants)?;
        // Time-boxed access a team gave an operator counts as that team role
        // until it ends; expired or revoked grants are not returned.
        if !operator_roles.is_empty() {
            for g in self.store().active_operator_access(id, self.now()).await? {
                let role = TeamRole::parse(&g.role).ok_or_else(|| {
                    IdentityError::Corrupt(format!("unknown team role `{}`", g.role))
                })?;
                team_roles.entry(g.team).or_default().insert(role);
            }
        }
        Ok((operator_roles, team_roles))
    }

    async fn account_target(&self, id: AccountId) -> Result<AccountTarget, IdentityError> {
        let (operator_roles, team_roles) = self.roles_of(id).await?;
        Ok(AccountTarget {
            id,
            operator_roles,
            team_roles,
        })
    }

    /// Everything the policy needs about an account, from what
    /// [`IdentityStore::session_facts`] read in one go: roles (direct,
    /// through groups, and operator access to teams), the teams' MFA
    /// requirements, and whether a second factor is enrolled.
    fn principal_from(
        account: &Account,
        credential: Credential,
        facts: &AccountFacts,
    ) -> Result<Principal, IdentityError> {
        let (operator_roles, team_roles, mfa_required_by) = roles_and_mfa(facts)?;
        Ok(Principal {
            account: account.id,
            kind: account.kind,
            operator_roles,
            team_roles,
            mfa_required_by,
            mfa_enrolled: facts.totp_confirmed || facts.has_passkey,
            credential,
        })
    }

    /// Whether an account must have a second factor before it may do
    /// anything, from its facts: operators always, customers when a team
    /// requires it of them.
    fn mfa_required_by_facts(
        account: &Account,
        facts: &AccountFacts,
    ) -> Result<bool, IdentityError> {
        Ok(account.kind == crate::AccountKind::Operator || !roles_and_mfa(facts)?.2.is_empty())
    }

    /// A new session's row and its token for the client, not yet stored
    /// (the caller stores it with the step that earns it).
    fn new_session(&self, new: NewSession<'_>) -> Result<(SessionRecord, SignedIn), IdentityError> {
        let NewSession {
            account,
            stage,
            mfa,
            source,
            replaces,
        } = new;
        let now = self.now();
        let token = SecretToken::generate().map_err(|e| IdentityError::Internal(e.to_string()))?;
        let cfg = &self.inner.config.session;
        let record = SessionRecord {
            id: SessionId::new(),
            token_hash: token.hash(),
            account,
            stage: stage.as_str().into(),
            // A rotated session keeps its sign-in time, so rotation never
            // extends the absolute timeout.
            created_at: replaces.map_or(now, |r| r.created_at),
            last_seen_at: now,
            expires_at: replaces.map_or(now + cfg.absolute_timeout, |r| r.expires_at),
            mfa_verified_at: mfa.map(|(_, at)| at),
            mfa_method: mfa.map(|(m, _)| mfa_method_name(m).to_owned()),
            revoked_at: None,
            source: source.map(|s| s.to_string()),
        };
        let signed_in = SignedIn {
            session: record.id,
            account,
            stage,
            expires_at: record.expires_at,
            idle_timeout: cfg.idle_timeout,
            token,
        };
        Ok((record, signed_in))
    }

    /// Whether the account has a confirmed TOTP app or a passkey.
    async fn has_second_factor(&self, id: AccountId) -> Result<bool, IdentityError> {
        Ok(self.store().totp(id, true).await?.is_some()
            || !self.store().passkeys_of(id).await?.is_empty())
    }

    fn active(account: Option<Account>) -> Option<Account> {
        account.filter(|a| a.status == AccountStatus::Active)
    }
}

/// What a new session is: whose, how far sign-in got, the verified second
/// factor, where from, and the session it replaces (rotation keeps that
/// one's sign-in time and absolute expiry).
struct NewSession<'a> {
    account: AccountId,
    stage: SessionStage,
    mfa: Option<(MfaMethod, OffsetDateTime)>,
    source: Option<IpAddr>,
    replaces: Option<&'a SessionRecord>,
}

pub(crate) fn mfa_method_name(m: MfaMethod) -> &'static str {
    match m {
        MfaMethod::Totp => "totp",
        MfaMethod::RecoveryCode => "recovery_code",
        MfaMethod::Passkey => "passkey",
        MfaMethod::RememberedDevice => "remembered_device",
    }
}

pub(crate) fn parse_mfa_method(s: &str) -> Option<MfaMethod> {
    match s {
        "totp" => Some(MfaMethod::Totp),
        "recovery_code" => Some(MfaMethod::RecoveryCode),
        "passkey" => Some(MfaMethod::Passkey),
        "remembered_device" => Some(MfaMethod::RememberedDevice),
        _ => None,
    }
}

/// An account's roles (operator access to teams counts for operators only,
/// as in `roles_of`) and the teams whose MFA requirement covers it.
fn roles_and_mfa(facts: &AccountFacts) -> Result<RolesAndMfa, IdentityError> {
    let (operator_roles, mut team_roles) = split_grants(&facts.grants)?;
    if !operator_roles.is_empty() {
        for g in &facts.operator_access {
            let role = TeamRole::parse(&g.role)
                .ok_or_else(|| IdentityError::Corrupt(format!("unknown team role `{}`", g.role)))?;
            team_roles.entry(g.team).or_default().insert(role);
        }
    }
    let groups: BTreeSet<_> = facts.groups.iter().copied().collect();
    let mut mfa_required_by = BTreeMap::new();
    for team in team_roles.keys() {
        if let Some(stored) = facts.team_mfa_policies.get(team) {
            let policy = TeamMfaPolicy::from_stored(stored)?;
            if let Some(strength) = policy.requirement_for(&groups) {
                mfa_required_by.insert(*team, strength);
            }
        }
    }
    Ok((operator_roles, team_roles, mfa_required_by))
}

/// Operator roles, team roles, and the teams requiring MFA with how strong.
type RolesAndMfa = (
    BTreeSet<OperatorRole>,
    BTreeMap<kura_types::TeamId, BTreeSet<TeamRole>>,
    BTreeMap<kura_types::TeamId, crate::MfaStrength>,
);

type RoleSets = (
    BTreeSet<OperatorRole>,
    BTreeMap<kura_types::TeamId, BTreeSet<TeamRole>>,
);

fn split_grants(grants: &[RoleGrant]) -> Result<RoleSets, IdentityError> {
    let mut ops = BTreeSet::new();
    let mut teams: BTreeMap<_, BTreeSet<_>> = BTreeMap::new();
    for g in grants {
        match g.team {
            None => {
                ops.insert(OperatorRole::parse(&g.role).ok_or_else(|| {
                    IdentityError::Corrupt(format!("unknown operator role `{}`", g.role))
                })?);
            }
            Some(team) => {
                teams
                    .entry(team)
                    .or_default()
                    .insert(TeamRole::parse(&g.role).ok_or_else(|| {
                        IdentityError::Corrupt(format!("unknown team role `{}`", g.role))
                    })?);
            }
        }
    }
    Ok((ops, teams))
}
