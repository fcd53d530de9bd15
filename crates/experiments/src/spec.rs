//! An experiment's spec, as an operator writes it (JSON), and its validation against the
//! offer: every refusal has a code and says what to fix, and nothing invalid is stored.
//!
//! ```json
//! {"name": "amounts-q1", "method": "bandit", "priority": 10, "holdback_percent": 5,
//!  "starts_at": "2027-01-01T00:00:00Z", "ends_at": null,
//!  "targeting": {"currencies": ["usd"], "countries": ["US"], "path": "/politics/*",
//!                "locales": ["en"]},
//!  "variants": [
//!    {"key": "control", "control": true},
//!    {"key": "higher", "presets": {"usd": {"once": [1500, 3000, 6000]}},
//!     "default_minor": {"usd": {"once": 3000}}, "default_interval": "once",
//!     "intervals": ["once", "month"], "goal_line": false,
//!     "copy": {"en": {"headline": "Keep us independent", "body": "…"}}}]}
//! ```

use std::collections::{BTreeMap, BTreeSet};

use kopilka_config::OfferSettings;
use kopilka_domain::{Currency, Interval, Locale};
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

/// Why a spec (or a change) is refused: a stable code and a sentence.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    /// e.g. `presets_out_of_order`.
    pub code: &'static str,
    /// What to fix.
    pub message: String,
}

fn refuse<T>(code: &'static str, message: impl Into<String>) -> Result<T, Refusal> {
    Err(Refusal {
        code,
        message: message.into(),
    })
}

/// How traffic is shared between variants.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Method {
    /// Fixed shares by weight (A/B/n).
    #[default]
    Split,
    /// Thompson sampling on the first-year value of a view, after a minimum sample.
    Bandit,
}

impl Method {
    /// `split` or `bandit`.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Split => "split",
            Self::Bandit => "bandit",
        }
    }
}

/// Who sees the experiment (every listed dimension must match; an empty list matches all).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Targeting {
    /// Offer currencies.
    #[serde(default)]
    pub currencies: Vec<Currency>,
    /// ISO 3166 alpha-2 countries (the offer's `country`).
    #[serde(default)]
    pub countries: Vec<String>,
    /// A page-path pattern the widget passes (`*` matches any run of characters).
    #[serde(default)]
    pub path: Option<String>,
    /// Reader languages.
    #[serde(default)]
    pub locales: Vec<Locale>,
}

/// Per-interval values.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PerInterval<T> {
    /// One-off.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub once: Option<T>,
    /// Monthly.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub month: Option<T>,
    /// Annual.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub year: Option<T>,
}

impl<T> PerInterval<T> {
    /// The value for `interval`, if set.
    #[must_use]
    pub fn get(&self, interval: Interval) -> Option<&T> {
        match interval {
            Interval::Once => self.once.as_ref(),
            Interval::Month => self.month.as_ref(),
            Interval::Year => self.year.as_ref(),
        }
    }

    fn each(&self) -> impl Iterator<Item = (Interval, &T)> {
        [
            (Interval::Once, self.once.as_ref()),
            (Interval::Month, self.month.as_ref()),
            (Interval::Year, self.year.as_ref()),
        ]
        .into_iter()
        .filter_map(|(interval, value)| Some((interval, value?)))
    }
}

/// A variant's words for one language.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Copy {
    /// The banner's heading.
    pub headline: String,
    /// The lead under it.
    pub body: String,
}

/// Copy per language.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CopyByLocale {
    /// English.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub en: Option<Copy>,
    /// Russian.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ru: Option<Copy>,
}

impl CopyByLocale {
    /// The copy for `locale`, if written.
    #[must_use]
    pub fn get(&self, locale: Locale) -> Option<&Copy> {
        match locale {
            Locale::En => self.en.as_ref(),
            Locale::Ru => self.ru.as_ref(),
        }
    }

    fn is_empty(&self) -> bool {
        self.en.is_none() && self.ru.is_none()
    }
}

/// One variant: what it changes in the ask (nothing, for the control).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VariantSpec {
    /// Its name within the experiment.
    pub key: String,
    /// The variant the others are compared with (exactly one).
    #[serde(default)]
    pub control: bool,
    /// Its share under `split`, relative to the others' (1 unless said).
    #[serde(default = "one")]
    pub weight: u32,
    /// Presets per currency and interval (minor units).
    #[serde(default)]
    pub presets: BTreeMap<Currency, PerInterval<Vec<i64>>>,
    /// The amount selected first, per currency and interval.
    #[serde(default)]
    pub default_minor: BTreeMap<Currency, PerInterval<i64>>,
    /// The interval selected first.
    #[serde(default)]
    pub default_interval: Option<Interval>,
    /// Which intervals show (all unless said).
    #[serde(default)]
    pub intervals: Option<Vec<Interval>>,
    /// Headline and body per language.
    #[serde(default)]
    pub copy: CopyByLocale,
    /// Whether the goal line shows.
    #[serde(default)]
    pub goal_line: Option<bool>,
}

