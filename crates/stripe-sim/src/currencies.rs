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
//!   The simulated [`Account`] settles in USD by default and, unless told otherwise
//!   (`POST /_sim/account`), has a bank account in each currency of Stripe's minimum table
//!   (so those charges settle as themselves and meet the table's figure). Every other
//!   currency is converted to USD ("Stripe converts the charge to your default currency"),
//!   where the charge must meet US$0.50 at the simulator's fixed rates below; its balance
//!   transactions are in USD with an `exchange_rate`. The maximum is eight digits
//!   (`99999999`), twelve for IDR, nine for INR.

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

/// The simulator's fixed exchange rates of the settlement currencies (used when the account
/// has no bank account in one of them): thousandths of a major unit per US dollar.
const SETTLEMENT_USD_RATES_MILLI: &[(&str, i64)] = &[
    ("usd", 1_000),
    ("aed", 3_673),
    ("aud", 1_520),
    ("bgn", 1_700),
    ("brl", 5_500),
    ("cad", 1_380),
    ("chf", 880),
    ("czk", 21_500),
    ("dkk", 6_500),
    ("eur", 870),
    ("gbp", 750),
    ("hkd", 7_800),
    ("huf", 340_000),
    ("inr", 88_000),
    ("jpy", 150_000),
    ("mxn", 18_500),
    ("myr", 4_200),
    ("nok", 10_100),
    ("nzd", 1_700),
    ("pln", 3_700),
    ("ron", 4_400),
    ("sek", 9_500),
    ("sgd", 1_300),
    ("thb", 32_500),
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

/// Where money in a currency lands in the simulated account's balance: its own currency
/// when the account has a bank account in it, else converted to USD, as Stripe converts a
/// charge, refund or dispute in a currency the account cannot pay out in to its default
/// currency.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settled {
    /// The balance transaction's `currency`.
    pub currency: String,
    /// The balance transaction's `amount`, in that currency's minor units.
    pub amount: i64,
    /// The balance transaction's `exchange_rate` as a decimal (six places): `None` when
    /// nothing was converted.
    pub exchange_rate: Option<String>,
}

/// The simulated Stripe account, as far as currencies go: it settles in USD by default and
/// has a bank account (so settles without conversion) in `bank_account_currencies`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Account {
    /// `None`: every currency of Stripe's minimum table; always includes USD.
    bank_account_currencies: Option<Vec<String>>,
}

impl Account {
    /// An account with bank accounts in `currencies` (lowercase) and USD.
    ///
    /// # Errors
    /// A currency that is not a settlement currency of Stripe's minimum table.
    pub fn with_bank_accounts(currencies: &[String]) -> Result<Self, String> {
        let mut list = vec!["usd".to_owned()];
        for currency in currencies {
            let currency = currency.to_ascii_lowercase();
            if !SETTLEMENT_MINIMUMS.iter().any(|(c, _)| *c == currency) {
                return Err(format!("{currency} is not a settlement currency"));
            }
            if !list.contains(&currency) {
                list.push(currency);
            }
        }
        Ok(Self {
            bank_account_currencies: Some(list),
        })
    }

    /// The currencies money settles in without conversion.
    pub fn bank_account_currencies(&self) -> Vec<String> {
        self.bank_account_currencies.clone().unwrap_or_else(|| {
            SETTLEMENT_MINIMUMS
                .iter()
                .map(|(c, _)| (*c).to_owned())
                .collect()
        })
    }

    fn settles_as_itself(&self, currency: &str) -> bool {
        match &self.bank_account_currencies {
            None => SETTLEMENT_MINIMUMS.iter().any(|(c, _)| *c == currency),
            Some(list) => list.iter().any(|c| c == currency),
        }
    }

    /// The least Stripe charges in `currency`, in its minor units: the table's figure when
    /// it settles as itself, else what converts to US$0.50, rounded up to the multiple.
    pub fn minimum(&self, currency: &str) -> i64 {
        if self.settles_as_itself(currency)
            && let Some((_, minimum)) = SETTLEMENT_MINIMUMS.iter().find(|(c, _)| *c == currency)
        {
            return *minimum;
        }
        let Some(rate_milli) = usd_rate_milli(currency) else {
            return 50;
        };
        // US$0.50 = rate / 2 major units; in minor units, rounded up, then up to the multiple.
        let scale = 10_i64.pow(exponent(currency));
        let ceil = |n: i64, d: i64| (n + d - 1) / d;
        let minor = ceil(rate_milli * scale, 2_000);
        let multiple = multiple_of(currency);
        ceil(minor, multiple) * multiple
    }

