//! First-operator setup, sign-in with a second factor, TOTP enrolment and
//! sign-out. Every step calls the same `kura_identity` method as the API's
//! `/api/v1/setup`, `/api/v1/sessions…` and `/api/v1/me/mfa…` handlers and
//! records its events the same way (`finish`).

use axum::extract::{Query, State};
use axum::response::{IntoResponse, Redirect, Response};
use http::{HeaderMap, StatusCode};
use kura_identity::{SessionStage, SignedIn};
use maud::{Markup, html};
use secrecy::{ExposeSecret as _, SecretString};
use serde::Deserialize;

use super::page::{self, Chrome, Field, Nav};
use super::session::{AnyStage, PublicForm, SessionForm, form_token, safe_next, stage};
use crate::http::AppState;
use crate::http::api::auth::{Via, clear_cookie, finish, session_parts, with_cookie};
use crate::http::api::error::ApiError;

/// Sends the person on with a new session cookie.
fn with_session(to: &str, signed: &SignedIn) -> Response {
    let (_, cookie) = session_parts(signed, Via::Cookie);
    with_cookie(Redirect::to(to).into_response(), cookie)
}

/// Where a new session goes next.
fn next_for(stage: SessionStage, next: &str) -> String {
    let q = serde_urlencoded::to_string([("next", next)]).unwrap_or_default();
    match stage {
        SessionStage::Complete => next.to_owned(),
        SessionStage::MfaPending => format!("/console/mfa?{q}"),
        SessionStage::MfaEnrolment => format!("/console/mfa/enrol?{q}"),
    }
}

fn public_page(title: &str, body: Markup) -> Markup {
    page::shell(
        title,
        Nav::None,
        &Chrome::default(),
        html! {
            div.auth {
                p.auth-brand { span.logo aria-hidden="true" { "K" } " Kura" }
                section.card { (body) }
            }
        },
    )
}

// ----- setup -----

/// `?token=` of the setup link.
#[derive(Debug, Deserialize)]
pub struct SetupQuery {
    #[serde(default)]
    token: String,
}

/// The setup form.
#[derive(Debug, Default, Deserialize)]
pub struct SetupForm {
    #[serde(default)]
    token: String,
    #[serde(default)]
    email: String,
    #[serde(default)]
    display_name: String,
    #[serde(default)]
    password: String,
}

#[derive(Default)]
struct SetupErrors {
    form: Option<String>,
    email: Option<String>,
    display_name: Option<String>,
    password: Option<String>,
}

fn setup_page(csrf: &str, f: &SetupForm, e: &SetupErrors) -> Markup {
    public_page(
        "Set up Kura",
        html! {
            h1 { "Set up Kura" }
            p.lead { "Create the first operator account. It will manage the platform; you will set up an authenticator app next." }
            (page::form_error(e.form.as_deref()))
            form method="post" action="/console/setup" novalidate {
                (page::csrf(csrf))
                input type="hidden" name="token" value=(f.token);
                (Field::new("email", "Email address").kind("email").value(&f.email).error(e.email.as_deref()).autocomplete("username").render())
                (Field::new("display_name", "Your name").value(&f.display_name).error(e.display_name.as_deref()).autocomplete("name").render())
                (Field::new("password", "Password").kind("password").error(e.password.as_deref()).autocomplete("new-password")
                    .hint("At least 12 characters; a long phrase is best.").render())
                button.primary type="submit" { "Create operator" }
            }
        },
    )
}

/// `GET /console/setup?token=…`.
pub async fn setup_form(headers: HeaderMap, Query(q): Query<SetupQuery>) -> Response {
    let (csrf, cookie) = match form_token(&headers) {
        Ok(t) => t,
        Err(e) => return page::api_error_page(&e),
    };
    if q.token.is_empty() {
        return page::error_page(
            StatusCode::BAD_REQUEST,
            "Setup link incomplete",
            "Open the full setup link that `kura serve` printed (it ends with ?token=…).",
        );
    }
    let f = SetupForm {
        token: q.token,
        ..SetupForm::default()
    };
    with_cookie(
        page::respond(
            StatusCode::OK,
            setup_page(&csrf, &f, &SetupErrors::default()),
        ),
        cookie,
    )
}

