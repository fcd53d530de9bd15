//! A reader's contributions at erasure: what at Stripe must stop (customers, checkout
//! sessions still open), then the unlinking. The ledger keeps every contribution's amount,
//! currency, dates and Stripe ids; only the reader goes (`reader_id` NULL, with
//! `reader_erased_at`), so totals do not move. The checkout requests' fingerprints, which
//! were made from bodies holding the address, go with them.

use kopilka_domain::id::ReaderId;
use sqlx::PgConnection;
use time::OffsetDateTime;

use crate::ContributionError;

/// What a reader's contributions left at Stripe.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StripeTrail {
    /// Their Stripe customers (`cus_…`).
    pub customers: Vec<String>,
    /// Checkout sessions not yet paid, abandoned or failed (`cs_…`), to expire.
    pub open_checkouts: Vec<String>,
    /// Subscriptions their contributions started (`sub_…`), whatever their state.
    pub subscriptions: Vec<String>,
    /// How many one-off payments they made (Stripe keeps each charge's billing details).
    pub one_off_payments: i64,
}

/// What the contributions of `reader` left at Stripe.
///
/// # Errors
/// Storage errors.
pub async fn stripe_trail(
    conn: &mut PgConnection,
    reader: ReaderId,
) -> Result<StripeTrail, ContributionError> {
    let customers = crate::history::stripe_customers_of(&mut *conn, reader).await?;
    let open_checkouts = sqlx::query_scalar(
        "SELECT stripe_checkout_session_id FROM contributions
         WHERE reader_id = $1 AND status = 'pending' AND stripe_checkout_session_id IS NOT NULL
         ORDER BY created_at",
    )
    .bind(reader.as_uuid())
    .fetch_all(&mut *conn)
    .await?;
    let subscriptions = sqlx::query_scalar(
        "SELECT stripe_subscription_id FROM contributions
         WHERE reader_id = $1 AND stripe_subscription_id IS NOT NULL ORDER BY 1",
    )
    .bind(reader.as_uuid())
    .fetch_all(&mut *conn)
    .await?;
    let one_off_payments = sqlx::query_scalar(
        "SELECT count(*) FROM contributions c
         WHERE c.reader_id = $1 AND c.interval = 'once'
           AND EXISTS (SELECT 1 FROM ledger_entries l
                       WHERE l.contribution_id = c.id AND l.kind = 'payment')",
    )
    .bind(reader.as_uuid())
    .fetch_one(conn)
    .await?;
    Ok(StripeTrail {
        customers,
        open_checkouts,
        subscriptions,
        one_off_payments,
    })
}

/// Every Stripe id the contributions of `reader` carry (checkout sessions, payment
/// intents, subscriptions, customers): what ties a stored event to them.
///
/// # Errors
/// Storage errors.
pub async fn stripe_ids_of(
    conn: &mut PgConnection,
    reader: ReaderId,
) -> Result<Vec<String>, ContributionError> {
    Ok(sqlx::query_scalar(
        "SELECT DISTINCT s.stripe_id FROM contributions c,
             unnest(ARRAY[c.stripe_checkout_session_id, c.stripe_payment_intent_id,
                          c.stripe_subscription_id, c.stripe_customer_id]) AS s(stripe_id)
         WHERE c.reader_id = $1 AND s.stripe_id IS NOT NULL ORDER BY s.stripe_id",
    )
    .bind(reader.as_uuid())
    .fetch_all(conn)
    .await?)
}

/// Unlinks every contribution of `reader` (in the caller's transaction): the checkout
/// requests' fingerprints are deleted, `reader_id` becomes NULL and `reader_erased_at` says
/// when. Returns how many contributions were unlinked.
///
/// # Errors
/// Storage errors.
pub async fn unlink_reader(
    conn: &mut PgConnection,
    reader: ReaderId,
    now: OffsetDateTime,
) -> Result<u64, ContributionError> {
    sqlx::query(
        "DELETE FROM checkout_requests
         WHERE contribution_id IN (SELECT id FROM contributions WHERE reader_id = $1)",
    )
    .bind(reader.as_uuid())
    .execute(&mut *conn)
    .await?;
    // The passes they hold run on (prepaid), tied to no one.
    sqlx::query("UPDATE passes SET reader_id = NULL WHERE reader_id = $1")
        .bind(reader.as_uuid())
        .execute(&mut *conn)
        .await?;
    let unlinked = sqlx::query(
        "UPDATE contributions SET reader_id = NULL, reader_erased_at = $2 WHERE reader_id = $1",
    )
    .bind(reader.as_uuid())
    .bind(now)
    .execute(conn)
    .await?
    .rows_affected();
    Ok(unlinked)
}
