//! The inbox: a verified event is stored (unique on its provider and id) and its processing
//! job enqueued in one transaction; only then is the provider (Stripe, BTCPay Server) told
//! 2xx. A duplicate delivery changes nothing.
//! What is stored is an allowlisted projection ([`crate::projection`]), never Stripe's
//! body; a reader is linked (by id) only for a Checkout Session of Kopilka's own.

use kopilka_domain::Provider;
use kopilka_domain::id::ContributionId;
use kopilka_queue::NewJob;
use kopilka_store::PgPool;
use kopilka_stripe::Event;

use crate::{APPLY_EVENT, ReconciliationError};

/// Stores the projection of verified Stripe `event` and enqueues its application, quietly: the
/// caller wakes workers after a new event (`kopilka_queue::Wakeups`), or applies it itself.
/// Returns `true` for a new event, `false` for a duplicate.
///
/// # Errors
/// Storage errors (the caller answers 503 so Stripe retries).
pub async fn receive(
    pool: &PgPool,
    event: &Event,
    counting: Option<&FailureCounting<'_>>,
) -> Result<bool, ReconciliationError> {
    let object: serde_json::Value = serde_json::from_str(event.object.get())
        .map_err(|_| ReconciliationError::Malformed("data.object".to_owned()))?;
    // What the card-testing shield needs is read from Stripe's body here, before the
    // projection drops it (the card's fingerprint is kept only as a keyed HMAC).
    let failed = counting.and_then(|_| failed_attempt(&event.event_type, &object));
    let projection = crate::projection::project(&event.event_type, &object);
    let mut tx = pool.begin().await?;
    let reader = match reader_candidate(&event.event_type, &object) {
        Some((contribution, email)) => {
            // A duplicate must not create a reader (nor lock one); most events name no
            // reader and skip these round trips.
            let known: bool = sqlx::query_scalar(
                "SELECT EXISTS (SELECT 1 FROM provider_events WHERE provider = $1 AND id = $2)",
            )
            .bind(Provider::Stripe.as_str())
            .bind(&event.id)
            .fetch_one(&mut *tx)
            .await?;
            if known {
                return Ok(false);
            }
            // An erased reader's customer or subscription never gets a reader again,
            // whatever address the event carries (issue #17, item 3).
            let (customer, subscription) = crate::privacy::customer_and_subscription(&object);
            let erased = crate::privacy::about_erased_reader(
                &mut tx,
                customer.as_deref(),
                subscription.as_deref(),
            )
            .await?;
            if !erased && kopilka_contributions::facts::awaits_reader(&mut tx, contribution).await?
            {
                Some(kopilka_accounts::reader::find_or_create(&mut tx, &email).await?)
            } else {
                None
            }
        }
        None => None,
    };
    let stored = sqlx::query(
        "INSERT INTO provider_events
             (provider, id, type, created, livemode, api_version, object_id, payload, reader_id, projection_version)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10) ON CONFLICT (provider, id) DO NOTHING",
    )
    .bind(Provider::Stripe.as_str())
    .bind(&event.id)
    .bind(&event.event_type)
    .bind(event.created)
    .bind(event.livemode)
    .bind(&event.api_version)
    .bind(&event.object_id)
    .bind(&projection)
    .bind(reader.map(kopilka_domain::id::ReaderId::as_uuid))
    .bind(crate::projection::VERSION)
    .execute(&mut *tx)
    .await?;
    if stored.rows_affected() == 0 {
        return Ok(false);
    }
    if let (Some(counting), Some(failed)) = (counting, &failed) {
        kopilka_contributions::shield::record_failure(
            &mut tx,
            counting.keys,
            counting.settings,
            failed,
        )
        .await?;
    }
    let job = NewJob::new(APPLY_EVENT, serde_json::json!({"event_id": event.id}))
        .dedup(format!("{APPLY_EVENT}:{}", event.id))
        .quiet();
    kopilka_queue::enqueue(&mut tx, &job).await?;
    tx.commit().await.map_err(kopilka_store::StoreError::from)?;
    tracing::info!(event_id = %event.id, event_type = %event.event_type, "event stored");
    Ok(true)
}