    /// Where `amount` minor units of `currency` land in the balance (see [`Settled`]): a
    /// converted amount is rounded half away from zero to the cent at the fixed rate.
    pub fn settle(&self, amount: i64, currency: &str) -> Settled {
        let rate_milli = usd_rate_milli(currency).filter(|_| !self.settles_as_itself(currency));
        let Some(rate_milli) = rate_milli else {
            return Settled {
                currency: currency.to_owned(),
                amount,
                exchange_rate: None,
            };
        };
        // cents = amount / 10^exponent major units / (rate_milli / 1000) per dollar * 100
        let scale = i128::from(10_i64.pow(exponent(currency)));
        let numerator = i128::from(amount) * 100_000;
        let denominator = i128::from(rate_milli) * scale;
        let half = denominator / 2;
        let cents = if numerator >= 0 {
            (numerator + half) / denominator
        } else {
            (numerator - half) / denominator
        };
        // Stripe's `exchange_rate`: settlement units per presentment unit, here to six places.
        let micro = (1_000_000_000 + rate_milli / 2) / rate_milli;
        Settled {
            currency: "usd".to_owned(),
            amount: i64::try_from(cents).unwrap_or(i64::MAX),
            exchange_rate: Some(format!("{}.{:06}", micro / 1_000_000, micro % 1_000_000)),
        }
    }

    /// Checks a charge `amount` in `currency` as Stripe does; `param` names the amount's
    /// field and `currency_param` the currency's, for the error.
    ///
    /// # Errors
    /// Stripe's `invalid_request_error`: unsupported currency, `amount_too_small`,
    /// `amount_too_large`, or a bad multiple.
    pub fn check(
        &self,
        amount: i64,
        currency: &str,
        param: &str,
        currency_param: &str,
    ) -> Result<(), crate::error::StripeError> {
        check_against(
            amount,
            currency,
            self.minimum(currency),
            param,
            currency_param,
        )
    }
}

fn usd_rate_milli(currency: &str) -> Option<i64> {
    SETTLEMENT_USD_RATES_MILLI
        .iter()
        .chain(USD_RATES_MILLI)
        .find(|(c, _)| *c == currency)
        .map(|(_, rate)| *rate)
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

fn check_against(
    amount: i64,
    currency: &str,
    minimum: i64,
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
    if amount < minimum {
        return Err(StripeError::coded(
            "amount_too_small",
            Some(param),
            format!("Amount must be at least {}", display(minimum, currency)),
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
        let minimum = |currency| Account::default().minimum(currency);
        let check = |amount, currency, param, currency_param| {
            Account::default().check(amount, currency, param, currency_param)
        };
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
        let account = Account::default();
        let settle = |amount, currency| account.settle(amount, currency);
        assert_eq!(
            settle(50_000, "krw").exchange_rate.as_deref(),
            Some("0.000719")
        );
        assert_eq!(
            settle(5_000, "gbp"),
            Settled {
                currency: "gbp".into(),
                amount: 5_000,
                exchange_rate: None
            }
        );
        assert_eq!(settle(50_000, "krw").currency, "usd");
        // ₩50,000 at ₩1,390 per dollar = $35.97; ISK 5,000.00 at 138 = $36.23; KWD 10.000 at 0.307 = $32.57.
        assert_eq!(settle(50_000, "krw").amount, 3_597);
        assert_eq!(settle(-50_000, "krw").amount, -3_597);
        assert_eq!(settle(500_000, "isk").amount, 3_623);
        assert_eq!(settle(10_000, "kwd").amount, 3_257);
        // Without a GBP bank account, pounds convert: £30.00 is $40.00, £0.30 below $0.50.
        let usd_only = Account::with_bank_accounts(&[]).unwrap();
        assert_eq!(usd_only.settle(3_000, "gbp").amount, 4_000);
        assert_eq!(usd_only.minimum("gbp"), 38);
        assert!(usd_only.check(30, "gbp", "amount", "currency").is_err());
        assert!(
            Account::default()
                .check(30, "gbp", "amount", "currency")
                .is_ok()
        );
        assert!(Account::with_bank_accounts(&["rub".into()]).is_err());
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
