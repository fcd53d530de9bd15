//! Stripe's per-currency amount rules as the simulator enforces them: its own transcription
//! of <https://docs.stripe.com/currencies> (the simulator is held to Stripe, not to Kopilka,
//! so it never reads Kopilka's table).
//!
//! - "Zero-decimal currencies": BIF, CLP, DJF, GNF, JPY, KMF, KRW, MGA, PYG, RWF, UGX, VND,
//!   VUV, XAF, XOF, XPF: the amount is the charge.
//! - "Special cases": ISK and UGX "transitioned to a zero-decimal currency, but backwards
//!   compatibility requires you to represent it as a two-decimal value, where the decimal
//!   amount is always `00`" (so UGX, though listed above, is sent with two decimals); HUF
//!   and TWD are two-decimal for charges (their multiple-of-100 rule is for payouts).
//! - Three-decimal currencies (BHD, JOD, KWD, OMR, TND): "these API calls require the
//!   least-significant (last) digit to be 0" (the page as archived on 2022-12-31).
//! - "Minimum and maximum charge amounts": the minimum depends on the settlement currency.
//!   The simulated account has a bank account in each currency of Stripe's minimum table
//!   (so those charges meet the table's figure) and converts every other currency to USD,
//!   where the charge must meet US$0.50 at the simulator's fixed rates below. The maximum
//!   is eight digits (`99999999`), twelve for IDR, nine for INR.

/// Stripe's "Minimum charge amount" table, in minor units of each settlement currency.
const SETTLEMENT_MINIMUMS: &[(&str, i64)] = &[
    ("usd", 50),
    ("aed", 200),
    ("aud", 50),
    ("bgn", 100),
    ("brl", 50),
    ("cad", 50),
    ("chf", 50),
    ("czk", 1500),
    ("dkk", 250),
    ("eur", 50),
    ("gbp", 30),
    ("hkd", 400),
    ("huf", 17_500),
    ("inr", 50),
    ("jpy", 50),
    ("mxn", 1000),
    ("myr", 200),
    ("nok", 300),
    ("nzd", 50),
    ("pln", 200),
    ("ron", 200),
    ("sek", 300),
    ("sgd", 50),
    ("thb", 1000),
];

/// The other presentment currencies the simulator charges in, with its fixed exchange
/// rate: thousandths of a major unit per US dollar (e.g. KRW 1,390,000 = ₩1,390).
const USD_RATES_MILLI: &[(&str, i64)] = &[
    ("all", 92_000),
    ("amd", 390_000),
    ("ars", 1_150_000),
    ("azn", 1_700),
    ("bam", 1_700),
    ("bdt", 122_000),
    ("bhd", 376),
    ("bif", 2_950_000),
    ("bwp", 13_600),
    ("clp", 940_000),
    ("cny", 7_200),
    ("cop", 4_100_000),
    ("crc", 505_000),
    ("djf", 178_000),
    ("dop", 61_000),
    ("egp", 49_000),
    ("fjd", 2_270),
    ("gel", 2_700),
    ("gnf", 8_650_000),
    ("gtq", 7_700),
    ("idr", 16_300_000),
    ("ils", 3_600),
    ("isk", 138_000),
    ("jmd", 158_000),
    ("jod", 709),
    ("kes", 129_000),
    ("kmf", 425_000),
    ("krw", 1_390_000),
    ("kwd", 307),
    ("kzt", 510_000),
    ("lkr", 300_000),
    ("mad", 9_900),
    ("mdl", 17_500),
    ("mga", 4_500_000),
    ("mkd", 53_000),
    ("mnt", 3_550_000),
    ("mop", 8_050),
    ("mur", 46_000),
    ("nad", 18_000),
    ("ngn", 1_550_000),
    ("npr", 137_000),
    ("omr", 385),
    ("pen", 3_600),
    ("php", 58_000),
    ("pkr", 282_000),
    ("pyg", 7_900_000),
    ("qar", 3_640),
    ("rsd", 101_000),
    ("rwf", 1_420_000),
    ("sar", 3_750),
    ("tnd", 3_050),
    ("try", 40_000),
    ("ttd", 6_800),
    ("twd", 31_000),
    ("tzs", 2_650_000),
    ("uah", 41_500),
    ("ugx", 3_700_000),
    ("uyu", 40_000),
    ("vnd", 26_200_000),
    ("vuv", 119_000),
    ("xaf", 575_000),
    ("xcd", 2_700),
    ("xof", 575_000),
    ("xpf", 105_000),
    ("zar", 18_000),
];

const ZERO_DECIMAL: &[&str] = &[
    "bif", "clp", "djf", "gnf", "jpy", "kmf", "krw", "mga", "pyg", "rwf", "vnd", "vuv", "xaf",
    "xof", "xpf",
];
const WHOLE_UNITS_WITH_TWO_DECIMALS: &[&str] = &["isk", "ugx"];
const THREE_DECIMAL: &[&str] = &["bhd", "jod", "kwd", "omr", "tnd"];

