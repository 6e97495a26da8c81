//! The console's pages over plain HTTP (no browser): what a form post
//! changes, what it refuses and what the page then shows. TOTP codes come
//! from `pyotp` at the server's manual clock, which the tests move on by a
//! step whenever a fresh code is needed.

use std::sync::Arc;

use kura_testkit::{Options, SignedInOperator, TestServer, pyotp_code};
use kura_types::{Clock as _, ManualClock};
use reqwest::StatusCode;
use time::{Duration, OffsetDateTime};

/// A booted server, its clock, the first operator and a client that does
/// not follow redirects (so a test sees where a post sends the browser).
pub(super) struct Console {
    pub(super) server: TestServer,
    pub(super) clock: ManualClock,
    pub(super) op: SignedInOperator,
    client: reqwest::Client,
    _cert: tempfile::TempDir,
}

/// One answer: status, `Location` (for redirects) and body.
pub(super) struct Page {
    pub(super) status: StatusCode,
    pub(super) location: Option<String>,
    pub(super) body: String,
}

impl Page {
    /// The CSRF token of the page's forms.
    pub(super) fn csrf(&self) -> String {
        attr_after(&self.body, "name=\"csrf\" value=\"").expect("a form with a CSRF token")
    }

    /// Whether the page shows an error beside the field with this id.
    pub(super) fn has_error(&self, field_id: &str) -> bool {
        self.body.contains(&format!("id=\"{field_id}-error\""))
    }

    /// Every distinct value of `prefix<value>"` in the page (ids in links).
    pub(super) fn ids_after(&self, prefix: &str) -> Vec<String> {
        let mut out: Vec<String> = Vec::new();
        let mut rest = self.body.as_str();
        while let Some(i) = rest.find(prefix) {
            rest = &rest[i + prefix.len()..];
            let id: String = rest
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '-')
                .collect();
            if !id.is_empty() && !out.contains(&id) {
                out.push(id);
            }
        }
        out
    }
}

fn attr_after(body: &str, prefix: &str) -> Option<String> {
    let i = body.find(prefix)? + prefix.len();
    let len = body[i..].find('"')?;
    Some(body[i..i + len].to_owned())
}

impl Console {
    /// A fresh server with the first operator signed in.
    pub(super) async fn boot() -> Self {
        let clock = ManualClock::new(OffsetDateTime::now_utc());
        let server = TestServer::spawn_with(Options {
            clock: Arc::new(clock.clone()),
            ..Options::default()
        })
        .await;
        let op = server.sign_up_first_operator().await;
        let cert = tempfile::tempdir().unwrap();
        let pem = cert.path().join("cert.pem");
        std::fs::write(&pem, server.certificate_pem()).unwrap();
        let ca = reqwest::Certificate::from_pem(&server.certificate_pem()).unwrap();
        let client = reqwest::Client::builder()
            .tls_certs_only([ca])
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .unwrap();
        Self {
            server,
            clock,
            op,
            client,
            _cert: cert,
        }
    }

    /// The client (no redirects followed), for requests with other cookies.
    pub(super) fn client(&self) -> &reqwest::Client {
        &self.client
    }

    /// The next TOTP code of `secret`: the clock moves on one step first, so
    /// the server has not seen the code yet.
    pub(super) fn fresh_code(&self, secret: &str) -> String {
        self.clock.advance(Duration::seconds(30));
        pyotp_code(secret, self.clock.now())
    }

    async fn send(&self, req: reqwest::RequestBuilder, session: &str) -> Page {
        let r = req
            .header("cookie", format!("__Host-kura_session={session}"))
            .send()
            .await
            .unwrap();
        let status = r.status();
        let location = r
            .headers()
            .get("location")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        Page {
            status,
            location,
            body: r.text().await.unwrap(),
        }
    }

    /// `GET path` as the holder of `session`.
    pub(super) async fn get(&self, session: &str, path: &str) -> Page {
        self.send(self.client.get(self.server.url(path)), session)
            .await
    }

    /// A form post as the holder of `session` (the caller adds `csrf`).
    pub(super) async fn post(&self, session: &str, path: &str, form: &[(&str, &str)]) -> Page {
        let body = serde_urlencoded::to_string(form).unwrap();
        let req = self
            .client
            .post(self.server.url(path))
            .header("content-type", "application/x-www-form-urlencoded")
            .body(body);
        self.send(req, session).await
    }

    /// A multipart form post as the holder of `session` (parts in order).
    pub(super) async fn post_multipart(
        &self,
        session: &str,
        path: &str,
        form: reqwest::multipart::Form,
    ) -> Page {
        let req = self.client.post(self.server.url(path)).multipart(form);
        self.send(req, session).await
    }

