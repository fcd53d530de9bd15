use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::ConfigError;

/// Which set of defaults applies (`KOPILKA_ENV`). Production is the default, so a forgotten
/// variable fails safe: its validation is the strictest.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Environment {
    /// A developer's machine: `kopilka dev`.
    Dev,
    /// The test suite.
    Test,
    /// A real deployment.
    #[default]
    Production,
}

impl Environment {
    /// The name used for `KOPILKA_ENV` and the file `config/<name>.toml`.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Dev => "dev",
            Self::Test => "test",
            Self::Production => "production",
        }
    }

    /// Whether this is a machine-local environment where http and private clusters are fine.
    #[must_use]
    pub fn is_local(self) -> bool {
        matches!(self, Self::Dev | Self::Test)
    }

    /// Reads `KOPILKA_ENV` (unset means production).
    ///
    /// # Errors
    /// [`ConfigError::Invalid`] for an unknown name.
    pub fn from_env() -> Result<Self, ConfigError> {
        match std::env::var("KOPILKA_ENV") {
            Ok(name) => name.parse(),
            Err(_) => Ok(Self::default()),
        }
    }
}

impl FromStr for Environment {
    type Err = ConfigError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "dev" => Ok(Self::Dev),
            "test" => Ok(Self::Test),
            "production" => Ok(Self::Production),
            other => Err(ConfigError::Invalid(format!(
                "KOPILKA_ENV is {other:?}; expected dev, test or production"
            ))),
        }
    }
}

impl fmt::Display for Environment {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}
