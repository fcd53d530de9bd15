//! `kopilka admin events replay (--id EVT | --failed | --type T [--since D]) [--provider
//! stripe|btcpay]`: apply stored events of one provider (Stripe's unless said) again, now.
//! Application is idempotent, so replaying an applied event changes nothing.

use kopilka_domain::Provider;

use crate::output::{self, Format};

/// Options.
#[derive(Debug, clap::Args)]
#[command(group(clap::ArgGroup::new("which").required(true).args(["id", "failed", "event_type"])))]
pub struct Args {
    /// One event.
    #[arg(long)]
    id: Option<String>,
    /// Every failed event.
    #[arg(long)]
    failed: bool,
    /// Every stored event of this type (`*` at the end matches a prefix, e.g. `invoice.*`).
    #[arg(long = "type")]
    event_type: Option<String>,
    /// With --type: only events Stripe created since this day or instant.
    #[arg(long, value_parser = super::parse_when, requires = "event_type")]
    since: Option<time::OffsetDateTime>,
    /// Whose events: an event id is unique only within its provider.
    #[arg(long, value_parser = parse_provider, default_value = "stripe")]
    provider: Provider,
    /// Output format.
    #[arg(long, value_enum, default_value_t)]
    format: Format,
}

fn parse_provider(value: &str) -> Result<Provider, String> {
    value
        .parse()
        .map_err(|e: kopilka_domain::ProviderError| e.to_string())
}

pub async fn run(args: &Args) -> anyhow::Result<()> {
    let (settings, pool) = super::connect().await?;
    let stripe = kopilka_stripe::StripeClient::from_settings(&settings.stripe)?;
    // A BTCPay delivery is applied by reading its invoice from the store.
    let btcpay = kopilka_btcpay::BtcpayClient::from_settings(&settings.btcpay);
    let ids: Vec<String> = match (&args.id, &args.event_type) {
        (Some(id), _) => vec![id.clone()],
        (None, Some(pattern)) => {
            let since = args.since.map_or(0, time::OffsetDateTime::unix_timestamp);
            kopilka_reconciliation::inbox::ids_of_type(&pool, args.provider, pattern, since).await?
        }
        (None, None) => kopilka_reconciliation::inbox::list(&pool, Some("failed"))
            .await?
            .into_iter()
            .filter(|e| e.provider == args.provider)
            .map(|e| e.id)
            .collect(),
    };
    let mut results = Vec::new();
    for id in &ids {
        let applied = match args.provider {
            Provider::Stripe => {
                kopilka_reconciliation::apply_event(
                    &pool,
                    stripe.as_ref(),
                    id,
                    settings.stripe.refund_on_early_fraud_warning,
                )
                .await
            }
            Provider::Btcpay => {
                kopilka_reconciliation::apply_btcpay_event(
                    &pool,
                    btcpay.as_ref(),
                    id,
                    settings.passes.redeem_days,
                )
                .await
            }
        };
        let outcome = match applied {
            Ok(outcome) => format!("{outcome:?}").to_lowercase(),
            Err(err) => format!("error: {err}"),
        };
        results.push((id.clone(), outcome));
    }
    let failures = results
        .iter()
        .filter(|(_, o)| o.starts_with("error"))
        .count();
    super::audit_command(
        &pool,
        "events.replay",
        serde_json::json!({"replayed": results.len(), "failed": failures}),
    )
    .await?;
    if args.format == Format::Json {
        let replayed: Vec<serde_json::Value> = results
            .iter()
            .map(|(id, o)| serde_json::json!({"id": id, "outcome": o}))
            .collect();
        output::line(&serde_json::json!({"replayed": replayed, "failed": failures}).to_string());
    } else {
        let rows: Vec<Vec<String>> = results.into_iter().map(|(id, o)| vec![id, o]).collect();
        output::rows(args.format, &["id", "outcome"], &rows);
    }
    anyhow::ensure!(failures == 0, "{failures} event(s) still failing");
    Ok(())
}
