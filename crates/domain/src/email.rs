use std::fmt;
use std::str::FromStr;

use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Deserializer};

/// A reader's email address: parsed (RFC 5322 addr-spec), trimmed and lowercased, at most
/// 254 bytes. It is PII, so it never prints: `Debug` shows `Email(<redacted>)` and there is
/// no `Display`; [`Email::expose`] is the one deliberate way to read it (to store it in the
/// reader table or to address a message).
#[derive(Clone)]
pub struct Email(SecretString);

/// Why an address was refused. The message never repeats the address.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EmailError {
    /// Empty after trimming.
    #[error("email address is empty")]
    Empty,
    /// Longer than 254 bytes (RFC 5321's path limit).
    #[error("email address is longer than 254 bytes")]
    TooLong,
    /// Not an address.
    #[error("email address is not valid")]
    Invalid,
}

/// The longest address a mail server must accept (RFC 5321 §4.5.3.1.3, minus the brackets).
const MAX_LEN: usize = 254;

impl Email {
    /// Parses and normalises an address.
    ///
    /// # Errors
    /// [`EmailError`] when the address is empty, too long or not an address.
    pub fn parse(raw: &str) -> Result<Self, EmailError> {
        let trimmed = raw.trim();
        if trimmed.is_empty() {
            return Err(EmailError::Empty);
        }
        if trimmed.len() > MAX_LEN {
            return Err(EmailError::TooLong);
        }
        let parsed = email_address::EmailAddress::parse_with_options(
            trimmed,
            email_address::Options::default()
                .without_display_text()
                .without_domain_literal(),
        )
        .map_err(|_| EmailError::Invalid)?;
        // Only a dotted domain can receive mail from the Internet.
        if !parsed.domain().contains('.') {
            return Err(EmailError::Invalid);
        }
        Ok(Self(SecretString::from(parsed.email().to_lowercase())))
    }

    /// The normalised address. Call it only to store or to send; never to log.
    #[must_use]
    pub fn expose(&self) -> &str {
        self.0.expose_secret()
    }
}

impl FromStr for Email {
    type Err = EmailError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

impl PartialEq for Email {
    fn eq(&self, other: &Self) -> bool {
        self.expose() == other.expose()
    }
}

impl Eq for Email {}

impl fmt::Debug for Email {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Email(<redacted>)")
    }
}

impl<'de> Deserialize<'de> for Email {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let raw = String::deserialize(deserializer)?;
        Self::parse(&raw).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_are_trimmed_and_lowercased() {
        let email = Email::parse("  Reader.One@Example.ORG ").unwrap();
        assert_eq!(email.expose(), "reader.one@example.org");
        assert_eq!(email, Email::parse("reader.one@example.org").unwrap());
    }

    #[test]
    fn an_address_never_prints() {
        let email = Email::parse("secret.donor@example.org").unwrap();
        let shown = format!("{email:?}");
        assert!(!shown.contains("secret"), "{shown}");
        let err = serde_json::from_str::<Email>("\"secret.donor@\"").unwrap_err();
        assert!(!err.to_string().contains("secret"), "{err}");
    }

    #[test]
    fn non_addresses_are_refused() {
        assert_eq!(Email::parse("   "), Err(EmailError::Empty));
        for bad in [
            "reader",
            "reader@",
            "@example.org",
            "a b@example.org",
            "reader@localhost",
            "Reader <r@example.org>",
        ] {
            assert_eq!(Email::parse(bad), Err(EmailError::Invalid), "{bad:?}");
        }
        let long = format!("{}@example.org", "a".repeat(250));
        assert_eq!(Email::parse(&long), Err(EmailError::TooLong));
    }

    #[test]
    fn international_addresses_are_kept() {
        let email = Email::parse("Читатель@пример.рф").unwrap();
        assert_eq!(email.expose(), "читатель@пример.рф");
    }
}
