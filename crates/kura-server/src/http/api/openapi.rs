//! The OpenAPI 3.1 document of `/api/v1/`, written as a typed table of
//! operations (kept apart from the router on purpose: a test checks that the
//! two agree in both directions).

use axum::Json;
use serde_json::{Map, Value, json};

/// How an operation authenticates.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Auth {
    /// Nothing (the body carries a one-time token or a password).
    None,
    /// A session (bearer or cookie+CSRF) or an API token.
    Required,
    /// A team's service token with the `events:ingest` scope, as a bearer
    /// token; nothing else.
    IngestToken,
}

/// One documented operation.
#[derive(Debug)]
pub(super) struct Op {
    pub(super) method: &'static str,
    pub(super) path: &'static str,
    pub(super) id: &'static str,
    pub(super) summary: &'static str,
    pub(super) auth: Auth,
    /// Request body fields (name, JSON type, required); `None` for no body.
    pub(super) body: Option<&'static [(&'static str, &'static str, bool)]>,
    /// The success status.
    pub(super) ok: u16,
}

/// The CSV import operation, whose body is `text/csv`, not JSON.
pub(super) const CSV_IMPORT_OP: &str = "importCsv";

pub(super) const S: &str = "string";
pub(super) const B: &str = "boolean";
pub(super) const A: &str = "array";
pub(super) const I: &str = "integer";
pub(super) const O: &str = "object";

const CODE: &[(&str, &str, bool)] = &[("code", S, true)];

/// An answer to a passkey challenge: the ceremony id and the WebAuthn
/// `PublicKeyCredential` JSON.
const PASSKEY_ASSERTION: &[(&str, &str, bool)] = &[
    ("ceremony_id", S, true),
    ("credential", O, true),
    ("cookie", B, false),
];

/// The fields of one ingested event (the body is an array of these).
const INGEST_EVENT: &[(&str, &str, bool)] = &[
    ("time", S, true),
    ("action", S, true),
    ("outcome", S, true),
    ("actor", S, false),
    ("target", S, false),
    ("source", S, false),
    ("user_agent", S, false),
    ("details", O, false),
];

/// An edge firewall policy.
const FIREWALL: &[(&str, &str, bool)] = &[
    ("allow", A, false),
    ("deny", A, false),
    ("version", I, false),
];
/// An edge WAF policy.
const WAF: &[(&str, &str, bool)] = &[("rules", O, true), ("version", I, false)];

/// The operation whose body is an array of [`INGEST_EVENT`]s.
const INGEST_OP: &str = "ingestEvents";
/// The operation that answers 409 for a move the state machine refuses.
const TRANSITION_OP: &str = "transitionIncident";

