//! OAuth 2.0 credentials through the real server, against a loopback
//! provider: creation checks, the authorise URL (state, PKCE S256, scopes,
//! callback), the callback taking a state once, the code exchange checked
//! against the PKCE challenge, refresh before expiry with the new token
//! stored and reused, and tokens that never appear in answers or run
//! records.

use kura_testkit::TestServer;
use serde_json::{Value, json};

use super::connect_human::{actions, create_flow, options, over, start, wait_for};
use super::kura_id_api::{call, get, post, tenant};

/// A loopback OAuth 2.0 provider: a token endpoint that checks the PKCE
/// verifier against the challenge the authorise URL carried, and an API
/// that echoes the bearer token it got. Records each grant type.
#[derive(Default)]
struct Provider {
    challenge: String,
    grants: Vec<String>,
}

type Shared = std::sync::Arc<std::sync::Mutex<Provider>>;

async fn token_endpoint(
    axum::extract::State(p): axum::extract::State<Shared>,
    headers: http::HeaderMap,
    body: String,
) -> (http::StatusCode, axum::Json<Value>) {
    use base64::Engine as _;
    let form: std::collections::HashMap<String, String> =
        reqwest::Url::parse(&format!("http://x/?{body}"))
            .unwrap()
            .query_pairs()
            .into_owned()
            .collect();
    let client = base64::engine::general_purpose::STANDARD.encode("kura-client:client-secret-42");
    let authed = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v == format!("Basic {client}"));
    let mut p = p.lock().unwrap();
    let grant = form.get("grant_type").cloned().unwrap_or_default();
    p.grants.push(grant.clone());
    let verifier = form.get("code_verifier").cloned().unwrap_or_default();
    let challenge = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .encode(kura_crypto::digest::sha256(verifier.as_bytes()));
    let ok = |v: Value| (http::StatusCode::OK, axum::Json(v));
    match grant.as_str() {
        "authorization_code"
            if authed
                && form.get("code").map(String::as_str) == Some("code-1")
                && challenge == p.challenge =>
        {
            ok(
                json!({"access_token": "at-first-0001", "token_type": "bearer",
                      "expires_in": 1, "refresh_token": "rt-first-0001"}),
            )
        }
        "refresh_token"
            if authed && form.get("refresh_token").map(String::as_str) == Some("rt-first-0001") =>
        {
            ok(
                json!({"access_token": "at-second-0002", "token_type": "bearer", "expires_in": 3600}),
            )
        }
        _ => (
            http::StatusCode::BAD_REQUEST,
            axum::Json(json!({"error": "invalid_grant"})),
        ),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oauth2_credentials_authorise_with_pkce_refresh_and_never_show_their_tokens() {
    let provider: Shared = Shared::default();
    let app = axum::Router::new()
        .route("/token", axum::routing::post(token_endpoint))
        .route(
            "/api",
            axum::routing::post(|headers: http::HeaderMap| async move {
                axum::Json(json!({"auth": headers.get("authorization")
                    .and_then(|v| v.to_str().ok()).unwrap_or("")}))
            }),
        )
        .with_state(std::sync::Arc::clone(&provider));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    let server = TestServer::spawn_with(options(1, true)).await;
    let op = server.sign_up_first_operator().await;
    let t = tenant(&server, &op, "connect-oauth").await;
    let creds = format!("/api/v1/teams/{}/flow-credentials", t.id);
    let good = json!({
        "name": "crm", "kind": "oauth2", "secret": "client-secret-42", "client_id": "kura-client",
        "auth_url": format!("{base}/authorize"), "token_url": format!("{base}/token"),
        "scopes": ["contacts.read", "contacts.write"],
    });
    for (field, value) in [("token_url", json!("ftp://x")), ("client_id", Value::Null)] {
        let mut bad = good.clone();
        bad[field] = value;
        let r = post(&server, &creds, Some(&t.owner), bad).await;
        assert_eq!(r.status, 422, "{field}: {}", r.text);
    }
    let r = post(&server, &creds, Some(&t.owner), good).await;
    assert_eq!(r.status, 201, "{}", r.text);
    let cred = r.json()["id"].as_str().unwrap().to_owned();
    let flow = create_flow(
        &server,
        &t.id,
        &t.owner,
        json!({
        "name": "crm call", "trigger": {"kind": "manual"}, "steps": [
            {"id": "call", "kind": "http", "method": "POST", "url": format!("{base}/api"),
             "credential": "crm"}
        ]}),
    )
    .await;

    // Before authorisation the step fails with a clear error.
    let run = start(&server, &t.id, &t.owner, &flow, json!({})).await;
    let done = wait_for(&server, &t.id, &t.owner, &run, over).await;
    assert_eq!(done["status"], "failed");
    assert!(
        done["error"]
            .as_str()
            .unwrap()
            .contains("not been authorised"),
        "{done}"
    );

    // Authorise: the URL carries state, PKCE (S256), the scopes and the
    // callback; the provider "redirects" the browser to the callback.
    let r = post(
        &server,
        &format!("{creds}/{cred}/authorize"),
        Some(&t.owner),
        json!({}),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text);
    let url = reqwest::Url::parse(r.json()["authorize_url"].as_str().unwrap()).unwrap();
    let q: std::collections::HashMap<String, String> = url.query_pairs().into_owned().collect();
    assert_eq!(q["response_type"], "code");
    assert_eq!(q["client_id"], "kura-client");
    assert_eq!(q["code_challenge_method"], "S256");
    assert_eq!(q["scope"], "contacts.read contacts.write");
    assert_eq!(
        q["redirect_uri"],
        "https://kura.example/hooks/oauth2/callback"
    );
    provider.lock().unwrap().challenge = q["code_challenge"].clone();
    let forged = call(
        &server,
        reqwest::Method::GET,
        &format!(
            "/hooks/oauth2/callback?state={}&code=code-1",
            "cd".repeat(32)
        ),
        None,
        None,
    )
    .await;
    assert_eq!(forged.status, 404, "{}", forged.text);
    let cb = format!("/hooks/oauth2/callback?state={}&code=code-1", q["state"]);
    let r = call(&server, reqwest::Method::GET, &cb, None, None).await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.json()["authorized"], true);
    assert!(!r.text.contains("at-first"), "{}", r.text);
    // The state works once.
    let r = call(&server, reqwest::Method::GET, &cb, None, None).await;
    assert_eq!(r.status, 404, "{}", r.text);

    // The stored access token expires within the margin: runs started
    // together refresh it once and store the new token; a later run reuses
    // it.
    let mut runs = Vec::new();
    for _ in 0..3 {
        runs.push(start(&server, &t.id, &t.owner, &flow, json!({})).await);
    }
    for later in [false, false, false, true] {
        let run = if later {
            start(&server, &t.id, &t.owner, &flow, json!({})).await
        } else {
            runs.remove(0)
        };
        let done = wait_for(&server, &t.id, &t.owner, &run, over).await;
        assert_eq!(done["status"], "succeeded", "{done}");
        let text = done.to_string();
        assert!(text.contains("Bearer [REDACTED]"), "{text}");
        for secret in ["at-first", "at-second", "rt-first", "client-secret-42"] {
            assert!(!text.contains(secret), "{secret} in {text}");
        }
    }
    assert_eq!(
        provider.lock().unwrap().grants,
        ["authorization_code", "refresh_token"]
    );
    let listed = get(&server, &creds, &t.owner).await.text;
    for secret in ["at-", "rt-first", "client-secret-42"] {
        assert!(!listed.contains(secret), "{secret} in {listed}");
    }
    let logged = actions(&server).await;
    for action in [
        "connect.credential.authorization_started",
        "connect.credential.authorized",
        "connect.credential.refreshed",
        "connect.credential.authorization_refused",
    ] {
        assert!(
            logged.contains(&action.to_owned()),
            "{action} in {logged:?}"
        );
    }
}
