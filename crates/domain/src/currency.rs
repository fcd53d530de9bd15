use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// An ISO 4217 currency that has minor units defined (so funds codes such as `XDR` or
/// `XXX` are refused). Parsed case-insensitively; written lowercase, as Stripe writes it.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Currency(iso_currency::Currency);

/// Why a currency code was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CurrencyError {
    /// Not a three-letter ISO 4217 code we know.
    #[error("unknown currency code {0:?}: expected an ISO 4217 code such as \"usd\"")]
    Unknown(String),
    /// An ISO code without minor units (precious metals, funds, testing codes).
    #[error("currency {0} has no minor units and cannot be used for payments")]
    NotACurrency(String),
}

impl Currency {
    /// The number of decimal places of the minor unit as Stripe's API counts it: 2 for
    /// USD, 0 for JPY and KRW, 3 for BHD, and where Stripe departs from ISO 4217, Stripe's
    /// (ISK and UGX 2, MGA 0; see [`crate::ChargeRules`]). Amounts travel to and from
    /// Stripe unchanged, so Kopilka's minor unit is Stripe's.
    #[must_use]
    pub fn exponent(self) -> u32 {
        if let Some(rules) = self.charge_rules() {
            return rules.exponent;
        }
        // Parsing refused codes without an exponent, so this is always present.
        self.0.exponent().map_or(0, u32::from)
    }

    /// The uppercase ISO 4217 code, e.g. `USD`.
    #[must_use]
    pub fn iso_code(self) -> &'static str {
        self.0.code()
    }

    /// The lowercase code Stripe uses, e.g. `usd`.
    #[must_use]
    pub fn stripe_code(self) -> String {
        self.0.code().to_ascii_lowercase()
    }

    /// How many minor units make one major unit (100 for USD, 1 for JPY, 1000 for BHD).
    #[must_use]
    pub fn minor_per_major(self) -> i64 {
        10_i64.pow(self.exponent())
    }
}

impl FromStr for Currency {
    type Err = CurrencyError;

    fn from_str(code: &str) -> Result<Self, Self::Err> {
        let trimmed = code.trim();
        if trimmed.len() != 3 || !trimmed.bytes().all(|b| b.is_ascii_alphabetic()) {
            return Err(CurrencyError::Unknown(trimmed.chars().take(16).collect()));
        }
        let upper = trimmed.to_ascii_uppercase();
        let iso = iso_currency::Currency::from_code(&upper)
            .ok_or_else(|| CurrencyError::Unknown(upper.clone()))?;
        if iso.exponent().is_none() {
            return Err(CurrencyError::NotACurrency(upper));
        }
        Ok(Self(iso))
    }
}

impl fmt::Display for Currency {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.stripe_code())
    }
}

impl fmt::Debug for Currency {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Currency({})", self.iso_code())
    }
}

impl Serialize for Currency {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.stripe_code())
    }
}

impl<'de> Deserialize<'de> for Currency {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let code = String::deserialize(deserializer)?;
        code.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exponents_follow_stripe_then_iso_4217() {
        let exp = |c: &str| c.parse::<Currency>().unwrap().exponent();
        assert_eq!(exp("isk"), 2);
        assert_eq!(exp("ugx"), 2);
        assert_eq!(exp("mga"), 0);
        assert_eq!(exp("huf"), 2);
        assert_eq!(exp("usd"), 2);
        assert_eq!(exp("EUR"), 2);
        assert_eq!(exp("jpy"), 0);
        assert_eq!(exp("KRW"), 0);
        assert_eq!(exp("bhd"), 3);
        assert_eq!(exp("kwd"), 3);
    }

    #[test]
    fn codes_are_read_in_any_case_and_written_lowercase() {
        let c: Currency = " Rub ".parse().unwrap();
        assert_eq!(c.to_string(), "rub");
        assert_eq!(c.iso_code(), "RUB");
        assert_eq!(serde_json::to_string(&c).unwrap(), "\"rub\"");
    }

    #[test]
    fn unknown_and_unit_less_codes_are_refused() {
        assert!(matches!(
            "zzz".parse::<Currency>(),
            Err(CurrencyError::Unknown(_))
        ));
        assert!(matches!(
            "us".parse::<Currency>(),
            Err(CurrencyError::Unknown(_))
        ));
        assert!(matches!(
            "u$d".parse::<Currency>(),
            Err(CurrencyError::Unknown(_))
        ));
        assert!(matches!(
            "xau".parse::<Currency>(),
            Err(CurrencyError::NotACurrency(_))
        ));
        assert!(matches!(
            "XXX".parse::<Currency>(),
            Err(CurrencyError::NotACurrency(_))
        ));
        assert!(serde_json::from_str::<Currency>("\"nope\"").is_err());
    }
}
