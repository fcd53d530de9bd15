//! `kopilka admin report mrr [--since D] [--until D]`: MRR and churn per month.

use crate::output::{self, Format};

/// Options.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// From this day's month (default: twelve months ago).
    #[arg(long, value_parser = super::parse_when)]
    since: Option<time::OffsetDateTime>,
    /// To this day's month (default: this month).
    #[arg(long, value_parser = super::parse_when)]
    until: Option<time::OffsetDateTime>,
    /// Output format.
    #[arg(long, value_enum, default_value_t)]
    format: Format,
}

pub async fn run(args: &Args) -> anyhow::Result<()> {
    let (settings, pool) = super::connect().await?;
    let now = time::OffsetDateTime::now_utc();
    let until = args.until.unwrap_or(now);
    let since = args.since.unwrap_or(until - time::Duration::days(330));
    let mut conn = pool.acquire().await?;
    let months =
        kopilka_recurring::mrr::mrr_by_month(&mut conn, &settings.offer, since, until).await?;
    let currency = settings.offer.goal.currency.stripe_code();
    if args.format == Format::Json {
        output::line(&serde_json::json!({"currency": currency, "months": months}).to_string());
        return Ok(());
    }
    let rows: Vec<Vec<String>> = months
        .iter()
        .map(|m| {
            vec![
                m.month.clone(),
                m.mrr_minor.to_string(),
                m.plans.to_string(),
                m.churned.to_string(),
                m.churn_rate.clone(),
                m.pass_mrr_minor.to_string(),
                m.passes.to_string(),
            ]
        })
        .collect();
    output::rows(
        args.format,
        &[
            "month",
            "mrr_minor",
            "plans",
            "churned",
            "churn_rate",
            "pass_mrr_minor",
            "passes",
        ],
        &rows,
    );
    Ok(())
}
