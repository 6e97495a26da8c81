//! A Kura server for `cargo xtask bench-fm`: the real server (default
//! configuration, so `synchronous=FULL` and the whole edge) on a fresh data
//! directory, with the first operator signed up. Prints one line,
//! `kura <base url> <operator token> <certificate file>`, then serves until
//! killed. The benchmark creates the team, host, app, account and records
//! through the admin API itself. On SIGTERM it shuts down and removes its
//! data directory.
//!
//! Built in release by the benchmark:
//! `cargo build --release -p kura-testkit --example fm_bench_kura`.

use std::io::Write as _;

use kura_testkit::TestServer;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let server = TestServer::spawn().await;
    let operator = server.sign_up_first_operator().await;
    let cert = server.data_dir().join("tls").join("cert.pem");
    let mut out = std::io::stdout().lock();
    writeln!(
        out,
        "kura {} {} {}",
        server.base_url,
        operator.token,
        cert.display()
    )?;
    out.flush()?;
    drop(out);
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    tokio::select! {
        _ = term.recv() => {}
        _ = tokio::signal::ctrl_c() => {}
    }
    server.shutdown().await;
    Ok(())
}
