//! Logging set-up: `tracing` to stderr, human-readable or JSON, filtered by `RUST_LOG`
//! (default: the command's, `info` for a worker). librdkafka's own log lines arrive through
//! the `log` bridge.

use tracing_subscriber::EnvFilter;

use crate::config::LogFormat;

/// What a worker logs unless `RUST_LOG` says otherwise.
pub const DEFAULT_FILTER: &str = "info";

/// Installs the global subscriber, filtering by `RUST_LOG`, or `default_filter` when it is
/// not set. Calling it twice is harmless (the second call is ignored).
pub fn init(format: LogFormat, default_filter: &str) {
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default_filter));
    // Colour codes only on a terminal: a redirected log stays plain text.
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr);
    let _ = match format {
        LogFormat::Human => builder.try_init(),
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
    };
}
