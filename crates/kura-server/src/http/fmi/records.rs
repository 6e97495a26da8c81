//! Records: range, get, create, edit (with `modId`), duplicate, delete,
//! `_find`, scripts (standalone and attached), globals, and container
//! upload and download.
//!
//! Each request runs in one store transaction. A write that fails anywhere
//! (a portal row, a validation, a stale `modId`) rolls back entirely.

use std::collections::HashMap;
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::response::Response;
use http::{HeaderMap, header};
use kura_apps::data::{self, Caller, DEFAULT_LIMIT, MAX_LIMIT, Render, SortSpec};
use kura_apps::schema::{Layout, Schema};
use kura_apps::sessions::FmSession;
use kura_apps::value::DateFormat;
use kura_apps::{FmError, LoadedApp, script};
use kura_crypto::hmac::HmacKey;
use kura_store::StoreError;
use kura_store::app_data::{AppWrite, Filter};
use kura_types::AppId;
use parking_lot::Mutex;
use serde_json::{Map, Value, json};

use super::{Params, body_json, reply, session};
use crate::http::AppState;

/// How long a container URL stays valid.
const CONTAINER_URL_SECS: i64 = 3600;

/// Where a request's options come from: the query (GET, DELETE) or the
/// JSON body (POST, PATCH).
struct Options {
    values: Map<String, Value>,
}

impl Options {
    fn from_query(params: Params) -> Self {
        Self {
            values: params
                .into_iter()
                .map(|(k, v)| (k, Value::String(v)))
                .collect(),
        }
    }

    fn text(&self, key: &str) -> Option<String> {
        match self.values.get(key)? {
            Value::String(s) => Some(s.clone()),
            Value::Number(n) => Some(n.to_string()),
            _ => None,
        }
    }

