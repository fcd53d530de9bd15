use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize, Serializer};
use url::Url;

use crate::{ConfigError, Environment};

/// Everything Kopilka reads at start-up. Build it with [`crate::load`] or
/// [`Settings::from_figment`], both of which validate.
#[derive(Debug, Clone, Deserialize, Serialize)]
pub struct Settings {
    /// Which defaults applied (`KOPILKA_ENV`).
    pub env: Environment,
    /// The public base URL; links in emails and redirects are built from it, never from
    /// a request's Host header.
    pub public_url: Url,
    /// The HTTP server.
    pub server: ServerSettings,
    /// Postgres.
    pub database: DatabaseSettings,
    /// Logging.
    pub log: LogSettings,
    /// Stripe: keys, API base, webhook secrets.
    pub stripe: StripeSettings,
    /// BTCPay Server, the second rail (off unless its URL, store and API key are set).
    #[serde(default)]
    pub btcpay: crate::BtcpaySettings,
    /// Supporter passes and pass codes (the crypto rail's months paid ahead).
    #[serde(default)]
    pub passes: crate::PassesSettings,
    /// Which ways to pay each reader is offered.
    #[serde(default)]
    pub rails: crate::RailsSettings,
    /// Ask experiments: counting and the bandit.
    #[serde(default)]
    pub experiments: crate::ExperimentsSettings,
    /// The banner's offer and the funding goal.
    pub offer: crate::OfferSettings,
    /// Background jobs.
    pub worker: WorkerSettings,
    /// Reader accounts, sessions, emailed links and reminders.
    pub accounts: crate::AccountsSettings,
    /// Outgoing mail.
    pub smtp: crate::SmtpSettings,
    /// Who the emails are from.
    pub publisher: crate::PublisherSettings,
    /// When notices go out.
    pub notices: crate::NoticeSettings,
    /// The supporter token and the meter.
    pub paywall: crate::PaywallSettings,
    /// How long rows that tie something to a person are kept after their use.
    pub retention: crate::RetentionSettings,
    /// How much any stranger may ask: limits on every public write.
    pub limits: crate::LimitsSettings,
    /// The card-testing shield: failure thresholds, blocks, the under-attack challenge.
    pub abuse: crate::AbuseSettings,
}

/// `[worker]`: background jobs (webhook processing, emails).
#[derive(Debug, Clone, Deserialize, Serialize)]
pub struct WorkerSettings {
    /// Whether `kopilka serve` also runs the job loop (`kopilka dev` always does).
    pub in_serve: bool,
    /// How often an idle worker looks for due jobs (it is also woken by NOTIFY).
    pub poll_secs: u64,
    /// Jobs one worker process runs at once (each job waits mostly on Postgres and SMTP).
    pub concurrency: usize,
}

/// Stripe: where the API is and how webhooks are verified.
#[derive(Debug, Clone, Deserialize, Serialize)]
pub struct StripeSettings {
    /// `KOPILKA__STRIPE__SECRET_KEY` (`sk_test_…`, `sk_live_…` or a restricted `rk_…`).
    /// Unset in dev: `kopilka dev` runs the simulator and uses its key.
    #[serde(default, serialize_with = "masked")]
    pub secret_key: Option<SecretString>,
    /// `KOPILKA__STRIPE__API_BASE`: another Stripe-compatible base URL (the simulator).
    #[serde(default)]
    pub api_base: Option<Url>,
    /// `KOPILKA__STRIPE__WEBHOOK_SECRET`: endpoint secrets (`whsec_…`), comma-separated;
    /// several during rotation, any of them may sign.
    #[serde(
        default,
        deserialize_with = "crate::list::comma_separated_secrets",
        serialize_with = "masked_list"
    )]
    pub webhook_secret: Vec<SecretString>,
    /// How far a webhook's signed timestamp may be from now, either way.
    pub webhook_tolerance_secs: u32,
    /// How long one Stripe API call may take before the caller gets a 503 (retry with the
    /// same idempotency key).
    pub timeout_secs: u32,
    /// `KOPILKA__STRIPE__REFUND_ON_EARLY_FRAUD_WARNING`: refund what is left of a payment
    /// when Stripe sends an actionable early fraud warning about it (off by default: the
    /// warning is stored and reported either way).
    #[serde(default)]
    pub refund_on_early_fraud_warning: bool,
}

