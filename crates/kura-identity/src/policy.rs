//! Roles, actions and the one policy function, [`authorize`].
//!
//! Deny by default: an action is allowed only when a role the principal holds
//! for the resource's scope grants it, the credential is good enough for it
//! (a complete session, MFA where the role or team requires it, a recent MFA
//! check for sensitive actions, a token scope for token callers), and the
//! resource belongs to the principal's team (or the principal is an operator
//! whose role covers that kind of platform work). Operators never reach
//! customer records.

use std::collections::{BTreeMap, BTreeSet};

use kura_types::{AccountId, ApiTokenId, SessionId, TeamId};
use serde::{Deserialize, Serialize};

use crate::account::{AccountKind, text_enum};
use crate::mfa::MfaStrength;

/// A platform role for the operator's staff.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OperatorRole {
    /// Hosts: create, configure, move; lists teams to do so; manages
    /// operators and the master key.
    ServerAdmin,
    /// Apps' operations (backups, restores, start/stop), never their records.
    DatabaseAdmin,
    /// Firewall and edge (rate limits, WAF) settings.
    NetworkAdmin,
    /// Security events and incidents.
    SecurityResponder,
    /// Read-only metadata for helping customers.
    Support,
}

text_enum!(OperatorRole {
    ServerAdmin => "server_admin",
    DatabaseAdmin => "database_admin",
    NetworkAdmin => "network_admin",
    SecurityResponder => "security_responder",
    Support => "support",
});

/// A role inside one team.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TeamRole {
    /// Everything in the team, including its settings and its owners.
    Owner,
    /// Users and groups.
    Admin,
    /// Uses the team's hosts and apps.
    Member,
    /// Billing.
    Billing,
    /// Reads the team's security events.
    Auditor,
}

text_enum!(TeamRole {
    Owner => "owner",
    Admin => "admin",
    Member => "member",
    Billing => "billing",
    Auditor => "auditor",
});

/// Whether an action works on the platform, inside a team or on an account.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    /// The platform as a whole ([`Resource::Platform`]).
    Platform,
    /// Something inside one team ([`Resource::Team`]).
    Team,
    /// One account ([`Resource::Account`]).
    Account,
}

/// Everything a principal can ask to do. Handlers name exactly one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Action {
    /// List every team (platform).
    TeamsList,
    /// Create a team (platform).
    TeamsCreate,
    /// Read platform-wide security events (platform).
    PlatformEventsRead,
    /// Work on incidents (platform).
    IncidentsManage,
    /// Change platform edge settings: global firewall, rate limits, WAF (platform).
    EdgeManage,
    /// Create operator accounts and grant operator roles (platform).
    OperatorsManage,
    /// See the master key's versions and how many data keys each wraps
    /// (platform).
    KeysRead,
    /// Rotate the master key (platform).
    KeysManage,
    /// Read a team's metadata.
    TeamRead,
    /// Change a team's settings (name, MFA requirement) or delete it.
    TeamManage,
    /// List a team's members, groups and invitations.
    MembersRead,
    /// Invite and remove members, manage groups and team roles.
    MembersManage,
    /// Read billing.
    BillingRead,
    /// Change billing.
    BillingManage,
    /// Read hosts and their settings.
    HostsRead,
    /// Create and change hosts.
    HostsManage,
    /// Read apps' metadata (names, sizes, schema).
    AppsRead,
    /// Operate apps: backups, restores, start and stop, schema changes.
    AppsOperate,
    /// Read records inside apps (customer data).
    AppRecordsRead,
    /// Change records inside apps (customer data).
    AppRecordsWrite,
    /// Read a team's firewall rules.
    FirewallRead,
    /// Change a team's firewall rules.
    FirewallManage,
    /// Read the team's security events.
    SecurityEventsRead,
    /// Feed the team's security log with events from systems outside Kura
    /// (a firewall, a host agent). Only a service token of that team with
    /// the `events:ingest` scope may: what it writes is always the team's.
    EventsIngest,
    /// Create and revoke the team's service tokens.
    ServiceTokensManage,
    /// Read the team's Kura Connect flows, runs and credential names.
    FlowsRead,
    /// Create, change, enable and delete flows; start, cancel and re-run runs.
    FlowsManage,
    /// Create and delete the credentials flows call outside services with.
    FlowCredentialsManage,
    /// Reset another account's password or MFA, or disable it.
    AccountManage,
    /// Read one's own account, sessions and tokens.
    OwnAccountRead,
    /// Change one's own password, create one's own API tokens.
    OwnCredentialsChange,
    /// Enrol (or re-enrol) one's own second factor; the one thing a session
    /// that must enrol before anything else may do.
    OwnMfaEnrol,
}

