//! `admin report payouts`: each payout since a day, its balance transactions, and the
//! ledger rows they correspond to; flags what does not add up (transactions that are not
//! in the ledger, or whose nets do not sum to the payout).

use futures_util::StreamExt;
use kopilka_store::PgPool;
use kopilka_stripe::StripeClient;
use serde::Serialize;

use crate::ReconciliationError;

/// One payout's reconciliation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PayoutReport {
    /// `po_…`.
    pub id: String,
    /// Paid out.
    pub amount_minor: i64,
    /// Lowercase ISO code.
    pub currency: String,
    /// Stripe's status.
    pub status: String,
    /// Balance transactions paid out (the payout's own excluded).
    pub transactions: usize,
    /// Their nets, summed.
    pub net_minor: i64,
    /// Stripe's fees among them.
    pub fees_minor: i64,
    /// How many of them are in the ledger.
    pub in_ledger: usize,
    /// What does not add up.
    pub problems: Vec<String>,
}

/// Reconciles every payout created since `since` (unix seconds).
///
/// # Errors
/// Stripe or storage errors.
pub async fn payouts(
    pool: &PgPool,
    stripe: &StripeClient,
    since: i64,
    on_item: &(dyn Fn() + Sync),
) -> Result<Vec<PayoutReport>, ReconciliationError> {
    let mut conn = pool
        .acquire()
        .await
        .map_err(kopilka_store::StoreError::from)?;
    let mut reports = Vec::new();
    let mut payouts = stripe.payouts_since(since);
    while let Some(payout) = payouts.next().await {
        let payout = payout?;
        on_item();
        let mut report = PayoutReport {
            id: payout.id.clone(),
            amount_minor: payout.amount,
            currency: payout.currency.clone(),
            status: payout.status.clone(),
            transactions: 0,
            net_minor: 0,
            fees_minor: 0,
            in_ledger: 0,
            problems: Vec::new(),
        };
        if !payout.automatic {
            report
                .problems
                .push("a manual payout: Stripe does not list what it contains".into());
            reports.push(report);
            continue;
        }
        let mut transactions = stripe.payout_transactions(&payout.id);
        while let Some(txn) = transactions.next().await {
            let txn = txn?;
            on_item();
            if txn.kind == "payout" {
                continue;
            }
            report.transactions += 1;
            report.net_minor += txn.net;
            report.fees_minor += txn.fee;
            // The ledger keys payments by payment intent, refunds and disputes by their own ids.
            let key = match txn.source.as_deref() {
                Some(charge) if charge.starts_with("ch_") || charge.starts_with("py_") => {
                    stripe.payment_intent_of_charge(charge).await?
                }
                other => other.map(str::to_owned),
            };
            let recorded: bool = match &key {
                Some(key) => {
                    sqlx::query_scalar(
                        "SELECT EXISTS (SELECT 1 FROM ledger_entries
                                        WHERE provider = 'stripe' AND provider_id = kopilka_payment_key($1))",
                    )
                    .bind(key)
                    .fetch_one(&mut *conn)
                    .await?
                }
                None => false,
            };
            if recorded {
                report.in_ledger += 1;
            } else {
                report.problems.push(format!(
                    "{} ({} {}) is not in the ledger",
                    txn.id, txn.kind, txn.amount
                ));
            }
        }
        if report.net_minor != report.amount_minor {
            report.problems.push(format!(
                "transactions net {} but the payout is {}",
                report.net_minor, report.amount_minor
            ));
        }
        reports.push(report);
    }
    Ok(reports)
}
