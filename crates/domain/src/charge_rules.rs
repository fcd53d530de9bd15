//! Stripe's rules for an amount in each currency: how many decimals its API reads, the
//! least it charges, the multiple an amount must be, the most it charges. One table, read
//! by config validation (start-up), the offer's exponents, checkout and plan changes, so
//! nothing Stripe would refuse is sent to it.
//!
//! Transcribed from Stripe's "Supported currencies" page,
//! <https://docs.stripe.com/currencies> (sections "Zero-decimal currencies",
//! "Special cases", "Minimum and maximum charge amounts"), and for the three-decimal
//! currencies from the same page as archived on 2022-12-31
//! (<https://web.archive.org/web/20221231002856/https://stripe.com/docs/currencies>:
//! "these API calls require the least-significant (last) digit to be 0"). Where Stripe's
//! rules differ from ISO 4217:
//! - ISK and UGX: "transitioned to a zero-decimal currency, but backwards compatibility
//!   requires you to represent it as a two-decimal value, where the decimal amount is
//!   always `00`" — exponent 2, multiples of 100. (UGX is also on Stripe's zero-decimal
//!   list; the special case is the one about charges, so it wins.)
//! - MGA: on Stripe's zero-decimal list (ISO gives it 2): exponent 0.
//! - HUF and TWD: two-decimal for charges; the multiple-of-100 rule is for manual
//!   payouts, which Kopilka never makes.
//! - BHD, JOD, KWD, OMR, TND: three decimals, last digit 0 (multiples of 10).
//!
//! Minimums: Stripe's table lists the minimum per *settlement* currency; a charge in a
//! currency that is converted must meet the settlement currency's minimum after
//! conversion. For the listed currencies the table's figure is used (it assumes the
//! account settles in that currency, or the operator raises `minimum_minor`). For the
//! others Kopilka holds a conservative floor of at least US$0.50 at 2026 exchange rates,
//! rounded up to a round figure and to the currency's multiple, so the charge clears the
//! minimum of a USD, EUR or GBP settlement account.
//!
//! Maximums: "8 digits for all other currencies, for a maximum charge of 999,999.99
//! (`99999999`)"; 12 digits for IDR, 9 for INR.

use std::fmt;

use crate::{Currency, Money};

/// Stripe's rules for amounts in one currency.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChargeRules {
    /// The decimals Stripe's `amount` is counted in (its "minor unit").
    pub exponent: u32,
    /// The least Stripe charges, in minor units.
    pub minimum_minor: i64,
    /// Every amount must be a multiple of this (1: any; 10: three-decimal; 100: ISK, UGX).
    pub multiple_of: i64,
    /// The most Stripe charges at once, in minor units.
    pub maximum_minor: i64,
}

/// The eight-digit maximum that holds for almost every currency.
const EIGHT_DIGITS: i64 = 99_999_999;

