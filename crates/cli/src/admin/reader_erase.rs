//! `kopilka admin reader erase EMAIL`: GDPR erasure. The address, name, sessions, reminders
//! and banner state go; the ledger keeps amounts, currencies, dates and Stripe ids; each
//! Stripe customer's address is cleared by a job (`kopilka worker` runs it).

use super::reader::{Target, audit};
use crate::output::{self, Format};

/// Options.
#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(flatten)]
    target: Target,
    /// Output format.
    #[arg(long, value_enum, default_value_t)]
    format: Format,
}

pub async fn run(args: &Args) -> anyhow::Result<()> {
    let (_, pool) = super::connect().await?;
    let mut tx = pool.begin().await?;
    let id = args.target.reader(&mut tx).await?;
    let now = time::OffsetDateTime::now_utc();
    let customers = kopilka_recurring::privacy::erase(&mut tx, id, now)
        .await?
        .unwrap_or(0);
    audit(
        &mut tx,
        &args.target,
        "reader.erase",
        id,
        serde_json::json!({"stripe_customers": customers}),
    )
    .await?;
    tx.commit().await?;
    let summary =
        serde_json::json!({"id": id, "erased": true, "stripe_customers_to_clear": customers});
    if args.format == Format::Json {
        output::line(&summary.to_string());
    } else {
        output::rows(
            args.format,
            &["id", "erased", "stripe_customers_to_clear"],
            &[vec![id.to_string(), "true".into(), customers.to_string()]],
        );
    }
    Ok(())
}
