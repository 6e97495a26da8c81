//! The page shell and the pieces every page uses: navigation, messages,
//! form fields with their errors, and error pages.

use axum::response::{Html, IntoResponse, Response};
use http::{HeaderValue, StatusCode, header};
use maud::{DOCTYPE, Markup, html};

use crate::http::api::error::ApiError;

/// Where a page sits in the navigation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Nav {
    /// Not in the navigation (sign-in, setup).
    None,
    /// The home page: my teams.
    Home,
    /// A team's pages.
    Team,
    /// My account: sessions, security.
    Account,
    /// My API tokens.
    Tokens,
    /// Operators: the platform overview.
    Platform,
    /// Operators: incidents.
    Incidents,
    /// Operators: the security event search.
    Events,
    /// Operators: the master key.
    Keys,
    /// Operators: the platform firewall.
    Firewall,
}

/// What the shell needs to know about the person.
#[derive(Debug, Clone, Default)]
pub struct Chrome {
    /// The CSRF token for the sign-out form (signed in only).
    pub csrf: Option<String>,
    /// Whether the person is a platform operator.
    pub operator: bool,
}

/// A whole page.
pub fn shell(title: &str, nav: Nav, chrome: &Chrome, body: Markup) -> Markup {
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                title { (title) " · Kura Console" }
                link rel="stylesheet" href=(super::CSS_PATH);
                link rel="icon" href="data:,";
                script src=(super::JS_PATH) defer {}
            }
            body.with-nav[nav != Nav::None] {
                a.skip href="#main" { "Skip to content" }
                @if nav != Nav::None {
                    header.sidebar {
                        a.brand href="/console/" { span.logo aria-hidden="true" { "K" } "Kura" }
                        @if chrome.operator { span.role-tag { "Operator" } }
                        nav aria-label="Main" {
                            ul {
                                li { a href="/console/" aria-current=[current(nav, Nav::Home)] { "Teams" } }
                                @if chrome.operator {
                                    li { a href="/console/operator/platform" aria-current=[current(nav, Nav::Platform)] { "Platform" } }
                                    li { a href="/console/operator/incidents" aria-current=[current(nav, Nav::Incidents)] { "Incidents" } }
                                    li { a href="/console/operator/events" aria-current=[current(nav, Nav::Events)] { "Security events" } }
                                    li { a href="/console/operator/keys" aria-current=[current(nav, Nav::Keys)] { "Keys" } }
                                    li { a href="/console/operator/firewall" aria-current=[current(nav, Nav::Firewall)] { "Firewall" } }
                                }
                                li { a href="/console/account" aria-current=[current(nav, Nav::Account)] { "Account & sessions" } }
                                li { a href="/console/tokens" aria-current=[current(nav, Nav::Tokens)] { "API tokens" } }
                            }
                        }
                        @if let Some(csrf) = &chrome.csrf {
                            form.signout method="post" action="/console/sign-out" {
                                input type="hidden" name="csrf" value=(csrf);
                                button.link type="submit" { "Sign out" }
                            }
                        }
                    }
                }
                main #main tabindex="-1" { (body) }
            }
        }
    }
}

fn current(nav: Nav, item: Nav) -> Option<&'static str> {
    // A team's pages belong under "Teams".
    let nav = if nav == Nav::Team { Nav::Home } else { nav };
    (nav == item).then_some("page")
}

/// A page response.
pub fn respond(status: StatusCode, markup: Markup) -> Response {
    let mut r = (status, Html(markup.into_string())).into_response();
    r.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    r
}

/// A page with a form that failed validation: 422, the form rendered again.
pub fn invalid(markup: Markup) -> Response {
    respond(StatusCode::UNPROCESSABLE_ENTITY, markup)
}

/// A plain error page.
pub fn error_page(status: StatusCode, title: &str, detail: &str) -> Response {
    respond(
        status,
        shell(
            title,
            Nav::None,
            &Chrome::default(),
            html! {
                section.card.narrow role="alert" {
                    h1 { (title) }
                    p { (detail) }
                    p { a.button href="/console/" { "Back to the console" } }
                }
            },
        ),
    )
}

