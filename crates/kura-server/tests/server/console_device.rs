//! "Remember this device" through the console's sign-in pages over HTTP:
//! off by default; when ticked, the device cookie completes the next
//! password sign-in without a code, until the account signs out
//! everywhere, when the cookie is refused and removed.

use kura_testkit::OPERATOR_PASSWORD;
use reqwest::StatusCode;

use super::console_pages::Console;

/// One response's status, `Location` and `Set-Cookie` name=value pairs.
struct Answer {
    status: StatusCode,
    location: String,
    cookies: Vec<(String, String)>,
    body: String,
}

impl Answer {
    fn cookie(&self, name: &str) -> Option<&str> {
        self.cookies
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
}

async fn send(req: reqwest::RequestBuilder, cookies: &[(&str, &str)]) -> Answer {
    let jar: Vec<String> = cookies.iter().map(|(n, v)| format!("{n}={v}")).collect();
    let r = req.header("cookie", jar.join("; ")).send().await.unwrap();
    let status = r.status();
    let location = r
        .headers()
        .get("location")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    let cookies = r
        .headers()
        .get_all("set-cookie")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .filter_map(|v| v.split(';').next())
        .filter_map(|v| v.split_once('='))
        .map(|(n, v)| (n.to_owned(), v.to_owned()))
        .collect();
    Answer {
        status,
        location,
        cookies,
        body: r.text().await.unwrap(),
    }
}

fn field(body: &str, name: &str) -> String {
    let prefix = format!("name=\"{name}\" value=\"");
    let i = body
        .find(&prefix)
        .unwrap_or_else(|| panic!("{name} in {body}"))
        + prefix.len();
    body[i..i + body[i..].find('"').unwrap()].to_owned()
}

/// Password sign-in through the console form: the pending session's token.
async fn password(c: &Console) -> String {
    let form_page = send(c.client().get(c.server.url("/console/sign-in")), &[]).await;
    let form_cookie = form_page.cookie("__Host-kura_form").unwrap().to_owned();
    let csrf = field(&form_page.body, "csrf");
    let body = serde_urlencoded::to_string([
        ("csrf", csrf.as_str()),
        ("email", c.op.email.as_str()),
        ("password", OPERATOR_PASSWORD),
        ("next", "/console/account"),
    ])
    .unwrap();
    let r = send(
        c.client()
            .post(c.server.url("/console/sign-in"))
            .header("content-type", "application/x-www-form-urlencoded")
            .body(body),
        &[("__Host-kura_form", &form_cookie)],
    )
    .await;
    assert_eq!(r.status, 303, "{}", r.body);
    assert!(r.location.starts_with("/console/mfa"), "{}", r.location);
    r.cookie("__Host-kura_session").unwrap().to_owned()
}

/// The code step, with the box ticked or not: the answer.
async fn code(c: &Console, pending: &str, remember: bool) -> Answer {
    let form = send(
        c.client()
            .get(c.server.url("/console/mfa?next=%2Fconsole%2Faccount")),
        &[("__Host-kura_session", pending)],
    )
    .await;
    assert_eq!(form.status, 200, "{}", form.body);
    assert!(
        form.body.contains("name=\"remember\""),
        "the box is offered"
    );
    assert!(
        !form.body.contains("name=\"remember\" value=\"on\" checked"),
        "and off by default"
    );
    let code = c.fresh_code(&c.op.totp_secret);
    let mut fields = vec![
        ("csrf", field(&form.body, "csrf")),
        ("method", "totp".to_owned()),
        ("next", "/console/account".to_owned()),
        ("code", code),
    ];
    if remember {
        fields.push(("remember", "on".to_owned()));
    }
    let body = serde_urlencoded::to_string(&fields).unwrap();
    send(
        c.client()
            .post(c.server.url("/console/mfa"))
            .header("content-type", "application/x-www-form-urlencoded")
            .body(body),
        &[("__Host-kura_session", pending)],
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_remembered_device_skips_the_code_until_signing_out_everywhere() {
    let c = Console::boot().await;
    // Without the box: signed in, no device cookie.
    let pending = password(&c).await;
    let r = code(&c, &pending, false).await;
    assert_eq!(r.status, 303, "{}", r.body);
    assert!(r.cookie("__Host-kura_device").is_none());
    // A new sign-in still asks for the code.
    let pending = password(&c).await;
    let again = send(
        c.client().get(c.server.url("/console/mfa")),
        &[("__Host-kura_session", &pending)],
    )
    .await;
    assert_eq!(again.status, 200);

    // With the box: a device cookie, HttpOnly and for this site only.
    let r = code(&c, &pending, true).await;
    assert_eq!(r.status, 303, "{}", r.body);
    let device = r
        .cookie("__Host-kura_device")
        .expect("a device cookie")
        .to_owned();
    assert!(device.len() > 20);

    // The next password sign-in goes straight through with the cookie.
    let pending = password(&c).await;
    let r = send(
        c.client()
            .get(c.server.url("/console/mfa?next=%2Fconsole%2Faccount")),
        &[
            ("__Host-kura_session", &pending),
            ("__Host-kura_device", &device),
        ],
    )
    .await;
    assert_eq!(r.status, 303, "{}", r.body);
    assert_eq!(r.location, "/console/account");
    let session = r
        .cookie("__Host-kura_session")
        .expect("a new session")
        .to_owned();
    let account = send(
        c.client().get(c.server.url("/console/account")),
        &[("__Host-kura_session", &session)],
    )
    .await;
    assert_eq!(account.status, 200, "{}", account.body);
    // A made-up cookie is refused and removed.
    let pending = password(&c).await;
    let r = send(
        c.client().get(c.server.url("/console/mfa")),
        &[
            ("__Host-kura_session", &pending),
            ("__Host-kura_device", "made-up-device-token"),
        ],
    )
    .await;
    assert_eq!(r.status, 200);
    assert_eq!(r.cookie("__Host-kura_device"), Some(""));

    // Signing out everywhere forgets the device.
    let r = c
        .client()
        .delete(c.server.url("/api/v1/sessions"))
        .bearer_auth(&c.op.token)
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success(), "{}", r.status());
    let pending = password(&c).await;
    let r = send(
        c.client().get(c.server.url("/console/mfa")),
        &[
            ("__Host-kura_session", &pending),
            ("__Host-kura_device", &device),
        ],
    )
    .await;
    assert_eq!(r.status, 200, "the code is asked for again");
    assert_eq!(
        r.cookie("__Host-kura_device"),
        Some(""),
        "and the cookie removed"
    );
    let actions = c.actions().await;
    assert_eq!(
        actions
            .iter()
            .filter(|a| *a == "auth.device.remembered")
            .count(),
        1
    );
}