/// `(ISO code, exponent, multiple_of, minimum_minor)`, sorted by code.
///
/// Settlement minimums from Stripe's table: AED 2.00, AUD 0.50, BGN 1.00, BRL 0.50,
/// CAD 0.50, CHF 0.50, CZK 15.00, DKK 2.50, EUR 0.50, GBP 0.30, HKD 4.00, HUF 175.00,
/// INR 0.50, JPY 50, MXN 10, MYR 2, NOK 3.00, NZD 0.50, PLN 2.00, RON 2.00, SEK 3.00,
/// SGD 0.50, THB 10, USD 0.50. Every other row is Kopilka's floor of at least US$0.50.
const TABLE: &[(&str, u32, i64, i64)] = &[
    ("AED", 2, 1, 200),
    ("ALL", 2, 1, 5_000),
    ("AMD", 2, 1, 20_000),
    ("ARS", 2, 1, 100_000),
    ("AUD", 2, 1, 50),
    ("AZN", 2, 1, 100),
    ("BAM", 2, 1, 100),
    ("BDT", 2, 1, 7_000),
    ("BGN", 2, 1, 100),
    ("BHD", 3, 10, 200),
    ("BIF", 0, 1, 2_000),
    ("BRL", 2, 1, 50),
    ("BWP", 2, 1, 800),
    ("CAD", 2, 1, 50),
    ("CHF", 2, 1, 50),
    ("CLP", 0, 1, 500),
    ("CNY", 2, 1, 400),
    ("COP", 2, 1, 300_000),
    ("CRC", 2, 1, 30_000),
    ("CZK", 2, 1, 1_500),
    ("DJF", 0, 1, 100),
    ("DKK", 2, 1, 250),
    ("DOP", 2, 1, 4_000),
    ("EGP", 2, 1, 3_000),
    ("EUR", 2, 1, 50),
    ("FJD", 2, 1, 200),
    ("GBP", 2, 1, 30),
    ("GEL", 2, 1, 200),
    ("GNF", 0, 1, 5_000),
    ("GTQ", 2, 1, 400),
    ("HKD", 2, 1, 400),
    ("HUF", 2, 1, 17_500),
    ("IDR", 2, 1, 1_000_000),
    ("ILS", 2, 1, 200),
    ("INR", 2, 1, 50),
    ("ISK", 2, 100, 10_000),
    ("JMD", 2, 1, 10_000),
    ("JOD", 3, 10, 400),
    ("JPY", 0, 1, 50),
    ("KES", 2, 1, 7_000),
    ("KMF", 0, 1, 300),
    ("KRW", 0, 1, 1_000),
    ("KWD", 3, 10, 200),
    ("KZT", 2, 1, 30_000),
    ("LKR", 2, 1, 20_000),
    ("MAD", 2, 1, 500),
    ("MDL", 2, 1, 1_000),
    ("MGA", 0, 1, 3_000),
    ("MKD", 2, 1, 3_000),
    ("MNT", 2, 1, 200_000),
    ("MOP", 2, 1, 500),
    ("MUR", 2, 1, 2_500),
    ("MXN", 2, 1, 1_000),
    ("MYR", 2, 1, 200),
    ("NAD", 2, 1, 1_000),
    ("NGN", 2, 1, 100_000),
    ("NOK", 2, 1, 300),
    ("NPR", 2, 1, 8_000),
    ("NZD", 2, 1, 50),
    ("OMR", 3, 10, 200),
    ("PEN", 2, 1, 200),
    ("PHP", 2, 1, 3_000),
    ("PKR", 2, 1, 15_000),
    ("PLN", 2, 1, 200),
    ("PYG", 0, 1, 5_000),
    ("QAR", 2, 1, 200),
    ("RON", 2, 1, 200),
    ("RSD", 2, 1, 6_000),
    ("RWF", 0, 1, 1_000),
    ("SAR", 2, 1, 200),
    ("SEK", 2, 1, 300),
    ("SGD", 2, 1, 50),
    ("THB", 2, 1, 1_000),
    ("TND", 3, 10, 2_000),
    ("TRY", 2, 1, 2_500),
    ("TTD", 2, 1, 400),
    ("TWD", 2, 1, 2_000),
    ("TZS", 2, 1, 150_000),
    ("UAH", 2, 1, 2_500),
    ("UGX", 2, 100, 200_000),
    ("USD", 2, 1, 50),
    ("UYU", 2, 1, 2_500),
    ("VND", 0, 1, 15_000),
    ("VUV", 0, 1, 100),
    ("XAF", 0, 1, 500),
    ("XCD", 2, 1, 200),
    ("XOF", 0, 1, 500),
    ("XPF", 0, 1, 100),
    ("ZAR", 2, 1, 1_000),
];

/// Stripe's rules for `iso_code` (uppercase), or `None` when Kopilka does not know Stripe
/// to charge in it.
pub(crate) fn rules_for(iso_code: &str) -> Option<ChargeRules> {
    let index = TABLE
        .binary_search_by(|(code, ..)| (*code).cmp(iso_code))
        .ok()?;
    let (code, exponent, multiple_of, minimum_minor) = TABLE[index];
    let maximum_minor = match code {
        "IDR" => 999_999_999_999,
        "INR" => 999_999_999,
        _ => EIGHT_DIGITS,
    };
    Some(ChargeRules {
        exponent,
        minimum_minor,
        multiple_of,
        maximum_minor,
    })
}

