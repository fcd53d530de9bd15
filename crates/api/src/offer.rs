//! `GET /v1/offer`: what the banner offers this reader — presets, limits and the default per
//! interval in their currency, and the funding goal's progress. It serves every page view,
//! so it reads settings and the goal cache only: no SQL per request.

use axum::Json;
use axum::extract::{Query, State};
use kopilka_config::IntervalOffer;
use kopilka_domain::{Currency, Interval};
use kopilka_recurring::GoalFigure;
use serde::{Deserialize, Serialize};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

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
}

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

/// The banner's offer.
#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Offer {
    /// Whether to show the banner (the paywall issue refines this per reader).
    pub show: bool,
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
) -> Result<Json<Offer>, AppError> {
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
    Ok(Json(Offer {
        show: true,
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
    }))
}
