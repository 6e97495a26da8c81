//! The policy function's tests: the whole (role, action) matrix and the
//! rules around it (sessions, tokens, MFA, high-privilege targets).

use super::*;

fn session(mfa: Option<MfaMethod>, recent: bool) -> Credential {
    Credential::Session {
        id: SessionId::new(),
        stage: SessionStage::Complete,
        mfa,
        mfa_recent: recent,
        signed_in_recently: recent,
    }
}

fn customer(team: TeamId, role: TeamRole) -> Principal {
    Principal {
        account: AccountId::new(),
        kind: AccountKind::Customer,
        operator_roles: BTreeSet::new(),
        team_roles: BTreeMap::from([(team, BTreeSet::from([role]))]),
        mfa_required_by: BTreeMap::new(),
        mfa_enrolled: true,
        credential: session(Some(MfaMethod::Totp), true),
    }
}

fn operator(role: OperatorRole) -> Principal {
    Principal {
        account: AccountId::new(),
        kind: AccountKind::Operator,
        operator_roles: BTreeSet::from([role]),
        team_roles: BTreeMap::new(),
        mfa_required_by: BTreeMap::new(),
        mfa_enrolled: true,
        credential: session(Some(MfaMethod::Totp), true),
    }
}

fn target_of(p: &Principal) -> Resource {
    Resource::Account(AccountTarget {
        id: p.account,
        operator_roles: p.operator_roles.clone(),
        team_roles: p.team_roles.clone(),
    })
}

const OP: [OperatorRole; 5] = [
    OperatorRole::ServerAdmin,
    OperatorRole::DatabaseAdmin,
    OperatorRole::NetworkAdmin,
    OperatorRole::SecurityResponder,
    OperatorRole::Support,
];
const TEAM: [TeamRole; 5] = [
    TeamRole::Owner,
    TeamRole::Admin,
    TeamRole::Member,
    TeamRole::Billing,
    TeamRole::Auditor,
];

/// The permission matrix, written out by hand as data. Columns:
/// server_admin, database_admin, network_admin, security_responder,
/// support | owner, admin, member, billing, auditor. `Y` allows.
/// Team roles act in their own team; operators on any team.
const MATRIX: &[(Action, &str)] = &[
    (Action::TeamsList, "Y...Y|....."),
    (Action::TeamsCreate, "Y....|....."),
    (Action::PlatformEventsRead, "...Y.|....."),
    (Action::IncidentsManage, "...Y.|....."),
    (Action::EdgeManage, "..Y..|....."),
    (Action::OperatorsManage, "Y....|....."),
    (Action::KeysRead, "Y....|....."),
    (Action::KeysManage, "Y....|....."),
    (Action::TeamRead, "Y...Y|YYYYY"),
    (Action::TeamManage, ".....|Y...."),
    (Action::MembersRead, "....Y|YYY.Y"),
    (Action::MembersManage, ".....|YY..."),
    (Action::BillingRead, ".....|Y..Y."),
    (Action::BillingManage, ".....|Y..Y."),
    (Action::HostsRead, "Y...Y|Y.Y.."),
    (Action::HostsManage, "Y....|Y...."),
    (Action::AppsRead, ".Y..Y|Y.Y.."),
    (Action::AppsOperate, ".Y...|Y...."),
    (Action::AppRecordsRead, ".....|Y.Y.."),
    (Action::AppRecordsWrite, ".....|Y.Y.."),
    (Action::FirewallRead, "..Y.Y|Y...."),
    (Action::FirewallManage, "..Y..|Y...."),
    (Action::SecurityEventsRead, "...Y.|Y...Y"),
    // Sessions never ingest: only a team's service token with the
    // `events:ingest` scope (see `only_a_teams_service_token_ingests`).
    (Action::EventsIngest, ".....|....."),
    (Action::ServiceTokensManage, ".....|Y...."),
    // Kura Connect: flows act on the team's data, so operators do not.
    (Action::FlowsRead, ".....|Y.Y.."),
    (Action::FlowsManage, ".....|Y.Y.."),
    (Action::FlowCredentialsManage, ".....|Y...."),
    // Self-service on one's own account: every role.
    (Action::OwnAccountRead, "YYYYY|YYYYY"),
    (Action::OwnCredentialsChange, "YYYYY|YYYYY"),
    (Action::OwnMfaEnrol, "YYYYY|YYYYY"),
];