/// Stores the projection of verified BTCPay `delivery` and enqueues its processing job
/// ([`crate::APPLY_BTCPAY_EVENT`]) in one transaction, quietly (the caller wakes workers).
/// The row is keyed (`btcpay`, [`kopilka_btcpay::Delivery::event_id`]): a redelivery, which
/// carries the first delivery's id in `originalDeliveryId`, is a duplicate and changes
/// nothing. `received_at` (unix seconds) stands in for `created` when the delivery has no
/// `timestamp`. Returns `true` for a new event, `false` for a duplicate.
///
/// # Errors
/// Storage errors (the caller answers 503 so BTCPay redelivers).
pub async fn receive_btcpay(
    pool: &PgPool,
    delivery: &kopilka_btcpay::Delivery,
    received_at: i64,
) -> Result<bool, ReconciliationError> {
    let event_id = delivery.event_id();
    let kind = delivery.kind.as_str();
    let projection = crate::projection::project_delivery(delivery);
    let mut tx = pool.begin().await?;
    // BTCPay has no live mode nor API version: both stay NULL.
    let stored = sqlx::query(
        "INSERT INTO provider_events
             (provider, id, type, created, object_id, payload, projection_version)
         VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT (provider, id) DO NOTHING",
    )
    .bind(Provider::Btcpay.as_str())
    .bind(event_id)
    .bind(kind)
    .bind(delivery.timestamp.unwrap_or(received_at))
    .bind(delivery.invoice_id.as_deref())
    .bind(&projection)
    .bind(crate::projection::DELIVERY_VERSION)
    .execute(&mut *tx)
    .await?;
    if stored.rows_affected() == 0 {
        return Ok(false);
    }
    let job = NewJob::new(
        crate::APPLY_BTCPAY_EVENT,
        serde_json::json!({"event_id": event_id}),
    )
    .dedup(format!("{}:{event_id}", crate::APPLY_BTCPAY_EVENT))
    .quiet();
    kopilka_queue::enqueue(&mut tx, &job).await?;
    tx.commit().await.map_err(kopilka_store::StoreError::from)?;
    tracing::info!(
        event_id,
        delivery_id = %delivery.delivery_id,
        event_type = kind,
        "BTCPay delivery stored"
    );
    Ok(true)
}

/// What the card-testing shield counts failed payments with, when an event is received
/// as it happens (a webhook); events fetched late by `reconcile` are not counted.
#[derive(Debug, Clone, Copy)]
pub struct FailureCounting<'a> {
    /// The keys the client, address and card are counted under.
    pub keys: &'a kopilka_accounts::Keys,
    /// The shield's thresholds.
    pub settings: &'a kopilka_config::AbuseSettings,
}

/// The failed payment attempt a `charge.failed` or `payment_intent.payment_failed` reports:
/// one attempt (keyed by its charge) however many of the two events arrive.
fn failed_attempt(
    kind: &str,
    object: &serde_json::Value,
) -> Option<kopilka_contributions::shield::FailedAttempt> {
    let text = |v: &serde_json::Value| v.as_str().filter(|s| !s.is_empty()).map(str::to_owned);
    let (attempt, method) = match kind {
        "charge.failed" => (
            text(&object["id"])?,
            (
                &object["payment_method_details"]["card"]["fingerprint"],
                &object["billing_details"]["email"],
            ),
        ),
        "payment_intent.payment_failed" => {
            let error = &object["last_payment_error"];
            let attempt = text(&error["charge"])
                .or_else(|| text(&object["latest_charge"]))
                .or_else(|| text(&object["id"]))?;
            let method = &error["payment_method"];
            (
                attempt,
                (
                    &method["card"]["fingerprint"],
                    &method["billing_details"]["email"],
                ),
            )
        }
        _ => return None,
    };
    let customer = match &object["customer"] {
        serde_json::Value::String(id) => Some(id.clone()),
        serde_json::Value::Object(expanded) => expanded
            .get("id")
            .and_then(|v| v.as_str())
            .map(str::to_owned),
        _ => None,
    };
    Some(kopilka_contributions::shield::FailedAttempt {
        attempt,
        contribution: object["metadata"]["contribution_id"]
            .as_str()
            .and_then(|id| id.parse().ok()),
        customer,
        card_fingerprint: text(method.0),
        billing_email: text(method.1),
    })
}

