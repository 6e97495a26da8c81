//! Accepting an invitation with a new account. The invitation link carries
//! its token in the URL fragment, which the browser never sends; the small
//! script copies it into the form (without script, it is pasted).

use axum::extract::{Query, State};
use axum::response::Response;
use http::{HeaderMap, StatusCode};
use kura_identity::Acceptance;
use maud::{Markup, html};
use secrecy::SecretString;
use serde::Deserialize;

use super::page::{self, Chrome, Field, Nav};
use super::session::{PublicForm, done, form_token};
use crate::http::AppState;
use crate::http::api::auth::{finish, with_cookie};
use crate::http::api::error::ApiError;

/// The acceptance form.
#[derive(Debug, Default, Deserialize)]
pub struct AcceptForm {
    #[serde(default)]
    token: String,
    #[serde(default)]
    display_name: String,
    #[serde(default)]
    password: String,
}

#[derive(Default)]
struct Errors {
    form: Option<String>,
    token: Option<String>,
    display_name: Option<String>,
    password: Option<String>,
}

fn accept_page(csrf: &str, f: &AcceptForm, e: &Errors) -> Markup {
    page::shell(
        "Join a team",
        Nav::None,
        &Chrome::default(),
        html! {
            div.auth {
                p.auth-brand { span.logo aria-hidden="true" { "K" } " Kura" }
                section.card {
                    h1 { "Join your team" }
                    p.lead { "Choose your name and a password for your new Kura account." }
                    (page::form_error(e.form.as_deref()))
                    form method="post" action="/console/invitations/accept" novalidate {
                        (page::csrf(csrf))
                        (Field::new("token", "Invitation code").value(&f.token).error(e.token.as_deref())
                            .hint("Filled in from your invitation link.").render())
                        (Field::new("display_name", "Your name").value(&f.display_name).error(e.display_name.as_deref()).autocomplete("name").render())
                        (Field::new("password", "Password").kind("password").error(e.password.as_deref()).autocomplete("new-password")
                            .hint("At least 12 characters; a long phrase is best.").render())
                        button.primary type="submit" { "Create account and join" }
                    }
                }
            }
        },
    )
}

/// `GET /console/invitations/accept`.
pub async fn form(headers: HeaderMap, Query(_): Query<super::account::OkQuery>) -> Response {
    let (csrf, cookie) = match form_token(&headers) {
        Ok(t) => t,
        Err(e) => return page::api_error_page(&e),
    };
    with_cookie(
        page::respond(
            StatusCode::OK,
            accept_page(&csrf, &AcceptForm::default(), &Errors::default()),
        ),
        cookie,
    )
}

/// `POST /console/invitations/accept`.
pub async fn accept(State(state): State<AppState>, p: PublicForm<AcceptForm>) -> Response {
    use kura_identity::IdentityError as I;
    let f = p.form;
    let password = SecretString::from(f.password.clone());
    let audited = state
        .identity
        .at(p.ctx.facts())
        .accept_invitation(
            f.token.trim(),
            Acceptance::NewAccount {
                display_name: &f.display_name,
                password: &password,
            },
        )
        .await;
    match finish(&state, &p.ctx, audited).await {
        Ok(_) => done("/console/sign-in", "joined"),
        Err(e) => {
            let msg = page::message(&e);
            let mut errors = Errors::default();
            match &e {
                ApiError::Identity(I::BadToken(_)) => errors.token = Some(msg),
                ApiError::Identity(I::WeakPassword(_)) => errors.password = Some(msg),
                ApiError::Identity(I::InvalidAttribute(_)) => errors.display_name = Some(msg),
                _ => errors.form = Some(msg),
            }
            let kept = AcceptForm {
                password: String::new(),
                ..f
            };
            page::invalid(accept_page(&p.csrf, &kept, &errors))
        }
    }
}
