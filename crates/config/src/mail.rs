//! `[smtp]` (how mail leaves) and `[publisher]` (who it is from, on every email).

use std::path::PathBuf;
use std::time::Duration;

use secrecy::SecretString;
use serde::{Deserialize, Serialize};

/// Outgoing mail.
#[derive(Debug, Clone, Deserialize, Serialize)]
pub struct SmtpSettings {
    /// `KOPILKA__SMTP__URL`: `smtps://user:pass@host:465` (TLS), `smtp://…?tls=required`
    /// (STARTTLS) or plain `smtp://127.0.0.1:2525` on loopback. Unset: messages are written
    /// as `.eml` files to [`Self::file_dir`] (dev and test only).
    #[serde(default, serialize_with = "crate::settings::masked")]
    pub url: Option<SecretString>,
    /// Where messages go when no SMTP URL is set.
    pub file_dir: PathBuf,
    /// The sender, e.g. `"The Newsroom <support@news.example.org>"`.
    pub from: String,
    /// How long one SMTP exchange may take.
    pub timeout_secs: u64,
    /// Open SMTP connections kept for reuse.
    pub max_connections: u32,
}

impl SmtpSettings {
    /// [`Self::timeout_secs`] as a duration.
    #[must_use]
    pub fn timeout(&self) -> Duration {
        Duration::from_secs(self.timeout_secs)
    }
}

/// When the notices about plans go out.
#[derive(Debug, Clone, Deserialize, Serialize)]
pub struct NoticeSettings {
    /// Stripe's payment attempts per renewal invoice (its retry schedule, Billing →
    /// Revenue recovery): the failure before the last attempt sends the last notice.
    pub dunning_attempts: u32,
    /// Days before an annual plan renews that its renewal notice goes out.
    pub renewal_notice_days: u32,
}

/// The publisher, as every email names it.
#[derive(Debug, Clone, Deserialize, Serialize)]
pub struct PublisherSettings {
    /// The newsroom's name.
    pub name: String,
    /// Its postal address (receipts and statements need it).
    pub postal_address: String,
    /// Its website.
    pub website: url::Url,
    /// Where readers write to.
    pub support_email: String,
}
