//! `kopilka admin report fraud-warnings`: every early fraud warning Stripe sent
//! (`radar.early_fraud_warning.*`), in its newest state, newest first, with the contribution
//! it concerns and what is left of the payment in the ledger.

use crate::output::{self, Format};

/// Options.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Output format.
    #[arg(long, value_enum, default_value_t)]
    format: Format,
}

pub async fn run(args: &Args) -> anyhow::Result<()> {
    let (_settings, pool) = super::connect().await?;
    let warnings = kopilka_reconciliation::fraud::warnings(&pool).await?;
    if args.format == Format::Json {
        output::line(&serde_json::json!({ "warnings": warnings }).to_string());
        return Ok(());
    }
    let text = |v: &Option<String>| v.clone().unwrap_or_default();
    let rows: Vec<Vec<String>> = warnings
        .iter()
        .map(|w| {
            vec![
                w.id.clone(),
                w.created.to_string(),
                text(&w.fraud_type),
                w.actionable.to_string(),
                text(&w.charge),
                text(&w.payment_intent),
                w.contribution_id.map(|c| c.to_string()).unwrap_or_default(),
                w.remaining_minor.map(|m| m.to_string()).unwrap_or_default(),
            ]
        })
        .collect();
    output::rows(
        args.format,
        &[
            "id",
            "created",
            "fraud_type",
            "actionable",
            "charge",
            "payment_intent",
            "contribution_id",
            "remaining_minor",
        ],
        &rows,
    );
    Ok(())
}
