//! A reader's giving history: each contribution with the ledger rows that carry its money
//! (what a receipt shows: amount, currency, date).

use kopilka_domain::id::{ContributionId, ReaderId};
use serde::Serialize;
use sqlx::PgConnection;
use time::OffsetDateTime;

use crate::ContributionError;

/// One contribution in a reader's history.
#[derive(Debug, Clone, Serialize)]
pub struct ContributionRecord {
    /// Its id.
    pub id: ContributionId,
    /// `once`, `month` or `year`.
    pub interval: String,
    /// The amount chosen, in minor units.
    pub amount_minor: i64,
    /// Its currency (lowercase ISO 4217).
    pub currency: String,
    /// `paid`, `failed`, `refunded` or `disputed`.
    pub status: String,
    /// When it was started.
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
    /// When it was first paid.
    #[serde(with = "time::serde::rfc3339::option")]
    pub paid_at: Option<OffsetDateTime>,
    /// Its money movements (payments — each renewal one — refunds, disputes), oldest first:
    /// `{kind, amount_minor, currency, occurred_at, provider, provider_id, stripe_id}`
    /// (`stripe_id`: the provider's id when the provider is Stripe, else null).
    pub movements: serde_json::Value,
    /// Stripe's customer, if any (for erasure; not shown to readers).
    #[serde(skip)]
    pub stripe_customer_id: Option<String>,
}

type Row = (
    uuid::Uuid,
    String,
    i64,
    String,
    String,
    OffsetDateTime,
    Option<OffsetDateTime>,
    serde_json::Value,
    Option<String>,
);

/// `reader`'s contributions that reached Stripe's outcome (not those still pending or
/// abandoned at checkout), newest first.
///
/// # Errors
/// Storage errors.
pub async fn of_reader(
    conn: &mut PgConnection,
    reader: ReaderId,
) -> Result<Vec<ContributionRecord>, ContributionError> {
    let rows: Vec<Row> = sqlx::query_as(
        "SELECT c.id, c.interval, c.amount_minor, c.currency, c.status, c.created_at, c.paid_at,
                coalesce(jsonb_agg(jsonb_build_object(
                    'kind', l.kind, 'amount_minor', l.amount_minor, 'currency', l.currency,
                    'occurred_at', l.occurred_at, 'provider', l.provider, 'provider_id', l.provider_id,
                    'stripe_id', CASE WHEN l.provider = 'stripe' THEN l.provider_id END)
                    ORDER BY l.occurred_at) FILTER (WHERE l.id IS NOT NULL), '[]'::jsonb),
                c.stripe_customer_id
         FROM contributions c LEFT JOIN ledger_entries l ON l.contribution_id = c.id
         WHERE c.reader_id = $1 AND c.status NOT IN ('pending', 'abandoned')
         GROUP BY c.id ORDER BY c.created_at DESC",
    )
    .bind(reader.as_uuid())
    .fetch_all(conn)
    .await?;
    Ok(rows
        .into_iter()
        .map(
            |(
                id,
                interval,
                amount_minor,
                currency,
                status,
                created_at,
                paid_at,
                movements,
                customer,
            )| {
                ContributionRecord {
                    id: ContributionId::from_uuid(id),
                    interval,
                    amount_minor,
                    currency,
                    status,
                    created_at,
                    paid_at,
                    movements,
                    stripe_customer_id: customer,
                }
            },
        )
        .collect())
}

/// The Stripe customers of `reader`'s contributions (whatever their status).
///
/// # Errors
/// Storage errors.
pub async fn stripe_customers_of(
    conn: &mut PgConnection,
    reader: ReaderId,
) -> Result<Vec<String>, ContributionError> {
    Ok(sqlx::query_scalar(
        "SELECT DISTINCT stripe_customer_id FROM contributions
         WHERE reader_id = $1 AND stripe_customer_id IS NOT NULL ORDER BY 1",
    )
    .bind(reader.as_uuid())
    .fetch_all(conn)
    .await?)
}