/// Every currency in the table, for tests and listings.
#[must_use]
pub fn stripe_currencies() -> Vec<Currency> {
    TABLE
        .iter()
        .filter_map(|(code, ..)| code.parse().ok())
        .collect()
}

/// Why Stripe would refuse an amount.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ChargeRefusal {
    /// Stripe does not charge in this currency (or Kopilka's table does not know it).
    #[error("Stripe does not accept payments in {0}")]
    CurrencyNotSupported(Currency),
    /// Below Stripe's minimum charge.
    #[error("Stripe's minimum charge in {} is {}", .0.currency(), .0)]
    BelowMinimum(Money),
    /// Above Stripe's maximum charge.
    #[error("Stripe's maximum charge in {} is {}", .0.currency(), .0)]
    AboveMaximum(Money),
    /// Not a whole multiple Stripe accepts (ISK, UGX: whole units; BHD…: last digit 0).
    #[error("amounts in {currency} must be a multiple of {multiple_of} minor units")]
    NotAMultiple {
        /// The currency.
        currency: Currency,
        /// The multiple.
        multiple_of: i64,
    },
}

impl ChargeRefusal {
    /// The stable `snake_case` code an API answers with.
    #[must_use]
    pub const fn code(&self) -> &'static str {
        match self {
            Self::CurrencyNotSupported(_) => "currency_not_supported",
            Self::BelowMinimum(_) => "amount_below_stripe_minimum",
            Self::AboveMaximum(_) => "amount_above_stripe_maximum",
            Self::NotAMultiple { .. } => "amount_not_a_valid_multiple",
        }
    }
}

impl Currency {
    /// Stripe's rules for this currency; `None` when Stripe does not charge in it.
    #[must_use]
    pub fn charge_rules(self) -> Option<ChargeRules> {
        rules_for(self.iso_code())
    }
}

impl Money {
    /// Whether Stripe would charge this amount: a supported currency, at least the minimum,
    /// at most the maximum, a valid multiple. Zero is refused too (a charge of nothing).
    ///
    /// # Errors
    /// The [`ChargeRefusal`] Stripe would answer with.
    pub fn check_chargeable(self) -> Result<(), ChargeRefusal> {
        let currency = self.currency();
        let rules = currency
            .charge_rules()
            .ok_or(ChargeRefusal::CurrencyNotSupported(currency))?;
        if self.minor() < rules.minimum_minor {
            return Err(ChargeRefusal::BelowMinimum(Money::new(
                rules.minimum_minor,
                currency,
            )));
        }
        if self.minor() > rules.maximum_minor {
            return Err(ChargeRefusal::AboveMaximum(Money::new(
                rules.maximum_minor,
                currency,
            )));
        }
        if self.minor() % rules.multiple_of != 0 {
            return Err(ChargeRefusal::NotAMultiple {
                currency,
                multiple_of: rules.multiple_of,
            });
        }
        Ok(())
    }
}

