//! `kopilka stripe-sim`: the Stripe simulator on its own, for a developer pointing a
//! Kopilka (or anything speaking Stripe's API) at it.

use std::net::SocketAddr;

use anyhow::Context as _;
use kopilka_config::{LogFormat, LogSettings};
use kopilka_stripe_sim::SimOptions;

use crate::{logging, output, shutdown};

/// Options of `kopilka stripe-sim`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Where the simulator listens.
    #[arg(long, default_value = "127.0.0.1:12111")]
    addr: SocketAddr,
    /// Where to deliver webhook events, e.g. http://127.0.0.1:8080/v1/webhooks/stripe.
    #[arg(long)]
    webhook_url: Option<String>,
    /// The endpoint secret deliveries are signed with (give Kopilka the same one in
    /// KOPILKA__STRIPE__WEBHOOK_SECRET).
    #[arg(
        long,
        env = "KOPILKA_SIM_WEBHOOK_SECRET",
        default_value = "whsec_kopilka_simulator"
    )]
    webhook_secret: String,
    /// The secret key clients must send (KOPILKA__STRIPE__SECRET_KEY).
    #[arg(
        long,
        env = "KOPILKA_SIM_SECRET_KEY",
        default_value = "sk_test_kopilka_simulator"
    )]
    secret_key: String,
}

pub async fn run(args: Args) -> anyhow::Result<()> {
    logging::init(&LogSettings {
        format: LogFormat::Auto,
        filter: "info".into(),
    });
    anyhow::ensure!(
        args.secret_key.starts_with("sk_test_"),
        "--secret-key must start with sk_test_"
    );
    anyhow::ensure!(
        args.webhook_secret.starts_with("whsec_"),
        "--webhook-secret must start with whsec_"
    );
    let options = SimOptions {
        secret_key: args.secret_key,
        webhook_secret: args.webhook_secret,
        webhook_url: args.webhook_url,
    };
    let shutdown = shutdown::signal_received();
    let sim = kopilka_stripe_sim::spawn(args.addr, options.clone())
        .await
        .with_context(|| format!("cannot listen on {}", args.addr))?;
    // The built-in keys are public knowledge and safe to show; keys given by the developer
    // are not printed.
    let defaults = SimOptions::default();
    let shown = |value: &str, default: &str, name: &str| {
        if value == default {
            value.to_owned()
        } else {
            format!("<your {name}>")
        }
    };
    output::line(&format!(
        "kopilka stripe-sim: Stripe API on http://{} · KOPILKA__STRIPE__API_BASE=http://{} KOPILKA__STRIPE__SECRET_KEY={} KOPILKA__STRIPE__WEBHOOK_SECRET={} · webhooks to {} · ctrl-c stops",
        sim.addr,
        sim.addr,
        shown(&options.secret_key, &defaults.secret_key, "--secret-key"),
        shown(
            &options.webhook_secret,
            &defaults.webhook_secret,
            "--webhook-secret"
        ),
        options
            .webhook_url
            .as_deref()
            .unwrap_or("nowhere (set --webhook-url or POST /_sim/delivery)"),
    ));
    shutdown.await;
    Ok(())
}
