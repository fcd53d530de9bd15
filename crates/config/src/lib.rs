//! Kopilka's typed settings.
//!
//! Layers, later wins: `config/default.toml` (compiled in, so the binary runs from any
//! folder) → `<config dir>/default.toml` → `<config dir>/$KOPILKA_ENV.toml` → environment
//! variables `KOPILKA__SECTION__KEY` → plain `DATABASE_URL`. Secrets are `secrecy` types
//! that never print. [`Settings::validate`] refuses nonsense at start-up with one line.

mod abuse;
mod accounts;
mod btcpay;
mod environment;
mod experiments;
mod limits;
mod list;
mod mail;
mod offer;
mod passes;
mod paywall;
mod rails;
mod retention;
mod settings;
mod validate;

use std::path::{Path, PathBuf};

use figment::Figment;
use figment::providers::{Env, Format, Serialized, Toml};

pub use abuse::{AbuseSettings, Challenge, ChallengeProvider, ChallengeSettings};
pub use accounts::{AccountsSettings, Argon2Settings, LOCAL_ACCOUNTS_SECRET};
pub use btcpay::BtcpaySettings;
pub use environment::Environment;
pub use experiments::ExperimentsSettings;
pub use limits::{LimitsSettings, RouteLimit};
pub use mail::{NoticeSettings, PublisherSettings, SmtpSettings};
pub use offer::{
    CurrencyOffer, GoalSettings, IntervalOffer, OfferSettings, STRIPE_MAXIMUM, stripe_minimum,
};
pub use passes::PassesSettings;
pub use paywall::{LOCAL_PAYWALL_SECRET, PaywallSettings};
pub use rails::{CryptoRail, RailsSettings};
pub use retention::RetentionSettings;
pub use settings::{
    ClientIpSource, DatabaseSettings, LogFormat, LogSettings, ServerSettings, Settings,
    StripeSettings, WorkerSettings,
};

/// The compiled-in defaults: the repository's `config/default.toml`.
const DEFAULTS: &str = include_str!("../../../config/default.toml");

/// Why settings could not be loaded. Displays as one line.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// A value is missing, of the wrong type, or a file does not parse.
    #[error("configuration: {0}")]
    Load(String),
    /// The values parse but make no sense together.
    #[error("configuration: {0}")]
    Invalid(String),
}

impl From<figment::Error> for ConfigError {
    fn from(err: figment::Error) -> Self {
        // figment may report several errors; the first is enough to act on, on one line.
        let first = err
            .into_iter()
            .next()
            .map(|e| e.to_string())
            .unwrap_or_default();
        Self::Load(first.replace('\n', " "))
    }
}

/// Where the configuration folder is: `KOPILKA_CONFIG_DIR`, else `./config`.
#[must_use]
pub fn config_dir_from_env() -> PathBuf {
    std::env::var_os("KOPILKA_CONFIG_DIR").map_or_else(|| PathBuf::from("config"), PathBuf::from)
}

/// Every layer for `env`, with files read from `config_dir`, not yet extracted; callers
/// (tests, `dev`) may merge their own overrides on top before [`Settings::from_figment`].
#[must_use]
pub fn figment(env: Environment, config_dir: &Path) -> Figment {
    file_layers(env, config_dir)
        .merge(Env::prefixed("KOPILKA__").split("__"))
        .merge(
            Env::raw()
                .only(&["DATABASE_URL"])
                .map(|_| "database.url".into()),
        )
        .merge(Serialized::default("env", env))
}

/// The compiled-in defaults, then the files of `config_dir` (missing files are skipped).
fn file_layers(env: Environment, config_dir: &Path) -> Figment {
    Figment::new()
        .merge(Toml::string(DEFAULTS))
        .merge(Toml::file(config_dir.join("default.toml")))
        .merge(Toml::file(
            config_dir.join(format!("{}.toml", env.as_str())),
        ))
}

/// Loads and validates the settings the process environment asks for
/// (`KOPILKA_ENV`, `KOPILKA_CONFIG_DIR`, `KOPILKA__…`, `DATABASE_URL`).
///
/// # Errors
/// [`ConfigError`] with one line saying what to fix.
pub fn load() -> Result<Settings, ConfigError> {
    let env = Environment::from_env()?;
    Settings::from_figment(&figment(env, &config_dir_from_env()))
}
