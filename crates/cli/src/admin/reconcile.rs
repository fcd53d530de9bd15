//! `kopilka admin reconcile [--since D] [--apply]`: every drift between the payment
//! providers (Stripe, and the BTCPay store when one is configured) and Kopilka. With
//! `--apply`, events Stripe has and the inbox lacks are stored and applied first (the
//! webhook path), what a Kopilka before #18 booked wrong is repaired (appended; see
//! `kopilka_reconciliation::upgrade`), each of Kopilka's BTCPay invoices is applied as it
//! stands, then the comparison runs.

use indicatif::{ProgressBar, ProgressStyle};

use crate::output::{self, Format};

/// Options.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Compare what Stripe created since this day or instant (default: 30 days ago, as far as
    /// Stripe keeps events).
    #[arg(long, value_parser = super::parse_when)]
    since: Option<time::OffsetDateTime>,
    /// Repair first: fetch and apply the events the inbox lacks, and repair what a Kopilka
    /// before #18 booked wrong (plan payments under their invoice, inquiries as withdrawals).
    #[arg(long)]
    apply: bool,
    /// Output format.
    #[arg(long, value_enum, default_value_t)]
    format: Format,
}

pub async fn run(args: &Args) -> anyhow::Result<()> {
    let (settings, pool) = super::connect().await?;
    let stripe = kopilka_stripe::StripeClient::from_settings(&settings.stripe)?;
    let btcpay = kopilka_btcpay::BtcpayClient::from_settings(&settings.btcpay);
    if stripe.is_none() && btcpay.is_none() {
        anyhow::bail!(
            "neither KOPILKA__STRIPE__SECRET_KEY nor a BTCPay store (KOPILKA__BTCPAY__URL, STORE_ID, API_KEY) is set"
        );
    }
    let since = args
        .since
        .unwrap_or_else(|| time::OffsetDateTime::now_utc() - time::Duration::days(30))
        .unix_timestamp();
    // The bar draws on stderr only when it is a terminal; stdout stays one document.
    let bar = ProgressBar::new_spinner();
    bar.set_style(ProgressStyle::with_template(
        "{spinner} {pos} provider objects read · {msg}",
    )?);
    let tick = || bar.inc(1);
    let mut repaired = Vec::new();
    let mut report = kopilka_reconciliation::drift::Report::default();
    if let Some(stripe) = &stripe {
        if args.apply {
            bar.set_message("fetching missing events");
            let stored = kopilka_reconciliation::drift::fetch_missing_events(
                &pool,
                stripe,
                since,
                &tick,
                settings.stripe.refund_on_early_fraud_warning,
            )
            .await?;
            tracing::info!(stored, "missing events stored and applied");
            bar.set_message("repairing bookings from before #18");
            repaired = kopilka_reconciliation::upgrade::repair(&pool, stripe, &tick).await?;
            tracing::info!(repaired = repaired.len(), "legacy bookings repaired");
        }
        bar.set_message("comparing with Stripe");
        report = kopilka_reconciliation::drift::reconcile(&pool, stripe, since, &tick).await?;
    }
    if let Some(btcpay) = &btcpay {
        bar.set_message("comparing with BTCPay Server");
        let crypto = kopilka_reconciliation::btcpay_drift::reconcile_btcpay(
            &pool,
            btcpay,
            since,
            args.apply,
            settings.passes.redeem_days,
            &tick,
        )
        .await?;
        report.checked += crypto.checked;
        report.drift.extend(crypto.drift);
    }
    bar.finish_and_clear();
    super::audit_command(
        &pool,
        "reconcile",
        serde_json::json!({"apply": args.apply, "checked": report.checked, "drift": report.drift.len(),
                           "repaired": repaired.iter().map(|d| [d.kind, d.object.as_str()]).collect::<Vec<_>>()}),
    )
    .await?;
    if args.format == Format::Json {
        output::line(&serde_json::to_string(&report)?);
    } else {
        let rows: Vec<Vec<String>> = report
            .drift
            .iter()
            .map(|d| {
                vec![
                    d.provider.to_owned(),
                    d.kind.to_owned(),
                    d.object.clone(),
                    d.detail.clone(),
                ]
            })
            .collect();
        output::rows(
            args.format,
            &["provider", "kind", "object", "detail"],
            &rows,
        );
        if args.format == Format::Table {
            output::line(&format!(
                "{} provider objects checked, {} drift",
                report.checked,
                report.drift.len()
            ));
        }
    }
    Ok(())
}