/// The error page for a failed service call.
pub fn api_error_page(e: &ApiError) -> Response {
    use kura_identity::DenyReason as D;
    if let ApiError::Identity(kura_identity::IdentityError::Denied(
        D::MfaRequired | D::PasskeyRequired,
    )) = e
    {
        let title = "A second factor is required";
        return respond(
            StatusCode::FORBIDDEN,
            shell(
                title,
                Nav::None,
                &Chrome::default(),
                html! {
                    section.card.narrow role="alert" {
                        h1 { (title) }
                        p { (message(e)) }
                        p { a.button.primary href="/console/mfa/enrol" { "Set up a second factor" } " " a.button href="/console/account" { "Passkeys" } }
                    }
                },
            ),
        );
    }
    let (status, title) = match e {
        ApiError::Identity(kura_identity::IdentityError::Denied(_)) => {
            (StatusCode::FORBIDDEN, "Not allowed")
        }
        ApiError::Identity(kura_identity::IdentityError::NotFound(_)) => {
            (StatusCode::NOT_FOUND, "Not found")
        }
        ApiError::Apps(kura_apps::AppsError::NotFound(_))
        | ApiError::Connect(
            kura_connect::ConnectError::NotFound(_)
            | kura_connect::ConnectError::Store(kura_store::StoreError::NotFound(_)),
        ) => (StatusCode::NOT_FOUND, "Not found"),
        ApiError::Conflict(_) => (StatusCode::CONFLICT, "That did not work"),
        ApiError::Throttled(_) => (StatusCode::TOO_MANY_REQUESTS, "Too many attempts"),
        ApiError::EventNotRecorded | ApiError::Internal => {
            (StatusCode::INTERNAL_SERVER_ERROR, "Something went wrong")
        }
        _ => (StatusCode::BAD_REQUEST, "That did not work"),
    };
    error_page(status, title, &message(e))
}

/// What to tell a person about a failed service call. Sign-in failures say
/// what to do without revealing whether the account exists.
pub fn message(e: &ApiError) -> String {
    use kura_identity::IdentityError as I;
    match e {
        ApiError::Throttled(secs) => format!(
            "Too many attempts. Wait {} and try again; if you forgot your password, ask your team owner or operator to reset it.",
            seconds(*secs)
        ),
        ApiError::Identity(I::InvalidCredentials) => {
            "The email address or password is wrong.".to_owned()
        }
        ApiError::Identity(I::InvalidCode) => {
            "That code is wrong or was already used. Enter the current code from your app."
                .to_owned()
        }
        ApiError::Identity(I::Denied(reason)) => match reason {
            kura_identity::DenyReason::MfaRequired => {
                "Your team or role requires a second factor for this session: set up an authenticator app (or sign in again with one), then try again.".to_owned()
            }
            kura_identity::DenyReason::PasskeyRequired => {
                "Your team requires a passkey: add one under Account & sessions and sign in with it.".to_owned()
            }
            kura_identity::DenyReason::StepUpRequired => {
                "This needs a fresh second-factor check: sign out and in again, then retry."
                    .to_owned()
            }
            _ => "You are not allowed to do this.".to_owned(),
        },
        ApiError::Identity(I::BadToken(p)) => {
            format!("This link is {}. Ask for a new one.", p.as_str())
        }
        ApiError::Identity(I::Store(_) | I::Internal(_) | I::Corrupt(_))
        | ApiError::EventNotRecorded
        | ApiError::Internal => {
            "Something went wrong on our side; nothing was changed. Try again in a moment."
                .to_owned()
        }
        ApiError::Identity(other) => capitalise(&other.to_string()),
        ApiError::Apps(a) => capitalise(&a.to_string()),
        ApiError::Invalid { message, .. } => capitalise(message),
        ApiError::Connect(
            c @ (kura_connect::ConnectError::NotFound(_) | kura_connect::ConnectError::Invalid(_)),
        ) => format!("{}.", capitalise(&c.to_string())),
        ApiError::Conflict(m) => format!("{}; nothing was changed.", capitalise(m)),
        _ => "The request was refused; nothing was changed.".to_owned(),
    }
}

fn seconds(secs: u64) -> String {
    if secs < 90 {
        format!("{secs} seconds")
    } else {
        format!("{} minutes", secs.div_ceil(60))
    }
}

fn capitalise(s: &str) -> String {
    let mut c = s.chars();
    match c.next() {
        Some(f) => f.to_uppercase().collect::<String>() + c.as_str(),
        None => String::new(),
    }
}

/// One labelled input with its error (if any) and the kept value.
pub struct Field<'a> {
    /// The form name.
    pub name: &'a str,
    /// The visible label.
    pub label: &'a str,
    /// The input type.
    pub kind: &'a str,
    /// The value to show again (never for passwords).
    pub value: &'a str,
    /// The error beside the field.
    pub error: Option<&'a str>,
    /// The `autocomplete` hint.
    pub autocomplete: &'a str,
    /// A hint under the label.
    pub hint: Option<&'a str>,
}

impl<'a> Field<'a> {
    /// A text field.
    pub fn new(name: &'a str, label: &'a str) -> Self {
        Self {
            name,
            label,
            kind: "text",
            value: "",
            error: None,
            autocomplete: "off",
            hint: None,
        }
    }

    /// With an input type.
    pub fn kind(mut self, kind: &'a str) -> Self {
        self.kind = kind;
        self
    }

