//! A reader's data across the crates, for GDPR: the export (account, contributions with
//! their money movements, plans) and erasure (the account's PII and rows go; the ledger
//! stays; each Stripe customer's address is cleared by a job, retried until Stripe agrees).

use kopilka_domain::id::ReaderId;
use kopilka_queue::NewJob;
use serde::Serialize;
use sqlx::PgConnection;
use time::OffsetDateTime;

use crate::{Plan, RecurringError, plans_of_reader};

/// The job kind that clears a Stripe customer's personal fields (payload: `customer_id`).
pub const CLEAR_STRIPE_CUSTOMER: &str = "privacy.clear_stripe_customer";

/// Everything Kopilka holds about a reader.
#[derive(Debug, Clone, Serialize)]
pub struct ReaderExport {
    /// The account.
    pub account: kopilka_accounts::privacy::AccountExport,
    /// Their contributions.
    pub contributions: Vec<kopilka_contributions::history::ContributionRecord>,
    /// Their plans.
    pub plans: Vec<PlanExport>,
}

/// A plan in an export.
#[derive(Debug, Clone, Serialize)]
pub struct PlanExport {
    /// Kopilka's id.
    pub id: uuid::Uuid,
    /// Stripe's subscription.
    pub stripe_subscription_id: String,
    /// Stripe's status.
    pub status: String,
    /// `month` or `year`.
    pub interval: String,
    /// Per interval, minor units.
    pub amount_minor: i64,
    /// Lowercase ISO 4217.
    pub currency: String,
    /// The end of the paid period.
    #[serde(with = "time::serde::rfc3339::option")]
    pub current_period_end: Option<OffsetDateTime>,
    /// Whether it ends then.
    pub cancel_at_period_end: bool,
}

impl From<Plan> for PlanExport {
    fn from(plan: Plan) -> Self {
        Self {
            id: plan.id,
            stripe_subscription_id: plan.stripe_subscription_id,
            status: plan.status,
            interval: plan.interval.to_string(),
            amount_minor: plan.amount.minor(),
            currency: plan.amount.currency().stripe_code(),
            current_period_end: plan.current_period_end,
            cancel_at_period_end: plan.cancel_at_period_end,
        }
    }
}

/// Everything about `reader`.
///
/// # Errors
/// `NotFound` (through the accounts error), storage errors.
pub async fn export(
    conn: &mut PgConnection,
    reader: ReaderId,
) -> Result<ReaderExport, RecurringError> {
    let account = kopilka_accounts::privacy::export(&mut *conn, reader).await?;
    let contributions = kopilka_contributions::history::of_reader(&mut *conn, reader).await?;
    let plans = plans_of_reader(conn, reader)
        .await?
        .into_iter()
        .map(PlanExport::from)
        .collect();
    Ok(ReaderExport {
        account,
        contributions,
        plans,
    })
}

/// Erases `reader` in the caller's transaction and enqueues the clearing of their Stripe
/// customers. Returns how many customers will be cleared, or `None` when already erased.
///
/// # Errors
/// `NotFound` (through the accounts error), storage and queue errors.
pub async fn erase(
    conn: &mut PgConnection,
    reader: ReaderId,
    now: OffsetDateTime,
) -> Result<Option<usize>, RecurringError> {
    if !kopilka_accounts::privacy::erase(&mut *conn, reader, now).await? {
        return Ok(None);
    }
    let customers = kopilka_contributions::history::stripe_customers_of(&mut *conn, reader).await?;
    for customer in &customers {
        let job = NewJob::new(
            CLEAR_STRIPE_CUSTOMER,
            serde_json::json!({"customer_id": customer}),
        )
        .dedup(format!("{CLEAR_STRIPE_CUSTOMER}:{customer}"));
        kopilka_queue::enqueue(&mut *conn, &job).await?;
    }
    Ok(Some(customers.len()))
}
