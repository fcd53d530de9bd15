use std::fmt;

use serde::{Deserialize, Serialize};

use crate::Currency;

/// An amount of money: integer minor units of an ISO 4217 currency, counted as Stripe's
/// API counts them ([`Currency::exponent`]). Never a float.
///
/// `Money::new(1234, usd)` is $12.34, `Money::new(500, jpy)` is ¥500 and
/// `Money::new(1500, bhd)` is 1.500 BHD. Arithmetic is checked and refuses to mix
/// currencies. The amount may be negative (a refund, a net figure); callers that need a
/// positive amount say so with [`Money::is_positive`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Money {
    #[serde(rename = "amount_minor")]
    minor: i64,
    currency: Currency,
}

/// Why an amount was refused or an operation could not be done.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MoneyError {
    /// The text is not a decimal amount.
    #[error("{0:?} is not an amount: expected digits with an optional decimal point")]
    Malformed(String),
    /// More decimals than the currency has, e.g. `100.5` JPY or `1.234` USD.
    #[error("{currency} takes at most {exponent} decimal places")]
    TooManyDecimals {
        /// The currency of the amount.
        currency: Currency,
        /// Its number of decimal places.
        exponent: u32,
    },
    /// The amount does not fit in 64-bit minor units.
    #[error("amount out of range")]
    Overflow,
    /// Two amounts in different currencies were combined.
    #[error("cannot combine {left} with {right}")]
    CurrencyMismatch {
        /// The currency of the left operand.
        left: Currency,
        /// The currency of the right operand.
        right: Currency,
    },
}

impl Money {
    /// An amount of `minor` units of `currency`.
    #[must_use]
    pub const fn new(minor: i64, currency: Currency) -> Self {
        Self { minor, currency }
    }

    /// Nothing, in `currency`.
    #[must_use]
    pub const fn zero(currency: Currency) -> Self {
        Self::new(0, currency)
    }

    /// The amount in minor units (cents, yen, fils).
    #[must_use]
    pub const fn minor(self) -> i64 {
        self.minor
    }

    /// The currency.
    #[must_use]
    pub const fn currency(self) -> Currency {
        self.currency
    }

    /// Whether the amount is above zero.
    #[must_use]
    pub const fn is_positive(self) -> bool {
        self.minor > 0
    }

    /// Parses a decimal amount in major units (`"12.34"`, `"-5"`, `"1.5"`) exactly,
    /// refusing more decimals than the currency has.
    ///
    /// # Errors
    /// [`MoneyError::Malformed`], [`MoneyError::TooManyDecimals`] or [`MoneyError::Overflow`].
    pub fn parse_major(text: &str, currency: Currency) -> Result<Self, MoneyError> {
        let malformed = || MoneyError::Malformed(text.chars().take(32).collect());
        let (negative, unsigned) = match text.strip_prefix('-') {
            Some(rest) => (true, rest),
            None => (false, text),
        };
        let (whole, fraction) = match unsigned.split_once('.') {
            Some((whole, fraction)) => (whole, Some(fraction)),
            None => (unsigned, None),
        };
        let all_digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
        if !all_digits(whole) || fraction.is_some_and(|f| !all_digits(f)) {
            return Err(malformed());
        }
        let exponent = currency.exponent();
        let fraction = fraction.unwrap_or("");
        let decimals = u32::try_from(fraction.len()).map_err(|_| malformed())?;
        if decimals > exponent {
            return Err(MoneyError::TooManyDecimals { currency, exponent });
        }
        // Accumulate as a negative number so i64::MIN is reachable, then flip.
        let mut minor: i64 = 0;
        for digit in whole.bytes().chain(fraction.bytes()) {
            minor = minor
                .checked_mul(10)
                .and_then(|m| m.checked_sub(i64::from(digit - b'0')))
                .ok_or(MoneyError::Overflow)?;
        }
        minor = minor
            .checked_mul(10_i64.pow(exponent - decimals))
            .ok_or(MoneyError::Overflow)?;
        if !negative {
            minor = minor.checked_neg().ok_or(MoneyError::Overflow)?;
        }
        Ok(Self::new(minor, currency))
    }

    /// The amount in major units with exactly the currency's decimals: `12.34`, `500`,
    /// `1.500`, `-0.05`.
    #[must_use]
    pub fn format_major(self) -> String {
        let exponent = self.currency.exponent();
        let magnitude = self.minor.unsigned_abs();
        let sign = if self.minor < 0 { "-" } else { "" };
        if exponent == 0 {
            return format!("{sign}{magnitude}");
        }
        let scale = 10_u64.pow(exponent);
        let width = exponent as usize;
        format!("{sign}{}.{:0width$}", magnitude / scale, magnitude % scale)
    }

    /// `self + other`, refusing other currencies and overflow.
    ///
    /// # Errors
    /// [`MoneyError::CurrencyMismatch`] or [`MoneyError::Overflow`].
    pub fn checked_add(self, other: Self) -> Result<Self, MoneyError> {
        self.same_currency(other)?;
        let minor = self
            .minor
            .checked_add(other.minor)
            .ok_or(MoneyError::Overflow)?;
        Ok(Self::new(minor, self.currency))
    }

    /// `self - other`, refusing other currencies and overflow.
    ///
    /// # Errors
    /// [`MoneyError::CurrencyMismatch`] or [`MoneyError::Overflow`].
    pub fn checked_sub(self, other: Self) -> Result<Self, MoneyError> {
        self.same_currency(other)?;
        let minor = self
            .minor
            .checked_sub(other.minor)
            .ok_or(MoneyError::Overflow)?;
        Ok(Self::new(minor, self.currency))
    }

