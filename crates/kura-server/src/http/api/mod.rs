//! Kura ID's admin API under `/api/v1/`: JSON in and out, RFC 9457 problem
//! details on errors (mapped once, in `error`), bearer or cookie+CSRF
//! authentication (`auth`), strict bodies (`body`), and the OpenAPI
//! document (`openapi`) that a test holds to the routes registered here.
//! `passkeys` runs WebAuthn ceremonies; `access` is a team's time-boxed
//! operator access; `events` serves the security event log to those the policy lets read it,
//! `ingest` takes events from outside systems holding a team's ingest token,
//! `incidents` lets security responders run incidents to closure, and `edge`
//! changes the firewall, rate-limit and WAF policies (`edge_hosts`: one
//! host's).
//!
//! Handlers are thin: they authenticate, call one `kura_identity::Identity`
//! method (which asks the policy function itself), record its security
//! events with the request's facts, and render the result.

mod access;
mod accounts;
mod apps;
mod apps_import;
mod apps_openapi;
pub(crate) mod auth;
pub(crate) mod body;
pub(crate) mod connect;
pub(crate) mod connect_approvals;
mod connect_openapi;
mod connect_runs;
pub(crate) mod edge;
mod edge_hosts;
pub(crate) mod error;
mod events;
mod incident_channels;
mod incidents;
mod ingest;
mod mfa;
mod openapi;
mod passkeys;
mod sessions;
mod setup;
mod teams;
mod tokens;

use std::str::FromStr;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::routing::{MethodRouter, delete, get, patch, post, put};

pub use auth::{Auth, CSRF_HEADER, SESSION_COOKIE};
pub use openapi::document;

use crate::http::AppState;
use error::ApiError;

/// One registered route.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ApiRoute {
    /// The HTTP method, upper case.
    pub method: &'static str,
    /// The path template, `{param}` style (as axum and OpenAPI write it).
    pub path: &'static str,
}

struct Builder {
    router: Router<AppState>,
    routes: Vec<ApiRoute>,
}

impl Builder {
    fn at(
        mut self,
        method: &'static str,
        path: &'static str,
        handler: MethodRouter<AppState>,
    ) -> Self {
        self.routes.push(ApiRoute { method, path });
        self.router = self.router.route(path, handler);
        self
    }
}

/// Kura Connect's routes (documented in `connect_openapi`).
fn connect_routes(b: Builder) -> Builder {
    use connect as f;
    use connect_runs as r;
    b.at("GET", "/api/v1/connect/flow-schema.json", get(f::schema))
        .at("POST", "/api/v1/teams/{id}/flows", post(f::create))
        .at("GET", "/api/v1/teams/{id}/flows", get(f::list))
        .at("GET", "/api/v1/teams/{id}/flows/{flow}", get(f::get))
        .at("PUT", "/api/v1/teams/{id}/flows/{flow}", put(f::update))
        .at(
            "DELETE",
            "/api/v1/teams/{id}/flows/{flow}",
            delete(f::delete),
        )
        .at(
            "GET",
            "/api/v1/teams/{id}/flows/{flow}/versions",
            get(f::versions),
        )
        .at(
            "POST",
            "/api/v1/teams/{id}/flows/{flow}/enable",
            post(f::enable),
        )
        .at(
            "POST",
            "/api/v1/teams/{id}/flows/{flow}/disable",
            post(f::disable),
        )
        .at(
            "GET",
            "/api/v1/teams/{id}/flows/{flow}/export",
            get(f::export),
        )
        .at(
            "GET",
            "/api/v1/teams/{id}/flows/{flow}/metrics",
            get(f::metrics),
        )
        .at(
            "POST",
            "/api/v1/teams/{id}/flows/{flow}/runs",
            post(r::start),
        )
        .at("GET", "/api/v1/teams/{id}/runs", get(r::list))
        .at("GET", "/api/v1/teams/{id}/runs/{run}", get(r::get))
        .at(
            "POST",
            "/api/v1/teams/{id}/runs/{run}/cancel",
            post(r::cancel),
        )
        .at(
            "POST",
            "/api/v1/teams/{id}/runs/{run}/rerun",
            post(r::rerun),
        )
        .at(
            "POST",
            "/api/v1/teams/{id}/flow-credentials",
            post(r::create_credential),
        )
        .at(
            "GET",
            "/api/v1/teams/{id}/flow-credentials",
            get(r::list_credentials),
        )
        .at(
            "DELETE",
            "/api/v1/teams/{id}/flow-credentials/{credential}",
            delete(r::delete_credential),
        )
        .at(
            "POST",
            "/api/v1/teams/{id}/flow-credentials/{credential}/authorize",
            post(r::authorize_credential),
        )
        .at(
            "GET",
            "/api/v1/teams/{id}/approvals",
            get(connect_approvals::list),
        )
        .at(
            "GET",
            "/api/v1/teams/{id}/approvals/{approval}",
            get(connect_approvals::get),
        )
        .at(
            "POST",
            "/api/v1/teams/{id}/approvals/{approval}/decision",
            post(connect_approvals::decide),
        )
}