fn resource_for(action: Action, p: &Principal, team: TeamId) -> Resource {
    match action.scope() {
        Scope::Platform => Resource::Platform,
        Scope::Team => Resource::Team(team),
        Scope::Account => target_of(p),
    }
}

#[test]
fn every_role_and_action_pair_matches_the_matrix() {
    let covered: BTreeSet<Action> = MATRIX.iter().map(|(a, _)| *a).collect();
    for a in Action::ALL {
        assert!(
            covered.contains(a) || *a == Action::AccountManage,
            "{a} is missing from the matrix"
        );
    }
    let mut cells = 0;
    for (action, row) in MATRIX {
        let row: Vec<bool> = row
            .chars()
            .filter(|c| *c != '|')
            .map(|c| c == 'Y')
            .collect();
        assert_eq!(row.len(), 10, "{action}");
        for (i, role) in OP.iter().enumerate() {
            let p = operator(*role);
            let team = TeamId::new();
            let got = authorize(&p, *action, &resource_for(*action, &p, team));
            assert_eq!(got.is_allowed(), row[i], "{role} / {action}: {got:?}");
            cells += 1;
        }
        for (i, role) in TEAM.iter().enumerate() {
            let team = TeamId::new();
            let p = customer(team, *role);
            let got = authorize(&p, *action, &resource_for(*action, &p, team));
            assert_eq!(got.is_allowed(), row[5 + i], "{role} / {action}: {got:?}");
            cells += 1;
        }
    }
    assert_eq!(cells, 10 * (Action::ALL.len() - 1));
}

#[test]
fn only_a_teams_service_token_ingests() {
    let (team, other) = (TeamId::new(), TeamId::new());
    let service = |role: TeamRole, scopes: &[&str]| {
        let mut p = customer(team, role);
        p.credential = Credential::ApiToken {
            id: ApiTokenId::new(),
            scopes: scopes.iter().map(|s| (*s).to_owned()).collect(),
            service_team: Some(team),
        };
        p
    };
    let ingest = |p: &Principal, t: TeamId| authorize(p, Action::EventsIngest, &Resource::Team(t));
    let member = service(TeamRole::Member, &["events:ingest"]);
    assert!(ingest(&member, team).is_allowed());
    assert_eq!(
        ingest(&member, other),
        Decision::Deny(DenyReason::OtherTeam)
    );
    assert_eq!(
        ingest(&service(TeamRole::Member, &["events:read"]), team),
        Decision::Deny(DenyReason::TokenScope)
    );
    for role in [TeamRole::Admin, TeamRole::Billing, TeamRole::Auditor] {
        assert_eq!(
            ingest(&service(role, &["events:ingest"]), team),
            Decision::Deny(DenyReason::NoRole),
            "{role}"
        );
    }
    // A personal token (no team of its own) and a session never ingest.
    let mut personal = customer(team, TeamRole::Owner);
    personal.credential = Credential::ApiToken {
        id: ApiTokenId::new(),
        scopes: BTreeSet::from(["events:ingest".to_owned()]),
        service_team: None,
    };
    assert_eq!(
        ingest(&personal, team),
        Decision::Deny(DenyReason::ServiceTokenRequired)
    );
    assert_eq!(
        ingest(&customer(team, TeamRole::Owner), team),
        Decision::Deny(DenyReason::ServiceTokenRequired)
    );
    assert!(token_scopes().contains("events:ingest"));
}

#[test]
fn team_roles_never_reach_another_team() {
    let (a, b) = (TeamId::new(), TeamId::new());
    for role in TEAM {
        let p = customer(a, role);
        for action in Action::ALL.iter().filter(|a| a.scope() == Scope::Team) {
            assert_eq!(
                authorize(&p, *action, &Resource::Team(b)),
                Decision::Deny(DenyReason::OtherTeam),
                "{role} / {action}"
            );
        }
    }
}

