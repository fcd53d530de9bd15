//! `kopilka dev`: the embedded default. A private Postgres kept in a data folder (so data
//! survives restarts), migrations applied, the API on 127.0.0.1:8080, one line saying what
//! runs where. ctrl-c stops the API gracefully, then the database.

use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::Context as _;
use kopilka_api::AppState;
use kopilka_config::{Environment, Settings};
use kopilka_store::PrivatePostgres;
use secrecy::SecretString;

use crate::{logging, output, shutdown};

/// Options of `kopilka dev`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Listen here instead of server.addr (127.0.0.1:8080); port 0 picks a free port.
    #[arg(long)]
    addr: Option<SocketAddr>,
    /// Keep the private Postgres in this folder (default: database.dev_data_dir,
    /// `.kopilka/dev/pgdata`). Ignored when DATABASE_URL is set.
    #[arg(long)]
    data_dir: Option<PathBuf>,
}

/// The database `dev` creates in its private cluster.
const DEV_DATABASE: &str = "kopilka";

pub async fn run(args: Args) -> anyhow::Result<()> {
    let mut figment =
        kopilka_config::figment(Environment::Dev, &kopilka_config::config_dir_from_env());
    if let Some(addr) = args.addr {
        figment = figment.merge(("server.addr", addr.to_string()));
    }
    let mut settings = Settings::from_figment(&figment)?;
    logging::init(&settings.log);

    let (url, cluster, postgres_note) = match settings.database.url.clone() {
        Some(url) => (url, None, "DATABASE_URL".to_owned()),
        None => {
            let data_dir = args
                .data_dir
                .unwrap_or_else(|| settings.database.dev_data_dir.clone());
            let (url, cluster) = start_private_postgres(data_dir).await?;
            let note = format!(
                "{} (private cluster in {}, password in its {})",
                cluster.display_url(DEV_DATABASE),
                cluster.data_dir().display(),
                kopilka_store::private_postgres::PASSWORD_FILE,
            );
            (url, Some(cluster), note)
        }
    };

    let pool = kopilka_store::connect(&settings.database, &url)?;
    let report = crate::database::migrate(&pool).await?;
    let shutdown = shutdown::signal_received();
    let listener = tokio::net::TcpListener::bind(settings.server.addr)
        .await
        .with_context(|| format!("cannot listen on {}", settings.server.addr))?;
    let addr = listener.local_addr()?;
    if std::env::var_os("KOPILKA__PUBLIC_URL").is_none() {
        settings.public_url = format!("http://{addr}").parse()?;
    }
    let stripe_note = if settings.stripe.secret_key.is_some() {
        "Stripe at KOPILKA__STRIPE__API_BASE or api.stripe.com".to_owned()
    } else {
        let sim = start_simulator(&mut settings).await?;
        format!(
            "Stripe simulator on {} (webhooks signed to {})",
            sim.simulator.base_url(),
            sim_webhook_url(&settings)
        )
    };
    let btcpay_note = if settings.btcpay.url.is_some() {
        "BTCPay Server at KOPILKA__BTCPAY__URL".to_owned()
    } else {
        let sim = start_btcpay_simulator(&mut settings).await?;
        format!(
            "BTCPay simulator on http://{} (webhooks signed to {}/v1/webhooks/btcpay)",
            sim.addr,
            settings.public_url.as_str().trim_end_matches('/')
        )
    };
    output::line(&format!(
        "kopilka dev: API on http://{addr} · Postgres {postgres_note} · {stripe_note} · {btcpay_note} · {} migration(s) applied now, {} known · ctrl-c stops all",
        report.applied.len(),
        report.known
    ));

    let grace = settings.server.shutdown_grace();
    let state = AppState::new(pool.clone(), settings);
    let background = state.start_background();
    // dev runs the worker in-process, so webhooks from the simulator are applied.
    let worker = crate::worker::in_process(&state.pool, &state.settings)?;
    let app = kopilka_api::router(state);
    kopilka_api::serve(listener, app, shutdown, grace).await?;
    worker.stop().await;
    background.stop().await;
    pool.close().await;
    if let Some(cluster) = cluster {
        tokio::task::spawn_blocking(move || drop(cluster)).await?;
    }
    tracing::info!("stopped");
    Ok(())
}

fn sim_webhook_url(settings: &Settings) -> String {
    format!(
        "{}/v1/webhooks/stripe",
        settings.public_url.as_str().trim_end_matches('/')
    )
}

/// With no Stripe key configured, dev runs the simulator and points Kopilka at it.
async fn start_simulator(settings: &mut Settings) -> anyhow::Result<kopilka_stripe_sim::Spawned> {
    let options = kopilka_stripe_sim::SimOptions {
        webhook_url: Some(sim_webhook_url(settings)),
        ..kopilka_stripe_sim::SimOptions::default()
    };
    let sim = kopilka_stripe_sim::spawn("127.0.0.1:0".parse()?, options.clone())
        .await
        .context("starting the Stripe simulator")?;
    settings.stripe.secret_key = Some(SecretString::from(options.secret_key));
    settings.stripe.webhook_secret = vec![SecretString::from(options.webhook_secret)];
    settings.stripe.api_base = Some(sim.simulator.base_url().parse()?);
    Ok(sim)
}

/// With no BTCPay Server configured, dev runs the BTCPay simulator beside Stripe's and points
/// Kopilka at it, with a store webhook delivering every event to `/v1/webhooks/btcpay`.
async fn start_btcpay_simulator(
    settings: &mut Settings,
) -> anyhow::Result<kopilka_btcpay_sim::Spawned> {
    let options = kopilka_btcpay_sim::SimOptions {
        webhook_url: Some(format!(
            "{}/v1/webhooks/btcpay",
            settings.public_url.as_str().trim_end_matches('/')
        )),
        ..kopilka_btcpay_sim::SimOptions::default()
    };
    let sim = kopilka_btcpay_sim::spawn("127.0.0.1:0".parse()?, options.clone())
        .await
        .context("starting the BTCPay simulator")?;
    settings.btcpay.url = Some(format!("http://{}", sim.addr).parse()?);
    settings.btcpay.store_id = Some(options.store_id);
    settings.btcpay.api_key = Some(SecretString::from(options.api_key));
    settings.btcpay.webhook_secret = vec![SecretString::from(options.webhook_secret)];
    Ok(sim)
}

async fn start_private_postgres(
    data_dir: PathBuf,
) -> anyhow::Result<(SecretString, PrivatePostgres)> {
    let cluster =
        tokio::task::spawn_blocking(move || PrivatePostgres::start_persistent(&data_dir)).await??;
    kopilka_store::create_database(&cluster.url("postgres"), DEV_DATABASE, None)
        .await
        .context("creating the dev database")?;
    Ok((cluster.url(DEV_DATABASE), cluster))
}
