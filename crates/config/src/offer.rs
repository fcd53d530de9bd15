//! The offer a banner makes, per currency: presets, defaults, minimums and maximums per
//! interval; the country → currency map; the monthly funding goal and the exchange rates
//! that may count other currencies toward it.

use std::collections::BTreeMap;

use kopilka_domain::{Currency, Interval, Rate};
use serde::{Deserialize, Serialize};

use crate::ConfigError;

/// `[offer]`.
#[derive(Debug, Clone, Deserialize, Serialize)]
pub struct OfferSettings {
    /// The currency when neither the request nor the reader's country picks one.
    pub default_currency: Currency,
    /// Each offered currency's presets and limits.
    pub currencies: BTreeMap<Currency, CurrencyOffer>,
    /// ISO 3166 alpha-2 country → the currency offered there.
    #[serde(default)]
    pub countries: BTreeMap<String, Currency>,
    /// The monthly funding goal.
    pub goal: GoalSettings,
    /// Major units of the goal's currency per major unit of each other offered currency.
    /// Every offered currency needs one: nothing is converted silently.
    #[serde(default)]
    pub rates: BTreeMap<Currency, Rate>,
    /// A one-off gift makes its giver a supporter for this many days.
    pub supporter_days: u32,
    /// Origins a checkout's `return_url` may point at (the newsroom's sites).
    #[serde(default, deserialize_with = "crate::list::comma_separated")]
    pub return_origins: Vec<String>,
}

/// One currency's offer.
#[derive(Debug, Clone, Deserialize, Serialize)]
pub struct CurrencyOffer {
    /// The interval selected first.
    pub default_interval: Interval,
    /// One-off gifts.
    pub once: IntervalOffer,
    /// Monthly plans.
    pub month: IntervalOffer,
    /// Annual plans.
    pub year: IntervalOffer,
}

/// Presets and limits for one interval, in minor units.
#[derive(Debug, Clone, Deserialize, Serialize)]
pub struct IntervalOffer {
    /// The buttons.
    pub presets: Vec<i64>,
    /// The amount selected first.
    pub default_minor: i64,
    /// The least accepted.
    pub minimum_minor: i64,
    /// The most accepted.
    pub maximum_minor: i64,
}

/// `[offer.goal]`: "this costs us $10,000 a month".
#[derive(Debug, Clone, Deserialize, Serialize)]
pub struct GoalSettings {
    /// The goal's currency.
    pub currency: Currency,
    /// The monthly target.
    pub target_minor: i64,
    /// How often the figure is recomputed (it also refreshes when a payment lands).
    pub refresh_secs: u64,
    /// The public figure is rounded down to a multiple of this (minor units), so no single
    /// gift shows as a step (`KOPILKA__OFFER__GOAL__ROUND_MINOR`). 0: exact.
    #[serde(default)]
    pub round_minor: i64,
    /// The public figure moves at most once per window of this many seconds, aligned to
    /// the Unix epoch (86400: midnight UTC): it is the figure as of the window's start, so
    /// each day's gifts appear together, the next day (`KOPILKA__OFFER__GOAL__PUBLISH_LAG_SECS`).
    /// 0: live.
    #[serde(default)]
    pub publish_lag_secs: u64,
}

impl CurrencyOffer {
    /// The offer for `interval`.
    #[must_use]
    pub fn interval(&self, interval: Interval) -> &IntervalOffer {
        match interval {
            Interval::Once => &self.once,
            Interval::Month => &self.month,
            Interval::Year => &self.year,
        }
    }
}

impl OfferSettings {
    /// The currency for a request: `currency` if offered, else the `country`'s, else the
    /// default. `None` when `currency` is given but not offered.
    #[must_use]
    pub fn currency_for(
        &self,
        currency: Option<Currency>,
        country: Option<&str>,
    ) -> Option<Currency> {
        match currency {
            Some(c) => self.currencies.contains_key(&c).then_some(c),
            None => Some(
                country
                    .and_then(|c| self.countries.get(&c.to_ascii_uppercase()))
                    .copied()
                    .unwrap_or(self.default_currency),
            ),
        }
    }

