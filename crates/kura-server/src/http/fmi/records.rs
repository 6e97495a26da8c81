//! What every record request shares: its options (query or body), the
//! scripts attached to it, the resolved session and layout (`Call`), the
//! write transaction that a FileMaker error rolls back, and signed
//! container URLs. The handlers are in `reads` (range, get, `_find`) and
//! `writes` (create, edit, duplicate, delete, scripts, globals).
//!
//! Each request runs in one store transaction. A write that fails anywhere
//! (a portal row, a validation, a stale `modId`) rolls back entirely.

use std::collections::HashMap;
use std::sync::Arc;

use http::{HeaderMap, header};
use kura_apps::data::{self, Caller, DEFAULT_LIMIT, MAX_LIMIT, SortSpec};
use kura_apps::schema::{Layout, Schema};
use kura_apps::sessions::FmSession;
use kura_apps::value::DateFormat;
use kura_apps::{FmError, LoadedApp, script};
use kura_crypto::hmac::HmacKey;
use kura_store::StoreError;
use kura_store::app_data::AppWrite;
use kura_types::AppId;
use parking_lot::Mutex;
use serde_json::{Map, Value};

use super::{Params, session};
use crate::http::AppState;

/// How long a container URL stays valid.
pub(super) const CONTAINER_URL_SECS: i64 = 3600;

/// Where a request's options come from: the query (GET, DELETE) or the
/// JSON body (POST, PATCH).
pub(super) struct Options {
    pub(super) values: Map<String, Value>,
}

impl Options {
    pub(super) fn from_query(params: Params) -> Self {
        Self {
            values: params
                .into_iter()
                .map(|(k, v)| (k, Value::String(v)))
                .collect(),
        }
    }

    pub(super) fn text(&self, key: &str) -> Option<String> {
        match self.values.get(key)? {
            Value::String(s) => Some(s.clone()),
            Value::Number(n) => Some(n.to_string()),
            _ => None,
        }
    }

    /// A positive whole number (strings or numbers, as clients differ).
    pub(super) fn positive(&self, key: &str) -> Result<Option<u64>, FmError> {
        let Some(raw) = self.values.get(key) else {
            return Ok(None);
        };
        let n = match raw {
            Value::Number(n) => n.as_u64(),
            Value::String(s) => s.trim().parse::<u64>().ok(),
            _ => None,
        };
        match n {
            Some(n) if n >= 1 => Ok(Some(n)),
            _ => Err(FmError::with(
                960,
                format!("Parameter is invalid (`{key}` must be a whole number of at least 1)"),
            )),
        }
    }

    pub(super) fn limit(&self, key: &str) -> Result<u64, FmError> {
        match self.positive(key)? {
            None => Ok(DEFAULT_LIMIT),
            Some(n) if n <= MAX_LIMIT => Ok(n),
            Some(_) => Err(FmError::with(
                960,
                format!("Parameter is invalid (`{key}` is at most {MAX_LIMIT})"),
            )),
        }
    }

    /// A JSON value that may arrive as JSON text (query) or as JSON (body).
    pub(super) fn json(&self, key: &str) -> Result<Option<Value>, FmError> {
        match self.values.get(key) {
            None => Ok(None),
            Some(Value::String(s)) => serde_json::from_str(s).map(Some).map_err(|_| {
                FmError::with(960, format!("Parameter is invalid (`{key}` is not JSON)"))
            }),
            Some(v) => Ok(Some(v.clone())),
        }
    }

    pub(super) fn format(&self) -> Result<DateFormat, FmError> {
        self.values
            .get("dateformats")
            .map_or(Ok(DateFormat::Us), DateFormat::parse)
    }

    pub(super) fn sort(&self, key: &str) -> Result<SortSpec, FmError> {
        let Some(v) = self.json(key)? else {
            return Ok(Vec::new());
        };
        let items = match v {
            Value::Array(a) => a,
            Value::Object(_) => vec![v],
            _ => return Err(FmError::with(960, "Parameter is invalid (sort)")),
        };
        items
            .into_iter()
            .map(|item| {
                let name = item
                    .get("fieldName")
                    .and_then(Value::as_str)
                    .ok_or_else(|| {
                        FmError::with(960, "Parameter is invalid (sort needs fieldName)")
                    })?;
                let descending = match item.get("sortOrder").and_then(Value::as_str) {
                    None | Some("ascend") | Some("ascending") => false,
                    Some("descend") | Some("descending") => true,
                    Some(other) => {
                        return Err(FmError::with(
                            960,
                            format!("Parameter is invalid (sortOrder `{other}`)"),
                        ));
                    }
                };
                Ok((name.to_owned(), descending))
            })
            .collect()
    }

