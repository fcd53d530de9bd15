//! `kopilka admin report attention`: every contribution whose payment ended where a person
//! must decide (a crypto invoice paid partly, late, too much, marked settled short, or
//! marked invalid after it settled), oldest first, with the provider's record to open.

use crate::output::{self, Format};

/// Options.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Output format.
    #[arg(long, value_enum, default_value_t)]
    format: Format,
    /// At most this many.
    #[arg(long, default_value_t = 1000)]
    limit: i64,
}

pub async fn run(args: &Args) -> anyhow::Result<()> {
    let (_settings, pool) = super::connect().await?;
    let mut conn = pool.acquire().await?;
    let listed = kopilka_contributions::crypto::needing_attention(&mut conn, args.limit).await?;
    if args.format == Format::Json {
        output::line(&serde_json::json!({ "attention": listed }).to_string());
        return Ok(());
    }
    let rows: Vec<Vec<String>> = listed
        .iter()
        .map(|a| {
            vec![
                a.contribution_id.to_string(),
                a.provider.clone(),
                a.invoice_id.clone().unwrap_or_default(),
                a.attention.clone(),
                a.since.to_string(),
                a.status.clone(),
                a.amount_minor.to_string(),
                a.paid_minor.map(|m| m.to_string()).unwrap_or_default(),
                a.currency.clone(),
            ]
        })
        .collect();
    output::rows(
        args.format,
        &[
            "contribution_id",
            "provider",
            "invoice_id",
            "attention",
            "since",
            "status",
            "amount_minor",
            "paid_minor",
            "currency",
        ],
        &rows,
    );
    Ok(())
}
