//! Structured logs on standard error: JSON lines by default.

use kura_config::{LogConfig, LogFormat};
use tracing_subscriber::EnvFilter;

/// What the configured level leaves out: rustls warns at `warn` on every
/// handshake whose client names the server by IP address in SNI (wrk and
/// many scripts do; RFC 6066 forbids it, and rustls just ignores the name),
/// one line per connection that tells an operator nothing.
const QUIET: &str = "rustls::msgs::handshake=error";

/// The filter directive for a configured level.
fn directive(level: &str) -> String {
    format!("{level},{QUIET}")
}

/// Installs the global subscriber. `KURA_LOG` (a filter directive) overrides
/// the configured level, and everything [`QUIET`] leaves out, for debugging.
pub fn init(config: &LogConfig) {
    let directive = std::env::var("KURA_LOG").unwrap_or_else(|_| directive(&config.level));
    let filter =
        EnvFilter::try_new(&directive).unwrap_or_else(|_| EnvFilter::new(self::directive("info")));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let result = match config.format {
        LogFormat::Json => builder
            .json()
            .flatten_event(true)
            .with_current_span(false)
            .try_init(),
        LogFormat::Pretty => builder.try_init(),
    };
    // A subscriber already installed (tests) is fine.
    drop(result);
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use super::*;

    /// A writer into a shared buffer.
    struct Buf(Arc<Mutex<Vec<u8>>>);

    impl std::io::Write for Buf {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn the_configured_level_applies_to_everything_but_the_sni_warnings() {
        let out = Arc::new(Mutex::new(Vec::new()));
        let sink = Arc::clone(&out);
        let subscriber = tracing_subscriber::fmt()
            .with_env_filter(EnvFilter::try_new(directive("info")).unwrap())
            .with_writer(move || Buf(Arc::clone(&sink)))
            .finish();
        tracing::subscriber::with_default(subscriber, || {
            tracing::warn!(target: "rustls::msgs::handshake", "illegal SNI");
            tracing::error!(target: "rustls::msgs::handshake", "handshake error");
            tracing::warn!(target: "rustls::conn", "other rustls warning");
            tracing::info!(target: "kura::access", "request");
            tracing::debug!(target: "kura::access", "detail");
        });
        let text = String::from_utf8(out.lock().unwrap().clone()).unwrap();
        assert!(!text.contains("illegal SNI"), "{text}");
        for shown in ["handshake error", "other rustls warning", "request"] {
            assert!(text.contains(shown), "{shown}: {text}");
        }
        assert!(!text.contains("detail"), "{text}");
    }
}