#[test]
fn operators_need_mfa_and_never_reach_records() {
    for role in OP {
        let mut p = operator(role);
        for action in [Action::AppRecordsRead, Action::AppRecordsWrite] {
            assert!(!authorize(&p, action, &Resource::Team(TeamId::new())).is_allowed());
        }
        p.credential = session(None, true);
        for action in Action::ALL.iter().filter(|a| a.scope() != Scope::Account) {
            let r = resource_for(*action, &p, TeamId::new());
            assert!(
                !authorize(&p, *action, &r).is_allowed(),
                "{role} / {action}"
            );
        }
    }
    let mut p = operator(OperatorRole::ServerAdmin);
    p.credential = session(None, true);
    assert_eq!(
        authorize(&p, Action::HostsManage, &Resource::Team(TeamId::new())),
        Decision::Deny(DenyReason::MfaRequired)
    );
    p.credential = Credential::ApiToken {
        id: ApiTokenId::new(),
        scopes: BTreeSet::from(["hosts:write".to_owned()]),
        service_team: None,
    };
    assert_eq!(
        authorize(&p, Action::HostsManage, &Resource::Team(TeamId::new())),
        Decision::Deny(DenyReason::TokenNotAllowed)
    );
}

#[test]
fn incomplete_sessions_may_only_enrol() {
    let team = TeamId::new();
    let mut p = customer(team, TeamRole::Owner);
    p.mfa_enrolled = false;
    p.credential = Credential::Session {
        id: SessionId::new(),
        stage: SessionStage::MfaEnrolment,
        mfa: None,
        mfa_recent: false,
        signed_in_recently: true,
    };
    assert!(authorize(&p, Action::OwnMfaEnrol, &target_of(&p)).is_allowed());
    // Not a password change or a token, which would outlive the rule.
    assert_eq!(
        authorize(&p, Action::OwnCredentialsChange, &target_of(&p)),
        Decision::Deny(DenyReason::SessionIncomplete)
    );
    assert_eq!(
        authorize(&p, Action::TeamRead, &Resource::Team(team)),
        Decision::Deny(DenyReason::SessionIncomplete)
    );
    p.credential = Credential::Session {
        id: SessionId::new(),
        stage: SessionStage::MfaPending,
        mfa: None,
        mfa_recent: false,
        signed_in_recently: true,
    };
    assert_eq!(
        authorize(&p, Action::OwnMfaEnrol, &target_of(&p)),
        Decision::Deny(DenyReason::SessionIncomplete)
    );
    // A complete session without MFA, of an account a team requires MFA
    // of, cannot change credentials or mint tokens either.
    p.mfa_required_by.insert(team, MfaStrength::Any);
    p.credential = session(None, true);
    assert_eq!(
        authorize(&p, Action::OwnCredentialsChange, &target_of(&p)),
        Decision::Deny(DenyReason::MfaRequired)
    );
    assert!(authorize(&p, Action::OwnMfaEnrol, &target_of(&p)).is_allowed());
    // Service tokens have no account of their own.
    p.credential = Credential::ApiToken {
        id: ApiTokenId::new(),
        scopes: BTreeSet::from(["account:read".to_owned()]),
        service_team: Some(team),
    };
    assert_eq!(
        authorize(&p, Action::OwnAccountRead, &target_of(&p)),
        Decision::Deny(DenyReason::TokenNotAllowed)
    );
    p.credential = Credential::ApiToken {
        id: ApiTokenId::new(),
        scopes: BTreeSet::from(["account:read".to_owned()]),
        service_team: None,
    };
    assert!(authorize(&p, Action::OwnAccountRead, &target_of(&p)).is_allowed());
}

#[test]
fn sensitive_actions_need_step_up() {
    let team = TeamId::new();
    let mut p = customer(team, TeamRole::Owner);
    p.credential = session(Some(MfaMethod::Totp), false);
    assert_eq!(
        authorize(&p, Action::MembersManage, &Resource::Team(team)),
        Decision::Deny(DenyReason::StepUpRequired)
    );
    assert!(authorize(&p, Action::HostsManage, &Resource::Team(team)).is_allowed());
    p.credential = session(Some(MfaMethod::Totp), true);
    assert!(authorize(&p, Action::MembersManage, &Resource::Team(team)).is_allowed());
}

#[test]
fn team_mfa_requirements_and_strength_apply() {
    let team = TeamId::new();
    let mut p = customer(team, TeamRole::Member);
    p.mfa_required_by.insert(team, MfaStrength::Any);
    p.credential = session(None, true);
    assert_eq!(
        authorize(&p, Action::HostsRead, &Resource::Team(team)),
        Decision::Deny(DenyReason::MfaRequired)
    );
    p.credential = session(Some(MfaMethod::Totp), true);
    assert!(authorize(&p, Action::HostsRead, &Resource::Team(team)).is_allowed());
    p.mfa_required_by.insert(team, MfaStrength::PasskeyOnly);
    assert_eq!(
        authorize(&p, Action::HostsRead, &Resource::Team(team)),
        Decision::Deny(DenyReason::PasskeyRequired)
    );
    p.credential = session(Some(MfaMethod::Passkey), true);
    assert!(authorize(&p, Action::HostsRead, &Resource::Team(team)).is_allowed());
}

