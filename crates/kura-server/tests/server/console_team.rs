//! The console's team and operator overviews over HTTP: a team's groups and
//! roles (create, add and remove members, grant and revoke roles, each as
//! Kura ID's policy allows) and the operators' platform overview.

use serde_json::Value;

use super::console_pages::Console;
use super::console_records::member;
use super::kura_id_api::{get, tenant};

/// The roles the API reports for `email` in the team.
async fn roles_of(c: &Console, team: &str, token: &str, email: &str) -> Vec<String> {
    let r = get(&c.server, &format!("/api/v1/teams/{team}/members"), token).await;
    assert_eq!(r.status, 200, "{}", r.text);
    let members = r.json();
    let m = members
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["account"]["email"] == email)
        .unwrap_or_else(|| panic!("{email} in {members}"))
        .clone();
    m["roles"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(Value::as_str)
        .map(str::to_owned)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn groups_get_members_and_roles_through_the_console() {
    let c = Console::boot().await;
    let t = tenant(&c.server, &c.op, "acme").await;
    let other = tenant(&c.server, &c.op, "beta").await;
    let owner = t.owner.as_str();
    let m = member(&c, &t.id, owner, "m@acme.test").await;
    let groups = format!("/console/teams/{}/groups", t.id);
    let page = c.get(owner, &groups).await;
    assert_eq!(page.status, 200, "{}", page.body);
    assert!(page.body.contains("id=\"no-groups\""), "the empty state");
    let csrf = page.csrf();

    // A blank name is refused beside the field; a good one creates.
    let r = c
        .post(owner, &groups, &[("csrf", &csrf), ("name", "  ")])
        .await;
    assert_eq!(r.status, 422);
    assert!(r.has_error("f-name"), "{}", r.body);
    let r = c
        .post(owner, &groups, &[("csrf", &csrf), ("name", "auditors")])
        .await;
    assert_eq!(r.status, 303, "{}", r.body);
    // The same name again: refused beside the field, the input kept.
    let r = c
        .post(owner, &groups, &[("csrf", &csrf), ("name", "auditors")])
        .await;
    assert_eq!(r.status, 422, "{}", r.body);
    assert!(r.has_error("f-name") && r.body.contains("value=\"auditors\""));
    let page = c.get(owner, &groups).await;
    let ids = page.ids_after(&format!("{groups}/"));
    assert_eq!(ids.len(), 1, "one group: {ids:?}");
    let group = format!("{groups}/{}", ids[0]);

    // Add the member and give the group the auditor role: the member now
    // holds it.
    let member_id = {
        let r = get(&c.server, "/api/v1/me", &m).await;
        r.json()["id"].as_str().unwrap().to_owned()
    };
    let r = c
        .post(
            owner,
            &format!("{group}/members"),
            &[("csrf", &csrf), ("op", "add"), ("account", &member_id)],
        )
        .await;
    assert_eq!(r.status, 303, "{}", r.body);
    let r = c
        .post(
            owner,
            &format!("{group}/roles"),
            &[("csrf", &csrf), ("op", "grant"), ("role", "auditor")],
        )
        .await;
    assert_eq!(r.status, 303, "{}", r.body);
    assert!(
        roles_of(&c, &t.id, owner, "m@acme.test")
            .await
            .contains(&"auditor".to_owned())
    );
    let page = c.get(owner, &groups).await;
    assert!(page.body.contains("m@acme.test") && page.body.contains("Revoke auditor"));

    // A member sees the groups but gets no forms, and a post is refused.
    let seen = c.get(&m, &groups).await;
    assert_eq!(seen.status, 200, "{}", seen.body);
    assert!(seen.body.contains("auditors") && !seen.body.contains("Create a group"));
    let r = c
        .post(
            &m,
            &format!("{group}/roles"),
            &[("csrf", &seen.csrf()), ("op", "grant"), ("role", "owner")],
        )
        .await;
    assert_eq!(r.status, 403, "{}", r.body);
    // Another team's owner cannot touch this team's group.
    let r = c
        .post(
            &other.owner,
            &format!("{group}/members"),
            &[
                ("csrf", &c.get(&other.owner, "/console/").await.csrf()),
                ("op", "remove"),
                ("account", &member_id),
            ],
        )
        .await;
    assert_eq!(r.status, 403, "{}", r.body);
    // A post without the CSRF token changes nothing.
    let r = c
        .post(
            owner,
            &format!("{group}/roles"),
            &[("op", "revoke"), ("role", "auditor")],
        )
        .await;
    assert_eq!(r.status, 403);
    assert!(
        roles_of(&c, &t.id, owner, "m@acme.test")
            .await
            .contains(&"auditor".to_owned())
    );
    // An unknown role is refused.
    let r = c
        .post(
            owner,
            &format!("{group}/roles"),
            &[("csrf", &csrf), ("op", "grant"), ("role", "emperor")],
        )
        .await;
    assert_eq!(r.status, 400);

    // Revoke the role and remove the member: both show at once.
    let r = c
        .post(
            owner,
            &format!("{group}/roles"),
            &[("csrf", &csrf), ("op", "revoke"), ("role", "auditor")],
        )
        .await;
    assert_eq!(r.status, 303, "{}", r.body);
    assert!(
        !roles_of(&c, &t.id, owner, "m@acme.test")
            .await
            .contains(&"auditor".to_owned())
    );
    let r = c
        .post(
            owner,
            &format!("{group}/members"),
            &[("csrf", &csrf), ("op", "remove"), ("account", &member_id)],
        )
        .await;
    assert_eq!(r.status, 303, "{}", r.body);
    // Removing again: the error is shown on the group, nothing changes.
    let r = c
        .post(
            owner,
            &format!("{group}/members"),
            &[("csrf", &csrf), ("op", "remove"), ("account", &member_id)],
        )
        .await;
    assert_eq!(r.status, 404, "{}", r.body);
    assert!(r.body.contains("Nothing was changed"), "{}", r.body);
    let actions = c.actions().await;
    for a in [
        "team.group.created",
        "team.group.member_added",
        "team.role.granted",
        "team.role.revoked",
        "team.group.member_removed",
    ] {
        assert_eq!(
            actions.iter().filter(|x| *x == a).count(),
            1,
            "{a}: {actions:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn operators_see_every_team_on_the_platform_overview() {
    let c = Console::boot().await;
    let a = tenant(&c.server, &c.op, "acme").await;
    let b = tenant(&c.server, &c.op, "beta").await;
    // One host in acme, made by its owner.
    let base = format!("/console/teams/{}", a.id);
    let csrf = c.get(&a.owner, &base).await.csrf();
    let r = c
        .post(
            &a.owner,
            &format!("{base}/hosts"),
            &[("csrf", &csrf), ("name", "main")],
        )
        .await;
    assert_eq!(r.status, 303, "{}", r.body);

    let op = c.op.token.clone();
    let page = c.get(&op, "/console/operator/platform").await;
    assert_eq!(page.status, 200, "{}", page.body);
    assert!(page.body.contains("id=\"team-count\">2<"), "{}", page.body);
    assert!(page.body.contains("id=\"host-count\">1<"), "{}", page.body);
    for t in [&a.id, &b.id] {
        assert!(page.body.contains(&format!("data-team=\"{t}\"")), "{t}");
    }
    assert!(page.body.contains("acme") && page.body.contains("beta"));
    assert!(page.body.contains("id=\"health-storage\""));
    assert!(page.body.contains("answers"));

    // A team owner is no operator: refused, and the refusal recorded.
    let r = c.get(&b.owner, "/console/operator/platform").await;
    assert_eq!(r.status, 403, "{}", r.body);
    assert!(!r.body.contains("acme"));
    let denied = super::kura_id_api::logged_actions(&c.server.events)
        .await
        .into_iter()
        .filter(|e| e.action.as_str() == "authz.denied")
        .any(|e| e.details.get("action") == Some(&serde_json::json!("teams.list")));
    assert!(denied);
}