text_enum!(Action {
    TeamsList => "teams.list",
    TeamsCreate => "teams.create",
    PlatformEventsRead => "platform.events.read",
    IncidentsManage => "platform.incidents.manage",
    EdgeManage => "platform.edge.manage",
    OperatorsManage => "platform.operators.manage",
    KeysRead => "platform.keys.read",
    KeysManage => "platform.keys.manage",
    TeamRead => "team.read",
    TeamManage => "team.manage",
    MembersRead => "team.members.read",
    MembersManage => "team.members.manage",
    BillingRead => "team.billing.read",
    BillingManage => "team.billing.manage",
    HostsRead => "team.hosts.read",
    HostsManage => "team.hosts.manage",
    AppsRead => "team.apps.read",
    AppsOperate => "team.apps.operate",
    AppRecordsRead => "team.records.read",
    AppRecordsWrite => "team.records.write",
    FirewallRead => "team.firewall.read",
    FirewallManage => "team.firewall.manage",
    SecurityEventsRead => "team.events.read",
    EventsIngest => "team.events.ingest",
    ServiceTokensManage => "team.tokens.manage",
    FlowsRead => "team.flows.read",
    FlowsManage => "team.flows.manage",
    FlowCredentialsManage => "team.flows.credentials",
    AccountManage => "account.manage",
    OwnAccountRead => "account.self.read",
    OwnCredentialsChange => "account.self.credentials",
    OwnMfaEnrol => "account.self.mfa",
});

impl Action {
    /// What kind of resource the action applies to.
    pub fn scope(self) -> Scope {
        use Action::*;
        match self {
            TeamsList | TeamsCreate | PlatformEventsRead | IncidentsManage | EdgeManage
            | OperatorsManage | KeysRead | KeysManage => Scope::Platform,
            AccountManage | OwnAccountRead | OwnCredentialsChange | OwnMfaEnrol => Scope::Account,
            _ => Scope::Team,
        }
    }

    /// Sensitive actions (changing MFA, roles, keys, deleting things) need an
    /// MFA check within the step-up window.
    pub fn is_sensitive(self) -> bool {
        use Action::*;
        matches!(
            self,
            TeamManage
                | MembersManage
                | ServiceTokensManage
                | OperatorsManage
                | KeysManage
                | EdgeManage
                | AccountManage
                | OwnCredentialsChange
                | OwnMfaEnrol
        )
    }

    /// The API-token scope that allows this action, or `None` if the action
    /// is for interactive, MFA-verified sessions only.
    pub fn token_scope(self) -> Option<&'static str> {
        use Action::*;
        Some(match self {
            TeamRead => "team:read",
            MembersRead => "members:read",
            BillingRead => "billing:read",
            HostsRead => "hosts:read",
            HostsManage => "hosts:write",
            AppsRead => "apps:read",
            AppsOperate => "apps:write",
            AppRecordsRead => "records:read",
            AppRecordsWrite => "records:write",
            FirewallRead => "firewall:read",
            FirewallManage => "firewall:write",
            SecurityEventsRead => "events:read",
            EventsIngest => "events:ingest",
            OwnAccountRead => "account:read",
            FlowsRead => "flows:read",
            FlowsManage => "flows:write",
            _ => return None,
        })
    }
}

