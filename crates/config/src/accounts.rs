//! `[accounts]`: reader accounts, their credentials, emailed links, sessions, throttles and
//! remind-me-later.

use std::time::Duration;

use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};

use crate::ConfigError;

/// The secret `dev` and `test` use when none is set; refused in production.
pub const LOCAL_ACCOUNTS_SECRET: &str = "kopilka-local-only-secret-never-use-in-production";

/// Reader accounts.
#[derive(Debug, Clone, Deserialize, Serialize)]
pub struct AccountsSettings {
    /// `KOPILKA__ACCOUNTS__SECRET`: the key (≥ 32 bytes) that signs emailed links, unsubscribe
    /// tokens, one-click plan links and the anonymous banner cookie. Required in production.
    #[serde(default, serialize_with = "crate::settings::masked")]
    pub secret: Option<SecretString>,
    /// `KOPILKA__ACCOUNTS__PEPPER`: optional, mixed into every password hash (argon2's
    /// secret input); changing it invalidates every password.
    #[serde(default, serialize_with = "crate::settings::masked")]
    pub pepper: Option<SecretString>,
    /// Argon2id cost.
    pub argon2: Argon2Settings,
    /// How many password hashes may run at once (0: one per core), so a login storm
    /// queues instead of starving everything else.
    pub hash_concurrency: usize,
    /// How long a session lives at most.
    pub session_days: u32,
    /// A session unused for this long ends (besides its absolute lifetime).
    pub session_idle_days: u32,
    /// How long an emailed sign-in link works.
    pub magic_link_minutes: u32,
    /// How long an emailed address-verification link works.
    pub verify_link_hours: u32,
    /// At most this many emailed links per address per hour (more are silently not sent).
    pub links_per_hour: u32,
    /// How long a one-click plan link (cancel from an email) works.
    pub plan_link_days: u32,
    /// Failed logins allowed per address before backoff starts.
    pub free_failures_per_account: u32,
    /// Failed logins allowed per client IP before backoff starts.
    pub free_failures_per_ip: u32,
    /// The first backoff; it doubles with each further failure.
    pub backoff_base_secs: u64,
    /// The longest backoff.
    pub backoff_max_secs: u64,
    /// The earliest a reminder may be set, in days from today.
    pub reminder_min_days: u32,
    /// The latest a reminder may be set, in days from today.
    pub reminder_max_days: u32,
}

/// Argon2id parameters (OWASP's minimum: 19 MiB, t = 2, p = 1).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
pub struct Argon2Settings {
    /// Memory in KiB.
    pub memory_kib: u32,
    /// Passes.
    pub iterations: u32,
    /// Lanes.
    pub parallelism: u32,
}

impl AccountsSettings {
    /// The signing secret: the configured one, or the local-only one in dev and test.
    #[must_use]
    pub fn secret_bytes(&self) -> &[u8] {
        self.secret
            .as_ref()
            .map_or(LOCAL_ACCOUNTS_SECRET.as_bytes(), |s| {
                s.expose_secret().as_bytes()
            })
    }

    /// [`Self::session_days`] as a duration.
    #[must_use]
    pub fn session_lifetime(&self) -> Duration {
        Duration::from_secs(u64::from(self.session_days) * 86_400)
    }

    /// How long an unused session lives.
    #[must_use]
    pub fn session_idle(&self) -> Duration {
        Duration::from_secs(u64::from(self.session_idle_days) * 86_400)
    }

    pub(crate) fn validate(&self, local: bool) -> Result<(), ConfigError> {
        let fail = |m: &str| Err(ConfigError::Invalid(format!("accounts.{m}")));
        match &self.secret {
            Some(s) if s.expose_secret().len() < 32 => {
                return fail("secret must be at least 32 bytes (KOPILKA__ACCOUNTS__SECRET)");
            }
            Some(s) if !local && s.expose_secret() == LOCAL_ACCOUNTS_SECRET => {
                return fail("secret is the local-only default; set KOPILKA__ACCOUNTS__SECRET");
            }
            None if !local => {
                return fail(
                    "secret is required outside dev and test (KOPILKA__ACCOUNTS__SECRET, ≥ 32 random bytes)",
                );
            }
            _ => {}
        }
        let a = self.argon2;
        if a.memory_kib < 19_456 && !local {
            return fail("argon2.memory_kib must be at least 19456 (OWASP) outside dev and test");
        }
        if a.iterations == 0 || a.parallelism == 0 || a.memory_kib < 8 * a.parallelism {
            return fail(
                "argon2 needs iterations ≥ 1, parallelism ≥ 1, memory_kib ≥ 8 × parallelism",
            );
        }
        if self.session_days == 0 || self.magic_link_minutes == 0 || self.verify_link_hours == 0 {
            return fail(
                "session_days, magic_link_minutes and verify_link_hours must be at least 1",
            );
        }
        if self.session_idle_days == 0 || self.session_idle_days > self.session_days {
            return fail("session_idle_days must be 1 to session_days");
        }
        if self.magic_link_minutes > 60 {
            return fail("magic_link_minutes must be at most 60");
        }
        if self.backoff_base_secs == 0 || self.backoff_max_secs < self.backoff_base_secs {
            return fail("backoff_base_secs must be ≥ 1 and ≤ backoff_max_secs");
        }
        if self.reminder_min_days == 0 || self.reminder_max_days < self.reminder_min_days {
            return fail("reminder_min_days must be ≥ 1 and ≤ reminder_max_days");
        }
        Ok(())
    }
}
