//! `[passes]`: supporter passes, the crypto rail's months of support paid ahead (issue #20).
//! A pass of N months costs at least N times the currency's monthly minimum
//! (`offer.currencies.<c>.month.minimum_minor`), and its preset is N times the monthly
//! default: the newsroom sets a pass's price where it sets a month's.

use serde::{Deserialize, Serialize};

use crate::ConfigError;

/// How passes are sold and kept.
#[derive(Debug, Clone, Deserialize, Serialize)]
pub struct PassesSettings {
    /// The lengths offered, in months (`KOPILKA__PASSES__MONTHS`, comma-separated).
    #[serde(
        default = "default_months",
        deserialize_with = "crate::list::comma_separated_u8"
    )]
    pub months: Vec<u8>,
    /// The most pass codes one purchase may buy (gifts).
    #[serde(default = "default_max_codes")]
    pub max_codes: u8,
    /// Days a paid code may wait to be redeemed.
    #[serde(default = "default_redeem_days")]
    pub redeem_days: u32,
    /// The price shown first for each length, per currency (minor units, in the order of
    /// `months`), e.g. `usd = [500, 1400, 5000]` for a discount on longer passes. A currency
    /// without one shows its monthly default times the months.
    #[serde(default)]
    pub presets: std::collections::BTreeMap<kopilka_domain::Currency, Vec<i64>>,
    /// Days before a pass ends that its holder is emailed (when they gave an address).
    #[serde(default = "default_ending_notice_days")]
    pub ending_notice_days: u32,
}

fn default_ending_notice_days() -> u32 {
    7
}

fn default_months() -> Vec<u8> {
    vec![1, 3, 12]
}

fn default_max_codes() -> u8 {
    20
}

fn default_redeem_days() -> u32 {
    365
}

impl Default for PassesSettings {
    fn default() -> Self {
        Self {
            months: default_months(),
            max_codes: default_max_codes(),
            redeem_days: default_redeem_days(),
            presets: std::collections::BTreeMap::new(),
            ending_notice_days: default_ending_notice_days(),
        }
    }
}

impl PassesSettings {
    /// The price shown first for a pass of `months` in `currency`: its preset, else
    /// `monthly_default` times the months.
    #[must_use]
    pub fn preset(
        &self,
        currency: kopilka_domain::Currency,
        months: u8,
        monthly_default: i64,
    ) -> i64 {
        self.months
            .iter()
            .position(|m| *m == months)
            .and_then(|at| self.presets.get(&currency)?.get(at).copied())
            .unwrap_or_else(|| monthly_default.saturating_mul(i64::from(months)))
    }

    /// Checks the presets against the offer's monthly bounds (a pass of N months costs
    /// N times them).
    pub(crate) fn validate_presets(&self, offer: &crate::OfferSettings) -> Result<(), ConfigError> {
        for (currency, presets) in &self.presets {
            let Some(terms) = offer.currencies.get(currency) else {
                return Err(ConfigError::Invalid(format!(
                    "passes.presets.{currency}: the currency is not offered"
                )));
            };
            if presets.len() != self.months.len() {
                return Err(ConfigError::Invalid(format!(
                    "passes.presets.{currency}: one price per length in passes.months ({:?})",
                    self.months
                )));
            }
            for (months, preset) in self.months.iter().zip(presets) {
                let times = i64::from(*months);
                let (low, high) = (
                    terms.month.minimum_minor.saturating_mul(times),
                    terms.month.maximum_minor.saturating_mul(times),
                );
                if !(low..=high).contains(preset) {
                    return Err(ConfigError::Invalid(format!(
                        "passes.presets.{currency}: {preset} for {months} months is outside {low}..={high} ({months} × the monthly minimum and maximum)"
                    )));
                }
            }
        }
        Ok(())
    }

    pub(crate) fn validate(&self) -> Result<(), ConfigError> {
        if self.months.is_empty() || self.months.iter().any(|m| !(1..=36).contains(m)) {
            return Err(ConfigError::Invalid(
                "passes.months must list lengths from 1 to 36 months".into(),
            ));
        }
        if self.max_codes == 0 || self.redeem_days == 0 {
            return Err(ConfigError::Invalid(
                "passes.max_codes and passes.redeem_days must be at least 1".into(),
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Deserialize)]
    struct Months {
        #[serde(deserialize_with = "crate::list::comma_separated_u8")]
        months: Vec<u8>,
    }

    #[test]
    fn months_come_from_an_array_or_a_comma_separated_variable() {
        let array: Months = serde_json::from_str(r#"{"months": [1, 3, 12]}"#).unwrap();
        assert_eq!(array.months, [1, 3, 12]);
        let text: Months = serde_json::from_str(r#"{"months": "1, 6"}"#).unwrap();
        assert_eq!(text.months, [1, 6]);
        let one: Months = serde_json::from_str(r#"{"months": 12}"#).unwrap();
        assert_eq!(one.months, [12]);
        assert!(serde_json::from_str::<Months>(r#"{"months": "1,x"}"#).is_err());
        let mut settings = PassesSettings::default();
        assert!(settings.validate().is_ok());
        settings.months = vec![0];
        assert!(settings.validate().is_err());
    }

    #[test]
    fn presets_are_one_per_length_within_the_monthly_bounds() {
        let config = std::path::PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../../config"));
        let settings =
            crate::Settings::for_env(crate::Environment::Test, &config).expect("the test settings");
        let usd: kopilka_domain::Currency = "usd".parse().unwrap();
        let mut passes = PassesSettings::default();
        assert_eq!(passes.preset(usd, 12, 500), 6_000);
        passes.presets.insert(usd, vec![500, 1_400, 5_000]);
        assert!(passes.validate_presets(&settings.offer).is_ok());
        assert_eq!(passes.preset(usd, 12, 500), 5_000);
        assert_eq!(
            passes.preset(usd, 6, 500),
            3_000,
            "a length without a preset"
        );
        passes.presets.insert(usd, vec![500, 1_400]);
        assert!(
            passes.validate_presets(&settings.offer).is_err(),
            "one per length"
        );
        passes.presets.insert(usd, vec![100, 1_400, 5_000]);
        assert!(
            passes.validate_presets(&settings.offer).is_err(),
            "below a month's minimum"
        );
    }
}