    /// `portal` and per-portal ranges (`_offset.P`/`_limit.P` in queries,
    /// `offset.P`/`limit.P` in bodies — and either on a find, as clients
    /// differ).
    pub(super) fn portals(
        &self,
        extra: Option<&Params>,
    ) -> Result<(Option<Vec<String>>, PortalRanges), FmError> {
        let wanted = match self.json("portal")? {
            None => None,
            Some(Value::Array(a)) => Some(
                a.into_iter()
                    .map(|v| {
                        v.as_str()
                            .map(str::to_owned)
                            .ok_or_else(|| FmError::with(960, "Parameter is invalid (portal)"))
                    })
                    .collect::<Result<Vec<_>, _>>()?,
            ),
            Some(_) => {
                return Err(FmError::with(
                    960,
                    "Parameter is invalid (portal must be an array)",
                ));
            }
        };
        let mut ranges: HashMap<String, (u64, u64)> = HashMap::new();
        let mut sources = vec![self];
        let extra_opts = extra.map(|p| Options::from_query(p.clone()));
        if let Some(e) = &extra_opts {
            sources.push(e);
        }
        for src in sources {
            for key in src.values.keys() {
                for (prefix, is_offset) in [
                    ("_offset.", true),
                    ("offset.", true),
                    ("_limit.", false),
                    ("limit.", false),
                ] {
                    if let Some(portal) = key.strip_prefix(prefix) {
                        let n = src.positive(key)?.ok_or_else(|| {
                            FmError::with(960, format!("Parameter is invalid (`{key}`)"))
                        })?;
                        if !is_offset && n > MAX_LIMIT {
                            return Err(FmError::with(
                                960,
                                format!("Parameter is invalid (`{key}`)"),
                            ));
                        }
                        let entry = ranges
                            .entry(portal.to_owned())
                            .or_insert((1, data::DEFAULT_PORTAL_LIMIT));
                        if is_offset { entry.0 = n } else { entry.1 = n }
                    }
                }
            }
        }
        Ok((wanted, ranges))
    }

    pub(super) fn scripts(&self) -> Scripts {
        let get = |k: &str| self.text(k);
        Scripts {
            prerequest: get("script.prerequest")
                .map(|n| (n, get("script.prerequest.param").unwrap_or_default())),
            presort: get("script.presort")
                .map(|n| (n, get("script.presort.param").unwrap_or_default())),
            after: get("script").map(|n| (n, get("script.param").unwrap_or_default())),
        }
    }
}

/// Per-portal (offset, limit).
pub(super) type PortalRanges = HashMap<String, (u64, u64)>;

/// Scripts attached to a request: (name, parameter).
#[derive(Default, Clone)]
pub(super) struct Scripts {
    pub(super) prerequest: Option<(String, String)>,
    pub(super) presort: Option<(String, String)>,
    pub(super) after: Option<(String, String)>,
}

impl Scripts {
    pub(super) fn any(&self) -> bool {
        self.prerequest.is_some() || self.presort.is_some() || self.after.is_some()
    }
}

#[allow(clippy::too_many_arguments)]
pub(super) fn run_attached(
    w: &AppWrite<'_>,
    schema: &Schema,
    layout: &Layout,
    caller: &Caller<'_>,
    call: &Option<(String, String)>,
    suffix: &str,
    now: time::OffsetDateTime,
    out: &mut Map<String, Value>,
) {
    let Some((name, param)) = call else { return };
    let outcome = match schema.script(name) {
        Some(s) => script::run(w, schema, Some(layout), caller, s, param, now),
        None => script::Outcome {
            result: None,
            error: 104,
        },
    };
    if let Some(result) = outcome.result {
        out.insert(format!("scriptResult{suffix}"), Value::String(result));
    }
    out.insert(
        format!("scriptError{suffix}"),
        Value::String(outcome.error.to_string()),
    );
}

