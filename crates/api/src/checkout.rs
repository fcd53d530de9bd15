//! `POST /v1/checkout`: start a contribution and get Stripe's hosted page.

use axum::Json;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use kopilka_contributions::CheckoutInput;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::identity::MaybeSignedIn;
use crate::{ApiJson, AppError, AppState, ErrorBody};

pub(crate) fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(checkout))
}

/// The request body.
#[derive(Debug, serde::Deserialize, utoipa::ToSchema)]
pub struct CheckoutBody {
    /// `once`, `month` or `year`.
    interval: String,
    /// Minor units (cents; yen have none).
    amount_minor: i64,
    /// ISO 4217, e.g. `usd`.
    currency: String,
    /// Prefills Stripe's page.
    #[serde(default)]
    email: Option<String>,
    /// Where the reader returns; must be on the newsroom's sites.
    #[serde(default)]
    return_url: Option<String>,
}

/// The answer: where to send the reader.
#[derive(Debug, serde::Serialize, serde::Deserialize, utoipa::ToSchema)]
pub struct Started {
    /// Kopilka's id for the contribution (a UUID).
    pub contribution_id: String,
    /// Stripe's hosted checkout page.
    pub checkout_url: String,
}

/// The `Idempotency-Key` header, if any: 1 to 255 visible ASCII characters.
fn idempotency_key(headers: &HeaderMap) -> Result<Option<String>, AppError> {
    let Some(value) = headers.get("idempotency-key") else {
        return Ok(None);
    };
    let key = value
        .to_str()
        .ok()
        .filter(|k| (1..=255).contains(&k.len()) && k.bytes().all(|b| b.is_ascii_graphic()));
    key.map(|k| Some(k.to_owned()))
        .ok_or_else(|| AppError::BadRequest {
            code: "invalid_idempotency_key",
            message: "Idempotency-Key must be 1 to 255 visible ASCII characters".into(),
        })
}

/// Starts a contribution: records it, creates Stripe's Checkout Session, answers where to send
/// the reader. Send an `Idempotency-Key` to make retries safe.
#[utoipa::path(post, path = "/v1/checkout", tag = "contributions", request_body = CheckoutBody,
    params(("Idempotency-Key" = Option<String>, Header, description = "Makes retries safe: the same key and body answer the same")),
    responses(
        (status = 201, description = "Started", body = Started),
        (status = 409, description = "Key reused with another body, or still in progress", body = ErrorBody),
        (status = 422, description = "Refused: below minimum, above maximum, unknown currency, bad interval, return URL not allowed", body = ErrorBody),
        (status = 502, description = "Stripe refused", body = ErrorBody),
        (status = 503, description = "Stripe unavailable; retry with the same key", body = ErrorBody)
    ))]
async fn checkout(
    State(state): State<AppState>,
    reader: MaybeSignedIn,
    headers: HeaderMap,
    ApiJson(body): ApiJson<CheckoutBody>,
) -> Result<(StatusCode, Json<serde_json::Value>), AppError> {
    let key = idempotency_key(&headers)?;
    let input = CheckoutInput {
        interval: body.interval,
        amount_minor: body.amount_minor,
        currency: body.currency,
        email: body.email,
        return_url: body.return_url,
    };
    let (status, answer) = kopilka_contributions::start_checkout(
        &state.pool,
        state.stripe.as_ref(),
        &state.settings,
        &input,
        key.as_deref(),
        reader.0.map(|r| r.reader_id),
    )
    .await?;
    Ok((
        StatusCode::from_u16(status).unwrap_or(StatusCode::CREATED),
        Json(answer),
    ))
}
