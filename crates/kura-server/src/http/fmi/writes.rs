//! Record writes: create, edit (with `modId`), duplicate, delete, running
//! a script, and setting globals, each in one transaction with its
//! attached scripts.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::response::Response;
use http::HeaderMap;
use kura_apps::data::{self};
use kura_apps::{FmError, script};
use serde_json::{Map, Value, json};

use super::records::{
    Call, LayoutPath, Options, RecordPath, in_write, mod_id, object, record_id, run_attached,
};
use super::{Params, body_json, reply, session};
use crate::http::AppState;

/// What a write does between the attached scripts.
pub(super) enum WriteOp {
    /// Values already parsed and validated ([`WriteOp::create`]).
    Create {
        values: data::CreateValues,
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

impl WriteOp {
    /// A create through `call`'s layout. The values are parsed and
    /// validated here, beside the other requests, rather than on the app's
    /// writer thread, which runs one write at a time; a refusal here is
    /// the one the transaction would have rolled back.
    pub(super) fn create(
        call: &Call,
        o: &Options,
        fields: &Map<String, Value>,
        portals: Map<String, Value>,
    ) -> Result<Self, FmError> {
        let format = o.format()?;
        let (layout, caller) = call.caller()?;
        let values = data::create_values(&call.schema, layout, &caller, fields, format)?;
        Ok(WriteOp::Create { values, portals })
    }
}

pub(super) async fn write(call: Call, op: WriteOp, o: &Options) -> Result<Value, FmError> {
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
            WriteOp::Create { values, portals } => {
                let (rid, modid) = data::create_checked(
                    w, schema, layout, &caller, values, &portals, format, call.now,
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
        let op = WriteOp::create(
            &call,
            &o,
            &object(&o, "fieldData")?,
            object(&o, "portalData")?,
        )?;
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
