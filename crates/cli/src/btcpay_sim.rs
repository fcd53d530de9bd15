//! `kopilka btcpay-sim`: the BTCPay Server simulator on its own, for a developer pointing a
//! Kopilka (or anything speaking the Greenfield API) at it.

use std::net::SocketAddr;

use anyhow::Context as _;
use kopilka_btcpay_sim::SimOptions;
use kopilka_config::{LogFormat, LogSettings};

use crate::{logging, output, shutdown};

/// Options of `kopilka btcpay-sim`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Where the simulator listens.
    #[arg(long, default_value = "127.0.0.1:12112")]
    addr: SocketAddr,
    /// Where to deliver webhooks, e.g. http://127.0.0.1:8080/v1/webhooks/btcpay (a store
    /// webhook for every event is registered at start).
    #[arg(long)]
    webhook_url: Option<String>,
    /// The secret deliveries are signed with (give Kopilka the same one in
    /// KOPILKA__BTCPAY__WEBHOOK_SECRET).
    #[arg(long, env = "KOPILKA_BTCPAY_SIM_WEBHOOK_SECRET")]
    webhook_secret: Option<String>,
    /// The Greenfield API key clients must send (KOPILKA__BTCPAY__API_KEY).
    #[arg(long, env = "KOPILKA_BTCPAY_SIM_API_KEY")]
    api_key: Option<String>,
    /// The store's id (KOPILKA__BTCPAY__STORE_ID).
    #[arg(long)]
    store_id: Option<String>,
}

pub async fn run(args: Args) -> anyhow::Result<()> {
    logging::init(&LogSettings {
        format: LogFormat::Auto,
        filter: "info".into(),
    });
    let defaults = SimOptions::default();
    if let Some(store) = &args.store_id {
        anyhow::ensure!(
            !store.is_empty() && store.bytes().all(|b| b.is_ascii_alphanumeric()),
            "--store-id must be letters and digits"
        );
    }
    if let Some(key) = &args.api_key {
        anyhow::ensure!(
            !key.is_empty() && key.bytes().all(|b| b.is_ascii_graphic()),
            "--api-key must be printable without spaces"
        );
    }
    let options = SimOptions {
        api_key: args.api_key.clone().unwrap_or(defaults.api_key.clone()),
        store_id: args.store_id.unwrap_or(defaults.store_id.clone()),
        webhook_url: args.webhook_url,
        webhook_secret: args
            .webhook_secret
            .clone()
            .unwrap_or(defaults.webhook_secret.clone()),
        ..defaults.clone()
    };
    let shutdown = shutdown::signal_received();
    let sim = kopilka_btcpay_sim::spawn(args.addr, options.clone())
        .await
        .with_context(|| format!("cannot listen on {}", args.addr))?;
    // The built-in key and secret are public knowledge and safe to show; ones given by the
    // developer are not printed.
    let shown = |given: Option<&String>, default: &str, name: &str| {
        given.map_or_else(|| default.to_owned(), |_| format!("<your {name}>"))
    };
    output::line(&format!(
        "kopilka btcpay-sim: Greenfield API on http://{addr} · KOPILKA__BTCPAY__URL=http://{addr} KOPILKA__BTCPAY__STORE_ID={store} KOPILKA__BTCPAY__API_KEY={key} KOPILKA__BTCPAY__WEBHOOK_SECRET={secret} · webhooks to {to} · ctrl-c stops",
        addr = sim.addr,
        store = options.store_id,
        key = shown(args.api_key.as_ref(), &defaults.api_key, "--api-key"),
        secret = shown(
            args.webhook_secret.as_ref(),
            &defaults.webhook_secret,
            "--webhook-secret"
        ),
        to = options
            .webhook_url
            .as_deref()
            .unwrap_or("nowhere (set --webhook-url or POST /_sim/webhook)"),
    ));
    shutdown.await;
    Ok(())
}
