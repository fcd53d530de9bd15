//! `[limits]`: how much any stranger may ask of Kopilka. Every public write counts against
//! three budgets per window — its client (IP, IPv6 per /64), the address it names (when it
//! names one), and everyone at once — shared by every instance through Postgres.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::ConfigError;

/// One public write's budgets: requests per `window_secs`, per client, per address and in
/// all. `0` per address means the route names no address.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
pub struct RouteLimit {
    /// Requests one client (IP; IPv6 per /64) may make per window.
    pub per_client: u32,
    /// Requests naming one address per window (0: the route names none).
    pub per_address: u32,
    /// Requests from everyone per window: the most the route takes on at once.
    pub global: u32,
    /// The window, in seconds.
    pub window_secs: u32,
}

impl RouteLimit {
    /// [`Self::window_secs`] as a duration.
    #[must_use]
    pub fn window(&self) -> Duration {
        Duration::from_secs(u64::from(self.window_secs))
    }
}

/// Limits on every public write, and the bounds of the work they leave behind.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
pub struct LimitsSettings {
    /// How often an instance adds its counts to the shared ones in Postgres and reads the
    /// others' back (milliseconds): no request waits on Postgres for a limit; instances may
    /// together overshoot a budget by what they admit in one interval.
    pub flush_ms: u64,
    /// Counters one instance keeps in memory; past it, new clients are refused (503) until
    /// the window turns.
    pub max_keys: usize,
    /// Work a request may leave running after its answer (sign-in link requests); past it,
    /// the request is refused (503 `busy`, `Retry-After`) rather than queued without bound.
    pub background_tasks: usize,
    /// Public writes admitted and still being handled, at most (each may hold a database
    /// connection, call Stripe or hash a password); past it, 503 `busy` with `Retry-After`,
    /// so a flood's admitted work never takes every connection from the reads.
    pub writes_in_flight: usize,
    /// Besides its window, each route admits from everyone at most `global × burst_factor /
    /// window_secs` a second (at least 1), so a flood cannot spend a whole window's budget
    /// in its first second; 0 turns this off.
    pub burst_factor: u32,
    /// `POST /v1/checkout`.
    pub checkout: RouteLimit,
    /// `POST /v1/accounts`.
    pub sign_up: RouteLimit,
    /// `POST /v1/sessions/magic-link` (and verification resends).
    pub sign_in_link: RouteLimit,
    /// `POST /v1/sessions` (besides the failure backoff).
    pub sign_in: RouteLimit,
    /// `POST /v1/reminders`.
    pub reminder: RouteLimit,
    /// The plan-link routes (`/v1/plan-links/{token}`).
    pub plan_link: RouteLimit,
    /// `POST /v1/passes/redeem` and `POST /v1/passes/revoke` (besides the failure backoff
    /// they share with password sign-in).
    #[serde(default = "default_pass_code")]
    pub pass_code: RouteLimit,
}

fn default_pass_code() -> RouteLimit {
    RouteLimit {
        per_client: 20,
        per_address: 0,
        global: 3000,
        window_secs: 600,
    }
}

impl LimitsSettings {
    /// [`Self::flush_ms`] as a duration.
    #[must_use]
    pub fn flush(&self) -> Duration {
        Duration::from_millis(self.flush_ms)
    }

    /// Every route's limit with its name (for validation and the README).
    #[must_use]
    pub fn routes(&self) -> [(&'static str, RouteLimit); 7] {
        [
            ("checkout", self.checkout),
            ("sign_up", self.sign_up),
            ("sign_in_link", self.sign_in_link),
            ("sign_in", self.sign_in),
            ("reminder", self.reminder),
            ("plan_link", self.plan_link),
            ("pass_code", self.pass_code),
        ]
    }

    pub(crate) fn validate(&self) -> Result<(), ConfigError> {
        let invalid = |what: String| Err(ConfigError::Invalid(what));
        if !(10..=10_000).contains(&self.flush_ms) {
            return invalid("limits.flush_ms must be 10 to 10000".into());
        }
        if self.max_keys < 1_000 {
            return invalid("limits.max_keys must be at least 1000".into());
        }
        if self.writes_in_flight == 0 {
            return invalid("limits.writes_in_flight must be at least 1".into());
        }
        if self.burst_factor > 1000 {
            return invalid("limits.burst_factor must be 0 to 1000".into());
        }
        if self.background_tasks == 0 {
            return invalid("limits.background_tasks must be at least 1".into());
        }
        for (name, limit) in self.routes() {
            if limit.per_client == 0 || limit.global == 0 {
                return invalid(format!(
                    "limits.{name}: per_client and global must be at least 1"
                ));
            }
            if limit.window_secs == 0 || limit.window_secs > 86_400 {
                return invalid(format!("limits.{name}.window_secs must be 1 to 86400"));
            }
            if limit.per_client > limit.global || limit.per_address > limit.global {
                return invalid(format!(
                    "limits.{name}: per_client and per_address may not exceed global"
                ));
            }
        }
        Ok(())
    }
}
