//! Container fields: upload (multipart, the part named `upload`) into a
//! record's container field, and download through the signed, expiring URL
//! that records carry in place of the file (clients fetch it without their
//! token).

use std::sync::Arc;

use axum::extract::{Multipart, Path, Query, State};
use axum::response::{IntoResponse, Response};
use http::{HeaderMap, HeaderValue, StatusCode, header};
use kura_apps::FmError;
use kura_apps::data;
use kura_store::app_data::ContainerCell;
use kura_types::AppId;
use serde_json::{Value, json};

use super::records::{Call, LayoutPath, in_write, mod_id, record_id};
use super::{Params, reply};
use crate::http::AppState;

#[allow(clippy::too_many_arguments)]
async fn upload_inner(
    state: AppState,
    path: LayoutPath,
    id: String,
    field: String,
    repetition: Option<String>,
    params: Params,
    headers: HeaderMap,
    uri: http::Uri,
    mut multipart: Multipart,
) -> Result<Value, FmError> {
    let call = Call::new(&state, &headers, &uri, path).await?;
    if repetition.as_deref().is_some_and(|r| r != "1") {
        return Err(FmError::with(
            960,
            "Parameter is invalid (only repetition 1 exists)",
        ));
    }
    let rid = record_id(&id)?;
    let expected = mod_id(
        params
            .get("modId")
            .map(|s| Value::String(s.clone()))
            .as_ref(),
    )?;
    let mut file = None;
    while let Some(part) = multipart
        .next_field()
        .await
        .map_err(|_| FmError::with(960, "Parameter is invalid (multipart body)"))?
    {
        if part.name() != Some("upload") {
            continue;
        }
        let name = part
            .file_name()
            .map(|n| {
                n.rsplit(['/', '\\'])
                    .next()
                    .unwrap_or(n)
                    .chars()
                    .take(255)
                    .collect::<String>()
            })
            .filter(|n| !n.is_empty())
            .unwrap_or_else(|| "upload".into());
        let mime = part
            .content_type()
            .map(str::to_owned)
            .unwrap_or_else(|| "application/octet-stream".into());
        let bytes = part.bytes().await.map_err(|_| {
            FmError::with(960, "Parameter is invalid (the upload could not be read)")
        })?;
        file = Some(ContainerCell {
            name,
            mime,
            data: bytes.to_vec(),
        });
    }
    let file = file.ok_or_else(|| FmError::with(958, "Parameter missing (the `upload` part)"))?;
    let app = Arc::clone(&call.app);
    let modid = in_write(&app, move |w| {
        let schema = &call.schema;
        let (layout, caller) = call.caller()?;
        data::upload(
            w, schema, layout, &caller, rid, &field, expected, file, call.now,
        )
    })
    .await?;
    Ok(json!({ "modId": modid.to_string() }))
}

/// `POST …/records/{id}/containers/{field}` (repetition 1).
#[allow(clippy::type_complexity)]
pub async fn upload(
    State(state): State<AppState>,
    Path((host, version, db, layout, id, field)): Path<(
        String,
        String,
        String,
        String,
        String,
        String,
    )>,
    Query(params): Query<Params>,
    headers: HeaderMap,
    uri: http::Uri,
    multipart: Multipart,
) -> Response {
    reply(
        upload_inner(
            state,
            (host, version, db, layout),
            id,
            field,
            None,
            params,
            headers,
            uri,
            multipart,
        )
        .await,
    )
}

/// `POST …/records/{id}/containers/{field}/{repetition}`.
#[allow(clippy::type_complexity)]
pub async fn upload_repetition(
    State(state): State<AppState>,
    Path((host, version, db, layout, id, field, rep)): Path<(
        String,
        String,
        String,
        String,
        String,
        String,
        String,
    )>,
    Query(params): Query<Params>,
    headers: HeaderMap,
    uri: http::Uri,
    multipart: Multipart,
) -> Response {
    reply(
        upload_inner(
            state,
            (host, version, db, layout),
            id,
            field,
            Some(rep),
            params,
            headers,
            uri,
            multipart,
        )
        .await,
    )
}

/// `GET /hosts/{host}/fmi/containers/{app}/{table}/{rid}/{field}?exp&sig`:
/// a container's file through a signed, expiring URL (clients fetch it
/// without their token). The signature binds app, table, record, field
/// and expiry.
pub async fn download(
    State(state): State<AppState>,
    Path((_host, app, table, rid, field)): Path<(String, String, String, String, String)>,
    Query(params): Query<Params>,
) -> Response {
    let not_found = || StatusCode::NOT_FOUND.into_response();
    let (Ok(app), Ok(table), Ok(rid), Ok(field)) = (
        app.parse::<AppId>(),
        table.parse::<u32>(),
        rid.parse::<i64>(),
        field.parse::<u32>(),
    ) else {
        return not_found();
    };
    let Some(exp) = params.get("exp").and_then(|e| e.parse::<i64>().ok()) else {
        return not_found();
    };
    let sig = params.get("sig").map(String::as_str).unwrap_or("");
    if exp < state.clock.now().unix_timestamp()
        || !state
            .container_key
            .verify_hex(format!("{app}/{table}/{rid}/{field}/{exp}").as_bytes(), sig)
    {
        return not_found();
    }
    let Ok(loaded) = state.apps.resolve_id(app).await else {
        return not_found();
    };
    let file = loaded
        .data
        .read(move |r| r.container(table, rid, field))
        .await;
    match file {
        Ok(Some(file)) => {
            let mut resp = (StatusCode::OK, file.data).into_response();
            let h = resp.headers_mut();
            h.insert(
                header::CONTENT_TYPE,
                HeaderValue::from_str(&file.mime)
                    .unwrap_or(HeaderValue::from_static("application/octet-stream")),
            );
            let disposition = format!(
                "attachment; filename=\"{}\"",
                file.name.replace(['"', '\\', '\r', '\n'], "_")
            );
            if let Ok(v) = HeaderValue::from_str(&disposition) {
                h.insert(header::CONTENT_DISPOSITION, v);
            }
            h.insert(
                header::CACHE_CONTROL,
                HeaderValue::from_static("private, no-store"),
            );
            resp
        }
        _ => not_found(),
    }
}
