use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// The languages Kopilka writes to readers in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Locale {
    /// English.
    #[default]
    En,
    /// Russian.
    Ru,
}

/// A locale Kopilka does not write in.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("locale must be \"en\" or \"ru\"")]
pub struct LocaleError;

impl Locale {
    /// `en` or `ru`.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::En => "en",
            Self::Ru => "ru",
        }
    }
}

impl FromStr for Locale {
    type Err = LocaleError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim().to_ascii_lowercase().as_str() {
            "en" => Ok(Self::En),
            "ru" => Ok(Self::Ru),
            _ => Err(LocaleError),
        }
    }
}

impl fmt::Display for Locale {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn locales_parse_in_any_case() {
        assert_eq!("RU".parse::<Locale>(), Ok(Locale::Ru));
        assert_eq!("en".parse::<Locale>(), Ok(Locale::En));
        assert!("de".parse::<Locale>().is_err());
    }
}
