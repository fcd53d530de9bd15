//! `kopilka admin report payouts --since D`: each payout linked to its balance transactions
//! and our ledger rows, with what does not add up.

use indicatif::{ProgressBar, ProgressStyle};

use crate::output::{self, Format};

/// Options.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Payouts created since this day or instant.
    #[arg(long, value_parser = super::parse_when)]
    since: time::OffsetDateTime,
    /// Output format.
    #[arg(long, value_enum, default_value_t)]
    format: Format,
}

pub async fn run(args: &Args) -> anyhow::Result<()> {
    let (settings, pool) = super::connect().await?;
    let stripe = kopilka_stripe::StripeClient::from_settings(&settings.stripe)?
        .ok_or_else(|| anyhow::anyhow!("KOPILKA__STRIPE__SECRET_KEY is not set"))?;
    let bar = ProgressBar::new_spinner();
    bar.set_style(ProgressStyle::with_template(
        "{spinner} {pos} Stripe objects read",
    )?);
    let tick = || bar.inc(1);
    let reports = kopilka_reconciliation::payouts::payouts(
        &pool,
        &stripe,
        args.since.unix_timestamp(),
        &tick,
    )
    .await?;
    bar.finish_and_clear();
    if args.format == Format::Json {
        output::line(&serde_json::json!({"payouts": reports}).to_string());
        return Ok(());
    }
    let rows: Vec<Vec<String>> = reports
        .iter()
        .map(|r| {
            vec![
                r.id.clone(),
                r.amount_minor.to_string(),
                r.currency.clone(),
                r.status.clone(),
                r.transactions.to_string(),
                r.in_ledger.to_string(),
                r.problems.join("; "),
            ]
        })
        .collect();
    output::rows(
        args.format,
        &[
            "id",
            "amount_minor",
            "currency",
            "status",
            "transactions",
            "in_ledger",
            "problems",
        ],
        &rows,
    );
    Ok(())
}
