//! `POST /v1/checkout`: start a contribution and get Stripe's hosted page; the return from
//! it (`GET /v1/checkout/return`), which hands the newsroom's page back a clean URL and
//! keeps the outcome in a short-lived cookie that the widget asks about
//! (`GET /v1/checkout/outcome`).

use axum::Json;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use kopilka_contributions::CheckoutInput;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::identity::{ClientIp, MaybeSignedIn};
use crate::limits::Route;
use crate::{ApiJson, AppError, AppState, ErrorBody};

pub(crate) fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(checkout))
        .routes(routes!(checkout_return))
        .routes(routes!(checkout_outcome))
}

/// The cookie that carries a checkout's outcome from the return route to the widget.
pub(crate) const OUTCOME_COOKIE: &str = "__Host-kopilka_checkout";

/// How long the outcome cookie lasts: long enough for the page to load and ask.
const OUTCOME_COOKIE_SECS: i64 = 600;

/// `GET /v1/checkout/return?ref=…`.
#[derive(Debug, serde::Deserialize, utoipa::IntoParams)]
pub struct ReturnQuery {
    /// The signed reference Kopilka gave Stripe as the success or cancel URL.
    #[serde(rename = "ref")]
    reference: String,
}

/// Where Stripe's page sends the reader back (Kopilka's `success_url` and `cancel_url`):
/// keeps the outcome in a short-lived `__Host-kopilka_checkout` cookie (Secure, HttpOnly,
/// SameSite=Lax, 10 minutes) and redirects (303) to the newsroom's page, whose URL then
/// holds no Stripe or contribution id. Only pages on the configured origins are redirected
/// to, and only by a reference Kopilka signed; anything else is 400.
#[utoipa::path(get, path = "/v1/checkout/return", tag = "contributions", params(ReturnQuery),
    responses(
        (status = 303, description = "Back to the newsroom's page, with the outcome cookie"),
        (status = 400, description = "Forged or malformed reference, or a page no longer allowed", body = ErrorBody)
    ))]
async fn checkout_return(
    State(state): State<AppState>,
    axum::extract::Query(query): axum::extract::Query<ReturnQuery>,
) -> Result<axum::response::Response, AppError> {
    use axum::response::IntoResponse as _;
    let back =
        kopilka_contributions::open_return(&state.settings, &state.accounts.keys, &query.reference)
            .ok_or(AppError::BadRequest {
                code: "invalid_return",
                message: "this return link is not valid".into(),
            })?;
    let expires_at = time::OffsetDateTime::now_utc() + time::Duration::seconds(OUTCOME_COOKIE_SECS);
    let value = kopilka_contributions::outcome_cookie(&state.accounts.keys, &back, expires_at);
    tracing::info!(contribution_id = %back.contribution, outcome = back.outcome.as_str(), "back from checkout");
    let mut response = axum::response::Redirect::to(back.to.as_str()).into_response();
    let headers = response.headers_mut();
    headers.insert(
        axum::http::header::SET_COOKIE,
        crate::identity::host_cookie(OUTCOME_COOKIE, &value, expires_at),
    );
    headers.insert(
        axum::http::header::REFERRER_POLICY,
        axum::http::HeaderValue::from_static("no-referrer"),
    );
    headers.insert(
        axum::http::header::CACHE_CONTROL,
        axum::http::HeaderValue::from_static("no-store"),
    );
    Ok(response)
}

/// `{"outcome": "success" | "cancelled" | null}`.
#[derive(Debug, serde::Serialize, serde::Deserialize, utoipa::ToSchema)]
pub struct Outcome {
    /// How the reader's last checkout on this browser ended, if they just came back from it.
    pub outcome: Option<String>,
}

/// What the widget asks after the page loads (`credentials: "include"`): how the checkout
/// this browser just came back from ended, from the outcome cookie; `null` when there is
/// none. Answered once: the cookie is cleared, so a reload does not thank twice.
#[utoipa::path(get, path = "/v1/checkout/outcome", tag = "contributions",
    responses((status = 200, body = Outcome)))]
async fn checkout_outcome(
    State(state): State<AppState>,
    headers: HeaderMap,
) -> axum::response::Response {
    use axum::response::IntoResponse as _;
    let found = crate::identity::cookie(&headers, OUTCOME_COOKIE).and_then(|value| {
        kopilka_contributions::open_outcome_cookie(
            &state.accounts.keys,
            &value,
            time::OffsetDateTime::now_utc(),
        )
    });
    let mut response = ApiJson(Outcome {
        outcome: found.map(|(_, outcome)| outcome.as_str().to_owned()),
    })
    .into_response();
    let headers = response.headers_mut();
    headers.insert(
        axum::http::header::CACHE_CONTROL,
        axum::http::HeaderValue::from_static("private, no-store"),
    );
    if found.is_some() {
        headers.insert(
            axum::http::header::SET_COOKIE,
            axum::http::HeaderValue::from_static(
                "__Host-kopilka_checkout=; Path=/; Secure; HttpOnly; SameSite=Lax; Max-Age=0",
            ),
        );
    }
    response
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
    /// Card rail: prefills Stripe's page. Crypto rail: where to email the receipt (the
    /// only case in which BTCPay is told an address); leave it out to give anonymously.
    #[serde(default)]
    email: Option<String>,
    /// `card` (Stripe Checkout, the default) or `crypto` (a BTCPay Server invoice; one-off
    /// only).
    #[serde(default)]
    rail: Option<String>,
    /// Crypto rail: supporter passes of this many months (one of `passes.months`; the
    /// amount is for all of them).
    #[serde(default)]
    pass_months: Option<u8>,
    /// With `pass_months`: this many passes as codes to give away.
    #[serde(default)]
    pass_codes: Option<u8>,
    /// Where the reader returns; must be on the newsroom's sites.
    #[serde(default)]
    return_url: Option<String>,
    /// The token of a solved challenge (Turnstile or hCaptcha), when the last answer was
    /// 403 `challenge_required`.
    #[serde(default)]
    challenge_token: Option<String>,
}

