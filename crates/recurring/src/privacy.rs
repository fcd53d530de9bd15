//! A reader's data across the crates, for GDPR: the export's account, contributions (with
//! their money movements) and plans, and what erasure must end at Stripe (live plans). The
//! erasure itself, which calls Stripe first, is `kopilka_jobs::privacy::erase_reader`.

use kopilka_domain::id::ReaderId;
use serde::Serialize;
use sqlx::PgConnection;
use time::OffsetDateTime;

use crate::{Plan, RecurringError, plans_of_reader};

/// The job kind that ends an erased reader's Stripe customer (payload: `customer_id`).
/// Erasure now deletes customers before it forgets anything; the kind stays for jobs queued
/// by an older version, and its handler deletes the customer too.
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

/// The plans of `reader` that can still charge (every status but `canceled` and
/// `incomplete_expired`), whose subscriptions erasure cancels at Stripe at once.
///
/// # Errors
/// Storage errors.
pub async fn plans_to_end(
    conn: &mut PgConnection,
    reader: ReaderId,
) -> Result<Vec<Plan>, RecurringError> {
    Ok(plans_of_reader(conn, reader)
        .await?
        .into_iter()
        .filter(|p| !matches!(p.status.as_str(), "canceled" | "incomplete_expired"))
        .collect())
}

/// The Stripe customers of `reader`'s plans (a plan's customer is also on its
/// contribution, but an older plan may know it alone).
///
/// # Errors
/// Storage errors.
pub async fn plan_customers(
    conn: &mut PgConnection,
    reader: ReaderId,
) -> Result<Vec<String>, RecurringError> {
    Ok(sqlx::query_scalar(
        "SELECT DISTINCT stripe_customer_id FROM recurring_plans
         WHERE stripe_customer_id IS NOT NULL
           AND contribution_id IN (SELECT id FROM contributions WHERE reader_id = $1)
         ORDER BY 1",
    )
    .bind(reader.as_uuid())
    .fetch_all(conn)
    .await?)
}