/// Every scope an API token may carry.
pub fn token_scopes() -> BTreeSet<&'static str> {
    Action::ALL.iter().filter_map(|a| a.token_scope()).collect()
}

/// The target of an account action, with the privileges it holds (for the
/// high-privilege rule).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccountTarget {
    /// The account.
    pub id: AccountId,
    /// Its operator roles.
    pub operator_roles: BTreeSet<OperatorRole>,
    /// Its roles per team.
    pub team_roles: BTreeMap<TeamId, BTreeSet<TeamRole>>,
}

/// What an action is done to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Resource {
    /// The platform.
    Platform,
    /// Something owned by one team.
    Team(TeamId),
    /// One account.
    Account(AccountTarget),
}

/// How far a session got through sign-in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SessionStage {
    /// Password accepted; a second factor must be verified next.
    MfaPending,
    /// Password accepted; the account must enrol a second factor next.
    MfaEnrolment,
    /// Fully signed in.
    Complete,
}

text_enum!(SessionStage {
    MfaPending => "mfa_pending",
    MfaEnrolment => "mfa_enrolment",
    Complete => "complete",
});

/// A second factor.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MfaMethod {
    /// A TOTP code.
    Totp,
    /// A recovery code.
    RecoveryCode,
    /// A WebAuthn passkey.
    Passkey,
    /// A device the person chose to remember after a second factor: it
    /// stands in for the factor at sign-in, but never counts as a fresh
    /// check for sensitive actions (step-up).
    RememberedDevice,
}

/// How the principal authenticated this request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Credential {
    /// An interactive session.
    Session {
        /// The session.
        id: SessionId,
        /// How far sign-in got.
        stage: SessionStage,
        /// The second factor verified in this session, if any.
        mfa: Option<MfaMethod>,
        /// Whether that verification is within the step-up window.
        mfa_recent: bool,
        /// Whether the password was entered within the step-up window
        /// (stands in for step-up while an account has no second factor).
        signed_in_recently: bool,
    },
    /// An API token.
    ApiToken {
        /// The token.
        id: ApiTokenId,
        /// Its scopes.
        scopes: BTreeSet<String>,
        /// For a service token, the team it acts for (it then has no
        /// account of its own to read or change).
        service_team: Option<TeamId>,
    },
}

/// Who is asking: an authenticated account and everything the policy needs
/// to know about it, resolved once per request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    /// The account (for a service token, the account that created it).
    pub account: AccountId,
    /// Operator or customer.
    pub kind: AccountKind,
    /// Operator roles held.
    pub operator_roles: BTreeSet<OperatorRole>,
    /// Team roles held, directly or through groups.
    pub team_roles: BTreeMap<TeamId, BTreeSet<TeamRole>>,
    /// Teams whose MFA requirement covers this account, with the strength.
    pub mfa_required_by: BTreeMap<TeamId, MfaStrength>,
    /// Whether the account has a confirmed second factor.
    pub mfa_enrolled: bool,
    /// How this request was authenticated.
    pub credential: Credential,
}

impl Principal {
    /// The session id, when authenticated by a session.
    pub fn session_id(&self) -> Option<SessionId> {
        match &self.credential {
            Credential::Session { id, .. } => Some(*id),
            Credential::ApiToken { .. } => None,
        }
    }

    fn session_mfa(&self) -> Option<MfaMethod> {
        match &self.credential {
            Credential::Session {
                stage: SessionStage::Complete,
                mfa,
                ..
            } => *mfa,
            _ => None,
        }
    }

