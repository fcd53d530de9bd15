//! `POST /v1/webhooks/stripe` and `POST /v1/webhooks/btcpay`: verify, store in the inbox
//! with its processing job (one transaction), then 2xx — never before the event is durable.
//! Duplicates (and BTCPay's redeliveries) answer 2xx and change nothing; a bad signature is
//! 400 and nothing is stored; Postgres down is 503, so the provider retries. A provider whose
//! webhook secret is not configured gets 503 `webhook_not_configured` (the route exists, so
//! the provider keeps retrying until the operator sets the secret, and nothing is lost).

use axum::Json;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::HeaderMap;
use kopilka_stripe::SignatureError;
use kopilka_stripe::webhook::WebhookError;
use serde::{Deserialize, Serialize};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::{AppError, AppState, ErrorBody};

pub(crate) fn routes(webhook_limit: usize) -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(stripe_webhook))
        .routes(routes!(btcpay_webhook))
        .layer(DefaultBodyLimit::max(webhook_limit))
}

/// The acknowledgement.
#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Received {
    /// Always true: the event is stored.
    pub received: bool,
    /// Whether it had been received before (nothing changed).
    pub duplicate: bool,
}

fn refused(err: &WebhookError) -> AppError {
    let code = match err {
        WebhookError::Signature(SignatureError::MissingHeader) => "signature_missing",
        WebhookError::Signature(SignatureError::Malformed(_)) => "signature_malformed",
        WebhookError::Signature(SignatureError::NoMatch) => "signature_mismatch",
        WebhookError::Signature(SignatureError::Stale { .. }) => "signature_stale",
        WebhookError::Signature(SignatureError::NoSecret) => {
            return not_configured("KOPILKA__STRIPE__WEBHOOK_SECRET");
        }
        WebhookError::Envelope(_) => "invalid_event",
    };
    AppError::BadRequest {
        code,
        message: err.to_string(),
    }
}

/// Receives a Stripe event.
#[utoipa::path(post, path = "/v1/webhooks/stripe", tag = "webhooks",
    params(("Stripe-Signature" = String, Header, description = "t=…,v1=…")),
    request_body(content = String, content_type = "application/json", description = "A Stripe event, as Stripe signed it"),
    responses(
        (status = 200, description = "Stored (or already stored)", body = Received),
        (status = 400, description = "Missing, malformed, mismatched or stale signature; nothing stored", body = ErrorBody),
        (status = 503, description = "Not stored; Stripe will retry", body = ErrorBody)
    ))]
