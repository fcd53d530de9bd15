//! `kopilka admin recurring list`.

use crate::output::{self, Format};

/// Options.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Output format.
    #[arg(long, value_enum, default_value_t)]
    format: Format,
}

pub async fn run(args: &Args) -> anyhow::Result<()> {
    let (_, pool) = super::connect().await?;
    let mut conn = pool.acquire().await?;
    let plans = kopilka_recurring::list_plans(&mut conn).await?;
    drop(conn);
    super::audit_command(
        &pool,
        "recurring.list",
        serde_json::json!({"plans": plans.len()}),
    )
    .await?;
    let rows: Vec<Vec<String>> = plans
        .iter()
        .map(|p| {
            vec![
                p.id.to_string(),
                p.stripe_subscription_id.clone(),
                p.status.clone(),
                p.interval.to_string(),
                p.amount.minor().to_string(),
                p.amount.currency().stripe_code(),
            ]
        })
        .collect();
    let header = [
        "id",
        "stripe_subscription_id",
        "status",
        "interval",
        "amount_minor",
        "currency",
    ];
    if args.format == Format::Json {
        let document: Vec<serde_json::Value> = plans
            .iter()
            .map(|p| {
                serde_json::json!({"id": p.id, "stripe_subscription_id": p.stripe_subscription_id, "status": p.status,
                    "interval": p.interval, "amount_minor": p.amount.minor(), "currency": p.amount.currency()})
            })
            .collect();
        output::line(&serde_json::Value::Array(document).to_string());
        return Ok(());
    }
    output::rows(args.format, &header, &rows);
    Ok(())
}
