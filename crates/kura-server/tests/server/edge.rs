//! The edge through the real server: policy changes over the admin API
//! (validated, versioned, recorded), the platform firewall refusing
//! connections before TLS, trusted proxies, team scopes, WAF block and
//! detect modes with generic answers and rule ids in the log, rate limits
//! with `Retry-After` and `RateLimit` headers, and the console's CSP.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use kura_testkit::{Options, TestServer};
use reqwest::Method;
use serde_json::{Value, json};
use tokio::io::AsyncReadExt as _;

use crate::kura_id_api::{Reply, call, get, logged_actions, post, tenant};

async fn put(server: &TestServer, path: &str, token: &str, body: Value) -> Reply {
    call(server, Method::PUT, path, Some(token), Some(body)).await
}

/// A GET that claims, through `X-Forwarded-For`, to come from `client`.
async fn get_from(
    server: &TestServer,
    path: &str,
    token: Option<&str>,
    client: &str,
) -> reqwest::Response {
    let mut req = server
        .client
        .get(server.url(path))
        .header("x-forwarded-for", client);
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    req.send().await.unwrap()
}

async fn events_named(server: &TestServer, action: &str) -> Vec<kura_types::SecurityEvent> {
    logged_actions(&server.events)
        .await
        .into_iter()
        .filter(|e| e.action.as_str() == action)
        .collect()
}

