//! Rows a Kopilka before issue #18 booked under the wrong key, and their append-only
//! repairs (the ledger itself is never changed):
//!
//! - a plan payment booked on `invoice.paid` under its invoice (`in_…`) instead of its
//!   payment intent: `ledger_payment_aliases` names that row as the payment of its `pi_…`,
//!   so refunds, disputes, fees and fraud warnings find it (every lookup of a payment goes
//!   through `kopilka_payment_key`), and the invoice's `invoice_payment.paid` books no
//!   second payment;
//! - an inquiry (`warning_*` dispute) booked as funds withdrawn (`dp_…`, −amount): a
//!   compensating `dispute_reversal` row (`dp_…:inquiry`, +amount) gives it back.

use kopilka_domain::id::ContributionId;
use kopilka_domain::{Money, Provider};
use sqlx::PgConnection;
use time::OffsetDateTime;

use crate::ContributionError;
use crate::ledger::{self, EntryKind, NewEntry};

/// A plan payment booked under its invoice.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PaymentByInvoice {
    /// `in_…`: the row's `provider_id`.
    pub invoice_id: String,
    /// The plan it paid.
    pub plan_id: Option<uuid::Uuid>,
    /// What it booked.
    pub amount: Money,
    /// When it was booked as paid.
    pub occurred_at: OffsetDateTime,
}

type ByInvoiceRow = (String, Option<uuid::Uuid>, i64, String, OffsetDateTime);

/// Every payment row keyed by an invoice that no alias names yet (what a Kopilka before
/// #18 booked on `invoice.paid`), oldest first.
///
/// # Errors
/// Storage errors.
pub async fn payments_by_invoice(
    conn: &mut PgConnection,
) -> Result<Vec<PaymentByInvoice>, ContributionError> {
    let rows: Vec<ByInvoiceRow> = sqlx::query_as(
        "SELECT l.provider_id, l.plan_id, l.amount_minor, l.currency, l.occurred_at
         FROM ledger_entries l
         WHERE l.provider = 'stripe' AND l.kind = 'payment' AND l.provider_id LIKE 'in\\_%'
           AND NOT EXISTS (SELECT 1 FROM ledger_payment_aliases a
                           WHERE a.provider = l.provider AND a.stripe_id = l.provider_id)
         ORDER BY l.occurred_at, l.provider_id",
    )
    .fetch_all(conn)
    .await?;
    Ok(rows
        .into_iter()
        .filter_map(|(invoice_id, plan_id, minor, currency, occurred_at)| {
            Some(PaymentByInvoice {
                invoice_id,
                plan_id,
                amount: Money::new(minor, currency.parse().ok()?),
                occurred_at,
            })
        })
        .collect())
}

/// What [`alias_invoice_payment`] found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InvoicePayment {
    /// No payment row is keyed by the invoice: nothing to alias.
    NotByInvoice,
    /// The invoice's row is the payment of the payment intent (`new`: the alias was
    /// recorded now). `plan_id` is the row's plan.
    Aliased {
        /// Recorded by this call.
        new: bool,
        /// The plan the row was booked for.
        plan_id: Option<uuid::Uuid>,
    },
}

/// When a payment row is keyed by invoice `invoice_id`, records it as the payment of
/// `payment_intent` (once: the alias is unique on the payment intent) and, when new, queues
/// the job that records Stripe's fee on it (which the row, keyed by an invoice, never got).
/// No receipt is queued: the row had its receipt when it was booked.
///
/// # Errors
/// Storage errors.
pub async fn alias_invoice_payment(
    conn: &mut PgConnection,
    invoice_id: &str,
    payment_intent: &str,
) -> Result<InvoicePayment, ContributionError> {
    let row: Option<Option<uuid::Uuid>> = sqlx::query_scalar(
        "SELECT plan_id FROM ledger_entries
         WHERE provider = 'stripe' AND provider_id = $1 AND kind = 'payment'",
    )
    .bind(invoice_id)
    .fetch_optional(&mut *conn)
    .await?;
    let Some(plan_id) = row else {
        return Ok(InvoicePayment::NotByInvoice);
    };
    let new = sqlx::query(
        "INSERT INTO ledger_payment_aliases (payment_intent, provider, stripe_id) VALUES ($1, 'stripe', $2)
         ON CONFLICT (payment_intent) DO NOTHING",
    )
    .bind(payment_intent)
    .bind(invoice_id)
    .execute(&mut *conn)
    .await?
    .rows_affected()
        == 1;
    if new {
        let job = kopilka_queue::NewJob::new(
            ledger::FEE_JOB,
            serde_json::json!({"payment_intent": payment_intent}),
        )
        .attempts(kopilka_queue::PATIENT_ATTEMPTS)
        .dedup(format!("ledger:fee:{payment_intent}"));
        kopilka_queue::enqueue(conn, &job).await?;
        tracing::info!(
            invoice_id,
            payment_intent,
            "plan payment booked under its invoice aliased"
        );
    }
    Ok(InvoicePayment::Aliased { new, plan_id })
}

/// The key of a booked inquiry's compensating row.
#[must_use]
pub fn inquiry_key(dispute_id: &str) -> String {
    format!("{dispute_id}:inquiry")
}

