use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer};

use crate::{Currency, Money, MoneyError};

/// An exchange rate as an exact decimal: how many major units of the target currency one
/// major unit of the source is worth (`"1.0825"` EUR → USD). Parsed from text, never from a
/// float, so a configured rate is used exactly as written.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Rate {
    digits: i128,
    scale: u32,
}

/// Why a rate was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "{0:?} is not a rate: expected a positive decimal such as \"1.0825\" (at most 12 decimals)"
)]
pub struct RateError(String);

const MAX_SCALE: u32 = 12;

impl FromStr for Rate {
    type Err = RateError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let refuse = || RateError(text.chars().take(32).collect());
        let (whole, fraction) = text.split_once('.').unwrap_or((text, ""));
        let digits_only = |s: &str| s.bytes().all(|b| b.is_ascii_digit());
        if whole.is_empty()
            || !digits_only(whole)
            || !digits_only(fraction)
            || (text.contains('.') && fraction.is_empty())
        {
            return Err(refuse());
        }
        let scale = u32::try_from(fraction.len()).map_err(|_| refuse())?;
        if scale > MAX_SCALE || whole.len() > 12 {
            return Err(refuse());
        }
        let digits: i128 = format!("{whole}{fraction}").parse().map_err(|_| refuse())?;
        if digits == 0 {
            return Err(refuse());
        }
        Ok(Self { digits, scale })
    }
}

impl fmt::Debug for Rate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Rate({self})")
    }
}

impl fmt::Display for Rate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let scale = 10_i128.pow(self.scale);
        if self.scale == 0 {
            write!(f, "{}", self.digits)
        } else {
            write!(
                f,
                "{}.{:0width$}",
                self.digits / scale,
                self.digits % scale,
                width = self.scale as usize
            )
        }
    }
}

impl<'de> Deserialize<'de> for Rate {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        String::deserialize(deserializer)?
            .parse()
            .map_err(serde::de::Error::custom)
    }
}

impl serde::Serialize for Rate {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl Money {
    /// This amount in `to` at `rate` (major units of `to` per major unit of ours), rounded
    /// half away from zero to `to`'s minor unit. Exact integer arithmetic throughout.
    ///
    /// # Errors
    /// [`MoneyError::Overflow`] when the result does not fit.
    pub fn convert(self, to: Currency, rate: Rate) -> Result<Money, MoneyError> {
        // minor_to = minor_from × digits × 10^exp_to / (10^scale × 10^exp_from)
        let numerator = i128::from(self.minor())
            .checked_mul(rate.digits)
            .and_then(|n| n.checked_mul(10_i128.pow(to.exponent())))
            .ok_or(MoneyError::Overflow)?;
        let denominator = 10_i128.pow(rate.scale) * 10_i128.pow(self.currency().exponent());
        let quotient = numerator / denominator;
        let remainder = numerator % denominator;
        let rounded = if remainder.abs() * 2 >= denominator {
            quotient + numerator.signum()
        } else {
            quotient
        };
        i64::try_from(rounded)
            .map(|minor| Money::new(minor, to))
            .map_err(|_| MoneyError::Overflow)
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn cur(code: &str) -> Currency {
        code.parse().unwrap()
    }

    #[test]
    fn rates_parse_exactly_and_refuse_nonsense() {
        assert_eq!("1.0825".parse::<Rate>().unwrap().to_string(), "1.0825");
        assert_eq!("150".parse::<Rate>().unwrap().to_string(), "150");
        for bad in [
            "",
            "0",
            "0.000",
            "-1",
            "1.",
            ".5",
            "1,5",
            "1e3",
            "abc",
            "1.0000000000001",
        ] {
            assert!(bad.parse::<Rate>().is_err(), "{bad:?}");
        }
    }

    #[test]
    fn conversion_respects_both_exponents_and_rounds_half_away_from_zero() {
        // €10.00 at 1.0825 = $10.825 → $10.83
        let eur = Money::new(1000, cur("eur"));
        assert_eq!(
            eur.convert(cur("usd"), "1.0825".parse().unwrap()),
            Ok(Money::new(1083, cur("usd")))
        );
        // ¥1000 at 0.0067 = $6.70
        let jpy = Money::new(1000, cur("jpy"));
        assert_eq!(
            jpy.convert(cur("usd"), "0.0067".parse().unwrap()),
            Ok(Money::new(670, cur("usd")))
        );
        // $5.00 at 150 = ¥750
        let usd = Money::new(500, cur("usd"));
        assert_eq!(
            usd.convert(cur("jpy"), "150".parse().unwrap()),
            Ok(Money::new(750, cur("jpy")))
        );
        // 1.000 BHD at 2.65 = $2.65
        let bhd = Money::new(1000, cur("bhd"));
        assert_eq!(
            bhd.convert(cur("usd"), "2.65".parse().unwrap()),
            Ok(Money::new(265, cur("usd")))
        );
        // refunds round the same way, mirrored
        let refund = Money::new(-1000, cur("eur"));
        assert_eq!(
            refund.convert(cur("usd"), "1.0825".parse().unwrap()),
            Ok(Money::new(-1083, cur("usd")))
        );
    }

    proptest! {
        #[test]
        fn a_rate_of_one_between_same_exponent_currencies_changes_nothing(minor in -1_000_000_000_000_i64..1_000_000_000_000) {
            let money = Money::new(minor, cur("eur"));
            prop_assert_eq!(money.convert(cur("usd"), "1".parse().unwrap()), Ok(Money::new(minor, cur("usd"))));
        }

        #[test]
        fn conversion_is_within_half_a_minor_unit_of_exact(minor in 0_i64..10_000_000_000, whole in 0_u32..1000, frac in 0_u32..10_000) {
            let rate: Rate = format!("{whole}.{frac:04}").parse().unwrap_or_else(|_| "1".parse().unwrap());
            let converted = Money::new(minor, cur("eur")).convert(cur("usd"), rate).unwrap();
            // exact × 10^4 in integers: minor × digits (scale 4)
            let exact_times_scale = i128::from(minor) * rate.digits * 10_i128.pow(4 - rate.scale);
            let got_times_scale = i128::from(converted.minor()) * 10_000;
            prop_assert!((got_times_scale - exact_times_scale).abs() <= 5_000);
        }
    }
}