/// `POST /console/setup`.
pub async fn setup(State(state): State<AppState>, p: PublicForm<SetupForm>) -> Response {
    let f = p.form;
    let password = SecretString::from(f.password.clone());
    let audited = state
        .identity
        .at(p.ctx.facts())
        .create_first_operator(&f.token, &f.email, &f.display_name, &password, p.ctx.source)
        .await;
    match finish(&state, &p.ctx, audited).await {
        Ok(signed) => with_session(&next_for(signed.stage, "/console/"), &signed),
        Err(e) => {
            use kura_identity::IdentityError as I;
            let mut errors = SetupErrors::default();
            let msg = page::message(&e);
            match &e {
                ApiError::Identity(I::WeakPassword(_)) => errors.password = Some(msg),
                ApiError::Identity(I::InvalidAttribute(a)) => {
                    if a.to_string().contains("name") {
                        errors.display_name = Some(msg);
                    } else {
                        errors.email = Some(msg);
                    }
                }
                ApiError::Identity(I::SetupComplete) => {
                    return page::error_page(
                        StatusCode::CONFLICT,
                        "Setup is already complete",
                        "This installation already has its operator. Sign in instead.",
                    );
                }
                _ => errors.form = Some(msg),
            }
            let kept = SetupForm {
                password: String::new(),
                ..f
            };
            page::invalid(setup_page(&p.csrf, &kept, &errors))
        }
    }
}

// ----- sign-in -----

/// `?next=`.
#[derive(Debug, Default, Deserialize)]
pub struct NextQuery {
    #[serde(default)]
    next: Option<String>,
    #[serde(default)]
    ok: Option<String>,
}

/// The sign-in form.
#[derive(Debug, Default, Deserialize)]
pub struct SignInForm {
    #[serde(default)]
    email: String,
    #[serde(default)]
    password: String,
    #[serde(default)]
    next: String,
}

fn sign_in_page(csrf: &str, f: &SignInForm, error: Option<&str>, ok: Option<&str>) -> Markup {
    public_page(
        "Sign in",
        html! {
            (page::notice(ok))
            h1 { "Sign in" }
            (page::form_error(error))
            form method="post" action="/console/sign-in" novalidate {
                (page::csrf(csrf))
                input type="hidden" name="next" value=(f.next);
                (Field::new("email", "Email address").kind("email").value(&f.email).autocomplete("username").render())
                (Field::new("password", "Password").kind("password").autocomplete("current-password").render())
                button.primary type="submit" { "Sign in" }
            }
            div.alt {
                button #passkey-sign-in type="button" hidden data-next=(f.next) { "Sign in with a passkey" }
                p.error #passkey-error role="alert" hidden {}
            }
            p.muted { "Trouble signing in? Ask your team owner, or an operator, to reset your password or second factor." }
        },
    )
}

/// `GET /console/sign-in`.
pub async fn sign_in_form(headers: HeaderMap, Query(q): Query<NextQuery>) -> Response {
    let (csrf, cookie) = match form_token(&headers) {
        Ok(t) => t,
        Err(e) => return page::api_error_page(&e),
    };
    let f = SignInForm {
        next: safe_next(q.next.as_deref()),
        ..SignInForm::default()
    };
    with_cookie(
        page::respond(
            StatusCode::OK,
            sign_in_page(&csrf, &f, None, q.ok.as_deref()),
        ),
        cookie,
    )
}

/// `POST /console/sign-in`.
pub async fn sign_in(State(state): State<AppState>, p: PublicForm<SignInForm>) -> Response {
    let f = p.form;
    let password = SecretString::from(f.password.clone());
    let audited = state
        .identity
        .at(p.ctx.facts())
        .sign_in_password(&f.email, &password, p.ctx.source)
        .await;
    match finish(&state, &p.ctx, audited).await {
        Ok(step) => {
            let signed = step.into_signed_in();
            let next = safe_next(Some(&f.next));
            with_session(&next_for(signed.stage, &next), &signed)
        }
        Err(e) => {
            let status = match e {
                ApiError::Throttled(_) => StatusCode::TOO_MANY_REQUESTS,
                _ => StatusCode::UNPROCESSABLE_ENTITY,
            };
            let msg = page::message(&e);
            let kept = SignInForm {
                password: String::new(),
                ..f
            };
            page::respond(status, sign_in_page(&p.csrf, &kept, Some(&msg), None))
        }
    }
}