/// The key a dispute's withdrawal is booked under: `dp_…`, unless that key holds an inquiry
/// booked as a withdrawal and already given back ([`reverse_booked_inquiry`]), in which case
/// an inquiry escalated to a chargeback withdraws under `dp_…:withdrawn`.
///
/// # Errors
/// Storage errors.
pub async fn withdrawal_key(
    conn: &mut PgConnection,
    dispute_id: &str,
) -> Result<String, ContributionError> {
    Ok(
        if ledger::recorded(conn, Provider::Stripe, &inquiry_key(dispute_id)).await? {
            format!("{dispute_id}:withdrawn")
        } else {
            dispute_id.to_owned()
        },
    )
}

/// A withdrawal booked under `dp_…` with nothing reinstating or reversing it: a candidate
/// for an inquiry booked as money taken (Stripe decides).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BookedWithdrawal {
    /// `dp_…`.
    pub dispute_id: String,
    /// What it withdrew (positive).
    pub amount: Money,
}

/// Dispute rows keyed `dp_…` that no reinstatement (`:reinstated`, or `:won` as Kopilka
/// before #18 keyed it) and no inquiry reversal (`:inquiry`) answers, oldest first.
///
/// # Errors
/// Storage errors.
pub async fn unanswered_withdrawals(
    conn: &mut PgConnection,
) -> Result<Vec<BookedWithdrawal>, ContributionError> {
    let rows: Vec<(String, i64, String)> = sqlx::query_as(
        "SELECT l.provider_id, -l.amount_minor, l.currency FROM ledger_entries l
         WHERE l.provider = 'stripe' AND l.kind = 'dispute' AND l.provider_id LIKE 'dp\\_%'
           AND position(':' IN l.provider_id) = 0
           AND NOT EXISTS (SELECT 1 FROM ledger_entries r
                           WHERE r.provider = l.provider
                             AND r.provider_id IN (l.provider_id || ':reinstated', l.provider_id || ':won',
                                                   l.provider_id || ':inquiry'))
         ORDER BY l.occurred_at, l.provider_id",
    )
    .fetch_all(conn)
    .await?;
    Ok(rows
        .into_iter()
        .filter_map(|(dispute_id, minor, currency)| {
            Some(BookedWithdrawal {
                dispute_id,
                amount: Money::new(minor, currency.parse().ok()?),
            })
        })
        .collect())
}

type DisputeRow = (
    Option<String>,
    Option<uuid::Uuid>,
    Option<uuid::Uuid>,
    i64,
    String,
    OffsetDateTime,
);

/// Gives back what an inquiry booked as a withdrawal took: a `dispute_reversal` row keyed
/// `dp_…:inquiry` of the same amount, payment, contribution and plan, at the withdrawal's
/// own time (so every period's totals end as Stripe's, where nothing moved). The
/// contribution is `paid` again unless another dispute still holds funds of it. The caller
/// has established at Stripe that dispute `dispute_id` is an inquiry that withdrew nothing.
/// Returns whether the row was new (`false` also when no withdrawal is booked under
/// `dispute_id`).
///
/// # Errors
/// Storage errors.
pub async fn reverse_booked_inquiry(
    conn: &mut PgConnection,
    dispute_id: &str,
) -> Result<bool, ContributionError> {
    let row: Option<DisputeRow> = sqlx::query_as(
        "SELECT payment_intent_id, contribution_id, plan_id, amount_minor, currency, occurred_at
         FROM ledger_entries WHERE provider = 'stripe' AND provider_id = $1 AND kind = 'dispute'",
    )
    .bind(dispute_id)
    .fetch_optional(&mut *conn)
    .await?;
    let Some((payment_intent, contribution, plan, minor, currency, occurred_at)) = row else {
        return Ok(false);
    };
    let Ok(currency) = currency.parse() else {
        return Ok(false);
    };
    let key = inquiry_key(dispute_id);
    let contribution = contribution.map(ContributionId::from_uuid);
    let new = ledger::record(
        conn,
        &NewEntry {
            kind: EntryKind::DisputeReversal,
            provider: Provider::Stripe,
            provider_id: &key,
            payment_intent_id: payment_intent.as_deref(),
            contribution_id: contribution,
            plan_id: plan,
            amount: Money::new(minor.abs(), currency),
            occurred_at,
        },
    )
    .await?;
    if let Some(contribution) = contribution {
        // Not a step of the contribution's state machine: the dispute never took the
        // money, so the contribution is what it was — unless another dispute has funds out.
        sqlx::query(
            "UPDATE contributions SET status = 'paid'
             WHERE id = $1 AND status = 'disputed'
               AND (SELECT coalesce(sum(amount_minor), 0) FROM ledger_entries
                    WHERE contribution_id = $1 AND kind IN ('dispute', 'dispute_reversal')) >= 0",
        )
        .bind(contribution.as_uuid())
        .execute(&mut *conn)
        .await?;
    }
    if new {
        tracing::info!(dispute_id, "inquiry booked as a withdrawal reversed");
    }
    Ok(new)
}
