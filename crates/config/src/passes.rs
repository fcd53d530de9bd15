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
            ending_notice_days: default_ending_notice_days(),
        }
    }
}

impl PassesSettings {
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
}