// ----- second factor -----

/// The code form (TOTP or recovery code).
#[derive(Debug, Default, Deserialize)]
pub struct CodeForm {
    #[serde(default)]
    code: String,
    #[serde(default)]
    method: String,
    #[serde(default)]
    next: String,
    /// `on` to remember this device (the box is off by default).
    #[serde(default)]
    remember: String,
}

fn mfa_page(csrf: &str, next: &str, error: Option<&str>, recovery: bool) -> Markup {
    public_page(
        "Second factor",
        html! {
            h1 { "Confirm it is you" }
            @if recovery {
                p.lead { "Enter one of your recovery codes. Each works once." }
            } @else {
                p.lead { "Enter the 6-digit code from your authenticator app." }
            }
            form method="post" action="/console/mfa" novalidate {
                (page::csrf(csrf))
                input type="hidden" name="next" value=(next);
                input type="hidden" name="method" value=(if recovery { "recovery" } else { "totp" });
                (Field::new("code", if recovery { "Recovery code" } else { "Code" })
                    .error(error).autocomplete("one-time-code").render())
                label.check.remember {
                    input #f-remember type="checkbox" name="remember" value="on";
                    "Remember this device for " (kura_identity::REMEMBER_DEVICE_FOR.whole_days()) " days"
                }
                p.hint { "Only on a device you alone use. Signing out everywhere or changing your password forgets it." }
                button.primary type="submit" { "Verify" }
            }
            div.alt {
                @if recovery {
                    a href={ "/console/mfa?next=" (urlenc(next)) } { "Use the authenticator app instead" }
                } @else {
                    a href={ "/console/mfa?method=recovery&next=" (urlenc(next)) } { "Use a recovery code" }
                }
            }
        },
    )
}

fn urlenc(s: &str) -> String {
    serde_urlencoded::to_string([("", s)])
        .map(|q| q.trim_start_matches('=').to_owned())
        .unwrap_or_default()
}

/// `?method=&next=`.
#[derive(Debug, Default, Deserialize)]
pub struct MfaQuery {
    #[serde(default)]
    method: Option<String>,
    #[serde(default)]
    next: Option<String>,
}

/// `GET /console/mfa`: a remembered device completes the sign-in at
/// once; otherwise the code form.
pub async fn mfa_form(
    State(state): State<AppState>,
    headers: HeaderMap,
    AnyStage(who): AnyStage,
    Query(q): Query<MfaQuery>,
) -> Response {
    let next = safe_next(q.next.as_deref());
    match stage(&who.principal) {
        Some(SessionStage::MfaPending) => {
            let stale = match super::device::try_cookie(&state, &who, &headers).await {
                super::device::Outcome::SignedIn(s) => return with_session(&next, &s),
                super::device::Outcome::Absent => None,
                super::device::Outcome::Stale(clear) => Some(clear),
            };
            let form = page::respond(
                StatusCode::OK,
                mfa_page(
                    &who.csrf,
                    &next,
                    None,
                    q.method.as_deref() == Some("recovery"),
                ),
            );
            with_cookie(form, stale)
        }
        Some(s) => Redirect::to(&next_for(s, &next)).into_response(),
        None => Redirect::to("/console/sign-in").into_response(),
    }
}