async fn stripe_webhook(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Json<Received>, AppError> {
    // A header that is there but not visible ASCII is malformed, not missing.
    let signature = headers
        .get("stripe-signature")
        .map(|v| v.to_str().unwrap_or_default());
    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    let event = state
        .webhooks
        .verify_event(signature, &body, now)
        .map_err(|err| {
            // Counted, not logged at warn: a flood of forged deliveries must not become a
            // flood of log lines (the request line says 400 already).
            refusal_seen("stripe");
            tracing::debug!(error = %err, "webhook refused");
            refused(&err)
        })?;
    let counting = kopilka_reconciliation::inbox::FailureCounting {
        keys: &state.accounts.keys,
        settings: &state.settings.abuse,
    };
    let new = kopilka_reconciliation::inbox::receive(&state.pool, &event, Some(&counting))
        .await
        .map_err(not_stored)?;
    if new {
        // Stored quietly (a NOTIFY per event would serialize the commits): wake them now.
        state.wakeups.wake();
    }
    Ok(Json(Received {
        received: true,
        duplicate: !new,
    }))
}

/// Counts a delivery refused for its signature or shape (`kopilka_webhooks_refused_total`,
/// by provider): a secret that does not match shows as a rising count on `/metrics`.
fn refusal_seen(provider: &'static str) {
    metrics::counter!("kopilka_webhooks_refused_total", "provider" => provider).increment(1);
}

/// Why an event was not stored: Postgres unreachable is 503 (the provider retries); any
/// other failure is a 500.
fn not_stored(err: kopilka_reconciliation::ReconciliationError) -> AppError {
    match err {
        kopilka_reconciliation::ReconciliationError::Store(store)
        | kopilka_reconciliation::ReconciliationError::Contribution(
            kopilka_contributions::ContributionError::Store(store),
        ) => AppError::from(store),
        kopilka_reconciliation::ReconciliationError::Queue(kopilka_queue_error) => {
            AppError::internal(kopilka_queue_error)
        }
        other => AppError::internal(other),
    }
}

/// A provider's webhooks cannot be verified or attributed without `missing`: 503, so the
/// provider redelivers once the operator has configured it.
fn not_configured(missing: &str) -> AppError {
    tracing::error!("a webhook arrived but {missing} is not set");
    AppError::Upstream {
        code: "webhook_not_configured",
        message: "webhooks are not configured".into(),
        retry: true,
    }
}

fn btcpay_refused(err: &kopilka_btcpay::WebhookError) -> AppError {
    use kopilka_btcpay::{SignatureError, WebhookError};
    let code = match err {
        WebhookError::Signature(SignatureError::NoSecret) => {
            return not_configured("KOPILKA__BTCPAY__WEBHOOK_SECRET");
        }
        WebhookError::Signature(_) => "invalid_signature",
        WebhookError::Envelope(_) => "invalid_delivery",
    };
    AppError::BadRequest {
        code,
        message: err.to_string(),
    }
}

/// Receives a BTCPay Server store webhook delivery. Deliveries are stored under their
/// `originalDeliveryId` (their `deliveryId` on a first delivery), so a redelivery is a
/// duplicate. A delivery about another store than `KOPILKA__BTCPAY__STORE_ID` is refused
/// (400 `unknown_store`, nothing stored): BTCPay then shows it failed in the store's webhook
/// deliveries, which is where an operator who pointed another store here looks. Without
/// `KOPILKA__BTCPAY__WEBHOOK_SECRET` or `KOPILKA__BTCPAY__STORE_ID`: 503
/// `webhook_not_configured`, as the Stripe route without its secret.
#[utoipa::path(post, path = "/v1/webhooks/btcpay", tag = "webhooks",
    params(("BTCPay-Sig" = String, Header, description = "sha256=<hex HMAC-SHA256 of the raw body, keyed with the store webhook's secret>")),
    request_body(content = String, content_type = "application/json", description = "A BTCPay Server store webhook delivery, as BTCPay signed it"),
    responses(
        (status = 200, description = "Stored (or already stored: a duplicate or a redelivery)", body = Received),
        (status = 400, description = "`invalid_signature` (missing, malformed or matching no configured secret), `invalid_delivery` (not a delivery) or `unknown_store` (another store's); nothing stored", body = ErrorBody),
        (status = 503, description = "Not stored (`webhook_not_configured`, or Postgres down); BTCPay redelivers", body = ErrorBody)
    ))]
async fn btcpay_webhook(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Json<Received>, AppError> {
    let Some(store_id) = state.settings.btcpay.store_id.as_deref() else {
        return Err(not_configured("KOPILKA__BTCPAY__STORE_ID"));
    };
    // A header that is there but not visible ASCII is malformed, not missing.
    let signature = headers
        .get("btcpay-sig")
        .map(|v| v.to_str().unwrap_or_default());
    let delivery = state
        .btcpay_webhooks
        .verify_delivery(signature, &body)
        .map_err(|err| {
            refusal_seen("btcpay");
            tracing::debug!(error = %err, "BTCPay webhook refused");
            btcpay_refused(&err)
        })?;
    // A delivery without a store id (none of BTCPay's store webhooks) names no other store.
    if delivery
        .store_id
        .as_deref()
        .is_some_and(|other| other != store_id)
    {
        tracing::warn!(
            delivery_id = %delivery.delivery_id,
            "BTCPay webhook refused: another store's delivery"
        );
        return Err(AppError::BadRequest {
            code: "unknown_store",
            message: "this delivery is about another store than KOPILKA__BTCPAY__STORE_ID".into(),
        });
    }
    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    let new = kopilka_reconciliation::inbox::receive_btcpay(&state.pool, &delivery, now)
        .await
        .map_err(not_stored)?;
    if new {
        // Stored quietly, as Stripe's events are: wake the workers now.
        state.wakeups.wake();
    }
    Ok(Json(Received {
        received: true,
        duplicate: !new,
    }))
}
