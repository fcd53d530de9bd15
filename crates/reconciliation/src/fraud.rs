//! Early fraud warnings (`radar.early_fraud_warning.*`): a card network's early signal that
//! a payment may be fraudulent, often before a dispute. The events are stored (as
//! projections: ids, `fraud_type`, `actionable`) and listed by `admin report
//! fraud-warnings`. With `stripe.refund_on_early_fraud_warning` (default off) an actionable
//! warning about one of Kopilka's payments queues [`REFUND_JOB`]: the worker refunds what
//! is left of the payment (a refund costs no dispute fee; the dispute would take the money
//! anyway). Applying the event never calls Stripe itself.

use kopilka_contributions::facts::Applied;
use kopilka_store::PgPool;
use serde_json::Value;

use crate::ReconciliationError;

/// The job kind that refunds a payment after an actionable early fraud warning (payload
/// `payment_intent`, `warning_id`); the worker runs it only when
/// `stripe.refund_on_early_fraud_warning` is on.
pub const REFUND_JOB: &str = "refund.early_fraud_warning";

/// One early fraud warning, as `admin report fraud-warnings` lists it (its newest state).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct FraudWarning {
    /// `issfr_…`.
    pub id: String,
    /// When Stripe created it (unix seconds).
    pub created: i64,
    /// Stripe's `fraud_type` (e.g. `made_with_stolen_card`).
    pub fraud_type: Option<String>,
    /// Whether a refund or dispute can still act on it.
    pub actionable: bool,
    /// The warned charge.
    pub charge: Option<String>,
    /// Its payment intent.
    pub payment_intent: Option<String>,
    /// The contribution it belongs to, when the payment is in the ledger.
    pub contribution_id: Option<uuid::Uuid>,
    /// What is left of the payment in the ledger (after refunds and disputes), when known.
    pub remaining_minor: Option<i64>,
}

/// A stored warning event: with `refund` (the setting) on, an actionable warning about a
/// payment in the ledger queues the refund job (once per warning); off, nothing is queued.
/// (The job checks the setting again: one queued before it was turned off refunds nothing.)
pub(crate) async fn warning_applied(
    conn: &mut sqlx::PgConnection,
    object: &Value,
    refund: bool,
) -> Result<Applied, ReconciliationError> {
    if !refund {
        return Ok(Applied::Unchanged);
    }
    let (Some(warning), Some(pi)) = (object["id"].as_str(), object["payment_intent"].as_str())
    else {
        return Ok(Applied::Unchanged);
    };
    if object["actionable"].as_bool() != Some(true) {
        return Ok(Applied::Unchanged);
    }
    let ours: bool = sqlx::query_scalar(
        "SELECT EXISTS (SELECT 1 FROM ledger_entries
                        WHERE provider = 'stripe' AND provider_id = kopilka_payment_key($1) AND kind = 'payment')",
    )
    .bind(pi)
    .fetch_one(&mut *conn)
    .await?;
    if !ours {
        return Ok(Applied::Unchanged);
    }
    let job = kopilka_queue::NewJob::new(
        REFUND_JOB,
        serde_json::json!({"payment_intent": pi, "warning_id": warning}),
    )
    .dedup(format!("{REFUND_JOB}:{warning}"));
    let queued = kopilka_queue::enqueue(conn, &job).await?.is_some();
    Ok(Applied::from_changed(queued))
}

/// Every early fraud warning received, newest first, each in its newest stored state.
///
/// # Errors
/// Storage errors.
pub async fn warnings(pool: &PgPool) -> Result<Vec<FraudWarning>, ReconciliationError> {
    let rows: Vec<(String, i64, Value)> = sqlx::query_as(
        "SELECT DISTINCT ON (object_id) object_id, created, payload FROM provider_events
         WHERE provider = 'stripe' AND type LIKE 'radar.early\\_fraud\\_warning.%' AND object_id IS NOT NULL
         ORDER BY object_id, created DESC, received_at DESC",
    )
    .fetch_all(pool)
    .await?;
    let mut conn = pool
        .acquire()
        .await
        .map_err(kopilka_store::StoreError::from)?;
    let mut out = Vec::with_capacity(rows.len());
    for (id, _, payload) in rows {
        let object = &payload["object"];
        let payment_intent = object["payment_intent"].as_str().map(str::to_owned);
        let (contribution_id, remaining_minor) = match &payment_intent {
            Some(pi) => {
                let row: Option<(Option<uuid::Uuid>, Option<i64>)> = sqlx::query_as(
                    "SELECT (SELECT contribution_id FROM ledger_entries
                             WHERE provider = 'stripe' AND provider_id = kopilka_payment_key($1) AND kind = 'payment'),
                            (SELECT sum(amount_minor)::bigint FROM ledger_entries
                             WHERE payment_intent_id IN ($1, kopilka_payment_key($1))
                               AND kind <> 'fee')",
                )
                .bind(pi)
                .fetch_optional(&mut *conn)
                .await?;
                row.unwrap_or((None, None))
            }
            None => (None, None),
        };
        out.push(FraudWarning {
            id,
            created: object["created"].as_i64().unwrap_or(0),
            fraud_type: object["fraud_type"].as_str().map(str::to_owned),
            actionable: object["actionable"].as_bool().unwrap_or(false),
            charge: object["charge"].as_str().map(str::to_owned),
            payment_intent,
            contribution_id,
            remaining_minor,
        });
    }
    out.sort_by(|a, b| b.created.cmp(&a.created).then_with(|| a.id.cmp(&b.id)));
    Ok(out)
}