#[test]
fn tokens_are_limited_to_their_scopes() {
    let team = TeamId::new();
    let mut p = customer(team, TeamRole::Owner);
    p.credential = Credential::ApiToken {
        id: ApiTokenId::new(),
        scopes: BTreeSet::from(["hosts:read".to_owned()]),
        service_team: None,
    };
    assert!(authorize(&p, Action::HostsRead, &Resource::Team(team)).is_allowed());
    assert_eq!(
        authorize(&p, Action::HostsManage, &Resource::Team(team)),
        Decision::Deny(DenyReason::TokenScope)
    );
    assert_eq!(
        authorize(&p, Action::MembersManage, &Resource::Team(team)),
        Decision::Deny(DenyReason::TokenNotAllowed)
    );
}

#[test]
fn only_equal_or_higher_privilege_manages_high_privilege_accounts() {
    let team = TeamId::new();
    let owner = customer(team, TeamRole::Owner);
    let admin = customer(team, TeamRole::Admin);
    let member = customer(team, TeamRole::Member);
    let other_owner = customer(team, TeamRole::Owner);
    let m = Action::AccountManage;
    // An admin (help desk) can reset a member but not an owner.
    assert!(authorize(&admin, m, &target_of(&member)).is_allowed());
    assert_eq!(
        authorize(&admin, m, &target_of(&owner)),
        Decision::Deny(DenyReason::HigherPrivilegeTarget)
    );
    // An owner can reset another owner of the same team, and an admin.
    assert!(authorize(&owner, m, &target_of(&other_owner)).is_allowed());
    assert!(authorize(&owner, m, &target_of(&admin)).is_allowed());
    // Members cannot reset anyone; nobody resets themselves this way.
    assert_eq!(
        authorize(&member, m, &target_of(&admin)),
        Decision::Deny(DenyReason::NoRole)
    );
    assert_eq!(
        authorize(&owner, m, &target_of(&owner)),
        Decision::Deny(DenyReason::NoRole)
    );
    // A target that also owns another team is out of an admin's reach,
    // and an owner of one team cannot take over the other team's owner.
    let mut two_teams = member.clone();
    let elsewhere = TeamId::new();
    two_teams
        .team_roles
        .insert(elsewhere, BTreeSet::from([TeamRole::Owner]));
    assert_eq!(
        authorize(&owner, m, &target_of(&two_teams)),
        Decision::Deny(DenyReason::OtherTeam)
    );
    // Operators: support cannot reset a server admin; a server admin
    // with fewer roles than the target cannot either; with all, it can.
    let support = operator(OperatorRole::Support);
    let admin_op = operator(OperatorRole::ServerAdmin);
    let mut full_op = operator(OperatorRole::ServerAdmin);
    full_op.operator_roles = OP.into_iter().collect();
    assert_eq!(
        authorize(&support, m, &target_of(&admin_op)),
        Decision::Deny(DenyReason::NoRole)
    );
    assert_eq!(
        authorize(&admin_op, m, &target_of(&full_op)),
        Decision::Deny(DenyReason::HigherPrivilegeTarget)
    );
    assert!(authorize(&full_op, m, &target_of(&admin_op)).is_allowed());
    // "Equal or higher" is by roles held: a server admin does not hold
    // the support role, so it cannot take over a support account either.
    assert_eq!(
        authorize(&admin_op, m, &target_of(&support)),
        Decision::Deny(DenyReason::HigherPrivilegeTarget)
    );
    // Operators never manage customer accounts.
    assert_eq!(
        authorize(&full_op, m, &target_of(&member)),
        Decision::Deny(DenyReason::OtherTeam)
    );
    // And it is sensitive: without a recent MFA check it is refused.
    let mut stale = owner.clone();
    stale.credential = session(Some(MfaMethod::Totp), false);
    assert_eq!(
        authorize(&stale, m, &target_of(&admin)),
        Decision::Deny(DenyReason::StepUpRequired)
    );
}