const OPS: &[Op] = &[
    Op {
        method: "GET",
        path: "/api/v1/openapi.json",
        id: "getOpenApi",
        summary: "This document",
        auth: Auth::None,
        body: None,
        ok: 200,
    },
    Op {
        method: "POST",
        path: "/api/v1/setup",
        id: "createFirstOperator",
        summary: "Create the first operator with the one-time setup token; the session must enrol TOTP next",
        auth: Auth::None,
        body: Some(&[
            ("token", S, true),
            ("email", S, true),
            ("display_name", S, true),
            ("password", S, true),
            ("cookie", B, false),
        ]),
        ok: 201,
    },
    Op {
        method: "POST",
        path: "/api/v1/sessions",
        id: "signIn",
        summary: "Sign in with email and password; answers the session and the next step",
        auth: Auth::None,
        body: Some(&[
            ("email", S, true),
            ("password", S, true),
            ("cookie", B, false),
        ]),
        ok: 201,
    },
    Op {
        method: "GET",
        path: "/api/v1/sessions",
        id: "listSessions",
        summary: "My live sessions",
        auth: Auth::Required,
        body: None,
        ok: 200,
    },
    Op {
        method: "DELETE",
        path: "/api/v1/sessions",
        id: "signOutEverywhere",
        summary: "End all my sessions",
        auth: Auth::Required,
        body: None,
        ok: 200,
    },
    Op {
        method: "DELETE",
        path: "/api/v1/sessions/current",
        id: "signOut",
        summary: "End this session",
        auth: Auth::Required,
        body: None,
        ok: 204,
    },
    Op {
        method: "DELETE",
        path: "/api/v1/sessions/{id}",
        id: "revokeSession",
        summary: "End one of my sessions",
        auth: Auth::Required,
        body: None,
        ok: 204,
    },
    Op {
        method: "POST",
        path: "/api/v1/sessions/mfa/totp",
        id: "verifyTotp",
        summary: "Verify a TOTP code (finishes sign-in with a new token, or steps up)",
        auth: Auth::Required,
        body: Some(CODE),
        ok: 200,
    },
    Op {
        method: "POST",
        path: "/api/v1/sessions/mfa/recovery",
        id: "useRecoveryCode",
        summary: "Use a single-use recovery code instead of TOTP",
        auth: Auth::Required,
        body: Some(CODE),
        ok: 200,
    },
    Op {
        method: "POST",
        path: "/api/v1/sessions/mfa/passkey/challenge",
        id: "startPasskeyMfa",
        summary: "A WebAuthn challenge for my passkeys (second factor or step-up)",
        auth: Auth::Required,
        body: None,
        ok: 200,
    },
    Op {
        method: "POST",
        path: "/api/v1/sessions/mfa/passkey",
        id: "verifyPasskeyMfa",
        summary: "Verify a passkey assertion (finishes sign-in with a new token, or steps up)",
        auth: Auth::Required,
        body: Some(PASSKEY_ASSERTION),
        ok: 200,
    },
    Op {
        method: "POST",
        path: "/api/v1/sessions/passkey/challenge",
        id: "startPasskeySignIn",
        summary: "A WebAuthn challenge for passwordless sign-in with a discoverable passkey",
        auth: Auth::None,
        body: None,
        ok: 200,
    },
    Op {
        method: "POST",
        path: "/api/v1/sessions/passkey",
        id: "passkeySignIn",
        summary: "Sign in with a passkey alone: a complete, MFA-verified session",
        auth: Auth::None,
        body: Some(PASSKEY_ASSERTION),
        ok: 201,
    },
    Op {
        method: "POST",
        path: "/api/v1/me/mfa/passkeys/challenge",
        id: "startPasskeyRegistration",
        summary: "Start registering a passkey: WebAuthn creation options",
        auth: Auth::Required,
        body: None,
        ok: 200,
    },
    Op {
        method: "POST",
        path: "/api/v1/me/mfa/passkeys",
        id: "finishPasskeyRegistration",
        summary: "Register a passkey with the authenticator's attestation; recovery codes when it is the first factor",
        auth: Auth::Required,
        body: Some(&[
            ("ceremony_id", S, true),
            ("name", S, true),
            ("credential", O, true),
        ]),
        ok: 201,
    },
    Op {
        method: "GET",
        path: "/api/v1/me/mfa/passkeys",
        id: "listPasskeys",
        summary: "My passkeys (counters and backup flags)",
        auth: Auth::Required,
        body: None,
        ok: 200,
    },
    Op {
        method: "DELETE",
        path: "/api/v1/me/mfa/passkeys/{id}",
        id: "removePasskey",
        summary: "Remove one of my passkeys (needs a recent MFA check)",
        auth: Auth::Required,
        body: None,
        ok: 204,
    },
    Op {
        method: "GET",
        path: "/api/v1/me",
        id: "getMe",
        summary: "My account",
        auth: Auth::Required,
        body: None,
        ok: 200,
    },
    Op {
        method: "PATCH",
        path: "/api/v1/me",
        id: "updateMe",
        summary: "Change my display name or phone",
        auth: Auth::Required,
        body: Some(&[("display_name", S, false), ("phone", S, false)]),
        ok: 200,
    },
    Op {
        method: "POST",
        path: "/api/v1/me/password",
        id: "changePassword",
        summary: "Change my password (ends my other sessions and my personal API tokens)",
        auth: Auth::Required,
        body: Some(&[("current_password", S, true), ("new_password", S, true)]),
        ok: 200,
    },
    Op {
        method: "POST",
        path: "/api/v1/me/mfa/totp",
        id: "enrollTotp",
        summary: "Start TOTP enrolment: secret and otpauth URI",
        auth: Auth::Required,
        body: None,
        ok: 200,
    },
    Op {
        method: "POST",
        path: "/api/v1/me/mfa/totp/confirm",
        id: "confirmTotp",
        summary: "Confirm TOTP with a first code; recovery codes are shown once",
        auth: Auth::Required,
        body: Some(CODE),
        ok: 200,
    },
    Op {
        method: "POST",
        path: "/api/v1/me/mfa/recovery-codes",
        id: "regenerateRecoveryCodes",
        summary: "Replace my recovery codes (shown once)",
        auth: Auth::Required,
        body: None,
        ok: 200,
    },
    Op {
        method: "POST",
        path: "/api/v1/accounts/{id}/password-reset",
        id: "resetPassword",
        summary: "Set another account's password (equal or higher privilege only)",
        auth: Auth::Required,
        body: Some(&[("new_password", S, true)]),
        ok: 204,
    },
    Op {
        method: "POST",
        path: "/api/v1/accounts/{id}/mfa-reset",
        id: "resetMfa",
        summary: "Remove another account's TOTP, recovery codes and passkeys (equal or higher privilege only)",
        auth: Auth::Required,
        body: None,
        ok: 204,
    },
    Op {
        method: "POST",
        path: "/api/v1/accounts/{id}/disable",
        id: "disableAccount",
        summary: "Disable an account and end its sessions and tokens",
        auth: Auth::Required,
        body: None,
        ok: 204,
    },
    Op {
        method: "POST",
        path: "/api/v1/accounts/{id}/enable",
        id: "enableAccount",
        summary: "Re-enable a disabled account (revoked sessions and tokens stay revoked)",
        auth: Auth::Required,
        body: None,
        ok: 204,
    },
    Op {
        method: "POST",
        path: "/api/v1/operators",
        id: "createOperator",
        summary: "Create an operator with some of my own roles",
        auth: Auth::Required,
        body: Some(&[
            ("email", S, true),
            ("display_name", S, true),
            ("password", S, true),
            ("roles", A, true),
        ]),
        ok: 201,
    },
    Op {
        method: "PUT",
        path: "/api/v1/operators/{id}/roles",
        id: "setOperatorRole",
        summary: "Grant or revoke an operator role",
        auth: Auth::Required,
        body: Some(&[("role", S, true), ("granted", B, true)]),
        ok: 204,
    },
    Op {
        method: "POST",
        path: "/api/v1/teams",
        id: "createTeam",
        summary: "Create a team and invite its owner",
        auth: Auth::Required,
        body: Some(&[("name", S, true), ("owner_email", S, true)]),
        ok: 201,
    },
    Op {
        method: "GET",
        path: "/api/v1/teams",
        id: "listTeams",
        summary: "Teams I belong to",
        auth: Auth::Required,
        body: None,
        ok: 200,
    },
    Op {
        method: "GET",
        path: "/api/v1/teams/{id}",
        id: "getTeam",
        summary: "One team",
        auth: Auth::Required,
        body: None,
        ok: 200,
    },
    Op {
        method: "PUT",
        path: "/api/v1/teams/{id}/mfa-policy",
        id: "setTeamMfaPolicy",
        summary: "Who in the team must use MFA",
        auth: Auth::Required,
        body: Some(&[
            ("applies_to", S, true),
            ("strength", S, false),
            ("groups", A, false),
        ]),
        ok: 204,
    },
    Op {
        method: "GET",
        path: "/api/v1/teams/{id}/members",
        id: "listMembers",
        summary: "The team's members",
        auth: Auth::Required,
        body: None,
        ok: 200,
    },
    Op {
        method: "DELETE",
        path: "/api/v1/teams/{id}/members/{account}",
        id: "removeMember",
        summary: "Remove a member",
        auth: Auth::Required,
        body: None,
        ok: 204,
    },
    Op {
        method: "POST",
        path: "/api/v1/teams/{id}/invitations",
        id: "invite",
        summary: "Invite someone; the token is shown once",
        auth: Auth::Required,
        body: Some(&[("email", S, true), ("role", S, true)]),
        ok: 201,
    },
    Op {
        method: "GET",
        path: "/api/v1/teams/{id}/invitations",
        id: "listInvitations",
        summary: "Open invitations",
        auth: Auth::Required,
        body: None,
        ok: 200,
    },
    Op {
        method: "DELETE",
        path: "/api/v1/teams/{id}/invitations/{invitation}",
        id: "revokeInvitation",
        summary: "Revoke an invitation",
        auth: Auth::Required,
        body: None,
        ok: 204,
    },
    Op {
        method: "POST",
        path: "/api/v1/teams/{id}/operator-access",
        id: "grantOperatorAccess",
        summary: "Let an operator act in the team with one role (admin, member, auditor) for up to 7 days (owners)",
        auth: Auth::Required,
        body: Some(&[
            ("operator_id", S, true),
            ("role", S, true),
            ("minutes", I, true),
            ("reason", S, true),
        ]),
        ok: 201,
    },
    Op {
        method: "GET",
        path: "/api/v1/teams/{id}/operator-access",
        id: "listOperatorAccess",
        summary: "Every operator access grant of the team, ended ones included",
        auth: Auth::Required,
        body: None,
        ok: 200,
    },
    Op {
        method: "DELETE",
        path: "/api/v1/teams/{id}/operator-access/{grant}",
        id: "revokeOperatorAccess",
        summary: "End an operator access grant early (owners)",
        auth: Auth::Required,
        body: None,
        ok: 204,
    },
    Op {
        method: "POST",
        path: "/api/v1/invitations/accept",
        id: "acceptInvitation",
        summary: "Accept an invitation (signed in, or with a new account's name and password)",
        auth: Auth::None,
        body: Some(&[
            ("token", S, true),
            ("display_name", S, false),
            ("password", S, false),
        ]),
        ok: 201,
    },
    Op {
        method: "POST",
        path: "/api/v1/teams/{id}/groups",
        id: "createGroup",
        summary: "Create a group",
        auth: Auth::Required,
        body: Some(&[("name", S, true)]),
        ok: 201,
    },
    Op {
        method: "GET",
        path: "/api/v1/teams/{id}/groups",
        id: "listGroups",
        summary: "The team's groups",
        auth: Auth::Required,
        body: None,
        ok: 200,
    },
    Op {
        method: "PUT",
        path: "/api/v1/teams/{id}/groups/{group}/members/{account}",
        id: "setGroupMember",
        summary: "Add an account to a group or remove it",
        auth: Auth::Required,
        body: Some(&[("member", B, true)]),
        ok: 204,
    },
    Op {
        method: "POST",
        path: "/api/v1/teams/{id}/role-grants",
        id: "grantTeamRole",
        summary: "Grant a team role to an account or group",
        auth: Auth::Required,
        body: Some(&[
            ("subject_kind", S, true),
            ("subject_id", S, true),
            ("role", S, true),
        ]),
        ok: 204,
    },
    Op {
        method: "DELETE",
        path: "/api/v1/teams/{id}/role-grants/{kind}/{subject}/{role}",
        id: "revokeTeamRole",
        summary: "Revoke a team role",
        auth: Auth::Required,
        body: None,
        ok: 204,
    },
    Op {
        method: "GET",
        path: "/api/v1/events",
        id: "listEvents",
        summary: "Security events filtered by since, until, team, actor, action prefix, outcome, source and request_id, paged by cursor, as JSON or CSV (Accept: text/csv or format=csv); each export is itself a data.export event",
        auth: Auth::Required,
        body: None,
        ok: 200,
    },
    Op {
        method: "POST",
        path: "/api/v1/events/ingest",
        id: INGEST_OP,
        summary: "Ingest up to 500 events from an outside system with a team's service token holding the events:ingest scope; events are written as the token's team (a team field is refused), times must lie within 24 h before and 10 min after the server's clock, and one bad event refuses the whole batch; answers 202 with the count",
        auth: Auth::IngestToken,
        body: Some(INGEST_EVENT),
        ok: 202,
    },
    Op {
        method: "GET",
        path: "/api/v1/incidents",
        id: "listIncidents",
        summary: "Incidents, newest first, filtered by state, severity (comma-separated) and team, paged by cursor (security responders)",
        auth: Auth::Required,
        body: None,
        ok: 200,
    },
    Op {
        method: "POST",
        path: "/api/v1/incidents",
        id: "createIncident",
        summary: "Open an incident by hand (severity sev1..sev4), linking events",
        auth: Auth::Required,
        body: Some(&[
            ("title", S, true),
            ("severity", S, true),
            ("team", S, false),
            ("owner", S, false),
            ("events", A, false),
            ("note", S, false),
        ]),
        ok: 201,
    },
    Op {
        method: "GET",
        path: "/api/v1/incidents/{id}",
        id: "getIncident",
        summary: "One incident with its timeline, alerts, linked events and notifications",
        auth: Auth::Required,
        body: None,
        ok: 200,
    },
    Op {
        method: "PUT",
        path: "/api/v1/incidents/{id}/owner",
        id: "setIncidentOwner",
        summary: "Give an incident an owner (an actor key such as account:<id>), or null to unassign",
        auth: Auth::Required,
        body: Some(&[("owner", S, true)]),
        ok: 200,
    },
    Op {
        method: "POST",
        path: "/api/v1/incidents/{id}/transitions",
        id: TRANSITION_OP,
        summary: "Move an incident to another state (open, triaged, investigating, contained, resolved, closed) with an optional note; a move the state machine refuses is a 409 naming the allowed next states",
        auth: Auth::Required,
        body: Some(&[("state", S, true), ("note", S, false)]),
        ok: 200,
    },
    Op {
        method: "POST",
        path: "/api/v1/incidents/{id}/notes",
        id: "addIncidentNote",
        summary: "Add a note to an incident's timeline",
        auth: Auth::Required,
        body: Some(&[("text", S, true)]),
        ok: 204,
    },
    Op {
        method: "GET",
        path: "/api/v1/incident-channels",
        id: "listIncidentChannels",
        summary: "The notification channels of the incident communication plan, from the configuration file and added by responders, each with the least severe incidents it hears of (security responders)",
        auth: Auth::Required,
        body: None,
        ok: 200,
    },
    Op {
        method: "POST",
        path: "/api/v1/incident-channels",
        id: "addIncidentChannel",
        summary: "Add a signed webhook notification channel (https, or http to a loopback address) hearing of incidents at min_severity (sev1..sev4) or worse; the signing secret is shown once",
        auth: Auth::Required,
        body: Some(&[
            ("name", S, true),
            ("kind", S, true),
            ("url", S, true),
            ("min_severity", S, true),
            ("timeout_secs", I, false),
        ]),
        ok: 201,
    },
    Op {
        method: "DELETE",
        path: "/api/v1/incident-channels/{name}",
        id: "removeIncidentChannel",
        summary: "Remove a notification channel a responder added (channels from the configuration file are refused with 409)",
        auth: Auth::Required,
        body: None,
        ok: 204,
    },
    Op {
        method: "GET",
        path: "/api/v1/edge",
        id: "getEdge",
        summary: "The platform's edge policies (firewall lists, rate-limit budgets, WAF rule modes) with their versions, and the WAF rule catalogue (network admins)",
        auth: Auth::Required,
        body: None,
        ok: 200,
    },
    Op {
        method: "PUT",
        path: "/api/v1/edge/firewall",
        id: "setPlatformFirewall",
        summary: "Replace the platform's allow and deny CIDR lists (deny wins; an empty allow list allows all); refused when invalid, contradictory, stale (version) or when it would block the requester",
        auth: Auth::Required,
        body: Some(FIREWALL),
        ok: 200,
    },
    Op {
        method: "PUT",
        path: "/api/v1/edge/rate-limits",
        id: "setRateLimits",
        summary: "Replace the rate-limit budgets (per_minute and burst per source, credential and team for sign_in, data_api, admin_api and webhooks; 1 to 1000000)",
        auth: Auth::Required,
        body: Some(&[
            ("sign_in", O, true),
            ("data_api", O, true),
            ("admin_api", O, true),
            ("webhooks", O, true),
            ("version", I, false),
        ]),
        ok: 200,
    },
    Op {
        method: "PUT",
        path: "/api/v1/edge/waf",
        id: "setPlatformWaf",
        summary: "Set WAF rule modes (block, detect, off) by rule id for every request",
        auth: Auth::Required,
        body: Some(WAF),
        ok: 200,
    },
    Op {
        method: "GET",
        path: "/api/v1/teams/{id}/firewall",
        id: "getTeamFirewall",
        summary: "The team's allow and deny CIDR lists",
        auth: Auth::Required,
        body: None,
        ok: 200,
    },
    Op {
        method: "PUT",
        path: "/api/v1/teams/{id}/firewall",
        id: "setTeamFirewall",
        summary: "Replace the team's allow and deny CIDR lists (team admins)",
        auth: Auth::Required,
        body: Some(FIREWALL),
        ok: 200,
    },
    Op {
        method: "GET",
        path: "/api/v1/teams/{id}/waf",
        id: "getTeamWaf",
        summary: "The team's WAF rule modes",
        auth: Auth::Required,
        body: None,
        ok: 200,
    },
    Op {
        method: "PUT",
        path: "/api/v1/teams/{id}/waf",
        id: "setTeamWaf",
        summary: "Relax content rules (110 and up, except the encoding and smuggling rules) for the team's requests, to avoid false positives",
        auth: Auth::Required,
        body: Some(WAF),
        ok: 200,
    },
    Op {
        method: "GET",
        path: "/api/v1/teams/{id}/hosts/{host}/firewall",
        id: "getHostFirewall",
        summary: "One host's allow and deny CIDR lists",
        auth: Auth::Required,
        body: None,
        ok: 200,
    },
    Op {
        method: "PUT",
        path: "/api/v1/teams/{id}/hosts/{host}/firewall",
        id: "setHostFirewall",
        summary: "Replace one host's allow and deny CIDR lists (team admins); they apply to the admin API under the host and to its Data API (`/hosts/{name}/fmi/…`)",
        auth: Auth::Required,
        body: Some(FIREWALL),
        ok: 200,
    },
    Op {
        method: "GET",
        path: "/api/v1/teams/{id}/hosts/{host}/waf",
        id: "getHostWaf",
        summary: "One host's WAF rule modes",
        auth: Auth::Required,
        body: None,
        ok: 200,
    },
    Op {
        method: "PUT",
        path: "/api/v1/teams/{id}/hosts/{host}/waf",
        id: "setHostWaf",
        summary: "Turn content rules off or to detect-only for one host's requests (team admins), to avoid false positives",
        auth: Auth::Required,
        body: Some(WAF),
        ok: 200,
    },
    Op {
        method: "POST",
        path: "/api/v1/tokens",
        id: "createToken",
        summary: "Create an API token; the secret is shown once",
        auth: Auth::Required,
        body: Some(&[
            ("name", S, true),
            ("kind", S, true),
            ("scopes", A, true),
            ("expires_in_days", I, true),
            ("team_id", S, false),
            ("role", S, false),
        ]),
        ok: 201,
    },
    Op {
        method: "GET",
        path: "/api/v1/tokens",
        id: "listTokens",
        summary: "My API tokens (never their secrets)",
        auth: Auth::Required,
        body: None,
        ok: 200,
    },
    Op {
        method: "DELETE",
        path: "/api/v1/tokens/{id}",
        id: "revokeToken",
        summary: "Revoke an API token",
        auth: Auth::Required,
        body: None,
        ok: 204,
    },
];

