use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// Which payment provider a fact came from. Contributions, ledger rows, plans and the
/// inbox carry it (column `provider`), so that a provider's id is unique only within its
/// provider: ledger rows are unique on (provider, the provider's id).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Provider {
    /// Stripe: cards, wallets and bank debits, one-off and recurring.
    Stripe,
    /// A self-hosted BTCPay Server: cryptocurrency invoices.
    Btcpay,
}

/// A provider name that is not `stripe` or `btcpay`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown payment provider {0:?}: expected \"stripe\" or \"btcpay\"")]
pub struct ProviderError(String);

impl Provider {
    /// Every provider.
    pub const ALL: [Self; 2] = [Self::Stripe, Self::Btcpay];

    /// The stored and wire name: `stripe` or `btcpay` (the schema's CHECK allows exactly these).
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Stripe => "stripe",
            Self::Btcpay => "btcpay",
        }
    }
}

impl FromStr for Provider {
    type Err = ProviderError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "stripe" => Ok(Self::Stripe),
            "btcpay" => Ok(Self::Btcpay),
            other => Err(ProviderError(other.chars().take(16).collect())),
        }
    }
}

impl fmt::Display for Provider {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn providers_round_trip_through_their_stored_names() {
        for provider in Provider::ALL {
            assert_eq!(provider.as_str().parse::<Provider>().unwrap(), provider);
            let json = serde_json::to_string(&provider).unwrap();
            assert_eq!(json, format!("\"{}\"", provider.as_str()));
            assert_eq!(serde_json::from_str::<Provider>(&json).unwrap(), provider);
        }
        assert!("paypal".parse::<Provider>().is_err());
        assert!("Stripe".parse::<Provider>().is_err());
        assert_eq!(Provider::Btcpay.to_string(), "btcpay");
    }
}
