//! SIGTERM/SIGINT handling: the first signal starts a graceful shutdown, a second one exits
//! at once (code 130), as operators expect from a process they are waiting on.

use streamfleet_runtime::CancellationToken;
use tokio::signal::unix::{SignalKind, signal};

/// A token cancelled by the first SIGTERM or SIGINT.
pub fn shutdown_on_signals() -> std::io::Result<CancellationToken> {
    let token = CancellationToken::new();
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    let t = token.clone();
    tokio::spawn(async move {
        tokio::select! {
            _ = term.recv() => tracing::info!("SIGTERM: shutting down gracefully"),
            _ = int.recv() => tracing::info!("SIGINT: shutting down gracefully"),
        }
        t.cancel();
        tokio::select! {
            _ = term.recv() => {}
            _ = int.recv() => {}
        }
        tracing::warn!("second signal: exiting now");
        std::process::exit(130);
    });
    Ok(token)
}
