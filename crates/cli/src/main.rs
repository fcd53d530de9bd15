//! `kopilka`: the one binary. `kopilka --help` is the map.

mod admin;
mod btcpay_sim;
mod database;
mod dev;
mod logging;
mod migrate;
mod output;
mod serve;
mod shutdown;
mod stripe_sim;
mod worker;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// Kopilka: the reader-revenue backend behind a newsroom's "Support us" banner.
///
/// Configuration: config/default.toml, then config/$KOPILKA_ENV.toml (dev, test or
/// production, the default), then KOPILKA__SECTION__KEY variables and DATABASE_URL.
#[derive(Debug, Parser)]
#[command(name = "kopilka", version, propagate_version = true)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the HTTP API (needs DATABASE_URL; apply migrations first with `kopilka migrate`).
    Serve(serve::Args),
    /// Run background jobs: applying Stripe events (reminders and receipts later).
    Worker(worker::Args),
    /// Apply pending database migrations (a no-op when the schema is current).
    Migrate,
    /// Everything on this machine: a private Postgres kept in a data folder, migrations
    /// applied, the API on 127.0.0.1:8080.
    Dev(dev::Args),
    /// A Stripe-compatible simulator (what `kopilka dev` runs when no Stripe key is set).
    StripeSim(stripe_sim::Args),
    /// A BTCPay Server (Greenfield API) simulator: invoices, a hosted invoice page, signed
    /// webhooks with redelivery, a clock.
    BtcpaySim(btcpay_sim::Args),
    /// Administration: configuration, reports, reconciliation.
    #[command(subcommand)]
    Admin(admin::Command),
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Serve(args) => serve::run(args).await,
        Command::Worker(args) => worker::run(&args).await,
        Command::Migrate => migrate::run().await,
        Command::Dev(args) => dev::run(args).await,
        Command::StripeSim(args) => stripe_sim::run(args).await,
        Command::BtcpaySim(args) => btcpay_sim::run(args).await,
        Command::Admin(command) => admin::run(command).await,
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            tracing::error!(error = %format!("{err:#}"), "kopilka failed");
            output::error_line(&format!("error: {err:#}"));
            ExitCode::FAILURE
        }
    }
}