    /// The security events' actions so far.
    pub(super) async fn actions(&self) -> Vec<String> {
        super::kura_id_api::logged_actions(&self.server.events)
            .await
            .into_iter()
            .map(|e| e.action.as_str().to_owned())
            .collect()
    }
}

/// A team (created by the operator through the API) with a host and an
/// app created through the console's forms; returns (team, host, app) ids.
pub(super) async fn team_with_app(
    c: &Console,
    session: &str,
    team: &str,
) -> (String, String, String) {
    let base = format!("/console/teams/{team}");
    let page = c.get(session, &base).await;
    assert_eq!(page.status, 200, "{}", page.body);
    let csrf = page.csrf();
    let r = c
        .post(
            session,
            &format!("{base}/hosts"),
            &[("csrf", &csrf), ("name", "acme")],
        )
        .await;
    assert_eq!(r.status, 303, "{}", r.body);
    let page = c.get(session, &base).await;
    let host = page.ids_after(&format!("{base}/hosts/"))[0].clone();
    let r = c
        .post(
            session,
            &format!("{base}/apps"),
            &[("csrf", &csrf), ("host", &host), ("app_name", "Contacts")],
        )
        .await;
    assert_eq!(r.status, 303, "{}", r.body);
    let page = c.get(session, &base).await;
    let app = page.ids_after(&format!("{base}/apps/"))[0].clone();
    (team.to_owned(), host, app)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deleting_an_app_needs_its_exact_name_and_a_fresh_code() {
    let c = Console::boot().await;
    let t = super::kura_id_api::tenant(&c.server, &c.op, "acme").await;
    let op = c.op.token.clone();
    let (team, _host, app) = team_with_app(&c, &op, &t.id).await;
    let app_path = format!("/console/teams/{team}/apps/{app}");
    let page = c.get(&op, &app_path).await;
    assert!(page.body.contains("id=\"f-code\""), "a step-up field");
    let csrf = page.csrf();
    let delete = format!("{app_path}/delete");
    let code = c.fresh_code(&c.op.totp_secret);

    // A wrong name is refused beside the name field, the code not spent.
    let r = c
        .post(
            &op,
            &delete,
            &[("csrf", &csrf), ("confirm", "Contact"), ("code", &code)],
        )
        .await;
    assert_eq!(r.status, 422);
    assert!(r.has_error("f-confirm"), "{}", r.body);
    assert!(
        r.body.contains("value=\"Contact\""),
        "the typed name is kept"
    );
    // The right name with a wrong or a missing code: refused beside the code.
    for wrong in ["000000", ""] {
        let r = c
            .post(
                &op,
                &delete,
                &[("csrf", &csrf), ("confirm", "Contacts"), ("code", wrong)],
            )
            .await;
        assert_eq!(r.status, 422, "{}", r.body);
        assert!(r.has_error("f-code"), "{}", r.body);
        assert!(!r.has_error("f-confirm"));
        assert!(r.body.contains("value=\"Contacts\""), "the name is kept");
    }
    assert_eq!(
        c.get(&op, &app_path).await.status,
        200,
        "the app is still there"
    );
    assert!(!c.actions().await.contains(&"app.deleted".to_owned()));
    // The code the wrong name did not spend still works.
    let r = c
        .post(
            &op,
            &delete,
            &[("csrf", &csrf), ("confirm", "Contacts"), ("code", &code)],
        )
        .await;
    assert_eq!(r.status, 303, "{}", r.body);
    assert_eq!(
        r.location.as_deref(),
        Some(format!("/console/teams/{team}?ok=app-deleted").as_str())
    );
    assert_eq!(c.get(&op, &app_path).await.status, 404, "the app is gone");
    let actions = c.actions().await;
    assert_eq!(actions.iter().filter(|a| *a == "app.deleted").count(), 1);
    assert!(
        actions.contains(&"auth.mfa.failed".to_owned()),
        "{actions:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deleting_a_host_needs_its_exact_name_and_a_fresh_code() {
    let c = Console::boot().await;
    let t = super::kura_id_api::tenant(&c.server, &c.op, "acme").await;
    let op = c.op.token.clone();
    let base = format!("/console/teams/{}", t.id);
    let page = c.get(&op, &base).await;
    let csrf = page.csrf();
    let r = c
        .post(
            &op,
            &format!("{base}/hosts"),
            &[("csrf", &csrf), ("name", "spare")],
        )
        .await;
    assert_eq!(r.status, 303, "{}", r.body);
    let host = c.get(&op, &base).await.ids_after(&format!("{base}/hosts/"))[0].clone();
    let delete = format!("{base}/hosts/{host}/delete");
    let confirm = format!("confirm-{host}");
    let code_field = format!("code-{host}");

    // A host that serves an app is refused beside the name, before a code
    // is asked for.
    let r = c
        .post(
            &op,
            &format!("{base}/apps"),
            &[("csrf", &csrf), ("host", &host), ("app_name", "Busy")],
        )
        .await;
    assert_eq!(r.status, 303, "{}", r.body);
    let r = c
        .post(
            &op,
            &delete,
            &[("csrf", &csrf), (&confirm, "spare"), (&code_field, "")],
        )
        .await;
    assert_eq!(r.status, 409, "{}", r.body);
    assert!(r.has_error(&format!("f-{confirm}")), "{}", r.body);
    assert!(r.body.contains("still serves 1 app(s)"), "{}", r.body);
    assert!(!r.has_error(&format!("f-{code_field}")));
    let app = c.get(&op, &base).await.ids_after(&format!("{base}/apps/"))[0].clone();
    let app_path = format!("{base}/apps/{app}");
    let r = c
        .post(
            &op,
            &format!("{app_path}/delete"),
            &[
                ("csrf", &csrf),
                ("confirm", "Busy"),
                ("code", &c.fresh_code(&c.op.totp_secret)),
            ],
        )
        .await;
    assert_eq!(r.status, 303, "{}", r.body);

    let code = c.fresh_code(&c.op.totp_secret);
    let r = c
        .post(
            &op,
            &delete,
            &[("csrf", &csrf), (&confirm, "spar"), (&code_field, &code)],
        )
        .await;
    assert_eq!(r.status, 422);
    assert!(r.has_error(&format!("f-{confirm}")), "{}", r.body);
    assert!(
        r.body.contains("<details class=\"host-settings\" open"),
        "the form stays open"
    );
    let r = c
        .post(
            &op,
            &delete,
            &[("csrf", &csrf), (&confirm, "spare"), (&code_field, "")],
        )
        .await;
    assert_eq!(r.status, 422);
    assert!(r.has_error(&format!("f-{code_field}")), "{}", r.body);
    assert!(
        c.get(&op, &base).await.body.contains(">spare</h3>"),
        "still there"
    );
    let r = c
        .post(
            &op,
            &delete,
            &[("csrf", &csrf), (&confirm, "spare"), (&code_field, &code)],
        )
        .await;
    assert_eq!(r.status, 303, "{}", r.body);
    assert!(
        !c.get(&op, &base).await.body.contains(">spare</h3>"),
        "gone"
    );
    let actions = c.actions().await;
    assert_eq!(actions.iter().filter(|a| *a == "host.deleted").count(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_person_without_an_authenticator_cannot_delete_and_is_told_why() {
    let c = Console::boot().await;
    let t = super::kura_id_api::tenant(&c.server, &c.op, "acme").await;
    let (team, _host, app) = team_with_app(&c, &t.owner, &t.id).await;
    let app_path = format!("/console/teams/{team}/apps/{app}");
    let csrf = c.get(&t.owner, &app_path).await.csrf();
    let r = c
        .post(
            &t.owner,
            &format!("{app_path}/delete"),
            &[("csrf", &csrf), ("confirm", "Contacts"), ("code", "123456")],
        )
        .await;
    assert_eq!(r.status, 422, "{}", r.body);
    assert!(r.has_error("f-code"));
    assert!(r.body.contains("has none yet"), "{}", r.body);
    assert_eq!(c.get(&t.owner, &app_path).await.status, 200, "still there");
    // The account page offers to set one up.
    let account = c.get(&t.owner, "/console/account").await;
    assert!(account.body.contains("Set up an authenticator app"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_enrolment_page_shows_the_setup_key_as_a_qr_code() {
    let c = Console::boot().await;
    let t = super::kura_id_api::tenant(&c.server, &c.op, "acme").await;
    let start = c.get(&t.owner, "/console/mfa/enrol").await;
    assert_eq!(start.status, 200);
    let r = c
        .post(&t.owner, "/console/mfa/enrol", &[("csrf", &start.csrf())])
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    let src = attr_after(&r.body, "id=\"totp-qr\" src=\"").expect("a QR code image");
    assert!(src.starts_with("data:image/svg+xml;base64,"), "{src}");
    assert!(
        r.body.contains("alt=\"QR code of your setup key"),
        "described for screen readers"
    );
}