/// The attribution of a checkout to the experiment variant the reader was last served (the
/// visitor cookie the offer set: the holdback included), counting a click; `None` when the
/// cookie names no experiment that runs now.
fn attribute(
    state: &AppState,
    headers: &HeaderMap,
) -> Option<kopilka_contributions::ExperimentTag> {
    let (experiment_id, slot) = crate::visitor::Visitor::from_request(state, headers)?.served?;
    let running = state.experiments.load();
    let now = time::OffsetDateTime::now_utc();
    let experiment = running
        .iter()
        .find(|e| e.id == experiment_id && e.in_schedule(now))?;
    let assignment = crate::visitor::assignment_of(experiment, slot)?;
    experiment.tally.click(assignment);
    let variant = match assignment {
        kopilka_experiments::Assignment::Holdback => String::new(),
        kopilka_experiments::Assignment::Variant(index) => {
            experiment.spec.variants[index].key.clone()
        }
    };
    Some(kopilka_contributions::ExperimentTag {
        id: experiment.id,
        name: experiment.name.clone(),
        variant,
    })
}

/// The answer: where to send the reader.
#[derive(Debug, serde::Serialize, serde::Deserialize, utoipa::ToSchema)]
pub struct Started {
    /// Kopilka's id for the contribution (a UUID).
    pub contribution_id: String,
    /// The provider's hosted page: Stripe Checkout, or BTCPay's invoice.
    pub checkout_url: String,
    /// Pass codes bought (crypto passes as codes): shown once, in this answer; they work
    /// once the payment settles.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pass_codes: Option<Vec<String>>,
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
        (status = 403, description = "Under attack: a challenge must be solved first (`challenge_required`, `challenge_failed`, with `error.challenge`); or this client or address is blocked for now (`blocked`, Retry-After)", body = ErrorBody),
        (status = 409, description = "Key reused with another body, or still in progress", body = ErrorBody),
        (status = 422, description = "Refused: below minimum, above maximum, unknown currency, bad interval, return URL not allowed, a rail not offered (`rail_not_offered`, `invalid_rail`) or an interval the rail has not (`interval_not_on_rail`)", body = ErrorBody),
        (status = 429, description = "Too many checkouts from this client, for this address, or at all; see Retry-After", body = ErrorBody),
        (status = 502, description = "Stripe refused", body = ErrorBody),
        (status = 503, description = "Stripe unavailable; retry with the same key", body = ErrorBody)
    ))]
async fn checkout(
    State(state): State<AppState>,
    reader: MaybeSignedIn,
    ClientIp(ip): ClientIp,
    headers: HeaderMap,
    ApiJson(body): ApiJson<CheckoutBody>,
) -> Result<(StatusCode, Json<serde_json::Value>), AppError> {
    let typed = body
        .email
        .as_deref()
        .and_then(|raw| kopilka_domain::Email::parse(raw).ok());
    let _admitted = state.limits.admit(Route::Checkout, ip, typed.as_ref())?;
    let key = idempotency_key(&headers)?;
    // The heavy calls are boxed: an unboxed handler future holds their whole state (the
    // Stripe client's among it), and every layer copies the handler's future into a box of
    // its own on every request, refused or not (measured: 13 % of a refused write's CPU).
    let attribution = Box::pin(state.shield.admit(ip, body.challenge_token.as_deref())).await?;
    let experiment = attribute(&state, &headers);
    let input = CheckoutInput {
        interval: body.interval,
        amount_minor: body.amount_minor,
        currency: body.currency,
        email: body.email,
        return_url: body.return_url,
        rail: body.rail,
        pass_months: body.pass_months,
        pass_codes: body.pass_codes,
        experiment,
    };
    let (status, answer) = Box::pin(kopilka_contributions::start_checkout(
        &state.pool,
        kopilka_contributions::Providers {
            stripe: state.stripe.as_ref(),
            btcpay: state.btcpay.as_ref(),
        },
        &state.settings,
        &input,
        key.as_deref(),
        reader.0.map(|r| r.reader_id),
        &attribution,
    ))
    .await?;
    Ok((
        StatusCode::from_u16(status).unwrap_or(StatusCode::CREATED),
        Json(answer),
    ))
}
