//! `[rails]`: which ways to pay the offer gives a reader (issue #20). Card goes through
//! Stripe, crypto through the BTCPay store (when one is configured). The reader's country is
//! the offer's `country` (the site or its CDN passes it; Kopilka never looks an IP up).

use serde::{Deserialize, Serialize};

use crate::ConfigError;

/// Where the crypto rail is offered.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum CryptoRail {
    /// To every reader: first for `crypto_countries`, a second option for the rest.
    #[default]
    Everywhere,
    /// Only to readers from `crypto_countries`.
    Countries,
    /// To no one (the store still takes deliveries for invoices already made).
    Off,
}

/// Which rails each reader is offered.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
pub struct RailsSettings {
    /// `everywhere` (default), `countries` or `off` (`KOPILKA__RAILS__CRYPTO`).
    #[serde(default)]
    pub crypto: CryptoRail,
    /// ISO 3166 alpha-2 countries whose readers get crypto first
    /// (`KOPILKA__RAILS__CRYPTO_COUNTRIES=RU,BY`).
    #[serde(default, deserialize_with = "crate::list::comma_separated")]
    pub crypto_countries: Vec<String>,
    /// Countries whose readers are not offered card (Stripe cannot charge cards issued
    /// there) (`KOPILKA__RAILS__CARD_OFF_COUNTRIES`).
    #[serde(default, deserialize_with = "crate::list::comma_separated")]
    pub card_off_countries: Vec<String>,
}

impl RailsSettings {
    pub(crate) fn validate(&self) -> Result<(), ConfigError> {
        for code in self.crypto_countries.iter().chain(&self.card_off_countries) {
            if code.len() != 2 || !code.bytes().all(|b| b.is_ascii_uppercase()) {
                return Err(ConfigError::Invalid(format!(
                    "rails: {code:?} is not an ISO 3166 alpha-2 country code (two capital letters)"
                )));
            }
        }
        Ok(())
    }

    /// The rails for a reader from `country` (any case), first the one to preselect, given
    /// whether card and crypto are configured at all.
    #[must_use]
    pub fn for_country(
        &self,
        country: Option<&str>,
        card: bool,
        crypto: bool,
    ) -> &'static [&'static str] {
        let listed = |list: &[String]| {
            country.is_some_and(|c| list.iter().any(|l| l.eq_ignore_ascii_case(c)))
        };
        let card = card && !listed(&self.card_off_countries);
        let crypto_first = listed(&self.crypto_countries);
        let crypto = crypto
            && match self.crypto {
                CryptoRail::Everywhere => true,
                CryptoRail::Countries => crypto_first,
                CryptoRail::Off => false,
            };
        match (card, crypto, crypto_first) {
            (true, true, true) => &["crypto", "card"],
            (true, true, false) => &["card", "crypto"],
            (true, false, _) => &["card"],
            (false, true, _) => &["crypto"],
            (false, false, _) => &[],
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_country_gets_its_rails_in_order() {
        let rails = RailsSettings {
            crypto: CryptoRail::Everywhere,
            crypto_countries: vec!["RU".into(), "BY".into()],
            card_off_countries: vec!["RU".into()],
        };
        assert_eq!(rails.for_country(Some("ru"), true, true), ["crypto"]);
        assert_eq!(
            rails.for_country(Some("BY"), true, true),
            ["crypto", "card"]
        );
        assert_eq!(
            rails.for_country(Some("DE"), true, true),
            ["card", "crypto"]
        );
        assert_eq!(rails.for_country(None, true, true), ["card", "crypto"]);
        assert_eq!(rails.for_country(Some("DE"), true, false), ["card"]);
        let only = RailsSettings {
            crypto: CryptoRail::Countries,
            ..rails.clone()
        };
        assert_eq!(only.for_country(Some("DE"), true, true), ["card"]);
        assert_eq!(only.for_country(Some("BY"), true, true), ["crypto", "card"]);
        let off = RailsSettings {
            crypto: CryptoRail::Off,
            ..rails
        };
        assert_eq!(off.for_country(Some("RU"), true, true), [] as [&str; 0]);
        assert!(off.validate().is_ok());
        let bad = RailsSettings {
            crypto_countries: vec!["Russia".into()],
            ..RailsSettings::default()
        };
        assert!(bad.validate().is_err());
    }
}
