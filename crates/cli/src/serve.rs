//! `kopilka serve`: the HTTP API.

use anyhow::Context as _;
use kopilka_api::AppState;

use crate::{database, logging, shutdown};

/// Options of `kopilka serve`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Apply pending migrations before serving.
    #[arg(long)]
    migrate: bool,
}

pub async fn run(args: Args) -> anyhow::Result<()> {
    let settings = kopilka_config::load()?;
    logging::init(&settings.log);
    let pool = database::pool(&settings)?;
    if args.migrate {
        let report = crate::database::migrate(&pool).await?;
        tracing::info!(
            applied = report.applied.len(),
            known = report.known,
            "migrations"
        );
    }
    let shutdown = shutdown::signal_received();
    let listener = tokio::net::TcpListener::bind(settings.server.addr)
        .await
        .with_context(|| format!("cannot listen on {}", settings.server.addr))?;
    let addr = listener.local_addr()?;
    let grace = settings.server.shutdown_grace();
    tracing::info!(%addr, env = %settings.env, "serving");
    let state = AppState::new(pool, settings);
    let background = state.start_background();
    let worker = state
        .settings
        .worker
        .in_serve
        .then(|| crate::worker::in_process(&state.pool, &state.settings))
        .transpose()?;
    let admin = match state.settings.server.admin_addr {
        Some(admin_addr) => Some(admin_listener(admin_addr).await?),
        None => None,
    };
    let app = kopilka_api::router(state);
    kopilka_api::serve(listener, app, shutdown, grace).await?;
    if let Some(admin) = admin {
        admin.abort();
    }
    if let Some(worker) = worker {
        worker.stop().await;
    }
    background.stop().await;
    tracing::info!("stopped");
    Ok(())
}

/// Serves the operators' routes (`GET /metrics`) on `addr`, apart from the public API;
/// stopped when the public listener stops.
async fn admin_listener(addr: std::net::SocketAddr) -> anyhow::Result<tokio::task::JoinHandle<()>> {
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .with_context(|| format!("cannot listen on {addr} (server.admin_addr)"))?;
    let admin_addr = listener.local_addr()?;
    tracing::info!(%admin_addr, "serving metrics on the admin listener");
    Ok(tokio::spawn(async move {
        if let Err(err) = kopilka_api::serve_admin(listener).await {
            tracing::error!(error = %err, "the admin listener stopped");
        }
    }))
}
