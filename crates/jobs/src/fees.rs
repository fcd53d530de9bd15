//! Stripe's fee on a payment, recorded after the payment is booked. Applying a webhook
//! event calls no Stripe API (the event's object is authoritative), and a charge names its
//! balance transaction by id only, so this job retrieves it: the payment's succeeded charge
//! (`GET /v1/charges?payment_intent=pi_…`), then its balance transaction
//! (`GET /v1/balance_transactions/txn_…`), whose `fee` becomes a ledger `fee` row keyed by
//! the `txn_…` id — run again, it records nothing more.

use kopilka_queue::Job;
use time::OffsetDateTime;

use crate::Worker;

/// Records the fee of the payment named by the job's `payment_intent`.
pub(crate) async fn record(worker: &Worker, job: &Job) -> Result<(), String> {
    let payment_intent = job.payload["payment_intent"]
        .as_str()
        .ok_or("a fee job without payment_intent")?;
    let Some(stripe) = worker.stripe.as_ref() else {
        // Nothing to ask: `admin reconcile` reports the fee as missing once Stripe is set.
        tracing::warn!(
            payment_intent,
            "Stripe is not configured: the payment's fee is not recorded"
        );
        return Ok(());
    };
    let Some(fee) = stripe
        .payment_fee(payment_intent)
        .await
        .map_err(|e| e.to_string())?
    else {
        // A payment without a charge (paid from the customer's balance) has no fee.
        tracing::info!(payment_intent, "no charge, no fee");
        return Ok(());
    };
    let currency = fee
        .currency
        .parse()
        .map_err(|_| format!("unknown currency {:?}", fee.currency))?;
    let at = OffsetDateTime::from_unix_timestamp(fee.created).map_err(|e| e.to_string())?;
    let mut conn = worker.pool.acquire().await.map_err(|e| e.to_string())?;
    kopilka_contributions::ledger::record_payment_fee(
        &mut conn,
        payment_intent,
        &fee.balance_transaction,
        kopilka_domain::Money::new(fee.fee, currency),
        at,
    )
    .await
    .map_err(|e| e.to_string())?;
    Ok(())
}
