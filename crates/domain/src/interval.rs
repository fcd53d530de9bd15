use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// How often a contribution is made: once, every month or every year.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Interval {
    /// A one-off gift.
    Once,
    /// A monthly plan.
    Month,
    /// An annual plan.
    Year,
}

/// An interval that is not `once`, `month` or `year`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown interval {0:?}: expected \"once\", \"month\" or \"year\"")]
pub struct IntervalError(String);

impl Interval {
    /// Every interval, in the order a banner shows them.
    pub const ALL: [Self; 3] = [Self::Once, Self::Month, Self::Year];

    /// The wire name: `once`, `month` or `year` (also Stripe's `recurring.interval`).
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Once => "once",
            Self::Month => "month",
            Self::Year => "year",
        }
    }

    /// Whether this interval is a recurring plan (a Stripe subscription).
    #[must_use]
    pub fn is_recurring(self) -> bool {
        !matches!(self, Self::Once)
    }
}

impl FromStr for Interval {
    type Err = IntervalError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "once" => Ok(Self::Once),
            "month" => Ok(Self::Month),
            "year" => Ok(Self::Year),
            other => Err(IntervalError(other.chars().take(16).collect())),
        }
    }
}

impl fmt::Display for Interval {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn intervals_round_trip_through_their_wire_names() {
        for interval in Interval::ALL {
            assert_eq!(interval.as_str().parse::<Interval>().unwrap(), interval);
            let json = serde_json::to_string(&interval).unwrap();
            assert_eq!(serde_json::from_str::<Interval>(&json).unwrap(), interval);
        }
        assert!("weekly".parse::<Interval>().is_err());
        assert!("Month".parse::<Interval>().is_err());
        assert!(Interval::Year.is_recurring() && !Interval::Once.is_recurring());
    }
}
