//! Sessions and metadata: sign-in and sign-out, product info, databases,
//! layouts, layout metadata and scripts.

use axum::extract::{ConnectInfo, Path, Query, State};
use axum::response::Response;
use base64::Engine as _;
use http::{HeaderMap, HeaderValue, header};
use kura_apps::schema::{AutoEnter, FieldType};
use kura_apps::{AppCredential, FmError, LoginFailure};
use kura_identity::{Action, Resource};
use kura_types::{Actor, Outcome, SecurityEvent};
use secrecy::SecretString;
use serde_json::{Value, json};
use std::net::SocketAddr;

use super::{Params, check_version, reply, session};
use crate::http::AppState;

/// `GET …/productInfo` (no authentication, as in FileMaker Server).
pub async fn product_info(Path((_host, version)): Path<(String, String)>) -> Response {
    reply(check_version(&version).map(|()| {
        json!({ "productInfo": {
            "name": "Kura Data API",
            "buildDate": "11/26/2026",
            "version": env!("CARGO_PKG_VERSION"),
            "dateFormat": "MM/dd/yyyy",
            "timeFormat": "HH:mm:ss",
            "timeStampFormat": "MM/dd/yyyy HH:mm:ss",
        }})
    }))
}

fn basic(headers: &HeaderMap) -> Result<(String, SecretString), FmError> {
    let value = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .ok_or_else(|| FmError::code(212))?;
    let (scheme, encoded) = value.split_once(' ').ok_or_else(|| FmError::code(212))?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return Err(FmError::code(212));
    }
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(encoded.trim())
        .map_err(|_| FmError::code(212))?;
    let text = String::from_utf8(decoded).map_err(|_| FmError::code(212))?;
    let (user, password) = text.split_once(':').ok_or_else(|| FmError::code(212))?;
    Ok((user.to_owned(), SecretString::from(password.to_owned())))
}

/// `GET …/databases`: the open apps on the host whose accounts accept the
/// Basic credentials given (nothing is listed without valid credentials).
pub async fn databases(
    State(state): State<AppState>,
    Path((host, version)): Path<(String, String)>,
    headers: HeaderMap,
) -> Response {
    let result = async {
        check_version(&version)?;
        let (user, password) = basic(&headers)?;
        let names = state.apps.open_app_names(&host).await?;
        let mut visible = Vec::new();
        for name in names {
            if state
                .apps
                .check_credentials(&host, &name, &user, &password)
                .await
            {
                visible.push(json!({ "name": name }));
            }
        }
        if visible.is_empty() {
            return Err(FmError::code(212));
        }
        Ok(json!({ "databases": visible }))
    }
    .await;
    reply(result)
}

/// `GET …/validateSession`.
pub async fn validate_session(
    State(state): State<AppState>,
    Path((_host, version)): Path<(String, String)>,
    headers: HeaderMap,
) -> Response {
    let result = check_version(&version).and_then(|()| {
        let token = super::bearer(&headers)?;
        if state.apps.sessions.is_live(&token) {
            Ok(json!({ "isSessionInUse": true }))
        } else {
            Err(FmError::code(952))
        }
    });
    reply(result)
}

async fn signin_event(
    state: &AppState,
    app: &kura_store::AppRecord,
    user: &str,
    outcome: Outcome,
    reason: Option<&str>,
    source: Option<SocketAddr>,
    headers: &HeaderMap,
) -> Result<(), FmError> {
    let action = if outcome == Outcome::Success {
        "app.signin"
    } else {
        "app.signin.failed"
    };
    let mut e = SecurityEvent::new(
        state.clock.now(),
        Actor::AppAccount {
            app: app.id,
            name: user.chars().take(100).collect(),
        },
        kura_types::Action::parse(action).map_err(|_| FmError::code(-1))?,
        outcome,
    )
    .with_team(app.team)
    .with_target(app.id.to_string());
    if let Some(r) = reason {
        e = e.with_detail("reason", r.to_owned());
    }
    if let Some(s) = source {
        e = e.with_source(s.ip());
    }
    if let Some(ua) = headers
        .get(header::USER_AGENT)
        .and_then(|v| v.to_str().ok())
    {
        e = e.with_user_agent(ua.chars().take(512).collect::<String>());
    }
    if let Some(id) = headers.get("x-request-id").and_then(|v| v.to_str().ok()) {
        e = e.with_request_id(id.to_owned());
    }
    state.events.record(e).await.map_err(|err| {
        tracing::error!(error = %err, "sign-in event not recorded");
        FmError::code(-1)
    })
}

