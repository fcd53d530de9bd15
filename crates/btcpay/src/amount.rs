//! Fiat amounts as BTCPay writes them: decimal strings in major units (`"5.00"`). Kopilka
//! counts integer minor units ([`Money`]); the two meet here, with no float in between.

use kopilka_domain::{Currency, Money, MoneyError};

/// The decimal string BTCPay expects for `money` (`12.34` for 1234 USD cents, `500` for
/// 500 JPY): exactly the currency's decimals.
#[must_use]
pub fn fiat_amount(money: Money) -> String {
    money.format_major()
}

/// Reads a fiat decimal string from BTCPay (`"5"`, `"5.00"`, `"5.0000"`) in `currency`.
/// BTCPay may write more decimals than the currency has; extra decimals are accepted only
/// when they are zeros, so no amount is ever rounded.
///
/// # Errors
/// [`MoneyError`] when the text is not a decimal amount, or has non-zero decimals beyond
/// the currency's.
pub fn parse_fiat_amount(text: &str, currency: Currency) -> Result<Money, MoneyError> {
    let exponent = usize::try_from(currency.exponent()).unwrap_or(usize::MAX);
    let trimmed = match text.split_once('.') {
        Some((whole, fraction)) if fraction.len() > exponent => {
            let (kept, extra) = fraction.split_at(exponent);
            if !extra.bytes().all(|b| b == b'0') {
                return Err(MoneyError::TooManyDecimals {
                    currency,
                    exponent: currency.exponent(),
                });
            }
            if kept.is_empty() {
                whole.to_owned()
            } else {
                format!("{whole}.{kept}")
            }
        }
        _ => text.to_owned(),
    };
    Money::parse_major(&trimmed, currency)
}

/// A crypto amount as BTCPay writes it (`"0.00016667"` BTC), exactly: the integer of its
/// smallest written unit and how many decimals that unit has (`(16667, 8)`). `None` for
/// anything that is not a plain non-negative decimal, or too large for an `i64`.
#[must_use]
pub fn parse_crypto_amount(text: &str) -> Option<(i64, u8)> {
    let (whole, fraction) = text.split_once('.').unwrap_or((text, ""));
    let plain = |part: &str| part.bytes().all(|b| b.is_ascii_digit());
    if whole.is_empty() || !plain(whole) || !plain(fraction) || fraction.len() > 18 {
        return None;
    }
    let digits = format!("{whole}{fraction}");
    Some((digits.parse().ok()?, u8::try_from(fraction.len()).ok()?))
}

/// Whether `text` is a positive decimal (a rate): digits, at most one point, not zero.
#[must_use]
pub fn is_positive_decimal(text: &str) -> bool {
    let (whole, fraction) = text.split_once('.').unwrap_or((text, ""));
    let plain = |part: &str| part.bytes().all(|b| b.is_ascii_digit());
    !whole.is_empty()
        && plain(whole)
        && plain(fraction)
        && text.len() <= 64
        && text.bytes().any(|b| (b'1'..=b'9').contains(&b))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crypto_amounts_are_read_exactly() {
        assert_eq!(parse_crypto_amount("0.00016667"), Some((16_667, 8)));
        assert_eq!(parse_crypto_amount("1.50000000"), Some((150_000_000, 8)));
        assert_eq!(parse_crypto_amount("2"), Some((2, 0)));
        assert_eq!(parse_crypto_amount("-0.1"), None);
        assert_eq!(parse_crypto_amount("1e-8"), None);
        assert_eq!(parse_crypto_amount(".5"), None);
        assert_eq!(parse_crypto_amount("99999999999.99999999"), None);
        assert!(is_positive_decimal("60000.00"));
        assert!(!is_positive_decimal("0.000"));
        assert!(!is_positive_decimal("1,5"));
    }

    fn currency(code: &str) -> Currency {
        code.parse().unwrap()
    }

    #[test]
    fn amounts_are_written_with_the_currencys_decimals() {
        assert_eq!(fiat_amount(Money::new(1234, currency("USD"))), "12.34");
        assert_eq!(fiat_amount(Money::new(500, currency("JPY"))), "500");
        assert_eq!(fiat_amount(Money::new(5, currency("EUR"))), "0.05");
    }

    #[test]
    fn btcpays_amounts_are_read_exactly() {
        let usd = currency("USD");
        assert_eq!(parse_fiat_amount("5", usd).unwrap().minor(), 500);
        assert_eq!(parse_fiat_amount("5.00", usd).unwrap().minor(), 500);
        assert_eq!(parse_fiat_amount("5.1000", usd).unwrap().minor(), 510);
        assert!(parse_fiat_amount("5.001", usd).is_err());
        assert_eq!(
            parse_fiat_amount("500.00", currency("JPY"))
                .unwrap()
                .minor(),
            500
        );
        assert!(parse_fiat_amount("1e3", usd).is_err());
    }

    proptest::proptest! {
        #[test]
        fn written_amounts_read_back(minor in 0_i64..10_000_000_000) {
            let usd = currency("USD");
            let money = Money::new(minor, usd);
            proptest::prop_assert_eq!(parse_fiat_amount(&fiat_amount(money), usd).unwrap(), money);
        }
    }
}