    /// With a kept value.
    pub fn value(mut self, value: &'a str) -> Self {
        self.value = value;
        self
    }

    /// With an error.
    pub fn error(mut self, error: Option<&'a str>) -> Self {
        self.error = error;
        self
    }

    /// With an autocomplete hint.
    pub fn autocomplete(mut self, a: &'a str) -> Self {
        self.autocomplete = a;
        self
    }

    /// With a hint.
    pub fn hint(mut self, h: &'a str) -> Self {
        self.hint = Some(h);
        self
    }

    /// The markup of an optional field.
    pub fn render_optional(&self) -> Markup {
        self.markup(false)
    }

    /// The markup.
    pub fn render(&self) -> Markup {
        self.markup(true)
    }

    fn markup(&self, required: bool) -> Markup {
        let id = format!("f-{}", self.name);
        let err_id = format!("{id}-error");
        let hint_id = format!("{id}-hint");
        let described = match (self.error.is_some(), self.hint.is_some()) {
            (true, true) => Some(format!("{err_id} {hint_id}")),
            (true, false) => Some(err_id.clone()),
            (false, true) => Some(hint_id.clone()),
            (false, false) => None,
        };
        html! {
            div.field.has-error[self.error.is_some()] {
                label for=(id) { (self.label) }
                @if let Some(h) = self.hint { p.hint id=(hint_id) { (h) } }
                input id=(id) name=(self.name) type=(self.kind) value=(self.value)
                    autocomplete=(self.autocomplete) required[required]
                    aria-invalid=[self.error.map(|_| "true")]
                    aria-describedby=[described];
                @if let Some(e) = self.error { p.error id=(err_id) { (e) } }
            }
        }
    }
}

/// The hidden CSRF field of a form.
pub fn csrf(token: &str) -> Markup {
    html! { input type="hidden" name="csrf" value=(token); }
}

/// A message at the top of a form (for errors not tied to one field).
pub fn form_error(e: Option<&str>) -> Markup {
    html! {
        @if let Some(e) = e { p.alert.alert-error role="alert" { (e) } }
    }
}

/// A confirmation after a successful change (from the `ok` parameter).
pub fn notice(ok: Option<&str>) -> Markup {
    let text = match ok {
        Some("host-created") => "Host created.",
        Some("app-created") => "App created.",
        Some("host-renamed") => "Host renamed.",
        Some("host-deleted") => "Host deleted.",
        Some("invited") => "Invitation sent.",
        Some("session-revoked") => "Session ended.",
        Some("passkey-added") => "Passkey added.",
        Some("token-created") => "Token created.",
        Some("record-created") => "Record created.",
        Some("mfa-policy-saved") => "Requirement saved.",
        Some("record-deleted") => "Record deleted.",
        Some("record-saved") => "Record saved.",
        Some("imported") => "Import finished.",
        Some("group-created") => "Group created.",
        Some("group-member-added") => "Member added to the group.",
        Some("group-member-removed") => "Member removed from the group.",
        Some("group-role-granted") => "Role granted to the group.",
        Some("group-role-revoked") => "Role revoked from the group.",
        Some("account-added") => "App account added.",
        Some("token-revoked") => "Token revoked: it no longer works.",
        Some("passkey-removed") => "Passkey removed.",
        Some("signed-in") => "Signed in.",
        Some("app-renamed") => "App renamed.",
        Some("app-opened") => "App opened.",
        Some("app-closed") => "App closed: client sessions ended.",
        Some("app-deleted") => "App deleted.",
        Some("flow-created") => "Flow created (disabled): enable it when it looks right.",
        Some("flow-saved") => "Flow saved as a new version.",
        Some("flow-enabled") => "Flow enabled: its trigger now starts runs.",
        Some("flow-disabled") => "Flow disabled: its trigger no longer starts runs.",
        Some("flow-deleted") => "Flow deleted with its versions and runs.",
        Some("run-started") => "Run queued.",
        Some("run-cancelled") => "Run cancelled.",
        Some("joined") => "Welcome! Your account is ready: sign in to continue.",
        _ => return html! {},
    };
    html! { p.alert.alert-ok role="status" { (text) } }
}

/// A timestamp for people.
pub fn when(t: time::OffsetDateTime) -> String {
    let f = time::macros::format_description!("[year]-[month]-[day] [hour]:[minute] UTC");
    t.to_offset(time::UtcOffset::UTC)
        .format(&f)
        .unwrap_or_default()
}

/// A path names something that does not exist (or is not well-formed).
#[derive(Debug, Clone, Copy)]
pub struct Missing(pub &'static str);

impl IntoResponse for Missing {
    fn into_response(self) -> Response {
        error_page(
            StatusCode::NOT_FOUND,
            "Not found",
            &format!("There is no such {}.", self.0),
        )
    }
}