/// `POST /console/mfa`.
pub async fn mfa(State(state): State<AppState>, p: SessionForm<CodeForm>) -> Response {
    let f = p.form;
    let recovery = f.method == "recovery";
    let audited = if recovery {
        state
            .identity
            .at(p.who.ctx.facts())
            .use_recovery_code(&p.who.principal, f.code.trim())
            .await
    } else {
        state
            .identity
            .at(p.who.ctx.facts())
            .verify_totp(&p.who.principal, f.code.trim())
            .await
    };
    let next = safe_next(Some(&f.next));
    match finish(&state, &p.who.ctx, audited).await {
        Ok(v) => match v.session {
            Some(signed) => {
                let device = if f.remember == "on" {
                    match super::device::remember(&state, &p.who.ctx, &signed).await {
                        Ok(c) => Some(c),
                        Err(e) => return page::api_error_page(&e),
                    }
                } else {
                    None
                };
                with_cookie(with_session(&next, &signed), device)
            }
            None => Redirect::to(&next).into_response(),
        },
        Err(e) => {
            let status = match e {
                ApiError::Throttled(_) => StatusCode::TOO_MANY_REQUESTS,
                _ => StatusCode::UNPROCESSABLE_ENTITY,
            };
            page::respond(
                status,
                mfa_page(&p.who.csrf, &next, Some(&page::message(&e)), recovery),
            )
        }
    }
}

// ----- TOTP enrolment -----

/// The confirmation form (the secret travels back only to show it again).
#[derive(Debug, Default, Deserialize)]
pub struct EnrolForm {
    #[serde(default)]
    code: String,
    #[serde(default)]
    secret: String,
    #[serde(default)]
    uri: String,
    #[serde(default)]
    next: String,
}

fn enrol_start_page(csrf: &str, next: &str) -> Markup {
    public_page(
        "Set up your authenticator",
        html! {
            h1 { "Set up an authenticator app" }
            p.lead { "Your account needs a second factor. You will scan a code with an app such as Aegis, 1Password or Google Authenticator." }
            form method="post" action="/console/mfa/enrol" {
                (page::csrf(csrf))
                input type="hidden" name="next" value=(next);
                button.primary type="submit" { "Show my setup key" }
            }
        },
    )
}

/// The `otpauth://` URI as a QR code image: an SVG in a `data:` URL, which
/// the console's CSP allows for images (`img-src 'self' data:`), so the
/// secret never travels in a URL to the server. `None` for anything that is
/// not an `otpauth://` URI or does not fit in a QR code.
pub(super) fn qr_data_url(uri: &str) -> Option<String> {
    use base64::Engine as _;
    if !uri.starts_with("otpauth://") {
        return None;
    }
    let code = qrcode::QrCode::new(uri.as_bytes()).ok()?;
    let svg = code
        .render::<qrcode::render::svg::Color<'_>>()
        .min_dimensions(200, 200)
        .quiet_zone(true)
        .build();
    Some(format!(
        "data:image/svg+xml;base64,{}",
        base64::engine::general_purpose::STANDARD.encode(svg)
    ))
}

