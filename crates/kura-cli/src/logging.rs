//! Structured logs on standard error: JSON lines by default.

use kura_config::{LogConfig, LogFormat};
use tracing_subscriber::EnvFilter;

/// Installs the global subscriber. `KURA_LOG` (a filter directive) overrides
/// the configured level for debugging.
pub fn init(config: &LogConfig) {
    let directive = std::env::var("KURA_LOG").unwrap_or_else(|_| config.level.clone());
    let filter = EnvFilter::try_new(&directive).unwrap_or_else(|_| EnvFilter::new("info"));
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
