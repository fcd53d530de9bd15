//! The signal that starts a graceful shutdown: SIGTERM (orchestrators) or SIGINT (ctrl-c).

use std::future::Future;

use tokio::signal::unix::{SignalKind, signal};

/// Installs the SIGTERM and SIGINT handlers now (so a signal sent right after the process
/// said it is ready is not lost), and resolves on the first of them.
pub fn signal_received() -> impl Future<Output = ()> + Send + 'static {
    let terminate = signal(SignalKind::terminate());
    let interrupt = signal(SignalKind::interrupt());
    async move {
        match (terminate, interrupt) {
            (Ok(mut terminate), Ok(mut interrupt)) => {
                tokio::select! {
                    _ = interrupt.recv() => tracing::info!(signal = "SIGINT", "shutdown requested"),
                    _ = terminate.recv() => tracing::info!(signal = "SIGTERM", "shutdown requested"),
                }
            }
            (Err(err), _) | (_, Err(err)) => {
                tracing::error!(error = %err, "cannot listen for shutdown signals");
                std::future::pending::<()>().await;
            }
        }
    }
}