fn one() -> u32 {
    1
}

/// An experiment as written.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExperimentSpec {
    /// Lowercase letters, digits, `-` and `_`; unique.
    pub name: String,
    /// `split` (default) or `bandit`.
    #[serde(default)]
    pub method: Method,
    /// When several running experiments target a view, the highest priority serves it.
    #[serde(default)]
    pub priority: i32,
    /// Not before this instant.
    #[serde(default, with = "time::serde::rfc3339::option")]
    pub starts_at: Option<OffsetDateTime>,
    /// Not after this instant.
    #[serde(default, with = "time::serde::rfc3339::option")]
    pub ends_at: Option<OffsetDateTime>,
    /// The share of targeted views (0–50 %) that see no ask at all, never exploited away.
    #[serde(default)]
    pub holdback_percent: u8,
    /// Who sees it.
    #[serde(default)]
    pub targeting: Targeting,
    /// Two or more; exactly one control.
    pub variants: Vec<VariantSpec>,
}

/// The most variants one experiment may have.
pub const MAX_VARIANTS: usize = 10;
const MAX_HEADLINE: usize = 120;
const MAX_BODY: usize = 600;

fn valid_key(text: &str, max: usize) -> bool {
    let mut bytes = text.bytes();
    matches!(bytes.next(), Some(b'a'..=b'z' | b'0'..=b'9'))
        && text.len() <= max
        && bytes.all(|b| matches!(b, b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_'))
}

impl ExperimentSpec {
    /// Checks the spec against the offer (see the module docs for the codes).
    ///
    /// # Errors
    /// The first [`Refusal`] found.
    pub fn validate(&self, offer: &OfferSettings) -> Result<(), Refusal> {
        if !valid_key(&self.name, 63) {
            return refuse(
                "invalid_name",
                "name: 1 to 63 lowercase letters, digits, '-' or '_', starting with a letter or digit",
            );
        }
        if let (Some(start), Some(end)) = (self.starts_at, self.ends_at)
            && end <= start
        {
            return refuse("invalid_schedule", "ends_at must be after starts_at");
        }
        if self.holdback_percent > 50 {
            return refuse("invalid_holdback", "holdback_percent is 0 to 50");
        }
        self.validate_targeting(offer)?;
        if !(2..=MAX_VARIANTS).contains(&self.variants.len()) {
            return refuse(
                "invalid_variants",
                format!("an experiment has 2 to {MAX_VARIANTS} variants"),
            );
        }
        let mut keys = BTreeSet::new();
        for variant in &self.variants {
            if !valid_key(&variant.key, 40) {
                return refuse(
                    "invalid_variant_key",
                    format!(
                        "variant key {:?}: 1 to 40 lowercase letters, digits, '-' or '_'",
                        variant.key
                    ),
                );
            }
            if !keys.insert(variant.key.as_str()) {
                return refuse(
                    "duplicate_variant",
                    format!("two variants are called {:?}", variant.key),
                );
            }
            if variant.weight == 0 || variant.weight > 1_000 {
                return refuse(
                    "invalid_weight",
                    format!("variant {:?}: weight is 1 to 1000", variant.key),
                );
            }
            self.validate_variant(variant, offer)?;
        }
        if self.variants.iter().filter(|v| v.control).count() != 1 {
            return refuse("control_required", "exactly one variant is the control");
        }
        Ok(())
    }

    /// The index of the control among the variants (the first one, should none be marked).
    #[must_use]
    pub fn control_index(&self) -> usize {
        self.variants.iter().position(|v| v.control).unwrap_or(0)
    }

    /// The currencies the experiment serves: its targeted ones, else every offered one.
    fn currencies<'a>(&'a self, offer: &'a OfferSettings) -> Vec<Currency> {
        if self.targeting.currencies.is_empty() {
            offer.currencies.keys().copied().collect()
        } else {
            self.targeting.currencies.clone()
        }
    }

    /// The languages the experiment serves: its targeted ones, else both.
    fn locales(&self) -> Vec<Locale> {
        if self.targeting.locales.is_empty() {
            vec![Locale::En, Locale::Ru]
        } else {
            self.targeting.locales.clone()
        }
    }

    fn validate_targeting(&self, offer: &OfferSettings) -> Result<(), Refusal> {
        for currency in &self.targeting.currencies {
            if !offer.currencies.contains_key(currency) {
                return refuse(
                    "currency_not_offered",
                    format!("targeting: {currency} is not an offered currency"),
                );
            }
        }
        for country in &self.targeting.countries {
            if country.len() != 2 || !country.bytes().all(|b| b.is_ascii_uppercase()) {
                return refuse(
                    "invalid_country",
                    format!(
                        "targeting: {country:?} is not an ISO 3166 alpha-2 code (two capital letters)"
                    ),
                );
            }
        }
        if let Some(path) = &self.targeting.path
            && (!path.starts_with('/') || path.len() > 200 || path.chars().any(char::is_control))
        {
            return refuse(
                "invalid_path",
                "targeting.path starts with '/', has at most 200 characters and no control characters",
            );
        }
        Ok(())
    }

    fn validate_variant(
        &self,
        variant: &VariantSpec,
        offer: &OfferSettings,
    ) -> Result<(), Refusal> {
        let key = &variant.key;
        let served = self.currencies(offer);
        for (currency, by_interval) in &variant.presets {
            let Some(terms) = offer.currencies.get(currency) else {
                return refuse(
                    "currency_not_offered",
                    format!("variant {key:?}: presets in {currency}, which is not offered"),
                );
            };
            if !served.contains(currency) {
                return refuse(
                    "currency_not_targeted",
                    format!(
                        "variant {key:?}: presets in {currency}, which the experiment does not target"
                    ),
                );
            }
            for (interval, presets) in by_interval.each() {
                let limits = terms.interval(interval);
                if presets.is_empty() || presets.len() > 6 {
                    return refuse(
                        "invalid_presets",
                        format!("variant {key:?}: 1 to 6 {interval} presets in {currency}"),
                    );
                }
                if presets.windows(2).any(|pair| pair[0] >= pair[1]) {
                    return refuse(
                        "presets_out_of_order",
                        format!(
                            "variant {key:?}: {currency} {interval} presets must rise: {presets:?}"
                        ),
                    );
                }
                for &amount in presets {
                    in_bounds(key, currency, interval, amount, limits)?;
                }
            }
        }
        for (currency, by_interval) in &variant.default_minor {
            let Some(terms) = offer.currencies.get(currency) else {
                return refuse(
                    "currency_not_offered",
                    format!("variant {key:?}: a default in {currency}, which is not offered"),
                );
            };
            for (interval, &amount) in by_interval.each() {
                in_bounds(key, currency, interval, amount, terms.interval(interval))?;
            }
        }
        if let Some(intervals) = &variant.intervals {
            let distinct: BTreeSet<&str> = intervals.iter().map(|i| i.as_str()).collect();
            if intervals.is_empty() || distinct.len() != intervals.len() {
                return refuse(
                    "invalid_intervals",
                    format!(
                        "variant {key:?}: intervals lists each of once, month, year at most once, and at least one"
                    ),
                );
            }
            if let Some(default) = variant.default_interval
                && !intervals.contains(&default)
            {
                return refuse(
                    "invalid_intervals",
                    format!(
                        "variant {key:?}: the default interval {default} is not among its intervals"
                    ),
                );
            }
        }
        if !variant.copy.is_empty() {
            for locale in self.locales() {
                let Some(copy) = variant.copy.get(locale) else {
                    return refuse(
                        "copy_missing",
                        format!(
                            "variant {key:?}: no copy in {} (the experiment serves it)",
                            locale.as_str()
                        ),
                    );
                };
                let headline = copy.headline.trim();
                let body = copy.body.trim();
                if headline.is_empty()
                    || body.is_empty()
                    || headline.chars().count() > MAX_HEADLINE
                    || body.chars().count() > MAX_BODY
                    || copy
                        .headline
                        .chars()
                        .chain(copy.body.chars())
                        .any(char::is_control)
                {
                    return refuse(
                        "invalid_copy",
                        format!(
                            "variant {key:?}, {}: a headline of 1 to {MAX_HEADLINE} and a body of 1 to {MAX_BODY} characters, no control characters",
                            locale.as_str()
                        ),
                    );
                }
            }
        }
        Ok(())
    }
}

fn in_bounds(
    key: &str,
    currency: &Currency,
    interval: Interval,
    amount: i64,
    limits: &kopilka_config::IntervalOffer,
) -> Result<(), Refusal> {
    if amount < limits.minimum_minor {
        return refuse(
            "amount_below_minimum",
            format!(
                "variant {key:?}: {amount} is below the {currency} {interval} minimum {}",
                limits.minimum_minor
            ),
        );
    }
    if amount > limits.maximum_minor {
        return refuse(
            "amount_above_maximum",
            format!(
                "variant {key:?}: {amount} is above the {currency} {interval} maximum {}",
                limits.maximum_minor
            ),
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn offer() -> OfferSettings {
        let config = std::path::PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../../config"));
        kopilka_config::Settings::for_env(kopilka_config::Environment::Test, &config)
            .expect("the test settings")
            .offer
    }

    fn spec(variants: &serde_json::Value) -> ExperimentSpec {
        serde_json::from_value(serde_json::json!({
            "name": "amounts-q1", "targeting": {"currencies": ["usd"], "locales": ["en"]},
            "variants": variants
        }))
        .unwrap()
    }

    fn code(variants: &serde_json::Value) -> &'static str {
        spec(variants).validate(&offer()).unwrap_err().code
    }

    #[test]
    fn a_valid_spec_passes_and_each_mistake_has_its_code() {
        let good = serde_json::json!([
            {"key": "control", "control": true},
            {"key": "higher", "presets": {"usd": {"once": [1500, 3000, 6000]}},
             "default_minor": {"usd": {"once": 3000}}, "default_interval": "once",
             "intervals": ["once", "month"], "goal_line": false,
             "copy": {"en": {"headline": "Keep us independent", "body": "Every gift counts."}}}
        ]);
        spec(&good).validate(&offer()).expect("a valid spec");

        assert_eq!(
            code(&serde_json::json!([{"key": "only", "control": true}])),
            "invalid_variants"
        );
        assert_eq!(
            code(&serde_json::json!([{"key": "a", "control": true}, {"key": "a"}])),
            "duplicate_variant"
        );
        assert_eq!(
            code(&serde_json::json!([{"key": "a"}, {"key": "b"}])),
            "control_required"
        );
        assert_eq!(
            code(&serde_json::json!([{"key": "a", "control": true},
                                     {"key": "b", "presets": {"usd": {"once": [3000, 1500]}}}])),
            "presets_out_of_order"
        );
        assert_eq!(
            code(&serde_json::json!([{"key": "a", "control": true},
                                     {"key": "b", "presets": {"usd": {"month": [50, 500]}}}])),
            "amount_below_minimum"
        );
        assert_eq!(
            code(&serde_json::json!([{"key": "a", "control": true},
                                     {"key": "b", "presets": {"chf": {"once": [500]}}}])),
            "currency_not_offered"
        );
        // Not a currency at all: the spec does not even read.
        assert!(
            serde_json::from_value::<ExperimentSpec>(serde_json::json!({
                "name": "x", "variants": [{"key": "a", "control": true},
                                          {"key": "b", "presets": {"xyz": {"once": [500]}}}]
            }))
            .is_err()
        );
        assert_eq!(
            code(&serde_json::json!([{"key": "a", "control": true},
                                     {"key": "b", "presets": {"eur": {"once": [500]}}}])),
            "currency_not_targeted"
        );
        assert_eq!(
            code(&serde_json::json!([{"key": "a", "control": true},
                                     {"key": "b", "copy": {"ru": {"headline": "Поддержите", "body": "Спасибо"}}}])),
            "copy_missing"
        );
        assert_eq!(
            code(&serde_json::json!([{"key": "a", "control": true},
                                     {"key": "b", "intervals": ["month"], "default_interval": "once"}])),
            "invalid_intervals"
        );
        assert_eq!(
            code(&serde_json::json!([{"key": "A", "control": true}, {"key": "b"}])),
            "invalid_variant_key"
        );
    }

    #[test]
    fn the_spec_itself_is_checked() {
        let mut bad = spec(&serde_json::json!([{"key": "a", "control": true}, {"key": "b"}]));
        bad.holdback_percent = 60;
        assert_eq!(bad.validate(&offer()).unwrap_err().code, "invalid_holdback");
        bad.holdback_percent = 5;
        bad.name = "Amounts Q1".into();
        assert_eq!(bad.validate(&offer()).unwrap_err().code, "invalid_name");
        bad.name = "amounts".into();
        bad.targeting.countries = vec!["Russia".into()];
        assert_eq!(bad.validate(&offer()).unwrap_err().code, "invalid_country");
        bad.targeting.countries = vec!["RU".into()];
        bad.starts_at = Some(time::macros::datetime!(2027-02-01 0:00 UTC));
        bad.ends_at = Some(time::macros::datetime!(2027-01-01 0:00 UTC));
        assert_eq!(bad.validate(&offer()).unwrap_err().code, "invalid_schedule");
        // Unknown fields are refused when read, not ignored.
        assert!(
            serde_json::from_value::<ExperimentSpec>(serde_json::json!({
                "name": "x", "variants": [], "holdback": 5
            }))
            .is_err()
        );
    }
}