    fn same_currency(self, other: Self) -> Result<(), MoneyError> {
        if self.currency == other.currency {
            Ok(())
        } else {
            Err(MoneyError::CurrencyMismatch {
                left: self.currency,
                right: other.currency,
            })
        }
    }
}

impl fmt::Display for Money {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.format_major(), self.currency.iso_code())
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
    fn amounts_are_exponent_aware() {
        assert_eq!(
            Money::parse_major("12.34", cur("usd")).unwrap().minor(),
            1234
        );
        assert_eq!(
            Money::parse_major("12.3", cur("usd")).unwrap().minor(),
            1230
        );
        assert_eq!(Money::parse_major("12", cur("usd")).unwrap().minor(), 1200);
        assert_eq!(Money::parse_major("500", cur("jpy")).unwrap().minor(), 500);
        assert_eq!(Money::parse_major("1.5", cur("bhd")).unwrap().minor(), 1500);
        assert_eq!(Money::new(1234, cur("usd")).format_major(), "12.34");
        assert_eq!(Money::new(-5, cur("usd")).format_major(), "-0.05");
        assert_eq!(Money::new(500, cur("krw")).format_major(), "500");
        assert_eq!(Money::new(1500, cur("bhd")).to_string(), "1.500 BHD");
    }

    #[test]
    fn yen_with_decimals_and_cents_with_three_places_are_refused() {
        assert_eq!(
            Money::parse_major("100.5", cur("jpy")),
            Err(MoneyError::TooManyDecimals {
                currency: cur("jpy"),
                exponent: 0
            })
        );
        assert!(matches!(
            Money::parse_major("1.234", cur("usd")),
            Err(MoneyError::TooManyDecimals { .. })
        ));
    }

    #[test]
    fn malformed_and_huge_amounts_are_refused() {
        for bad in ["", "-", ".5", "1.", "1,5", "+1", " 1", "1e3", "0x10", "١٢"] {
            assert!(
                matches!(
                    Money::parse_major(bad, cur("usd")),
                    Err(MoneyError::Malformed(_))
                ),
                "{bad:?} should be malformed"
            );
        }
        assert_eq!(
            Money::parse_major("92233720368547758.08", cur("usd")),
            Err(MoneyError::Overflow)
        );
        assert_eq!(
            Money::parse_major("-92233720368547758.08", cur("usd"))
                .unwrap()
                .minor(),
            i64::MIN
        );
    }

    #[test]
    fn currencies_do_not_mix() {
        let a = Money::new(100, cur("usd"));
        let b = Money::new(100, cur("eur"));
        assert!(matches!(
            a.checked_add(b),
            Err(MoneyError::CurrencyMismatch { .. })
        ));
        assert!(matches!(
            a.checked_sub(b),
            Err(MoneyError::CurrencyMismatch { .. })
        ));
    }

    #[test]
    fn money_serialises_as_minor_units_and_a_lowercase_currency() {
        let m = Money::new(1234, cur("EUR"));
        let json = serde_json::to_value(m).unwrap();
        assert_eq!(
            json,
            serde_json::json!({"amount_minor": 1234, "currency": "eur"})
        );
        assert_eq!(serde_json::from_value::<Money>(json).unwrap(), m);
        assert!(
            serde_json::from_str::<Money>(r#"{"amount_minor": 12.5, "currency": "usd"}"#).is_err()
        );
    }

    fn any_currency() -> impl Strategy<Value = Currency> {
        prop::sample::select(vec![
            "usd", "eur", "jpy", "krw", "bhd", "kwd", "rub", "gbp", "clp",
        ])
        .prop_map(cur)
    }

    proptest! {
        #[test]
        fn formatting_then_parsing_gives_the_same_amount(minor in any::<i64>(), currency in any_currency()) {
            let money = Money::new(minor, currency);
            prop_assert_eq!(Money::parse_major(&money.format_major(), currency), Ok(money));
        }

        #[test]
        fn addition_is_exact_or_refused(a in any::<i64>(), b in any::<i64>(), currency in any_currency()) {
            let sum = Money::new(a, currency).checked_add(Money::new(b, currency));
            let exact = i128::from(a) + i128::from(b);
            match i64::try_from(exact) {
                Ok(expected) => prop_assert_eq!(sum, Ok(Money::new(expected, currency))),
                Err(_) => prop_assert_eq!(sum, Err(MoneyError::Overflow)),
            }
        }

        #[test]
        fn subtraction_undoes_addition(a in -1_000_000_000_000_i64..1_000_000_000_000, b in -1_000_000_000_000_i64..1_000_000_000_000, currency in any_currency()) {
            let (a, b) = (Money::new(a, currency), Money::new(b, currency));
            prop_assert_eq!(a.checked_add(b).and_then(|s| s.checked_sub(b)), Ok(a));
        }

        #[test]
        fn more_decimals_than_the_currency_has_are_refused(whole in 0_u32..1_000_000, extra in 1_usize..4, currency in any_currency()) {
            let decimals = currency.exponent() as usize + extra;
            let text = format!("{whole}.{}", "1".repeat(decimals));
            let refused = matches!(Money::parse_major(&text, currency), Err(MoneyError::TooManyDecimals { .. }));
            prop_assert!(refused);
        }

        #[test]
        fn arbitrary_text_never_panics(text in "\\PC{0,24}", currency in any_currency()) {
            let _ = Money::parse_major(&text, currency);
        }
    }
}
