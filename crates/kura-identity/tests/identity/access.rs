//! Time-boxed operator access to a team: only the team's owner grants it,
//! it gives one team role and never ownership, it ends by itself or when
//! revoked, and it never reaches another team.

use kura_identity::{IdentityError, MAX_OPERATOR_ACCESS};

use super::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn operators_act_in_a_team_only_while_the_team_lets_them() {
    let env = env().await;
    let op = first_operator(&env).await;
    let (team, owner) = team_with_owner(&env, &op, "Acme", "owner@acme.test").await;
    let (other_team, other_owner) = team_with_owner(&env, &op, "Beta", "owner@beta.test").await;
    let member = add_member(&env, &owner, team, "m@acme.test", TeamRole::Member).await;
    let other_member = add_member(
        &env,
        &other_owner,
        other_team,
        "m@beta.test",
        TeamRole::Member,
    )
    .await;
    let pop = env.principal(&op.token).await;

    // Without a grant, an operator cannot touch a team's accounts.
    let (e, _) = err(env
        .id
        .reset_password(&pop, member.account, &secret("operator-was-here-1"))
        .await);
    assert!(
        matches!(e, IdentityError::Denied(DenyReason::OtherTeam)),
        "{e:?}"
    );

    // Bad grants change nothing.
    let po = env.principal(&owner.token).await;
    let grant = |role, duration: Duration, reason: &'static str| {
        let id = env.id.clone();
        let po = po.clone();
        let who = op.account;
        async move {
            id.grant_operator_access(&po, team, who, role, duration, reason)
                .await
        }
    };
    for (role, duration, reason) in [
        (TeamRole::Owner, Duration::hours(1), "ticket 1"),
        (TeamRole::Billing, Duration::hours(1), "ticket 1"),
        (
            TeamRole::Admin,
            MAX_OPERATOR_ACCESS + Duration::minutes(1),
            "ticket 1",
        ),
        (TeamRole::Admin, Duration::minutes(1), "ticket 1"),
        (TeamRole::Admin, Duration::hours(1), "   "),
    ] {
        let (e, _) = err(grant(role, duration, reason).await);
        assert!(matches!(e, IdentityError::InvalidInput(_)), "{e:?}");
    }
    let (e, _) = err(env
        .id
        .grant_operator_access(
            &po,
            team,
            member.account,
            TeamRole::Admin,
            Duration::hours(1),
            "x",
        )
        .await);
    assert!(matches!(e, IdentityError::NotFound("operator")), "{e:?}");
    assert!(ok(env.id.operator_access(&po, team).await).is_empty());
    // Only the owner grants.
    let pm = env.principal(&member.token).await;
    let (e, actions) = err(env
        .id
        .grant_operator_access(
            &pm,
            team,
            op.account,
            TeamRole::Admin,
            Duration::hours(1),
            "x",
        )
        .await);
    assert!(matches!(e, IdentityError::Denied(_)), "{e:?}");
    assert_eq!(actions, ["authz.denied"]);

    // Granted for five minutes, as a team admin.
    let granted = grant(
        TeamRole::Admin,
        Duration::minutes(5),
        "ticket 4711: locked out",
    )
    .await;
    assert_eq!(granted.actions(), ["team.operator_access.granted"]);
    assert_eq!(
        granted.events[0].detail_value("reason"),
        Some("ticket 4711: locked out")
    );
    let granted = ok(granted);
    assert!(granted.active);
    let pop = env.principal(&op.token).await;
    ok(env
        .id
        .reset_password(&pop, member.account, &secret("operator-was-here-1"))
        .await);
    // An admin, not an owner: the owner stays out of reach.
    let (e, _) = err(env
        .id
        .reset_password(&pop, owner.account, &secret("operator-was-here-2"))
        .await);
    assert!(
        matches!(e, IdentityError::Denied(DenyReason::HigherPrivilegeTarget)),
        "{e:?}"
    );
    // And only in this team.
    let (e, _) = err(env
        .id
        .reset_password(&pop, other_member.account, &secret("operator-was-here-3"))
        .await);
    assert!(
        matches!(e, IdentityError::Denied(DenyReason::OtherTeam)),
        "{e:?}"
    );

    // It ends by itself.
    env.advance(Duration::minutes(6));
    let pop = env.principal(&op.token).await;
    let (e, _) = err(env
        .id
        .reset_password(&pop, member.account, &secret("operator-was-here-4"))
        .await);
    assert!(
        matches!(e, IdentityError::Denied(DenyReason::OtherTeam)),
        "{e:?}"
    );
    let listed = ok(env.id.operator_access(&po, team).await);
    assert_eq!(listed.len(), 1);
    assert!(!listed[0].active);

    // Or when the owner ends it.
    let po = env.fresh_principal(&owner.email).await;
    let g = ok(env
        .id
        .grant_operator_access(
            &po,
            team,
            op.account,
            TeamRole::Member,
            Duration::hours(1),
            "x",
        )
        .await);
    let pop = env.principal(&op.token).await;
    ok(env
        .id
        .check(&pop, Action::AppRecordsRead, &Resource::Team(team)));
    let revoked = env.id.revoke_operator_access(&po, team, &g.id).await;
    assert_eq!(revoked.actions(), ["team.operator_access.revoked"]);
    ok(revoked);
    let (e, _) = err(env.id.revoke_operator_access(&po, team, &g.id).await);
    assert!(matches!(e, IdentityError::NotFound(_)), "{e:?}");
    let pop = env.principal(&op.token).await;
    let (e, _) = err(env
        .id
        .check(&pop, Action::AppRecordsRead, &Resource::Team(team)));
    assert!(matches!(e, IdentityError::Denied(_)), "{e:?}");
}