fn path_params(path: &str) -> Vec<Value> {
    path.split('/')
        .filter_map(|seg| seg.strip_prefix('{').and_then(|s| s.strip_suffix('}')))
        .map(|name| {
            json!({ "name": name, "in": "path", "required": true, "schema": { "type": "string" } })
        })
        .collect()
}

fn body_schema(fields: &[(&str, &str, bool)]) -> Value {
    let mut props = Map::new();
    let mut required = Vec::new();
    for (name, ty, req) in fields {
        let schema = if *ty == A {
            json!({ "type": "array", "items": { "type": "string" } })
        } else if *ty == O {
            json!({ "type": "object" })
        } else {
            json!({ "type": ty })
        };
        props.insert((*name).to_owned(), schema);
        if *req {
            required.push(Value::from(*name));
        }
    }
    json!({
        "type": "object",
        "additionalProperties": false,
        "properties": props,
        "required": required,
    })
}

fn problem_response(description: &str) -> Value {
    json!({
        "description": description,
        "content": { "application/problem+json": { "schema": { "$ref": "#/components/schemas/Problem" } } }
    })
}

fn operation(op: &Op) -> Value {
    let mut o = Map::new();
    o.insert("operationId".into(), op.id.into());
    o.insert("summary".into(), op.summary.into());
    let params = path_params(op.path);
    if !params.is_empty() {
        o.insert("parameters".into(), Value::Array(params));
    }
    if op.id == CSV_IMPORT_OP {
        o.insert(
            "requestBody".into(),
            json!({
                "required": true,
                "content": { "text/csv": { "schema": { "type": "string" } } }
            }),
        );
    } else if let Some(fields) = op.body {
        let schema = if op.id == INGEST_OP {
            json!({ "type": "array", "minItems": 1, "maxItems": 500, "items": body_schema(fields) })
        } else {
            body_schema(fields)
        };
        o.insert(
            "requestBody".into(),
            json!({
                "required": true,
                "content": { "application/json": { "schema": schema } }
            }),
        );
    }
    let mut responses = Map::new();
    let ok = if op.ok == 204 {
        json!({ "description": "Done" })
    } else {
        json!({ "description": "Success", "content": { "application/json": { "schema": { "type": "object" } } } })
    };
    responses.insert(op.ok.to_string(), ok);
    if op.body.is_some() {
        responses.insert("415".into(), problem_response("Body is not JSON"));
        responses.insert(
            "422".into(),
            problem_response("A field is missing, unknown or invalid"),
        );
    }
    if op.id == TRANSITION_OP {
        responses.insert(
            "409".into(),
            problem_response("The state machine does not allow this move; nothing changed"),
        );
    }
    if op.id == INGEST_OP {
        responses.insert("413".into(), problem_response("Body too large"));
    }
    responses.insert(
        "401".into(),
        problem_response("Not signed in, or sign-in failed"),
    );
    responses.insert(
        "403".into(),
        problem_response("The policy refused, or a CSRF token is missing"),
    );
    responses.insert(
        "429".into(),
        problem_response("Too many attempts (see Retry-After)"),
    );
    responses.insert("default".into(), problem_response("Problem details"));
    o.insert("responses".into(), Value::Object(responses));
    let security = match op.auth {
        Auth::Required => json!([{ "bearer": [] }, { "sessionCookie": [], "csrfToken": [] }]),
        Auth::IngestToken => json!([{ "bearer": [] }]),
        Auth::None => json!([]),
    };
    o.insert("security".into(), security);
    Value::Object(o)
}

