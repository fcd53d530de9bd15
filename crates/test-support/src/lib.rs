//! The test harness: the app on port 0 with a fresh database, a typed client for the API,
//! and Postgres for every test binary — `DATABASE_URL` when set, otherwise a private
//! throwaway cluster started once per test binary, so `cargo test` on a fresh machine needs
//! nothing but the PostgreSQL server binaries.
//!
//! ```text
//! let app = TestApp::spawn().await;
//! let response = app.api.get("/healthz").await;
//! assert_eq!(response.status, 200);
//! ```

mod app;
mod client;
mod postgres;
mod smtp;

use std::future::Future;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use kopilka_config::{Environment, Settings};

pub use app::{TestApp, sim_control, sim_get};
pub use client::{ApiClient, ApiResponse, send};
pub use postgres::{TestDatabase, fresh_database, pg_dump, server_url};
pub use smtp::SmtpSink;

/// The repository's `config/` folder.
#[must_use]
pub fn config_dir() -> PathBuf {
    PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../../config"))
}

/// The `test` environment's settings from the repository's files (the process environment
/// is ignored, so a developer's `KOPILKA__…` variables cannot change a test).
///
/// # Panics
/// When the shipped test configuration is invalid.
#[must_use]
pub fn test_settings() -> Settings {
    Settings::for_env(Environment::Test, &config_dir()).expect("config/test.toml is valid")
}

/// Polls `check` until it returns `Some`, or panics after `timeout` naming `what`.
/// Tests wait for conditions, never for fixed sleeps.
///
/// # Panics
/// When the condition does not hold in time.
pub async fn eventually<T, F, Fut>(what: &str, timeout: Duration, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(value) = check().await {
            return value;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {timeout:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Logs of the code under test, shown for failing tests when `TEST_LOG` is set.
pub fn init_test_logging() {
    if std::env::var_os("TEST_LOG").is_some() {
        let _ = tracing_subscriber::fmt()
            .with_env_filter(std::env::var("TEST_LOG").unwrap_or_default())
            .with_test_writer()
            .try_init();
    }
}

/// An email as a test reads it.
#[derive(Debug, Clone)]
pub struct ReceivedEmail {
    /// The first recipient's address.
    pub to: String,
    /// The subject.
    pub subject: String,
    /// The plain-text part, decoded.
    pub text: String,
    /// The HTML part, decoded.
    pub html: String,
    /// Every header, `(name, value)`, as sent.
    pub headers: Vec<(String, String)>,
}

impl ReceivedEmail {
    /// Parses a raw message (`.eml` or what an SMTP sink stored).
    #[must_use]
    pub fn parse(raw: &str) -> Self {
        let message = mail_parser::MessageParser::default()
            .parse(raw.as_bytes())
            .unwrap_or_default();
        let to = message
            .to()
            .and_then(|to| to.first())
            .and_then(|a| a.address())
            .unwrap_or_default()
            .to_owned();
        let headers = message
            .headers()
            .iter()
            .map(|h| {
                let value = raw_header_value(raw, h.name.as_str());
                (h.name.as_str().to_owned(), value)
            })
            .collect();
        Self {
            to,
            subject: message.subject().unwrap_or_default().to_owned(),
            text: message.body_text(0).unwrap_or_default().into_owned(),
            html: message.body_html(0).unwrap_or_default().into_owned(),
            headers,
        }
    }

    /// The value of header `name` (case-insensitive), unfolded.
    #[must_use]
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// The raw (unfolded) value of the first header `name` in `raw`.
fn raw_header_value(raw: &str, name: &str) -> String {
    let mut value = None::<String>;
    for line in raw.lines() {
        if line.is_empty() {
            break;
        }
        match &mut value {
            Some(v) if line.starts_with([' ', '\t']) => v.push_str(line.trim_start()),
            Some(_) => break,
            None => {
                if let Some((n, v)) = line.split_once(':')
                    && n.eq_ignore_ascii_case(name)
                {
                    value = Some(v.trim().to_owned());
                }
            }
        }
    }
    value.unwrap_or_default()
}
