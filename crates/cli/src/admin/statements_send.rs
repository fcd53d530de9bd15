//! `kopilka admin statements send --year Y [--fiscal-start MM-DD]`: queues a year-end
//! statement for every reader who gave in that year (or the fiscal year starting on
//! MM-DD of Y); the worker emails them, once each (running it again queues nothing new).

use time::{Date, Month, OffsetDateTime, Time};

use crate::output::{self, Format};

/// Options.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The (fiscal) year.
    #[arg(long)]
    year: i32,
    /// The first day of the fiscal year, `MM-DD` (default `01-01`).
    #[arg(long, default_value = "01-01", value_parser = parse_month_day)]
    fiscal_start: (Month, u8),
    /// Output format.
    #[arg(long, value_enum, default_value_t)]
    format: Format,
}

fn parse_month_day(text: &str) -> Result<(Month, u8), String> {
    let (month, day) = text
        .split_once('-')
        .ok_or_else(|| format!("expected MM-DD, got {text:?}"))?;
    let month: u8 = month
        .parse()
        .map_err(|_| format!("bad month in {text:?}"))?;
    let month = Month::try_from(month).map_err(|_| format!("bad month in {text:?}"))?;
    let day: u8 = day.parse().map_err(|_| format!("bad day in {text:?}"))?;
    // A day every year has (no 02-29).
    Date::from_calendar_date(2025, month, day).map_err(|_| format!("no such day: {text:?}"))?;
    Ok((month, day))
}

pub async fn run(args: &Args) -> anyhow::Result<()> {
    let (month, day) = args.fiscal_start;
    let from = Date::from_calendar_date(args.year, month, day)?;
    let to = Date::from_calendar_date(args.year + 1, month, day)?;
    let (from, to) = (
        OffsetDateTime::new_utc(from, Time::MIDNIGHT),
        OffsetDateTime::new_utc(to, Time::MIDNIGHT),
    );
    let (_settings, pool) = super::connect().await?;
    let queued = kopilka_jobs::queue_statements(&pool, from, to)
        .await
        .map_err(anyhow::Error::msg)?;
    super::audit_command(
        &pool,
        "statements.send",
        serde_json::json!({"year": args.year, "queued": queued}),
    )
    .await?;
    let (first, last) = (
        from.date().to_string(),
        (to.date() - time::Duration::days(1)).to_string(),
    );
    if args.format == Format::Json {
        output::line(&serde_json::json!({"queued": queued, "from": first, "to": last}).to_string());
    } else {
        output::rows(
            args.format,
            &["queued", "from", "to"],
            &[vec![queued.to_string(), first, last]],
        );
    }
    Ok(())
}
