//! `[btcpay]`: the second rail, a BTCPay Server store reached through its Greenfield API
//! (issue #20). Off unless `url`, `store_id` and `api_key` are all set.

use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};
use url::Url;

use crate::ConfigError;

/// Where the BTCPay Server store is and how its webhooks are verified.
#[derive(Debug, Clone, Deserialize, Serialize)]
pub struct BtcpaySettings {
    /// `KOPILKA__BTCPAY__URL`: the BTCPay Server's base URL (`https://btcpay.example.org/`),
    /// or the simulator's.
    #[serde(default)]
    pub url: Option<Url>,
    /// `KOPILKA__BTCPAY__STORE_ID`: the store whose invoices Kopilka creates.
    #[serde(default)]
    pub store_id: Option<String>,
    /// `KOPILKA__BTCPAY__API_KEY`: a Greenfield API key with permission to create and view
    /// the store's invoices.
    #[serde(default, serialize_with = "crate::settings::masked")]
    pub api_key: Option<SecretString>,
    /// `KOPILKA__BTCPAY__WEBHOOK_SECRET`: the store webhook's secret(s), comma-separated;
    /// several while rolling a secret, any of them may sign.
    #[serde(
        default,
        deserialize_with = "crate::list::comma_separated_secrets",
        serialize_with = "masked_list"
    )]
    pub webhook_secret: Vec<SecretString>,
    /// Minutes a reader has to pay an invoice (`checkout.expirationMinutes`).
    #[serde(default = "default_expiration_minutes")]
    pub invoice_expiration_minutes: u32,
    /// How long one Greenfield call may take.
    #[serde(default = "default_timeout_secs")]
    pub timeout_secs: u32,
}

fn default_expiration_minutes() -> u32 {
    30
}

fn default_timeout_secs() -> u32 {
    20
}

impl Default for BtcpaySettings {
    fn default() -> Self {
        Self {
            url: None,
            store_id: None,
            api_key: None,
            webhook_secret: Vec::new(),
            invoice_expiration_minutes: default_expiration_minutes(),
            timeout_secs: default_timeout_secs(),
        }
    }
}

fn masked_list<S: serde::Serializer>(secrets: &[SecretString], s: S) -> Result<S::Ok, S::Error> {
    s.collect_seq(secrets.iter().map(|_| "<redacted>"))
}

impl BtcpaySettings {
    /// The URL, store and API key when the rail is on (all three set), else `None`.
    #[must_use]
    pub fn connection(&self) -> Option<(&Url, &str, &SecretString)> {
        Some((
            self.url.as_ref()?,
            self.store_id.as_deref()?,
            self.api_key.as_ref()?,
        ))
    }

    /// Whether the BTCPay rail is on.
    #[must_use]
    pub fn enabled(&self) -> bool {
        self.connection().is_some()
    }

    pub(crate) fn validate(&self, local: bool) -> Result<(), ConfigError> {
        let invalid = |what: String| Err(ConfigError::Invalid(what));
        let set = [
            ("KOPILKA__BTCPAY__URL", self.url.is_some()),
            ("KOPILKA__BTCPAY__STORE_ID", self.store_id.is_some()),
            ("KOPILKA__BTCPAY__API_KEY", self.api_key.is_some()),
        ];
        if set.iter().any(|(_, on)| *on)
            && let Some((missing, _)) = set.iter().find(|(_, on)| !*on)
        {
            return invalid(format!(
                "{missing} is missing: the BTCPay rail needs url, store_id and api_key together"
            ));
        }
        if let Some(url) = &self.url {
            let plain_http_ok = local && url.scheme() == "http";
            if url.host_str().is_none() || !(url.scheme() == "https" || plain_http_ok) {
                return invalid(format!(
                    "KOPILKA__BTCPAY__URL {url} must be an https URL (http only in dev and test)"
                ));
            }
            if url.cannot_be_a_base() || url.query().is_some() {
                return invalid(format!(
                    "KOPILKA__BTCPAY__URL {url} must be the server's base URL, without a query"
                ));
            }
        }
        if let Some(store) = &self.store_id
            && (store.is_empty() || !store.bytes().all(|b| b.is_ascii_alphanumeric()))
        {
            return invalid(
                "KOPILKA__BTCPAY__STORE_ID must be a BTCPay store id (letters and digits)".into(),
            );
        }
        if let Some(key) = &self.api_key
            && (key.expose_secret().is_empty()
                || key.expose_secret().bytes().any(|b| !b.is_ascii_graphic()))
        {
            return invalid(
                "KOPILKA__BTCPAY__API_KEY must be a Greenfield API key (no spaces)".into(),
            );
        }
        if self.enabled() && self.webhook_secret.is_empty() && !local {
            return invalid(
                "KOPILKA__BTCPAY__WEBHOOK_SECRET is required when the BTCPay rail is on (the store webhook's secret)"
                    .into(),
            );
        }
        if !(1..=10_080).contains(&self.invoice_expiration_minutes) {
            return invalid("btcpay.invoice_expiration_minutes must be between 1 and 10080".into());
        }
        if !(1..=120).contains(&self.timeout_secs) {
            return invalid("btcpay.timeout_secs must be between 1 and 120".into());
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn on() -> BtcpaySettings {
        BtcpaySettings {
            url: Some("https://btcpay.example.org/".parse().unwrap()),
            store_id: Some("9CiNzKoANXxmk5ay".into()),
            api_key: Some(SecretString::from("abcdef0123456789")),
            webhook_secret: vec![SecretString::from("whsecret")],
            ..BtcpaySettings::default()
        }
    }

    #[test]
    fn off_by_default_and_valid() {
        let settings = BtcpaySettings::default();
        assert!(!settings.enabled());
        assert!(settings.validate(false).is_ok());
    }

    #[test]
    fn a_complete_store_is_on() {
        assert!(on().enabled());
        assert!(on().validate(false).is_ok());
    }

    #[test]
    fn each_mistake_says_what_to_fix() {
        let cases: Vec<(BtcpaySettings, &str)> = vec![
            (
                BtcpaySettings {
                    api_key: None,
                    ..on()
                },
                "KOPILKA__BTCPAY__API_KEY is missing",
            ),
            (
                BtcpaySettings {
                    store_id: None,
                    ..on()
                },
                "KOPILKA__BTCPAY__STORE_ID is missing",
            ),
            (
                BtcpaySettings {
                    url: Some("http://btcpay.example.org/".parse().unwrap()),
                    ..on()
                },
                "must be an https URL",
            ),
            (
                BtcpaySettings {
                    store_id: Some("a b".into()),
                    ..on()
                },
                "STORE_ID must be",
            ),
            (
                BtcpaySettings {
                    webhook_secret: vec![],
                    ..on()
                },
                "WEBHOOK_SECRET is required",
            ),
            (
                BtcpaySettings {
                    invoice_expiration_minutes: 0,
                    ..on()
                },
                "invoice_expiration_minutes",
            ),
            (
                BtcpaySettings {
                    timeout_secs: 0,
                    ..on()
                },
                "timeout_secs",
            ),
        ];
        for (settings, expected) in cases {
            let message = settings.validate(false).unwrap_err().to_string();
            assert!(message.contains(expected), "{message}");
            assert!(!message.contains('\n'));
        }
    }

    #[test]
    fn plain_http_and_no_webhook_secret_are_fine_locally() {
        let settings = BtcpaySettings {
            url: Some("http://127.0.0.1:12112/".parse().unwrap()),
            webhook_secret: vec![],
            ..on()
        };
        assert!(settings.validate(true).is_ok());
    }
}
