//! What a Kopilka before issue #18 booked wrong, found by asking Stripe, and its repair by
//! `admin reconcile --apply` — appended, never changed (the ledger refuses UPDATE/DELETE):
//!
//! - `plan_payment_keyed_by_invoice`: a plan payment booked on `invoice.paid` under its
//!   invoice (`in_…`). Stripe's invoice payments name the payment intent that paid it; the
//!   repair records the row as that payment intent's (`ledger_payment_aliases`) and the
//!   invoice as its plan's (`plan_invoices`), so refunds, disputes, the fee and a later
//!   `invoice_payment.paid` find the one payment.
//! - `inquiry_booked_as_dispute`: an inquiry (`warning_*`) booked as funds withdrawn
//!   (`dp_…`, −amount) though none of its balance transactions withdrew anything. The repair
//!   appends `dp_…:inquiry` (+amount) and makes the contribution `paid` again when nothing
//!   else disputes it.

use kopilka_store::PgPool;
use kopilka_stripe::{ClientError, StripeClient};
use sqlx::PgConnection;

use crate::ReconciliationError;
use crate::drift::Drift;

/// How a finding is repaired.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Repair {
    /// The invoice's row becomes the payment of each payment intent that paid it.
    AliasPayment {
        /// `in_…`.
        invoice_id: String,
        /// What Stripe says paid it.
        payment_intents: Vec<String>,
    },
    /// `dp_…:inquiry` gives the booked withdrawal back.
    ReverseInquiry {
        /// `dp_…`.
        dispute_id: String,
    },
}

/// One drift of an upgraded database, and its repair when Stripe's answer allows one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finding {
    /// As `admin reconcile` reports it.
    pub drift: Drift,
    /// `None` when Stripe names nothing to repair it with.
    pub repair: Option<Repair>,
}

/// A missing object is not this pass's to report (`unknown_to_stripe` is); anything else
/// Stripe answers is an error.
fn missing<T>(result: Result<T, ClientError>) -> Result<Option<T>, ReconciliationError> {
    match result {
        Ok(value) => Ok(Some(value)),
        Err(err) if err.code() == Some("resource_missing") => Ok(None),
        Err(err) => Err(err.into()),
    }
}

/// Every row a Kopilka before #18 booked wrong that is not repaired yet. One Stripe call per
/// candidate: each payment row keyed by an invoice without an alias, and each withdrawal
/// `dp_…` that nothing reinstated or reversed (`on_item` ticks per call).
///
/// # Errors
/// Stripe or storage errors.
pub async fn findings(
    conn: &mut PgConnection,
    stripe: &StripeClient,
    on_item: &(dyn Fn() + Sync),
) -> Result<Vec<Finding>, ReconciliationError> {
    let mut out = Vec::new();
    for payment in kopilka_contributions::alias::payments_by_invoice(conn).await? {
        on_item();
        let Some(payment_intents) =
            missing(stripe.invoice_payment_intents(&payment.invoice_id).await)?
        else {
            continue;
        };
        let amount = format!(
            "{} {}",
            payment.amount.minor(),
            payment.amount.currency().stripe_code()
        );
        let (detail, repair) = if payment_intents.is_empty() {
            (
                format!(
                    "a plan payment of {amount} is booked under its invoice and Stripe names no paid payment of it"
                ),
                None,
            )
        } else {
            (
                format!(
                    "a plan payment of {amount} is booked under its invoice, not under {}: its refunds and disputes find no payment",
                    payment_intents.join(", ")
                ),
                Some(Repair::AliasPayment {
                    invoice_id: payment.invoice_id.clone(),
                    payment_intents,
                }),
            )
        };
        out.push(Finding {
            drift: Drift {
                provider: "stripe",
                kind: "plan_payment_keyed_by_invoice",
                object: payment.invoice_id,
                detail,
            },
            repair,
        });
    }
    for withdrawal in kopilka_contributions::alias::unanswered_withdrawals(conn).await? {
        on_item();
        let Some(dispute) = missing(stripe.dispute_state(&withdrawal.dispute_id).await)? else {
            continue;
        };
        if !dispute.is_inquiry_without_withdrawal() {
            continue;
        }
        out.push(Finding {
            drift: Drift {
                provider: "stripe",
                kind: "inquiry_booked_as_dispute",
                object: withdrawal.dispute_id.clone(),
                detail: format!(
                    "Stripe says {} (an inquiry withdrew nothing), the ledger withdrew {} {}",
                    dispute.status,
                    withdrawal.amount.minor(),
                    withdrawal.amount.currency().stripe_code()
                ),
            },
            repair: Some(Repair::ReverseInquiry {
                dispute_id: withdrawal.dispute_id,
            }),
        });
    }
    Ok(out)
}

/// Finds and repairs every [`Finding`] that has a repair, each in its own transaction;
/// returns the drift repaired now (a second run finds nothing and repairs nothing).
///
/// # Errors
/// Stripe or storage errors.
pub async fn repair(
    pool: &PgPool,
    stripe: &StripeClient,
    on_item: &(dyn Fn() + Sync),
) -> Result<Vec<Drift>, ReconciliationError> {
    let found = {
        let mut conn = pool
            .acquire()
            .await
            .map_err(kopilka_store::StoreError::from)?;
        findings(&mut conn, stripe, on_item).await?
    };
    let mut repaired = Vec::new();
    for finding in found {
        let Some(repair) = finding.repair else {
            continue;
        };
        let mut tx = pool.begin().await?;
        let changed = match &repair {
            Repair::AliasPayment {
                invoice_id,
                payment_intents,
            } => {
                let mut changed = false;
                for pi in payment_intents {
                    changed |= kopilka_recurring::facts::payment_booked_by_invoice(
                        &mut tx, invoice_id, pi,
                    )
                    .await?
                        == Some(kopilka_contributions::facts::Applied::Changed);
                }
                changed
            }
            Repair::ReverseInquiry { dispute_id } => {
                kopilka_contributions::alias::reverse_booked_inquiry(&mut tx, dispute_id).await?
            }
        };
        tx.commit().await.map_err(kopilka_store::StoreError::from)?;
        if changed {
            tracing::info!(kind = finding.drift.kind, object = %finding.drift.object, "legacy booking repaired");
            repaired.push(finding.drift);
        }
    }
    Ok(repaired)
}
