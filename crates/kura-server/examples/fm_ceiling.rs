//! The practical ceiling for Data API benchmarks: one axum handler that answers
//! every request with a fixed FileMaker-shaped JSON body, served through Kura's
//! own TLS policy (`tls_server_config`, the generated certificate) and the same
//! hyper connection builder as the real listener, but with no middleware,
//! storage or authorisation.
//!
//! `cargo xtask bench-fm` builds and starts it in release mode. Usage:
//!
//! ```text
//! fm_ceiling [--bind 127.0.0.1:0] [--body-bytes N]
//! ```
//!
//! It prints `listening https://ADDR body_bytes=N` once ready. `--body-bytes`
//! pads the record's `notes` value so the body has exactly N bytes (to match
//! the size of a real get-one response); without it the body is a typical
//! get-one response of the benchmark's 8-field record.

use std::net::SocketAddr;
use std::time::Duration;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto::Builder;
use kura_config::{TlsConfig, TlsVersion};
use kura_server::{TlsMaterial, tls_server_config};
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;
use tower::ServiceExt as _;

type Error = Box<dyn std::error::Error + Send + Sync>;

/// A get-one answer for the benchmark record, with `notes` set to `notes`.
fn body_with_notes(notes: &str) -> String {
    serde_json::json!({
        "response": {
            "dataInfo": {
                "database": "Bench", "layout": "contacts", "table": "contacts",
                "totalRecordCount": 10000, "foundCount": 1, "returnedCount": 1
            },
            "data": [{
                "fieldData": {
                    "first_name": "Contact", "last_name": "Number 4711",
                    "email": "contact4711@example.com", "age": 42,
                    "born": "05/17/1983", "active": 1,
                    "notes": notes, "created_at": "11/26/2026 01:02:03"
                },
                "portalData": {}, "recordId": "4711", "modId": "3"
            }]
        },
        "messages": [{"code": "0", "message": "OK"}]
    })
    .to_string()
}

/// The body to serve: the typical record, or padded to exactly `bytes`.
fn body(bytes: Option<usize>) -> Result<String, Error> {
    let typical = body_with_notes("Lorem ipsum dolor sit amet Lorem ipsum dolor sit amet ");
    let Some(bytes) = bytes else {
        return Ok(typical);
    };
    let base = body_with_notes("").len();
    if bytes < base {
        return Err(format!("--body-bytes must be at least {base} (an empty record)").into());
    }
    Ok(body_with_notes(&"x".repeat(bytes - base)))
}

struct Args {
    bind: SocketAddr,
    body_bytes: Option<usize>,
}

fn parse_args() -> Result<Args, Error> {
    let mut args = Args {
        bind: SocketAddr::from(([127, 0, 0, 1], 0)),
        body_bytes: None,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let value = it.next().ok_or_else(|| format!("{flag} needs a value"))?;
        match flag.as_str() {
            "--bind" => args.bind = value.parse()?,
            "--body-bytes" => args.body_bytes = Some(value.parse()?),
            _ => return Err(format!("unknown argument {flag}").into()),
        }
    }
    if !args.bind.ip().is_loopback() {
        return Err("the ceiling server binds loopback addresses only".into());
    }
    Ok(args)
}

#[tokio::main]
async fn main() -> Result<(), Error> {
    let args = parse_args()?;
    let payload = Bytes::from(body(args.body_bytes)?);
    let tls_dir = tempfile::tempdir()?;
    let material = TlsMaterial::load_or_generate(&TlsConfig::default(), tls_dir.path())?;
    let acceptor = TlsAcceptor::from(tls_server_config(&material, TlsVersion::V1_2)?);
    let listener = TcpListener::bind(args.bind).await?;

    let body_len = payload.len();
    let app = Router::new().fallback(move || {
        let payload = payload.clone();
        async move {
            let mut response = Response::new(Body::from(payload));
            response.headers_mut().insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            );
            response.into_response()
        }
    });

    let mut builder = Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(Duration::from_secs(10));
    builder.http2().timer(TokioTimer::new());

    #[allow(
        clippy::print_stdout,
        reason = "the benchmark driver reads the address from stdout"
    )]
    {
        println!(
            "listening https://{} body_bytes={body_len}",
            listener.local_addr()?
        );
    }

    loop {
        let (tcp, _peer) = match listener.accept().await {
            Ok(pair) => pair,
            Err(e) => {
                eprintln!("accept failed: {e}");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let _ = tcp.set_nodelay(true);
        let acceptor = acceptor.clone();
        let app = app.clone();
        let builder = builder.clone();
        tokio::spawn(async move {
            let Ok(stream) = acceptor.accept(tcp).await else {
                return;
            };
            let service = hyper::service::service_fn(move |req: hyper::Request<Incoming>| {
                app.clone().oneshot(req.map(Body::new))
            });
            let _ = builder
                .serve_connection_with_upgrades(TokioIo::new(stream), service)
                .await;
        });
    }
}
