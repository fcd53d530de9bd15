//! Stored events and erasure: an erased reader's events lose their reader (the projection
//! stays, for replay and reports), and the reader's Stripe customers and subscriptions are
//! remembered by their plain Stripe ids (the ledger keeps those anyway; alone they name
//! nobody) so that a later event about one of them never links or creates a reader again.

use kopilka_domain::id::ReaderId;
use serde::Serialize;
use serde_json::Value;
use sqlx::PgConnection;
use time::OffsetDateTime;

use crate::ReconciliationError;

/// A stored event linked to a reader, as their export shows it.
#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
pub struct EventExport {
    /// Stripe's event id.
    pub id: String,
    /// Its type.
    #[serde(rename = "type")]
    #[sqlx(rename = "type")]
    pub event_type: String,
    /// When Stripe created it (Unix seconds).
    pub created: i64,
    /// What Kopilka stored of it (the projection).
    pub payload: Value,
}

/// The stored events linked to `reader`, oldest first: those stored with their id and
/// those about one of their Stripe objects (`stripe_ids`: their checkout sessions, payment
/// intents, subscriptions and customers), whether as the event's object or named by it.
///
/// # Errors
/// Storage errors.
pub async fn events_of(
    conn: &mut PgConnection,
    reader: ReaderId,
    stripe_ids: &[String],
) -> Result<Vec<EventExport>, ReconciliationError> {
    Ok(sqlx::query_as(
        "SELECT id, type, created, payload FROM provider_events
         WHERE reader_id = $1
            OR provider = 'stripe'
               AND (object_id = ANY($2)
                    OR payload->'object'->>'customer' = ANY($2)
                    OR payload->'object'->>'subscription' = ANY($2)
                    OR payload->'object'->>'payment_intent' = ANY($2)
                    OR payload->'object'->'parent'->'subscription_details'->>'subscription' = ANY($2))
         ORDER BY created, id",
    )
    .bind(reader.as_uuid())
    .bind(stripe_ids)
    .fetch_all(conn)
    .await?)
}

/// Unlinks `reader`'s stored events (in the caller's transaction) and remembers their Stripe
/// customers and subscriptions as erased. Returns how many events were unlinked.
///
/// # Errors
/// Storage errors.
pub async fn forget_reader(
    conn: &mut PgConnection,
    reader: ReaderId,
    stripe_ids: &[String],
    now: OffsetDateTime,
) -> Result<u64, ReconciliationError> {
    let unlinked = sqlx::query(
        "UPDATE provider_events SET reader_id = NULL, payload = payload - 'reader_id'
         WHERE reader_id = $1",
    )
    .bind(reader.as_uuid())
    .execute(&mut *conn)
    .await?
    .rows_affected();
    sqlx::query(
        "INSERT INTO erased_stripe_objects (stripe_id, erased_at)
         SELECT id, $2 FROM unnest($1::text[]) AS id
         WHERE id ~ '^(cus|sub)_[A-Za-z0-9]+$'
         ON CONFLICT (stripe_id) DO NOTHING",
    )
    .bind(stripe_ids)
    .bind(now)
    .execute(conn)
    .await?;
    Ok(unlinked)
}

/// Whether an event about `customer` or `subscription` concerns an erased reader: then it
/// links and creates no reader (its money still reaches the ledger).
///
/// # Errors
/// Storage errors.
pub async fn about_erased_reader(
    conn: &mut PgConnection,
    customer: Option<&str>,
    subscription: Option<&str>,
) -> Result<bool, ReconciliationError> {
    let ids: Vec<&str> = [customer, subscription].into_iter().flatten().collect();
    if ids.is_empty() {
        return Ok(false);
    }
    Ok(sqlx::query_scalar(
        "SELECT EXISTS (SELECT 1 FROM erased_stripe_objects WHERE stripe_id = ANY($1))",
    )
    .bind(&ids)
    .fetch_one(conn)
    .await?)
}

/// The customer and subscription an event's object (`data.object`) belongs to (Stripe
/// names them in several places: the object itself, `customer`, `subscription`, or an
/// invoice's `parent.subscription_details.subscription`).
#[must_use]
pub fn customer_and_subscription(object: &Value) -> (Option<String>, Option<String>) {
    let kind = object["object"].as_str();
    let own_id = object["id"].as_str();
    let id_of = |field: &Value| {
        field
            .as_str()
            .or_else(|| field["id"].as_str())
            .map(str::to_owned)
    };
    let customer = if kind == Some("customer") {
        own_id.map(str::to_owned)
    } else {
        id_of(&object["customer"])
    };
    let subscription = if kind == Some("subscription") {
        own_id.map(str::to_owned)
    } else {
        id_of(&object["subscription"])
            .or_else(|| id_of(&object["parent"]["subscription_details"]["subscription"]))
    };
    (customer, subscription)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn an_invoice_names_its_customer_and_subscription() {
        let event = json!({"object": "invoice", "id": "in_1",
            "customer": "cus_1", "parent": {"subscription_details": {"subscription": "sub_1"}}});
        assert_eq!(
            customer_and_subscription(&event),
            (Some("cus_1".into()), Some("sub_1".into()))
        );
        let event = json!({"object": "subscription", "id": "sub_2",
            "customer": {"id": "cus_2", "object": "customer"}});
        assert_eq!(
            customer_and_subscription(&event),
            (Some("cus_2".into()), Some("sub_2".into()))
        );
        let event = json!({"object": "customer", "id": "cus_3"});
        assert_eq!(
            customer_and_subscription(&event),
            (Some("cus_3".into()), None)
        );
    }
}
