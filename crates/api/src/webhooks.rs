//! `POST /v1/webhooks/stripe`: verify, store in the inbox with its processing job (one
//! transaction), then 2xx — never before the event is durable. Duplicates answer 2xx and
//! change nothing; a bad signature is 400 and nothing is stored; Postgres down is 503, so
//! Stripe retries.

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
            tracing::error!(
                "a Stripe webhook arrived but KOPILKA__STRIPE__WEBHOOK_SECRET is not set"
            );
            return AppError::Upstream {
                code: "webhook_not_configured",
                message: "webhooks are not configured".into(),
                retry: true,
            };
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
            tracing::warn!(error = %err, "webhook refused");
            refused(&err)
        })?;
    let counting = kopilka_reconciliation::inbox::FailureCounting {
        keys: &state.accounts.keys,
        settings: &state.settings.abuse,
    };
    let new = kopilka_reconciliation::inbox::receive(&state.pool, &event, Some(&counting))
        .await
        .map_err(|err| match err {
            kopilka_reconciliation::ReconciliationError::Store(store)
            | kopilka_reconciliation::ReconciliationError::Contribution(
                kopilka_contributions::ContributionError::Store(store),
            ) => AppError::from(store),
            kopilka_reconciliation::ReconciliationError::Queue(kopilka_queue_error) => {
                AppError::internal(kopilka_queue_error)
            }
            other => AppError::internal(other),
        })?;
    if new {
        // Stored quietly (a NOTIFY per event would serialize the commits): wake them now.
        state.wakeups.wake();
    }
    Ok(Json(Received {
        received: true,
        duplicate: !new,
    }))
}
