//! `[abuse]`: the card-testing shield (issue #19, item 2). Failed card payments are counted
//! per client, per address and per card (each a keyed HMAC) over `window_secs`. Past
//! `attack_failures` in all, checkout is *under attack*: a challenge is required (when one
//! is configured), the minimum amount is multiplied by `attack_minimum_factor`, and clients
//! or addresses past their own thresholds are blocked for `block_secs`.

use std::time::Duration;

use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};
use url::Url;

use crate::ConfigError;

/// A human check a checkout must pass while under attack.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ChallengeProvider {
    /// Cloudflare Turnstile.
    Turnstile,
    /// hCaptcha.
    Hcaptcha,
}

impl ChallengeProvider {
    /// Its name, as configured and as the widget is told.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Turnstile => "turnstile",
            Self::Hcaptcha => "hcaptcha",
        }
    }

    /// The provider's server-side verification endpoint.
    #[must_use]
    pub fn default_verify_url(self) -> &'static str {
        match self {
            Self::Turnstile => "https://challenges.cloudflare.com/turnstile/v0/siteverify",
            Self::Hcaptcha => "https://api.hcaptcha.com/siteverify",
        }
    }

    /// The provider's script the widget loads (explicit rendering).
    #[must_use]
    pub fn default_script_url(self) -> &'static str {
        match self {
            Self::Turnstile => {
                "https://challenges.cloudflare.com/turnstile/v0/api.js?render=explicit"
            }
            Self::Hcaptcha => "https://js.hcaptcha.com/1/api.js?render=explicit",
        }
    }
}

/// `[abuse.challenge]`: off unless a provider, its site key and its secret are all set.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
pub struct ChallengeSettings {
    /// `turnstile` or `hcaptcha`; unset: no challenge (the shield still blocks and raises
    /// the minimum).
    #[serde(default)]
    pub provider: Option<ChallengeProvider>,
    /// The public site key the widget renders the challenge with.
    #[serde(default)]
    pub site_key: Option<String>,
    /// `KOPILKA__ABUSE__CHALLENGE__SECRET`: the secret the answer is verified with.
    #[serde(default, serialize_with = "crate::settings::masked")]
    pub secret: Option<SecretString>,
    /// Another verification endpoint (tests); unset: the provider's.
    #[serde(default)]
    pub verify_url: Option<Url>,
    /// Another script for the widget (tests); unset: the provider's.
    #[serde(default)]
    pub script_url: Option<Url>,
}

/// A configured challenge, ready to use.
#[derive(Debug, Clone)]
pub struct Challenge {
    /// Which provider.
    pub provider: ChallengeProvider,
    /// Its public site key.
    pub site_key: String,
    /// Its secret.
    pub secret: SecretString,
    /// Where answers are verified.
    pub verify_url: String,
    /// The script the widget loads.
    pub script_url: String,
}

impl ChallengeSettings {
    /// The challenge, when provider, site key and secret are all set.
    #[must_use]
    pub fn configured(&self) -> Option<Challenge> {
        let provider = self.provider?;
        let site_key = self.site_key.clone().filter(|k| !k.is_empty())?;
        let secret = self
            .secret
            .clone()
            .filter(|s| !s.expose_secret().is_empty())?;
        Some(Challenge {
            provider,
            site_key,
            secret,
            verify_url: self.verify_url.as_ref().map_or_else(
                || provider.default_verify_url().to_owned(),
                ToString::to_string,
            ),
            script_url: self.script_url.as_ref().map_or_else(
                || provider.default_script_url().to_owned(),
                ToString::to_string,
            ),
        })
    }
}

/// The card-testing shield's thresholds.
#[derive(Debug, Clone, Deserialize, Serialize)]
pub struct AbuseSettings {
    /// Failures are counted over this many seconds.
    pub window_secs: u32,
    /// Failed payments in the window, from everyone, that put checkout under attack.
    pub attack_failures: u32,
    /// Failed payments in the window from one client (IP; IPv6 per /64) that block it.
    pub client_failures: u32,
    /// Failed payments in the window for one address that block it.
    pub address_failures: u32,
    /// Failed payments in the window with one card that block every client and address
    /// that tried it.
    pub card_failures: u32,
    /// How long a block lasts.
    pub block_secs: u32,
    /// Under attack, the minimum amount of every currency and interval is multiplied by
    /// this (1: unchanged).
    pub attack_minimum_factor: u32,
    /// How often each `serve` reads the shield's state (the under-attack flag and blocked
    /// clients) from Postgres, in milliseconds: no checkout waits on a query for it.
    pub refresh_ms: u64,
    /// Blocks one instance holds in memory (the newest first past it).
    pub max_blocks: u32,
    /// The human check.
    #[serde(default)]
    pub challenge: ChallengeSettings,
}

impl AbuseSettings {
    /// [`Self::window_secs`] as a duration.
    #[must_use]
    pub fn window(&self) -> Duration {
        Duration::from_secs(u64::from(self.window_secs))
    }

    /// [`Self::refresh_ms`] as a duration.
    #[must_use]
    pub fn refresh(&self) -> Duration {
        Duration::from_millis(self.refresh_ms)
    }

    pub(crate) fn validate(&self) -> Result<(), ConfigError> {
        let invalid = |what: &str| Err(ConfigError::Invalid(what.to_owned()));
        if !(60..=604_800).contains(&self.window_secs) {
            return invalid("abuse.window_secs must be 60 to 604800");
        }
        if [
            self.attack_failures,
            self.client_failures,
            self.address_failures,
            self.card_failures,
        ]
        .contains(&0)
        {
            return invalid(
                "abuse.attack_failures, client_failures, address_failures and card_failures must be at least 1",
            );
        }
        if self.block_secs == 0 || self.block_secs > 2_592_000 {
            return invalid("abuse.block_secs must be 1 to 2592000 (30 days)");
        }
        if !(1..=1000).contains(&self.attack_minimum_factor) {
            return invalid("abuse.attack_minimum_factor must be 1 to 1000");
        }
        if !(100..=60_000).contains(&self.refresh_ms) {
            return invalid("abuse.refresh_ms must be 100 to 60000");
        }
        if self.max_blocks < 100 {
            return invalid("abuse.max_blocks must be at least 100");
        }
        let c = &self.challenge;
        let any_set = c.provider.is_some()
            || c.site_key.as_deref().is_some_and(|k| !k.is_empty())
            || c.secret
                .as_ref()
                .is_some_and(|s| !s.expose_secret().is_empty());
        if any_set && c.configured().is_none() {
            return invalid(
                "abuse.challenge needs provider, site_key and KOPILKA__ABUSE__CHALLENGE__SECRET together (or none of them)",
            );
        }
        Ok(())
    }
}