    /// A positive whole number (strings or numbers, as clients differ).
    fn positive(&self, key: &str) -> Result<Option<u64>, FmError> {
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

    fn limit(&self, key: &str) -> Result<u64, FmError> {
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
    fn json(&self, key: &str) -> Result<Option<Value>, FmError> {
        match self.values.get(key) {
            None => Ok(None),
            Some(Value::String(s)) => serde_json::from_str(s).map(Some).map_err(|_| {
                FmError::with(960, format!("Parameter is invalid (`{key}` is not JSON)"))
            }),
            Some(v) => Ok(Some(v.clone())),
        }
    }

    fn format(&self) -> Result<DateFormat, FmError> {
        self.values
            .get("dateformats")
            .map_or(Ok(DateFormat::Us), DateFormat::parse)
    }

    fn sort(&self, key: &str) -> Result<SortSpec, FmError> {
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
    fn portals(
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

    fn scripts(&self) -> Scripts {
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
type PortalRanges = HashMap<String, (u64, u64)>;

/// Scripts attached to a request: (name, parameter).
#[derive(Default, Clone)]
struct Scripts {
    prerequest: Option<(String, String)>,
    presort: Option<(String, String)>,
    after: Option<(String, String)>,
}

impl Scripts {
    fn any(&self) -> bool {
        self.prerequest.is_some() || self.presort.is_some() || self.after.is_some()
    }
}

#[allow(clippy::too_many_arguments)]
fn run_attached(
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

fn sign(key: &HmacKey, app: AppId, table: u32, rid: i64, field: u32, exp: i64) -> String {
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

/// The page-shaped response of range, get and find.
struct PageRequest {
    filter: Option<Value>,
    rid: Option<i64>,
    offset: u64,
    limit: u64,
    sort: SortSpec,
    portals: Option<Vec<String>>,
    ranges: HashMap<String, (u64, u64)>,
    format: DateFormat,
    response_layout: Option<String>,
    scripts: Scripts,
}

async fn page(call: Call, req: PageRequest) -> Result<Value, FmError> {
    let with_scripts = req.scripts.any();
    let app = Arc::clone(&call.app);
    let work = move |w: Option<&AppWrite<'_>>,
                     r: &kura_store::app_data::AppRead<'_>|
          -> Result<Value, FmError> {
        let schema = &call.schema;
        let (layout, caller) = call.caller()?;
        let mut extra = Map::new();
        if let Some(w) = w {
            run_attached(
                w,
                schema,
                layout,
                &caller,
                &req.scripts.prerequest,
                ".prerequest",
                call.now,
                &mut extra,
            );
        }
        let filter = match &req.filter {
            Some(q) => kura_apps::find::query_filter(
                schema,
                layout,
                caller.privileges,
                q,
                req.format,
                call.now,
            )?,
            None => Filter::All,
        };
        let sort = data::sort_keys(schema, layout, &caller, &req.sort)?;
        if let Some(w) = w {
            run_attached(
                w,
                schema,
                layout,
                &caller,
                &req.scripts.presort,
                ".presort",
                call.now,
                &mut extra,
            );
        }
        let out_layout = match &req.response_layout {
            Some(name) => {
                let l = schema.layout(name).ok_or_else(|| FmError::code(105))?;
                if l.table != layout.table {
                    return Err(FmError::with(
                        960,
                        "layout.response must show the same table",
                    ));
                }
                l
            }
            None => layout,
        };
        let (base, key, app_id) = (
            call.container_base.clone(),
            Arc::clone(&call.key),
            call.app.record().id,
        );
        let exp = call.now.unix_timestamp() + CONTAINER_URL_SECS;
        let url = move |table: u32, rid: i64, field: u32| {
            format!(
                "{base}/{table}/{rid}/{field}?exp={exp}&sig={}",
                sign(&key, app_id, table, rid, field, exp)
            )
        };
        let render = Render {
            format: req.format,
            portals: req.portals.as_deref(),
            portal_ranges: &req.ranges,
            container_url: &url,
        };
        let (total, found, records) = match req.rid {
            Some(rid) => data::one(r, schema, out_layout, &caller, rid, &render)?,
            None => data::page(
                r, schema, out_layout, &caller, filter, &sort, req.offset, req.limit, &render,
            )?,
        };
        if let Some(w) = w {
            run_attached(
                w,
                schema,
                layout,
                &caller,
                &req.scripts.after,
                "",
                call.now,
                &mut extra,
            );
        }
        let table = &schema.tables[layout.table];
        extra.insert(
            "dataInfo".into(),
            data::data_info(
                &call.database,
                out_layout,
                table,
                total,
                found,
                records.len(),
            ),
        );
        extra.insert("data".into(), Value::Array(records));
        Ok(Value::Object(extra))
    };
    if with_scripts {
        in_write(&app, move |w| work(Some(w), &w.read())).await
    } else {
        // Reads change nothing, so a FileMaker error needs no rollback.
        app.data
            .read(move |r| Ok(work(None, r)))
            .await
            .map_err(|e| FmError::internal(&e))?
    }
}

pub(super) type LayoutPath = (String, String, String, String);
type RecordPath = (String, String, String, String, String);

pub(super) fn record_id(raw: &str) -> Result<i64, FmError> {
    raw.parse::<i64>()
        .ok()
        .filter(|n| *n > 0)
        .ok_or_else(|| FmError::code(101))
}

/// `GET …/records`.
pub async fn range(
    State(state): State<AppState>,
    Path(path): Path<LayoutPath>,
    Query(params): Query<Params>,
    headers: HeaderMap,
    uri: http::Uri,
) -> Response {
    let result = async {
        let call = Call::new(&state, &headers, &uri, path).await?;
        let o = Options::from_query(params);
        let (portals, ranges) = o.portals(None)?;
        let req = PageRequest {
            filter: None,
            rid: None,
            offset: o.positive("_offset")?.unwrap_or(1),
            limit: o.limit("_limit")?,
            sort: o.sort("_sort")?,
            portals,
            ranges,
            format: o.format()?,
            response_layout: o.text("layout.response"),
            scripts: o.scripts(),
        };
        page(call, req).await
    }
    .await;
    reply(result)
}

/// `GET …/records/{id}`.
pub async fn get_one(
    State(state): State<AppState>,
    Path((host, version, db, layout, id)): Path<RecordPath>,
    Query(params): Query<Params>,
    headers: HeaderMap,
    uri: http::Uri,
) -> Response {
    let result = async {
        let call = Call::new(&state, &headers, &uri, (host, version, db, layout)).await?;
        let o = Options::from_query(params);
        let (portals, ranges) = o.portals(None)?;
        let req = PageRequest {
            filter: None,
            rid: Some(record_id(&id)?),
            offset: 1,
            limit: 1,
            sort: Vec::new(),
            portals,
            ranges,
            format: o.format()?,
            response_layout: o.text("layout.response"),
            scripts: o.scripts(),
        };
        page(call, req).await
    }
    .await;
    reply(result)
}

/// `POST …/_find`.
pub async fn find(
    State(state): State<AppState>,
    Path(path): Path<LayoutPath>,
    Query(params): Query<Params>,
    headers: HeaderMap,
    uri: http::Uri,
    body: Bytes,
) -> Response {
    let result = async {
        let call = Call::new(&state, &headers, &uri, path).await?;
        let o = Options {
            values: body_json(&body)?,
        };
        let query = o
            .values
            .get("query")
            .cloned()
            .ok_or_else(|| FmError::with(958, "Parameter missing (query)"))?;
        let (portals, ranges) = o.portals(Some(&params))?;
        let req = PageRequest {
            filter: Some(query),
            rid: None,
            offset: o.positive("offset")?.unwrap_or(1),
            limit: o.limit("limit")?,
            sort: o.sort("sort")?,
            portals,
            ranges,
            format: o.format()?,
            response_layout: o.text("layout.response"),
            scripts: o.scripts(),
        };
        page(call, req).await
    }
    .await;
    reply(result)
}

fn object(o: &Options, key: &str) -> Result<Map<String, Value>, FmError> {
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

/// What a write does between the attached scripts.
enum WriteOp {
    Create {
        fields: Map<String, Value>,
        portals: Map<String, Value>,
    },
    Edit {
        rid: i64,
        modid: Option<i64>,
        fields: Map<String, Value>,
        portals: Map<String, Value>,
    },
    Duplicate {
        rid: i64,
    },
    Delete {
        rid: i64,
    },
}

async fn write(call: Call, op: WriteOp, o: &Options) -> Result<Value, FmError> {
    let format = o.format()?;
    let scripts = o.scripts();
    let app = Arc::clone(&call.app);
    in_write(&app, move |w| {
        let schema = &call.schema;
        let (layout, caller) = call.caller()?;
        let mut out = Map::new();
        run_attached(
            w,
            schema,
            layout,
            &caller,
            &scripts.prerequest,
            ".prerequest",
            call.now,
            &mut out,
        );
        match op {
            WriteOp::Create { fields, portals } => {
                let (rid, modid) = data::create(
                    w, schema, layout, &caller, &fields, &portals, format, call.now,
                )?;
                out.insert("recordId".into(), Value::String(rid.to_string()));
                out.insert("modId".into(), Value::String(modid.to_string()));
            }
            WriteOp::Edit {
                rid,
                modid,
                fields,
                portals,
            } => {
                let m = data::edit(
                    w, schema, layout, &caller, rid, modid, &fields, &portals, format, call.now,
                )?;
                out.insert("modId".into(), Value::String(m.to_string()));
            }
            WriteOp::Duplicate { rid } => {
                let (rid, modid) = data::duplicate(w, schema, layout, &caller, rid, call.now)?;
                out.insert("recordId".into(), Value::String(rid.to_string()));
                out.insert("modId".into(), Value::String(modid.to_string()));
            }
            WriteOp::Delete { rid } => data::delete(w, schema, layout, &caller, rid, call.now)?,
        }
        run_attached(
            w,
            schema,
            layout,
            &caller,
            &scripts.presort,
            ".presort",
            call.now,
            &mut out,
        );
        run_attached(
            w,
            schema,
            layout,
            &caller,
            &scripts.after,
            "",
            call.now,
            &mut out,
        );
        Ok(Value::Object(out))
    })
    .await
}

/// `POST …/records`.
pub async fn create(
    State(state): State<AppState>,
    Path(path): Path<LayoutPath>,
    headers: HeaderMap,
    uri: http::Uri,
    body: Bytes,
) -> Response {
    let result = async {
        let call = Call::new(&state, &headers, &uri, path).await?;
        let o = Options {
            values: body_json(&body)?,
        };
        if !o.values.contains_key("fieldData") {
            return Err(FmError::with(958, "Parameter missing (fieldData)"));
        }
        let op = WriteOp::Create {
            fields: object(&o, "fieldData")?,
            portals: object(&o, "portalData")?,
        };
        write(call, op, &o).await
    }
    .await;
    reply(result)
}

/// `PATCH …/records/{id}`.
pub async fn edit(
    State(state): State<AppState>,
    Path((host, version, db, layout, id)): Path<RecordPath>,
    headers: HeaderMap,
    uri: http::Uri,
    body: Bytes,
) -> Response {
    let result = async {
        let call = Call::new(&state, &headers, &uri, (host, version, db, layout)).await?;
        let o = Options {
            values: body_json(&body)?,
        };
        let op = WriteOp::Edit {
            rid: record_id(&id)?,
            modid: mod_id(o.values.get("modId"))?,
            fields: object(&o, "fieldData")?,
            portals: object(&o, "portalData")?,
        };
        write(call, op, &o).await
    }
    .await;
    reply(result)
}

/// `POST …/records/{id}`: duplicate.
pub async fn duplicate(
    State(state): State<AppState>,
    Path((host, version, db, layout, id)): Path<RecordPath>,
    headers: HeaderMap,
    uri: http::Uri,
    body: Bytes,
) -> Response {
    let result = async {
        let call = Call::new(&state, &headers, &uri, (host, version, db, layout)).await?;
        let o = Options {
            values: body_json(&body)?,
        };
        write(
            call,
            WriteOp::Duplicate {
                rid: record_id(&id)?,
            },
            &o,
        )
        .await
    }
    .await;
    reply(result)
}

/// `DELETE …/records/{id}` (script keys in the query).
pub async fn delete(
    State(state): State<AppState>,
    Path((host, version, db, layout, id)): Path<RecordPath>,
    Query(params): Query<Params>,
    headers: HeaderMap,
    uri: http::Uri,
) -> Response {
    let result = async {
        let call = Call::new(&state, &headers, &uri, (host, version, db, layout)).await?;
        let o = Options::from_query(params);
        write(
            call,
            WriteOp::Delete {
                rid: record_id(&id)?,
            },
            &o,
        )
        .await
    }
    .await;
    reply(result)
}

/// `GET …/layouts/{layout}/script/{script}?script.param=…`.
pub async fn run_script(
    State(state): State<AppState>,
    Path((host, version, db, layout, name)): Path<RecordPath>,
    Query(params): Query<Params>,
    headers: HeaderMap,
    uri: http::Uri,
) -> Response {
    let result = async {
        let call = Call::new(&state, &headers, &uri, (host, version, db, layout)).await?;
        if call.schema.script(&name).is_none() {
            return Err(FmError::code(104));
        }
        let param = params.get("script.param").cloned().unwrap_or_default();
        let app = Arc::clone(&call.app);
        in_write(&app, move |w| {
            let schema = &call.schema;
            let (layout, caller) = call.caller()?;
            let script = schema.script(&name).ok_or_else(|| FmError::code(104))?;
            let outcome = script::run(w, schema, Some(layout), &caller, script, &param, call.now);
            let mut out = Map::new();
            if let Some(r) = outcome.result {
                out.insert("scriptResult".into(), Value::String(r));
            }
            out.insert(
                "scriptError".into(),
                Value::String(outcome.error.to_string()),
            );
            Ok(Value::Object(out))
        })
        .await
    }
    .await;
    reply(result)
}

/// `PATCH …/databases/{db}/globals` with `{"globalFields": {"T::g": v}}`.
pub async fn globals(
    State(state): State<AppState>,
    Path((host, version, db)): Path<(String, String, String)>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let result = async {
        let (app, _session, token) = session(&state, &headers, &host, &version, &db).await?;
        let o = Options {
            values: body_json(&body)?,
        };
        let Some(Value::Object(values)) = o.values.get("globalFields") else {
            return Err(FmError::with(958, "Parameter missing (globalFields)"));
        };
        let cells = kura_apps::service::global_values(&app.schema(), values, o.format()?)?;
        state.apps.sessions.set_globals(&token, cells)?;
        Ok(json!({}))
    }
    .await;
    reply(result)
}
