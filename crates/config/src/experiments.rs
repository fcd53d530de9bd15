//! `[experiments]`: how ask experiments count and how their bandit learns (issue #21).

use serde::{Deserialize, Serialize};

use crate::ConfigError;

/// Counting, the bandit, and the first-year value it optimises.
#[derive(Debug, Clone, Deserialize, Serialize)]
pub struct ExperimentsSettings {
    /// Seconds between an instance's flushes of its in-memory view and click counts (one
    /// statement each); a crash loses at most this much.
    #[serde(default = "default_flush_secs")]
    pub flush_secs: u64,
    /// Minutes between the worker's recomputations of a bandit's shares.
    #[serde(default = "default_bandit_minutes")]
    pub bandit_minutes: u32,
    /// Views every variant must have before the bandit moves traffic (until then, weights).
    #[serde(default = "default_min_views")]
    pub min_views_per_variant: u32,
    /// The least share of traffic (percent of the views not held back) any variant keeps.
    #[serde(default = "default_floor_percent")]
    pub floor_percent: u8,
    /// The monthly plans' monthly loss (cancellations and unrecovered failed payments, in
    /// percent) assumed before Kopilka's own plans say otherwise.
    #[serde(default = "default_prior_churn")]
    pub prior_monthly_churn_percent: f64,
    /// How many plan-months that assumption weighs against the measured ones.
    #[serde(default = "default_prior_weight")]
    pub prior_plan_months: u32,
}

fn default_flush_secs() -> u64 {
    5
}

fn default_bandit_minutes() -> u32 {
    10
}

fn default_min_views() -> u32 {
    1_000
}

fn default_floor_percent() -> u8 {
    5
}

fn default_prior_churn() -> f64 {
    5.0
}

fn default_prior_weight() -> u32 {
    120
}

impl Default for ExperimentsSettings {
    fn default() -> Self {
        Self {
            flush_secs: default_flush_secs(),
            bandit_minutes: default_bandit_minutes(),
            min_views_per_variant: default_min_views(),
            floor_percent: default_floor_percent(),
            prior_monthly_churn_percent: default_prior_churn(),
            prior_plan_months: default_prior_weight(),
        }
    }
}

impl ExperimentsSettings {
    /// Refuses values that cannot work.
    ///
    /// # Errors
    /// [`ConfigError::Invalid`], naming the key.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let invalid = |what: &str| Err(ConfigError::Invalid(format!("experiments.{what}")));
        if !(1..=3_600).contains(&self.flush_secs) {
            return invalid("flush_secs is 1 to 3600");
        }
        if !(1..=1_440).contains(&self.bandit_minutes) {
            return invalid("bandit_minutes is 1 to 1440");
        }
        if self.floor_percent > 20 {
            return invalid("floor_percent is 0 to 20 (of the views not held back)");
        }
        if !(0.1..=50.0).contains(&self.prior_monthly_churn_percent) {
            return invalid("prior_monthly_churn_percent is 0.1 to 50");
        }
        if self.prior_plan_months == 0 {
            return invalid("prior_plan_months is at least 1");
        }
        Ok(())
    }
}