/// The contribution and the address a completed Checkout Session names, when its address
/// could name the contribution's reader: only a session that carries Kopilka's
/// contribution id (`client_reference_id`) and a valid address. Whether the contribution
/// exists and still waits for a reader is asked in the transaction.
fn reader_candidate(
    kind: &str,
    object: &serde_json::Value,
) -> Option<(ContributionId, kopilka_domain::Email)> {
    if !matches!(
        kind,
        "checkout.session.completed" | "checkout.session.async_payment_succeeded"
    ) {
        return None;
    }
    let contribution = object["client_reference_id"].as_str()?.parse().ok()?;
    let email = kopilka_domain::Email::parse(crate::pii::checkout_email(object)?).ok()?;
    Some((contribution, email))
}

/// A stored event, as `admin events list` shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredEvent {
    /// The provider that sent it.
    pub provider: Provider,
    /// Its id at the provider (`evt_…` at Stripe): unique only within its provider.
    pub id: String,
    /// Its type.
    pub event_type: String,
    /// `pending`, `processed`, `ignored` or `failed`.
    pub status: String,
    /// The last error, if any.
    pub last_error: Option<String>,
}

/// Stored events of every provider, oldest first, optionally only those with `status`.
///
/// # Errors
/// Storage errors.
pub async fn list(
    pool: &PgPool,
    status: Option<&str>,
) -> Result<Vec<StoredEvent>, ReconciliationError> {
    let rows: Vec<(String, String, String, String, Option<String>)> = sqlx::query_as(
        "SELECT provider, id, type, status, last_error FROM provider_events
         WHERE $1::text IS NULL OR status = $1 ORDER BY created, received_at",
    )
    .bind(status)
    .fetch_all(pool)
    .await?;
    rows.into_iter()
        .map(|(provider, id, event_type, status, last_error)| {
            Ok(StoredEvent {
                provider: provider
                    .parse()
                    .map_err(|_| ReconciliationError::Malformed(format!("provider {provider}")))?,
                id,
                event_type,
                status,
                last_error,
            })
        })
        .collect()
}

/// Marks `provider`'s event `event_id` `failed` with `error`: its job gave up (the dead
/// letter), and `admin events replay --failed` takes it from here.
///
/// # Errors
/// Storage errors.
pub async fn mark_failed(
    pool: &PgPool,
    provider: Provider,
    event_id: &str,
    error: &str,
) -> Result<(), ReconciliationError> {
    sqlx::query("UPDATE provider_events SET status = 'failed', last_error = $3 WHERE provider = $1 AND id = $2 AND status <> 'processed'")
        .bind(provider.as_str())
        .bind(event_id)
        .bind(error)
        .execute(pool)
        .await?;
    Ok(())
}

/// Ids of `provider`'s stored events of type `pattern` (a trailing `*` matches a prefix)
/// created at or after `since`, oldest first.
///
/// # Errors
/// Storage errors.
pub async fn ids_of_type(
    pool: &PgPool,
    provider: Provider,
    pattern: &str,
    since: i64,
) -> Result<Vec<String>, ReconciliationError> {
    let like = match pattern.strip_suffix('*') {
        Some(prefix) => format!(
            "{}%",
            prefix
                .replace('\\', "\\\\")
                .replace('%', "\\%")
                .replace('_', "\\_")
        ),
        None => pattern
            .replace('\\', "\\\\")
            .replace('%', "\\%")
            .replace('_', "\\_"),
    };
    Ok(sqlx::query_scalar("SELECT id FROM provider_events WHERE provider = $1 AND type LIKE $2 AND created >= $3 ORDER BY created, received_at")
        .bind(provider.as_str())
        .bind(like)
        .bind(since)
        .fetch_all(pool)
        .await?)
}
