//! The human check under attack, verified server-side: Cloudflare Turnstile or hCaptcha.
//! Both take a form POST of `secret` and `response` (the token the widget got) to their
//! `siteverify` endpoint and answer `{"success": bool, "hostname": "…", "error-codes": […]}`.
//! The reader's IP is not sent (`remoteip` is optional for both). A token is single-use
//! and short-lived at the provider; Kopilka also refuses one solved on a page outside the
//! newsroom's origins.

use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt as _, Full};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use kopilka_config::Challenge;
use secrecy::ExposeSecret as _;

/// The most a provider's answer may be (they are a few hundred bytes).
const MAX_ANSWER: usize = 16 * 1024;

/// How long a verification may take before the checkout is answered 503.
const TIMEOUT: Duration = Duration::from_secs(5);

/// What the provider said of a token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Solved, on one of the newsroom's pages.
    Passed,
    /// Not solved, used before, expired, or solved elsewhere: the provider's error codes
    /// (or `hostname-mismatch`).
    Failed(Vec<String>),
}

/// Why no verdict could be had (the checkout is answered 503, retry).
#[derive(Debug, thiserror::Error)]
pub enum Unverified {
    /// The provider could not be reached in time, or answered nonsense.
    #[error("the challenge provider is unavailable")]
    Unavailable,
}

/// A configured challenge with its HTTPS client.
#[derive(Clone)]
pub struct Verifier {
    challenge: Challenge,
    hosts: Vec<String>,
    client: Client<HttpsConnector<HttpConnector>, Full<Bytes>>,
}

impl std::fmt::Debug for Verifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Verifier")
            .field("provider", &self.challenge.provider)
            .field("verify_url", &self.challenge.verify_url)
            .finish_non_exhaustive()
    }
}

#[derive(serde::Deserialize)]
struct Answer {
    success: bool,
    #[serde(default)]
    hostname: Option<String>,
    #[serde(default, rename = "error-codes")]
    error_codes: Vec<String>,
}

impl Verifier {
    /// A verifier of `challenge`'s tokens, accepting those solved on a page of `hosts`
    /// (the newsroom's origins' host names).
    #[must_use]
    pub fn new(challenge: Challenge, hosts: Vec<String>) -> Self {
        let connector = hyper_rustls::HttpsConnectorBuilder::new()
            .with_webpki_roots()
            .https_or_http()
            .enable_http1()
            .build();
        Self {
            challenge,
            hosts,
            client: Client::builder(TokioExecutor::new()).build(connector),
        }
    }

    /// The configured challenge.
    #[must_use]
    pub fn challenge(&self) -> &Challenge {
        &self.challenge
    }

    /// Asks the provider about `token`.
    ///
    /// # Errors
    /// [`Unverified`] when the provider cannot be asked.
    pub async fn verify(&self, token: &str) -> Result<Verdict, Unverified> {
        let mut form = vec![
            ("secret", self.challenge.secret.expose_secret()),
            ("response", token),
        ];
        if self.challenge.provider == kopilka_config::ChallengeProvider::Hcaptcha {
            form.push(("sitekey", self.challenge.site_key.as_str()));
        }
        let body = serde_urlencoded::to_string(&form).map_err(|_| Unverified::Unavailable)?;
        let request = http::Request::post(self.challenge.verify_url.as_str())
            .header(
                http::header::CONTENT_TYPE,
                "application/x-www-form-urlencoded",
            )
            .body(Full::new(Bytes::from(body)))
            .map_err(|_| Unverified::Unavailable)?;
        let answer = tokio::time::timeout(TIMEOUT, async {
            let response = self
                .client
                .request(request)
                .await
                .map_err(|_| Unverified::Unavailable)?;
            if !response.status().is_success() {
                return Err(Unverified::Unavailable);
            }
            let limited = http_body_util::Limited::new(response.into_body(), MAX_ANSWER);
            let bytes = limited
                .collect()
                .await
                .map_err(|_| Unverified::Unavailable)?
                .to_bytes();
            serde_json::from_slice::<Answer>(&bytes).map_err(|_| Unverified::Unavailable)
        })
        .await
        .map_err(|_| Unverified::Unavailable)??;
        if !answer.success {
            let mut codes = answer.error_codes;
            if codes.is_empty() {
                codes.push("unsolved".to_owned());
            }
            return Ok(Verdict::Failed(codes));
        }
        match answer.hostname {
            Some(host)
                if !self.hosts.is_empty()
                    && !self.hosts.iter().any(|h| h.eq_ignore_ascii_case(&host)) =>
            {
                Ok(Verdict::Failed(vec!["hostname-mismatch".to_owned()]))
            }
            _ => Ok(Verdict::Passed),
        }
    }
}