/// The HTTP server's address and limits.
#[derive(Debug, Clone, Deserialize, Serialize)]
pub struct ServerSettings {
    /// Where `serve` listens (`KOPILKA__SERVER__ADDR`).
    pub addr: SocketAddr,
    /// Requests taking longer are answered 503.
    pub request_timeout_secs: u64,
    /// Largest request body in bytes.
    pub body_limit_bytes: usize,
    /// Largest Stripe webhook body in bytes (events can exceed 64 KiB).
    pub webhook_body_limit_bytes: usize,
    /// How long in-flight requests may take to finish after SIGTERM.
    pub shutdown_grace_secs: u64,
    /// Browser origins allowed to call the API (CORS).
    #[serde(deserialize_with = "crate::list::comma_separated", default)]
    pub cors_allowed_origins: Vec<String>,
    /// Behind a proxy or CDN: the header carrying the client's IP (e.g. `X-Forwarded-For`
    /// or `CF-Connecting-IP`), believed only from [`Self::trusted_proxies`]; unset uses the
    /// peer address.
    #[serde(default)]
    pub client_ip_header: Option<String>,
    /// The proxies and CDN edges (CIDRs, `KOPILKA__SERVER__TRUSTED_PROXIES` comma-separated)
    /// whose [`Self::client_ip_header`] is believed: only a request whose TCP peer is in one
    /// of them is counted under the header's address (the right-most one not itself
    /// trusted). Empty: the header is never believed.
    #[serde(
        default,
        deserialize_with = "crate::list::comma_separated_nets",
        serialize_with = "crate::list::nets_as_text"
    )]
    pub trusted_proxies: Vec<ipnet::IpNet>,
    /// `peer` (`KOPILKA__SERVER__CLIENT_IP`): the operator's explicit word that the TCP peer
    /// is the client (no proxy in front). Production on a non-loopback address needs this
    /// or [`Self::trusted_proxies`].
    #[serde(default)]
    pub client_ip: Option<ClientIpSource>,
    /// Mounts `GET /_baseline`, a constant answer behind the same layers as every route:
    /// the baseline `scripts/bench` measures the offer against. Off unless set.
    #[serde(default)]
    pub baseline_route: bool,
    /// A second listener for operators (`KOPILKA__SERVER__ADMIN_ADDR`, e.g.
    /// `127.0.0.1:9090`): `GET /metrics` is served there, never on the public API. Unset:
    /// no admin listener.
    #[serde(default)]
    pub admin_addr: Option<SocketAddr>,
    /// When set (`KOPILKA__SERVER__METRICS_TOKEN`), `GET /metrics` is also served on the
    /// public listener, to `Authorization: Bearer <token>` only. Unset: 404 there.
    #[serde(default, serialize_with = "masked")]
    pub metrics_token: Option<SecretString>,
}

/// Where the client's IP comes from, when the operator says so explicitly.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ClientIpSource {
    /// The TCP peer: Kopilka is reached directly, no proxy rewrites the connection.
    Peer,
}

impl ServerSettings {
    /// Whether `ip` is one of [`Self::trusted_proxies`].
    #[must_use]
    pub fn is_trusted_proxy(&self, ip: std::net::IpAddr) -> bool {
        let ip = ip.to_canonical();
        self.trusted_proxies.iter().any(|net| net.contains(&ip))
    }

    /// [`Self::request_timeout_secs`] as a duration.
    #[must_use]
    pub fn request_timeout(&self) -> Duration {
        Duration::from_secs(self.request_timeout_secs)
    }

    /// [`Self::shutdown_grace_secs`] as a duration.
    #[must_use]
    pub fn shutdown_grace(&self) -> Duration {
        Duration::from_secs(self.shutdown_grace_secs)
    }
}

/// Postgres: where it is and how many connections to hold.
#[derive(Debug, Clone, Deserialize, Serialize)]
pub struct DatabaseSettings {
    /// `DATABASE_URL`; unset means "start a private cluster" (dev and tests only).
    #[serde(default, serialize_with = "masked")]
    pub url: Option<SecretString>,
    /// Pool size.
    pub max_connections: u32,
    /// Connections kept open when idle.
    pub min_connections: u32,
    /// How long a request waits for a connection before the database counts as unavailable.
    pub acquire_timeout_secs: u64,
    /// Where `kopilka dev` keeps its private cluster.
    pub dev_data_dir: PathBuf,
}

impl DatabaseSettings {
    /// [`Self::acquire_timeout_secs`] as a duration.
    #[must_use]
    pub fn acquire_timeout(&self) -> Duration {
        Duration::from_secs(self.acquire_timeout_secs)
    }
}

/// How logs are written (always to stderr, so stdout stays for command output).
#[derive(Debug, Clone, Deserialize, Serialize)]
pub struct LogSettings {
    /// The format.
    pub format: LogFormat,
    /// A `tracing` `EnvFilter` directive; `RUST_LOG` overrides it.
    pub filter: String,
}

/// Log line format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// JSON when stderr is not a terminal, pretty otherwise.
    Auto,
    /// One JSON object per line.
    Json,
    /// Human-readable.
    Pretty,
}

impl Settings {
    /// Extracts settings from a figment (see [`crate::figment`]) and validates them.
    ///
    /// # Errors
    /// [`ConfigError`] with one line saying what to fix.
    pub fn from_figment(figment: &figment::Figment) -> Result<Self, ConfigError> {
        let settings: Self = figment.extract()?;
        settings.validate()?;
        Ok(settings)
    }

    /// The settings of `env` from the compiled-in defaults and `config_dir`, ignoring the
    /// process environment; for tests and tools that build settings explicitly.
    ///
    /// # Errors
    /// [`ConfigError`] when the files do not parse or validate.
    pub fn for_env(env: Environment, config_dir: &std::path::Path) -> Result<Self, ConfigError> {
        let files_only = crate::file_layers(env, config_dir)
            .merge(figment::providers::Serialized::default("env", env));
        Self::from_figment(&files_only)
    }
}

fn masked_list<S: Serializer>(secrets: &[SecretString], s: S) -> Result<S::Ok, S::Error> {
    s.collect_seq(secrets.iter().map(|_| "<redacted>"))
}

pub(crate) fn masked<S: Serializer>(
    secret: &Option<SecretString>,
    s: S,
) -> Result<S::Ok, S::Error> {
    match secret {
        Some(value) if !value.expose_secret().is_empty() => s.serialize_str("<redacted>"),
        _ => s.serialize_none(),
    }
}