fn enrol_confirm_page(csrf: &str, f: &EnrolForm, error: Option<&str>) -> Markup {
    public_page(
        "Set up your authenticator",
        html! {
            h1 { "Add Kura to your authenticator app" }
            ol.steps {
                li { "In your app, add an account: scan the QR code, enter the setup key, or open the link on a phone." }
            }
            @if let Some(qr) = qr_data_url(&f.uri) {
                img.qr #totp-qr src=(qr) width="200" height="200" alt="QR code of your setup key: scan it with your authenticator app";
            }
            p { code.secret #totp-secret { (f.secret) } }
            p { a.otpauth #totp-uri href=(f.uri) { "Open in an authenticator app" } }
            form method="post" action="/console/mfa/enrol/confirm" novalidate {
                (page::csrf(csrf))
                input type="hidden" name="next" value=(f.next);
                input type="hidden" name="secret" value=(f.secret);
                input type="hidden" name="uri" value=(f.uri);
                (Field::new("code", "The 6-digit code your app shows").error(error).autocomplete("one-time-code").render())
                button.primary type="submit" { "Confirm" }
            }
        },
    )
}

/// `GET /console/mfa/enrol`.
pub async fn enrol_form(AnyStage(who): AnyStage, Query(q): Query<NextQuery>) -> Response {
    let next = safe_next(q.next.as_deref());
    page::respond(StatusCode::OK, enrol_start_page(&who.csrf, &next))
}

/// `POST /console/mfa/enrol`: starts (or restarts) enrolment.
pub async fn enrol(State(state): State<AppState>, p: SessionForm<NextQuery>) -> Response {
    let audited = state
        .identity
        .at(p.who.ctx.facts())
        .enroll_totp(&p.who.principal)
        .await;
    match finish(&state, &p.who.ctx, audited).await {
        Ok(e) => {
            let f = EnrolForm {
                secret: e.secret_base32.expose_secret().to_owned(),
                uri: e.otpauth_uri.expose_secret().to_owned(),
                next: safe_next(p.form.next.as_deref()),
                code: String::new(),
            };
            page::respond(StatusCode::OK, enrol_confirm_page(&p.who.csrf, &f, None))
        }
        Err(e) => page::api_error_page(&e),
    }
}

fn recovery_page(codes: &[&str], next: &str) -> Markup {
    public_page(
        "Recovery codes",
        html! {
            h1 { "Save your recovery codes" }
            p.lead { "If you lose your phone, each of these codes signs you in once. They are shown only now: store them somewhere safe." }
            ul.codes #recovery-codes { @for c in codes { li { code { (c) } } } }
            p { a.button.primary href=(next) { "I have saved them — continue" } }
        },
    )
}

/// `POST /console/mfa/enrol/confirm`.
pub async fn enrol_confirm(State(state): State<AppState>, p: SessionForm<EnrolForm>) -> Response {
    let f = p.form;
    let audited = state
        .identity
        .at(p.who.ctx.facts())
        .confirm_totp(&p.who.principal, f.code.trim())
        .await;
    let next = safe_next(Some(&f.next));
    match finish(&state, &p.who.ctx, audited).await {
        Ok(c) => {
            let codes = c.recovery_codes.reveal();
            let body = page::respond(StatusCode::OK, recovery_page(&codes, &next));
            let cookie = c
                .session
                .as_ref()
                .and_then(|s| session_parts(s, Via::Cookie).1);
            with_cookie(body, cookie)
        }
        Err(e) => {
            let msg = page::message(&e);
            page::invalid(enrol_confirm_page(&p.who.csrf, &f, Some(&msg)))
        }
    }
}

// ----- sign-out -----

/// An empty form.
#[derive(Debug, Default, Deserialize)]
pub struct Empty {}

/// `POST /console/sign-out`.
pub async fn sign_out(State(state): State<AppState>, p: SessionForm<Empty>) -> Response {
    let audited = state
        .identity
        .at(p.who.ctx.facts())
        .sign_out(&p.who.principal)
        .await;
    match finish(&state, &p.who.ctx, audited).await {
        Ok(()) => with_cookie(
            Redirect::to("/console/sign-in").into_response(),
            Some(clear_cookie()),
        ),
        Err(e) => page::api_error_page(&e),
    }
}

#[cfg(test)]
mod tests {
    use base64::Engine as _;

    use super::qr_data_url;

    #[test]
    fn the_setup_key_qr_code_is_an_svg_data_url_of_the_uri() {
        let uri = "otpauth://totp/Kura:ada%40example.test?secret=JBSWY3DPEHPK3PXP&issuer=Kura";
        let url = qr_data_url(uri).expect("a QR code");
        let b64 = url
            .strip_prefix("data:image/svg+xml;base64,")
            .expect("an SVG data URL");
        let svg = String::from_utf8(
            base64::engine::general_purpose::STANDARD
                .decode(b64)
                .expect("base64"),
        )
        .expect("UTF-8");
        assert!(svg.contains("<svg"), "{svg}");
        // The same URI gives the same picture; another URI another one.
        assert_eq!(qr_data_url(uri), Some(url.clone()));
        assert_ne!(
            qr_data_url("otpauth://totp/Kura:bob?secret=GEZDGNBVGY3TQOJQ"),
            Some(url)
        );
    }

    #[test]
    fn only_otpauth_uris_become_qr_codes() {
        assert_eq!(qr_data_url("https://evil.test/"), None);
        assert_eq!(qr_data_url(""), None);
        assert_eq!(
            qr_data_url(&format!("otpauth://{}", "x".repeat(8000))),
            None
        );
    }
}