impl fmt::Display for ChargeRules {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "exponent {}, minimum {}, multiple of {}, maximum {}",
            self.exponent, self.minimum_minor, self.multiple_of, self.maximum_minor
        )
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
    fn the_table_is_sorted_unique_and_parses() {
        for pair in TABLE.windows(2) {
            assert!(pair[0].0 < pair[1].0, "{} then {}", pair[0].0, pair[1].0);
        }
        assert_eq!(stripe_currencies().len(), TABLE.len());
    }

    #[test]
    fn every_row_is_self_consistent() {
        for currency in stripe_currencies() {
            let rules = currency.charge_rules().unwrap();
            assert!(rules.minimum_minor > 0, "{currency}");
            assert_eq!(rules.minimum_minor % rules.multiple_of, 0, "{currency}");
            assert!(rules.maximum_minor > rules.minimum_minor, "{currency}");
            assert!(matches!(rules.exponent, 0 | 2 | 3), "{currency}");
            assert_eq!(currency.exponent(), rules.exponent, "{currency}");
            assert_eq!(
                Money::new(rules.minimum_minor, currency).check_chargeable(),
                Ok(())
            );
            assert_eq!(
                Money::new(rules.minimum_minor - 1, currency)
                    .check_chargeable()
                    .unwrap_err()
                    .code(),
                "amount_below_stripe_minimum",
                "{currency}"
            );
        }
    }

    #[test]
    fn stripe_special_cases_differ_from_iso() {
        let rules = |c: &str| cur(c).charge_rules().unwrap();
        // Two-decimal at Stripe, whole units only.
        for code in ["isk", "ugx"] {
            assert_eq!(rules(code).exponent, 2, "{code}");
            assert_eq!(rules(code).multiple_of, 100, "{code}");
        }
        assert_eq!(rules("mga").exponent, 0);
        for code in ["huf", "twd"] {
            assert_eq!(rules(code).exponent, 2, "{code}");
            assert_eq!(rules(code).multiple_of, 1, "{code}");
        }
        for code in ["bhd", "jod", "kwd", "omr", "tnd"] {
            assert_eq!(rules(code).exponent, 3, "{code}");
            assert_eq!(rules(code).multiple_of, 10, "{code}");
        }
        for code in [
            "bif", "clp", "djf", "gnf", "jpy", "kmf", "krw", "mga", "pyg", "rwf", "vnd", "vuv",
            "xaf", "xof", "xpf",
        ] {
            assert_eq!(rules(code).exponent, 0, "{code}");
        }
        // Minimums Kopilka had wrong: about US$0.50, not 50 minor units.
        assert_eq!(rules("krw").minimum_minor, 1_000);
        assert_eq!(rules("vnd").minimum_minor, 15_000);
        assert_eq!(rules("clp").minimum_minor, 500);
        assert_eq!(rules("myr").minimum_minor, 200);
        assert_eq!(rules("kwd").minimum_minor, 200);
        assert_eq!(rules("gbp").minimum_minor, 30);
    }

    #[test]
    fn each_refusal_says_why() {
        assert_eq!(
            Money::new(150, cur("isk")).check_chargeable(),
            Err(ChargeRefusal::BelowMinimum(Money::new(10_000, cur("isk"))))
        );
        assert_eq!(
            Money::new(10_050, cur("isk")).check_chargeable(),
            Err(ChargeRefusal::NotAMultiple {
                currency: cur("isk"),
                multiple_of: 100
            })
        );
        assert_eq!(
            Money::new(1_005, cur("kwd"))
                .check_chargeable()
                .map_err(|r| r.code()),
            Err("amount_not_a_valid_multiple")
        );
        assert_eq!(
            Money::new(100_000_000, cur("usd"))
                .check_chargeable()
                .map_err(|r| r.code()),
            Err("amount_above_stripe_maximum")
        );
        assert_eq!(
            Money::new(1_000, cur("rub")).check_chargeable(),
            Err(ChargeRefusal::CurrencyNotSupported(cur("rub")))
        );
        assert_eq!(
            Money::new(0, cur("usd"))
                .check_chargeable()
                .map_err(|r| r.code()),
            Err("amount_below_stripe_minimum")
        );
    }

    fn any_stripe_currency() -> impl Strategy<Value = Currency> {
        prop::sample::select(stripe_currencies())
    }

    proptest! {
        #[test]
        fn an_amount_is_chargeable_exactly_when_every_rule_holds(minor in -10_i64..2_000_000_000_000, currency in any_stripe_currency()) {
            let rules = currency.charge_rules().unwrap();
            let expected = minor >= rules.minimum_minor
                && minor <= rules.maximum_minor
                && minor % rules.multiple_of == 0;
            prop_assert_eq!(Money::new(minor, currency).check_chargeable().is_ok(), expected);
        }

        #[test]
        fn whole_major_units_above_the_minimum_are_always_chargeable(major in 1_i64..10_000, currency in any_stripe_currency()) {
            let rules = currency.charge_rules().unwrap();
            let minor = (major * currency.minor_per_major()).max(rules.minimum_minor);
            let minor = minor + (rules.multiple_of - minor % rules.multiple_of) % rules.multiple_of;
            prop_assume!(minor <= rules.maximum_minor);
            prop_assert_eq!(Money::new(minor, currency).check_chargeable(), Ok(()));
        }
    }
}