    /// Whether a sensitive action may go ahead: a second factor verified
    /// within the step-up window, or, for an account without one, a
    /// password entered within it.
    pub fn stepped_up(&self) -> bool {
        match &self.credential {
            Credential::Session {
                mfa_recent,
                signed_in_recently,
                mfa,
                ..
            } => {
                (*mfa_recent && mfa.is_some_and(|m| m != MfaMethod::RememberedDevice))
                    || (!self.mfa_enrolled && *signed_in_recently)
            }
            Credential::ApiToken { .. } => false,
        }
    }
}

/// Why [`authorize`] said no. The caller turns every denial into a 403 (or
/// 401 for an incomplete session) and an `authz.denied` security event.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum DenyReason {
    /// No role of the principal grants this action.
    NoRole,
    /// The resource belongs to a team the principal has no role in.
    OtherTeam,
    /// The action does not apply to this kind of resource.
    WrongResource,
    /// Sign-in is not finished (a second factor is pending or must be enrolled).
    SessionIncomplete,
    /// The role or team requires an MFA-verified session.
    MfaRequired,
    /// The team requires a passkey, and this session used a weaker factor.
    PasskeyRequired,
    /// A sensitive action needs a fresh MFA check (step-up).
    StepUpRequired,
    /// API tokens cannot do this; it needs an interactive session.
    TokenNotAllowed,
    /// The API token lacks the scope.
    TokenScope,
    /// The target account holds more privilege than the principal.
    HigherPrivilegeTarget,
    /// Only a team's service token may do this (event ingest).
    ServiceTokenRequired,
}

impl DenyReason {
    /// A stable name for events and problem details.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::NoRole => "no_role",
            Self::OtherTeam => "other_team",
            Self::WrongResource => "wrong_resource",
            Self::SessionIncomplete => "session_incomplete",
            Self::MfaRequired => "mfa_required",
            Self::PasskeyRequired => "passkey_required",
            Self::StepUpRequired => "step_up_required",
            Self::TokenNotAllowed => "token_not_allowed",
            Self::TokenScope => "token_scope",
            Self::HigherPrivilegeTarget => "higher_privilege_target",
            Self::ServiceTokenRequired => "service_token_required",
        }
    }
}

/// The policy's answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// Go ahead.
    Allow,
    /// Refuse, for this reason.
    Deny(DenyReason),
}

impl Decision {
    /// Whether the decision allows.
    pub fn is_allowed(self) -> bool {
        self == Decision::Allow
    }
}

/// Which actions an operator role grants. Nothing here reaches app records.
pub fn operator_role_allows(role: OperatorRole, action: Action) -> bool {
    use Action::*;
    match role {
        OperatorRole::ServerAdmin => matches!(
            action,
            TeamsList
                | TeamsCreate
                | OperatorsManage
                | KeysRead
                | KeysManage
                | TeamRead
                | HostsRead
                | HostsManage
        ),
        OperatorRole::DatabaseAdmin => matches!(action, AppsRead | AppsOperate),
        OperatorRole::NetworkAdmin => matches!(action, EdgeManage | FirewallRead | FirewallManage),
        OperatorRole::SecurityResponder => matches!(
            action,
            PlatformEventsRead | IncidentsManage | SecurityEventsRead
        ),
        OperatorRole::Support => matches!(
            action,
            TeamsList | TeamRead | MembersRead | HostsRead | AppsRead | FirewallRead
        ),
    }
}

/// Which team-scoped actions a team role grants within its own team.
pub fn team_role_allows(role: TeamRole, action: Action) -> bool {
    use Action::*;
    if action.scope() != Scope::Team {
        return false;
    }
    match role {
        TeamRole::Owner => true,
        TeamRole::Admin => matches!(action, TeamRead | MembersRead | MembersManage),
        // Members use the team's hosts; the systems on them (a firewall, a
        // host agent) feed the team's log through a member service token.
        TeamRole::Member => matches!(
            action,
            TeamRead
                | MembersRead
                | HostsRead
                | AppsRead
                | AppRecordsRead
                | AppRecordsWrite
                | EventsIngest
                | FlowsRead
                | FlowsManage
        ),
        TeamRole::Billing => matches!(action, TeamRead | BillingRead | BillingManage),
        TeamRole::Auditor => matches!(action, TeamRead | MembersRead | SecurityEventsRead),
    }
}