    pub(crate) fn validate(&self) -> Result<(), ConfigError> {
        let invalid = |message: String| Err(ConfigError::Invalid(message));
        if !self.currencies.contains_key(&self.default_currency) {
            return invalid(format!(
                "offer.default_currency {} is not in offer.currencies",
                self.default_currency
            ));
        }
        for (currency, offer) in &self.currencies {
            for interval in Interval::ALL {
                check_interval(*currency, interval, offer.interval(interval))?;
            }
            if *currency != self.goal.currency && !self.rates.contains_key(currency) {
                return invalid(format!(
                    "offer.rates.{currency} is missing: gifts in {currency} cannot count toward the {} goal without a rate",
                    self.goal.currency
                ));
            }
        }
        for (country, currency) in &self.countries {
            if country.len() != 2 || !country.bytes().all(|b| b.is_ascii_uppercase()) {
                return invalid(format!(
                    "offer.countries: {country:?} is not an ISO 3166 alpha-2 code such as \"US\""
                ));
            }
            if !self.currencies.contains_key(currency) {
                return invalid(format!(
                    "offer.countries.{country} = {currency}, which is not in offer.currencies"
                ));
            }
        }
        if self.goal.target_minor <= 0 {
            return invalid("offer.goal.target_minor must be positive".into());
        }
        if self.goal.refresh_secs == 0 {
            return invalid("offer.goal.refresh_secs must be at least 1".into());
        }
        if self.goal.round_minor < 0 {
            return invalid("offer.goal.round_minor must be 0 (exact) or positive".into());
        }
        if self.goal.publish_lag_secs > 31 * 86_400 {
            return invalid("offer.goal.publish_lag_secs must be at most 31 days".into());
        }
        if self.supporter_days == 0 {
            return invalid("offer.supporter_days must be at least 1".into());
        }
        Ok(())
    }
}

/// Stripe's minimum charge per currency, in minor units (about $0.50); unknown ones are
/// held to 50 minor units, which Stripe refuses more often than not below.
#[must_use]
pub fn stripe_minimum(currency: Currency) -> i64 {
    match currency.iso_code() {
        "GBP" => 30,
        "BGN" => 100,
        "PLN" | "RON" | "AED" => 200,
        "NOK" | "SEK" | "DKK" => 300,
        "HKD" => 400,
        "MXN" | "THB" => 1000,
        "CZK" => 1500,
        "HUF" => 17_500,
        // USD, EUR, CHF, CAD, AUD, NZD, SGD, JPY and the rest: about $0.50.
        _ => 50,
    }
}

/// Stripe's largest amount for a single charge (eight digits).
pub const STRIPE_MAXIMUM: i64 = 99_999_999;

fn check_interval(
    currency: Currency,
    interval: Interval,
    offer: &IntervalOffer,
) -> Result<(), ConfigError> {
    let at = format!("offer.currencies.{currency}.{interval}");
    let invalid = |message: String| Err(ConfigError::Invalid(format!("{at}: {message}")));
    let floor = stripe_minimum(currency);
    if offer.minimum_minor < floor {
        return invalid(format!(
            "minimum_minor {} is below Stripe's minimum charge of {floor} for {currency}",
            offer.minimum_minor
        ));
    }
    if offer.maximum_minor < offer.minimum_minor || offer.maximum_minor > STRIPE_MAXIMUM {
        return invalid(format!(
            "maximum_minor must be between minimum_minor and {STRIPE_MAXIMUM}"
        ));
    }
    if offer.presets.is_empty() {
        return invalid("presets must not be empty".into());
    }
    let in_range = |amount: i64| (offer.minimum_minor..=offer.maximum_minor).contains(&amount);
    if let Some(outside) = offer.presets.iter().find(|p| !in_range(**p)) {
        return invalid(format!(
            "preset {outside} is outside minimum_minor..=maximum_minor"
        ));
    }
    if !in_range(offer.default_minor) {
        return invalid(format!(
            "default_minor {} is outside minimum_minor..=maximum_minor",
            offer.default_minor
        ));
    }
    Ok(())
}
