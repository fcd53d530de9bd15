//! `[paywall]`: the supporter token and the meter.

use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};

use crate::ConfigError;

/// The seed secret `dev` and `test` use when none is set; refused in production.
pub const LOCAL_PAYWALL_SECRET: &str = "kopilka-local-only-paywall-secret-never-in-production";

/// The paywall.
#[derive(Debug, Clone, Deserialize, Serialize)]
pub struct PaywallSettings {
    /// `KOPILKA__PAYWALL__SIGNING_SECRET` (≥ 32 bytes): every token signing key is derived from
    /// it and the key's id, so no private key is ever stored. Required in production.
    #[serde(default, serialize_with = "crate::settings::masked")]
    pub signing_secret: Option<SecretString>,
    /// The tokens' `aud`: the newsroom's site (default: the public URL).
    #[serde(default)]
    pub audience: Option<String>,
    /// How long a supporter token lives (it bounds how long a refund takes to show).
    pub token_hours: u32,
    /// After `admin keys rotate`, how long the previous key still verifies (≥ token_hours).
    pub rotation_grace_hours: u32,
    /// `asks_only`, `metered` or `hard`.
    pub meter_mode: String,
    /// Free articles per calendar month.
    pub free_articles: u32,
    /// How often the live signing keys are re-read from Postgres (a rotation shows within
    /// this many seconds).
    pub keys_reload_secs: u64,
}

impl PaywallSettings {
    /// The seed secret: the configured one, or the local-only one in dev and test.
    #[must_use]
    pub fn secret_bytes(&self) -> &[u8] {
        self.signing_secret
            .as_ref()
            .map_or(LOCAL_PAYWALL_SECRET.as_bytes(), |s| {
                s.expose_secret().as_bytes()
            })
    }

    pub(crate) fn validate(&self, local: bool) -> Result<(), ConfigError> {
        let fail = |m: &str| Err(ConfigError::Invalid(format!("paywall.{m}")));
        match &self.signing_secret {
            Some(s) if s.expose_secret().len() < 32 => {
                return fail(
                    "signing_secret must be at least 32 bytes (KOPILKA__PAYWALL__SIGNING_SECRET)",
                );
            }
            Some(s) if !local && s.expose_secret() == LOCAL_PAYWALL_SECRET => {
                return fail(
                    "signing_secret is the local-only default; set KOPILKA__PAYWALL__SIGNING_SECRET",
                );
            }
            None if !local => {
                return fail(
                    "signing_secret is required outside dev and test (KOPILKA__PAYWALL__SIGNING_SECRET, ≥ 32 random bytes)",
                );
            }
            _ => {}
        }
        if self.token_hours == 0 || self.token_hours > 24 * 7 {
            return fail("token_hours must be between 1 and 168");
        }
        if self.rotation_grace_hours < self.token_hours {
            return fail(
                "rotation_grace_hours must be at least token_hours (old tokens must keep verifying)",
            );
        }
        if !matches!(self.meter_mode.as_str(), "asks_only" | "metered" | "hard") {
            return fail("meter_mode must be asks_only, metered or hard");
        }
        Ok(())
    }
}
