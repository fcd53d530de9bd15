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
    state.start_background();
    let worker = state
        .settings
        .worker
        .in_serve
        .then(|| crate::worker::in_process(&state.pool, &state.settings))
        .transpose()?;
    let app = kopilka_api::router(state);
    kopilka_api::serve(listener, app, shutdown, grace).await?;
    if let Some(worker) = worker {
        worker.stop().await;
    }
    tracing::info!("stopped");
    Ok(())
}
