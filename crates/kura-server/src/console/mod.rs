//! The Customer Console: server-rendered pages under `/console/`.
//!
//! Pages are maud templates rendered by handlers that call the same
//! `kura_identity` and `kura_apps` services as the admin API, so every
//! action passes the one policy function (`authorize`, through the
//! services' own checks or `Identity::check`) and records its security
//! events the same way. Forms work without JavaScript; the one stylesheet
//! and the small script are embedded in the binary and served same-origin,
//! so the console's CSP (no inline script or style) holds. `session` holds
//! authentication and CSRF for forms, `page` the shell and form pieces.

mod account;
mod apps;
mod device;
mod firewall;
mod flow_edit;
mod flows;
mod groups;
mod home;
mod import;
mod invite;
mod keys;
mod operator;
mod page;
mod platform;
mod record_edit;
mod records;
mod runs;
mod schema_forms;
mod security;
mod session;
mod signin;
mod stepup;
mod tokens;

use axum::Router;
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use http::{HeaderValue, header};

use crate::http::AppState;

/// The stylesheet's path (versioned by content so it can be cached for long).
const CSS_PATH: &str = "/console/assets/console-v3.css";
/// The script's path.
const JS_PATH: &str = "/console/assets/console-v2.js";
const CSS: &str = include_str!("assets/console.css");
const JS: &str = include_str!("assets/console.js");

fn asset(body: &'static str, content_type: &'static str) -> Response {
    let mut r = body.into_response();
    let h = r.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    h.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("public, max-age=86400, immutable"),
    );
    r
}

fn chrome(who: &session::Signed) -> page::Chrome {
    page::Chrome {
        csrf: Some(who.csrf.clone()),
        operator: who.principal.kind == kura_identity::AccountKind::Operator,
    }
}

/// The console's routes.
pub fn router() -> Router<AppState> {
    Router::new()
        .route("/console", get(|| async { Redirect::to("/console/") }))
        .route("/console/", get(home::show))
        .route(
            CSS_PATH,
            get(|| async { asset(CSS, "text/css; charset=utf-8") }),
        )
        .route(
            JS_PATH,
            get(|| async { asset(JS, "text/javascript; charset=utf-8") }),
        )
        .route(
            "/console/setup",
            get(signin::setup_form).post(signin::setup),
        )
        .route(
            "/console/sign-in",
            get(signin::sign_in_form).post(signin::sign_in),
        )
        .route("/console/sign-out", post(signin::sign_out))
        .route("/console/mfa", get(signin::mfa_form).post(signin::mfa))
        .route(
            "/console/mfa/enrol",
            get(signin::enrol_form).post(signin::enrol),
        )
        .route("/console/mfa/enrol/confirm", post(signin::enrol_confirm))
        .route("/console/account", get(account::show))
        .route("/console/sessions/{id}/revoke", post(account::revoke))
        .route(
            "/console/passkeys/{id}/remove",
            post(account::remove_passkey),
        )
        .route("/console/tokens", get(tokens::show).post(tokens::create))
        .route("/console/tokens/{id}/revoke", post(tokens::revoke))
        .route(
            "/console/invitations/accept",
            get(invite::form).post(invite::accept),
        )
        .route("/console/teams", post(home::create_team))
        .route("/console/teams/{team}", get(home::team))
        .route("/console/teams/{team}/hosts", post(home::create_host))
        .route("/console/teams/{team}/apps", post(home::create_app))
        .route(
            "/console/teams/{team}/hosts/{host}/rename",
            post(home::rename_host),
        )
        .route(
            "/console/teams/{team}/hosts/{host}/delete",
            post(home::delete_host),
        )
        .route("/console/teams/{team}/invitations", post(home::invite))
        .route(
            "/console/teams/{team}/groups",
            get(groups::show).post(groups::create),
        )
        .route(
            "/console/teams/{team}/groups/{group}/members",
            post(groups::members),
        )
        .route(
            "/console/teams/{team}/groups/{group}/roles",
            post(groups::roles),
        )
        .route(
            "/console/operator/incidents",
            get(operator::incidents).post(operator::open_incident),
        )
        .route("/console/operator/incidents/{id}", get(operator::incident))
        .route(
            "/console/operator/incidents/{id}/transitions",
            post(operator::transition),
        )
        .route(
            "/console/operator/incidents/{id}/notes",
            post(operator::add_note),
        )
        .route("/console/operator/events", get(operator::events))
        .route("/console/operator/platform", get(platform::show))
        .route("/console/operator/keys", get(keys::show))
        .route(
            "/console/operator/firewall",
            get(firewall::show).post(firewall::save),
        )
        .route("/console/operator/keys/rotate", post(keys::rotate))
        .route(
            "/console/teams/{team}/flows",
            get(flows::list).post(flow_edit::create),
        )
        .route("/console/teams/{team}/flows/{flow}", get(flows::show))
        .route(
            "/console/teams/{team}/flows/{flow}/versions",
            post(flow_edit::save),
        )
        .route(
            "/console/teams/{team}/flows/{flow}/enable",
            post(flow_edit::enable),
        )
        .route(
            "/console/teams/{team}/flows/{flow}/disable",
            post(flow_edit::disable),
        )
        .route(
            "/console/teams/{team}/flows/{flow}/delete",
            post(flow_edit::delete),
        )
        .route(
            "/console/teams/{team}/flows/{flow}/runs",
            get(runs::list).post(runs::start),
        )
        .route("/console/teams/{team}/runs/{run}", get(runs::show))
        .route(
            "/console/teams/{team}/runs/{run}/cancel",
            post(runs::cancel),
        )
        .route("/console/teams/{team}/runs/{run}/rerun", post(runs::rerun))
        .route("/console/teams/{team}/security", get(security::show))
        .route(
            "/console/teams/{team}/mfa-policy",
            post(security::set_policy),
        )
        .route("/console/teams/{team}/apps/{app}", get(apps::show))
        .route(
            "/console/teams/{team}/apps/{app}/accounts",
            post(records::add_account),
        )
        .route(
            "/console/teams/{team}/apps/{app}/layouts/{layout}",
            get(records::show),
        )
        .route(
            "/console/teams/{team}/apps/{app}/layouts/{layout}/records",
            post(records::create),
        )
        .route(
            "/console/teams/{team}/apps/{app}/layouts/{layout}/records/{id}",
            get(record_edit::show).post(record_edit::update),
        )
        .route(
            "/console/teams/{team}/apps/{app}/layouts/{layout}/records/{id}/delete",
            post(records::delete),
        )
        .route(
            "/console/teams/{team}/apps/{app}/schema",
            post(apps::put_schema),
        )
        .route(
            "/console/teams/{team}/apps/{app}/tables",
            post(apps::add_table),
        )
        .route(
            "/console/teams/{team}/apps/{app}/fields",
            post(apps::add_field),
        )
        .route(
            "/console/teams/{team}/apps/{app}/import",
            get(import::show).post(import::import),
        )
        .route(
            "/console/teams/{team}/apps/{app}/relationships",
            post(schema_forms::relationship),
        )
        .route(
            "/console/teams/{team}/apps/{app}/value-lists",
            post(schema_forms::value_list),
        )
        .route(
            "/console/teams/{team}/apps/{app}/privilege-sets",
            post(schema_forms::privilege_set),
        )
        .route(
            "/console/teams/{team}/apps/{app}/rename",
            post(apps::rename),
        )
        .route(
            "/console/teams/{team}/apps/{app}/status",
            post(apps::set_status),
        )
        .route(
            "/console/teams/{team}/apps/{app}/delete",
            post(apps::delete),
        )
}