/// Whether Stripe (as simulated) charges in `currency` (lowercase).
pub fn supported(currency: &str) -> bool {
    SETTLEMENT_MINIMUMS.iter().any(|(c, _)| *c == currency)
        || USD_RATES_MILLI.iter().any(|(c, _)| *c == currency)
}

/// The decimals of `currency`'s `amount` at Stripe's API.
pub fn exponent(currency: &str) -> u32 {
    if ZERO_DECIMAL.contains(&currency) {
        0
    } else if THREE_DECIMAL.contains(&currency) {
        3
    } else {
        2
    }
}

/// The multiple every amount in `currency` must be.
pub fn multiple_of(currency: &str) -> i64 {
    if WHOLE_UNITS_WITH_TWO_DECIMALS.contains(&currency) {
        100
    } else if THREE_DECIMAL.contains(&currency) {
        10
    } else {
        1
    }
}

/// The least Stripe charges in `currency`, in its minor units.
pub fn minimum(currency: &str) -> i64 {
    if let Some((_, minimum)) = SETTLEMENT_MINIMUMS.iter().find(|(c, _)| *c == currency) {
        return *minimum;
    }
    let Some((_, rate_milli)) = USD_RATES_MILLI.iter().find(|(c, _)| *c == currency) else {
        return 50;
    };
    // US$0.50 = rate / 2 major units; in minor units, rounded up, then up to the multiple.
    let scale = 10_i64.pow(exponent(currency));
    let ceil = |n: i64, d: i64| (n + d - 1) / d;
    let minor = ceil(rate_milli * scale, 2_000);
    let multiple = multiple_of(currency);
    ceil(minor, multiple) * multiple
}

/// The most Stripe charges in `currency` at once.
pub fn maximum(currency: &str) -> i64 {
    match currency {
        "idr" => 999_999_999_999,
        "inr" => 999_999_999,
        _ => 99_999_999,
    }
}

/// An amount as Stripe writes it in messages: `$0.50 usd`-like, here `0.50 usd`.
pub fn display(amount: i64, currency: &str) -> String {
    let exponent = exponent(currency);
    if exponent == 0 {
        return format!("{amount} {currency}");
    }
    let scale = 10_i64.pow(exponent);
    let width = exponent as usize;
    format!(
        "{}.{:0width$} {currency}",
        amount / scale,
        (amount % scale).abs()
    )
}

/// Checks a charge `amount` in `currency` as Stripe does; `param` names the amount's field
/// and `currency_param` the currency's, for the error.
pub fn check(
    amount: i64,
    currency: &str,
    param: &str,
    currency_param: &str,
) -> Result<(), crate::error::StripeError> {
    use crate::error::StripeError;
    if !supported(currency) {
        return Err(StripeError::invalid(
            currency_param,
            format!(
                "Invalid currency: {currency}. Stripe currently supports these currencies: usd, eur, gbp, …"
            ),
        ));
    }
    if amount < minimum(currency) {
        return Err(StripeError::coded(
            "amount_too_small",
            Some(param),
            format!(
                "Amount must be at least {}",
                display(minimum(currency), currency)
            ),
        ));
    }
    if amount > maximum(currency) {
        return Err(StripeError::coded(
            "amount_too_large",
            Some(param),
            format!(
                "Amount must be no more than {}",
                display(maximum(currency), currency)
            ),
        ));
    }
    if amount % multiple_of(currency) != 0 {
        return Err(StripeError::invalid(
            param,
            format!(
                "Invalid amount: {currency} amounts must be a multiple of {} (Stripe's minor unit for {currency} has {} decimals).",
                multiple_of(currency),
                exponent(currency)
            ),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_documented_cases_hold() {
        assert_eq!(exponent("isk"), 2);
        assert_eq!(multiple_of("isk"), 100);
        assert_eq!(exponent("ugx"), 2);
        assert_eq!(exponent("mga"), 0);
        assert_eq!(exponent("kwd"), 3);
        assert_eq!(multiple_of("kwd"), 10);
        assert_eq!(minimum("usd"), 50);
        assert_eq!(minimum("gbp"), 30);
        assert_eq!(minimum("krw"), 695);
        assert_eq!(minimum("jod"), 360);
        assert_eq!(minimum("isk"), 6_900);
        assert!(check(10_050, "isk", "amount", "currency").is_err());
        assert!(check(10_000, "isk", "amount", "currency").is_ok());
        assert!(check(2_005, "kwd", "amount", "currency").is_err());
        assert!(check(1_000, "rub", "amount", "currency").is_err());
        for (currency, _) in SETTLEMENT_MINIMUMS.iter().chain(USD_RATES_MILLI) {
            assert!(
                check(minimum(currency), currency, "amount", "currency").is_ok(),
                "{currency}"
            );
            assert!(
                check(minimum(currency) - 1, currency, "amount", "currency").is_err(),
                "{currency}"
            );
        }
    }
}