/// Connects from `local` and reports whether the server closed the
/// connection at once (refused before TLS) rather than waiting for a
/// ClientHello.
async fn closed_at_once(server: SocketAddr, local: &str) -> bool {
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket
        .bind(SocketAddr::new(local.parse().unwrap(), 0))
        .unwrap();
    let mut stream = socket.connect(server).await.unwrap();
    let mut buf = [0u8; 16];
    matches!(
        tokio::time::timeout(Duration::from_millis(1500), stream.read(&mut buf)).await,
        Ok(Ok(0) | Err(_))
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn platform_policies_are_validated_versioned_recorded_and_applied_before_tls() {
    let server = TestServer::spawn().await;
    let op = server.sign_up_first_operator().await;
    let edge = get(&server, "/api/v1/edge", &op.token).await;
    assert_eq!(edge.status, 200, "{}", edge.text);
    let edge = edge.json();
    assert_eq!(edge["firewall"]["version"], 0);
    assert_eq!(edge["waf_rules"].as_array().unwrap().len(), 14);
    assert_eq!(edge["rate_limits"]["admin_api"]["per_source"]["burst"], 300);

    // Bad input gets a clear error and changes nothing.
    let bad = [
        (json!({ "allow": ["10.0.0.0/33"] }), 422, "10.0.0.0/33"),
        (
            json!({ "allow": ["10.1.0.0/16"], "deny": ["10.0.0.0/8"] }),
            422,
            "never allow",
        ),
        (json!({ "allow": ["10.0.0.1/8"] }), 422, "10.0.0.0/8"),
        (json!({ "deny": ["127.0.0.1/32"] }), 409, "lock you out"),
        (json!({ "allow": ["10.0.0.0/8"] }), 409, "lock you out"),
        (json!({ "allow": ["10.0.0.0/8"], "extra": 1 }), 422, "extra"),
    ];
    for (body, status, needle) in bad {
        let r = put(&server, "/api/v1/edge/firewall", &op.token, body.clone()).await;
        let p = r.problem(status);
        assert!(
            p["detail"].as_str().unwrap().contains(needle),
            "{body}: {p}"
        );
    }
    let mut limits = edge["rate_limits"].clone();
    for k in ["scope", "version", "updated_at", "updated_by"] {
        limits.as_object_mut().unwrap().remove(k);
    }
    let mut zero = limits.clone();
    zero["sign_in"]["per_source"]["burst"] = json!(0);
    let p = put(&server, "/api/v1/edge/rate-limits", &op.token, zero)
        .await
        .problem(422);
    assert!(
        p["detail"]
            .as_str()
            .unwrap()
            .contains("sign_in.per_source.burst"),
        "{p}"
    );
    let mut negative = limits.clone();
    negative["data_api"]["per_team"]["per_minute"] = json!(-5);
    put(&server, "/api/v1/edge/rate-limits", &op.token, negative)
        .await
        .problem(422);
    let p = put(
        &server,
        "/api/v1/edge/waf",
        &op.token,
        json!({ "rules": { "999": "off" } }),
    )
    .await
    .problem(422);
    assert!(p["detail"].as_str().unwrap().contains("999"), "{p}");
    let after = get(&server, "/api/v1/edge", &op.token).await.json();
    for kind in ["firewall", "rate_limits", "waf"] {
        assert_eq!(after[kind]["version"], 0, "{kind} changed by refused input");
    }
    assert!(
        events_named(&server, "edge.firewall.changed")
            .await
            .is_empty()
    );

    // A good change applies at once and is recorded with who and what.
    let r = put(
        &server,
        "/api/v1/edge/firewall",
        &op.token,
        json!({ "allow": ["127.0.0.0/8", "2001:db8::/32"], "deny": ["127.0.0.2"], "version": 0 }),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.json()["version"], 1);
    assert_eq!(r.json()["deny"], json!(["127.0.0.2/32"]));
    let stale = put(
        &server,
        "/api/v1/edge/firewall",
        &op.token,
        json!({ "deny": [], "version": 0 }),
    )
    .await;
    stale.problem(409);
    let changed = events_named(&server, "edge.firewall.changed").await;
    assert_eq!(changed.len(), 1);
    assert_eq!(changed[0].actor.key(), format!("account:{}", op.account_id));
    assert_eq!(changed[0].details["after"]["deny"], json!(["127.0.0.2/32"]));
    assert_eq!(changed[0].details["before"], Value::Null);

    // The denied address is refused before any TLS work; others are not.
    assert!(
        closed_at_once(server.addr, "127.0.0.2").await,
        "denied address was served"
    );
    assert!(
        !closed_at_once(server.addr, "127.0.0.3").await,
        "allowed address was refused"
    );
    let blocked = events_named(&server, "edge.firewall.blocked").await;
    assert_eq!(blocked.len(), 1, "{blocked:?}");
    assert_eq!(
        blocked[0].source,
        Some("127.0.0.2".parse::<IpAddr>().unwrap())
    );
    assert_eq!(blocked[0].details["stage"], "connection");
    // A flood from the same address adds no events until the window closes.
    for _ in 0..20 {
        assert!(closed_at_once(server.addr, "127.0.0.2").await);
    }
    assert_eq!(
        events_named(&server, "edge.firewall.blocked").await.len(),
        1
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_waf_firewall_scopes_and_rate_limits_answer_generically_and_log_the_rule() {
    let server = TestServer::spawn_with(Options {
        configure: Box::new(|c| c.edge.trusted_proxies = vec!["127.0.0.1/32".into()]),
        ..Options::default()
    })
    .await;
    let op = server.sign_up_first_operator().await;

    // SQL injection in a query: a short generic answer with the request id.
    let attack = "/api/v1/events?action=1%27%20OR%20%271%27%3D%271";
    let r = get_from(&server, attack, Some(&op.token), "203.0.113.7").await;
    assert_eq!(r.status(), 403);
    let request_id = r.headers()["x-request-id"].to_str().unwrap().to_owned();
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["title"], "Request blocked");
    assert_eq!(body["request_id"], request_id.as_str());
    let text = body.to_string().to_ascii_lowercase();
    assert!(
        !text.contains("150") && !text.contains("sql") && !text.contains("injection"),
        "{text}"
    );
    let blocked = events_named(&server, "edge.waf.blocked").await;
    assert_eq!(blocked.len(), 1);
    assert_eq!(blocked[0].details["rule"], "150");
    assert_eq!(blocked[0].details["rule_name"], "injection.sql");
    assert_eq!(blocked[0].request_id.as_deref(), Some(request_id.as_str()));
    assert_eq!(
        blocked[0].source,
        Some("203.0.113.7".parse::<IpAddr>().unwrap()),
        "the client behind the trusted proxy"
    );
    for _ in 0..30 {
        assert_eq!(
            get_from(&server, attack, Some(&op.token), "203.0.113.7")
                .await
                .status(),
            403
        );
    }
    assert_eq!(
        events_named(&server, "edge.waf.blocked").await.len(),
        1,
        "a flood is aggregated"
    );
    let xss = "/api/v1/events?action=%3Cscript%3Ealert(1)%3C%2Fscript%3E";
    assert_eq!(
        get_from(&server, xss, Some(&op.token), "203.0.113.8")
            .await
            .status(),
        403
    );

    // Legitimate text passes: apostrophes, `<`, SQL words in prose, unicode.
    for name in [
        "Renée O'Brien",
        "x < y and y > z <3",
        "Please select the plan from the list",
        "日本語 🎉 D'Angelo & Sons",
    ] {
        let r = call(
            &server,
            Method::PATCH,
            "/api/v1/me",
            Some(&op.token),
            Some(json!({ "display_name": name })),
        )
        .await;
        assert_eq!(r.status, 200, "{name}: {}", r.text);
        assert_eq!(
            get(&server, "/api/v1/me", &op.token).await.json()["display_name"],
            name
        );
    }

    // The platform firewall judges the client behind the proxy.
    let r = put(
        &server,
        "/api/v1/edge/firewall",
        &op.token,
        json!({ "deny": ["198.51.100.0/24"] }),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(
        get_from(&server, "/healthz", None, "198.51.100.9")
            .await
            .status(),
        403
    );
    assert_eq!(
        get_from(&server, "/healthz", None, "198.51.100.9, 203.0.113.50")
            .await
            .status(),
        200,
        "only the nearest untrusted hop counts"
    );
    let fw = events_named(&server, "edge.firewall.blocked").await;
    assert_eq!(fw[0].details["rule"], "platform");

    // A team's own lists and WAF relaxations, set by its owner.
    let team = tenant(&server, &op, "alpha").await;
    let members = format!("/api/v1/teams/{}/members", team.id);
    let r = put(
        &server,
        &format!("/api/v1/teams/{}/firewall", team.id),
        &team.owner,
        json!({ "deny": ["192.0.2.0/24"] }),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(
        get_from(&server, &members, Some(&team.owner), "192.0.2.5")
            .await
            .status(),
        403
    );
    assert_eq!(
        get_from(&server, "/api/v1/me", Some(&team.owner), "192.0.2.5")
            .await
            .status(),
        200,
        "other teams' and platform routes are not affected"
    );
    let fw = events_named(&server, "edge.firewall.blocked").await;
    assert!(
        fw.iter()
            .any(|e| e.details["rule"] == format!("team:{}", team.id)
                && e.team.map(|t| t.to_string()) == Some(team.id.clone())),
        "{fw:?}"
    );
    let waf = format!("/api/v1/teams/{}/waf", team.id);
    let p = put(
        &server,
        &waf,
        &team.owner,
        json!({ "rules": { "120": "off" } }),
    )
    .await
    .problem(422);
    assert!(p["detail"].as_str().unwrap().contains("platform"), "{p}");
    let probe = format!("{members}?note=1%27%20OR%20%271%27%3D%271");
    assert_eq!(
        get_from(&server, &probe, Some(&team.owner), "203.0.113.20")
            .await
            .status(),
        403
    );
    let r = put(
        &server,
        &waf,
        &team.owner,
        json!({ "rules": { "150": "off" } }),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(
        get(&server, &waf, &team.owner).await.json()["rules"]["150"],
        "off"
    );
    assert_eq!(
        get_from(&server, &probe, Some(&team.owner), "203.0.113.21")
            .await
            .status(),
        200,
        "rule 150 is off for the team"
    );
    assert_eq!(
        get_from(&server, attack, Some(&op.token), "203.0.113.22")
            .await
            .status(),
        403,
        "and still on elsewhere"
    );
    assert_eq!(events_named(&server, "edge.waf.changed").await.len(), 1);

    // Detect-only: the request goes through and the match is recorded.
    let r = put(
        &server,
        "/api/v1/edge/waf",
        &op.token,
        json!({ "rules": { "160": "detect" } }),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text);
    let r = get_from(&server, xss, Some(&op.token), "203.0.113.30").await;
    assert_ne!(r.status(), 403, "detect mode does not block");
    let detected = events_named(&server, "edge.waf.detected").await;
    assert_eq!(detected.len(), 1);
    assert_eq!(detected[0].details["rule"], "160");

    // Rate limits: a tiny budget for the admin API per address.
    let mut limits = get(&server, "/api/v1/edge", &op.token).await.json()["rate_limits"].clone();
    for k in ["scope", "version", "updated_at", "updated_by"] {
        limits.as_object_mut().unwrap().remove(k);
    }
    limits["admin_api"]["per_source"] = json!({ "per_minute": 60, "burst": 3 });
    let r = put(&server, "/api/v1/edge/rate-limits", &op.token, limits).await;
    assert_eq!(r.status, 200, "{}", r.text);
    for left in [2, 1, 0] {
        let r = get_from(&server, "/healthz", None, "192.0.2.200").await;
        assert_eq!(r.status(), 200);
        assert_eq!(r.headers()["ratelimit-policy"], "\"admin_api\";q=3;w=3");
        let rl = r.headers()["ratelimit"].to_str().unwrap().to_owned();
        assert!(
            rl.starts_with(&format!("\"admin_api\";r={left};t=")),
            "{rl}"
        );
    }
    let r = get_from(&server, "/healthz", None, "192.0.2.200").await;
    assert_eq!(r.status(), 429);
    assert_eq!(r.headers()["retry-after"], "1");
    assert!(r.headers()["ratelimit"].to_str().unwrap().contains(";r=0;"));
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["status"], 429);
    assert!(body["request_id"].is_string());
    assert_eq!(
        get_from(&server, "/healthz", None, "192.0.2.201")
            .await
            .status(),
        200,
        "another address has its own bucket"
    );
    let limited = events_named(&server, "edge.ratelimit.exceeded").await;
    assert_eq!(limited.len(), 1);
    assert_eq!(limited[0].details["rule"], "admin_api.source");
    assert_eq!(
        limited[0].source,
        Some("192.0.2.200".parse::<IpAddr>().unwrap())
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn team_policies_belong_to_team_admins_and_network_admins() {
    let server = TestServer::spawn().await;
    let op = server.sign_up_first_operator().await;
    let a = tenant(&server, &op, "alpha").await;
    // A team owner cannot touch the platform's policies.
    let r = put(
        &server,
        "/api/v1/edge/firewall",
        &a.owner,
        json!({ "deny": ["203.0.113.0/24"] }),
    )
    .await;
    r.problem(403);
    assert_eq!(get(&server, "/api/v1/edge", &a.owner).await.status, 403);
    // The operator (holding the network admin role) manages any team's.
    let r = put(
        &server,
        &format!("/api/v1/teams/{}/firewall", a.id),
        &op.token,
        json!({ "allow": ["127.0.0.0/8"] }),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text);
    let shown = get(
        &server,
        &format!("/api/v1/teams/{}/firewall", a.id),
        &a.owner,
    )
    .await;
    assert_eq!(shown.json()["allow"], json!(["127.0.0.0/8"]));
    assert_eq!(shown.json()["version"], 1);
    // An unknown team is not found, and nothing is stored for it.
    let ghost = kura_types::TeamId::new();
    put(
        &server,
        &format!("/api/v1/teams/{ghost}/firewall"),
        &op.token,
        json!({ "deny": [] }),
    )
    .await
    .problem(404);
    let r = post(&server, "/api/v1/edge/firewall", Some(&op.token), json!({})).await;
    assert_eq!(r.status, 405);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn console_pages_get_a_strict_csp_and_api_answers_a_deny_all_one() {
    // The console's own sign-in page (the console is part of the server).
    let server = TestServer::spawn().await;
    let r = server
        .client
        .get(server.url("/console/sign-in"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    crate::assert_security_headers(&r);
    let csp = r.headers()["content-security-policy"]
        .to_str()
        .unwrap()
        .to_owned();
    for part in [
        "script-src 'self'",
        "frame-ancestors 'none'",
        "object-src 'none'",
        "base-uri 'none'",
    ] {
        assert!(csp.contains(part), "{csp}");
    }
    assert!(
        !csp.contains("unsafe-inline") && !csp.contains("unsafe-eval"),
        "{csp}"
    );
    let r = server
        .client
        .get(server.url("/healthz"))
        .send()
        .await
        .unwrap();
    let csp = r.headers()["content-security-policy"].to_str().unwrap();
    assert!(csp.starts_with("default-src 'none'"), "{csp}");
    assert!(r.headers().get("ratelimit").is_some());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn host_policies_apply_by_name_to_the_data_api_and_follow_renames() {
    let server = TestServer::spawn_with(Options {
        configure: Box::new(|c| c.edge.trusted_proxies = vec!["127.0.0.1/32".into()]),
        ..Options::default()
    })
    .await;
    let op = server.sign_up_first_operator().await;
    let a = tenant(&server, &op, "alpha").await;
    let b = tenant(&server, &op, "bravo").await;
    let mut hosts = Vec::new();
    for (team, name) in [(&a, "acme"), (&a, "other"), (&b, "bhost")] {
        let r = post(
            &server,
            &format!("/api/v1/teams/{}/hosts", team.id),
            Some(&team.owner),
            json!({ "name": name }),
        )
        .await;
        assert_eq!(r.status, 201, "{}", r.text);
        hosts.push(r.json()["id"].as_str().unwrap().to_owned());
    }
    let (acme, other, bhost) = (&hosts[0], &hosts[1], &hosts[2]);
    let fw = format!("/api/v1/teams/{}/hosts/{acme}/firewall", a.id);
    let waf = format!("/api/v1/teams/{}/hosts/{acme}/waf", a.id);
    let info = |host: &str| format!("/hosts/{host}/fmi/data/vLatest/productInfo");

    // Bad input is refused with a reason and stores nothing.
    for (body, status, needle) in [
        (json!({ "deny": ["192.0.2.0/33"] }), 422, "192.0.2.0/33"),
        (
            json!({ "allow": ["192.0.2.0/25"], "deny": ["192.0.2.0/24"] }),
            422,
            "never allow",
        ),
        (json!({ "deny": ["127.0.0.0/8"] }), 409, "lock you out"),
        (json!({ "deny": [], "hosts": [] }), 422, "hosts"),
    ] {
        let p = put(&server, &fw, &a.owner, body.clone())
            .await
            .problem(status);
        assert!(
            p["detail"].as_str().unwrap().contains(needle),
            "{body}: {p}"
        );
    }
    let p = put(
        &server,
        &waf,
        &a.owner,
        json!({ "rules": { "120": "off" } }),
    )
    .await
    .problem(422);
    assert!(p["detail"].as_str().unwrap().contains("platform"), "{p}");
    assert_eq!(get(&server, &fw, &a.owner).await.json()["version"], 0);
    assert_eq!(get(&server, &waf, &a.owner).await.json()["version"], 0);
    assert!(
        events_named(&server, "edge.firewall.changed")
            .await
            .is_empty()
    );

    // Another team's host is "not found"; another team's admin is refused.
    let foreign = format!("/api/v1/teams/{}/hosts/{bhost}/firewall", a.id);
    put(
        &server,
        &foreign,
        &a.owner,
        json!({ "deny": ["192.0.2.0/24"] }),
    )
    .await
    .problem(404);
    put(&server, &fw, &b.owner, json!({ "deny": ["192.0.2.0/24"] }))
        .await
        .problem(403);
    get(
        &server,
        &format!(
            "/api/v1/teams/{}/hosts/{}/waf",
            a.id,
            kura_types::HostId::new()
        ),
        &a.owner,
    )
    .await
    .problem(404);

    // The team admin denies a range for one host: the Data API under its
    // name refuses it (in FileMaker's envelope), other hosts do not.
    let r = put(&server, &fw, &a.owner, json!({ "deny": ["192.0.2.0/24"] })).await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.json()["scope"], format!("host:{acme}"));
    let r = get_from(&server, &info("acme"), None, "192.0.2.9").await;
    assert_eq!(r.status(), 403);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["messages"][0]["code"], "960", "{body}");
    assert_eq!(
        get_from(&server, &info("ACME"), None, "192.0.2.9")
            .await
            .status(),
        403,
        "host names compare without case"
    );
    assert_eq!(
        get_from(&server, &info("other"), None, "192.0.2.9")
            .await
            .status(),
        200
    );
    assert_eq!(
        get_from(&server, &info("acme"), None, "198.51.100.9")
            .await
            .status(),
        200
    );
    let blocked = events_named(&server, "edge.firewall.blocked").await;
    assert!(
        blocked
            .iter()
            .any(|e| e.details["rule"] == format!("host:{acme}")
                && e.team.map(|t| t.to_string()) == Some(a.id.clone())),
        "{blocked:?}"
    );
    let changed = events_named(&server, "edge.firewall.changed").await;
    assert_eq!(changed.len(), 1);
    assert_eq!(
        changed[0].target.as_deref(),
        Some(format!("host:{acme}").as_str())
    );
    assert_eq!(changed[0].details["after"]["deny"], json!(["192.0.2.0/24"]));
    // The team's own lists apply to its hosts' Data API as well.
    let r = put(
        &server,
        &format!("/api/v1/teams/{}/firewall", a.id),
        &a.owner,
        json!({ "deny": ["198.51.100.0/24"] }),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(
        get_from(&server, &info("other"), None, "198.51.100.9")
            .await
            .status(),
        403
    );
    assert_eq!(
        get_from(&server, &info("bhost"), None, "198.51.100.9")
            .await
            .status(),
        200,
        "another team's host is not affected"
    );

    // A rename moves the lists with the host at once; the old name is free.
    let r = call(
        &server,
        Method::PATCH,
        &format!("/api/v1/teams/{}/hosts/{acme}", a.id),
        Some(&a.owner),
        Some(json!({ "name": "acme2" })),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(
        get_from(&server, &info("acme2"), None, "192.0.2.9")
            .await
            .status(),
        403
    );
    assert_eq!(
        get_from(&server, &info("acme"), None, "192.0.2.9")
            .await
            .status(),
        200
    );

    // WAF: rule 150 blocks SQL injection on the Data API, until the team
    // admin turns it off for this host only.
    let probe = |host: &str| {
        format!("/hosts/{host}/fmi/data/vLatest/productInfo?q=1%27%20OR%20%271%27%3D%271")
    };
    assert_eq!(
        get_from(&server, &probe("acme2"), None, "203.0.113.40")
            .await
            .status(),
        403
    );
    let r = put(
        &server,
        &waf,
        &a.owner,
        json!({ "rules": { "150": "off" } }),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(
        get(&server, &waf, &a.owner).await.json()["rules"]["150"],
        "off"
    );
    assert_eq!(
        get_from(&server, &probe("acme2"), None, "203.0.113.41")
            .await
            .status(),
        200,
        "rule 150 is off for this host"
    );
    assert_eq!(
        get_from(&server, &probe("other"), None, "203.0.113.42")
            .await
            .status(),
        403,
        "and still on for the team's other host"
    );
    assert_eq!(events_named(&server, "edge.waf.changed").await.len(), 1);
    let _ = other;
}
