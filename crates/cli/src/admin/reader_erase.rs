//! `kopilka admin reader erase` (address on stdin or `--email-file`): GDPR erasure, the
//! same use-case as `DELETE /v1/me` (`kopilka_jobs::privacy::erase_reader`): open
//! checkouts expire, live plans are cancelled at Stripe at once, the Stripe customers are
//! deleted; then every row tied to the reader goes or loses its link, the ledger keeping
//! amounts, currencies, dates and Stripe ids. The JSON is the same document as the API's.
//! If Stripe fails, nothing is erased and the command can be run again.

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
    let (settings, pool) = super::connect().await?;
    let id = args.target.reader(&pool, "reader.erase").await?;
    let stripe = kopilka_stripe::StripeClient::from_settings(&settings.stripe)?;
    let accounts = kopilka_accounts::Accounts::from_settings(&settings.accounts);
    let now = time::OffsetDateTime::now_utc();
    let result = kopilka_jobs::privacy::erase_reader(
        &pool,
        stripe.as_ref(),
        &accounts.keys,
        id,
        now,
        time::Duration::hours(i64::from(settings.paywall.token_hours)),
    )
    .await;
    let detail = match &result {
        Ok(erasure) => serde_json::json!({
            "plans_cancelled": erasure.plans_cancelled,
            "customers_deleted": erasure.customers_deleted,
            "checkouts_expired": erasure.checkouts_expired,
        }),
        Err(err) => serde_json::json!({"failed": err.to_string()}),
    };
    let mut conn = pool.acquire().await?;
    audit(&mut conn, &args.target, "reader.erase", id, detail).await?;
    let erasure = result?;
    if args.format == Format::Json {
        output::line(&serde_json::to_string(&erasure)?);
    } else {
        let retains: Vec<&str> = erasure.stripe_retains.iter().map(|r| r.object).collect();
        output::rows(
            args.format,
            &[
                "erased",
                "plans_cancelled",
                "customers_deleted",
                "checkouts_expired",
                "stripe_retains",
            ],
            &[vec![
                erasure.erased.to_string(),
                erasure.plans_cancelled.to_string(),
                erasure.customers_deleted.to_string(),
                erasure.checkouts_expired.to_string(),
                retains.join(" "),
            ]],
        );
    }
    Ok(())
}
