//! Stripe's fee on a payment, recorded after the payment is booked. Applying a webhook
//! event calls no Stripe API (the event's object is authoritative), and a charge names its
//! balance transaction by id only, so this job retrieves it: the payment's succeeded charge
//! (`GET /v1/charges?payment_intent=pi_…`), then its balance transaction
//! (`GET /v1/balance_transactions/txn_…`), whose `fee` becomes a ledger `fee` row keyed by
//! the `txn_…` id — run again, it records nothing more. The same transaction says what the
//! payment settled as (its `amount` in the settlement currency), kept beside the ledger.

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
    let mut tx = worker.pool.begin().await.map_err(|e| e.to_string())?;
    kopilka_contributions::ledger::record_payment_fee(
        &mut tx,
        payment_intent,
        &fee.balance_transaction,
        kopilka_domain::Money::new(fee.fee, currency),
        at,
    )
    .await
    .map_err(|e| e.to_string())?;
    // What the payment settled as (converted, when Stripe converted it).
    kopilka_contributions::ledger::record_payment_settlement(
        &mut tx,
        payment_intent,
        &fee.balance_transaction,
        kopilka_domain::Money::new(fee.amount, currency),
    )
    .await
    .map_err(|e| e.to_string())?;
    tx.commit().await.map_err(|e| e.to_string())?;
    Ok(())
}

/// Records what the ledger row named by the job's `stripe_id` (a refund, or a failed
/// refund's return) settled as: its balance transaction `balance_transaction`, retrieved.
pub(crate) async fn record_settlement(worker: &Worker, job: &Job) -> Result<(), String> {
    let stripe_id = job.payload["stripe_id"]
        .as_str()
        .ok_or("a settlement job without stripe_id")?;
    let txn = job.payload["balance_transaction"]
        .as_str()
        .ok_or("a settlement job without balance_transaction")?;
    let Some(stripe) = worker.stripe.as_ref() else {
        tracing::warn!(
            stripe_id,
            "Stripe is not configured: the settlement is not recorded"
        );
        return Ok(());
    };
    let settled = stripe.settlement(txn).await.map_err(|e| e.to_string())?;
    let currency = settled
        .currency
        .parse()
        .map_err(|_| format!("unknown currency {:?}", settled.currency))?;
    let mut conn = worker.pool.acquire().await.map_err(|e| e.to_string())?;
    kopilka_contributions::ledger::record_settlement(
        &mut conn,
        stripe_id,
        &settled.id,
        kopilka_domain::Money::new(settled.amount, currency),
    )
    .await
    .map_err(|e| e.to_string())?;
    Ok(())
}
