//! `kopilka admin report goal`: the funding goal's progress, computed now: the exact figure
//! (`current_minor`, for the newsroom only) and what pages show (`published_minor`: rounded
//! and lagged by `offer.goal.round_minor` / `publish_lag_secs`).

use crate::output::{self, Format};

/// Options.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Output format.
    #[arg(long, value_enum, default_value_t)]
    format: Format,
}

pub async fn run(args: &Args) -> anyhow::Result<()> {
    let (settings, pool) = super::connect().await?;
    let mut conn = pool.acquire().await?;
    let figure = kopilka_recurring::goal::compute(
        &mut conn,
        &settings.offer,
        time::OffsetDateTime::now_utc(),
    )
    .await?;
    let published = kopilka_recurring::goal::publish(
        &mut conn,
        &settings.offer,
        time::OffsetDateTime::now_utc(),
    )
    .await?;
    let currency = figure.currency.stripe_code();
    if args.format == Format::Json {
        output::line(&serde_json::json!({"currency": currency, "target_minor": figure.target_minor, "current_minor": figure.current_minor, "published_minor": published.current_minor}).to_string());
        return Ok(());
    }
    output::rows(
        args.format,
        &[
            "currency",
            "target_minor",
            "current_minor",
            "published_minor",
        ],
        &[vec![
            currency,
            figure.target_minor.to_string(),
            figure.current_minor.to_string(),
            published.current_minor.to_string(),
        ]],
    );
    Ok(())
}
