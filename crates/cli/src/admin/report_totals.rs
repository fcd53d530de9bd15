//! `kopilka admin report totals [--since D] [--until D] [--by-provider]`.

use crate::output::{self, Format};

/// Options.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// From this day or instant (inclusive); default: the beginning.
    #[arg(long, value_parser = super::parse_when)]
    since: Option<time::OffsetDateTime>,
    /// Until this day or instant (exclusive); default: no end.
    #[arg(long, value_parser = super::parse_when)]
    until: Option<time::OffsetDateTime>,
    /// Per payment provider and currency instead: `{"by_provider":[{"provider","currency",
    /// "gross_minor","refunded_minor","net_minor","payments"}]}`.
    #[arg(long)]
    by_provider: bool,
    /// Output format.
    #[arg(long, value_enum, default_value_t)]
    format: Format,
}

pub async fn run(args: &Args) -> anyhow::Result<()> {
    let (_, pool) = super::connect().await?;
    let since = args.since.unwrap_or(time::OffsetDateTime::UNIX_EPOCH);
    let until = args
        .until
        .unwrap_or(time::macros::datetime!(9999-12-31 0:00 UTC));
    let mut conn = pool.acquire().await?;
    if args.by_provider {
        let totals =
            kopilka_contributions::ledger::totals_by_provider(&mut conn, since, until).await?;
        if args.format == Format::Json {
            output::line(&serde_json::json!({ "by_provider": totals }).to_string());
            return Ok(());
        }
        let rows: Vec<Vec<String>> = totals
            .iter()
            .map(|t| {
                vec![
                    t.provider.clone(),
                    t.currency.clone(),
                    t.gross_minor.to_string(),
                    t.refunded_minor.to_string(),
                    t.net_minor.to_string(),
                    t.payments.to_string(),
                ]
            })
            .collect();
        output::rows(
            args.format,
            &[
                "provider",
                "currency",
                "gross_minor",
                "refunded_minor",
                "net_minor",
                "payments",
            ],
            &rows,
        );
        return Ok(());
    }
    let totals = kopilka_contributions::ledger::totals(&mut conn, since, until).await?;
    if args.format == Format::Json {
        output::line(&serde_json::json!({"totals": totals}).to_string());
        return Ok(());
    }
    let rows: Vec<Vec<String>> = totals
        .iter()
        .map(|t| {
            vec![
                t.currency.clone(),
                t.gross_minor.to_string(),
                t.refunded_minor.to_string(),
                t.net_minor.to_string(),
                t.payments.to_string(),
                t.disputed_minor.to_string(),
                t.fees_minor.to_string(),
                t.stripe_net_minor.to_string(),
            ]
        })
        .collect();
    output::rows(
        args.format,
        &[
            "currency",
            "gross_minor",
            "refunded_minor",
            "net_minor",
            "payments",
            "disputed_minor",
            "fees_minor",
            "stripe_net_minor",
        ],
        &rows,
    );
    Ok(())
}