fn build() -> Builder {
    let b = Builder {
        router: Router::new(),
        routes: Vec::new(),
    };
    let b = b.at("GET", "/api/v1/openapi.json", get(openapi::serve));
    connect_routes(b)
        .at("POST", "/api/v1/setup", post(setup::create_first_operator))
        .at("POST", "/api/v1/sessions", post(sessions::sign_in))
        .at("GET", "/api/v1/sessions", get(sessions::list))
        .at(
            "DELETE",
            "/api/v1/sessions",
            delete(sessions::sign_out_everywhere),
        )
        .at(
            "DELETE",
            "/api/v1/sessions/current",
            delete(sessions::sign_out),
        )
        .at("DELETE", "/api/v1/sessions/{id}", delete(sessions::revoke))
        .at(
            "POST",
            "/api/v1/sessions/mfa/totp",
            post(sessions::verify_totp),
        )
        .at(
            "POST",
            "/api/v1/sessions/mfa/recovery",
            post(sessions::use_recovery_code),
        )
        .at(
            "POST",
            "/api/v1/sessions/mfa/passkey/challenge",
            post(passkeys::start_mfa),
        )
        .at(
            "POST",
            "/api/v1/sessions/mfa/passkey",
            post(passkeys::finish_mfa),
        )
        .at(
            "POST",
            "/api/v1/sessions/passkey/challenge",
            post(passkeys::start_sign_in),
        )
        .at(
            "POST",
            "/api/v1/sessions/passkey",
            post(passkeys::finish_sign_in),
        )
        .at(
            "POST",
            "/api/v1/me/mfa/passkeys/challenge",
            post(passkeys::start_registration),
        )
        .at(
            "POST",
            "/api/v1/me/mfa/passkeys",
            post(passkeys::finish_registration),
        )
        .at("GET", "/api/v1/me/mfa/passkeys", get(passkeys::list))
        .at(
            "DELETE",
            "/api/v1/me/mfa/passkeys/{id}",
            delete(passkeys::remove),
        )
        .at("GET", "/api/v1/me", get(accounts::me))
        .at("PATCH", "/api/v1/me", patch(accounts::update_me))
        .at(
            "POST",
            "/api/v1/me/password",
            post(accounts::change_password),
        )
        .at("POST", "/api/v1/me/mfa/totp", post(mfa::enroll_totp))
        .at(
            "POST",
            "/api/v1/me/mfa/totp/confirm",
            post(mfa::confirm_totp),
        )
        .at(
            "POST",
            "/api/v1/me/mfa/recovery-codes",
            post(mfa::regenerate_recovery_codes),
        )
        .at(
            "POST",
            "/api/v1/accounts/{id}/password-reset",
            post(accounts::reset_password),
        )
        .at(
            "POST",
            "/api/v1/accounts/{id}/mfa-reset",
            post(accounts::reset_mfa),
        )
        .at(
            "POST",
            "/api/v1/accounts/{id}/disable",
            post(accounts::disable),
        )
        .at(
            "POST",
            "/api/v1/accounts/{id}/enable",
            post(accounts::enable),
        )
        .at("POST", "/api/v1/operators", post(accounts::create_operator))
        .at(
            "PUT",
            "/api/v1/operators/{id}/roles",
            put(accounts::set_operator_role),
        )
        .at("POST", "/api/v1/teams", post(teams::create))
        .at("GET", "/api/v1/teams", get(teams::list))
        .at("GET", "/api/v1/teams/{id}", get(teams::get))
        .at(
            "PUT",
            "/api/v1/teams/{id}/mfa-policy",
            put(teams::set_mfa_policy),
        )
        .at("GET", "/api/v1/teams/{id}/members", get(teams::members))
        .at(
            "DELETE",
            "/api/v1/teams/{id}/members/{account}",
            delete(teams::remove_member),
        )
        .at(
            "POST",
            "/api/v1/teams/{id}/invitations",
            post(teams::invite),
        )
        .at(
            "GET",
            "/api/v1/teams/{id}/invitations",
            get(teams::invitations),
        )
        .at(
            "DELETE",
            "/api/v1/teams/{id}/invitations/{invitation}",
            delete(teams::revoke_invitation),
        )
        .at(
            "POST",
            "/api/v1/teams/{id}/operator-access",
            post(access::grant),
        )
        .at(
            "GET",
            "/api/v1/teams/{id}/operator-access",
            get(access::list),
        )
        .at(
            "DELETE",
            "/api/v1/teams/{id}/operator-access/{grant}",
            delete(access::revoke),
        )
        .at("POST", "/api/v1/invitations/accept", post(teams::accept))
        .at(
            "POST",
            "/api/v1/teams/{id}/groups",
            post(teams::create_group),
        )
        .at("GET", "/api/v1/teams/{id}/groups", get(teams::groups))
        .at(
            "PUT",
            "/api/v1/teams/{id}/groups/{group}/members/{account}",
            put(teams::set_group_member),
        )
        .at(
            "POST",
            "/api/v1/teams/{id}/role-grants",
            post(teams::grant_role),
        )
        .at(
            "DELETE",
            "/api/v1/teams/{id}/role-grants/{kind}/{subject}/{role}",
            delete(teams::revoke_role),
        )
        .at("GET", "/api/v1/events", get(events::list))
        .at(
            "POST",
            "/api/v1/events/ingest",
            post(ingest::ingest).layer(DefaultBodyLimit::max(ingest::MAX_BODY_BYTES)),
        )
        .at("GET", "/api/v1/incidents", get(incidents::list))
        .at("POST", "/api/v1/incidents", post(incidents::create))
        .at("GET", "/api/v1/incidents/{id}", get(incidents::get))
        .at(
            "PUT",
            "/api/v1/incidents/{id}/owner",
            put(incidents::set_owner),
        )
        .at(
            "POST",
            "/api/v1/incidents/{id}/transitions",
            post(incidents::transition),
        )
        .at(
            "POST",
            "/api/v1/incidents/{id}/notes",
            post(incidents::add_note),
        )
        .at(
            "GET",
            "/api/v1/incident-channels",
            get(incident_channels::list),
        )
        .at(
            "POST",
            "/api/v1/incident-channels",
            post(incident_channels::add),
        )
        .at(
            "DELETE",
            "/api/v1/incident-channels/{name}",
            delete(incident_channels::remove),
        )
        .at("GET", "/api/v1/edge", get(edge::show))
        .at(
            "PUT",
            "/api/v1/edge/firewall",
            put(edge::set_platform_firewall),
        )
        .at(
            "PUT",
            "/api/v1/edge/rate-limits",
            put(edge::set_rate_limits),
        )
        .at("PUT", "/api/v1/edge/waf", put(edge::set_platform_waf))
        .at(
            "GET",
            "/api/v1/teams/{id}/firewall",
            get(edge::team_firewall),
        )
        .at(
            "PUT",
            "/api/v1/teams/{id}/firewall",
            put(edge::set_team_firewall),
        )
        .at("GET", "/api/v1/teams/{id}/waf", get(edge::team_waf))
        .at("PUT", "/api/v1/teams/{id}/waf", put(edge::set_team_waf))
        .at(
            "GET",
            "/api/v1/teams/{id}/hosts/{host}/firewall",
            get(edge_hosts::host_firewall),
        )
        .at(
            "PUT",
            "/api/v1/teams/{id}/hosts/{host}/firewall",
            put(edge_hosts::set_host_firewall),
        )
        .at(
            "GET",
            "/api/v1/teams/{id}/hosts/{host}/waf",
            get(edge_hosts::host_waf),
        )
        .at(
            "PUT",
            "/api/v1/teams/{id}/hosts/{host}/waf",
            put(edge_hosts::set_host_waf),
        )
        .at("POST", "/api/v1/tokens", post(tokens::create))
        .at("GET", "/api/v1/tokens", get(tokens::list))
        .at("DELETE", "/api/v1/tokens/{id}", delete(tokens::revoke))
        .at("POST", "/api/v1/teams/{id}/hosts", post(apps::create_host))
        .at("GET", "/api/v1/teams/{id}/hosts", get(apps::list_hosts))
        .at(
            "GET",
            "/api/v1/teams/{id}/hosts/{host}",
            get(apps::get_host),
        )
        .at(
            "PATCH",
            "/api/v1/teams/{id}/hosts/{host}",
            patch(apps::update_host),
        )
        .at(
            "DELETE",
            "/api/v1/teams/{id}/hosts/{host}",
            delete(apps::delete_host),
        )
        .at(
            "POST",
            "/api/v1/teams/{id}/hosts/{host}/apps",
            post(apps::create_app),
        )
        .at(
            "GET",
            "/api/v1/teams/{id}/hosts/{host}/apps",
            get(apps::list_apps),
        )
        .at("GET", "/api/v1/teams/{id}/apps/{app}", get(apps::get_app))
        .at(
            "PATCH",
            "/api/v1/teams/{id}/apps/{app}",
            patch(apps::update_app),
        )
        .at(
            "DELETE",
            "/api/v1/teams/{id}/apps/{app}",
            delete(apps::delete_app),
        )
        .at(
            "GET",
            "/api/v1/teams/{id}/apps/{app}/schema",
            get(apps::get_schema),
        )
        .at(
            "PUT",
            "/api/v1/teams/{id}/apps/{app}/schema",
            put(apps::put_schema),
        )
        .at(
            "GET",
            "/api/v1/teams/{id}/apps/{app}/accounts",
            get(apps::list_accounts),
        )
        .at(
            "POST",
            "/api/v1/teams/{id}/apps/{app}/accounts",
            post(apps::create_account),
        )
        .at(
            "PATCH",
            "/api/v1/teams/{id}/apps/{app}/accounts/{name}",
            patch(apps::update_account),
        )
        .at(
            "DELETE",
            "/api/v1/teams/{id}/apps/{app}/accounts/{name}",
            delete(apps::delete_account),
        )
        .at(
            "POST",
            "/api/v1/teams/{id}/apps/{app}/tables/{table}/import",
            post(apps_import::import_csv),
        )
}

/// The largest body any route accepts (event ingest's), so the edge
/// buffers at least that much before inspecting.
pub const LARGEST_ROUTE_BODY: usize = ingest::MAX_BODY_BYTES;

/// The API's routes, for merging into the application.
pub fn api_router() -> Router<AppState> {
    build().router
}

/// Every route the API registers (method and path template), so tests can
/// hold the OpenAPI document and other inventories to it.
pub fn api_routes() -> Vec<ApiRoute> {
    build().routes
}

/// Parses a path or body identifier, naming the field when it is malformed.
fn parse_id<T: FromStr>(field: &str, raw: &str) -> Result<T, ApiError> {
    raw.parse()
        .map_err(|_| ApiError::invalid(field, "not a valid identifier"))
}
