//! The payments ledger: every money movement once, immutable (the table refuses UPDATE and
//! DELETE). Balances and totals are derived from it, never stored.

use kopilka_domain::Money;
use kopilka_domain::id::ContributionId;
use sqlx::PgConnection;
use time::OffsetDateTime;

use crate::ContributionError;

/// What moved.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EntryKind {
    /// A successful payment (positive), keyed by its payment intent.
    Payment,
    /// A refund (negative), keyed by `re_…`.
    Refund,
    /// Funds withdrawn by a dispute (negative), keyed by `dp_…`.
    Dispute,
    /// Funds reinstated by a won dispute (positive).
    DisputeReversal,
    /// Stripe's fee (negative).
    Fee,
}

impl EntryKind {
    fn as_str(self) -> &'static str {
        match self {
            Self::Payment => "payment",
            Self::Refund => "refund",
            Self::Dispute => "dispute",
            Self::DisputeReversal => "dispute_reversal",
            Self::Fee => "fee",
        }
    }
}

/// A ledger row to record.
#[derive(Debug, Clone)]
pub struct NewEntry<'a> {
    /// What moved.
    pub kind: EntryKind,
    /// The Stripe id that makes it unique.
    pub stripe_id: &'a str,
    /// The payment it belongs to.
    pub payment_intent_id: Option<&'a str>,
    /// The contribution it belongs to, when known.
    pub contribution_id: Option<ContributionId>,
    /// The recurring plan (renewals).
    pub plan_id: Option<uuid::Uuid>,
    /// Signed: payments and reinstatements positive, the rest negative.
    pub amount: Money,
    /// When it happened (Stripe's time).
    pub occurred_at: OffsetDateTime,
}

/// Records `entry` unless its Stripe id is already there; returns whether it was new.
///
/// # Errors
/// Storage errors.
pub async fn record(
    conn: &mut PgConnection,
    entry: &NewEntry<'_>,
) -> Result<bool, ContributionError> {
    let inserted = sqlx::query(
        "INSERT INTO ledger_entries
             (id, kind, stripe_id, payment_intent_id, contribution_id, plan_id, amount_minor, currency, occurred_at)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)
         ON CONFLICT (stripe_id) DO NOTHING",
    )
    .bind(uuid::Uuid::now_v7())
    .bind(entry.kind.as_str())
    .bind(entry.stripe_id)
    .bind(entry.payment_intent_id)
    .bind(entry.contribution_id.map(ContributionId::as_uuid))
    .bind(entry.plan_id)
    .bind(entry.amount.minor())
    .bind(entry.amount.currency().stripe_code())
    .bind(entry.occurred_at)
    .execute(conn)
    .await?;
    Ok(inserted.rows_affected() == 1)
}

/// The sum of every entry of a payment (what is left of it after refunds and disputes).
///
/// # Errors
/// Storage errors.
pub async fn remaining_of_payment(
    conn: &mut PgConnection,
    payment_intent_id: &str,
) -> Result<i64, ContributionError> {
    let remaining: Option<i64> = sqlx::query_scalar(
        "SELECT sum(amount_minor)::bigint FROM ledger_entries
         WHERE payment_intent_id = $1 AND kind IN ('payment', 'refund', 'dispute', 'dispute_reversal')",
    )
    .bind(payment_intent_id)
    .fetch_one(conn)
    .await?;
    Ok(remaining.unwrap_or(0))
}

/// Per-currency totals between two instants.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct CurrencyTotals {
    /// Lowercase ISO code.
    pub currency: String,
    /// Succeeded payments.
    pub gross_minor: i64,
    /// Refunds (positive number).
    pub refunded_minor: i64,
    /// Gross − refunded − disputes (net of reinstatements).
    pub net_minor: i64,
    /// How many payments.
    pub payments: i64,
}

/// Totals per currency over `[since, until)`, as Stripe would count them (fees apart).
///
/// # Errors
/// Storage errors.
pub async fn totals(
    conn: &mut PgConnection,
    since: OffsetDateTime,
    until: OffsetDateTime,
) -> Result<Vec<CurrencyTotals>, ContributionError> {
    let rows: Vec<(String, i64, i64, i64, i64)> = sqlx::query_as(
        "SELECT currency,
                coalesce(sum(amount_minor) FILTER (WHERE kind = 'payment'), 0)::bigint,
                coalesce(-sum(amount_minor) FILTER (WHERE kind = 'refund'), 0)::bigint,
                coalesce(sum(amount_minor) FILTER (WHERE kind <> 'fee'), 0)::bigint,
                count(*) FILTER (WHERE kind = 'payment')
         FROM ledger_entries WHERE occurred_at >= $1 AND occurred_at < $2
         GROUP BY currency ORDER BY currency",
    )
    .bind(since)
    .bind(until)
    .fetch_all(conn)
    .await?;
    Ok(rows
        .into_iter()
        .map(
            |(currency, gross_minor, refunded_minor, net_minor, payments)| CurrencyTotals {
                currency,
                gross_minor,
                refunded_minor,
                net_minor,
                payments,
            },
        )
        .collect())
}
