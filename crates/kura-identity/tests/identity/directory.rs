//! The listings the console's team and operator pages show: every team
//! (operators with `TeamsList` only) and a team's groups with their members
//! and roles (anyone who may read the team's members, in that team only).

use super::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_operators_list_every_team() {
    let env = env().await;
    let op = first_operator(&env).await;
    let (_zeta, owner) = team_with_owner(&env, &op, "Zeta", "owner@zeta.test").await;
    let (_alpha, _) = team_with_owner(&env, &op, "Alpha", "owner@alpha.test").await;
    let pop = env.principal(&op.token).await;
    let names: Vec<String> = ok(env.id.all_teams(&pop).await)
        .into_iter()
        .map(|t| t.name)
        .collect();
    assert_eq!(names, ["Alpha", "Zeta"]);
    // A team owner is no operator: refused, and the refusal recorded.
    let po = env.principal(&owner.token).await;
    let (e, actions) = err(env.id.all_teams(&po).await);
    assert!(
        matches!(e, IdentityError::Denied(DenyReason::NoRole)),
        "{e:?}"
    );
    assert_eq!(actions, ["authz.denied"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn group_details_show_members_and_roles_to_the_team_only() {
    let env = env().await;
    let op = first_operator(&env).await;
    let (team, owner) = team_with_owner(&env, &op, "Acme", "owner@acme.test").await;
    let (other, other_owner) = team_with_owner(&env, &op, "Beta", "owner@beta.test").await;
    let member = add_member(&env, &owner, team, "m@acme.test", TeamRole::Member).await;
    let po = env.principal(&owner.token).await;
    let g = ok(env.id.create_group(&po, team, "auditors").await);
    let empty = ok(env.id.create_group(&po, team, "empty").await);
    ok(env
        .id
        .grant_team_role(&po, team, GrantSubject::Group(g), TeamRole::Auditor)
        .await);
    ok(env
        .id
        .set_group_member(&po, team, g, member.account, true)
        .await);
    let details = ok(env.id.group_details(&po, team).await);
    assert_eq!(details.len(), 2);
    let auditors = details.iter().find(|d| d.group.id == g).unwrap();
    assert_eq!(auditors.group.name, "auditors");
    assert_eq!(auditors.members, [member.account]);
    assert_eq!(auditors.roles, BTreeSet::from([TeamRole::Auditor]));
    let none = details.iter().find(|d| d.group.id == empty).unwrap();
    assert!(none.members.is_empty() && none.roles.is_empty());
    // A member reads them too; another team's owner cannot.
    let pm = env.principal(&member.token).await;
    assert_eq!(ok(env.id.group_details(&pm, team).await), details);
    let pb = env.principal(&other_owner.token).await;
    let (e, _) = err(env.id.group_details(&pb, team).await);
    assert!(matches!(e, IdentityError::Denied(_)), "{e:?}");
    assert!(ok(env.id.group_details(&pb, other).await).is_empty());
    // Removing the member shows at once.
    ok(env
        .id
        .set_group_member(&po, team, g, member.account, false)
        .await);
    let details = ok(env.id.group_details(&po, team).await);
    let auditors = details.iter().find(|d| d.group.id == g).unwrap();
    assert!(auditors.members.is_empty());
}
