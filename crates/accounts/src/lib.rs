//! Reader accounts. Owns `readers` (the only table with PII), `credentials`, `sessions`,
//! `email_links`, `login_throttles`, `reminders`, `banner_states`, `audit_log` and
//! `signing_keys` (the ids of the supporter-token keys; the keys are derived, never stored).
//!
//! Whether an address belongs to anyone is never revealed: sign-up and link requests
//! answer the same either way, password checks against unknown addresses hash against a
//! dummy, and an account sees what is linked to its address (contributions, plans,
//! reminders) only once an emailed link proved the address.

mod error;

pub mod audit;
pub mod banner;
pub mod keys;
pub mod link;
pub mod password;
pub mod plan_link;
pub mod privacy;
pub mod reader;
pub mod reminder;
pub mod session;
pub mod signin;
pub mod signing_key;
pub mod throttle;

use kopilka_config::AccountsSettings;

pub use error::AccountError;
pub use keys::Keys;
pub use password::{Password, Passwords};
pub use signin::{SignUp, parse_email};

/// The accounts' secret, password hasher and limits. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Accounts {
    /// Signs and checks tokens.
    pub keys: Keys,
    /// Hashes and checks passwords (bounded concurrency).
    pub passwords: Passwords,
    /// The `[accounts]` settings.
    pub settings: AccountsSettings,
}

impl Accounts {
    /// Accounts as `settings` describe them.
    #[must_use]
    pub fn from_settings(settings: &AccountsSettings) -> Self {
        Self {
            keys: Keys::from_settings(settings),
            passwords: Passwords::from_settings(settings),
            settings: settings.clone(),
        }
    }
}
