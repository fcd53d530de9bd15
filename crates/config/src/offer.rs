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

/// Stripe's minimum charge in `currency`, in minor units, from the one table of Stripe's
/// currency rules ([`kopilka_domain::ChargeRules`]); `None` when Stripe does not charge in it.
#[must_use]
pub fn stripe_minimum(currency: Currency) -> Option<i64> {
    currency.charge_rules().map(|rules| rules.minimum_minor)
}

/// Stripe's largest amount for a single charge in most currencies (eight digits); the
/// per-currency figure is [`kopilka_domain::ChargeRules::maximum_minor`].
pub const STRIPE_MAXIMUM: i64 = 99_999_999;

fn check_interval(
    currency: Currency,
    interval: Interval,
    offer: &IntervalOffer,
) -> Result<(), ConfigError> {
    let at = format!("offer.currencies.{currency}.{interval}");
    let invalid = |message: String| Err(ConfigError::Invalid(format!("{at}: {message}")));
    let Some(rules) = currency.charge_rules() else {
        return invalid(format!(
            "Stripe does not accept payments in {currency} (not in Kopilka's table of Stripe's currency rules)"
        ));
    };
    if offer.minimum_minor < rules.minimum_minor {
        return invalid(format!(
            "minimum_minor {} is below Stripe's minimum charge of {} for {currency}",
            offer.minimum_minor, rules.minimum_minor
        ));
    }
    if offer.maximum_minor < offer.minimum_minor || offer.maximum_minor > rules.maximum_minor {
        return invalid(format!(
            "maximum_minor must be between minimum_minor and Stripe's maximum of {}",
            rules.maximum_minor
        ));
    }
    let amounts = [
        ("minimum_minor", offer.minimum_minor),
        ("default_minor", offer.default_minor),
    ]
    .into_iter()
    .chain(offer.presets.iter().map(|p| ("preset", *p)));
    for (what, amount) in amounts {
        if amount % rules.multiple_of != 0 {
            return invalid(format!(
                "{what} {amount} is not a multiple of {} minor units, which Stripe requires for {currency}",
                rules.multiple_of
            ));
        }
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

#[cfg(test)]
mod tests {
    use super::*;

    fn cur(code: &str) -> Currency {
        code.parse().unwrap()
    }

    fn offer(presets: &[i64], minimum: i64, maximum: i64) -> IntervalOffer {
        IntervalOffer {
            presets: presets.to_vec(),
            default_minor: presets[0],
            minimum_minor: minimum,
            maximum_minor: maximum,
        }
    }

    fn refusal(currency: &str, offer: &IntervalOffer) -> String {
        check_interval(cur(currency), Interval::Month, offer)
            .unwrap_err()
            .to_string()
    }

    #[test]
    fn an_offer_stripe_would_refuse_is_a_start_up_error() {
        // A minimum below Stripe's: KRW, VND, CLP, MYR and the three-decimal ones were wrong.
        for (currency, minimum) in [
            ("krw", 500),
            ("vnd", 5_000),
            ("clp", 100),
            ("myr", 50),
            ("kwd", 100),
        ] {
            let err = refusal(currency, &offer(&[minimum * 10], minimum, minimum * 100));
            assert!(err.contains("below Stripe's minimum"), "{currency}: {err}");
        }
        // ISK and UGX in whole units (multiples of 100), three-decimal amounts ending in 0.
        let err = refusal("isk", &offer(&[50_000, 50_050], 10_000, 1_000_000));
        assert!(
            err.contains("preset 50050 is not a multiple of 100"),
            "{err}"
        );
        let err = refusal("bhd", &offer(&[5_000], 205, 100_000));
        assert!(
            err.contains("minimum_minor 205 is not a multiple of 10"),
            "{err}"
        );
        let err = refusal("usd", &offer(&[500], 100, 100_000_000));
        assert!(err.contains("Stripe's maximum of 99999999"), "{err}");
        // A currency Stripe does not charge in.
        let err = refusal("rub", &offer(&[50_000], 10_000, 1_000_000));
        assert!(
            err.contains("Stripe does not accept payments in rub"),
            "{err}"
        );
    }

    #[test]
    fn offers_within_stripe_rules_pass() {
        for (currency, presets, minimum) in [
            ("isk", vec![50_000, 100_000], 10_000),
            ("ugx", vec![500_000], 200_000),
            ("kwd", vec![1_000, 2_500], 200),
            ("krw", vec![5_000], 1_000),
            ("huf", vec![100_050], 17_500),
        ] {
            let checked = check_interval(
                cur(currency),
                Interval::Year,
                &offer(&presets, minimum, 10_000_000),
            );
            assert!(checked.is_ok(), "{currency}: {checked:?}");
        }
    }
}
