use std::future::{Future, IntoFuture};
use std::time::Duration;

use axum::Router;
use tokio::net::TcpListener;

/// Serves `app` on `listener` until `shutdown` resolves, then lets in-flight requests
/// finish for up to `grace` before returning.
///
/// # Errors
/// The listener's I/O error.
pub async fn serve(
    listener: TcpListener,
    app: Router,
    shutdown: impl Future<Output = ()> + Send + 'static,
    grace: Duration,
) -> std::io::Result<()> {
    let (draining_tx, draining_rx) = tokio::sync::oneshot::channel::<()>();
    let server = axum::serve(
        listener,
        app.into_make_service_with_connect_info::<std::net::SocketAddr>(),
    )
    .with_graceful_shutdown(async move {
        shutdown.await;
        tracing::info!(
            grace_secs = grace.as_secs(),
            "shutting down: finishing in-flight requests"
        );
        let _ = draining_tx.send(());
    })
    .into_future();
    let grace_over = async move {
        if draining_rx.await.is_ok() {
            tokio::time::sleep(grace).await;
        } else {
            std::future::pending::<()>().await;
        }
    };
    tokio::select! {
        result = server => result,
        () = grace_over => {
            tracing::warn!("grace period over: dropping the requests still in flight");
            Ok(())
        }
    }
}

/// Serves the operators' routes ([`crate::admin_router`]: `GET /metrics`) on `listener`
/// until the task is dropped.
///
/// # Errors
/// The listener's I/O error.
pub async fn serve_admin(listener: TcpListener) -> std::io::Result<()> {
    axum::serve(listener, crate::admin_router()).await
}