/// The one policy function. Deny by default.
pub fn authorize(principal: &Principal, action: Action, resource: &Resource) -> Decision {
    match decide(principal, action, resource) {
        Ok(()) => Decision::Allow,
        Err(reason) => Decision::Deny(reason),
    }
}

fn decide(p: &Principal, action: Action, resource: &Resource) -> Result<(), DenyReason> {
    // A session that has not finished sign-in may only enrol its first
    // second factor (on itself); verifying a pending factor goes through the
    // MFA calls, not through the policy.
    if let Credential::Session { stage, .. } = &p.credential {
        match stage {
            SessionStage::Complete => {}
            SessionStage::MfaEnrolment
                if action == Action::OwnMfaEnrol
                    && matches!(resource, Resource::Account(t) if t.id == p.account)
                    && !p.mfa_enrolled => {}
            _ => return Err(DenyReason::SessionIncomplete),
        }
    }
    let resource_scope = match resource {
        Resource::Platform => Scope::Platform,
        Resource::Team(_) => Scope::Team,
        Resource::Account(_) => Scope::Account,
    };
    if resource_scope != action.scope() {
        return Err(DenyReason::WrongResource);
    }
    if let Credential::ApiToken { scopes, .. } = &p.credential {
        let Some(needed) = action.token_scope() else {
            return Err(DenyReason::TokenNotAllowed);
        };
        if !scopes.contains(needed) {
            return Err(DenyReason::TokenScope);
        }
    }
    match resource {
        Resource::Platform => operator_grant(p, action)?,
        // Operators act across teams within their role; everyone else only
        // inside teams where they hold a role.
        Resource::Team(team) => match operator_grant(p, action) {
            Ok(()) => {}
            Err(DenyReason::NoRole) => team_grant(p, action, *team)?,
            Err(other) => return Err(other),
        },
        Resource::Account(target) => account_grant(p, action, target)?,
    }
    // Ingested events are written as the token's team, so only a credential
    // bound to one team (a service token; its role then only covers that
    // team, checked above) may ingest: never a session or a personal token.
    if action == Action::EventsIngest
        && !matches!(
            p.credential,
            Credential::ApiToken {
                service_team: Some(_),
                ..
            }
        )
    {
        return Err(DenyReason::ServiceTokenRequired);
    }
    if action.is_sensitive() && !p.stepped_up() {
        // A first enrolment is the one sensitive action an account without
        // any second factor may take right after its password was entered.
        return Err(DenyReason::StepUpRequired);
    }
    Ok(())
}

/// An operator role grants the action; operators always need an
/// MFA-verified interactive session.
fn operator_grant(p: &Principal, action: Action) -> Result<(), DenyReason> {
    if p.kind != AccountKind::Operator
        || !p
            .operator_roles
            .iter()
            .any(|r| operator_role_allows(*r, action))
    {
        return Err(DenyReason::NoRole);
    }
    match &p.credential {
        Credential::ApiToken { .. } => Err(DenyReason::TokenNotAllowed),
        Credential::Session { .. } if p.session_mfa().is_none() => Err(DenyReason::MfaRequired),
        Credential::Session { .. } => Ok(()),
    }
}

