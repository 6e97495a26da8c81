//! Prepares a data directory for `cargo xtask bench-fm`: the real server's
//! default configuration (so `synchronous=FULL` and the whole edge) on a
//! fresh directory, with the first operator signed up. Prints one line,
//! `prepared <directory to remove> <data dir> <operator token> <certificate
//! file>`, and exits
//! keeping the directory; the benchmark then serves it with the real
//! `kura` binary, so what it measures (CPU, resident memory) is the
//! program people run, not this example.
//!
//! Built in release by the benchmark:
//! `cargo build --release -p kura-testkit --example fm_bench_kura`.

use std::io::Write as _;

use kura_testkit::TestServer;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let server = TestServer::spawn().await;
    let operator = server.sign_up_first_operator().await;
    let (dir, tmp) = server.stop_keeping_data().await;
    // The directory outlives this process; the benchmark removes it.
    let root = match tmp {
        Some(tmp) => tmp.keep(),
        None => dir.clone(),
    };
    let cert = dir.join("tls").join("cert.pem");
    let mut out = std::io::stdout().lock();
    writeln!(
        out,
        "prepared {} {} {} {}",
        root.display(),
        dir.display(),
        operator.token,
        cert.display()
    )?;
    out.flush()?;
    Ok(())
}