/// `POST …/databases/{db}/sessions`: Basic credentials of an app-local
/// account, or a Kura ID account's e-mail with one of its API tokens
/// (scope `records:read`) as the password. Answers with the token in the
/// body and in `X-FM-Data-Access-Token`.
pub async fn login(
    State(state): State<AppState>,
    Path((host, version, db)): Path<(String, String, String)>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
) -> Response {
    let result: Result<String, FmError> = async {
        check_version(&version)?;
        let app = state.apps.resolve(&host, &db).await?;
        let record = app.record();
        let (user, password) = match basic(&headers) {
            Ok(c) => c,
            Err(e) => {
                signin_event(
                    &state,
                    &record,
                    "",
                    Outcome::Failure,
                    Some("no_credentials"),
                    Some(peer),
                    &headers,
                )
                .await?;
                return Err(e);
            }
        };
        let credential = {
            use secrecy::ExposeSecret as _;
            let secret = password.expose_secret();
            if secret.starts_with("kura_pat_") {
                let (principal, events, recorded) = state
                    .identity
                    .authenticate_api_token(secret, Some(peer.ip()))
                    .await
                    .into_parts();
                state.events.observe(&recorded).await;
                // As everywhere: an event that cannot be recorded fails the
                // sign-in instead of being dropped.
                let events = events
                    .iter()
                    .map(|e| e.to_security_event())
                    .collect::<Result<Vec<_>, _>>()
                    .map_err(|_| FmError::code(-1))?;
                if !events.is_empty() {
                    state.events.record_all(events).await.map_err(|err| {
                        tracing::error!(error = %err, "sign-in event not recorded");
                        FmError::code(-1)
                    })?;
                }
                let allowed = principal.as_ref().is_ok_and(|p| {
                    kura_identity::authorize(
                        p,
                        Action::AppRecordsRead,
                        &Resource::Team(record.team),
                    )
                    .is_allowed()
                });
                match principal {
                    Ok(p) if allowed => AppCredential::KuraId(p.account),
                    _ => {
                        signin_event(
                            &state,
                            &record,
                            &user,
                            Outcome::Failure,
                            Some("kura_id_denied"),
                            Some(peer),
                            &headers,
                        )
                        .await?;
                        return Err(FmError::code(212));
                    }
                }
            } else {
                AppCredential::Password {
                    name: user.clone(),
                    password,
                }
            }
        };
        match state.apps.login(&app, credential).await {
            Ok((token, _session)) => {
                signin_event(
                    &state,
                    &record,
                    &user,
                    Outcome::Success,
                    None,
                    Some(peer),
                    &headers,
                )
                .await?;
                Ok(token)
            }
            Err(failure) => {
                let reason = match &failure {
                    LoginFailure::BadCredentials => "bad_credentials",
                    LoginFailure::Locked => "locked_out",
                    LoginFailure::NoPrivilege => "no_fmrest_privilege",
                    LoginFailure::Error(_) => "error",
                };
                signin_event(
                    &state,
                    &record,
                    &user,
                    Outcome::Failure,
                    Some(reason),
                    Some(peer),
                    &headers,
                )
                .await?;
                Err(failure.fm_error())
            }
        }
    }
    .await;
    match result {
        Ok(token) => {
            let mut r = reply(Ok(json!({ "token": token })));
            if let Ok(v) = HeaderValue::from_str(&token) {
                r.headers_mut().insert("x-fm-data-access-token", v);
            }
            r
        }
        Err(e) => reply(Err(e)),
    }
}

/// `DELETE …/databases/{db}/sessions/{token}` (the token in the path is the
/// credential; python-fmrest sends no Authorization header here).
pub async fn logout(
    State(state): State<AppState>,
    Path((host, version, db, token)): Path<(String, String, String, String)>,
) -> Response {
    let result = async {
        check_version(&version)?;
        let app = state.apps.resolve(&host, &db).await?;
        if state.apps.sessions.close(&token, app.record().id) {
            Ok(json!({}))
        } else {
            Err(FmError::code(952))
        }
    }
    .await;
    reply(result)
}

