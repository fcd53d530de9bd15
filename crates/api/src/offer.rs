//! `GET /v1/offer`: the per-view decision and what the banner offers this reader — show or
//! hide (a verified supporter token, the closed/snoozed state, the meter), presets, limits
//! and the default per interval in their currency, and the funding goal's progress. It
//! serves every page view, so it reads settings, the goal cache, the keyring and signed
//! cookies only: no SQL per request.

use axum::Json;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, HeaderValue, header};
use axum::response::{IntoResponse, Response};
use kopilka_config::IntervalOffer;
use kopilka_domain::{Currency, Interval};
use kopilka_recurring::GoalFigure;
use serde::{Deserialize, Serialize};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::identity::cookie;
use crate::{AppError, AppState, ErrorBody};

pub(crate) fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(offer))
}

/// Which offer: an explicit currency, or the reader's country.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
pub struct OfferQuery {
    /// ISO 4217 code; must be offered.
    currency: Option<String>,
    /// ISO 3166 alpha-2 code, e.g. `DE`; picks the country's currency.
    country: Option<String>,
    /// `1` on an article view: counts it on the meter (the cookie comes back updated).
    #[serde(default)]
    view: Option<u8>,
}

/// The anonymous reader's meter cookie (signed, host-only).
const METER_COOKIE: &str = "__Host-kopilka_meter";

/// Presets and limits for one interval (minor units).
#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct IntervalTerms {
    /// The buttons.
    pub presets: Vec<i64>,
    /// Selected first.
    pub default_minor: i64,
    /// The least accepted.
    pub minimum_minor: i64,
    /// The most accepted.
    pub maximum_minor: i64,
}

/// The three intervals.
#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Intervals {
    /// One-off.
    pub once: IntervalTerms,
    /// Monthly.
    pub month: IntervalTerms,
    /// Annual.
    pub year: IntervalTerms,
}

/// The goal's progress; `current_minor` is null until first computed.
#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Goal {
    /// The goal's currency.
    pub currency: String,
    /// The monthly target.
    pub target_minor: i64,
    /// Monthly recurring revenue plus this month's one-off gifts.
    pub current_minor: Option<i64>,
    /// When `current_minor` was computed (unix seconds).
    pub computed_at: Option<i64>,
}

/// The meter after this view.
#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct MeterState {
    /// Free articles left this calendar month.
    pub remaining: u32,
    /// `none`, `dismissible` or `hard`.
    pub wall: String,
}

/// The banner's offer.
#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Offer {
    /// Whether to show the banner.
    pub show: bool,
    /// Why: `supporter`, `hidden` (closed or snoozed) or `ask`.
    pub reason: String,
    /// Whether a valid supporter token says so.
    pub supporter: bool,
    /// The meter (null for supporters).
    pub meter: Option<MeterState>,
    /// The currency of every amount here but the goal's.
    pub currency: String,
    /// The interval selected first.
    pub default_interval: String,
    /// Presets and limits per interval.
    pub intervals: Intervals,
    /// The funding goal.
    pub goal: Goal,
}

fn terms(offer: &IntervalOffer) -> IntervalTerms {
    IntervalTerms {
        presets: offer.presets.clone(),
        default_minor: offer.default_minor,
        minimum_minor: offer.minimum_minor,
        maximum_minor: offer.maximum_minor,
    }
}

/// The banner's offer for this reader.
#[utoipa::path(get, path = "/v1/offer", tag = "contributions", params(OfferQuery),
    responses(
        (status = 200, description = "The offer", body = Offer),
        (status = 422, description = "Unknown or not offered currency", body = ErrorBody)
    ))]
