//! Large pages written to the client while they are read.
//!
//! A range or find of more than [`STREAM_OVER`] records (up to
//! `kura_apps::data::MAX_LIMIT`) is not built in memory and then sent: one
//! read snapshot counts the page, answers the envelope's head (status,
//! `dataInfo`) or its FileMaker error, and then renders the records one by
//! one into chunks of about [`CHUNK_BYTES`] that travel to the client through
//! a small bounded channel. Memory per request stays at a few chunks
//! whatever the page size, and the first bytes leave before the last record
//! is read.
//!
//! Every error a client can cause (unknown field, nothing found, bad sort)
//! is found before the head is sent, so it still gets its FileMaker code and
//! HTTP status. A failure after that (the store failing mid-page) aborts the
//! body, so the client sees a broken response rather than a short page that
//! looks complete. A client that stops reading for [`STALL_LIMIT`] loses the
//! response, and the read connection it held is freed.

use std::sync::Arc;
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::response::Response;
use http::{HeaderValue, StatusCode, header};
use kura_apps::FmError;
use kura_apps::data::{self, Render};
use kura_store::app_data::AppRead;
use tokio::runtime::Handle;
use tokio::sync::{mpsc, oneshot};

use super::reads::{PageRequest, container_urls};
use super::records::Call;
use super::reply;

/// Pages with more records than this are streamed.
pub(super) const STREAM_OVER: u64 = 100;

/// About how many bytes each chunk of a streamed page carries.
const CHUNK_BYTES: usize = 32 * 1024;

/// How many chunks may wait for the client.
const CHUNKS_IN_FLIGHT: usize = 4;

/// How long a chunk may wait for a client that does not read.
const STALL_LIMIT: Duration = Duration::from_secs(30);

/// The envelope's tail after the last record.
const TAIL: &[u8] = br#"]},"messages":[{"code":"0","message":"OK"}]}"#;

type Chunk = Result<Bytes, std::io::Error>;

/// Streams one page (no scripts, not a single record).
pub(super) async fn page(call: Call, req: PageRequest) -> Response {
    let (head_tx, head_rx) = oneshot::channel::<Result<Bytes, FmError>>();
    let (body_tx, body_rx) = mpsc::channel::<Chunk>(CHUNKS_IN_FLIGHT);
    let app = Arc::clone(&call.app);
    let runtime = Handle::current();
    tokio::spawn(async move {
        let read = app
            .data
            .read(move |r| {
                produce(&call, &req, r, head_tx, &body_tx, &runtime);
                Ok(())
            })
            .await;
        if let Err(e) = read {
            tracing::warn!(error = %e, "a streamed page could not be read");
        }
    });
    match head_rx.await {
        Ok(Ok(head)) => {
            let rest = futures_util::stream::unfold(body_rx, |mut rx| async move {
                rx.recv().await.map(|chunk| (chunk, rx))
            });
            let head = futures_util::stream::once(async move { Ok::<_, std::io::Error>(head) });
            let mut response = Response::new(Body::from_stream(futures_util::StreamExt::chain(
                head, rest,
            )));
            *response.status_mut() = StatusCode::OK;
            let headers = response.headers_mut();
            headers.insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            );
            headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
            response
        }
        Ok(Err(e)) => reply(Err(e)),
        Err(_) => reply(Err(FmError::broken("the page could not be read"))),
    }
}

/// Runs on the read connection's blocking thread: answers the head, then
/// sends the records in chunks.
fn produce(
    call: &Call,
    req: &PageRequest,
    r: &AppRead<'_>,
    head_tx: oneshot::Sender<Result<Bytes, FmError>>,
    body: &mpsc::Sender<Chunk>,
    runtime: &Handle,
) {
    let url = container_urls(call);
    let render = Render {
        format: req.format,
        portals: req.portals.as_deref(),
        portal_ranges: &req.ranges,
        container_url: &url,
    };
    let planned = (|| {
        let schema = &call.schema;
        let (layout, caller) = call.caller()?;
        let filter = req.filter(call, layout, &caller)?;
        let sort = data::sort_keys(schema, layout, &caller, &req.sort)?;
        let out_layout = req.out_layout(schema, layout)?;
        let counts = data::page_counts(r, schema, out_layout, &caller, filter, &sort)?;
        let info = data::data_info(
            &call.database,
            out_layout,
            &schema.tables[out_layout.table],
            counts.total,
            counts.found,
            usize::try_from(counts.returned(req.offset, req.limit)).unwrap_or(usize::MAX),
        );
        let mut head = br#"{"response":{"dataInfo":"#.to_vec();
        serde_json::to_writer(&mut head, &info).map_err(FmError::broken)?;
        head.extend_from_slice(br#","data":["#);
        Ok((caller, sort, out_layout, counts, head))
    })();
    let (caller, sort, out_layout, counts, head) = match planned {
        Ok(p) => p,
        Err(e) => {
            let _ = head_tx.send(Err(e));
            return;
        }
    };
    if head_tx.send(Ok(Bytes::from(head))).is_err() {
        return; // The client is gone.
    }
    let mut buf = Vec::with_capacity(CHUNK_BYTES + 1024);
    let mut first = true;
    let rendered = data::page_each(
        r,
        &call.schema,
        out_layout,
        &caller,
        &counts,
        &sort,
        req.offset,
        req.limit,
        &render,
        |record| {
            if !first {
                buf.push(b',');
            }
            first = false;
            serde_json::to_writer(&mut buf, &record).map_err(FmError::broken)?;
            if buf.len() >= CHUNK_BYTES {
                send(runtime, body, std::mem::take(&mut buf))?;
            }
            Ok(())
        },
    );
    match rendered {
        Ok(()) => {
            buf.extend_from_slice(TAIL);
            let _ = send(runtime, body, buf);
        }
        Err(e) => {
            tracing::warn!(code = e.code, message = %e.message, "a streamed page broke off");
            let _ = runtime.block_on(body.send(Err(std::io::Error::other(
                "the page could not be completed",
            ))));
        }
    }
}

/// Hands one chunk to the client, waiting at most [`STALL_LIMIT`].
fn send(runtime: &Handle, body: &mpsc::Sender<Chunk>, chunk: Vec<u8>) -> Result<(), FmError> {
    runtime
        .block_on(body.send_timeout(Ok(Bytes::from(chunk)), STALL_LIMIT))
        .map_err(|_| FmError::with(-1, "the client stopped reading"))
}