/// The OpenAPI 3.1 document.
pub fn document() -> Value {
    let mut paths = Map::new();
    for op in OPS
        .iter()
        .chain(super::apps_openapi::OPS)
        .chain(super::connect_openapi::OPS)
    {
        let entry = paths
            .entry(op.path.to_owned())
            .or_insert_with(|| Value::Object(Map::new()));
        if let Value::Object(methods) = entry {
            methods.insert(op.method.to_ascii_lowercase(), operation(op));
        }
    }
    json!({
        "openapi": "3.1.0",
        "info": {
            "title": "Kura admin API",
            "version": "1",
            "description": "Accounts, sessions, MFA, teams, invitations, groups, roles, API tokens, security events (query and ingest), incidents and their notification channels, the edge's firewall, rate-limit and WAF policies, hosts, hosted apps, app schema and app accounts, and Kura Connect's flows, runs and credentials. Errors are RFC 9457 problem details."
        },
        "paths": paths,
        "components": {
            "securitySchemes": {
                "bearer": { "type": "http", "scheme": "bearer", "description": "A session token or an API token" },
                "sessionCookie": { "type": "apiKey", "in": "cookie", "name": "__Host-kura_session" },
                "csrfToken": { "type": "apiKey", "in": "header", "name": "X-CSRF-Token", "description": "Required with the cookie on POST, PUT, PATCH and DELETE" }
            },
            "schemas": {
                "Problem": {
                    "type": "object",
                    "properties": {
                        "type": { "type": "string" },
                        "title": { "type": "string" },
                        "status": { "type": "integer" },
                        "detail": { "type": "string" },
                        "request_id": { "type": "string" }
                    },
                    "required": ["type", "title", "status"]
                }
            }
        }
    })
}

/// `GET /api/v1/openapi.json`.
pub async fn serve() -> Json<Value> {
    Json(document())
}