async fn offer(
    State(state): State<AppState>,
    Query(query): Query<OfferQuery>,
    headers: HeaderMap,
) -> Result<Response, AppError> {
    let settings = &state.settings.offer;
    let requested = match query.currency.as_deref() {
        None | Some("") => None,
        Some(code) => Some(
            code.parse::<Currency>()
                .map_err(|e| AppError::Unprocessable {
                    code: "unknown_currency",
                    message: e.to_string(),
                })?,
        ),
    };
    let currency = settings
        .currency_for(requested, query.country.as_deref())
        .ok_or_else(|| AppError::Unprocessable {
            code: "currency_not_offered",
            message: "that currency is not offered".into(),
        })?;
    let Some(terms_for) = settings.currencies.get(&currency) else {
        return Err(AppError::Unprocessable {
            code: "currency_not_offered",
            message: "that currency is not offered".into(),
        });
    };
    let figure: Option<GoalFigure> = state.goal.get();
    let now = time::OffsetDateTime::now_utc();
    let (decision, meter_cookie) = decide_view(&state, &headers, query.view == Some(1), now);
    let body = Offer {
        show: decision.show,
        reason: decision.reason.to_owned(),
        supporter: decision.supporter,
        meter: decision.meter.map(|m| MeterState {
            remaining: m.remaining,
            wall: m.wall.to_owned(),
        }),
        currency: currency.stripe_code(),
        default_interval: terms_for.default_interval.as_str().to_owned(),
        intervals: Intervals {
            once: terms(terms_for.interval(Interval::Once)),
            month: terms(terms_for.interval(Interval::Month)),
            year: terms(terms_for.interval(Interval::Year)),
        },
        goal: Goal {
            currency: settings.goal.currency.stripe_code(),
            target_minor: settings.goal.target_minor,
            current_minor: figure.as_ref().map(|f| f.current_minor),
            computed_at: figure.as_ref().map(|f| f.computed_at),
        },
    };
    let mut response = Json(body).into_response();
    if let Some(value) = meter_cookie {
        response.headers_mut().insert(header::SET_COOKIE, value);
    }
    Ok(response)
}

/// The supporter token a request carries: a JWT as the bearer token, else the cookie.
fn supporter_token(headers: &HeaderMap) -> Option<String> {
    headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .filter(|t| t.matches('.').count() == 2)
        .map(str::to_owned)
        .or_else(|| cookie(headers, crate::entitlements::SUPPORTER_COOKIE))
}

/// Decides this view from the request's token and cookies alone; returns the meter's new
/// cookie when the view was counted.
fn decide_view(
    state: &AppState,
    headers: &HeaderMap,
    count: bool,
    now: time::OffsetDateTime,
) -> (kopilka_paywall::Decision, Option<HeaderValue>) {
    let unix = now.unix_timestamp();
    // An invalid or expired token counts as no token: the page still gets its answer.
    let claims =
        supporter_token(headers).and_then(|token| state.keyring.get().verify(&token, unix).ok());
    let hide_until = match &claims {
        Some(claims) => claims.hide_asks_until,
        None => cookie(headers, crate::reminders::BANNER_COOKIE)
            .and_then(|c| {
                kopilka_accounts::banner::BannerState::from_cookie(&state.accounts.keys, &c)
            })
            .and_then(|banner| banner.hides_asks_until())
            .map(time::OffsetDateTime::unix_timestamp),
    };
    let paywall = &state.settings.paywall;
    let secret = paywall.secret_bytes();
    let mode = match paywall.meter_mode.as_str() {
        "metered" => kopilka_paywall::MeterMode::Metered,
        "hard" => kopilka_paywall::MeterMode::Hard,
        _ => kopilka_paywall::MeterMode::AsksOnly,
    };
    let meter =
        kopilka_paywall::Meter::from_cookie(secret, cookie(headers, METER_COOKIE).as_deref(), now);
    let (counted, view) = if count {
        meter.view(mode, paywall.free_articles)
    } else {
        (meter, meter.peek(mode, paywall.free_articles))
    };
    let decision = kopilka_paywall::decide(claims.as_ref(), hide_until, Some(view), unix);
    let set_cookie = (count && !decision.supporter).then(|| {
        crate::identity::host_cookie(
            METER_COOKIE,
            &counted.to_cookie(secret),
            now + time::Duration::days(40),
        )
    });
    (decision, set_cookie)
}