fn team_grant(p: &Principal, action: Action, team: TeamId) -> Result<(), DenyReason> {
    let Some(roles) = p.team_roles.get(&team) else {
        return Err(if p.team_roles.is_empty() && p.operator_roles.is_empty() {
            DenyReason::NoRole
        } else {
            DenyReason::OtherTeam
        });
    };
    if !roles.iter().any(|r| team_role_allows(*r, action)) {
        return Err(DenyReason::NoRole);
    }
    // An operator holds a team role only through access the team granted
    // for a while; like every operator action it needs an MFA-verified
    // interactive session.
    if p.kind == AccountKind::Operator {
        match &p.credential {
            Credential::ApiToken { .. } => return Err(DenyReason::TokenNotAllowed),
            Credential::Session { .. } if p.session_mfa().is_none() => {
                return Err(DenyReason::MfaRequired);
            }
            Credential::Session { .. } => {}
        }
    }
    team_mfa_satisfied(p, team)
}

fn team_mfa_satisfied(p: &Principal, team: TeamId) -> Result<(), DenyReason> {
    let Some(strength) = p.mfa_required_by.get(&team) else {
        return Ok(());
    };
    match &p.credential {
        // A token was created by an account that met the team's rule when it
        // signed in; tokens are limited by scope instead.
        Credential::ApiToken { .. } => Ok(()),
        Credential::Session { .. } => match (p.session_mfa(), strength) {
            (None, _) => Err(DenyReason::MfaRequired),
            (Some(MfaMethod::Passkey), _) | (Some(_), MfaStrength::Any) => Ok(()),
            (Some(_), MfaStrength::PasskeyOnly) => Err(DenyReason::PasskeyRequired),
        },
    }
}

/// Whether the account must use MFA (operators always; customers when a
/// team requires it).
fn mfa_mandatory(p: &Principal) -> bool {
    p.kind == AccountKind::Operator || !p.mfa_required_by.is_empty()
}

/// Account actions: one's own account, or another's under the
/// high-privilege rule.
fn account_grant(p: &Principal, action: Action, target: &AccountTarget) -> Result<(), DenyReason> {
    if let Credential::ApiToken {
        service_team: Some(_),
        ..
    } = &p.credential
    {
        return Err(DenyReason::TokenNotAllowed);
    }
    match action {
        Action::OwnAccountRead | Action::OwnMfaEnrol if target.id == p.account => Ok(()),
        Action::OwnCredentialsChange if target.id == p.account => {
            // Whoever must use MFA changes credentials (and mints tokens,
            // which do not ask for MFA later) only from an MFA-verified
            // session.
            if mfa_mandatory(p) && p.session_mfa().is_none() {
                Err(DenyReason::MfaRequired)
            } else {
                Ok(())
            }
        }
        Action::OwnAccountRead | Action::OwnCredentialsChange | Action::OwnMfaEnrol => {
            Err(DenyReason::NoRole)
        }
        Action::AccountManage => {
            if target.id == p.account {
                // One's own credentials go through the self-service path,
                // which asks for the current password.
                return Err(DenyReason::NoRole);
            }
            if !target.operator_roles.is_empty() {
                // Operator accounts: only an operator who may manage operators
                // and who holds every role the target holds.
                operator_grant(p, Action::OperatorsManage)?;
                if !target.operator_roles.is_subset(&p.operator_roles) {
                    return Err(DenyReason::HigherPrivilegeTarget);
                }
                return Ok(());
            }
            if target.team_roles.is_empty() {
                return Err(DenyReason::NoRole);
            }
            // Customers: the principal must be able to manage members in
            // every team the target belongs to, and must own every team the
            // target owns. Operators manage customer accounts only through
            // time-boxed access a team granted them (never as owners).
            for (team, roles) in &target.team_roles {
                team_grant(p, Action::MembersManage, *team)?;
                let principal_owns = p
                    .team_roles
                    .get(team)
                    .is_some_and(|r| r.contains(&TeamRole::Owner));
                if roles.contains(&TeamRole::Owner) && !principal_owns {
                    return Err(DenyReason::HigherPrivilegeTarget);
                }
            }
            Ok(())
        }
        _ => Err(DenyReason::WrongResource),
    }
}

#[cfg(test)]
mod tests;
