//! The inbox: a verified event is stored (unique on its id) and its processing job enqueued
//! in one transaction; only then is Stripe told 2xx. A duplicate delivery changes nothing.

use kopilka_queue::NewJob;
use kopilka_store::PgPool;
use kopilka_stripe::Event;

use crate::{APPLY_EVENT, ReconciliationError};

/// Stores `event` (its verified raw `body`) and enqueues its application. Returns `true`
/// for a new event, `false` for a duplicate.
///
/// # Errors
/// Storage errors (the caller answers 503 so Stripe retries).
pub async fn receive(
    pool: &PgPool,
    event: &Event,
    body: &[u8],
) -> Result<bool, ReconciliationError> {
    let payload: serde_json::Value =
        serde_json::from_slice(body).map_err(|e| ReconciliationError::Malformed(e.to_string()))?;
    let mut tx = pool.begin().await?;
    let stored = sqlx::query(
        "INSERT INTO stripe_events (id, type, created, livemode, api_version, object_id, payload)
         VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT (id) DO NOTHING",
    )
    .bind(&event.id)
    .bind(&event.event_type)
    .bind(event.created)
    .bind(event.livemode)
    .bind(&event.api_version)
    .bind(&event.object_id)
    .bind(&payload)
    .execute(&mut *tx)
    .await?;
    if stored.rows_affected() == 0 {
        return Ok(false);
    }
    let job = NewJob::new(APPLY_EVENT, serde_json::json!({"event_id": event.id}))
        .dedup(format!("{APPLY_EVENT}:{}", event.id));
    kopilka_queue::enqueue(&mut tx, &job).await?;
    tx.commit().await.map_err(kopilka_store::StoreError::from)?;
    tracing::info!(event_id = %event.id, event_type = %event.event_type, "event stored");
    Ok(true)
}
