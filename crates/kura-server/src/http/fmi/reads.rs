//! Record reads: range (`GET …/records`), one record, and `_find`, each
//! rendered as a page inside one read snapshot (or a write transaction
//! when scripts are attached).

use std::collections::HashMap;
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::response::Response;
use http::HeaderMap;
use kura_apps::FmError;
use kura_apps::data::{self, Caller, Render, SortSpec};
use kura_apps::schema::{Layout, Schema};
use kura_apps::value::DateFormat;
use kura_store::app_data::{AppWrite, Filter};
use serde::ser::{Serialize, SerializeMap, Serializer};
use serde_json::value::RawValue;
use serde_json::{Map, Value};

use super::records::{
    CONTAINER_URL_SECS, Call, LayoutPath, Options, RecordPath, Scripts, in_write, record_id,
    run_attached, sign,
};
use super::{Params, body_json, reply, reply_with};
use crate::http::AppState;

/// The page-shaped response of range, get and find.
pub(super) struct PageRequest {
    pub(super) filter: Option<Value>,
    pub(super) rid: Option<i64>,
    pub(super) offset: u64,
    pub(super) limit: u64,
    pub(super) sort: SortSpec,
    pub(super) portals: Option<Vec<String>>,
    pub(super) ranges: HashMap<String, (u64, u64)>,
    pub(super) format: DateFormat,
    pub(super) response_layout: Option<String>,
    pub(super) scripts: Scripts,
}

impl PageRequest {
    /// The find request's filter (everything for a range).
    pub(super) fn filter(
        &self,
        call: &Call,
        layout: &Layout,
        caller: &Caller<'_>,
    ) -> Result<Filter, FmError> {
        match &self.filter {
            Some(q) => kura_apps::find::query_filter(
                &call.schema,
                layout,
                caller.privileges,
                q,
                self.format,
                call.now,
            ),
            None => Ok(Filter::All),
        }
    }

    /// The layout the records are shown in: `layout.response`, which must
    /// show the same table, or the request's layout.
    pub(super) fn out_layout<'s>(
        &self,
        schema: &'s Schema,
        layout: &'s Layout,
    ) -> Result<&'s Layout, FmError> {
        match &self.response_layout {
            Some(name) => {
                let l = schema.layout(name).ok_or_else(|| FmError::code(105))?;
                if l.table != layout.table {
                    return Err(FmError::with(
                        960,
                        "layout.response must show the same table",
                    ));
                }
                Ok(l)
            }
            None => Ok(layout),
        }
    }
}

/// A page answer: script results, `dataInfo`, then the records as the
/// JSON text they were rendered into.
pub(super) struct PageAnswer {
    extra: Map<String, Value>,
    info: data::DataInfo,
    records: Vec<Box<RawValue>>,
}

impl PageAnswer {
    /// The answer as a JSON value, for callers that read it rather than
    /// send it.
    pub(super) fn into_value(self) -> Result<Value, FmError> {
        serde_json::to_value(&self)
            .map_err(|e| FmError::broken(format_args!("a page could not be read back: {e}")))
    }
}

impl Serialize for PageAnswer {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut map = s.serialize_map(Some(self.extra.len() + 2))?;
        for (k, v) in &self.extra {
            map.serialize_entry(k, v)?;
        }
        map.serialize_entry("dataInfo", &self.info)?;
        map.serialize_entry("data", &self.records)?;
        map.end()
    }
}

impl super::Answer for PageAnswer {
    fn size_hint(&self) -> usize {
        256 + self
            .records
            .iter()
            .map(|r| r.get().len() + 1)
            .sum::<usize>()
    }
}

pub(super) async fn page(call: Call, req: PageRequest) -> Result<PageAnswer, FmError> {
    let with_scripts = req.scripts.any();
    // One record by id without portals (whose related rows are counted and
    // may be many) is a short read.
    let req_is_one = req.rid.is_some()
        && call.schema.layout(&call.layout).is_some_and(|l| {
            l.portals.is_empty() || req.portals.as_ref().is_some_and(Vec::is_empty)
        });
    let app = Arc::clone(&call.app);
    let work = move |w: Option<&AppWrite<'_>>,
                     r: &kura_store::app_data::AppRead<'_>|
          -> Result<PageAnswer, FmError> {
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
        let filter = req.filter(&call, layout, &caller)?;
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
        let out_layout = req.out_layout(schema, layout)?;
        let url = container_urls(&call);
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
        let info = data::data_info(
            &call.database,
            out_layout,
            table,
            total,
            found,
            records.len(),
        );
        Ok(PageAnswer {
            extra,
            info,
            records,
        })
    };
    if with_scripts {
        in_write(&app, move |w| work(Some(w), &w.read())).await
    } else if req_is_one {
        app.data
            .read_quick(move |r| Ok(work(None, r)))
            .await
            .map_err(|e| FmError::internal(&e))?
    } else {
        // Reads change nothing, so a FileMaker error needs no rollback.
        app.data
            .read(move |r| Ok(work(None, r)))
            .await
            .map_err(|e| FmError::internal(&e))?
    }
}

/// Container URLs of a page: signed, expiring links to each file.
pub(super) fn container_urls(call: &Call) -> impl Fn(u32, i64, u32) -> String + use<> {
    let (base, key, app_id) = (
        call.container_base.clone(),
        Arc::clone(&call.key),
        call.app.record().id,
    );
    let exp = call.now.unix_timestamp() + CONTAINER_URL_SECS;
    move |table: u32, rid: i64, field: u32| {
        format!(
            "{base}/{table}/{rid}/{field}?exp={exp}&sig={}",
            sign(&key, app_id, table, rid, field, exp)
        )
    }
}

/// Answers a range or find: pages of more than [`super::stream::STREAM_OVER`]
/// records without scripts are streamed, the rest answered whole.
async fn respond(call: Call, req: PageRequest) -> Response {
    if req.rid.is_none() && !req.scripts.any() && req.limit > super::stream::STREAM_OVER {
        super::stream::page(call, req).await
    } else {
        reply_with(page(call, req).await)
    }
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
        Ok(respond(call, req).await)
    }
    .await;
    result.unwrap_or_else(|e| reply(Err(e)))
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
    reply_with(result)
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
        Ok(respond(call, req).await)
    }
    .await;
    result.unwrap_or_else(|e| reply(Err(e)))
}