/// `GET …/databases/{db}/layouts`.
pub async fn layouts(
    State(state): State<AppState>,
    Path((host, version, db)): Path<(String, String, String)>,
    headers: HeaderMap,
) -> Response {
    let result = async {
        let (app, _session, _) = session(&state, &headers, &host, &version, &db).await?;
        let schema = app.schema();
        let layouts: Vec<Value> = schema
            .layouts
            .iter()
            .map(|l| json!({ "name": l.name, "table": schema.tables[l.table].name }))
            .collect();
        Ok(json!({ "layouts": layouts }))
    }
    .await;
    reply(result)
}

/// `GET …/databases/{db}/scripts`.
pub async fn scripts(
    State(state): State<AppState>,
    Path((host, version, db)): Path<(String, String, String)>,
    headers: HeaderMap,
) -> Response {
    let result = async {
        let (app, _session, _) = session(&state, &headers, &host, &version, &db).await?;
        let schema = app.schema();
        let scripts: Vec<Value> = schema
            .stored
            .definition
            .scripts
            .iter()
            .map(|s| json!({ "name": s.name, "isFolder": false }))
            .collect();
        Ok(json!({ "scripts": scripts }))
    }
    .await;
    reply(result)
}

fn field_meta(name: String, field: &kura_apps::schema::Field) -> Value {
    let def = &field.def;
    let display = match (def.value_list.is_some(), def.kind) {
        (true, _) => "popupList",
        (false, FieldType::Date) => "calendar",
        _ => "editText",
    };
    let mut m = json!({
        "name": name,
        "type": "normal",
        "displayType": display,
        "result": def.kind.fm_result(),
        "global": def.global,
        "autoEnter": def.auto_enter.is_some(),
        "fourDigitYear": false,
        "maxRepeat": 1,
        "maxCharacters": def.max_length.unwrap_or(0),
        "notEmpty": def.required,
        "numeric": false,
        "timeOfDay": false,
        "repetitionStart": 1,
        "repetitionEnd": 1,
    });
    if let (Some(vl), Value::Object(map)) = (&def.value_list, &mut m) {
        map.insert("valueList".into(), Value::String(vl.clone()));
    }
    if matches!(def.auto_enter, Some(AutoEnter::Serial { .. }))
        && let Value::Object(map) = &mut m
    {
        map.insert("autoEnter".into(), Value::Bool(true));
    }
    m
}

/// `GET …/layouts/{layout}`: field and portal metadata and value lists,
/// limited to what the caller's privilege set lets it see.
pub async fn layout_metadata(
    State(state): State<AppState>,
    Path((host, version, db, layout)): Path<(String, String, String, String)>,
    Query(_params): Query<Params>,
    headers: HeaderMap,
) -> Response {
    let result = async {
        let (app, session, _) = session(&state, &headers, &host, &version, &db).await?;
        let schema = app.schema();
        let layout = schema.layout(&layout).ok_or_else(|| FmError::code(105))?;
        let privileges = schema
            .privilege_set(&session.privilege_set)
            .ok_or_else(|| FmError::code(9))?;
        let table = &schema.tables[layout.table];
        let mut lists = Vec::new();
        let mut fields = Vec::new();
        for i in &layout.fields {
            let f = &table.fields[*i];
            if privileges.field_access(table.id, f.id) == kura_apps::schema::FieldAccess::None {
                continue;
            }
            if let Some(vl) = &f.def.value_list
                && !lists.contains(vl)
            {
                lists.push(vl.clone());
            }
            fields.push(field_meta(f.name().to_owned(), f));
        }
        let mut portals = serde_json::Map::new();
        for p in &layout.portals {
            let related = &schema.tables[p.table];
            let mut pf = Vec::new();
            for i in &p.fields {
                let f = &related.fields[*i];
                if privileges.field_access(related.id, f.id) == kura_apps::schema::FieldAccess::None {
                    continue;
                }
                pf.push(field_meta(format!("{}::{}", related.name, f.name()), f));
            }
            portals.insert(p.name.clone(), Value::Array(pf));
        }
        let value_lists: Vec<Value> = lists
            .iter()
            .filter_map(|name| schema.value_list(name))
            .map(|vl| {
                json!({
                    "name": vl.name,
                    "type": "customList",
                    "values": vl.values.iter().map(|v| json!({"value": v, "displayValue": v})).collect::<Vec<_>>(),
                })
            })
            .collect();
        Ok(json!({
            "fieldMetaData": fields,
            "portalMetaData": portals,
            "valueLists": value_lists,
        }))
    }
    .await;
    reply(result)
}