/// Everything a data call needs, owned, for the store's worker thread.
pub(super) struct Call {
    pub(super) app: Arc<LoadedApp>,
    pub(super) schema: Arc<Schema>,
    pub(super) session: FmSession,
    pub(super) layout: String,
    pub(super) database: String,
    pub(super) container_base: String,
    pub(super) key: Arc<HmacKey>,
    pub(super) now: time::OffsetDateTime,
}

impl Call {
    pub(super) async fn new(
        state: &AppState,
        headers: &HeaderMap,
        uri: &http::Uri,
        (host, version, db, layout): (String, String, String, String),
    ) -> Result<Self, FmError> {
        let (app, session, _) = session(state, headers, &host, &version, &db).await?;
        let schema = app.schema();
        if schema.layout(&layout).is_none() {
            return Err(FmError::code(105));
        }
        if schema.privilege_set(&session.privilege_set).is_none() {
            return Err(FmError::code(9));
        }
        // HTTP/2 carries the authority in the URI, HTTP/1.1 in `Host`.
        let authority = uri
            .authority()
            .map(|a| a.as_str())
            .or_else(|| headers.get(header::HOST).and_then(|v| v.to_str().ok()))
            .filter(|h| {
                h.chars()
                    .all(|c| c.is_ascii_alphanumeric() || ".-:[]".contains(c))
            })
            .unwrap_or("localhost");
        Ok(Self {
            container_base: format!(
                "https://{authority}/hosts/{host}/fmi/containers/{}",
                app.record().id
            ),
            app,
            schema,
            session,
            layout,
            database: db,
            key: Arc::clone(&state.container_key),
            now: state.clock.now(),
        })
    }
}

impl Call {
    /// The request's layout and the caller under the session's privilege
    /// set (a set removed since sign-in is error 9).
    pub(super) fn caller(&self) -> Result<(&Layout, Caller<'_>), FmError> {
        let layout = self
            .schema
            .layout(&self.layout)
            .ok_or_else(|| FmError::code(105))?;
        let privileges = self
            .schema
            .privilege_set(&self.session.privilege_set)
            .ok_or_else(|| FmError::code(9))?;
        Ok((
            layout,
            Caller {
                account: &self.session.account,
                privileges,
                globals: &self.session.globals,
            },
        ))
    }
}

pub(super) fn sign(
    key: &HmacKey,
    app: AppId,
    table: u32,
    rid: i64,
    field: u32,
    exp: i64,
) -> String {
    key.sign_hex(format!("{app}/{table}/{rid}/{field}/{exp}").as_bytes())
}

/// Runs `f` in a write transaction; a FileMaker error rolls it back.
pub(super) async fn in_write<T, F>(app: &LoadedApp, f: F) -> Result<T, FmError>
where
    T: Send + 'static,
    F: FnOnce(&AppWrite<'_>) -> Result<T, FmError> + Send + 'static,
{
    let slot: Arc<Mutex<Option<FmError>>> = Arc::new(Mutex::new(None));
    let failed = Arc::clone(&slot);
    let result = app
        .data
        .write(move |w| match f(w) {
            Ok(v) => Ok(v),
            Err(e) => {
                *failed.lock() = Some(e);
                Err(StoreError::Worker("request rolled back".into()))
            }
        })
        .await;
    match result {
        Ok(v) => Ok(v),
        Err(e) => Err(slot.lock().take().unwrap_or_else(|| FmError::internal(&e))),
    }
}

pub(super) type LayoutPath = (String, String, String, String);
pub(super) type RecordPath = (String, String, String, String, String);

pub(super) fn record_id(raw: &str) -> Result<i64, FmError> {
    raw.parse::<i64>()
        .ok()
        .filter(|n| *n > 0)
        .ok_or_else(|| FmError::code(101))
}

pub(super) fn object(o: &Options, key: &str) -> Result<Map<String, Value>, FmError> {
    match o.values.get(key) {
        None => Ok(Map::new()),
        Some(Value::Object(m)) => Ok(m.clone()),
        Some(_) => Err(FmError::with(
            960,
            format!("Parameter is invalid (`{key}` must be an object)"),
        )),
    }
}

pub(super) fn mod_id(v: Option<&Value>) -> Result<Option<i64>, FmError> {
    data::parse_id(v, "modId")
}
