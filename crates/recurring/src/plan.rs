use kopilka_domain::id::ContributionId;
use kopilka_domain::{Currency, Interval, Money};
use sqlx::PgConnection;
use time::OffsetDateTime;

use crate::RecurringError;

/// A recurring plan as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    /// Kopilka's id.
    pub id: uuid::Uuid,
    /// The contribution that started it.
    pub contribution_id: ContributionId,
    /// `sub_…`.
    pub stripe_subscription_id: String,
    /// Stripe's status.
    pub status: String,
    /// Monthly or annual.
    pub interval: Interval,
    /// Per interval.
    pub amount: Money,
    /// The end of the current period.
    pub current_period_end: Option<OffsetDateTime>,
    /// Whether it ends then.
    pub cancel_at_period_end: bool,
}

type PlanRow = (
    uuid::Uuid,
    uuid::Uuid,
    String,
    String,
    String,
    i64,
    String,
    Option<OffsetDateTime>,
    bool,
);

/// `SELECT <every plan column> FROM recurring_plans WHERE <condition>`, as a static string.
macro_rules! select_plan {
    ($condition:literal) => {
        concat!(
            "SELECT id, contribution_id, stripe_subscription_id, status, interval, amount_minor, currency, ",
            "current_period_end, cancel_at_period_end FROM recurring_plans WHERE ",
            $condition
        )
    };
}

fn from_row(row: PlanRow) -> Option<Plan> {
    let (id, contribution, sub, status, interval, amount, currency, end, cancel) = row;
    Some(Plan {
        id,
        contribution_id: ContributionId::from_uuid(contribution),
        stripe_subscription_id: sub,
        status,
        interval: interval.parse().ok()?,
        amount: Money::new(amount, currency.parse::<Currency>().ok()?),
        current_period_end: end,
        cancel_at_period_end: cancel,
    })
}

/// The plan with Kopilka id `id`.
///
/// # Errors
/// Storage errors.
pub async fn plan_by_id(
    conn: &mut PgConnection,
    id: uuid::Uuid,
) -> Result<Option<Plan>, RecurringError> {
    let row: Option<PlanRow> = sqlx::query_as(select_plan!("id = $1"))
        .bind(id)
        .fetch_optional(conn)
        .await?;
    Ok(row.and_then(from_row))
}

/// The plan of Stripe subscription `sub`.
///
/// # Errors
/// Storage errors.
pub async fn plan_by_subscription(
    conn: &mut PgConnection,
    sub: &str,
) -> Result<Option<Plan>, RecurringError> {
    let row: Option<PlanRow> = sqlx::query_as(select_plan!("stripe_subscription_id = $1"))
        .bind(sub)
        .fetch_optional(conn)
        .await?;
    Ok(row.and_then(from_row))
}

/// Every plan, newest first (for `admin recurring list`).
///
/// # Errors
/// Storage errors.
pub async fn list_plans(conn: &mut PgConnection) -> Result<Vec<Plan>, RecurringError> {
    let rows: Vec<PlanRow> = sqlx::query_as(select_plan!("true ORDER BY created_at DESC, id DESC"))
        .fetch_all(conn)
        .await?;
    Ok(rows.into_iter().filter_map(from_row).collect())
}

/// `reader`'s plans, newest first.
///
/// # Errors
/// Storage errors.
pub async fn plans_of_reader(
    conn: &mut PgConnection,
    reader: kopilka_domain::id::ReaderId,
) -> Result<Vec<Plan>, RecurringError> {
    let rows: Vec<PlanRow> = sqlx::query_as(select_plan!(
        "contribution_id IN (SELECT id FROM contributions WHERE reader_id = $1)
         ORDER BY created_at DESC, id DESC"
    ))
    .bind(reader.as_uuid())
    .fetch_all(conn)
    .await?;
    Ok(rows.into_iter().filter_map(from_row).collect())
}
