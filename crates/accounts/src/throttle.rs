//! Failed-login throttling with exponential backoff, per address and per client IP. The
//! address is keyed with the accounts secret (no address is stored, and an unknown address
//! is throttled exactly like a known one).

use std::net::IpAddr;
use std::time::Duration;

use kopilka_config::AccountsSettings;
use kopilka_domain::Email;
use sqlx::PgConnection;
use time::OffsetDateTime;

use crate::AccountError;
use crate::keys::{Keys, Purpose};

/// The throttle keys of one login attempt.
#[derive(Debug, Clone)]
pub struct LoginKeys {
    address: String,
    ip: Option<String>,
}

impl LoginKeys {
    /// Keys for `email` from `ip`.
    #[must_use]
    pub fn new(keys: &Keys, email: &Email, ip: Option<IpAddr>) -> Self {
        Self {
            address: format!(
                "address:{}",
                keys.digest(Purpose::AddressKey, email.expose().as_bytes())
            ),
            ip: ip.map(|ip| format!("ip:{}", canonical(ip))),
        }
    }
}

/// IPv6 clients are throttled per /64 (one host usually owns the whole prefix).
fn canonical(ip: IpAddr) -> String {
    match ip {
        IpAddr::V4(v4) => v4.to_string(),
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => v4.to_string(),
            None => {
                let s = v6.segments();
                format!("{:x}:{:x}:{:x}:{:x}::/64", s[0], s[1], s[2], s[3])
            }
        },
    }
}

/// How long until these keys may try again, if they are blocked now.
///
/// # Errors
/// Storage errors.
pub async fn blocked_for(
    conn: &mut PgConnection,
    keys: &LoginKeys,
    now: OffsetDateTime,
) -> Result<Option<Duration>, AccountError> {
    let until: Option<OffsetDateTime> = sqlx::query_scalar(
        "SELECT max(blocked_until) FROM login_throttles WHERE key = $1 OR key = $2",
    )
    .bind(&keys.address)
    .bind(keys.ip.as_deref())
    .fetch_one(conn)
    .await?;
    Ok(until
        .filter(|u| *u > now)
        .map(|u| Duration::try_from(u - now).unwrap_or_default()))
}

/// The backoff after `failures` failures when `free` are allowed: none, then `base`,
/// doubling, at most `max`.
#[must_use]
pub fn backoff(failures: u32, free: u32, base: Duration, max: Duration) -> Option<Duration> {
    let over = failures.checked_sub(free)?.checked_sub(1)?;
    let factor = 2_u32.saturating_pow(over.min(31));
    Some(base.saturating_mul(factor).min(max))
}

/// Records a failed login on both keys.
///
/// # Errors
/// Storage errors.
pub async fn failed(
    conn: &mut PgConnection,
    keys: &LoginKeys,
    settings: &AccountsSettings,
    now: OffsetDateTime,
) -> Result<(), AccountError> {
    let base = Duration::from_secs(settings.backoff_base_secs);
    let max = Duration::from_secs(settings.backoff_max_secs);
    let mut both = vec![(keys.address.as_str(), settings.free_failures_per_account)];
    if let Some(ip) = &keys.ip {
        both.push((ip.as_str(), settings.free_failures_per_ip));
    }
    for (key, free) in both {
        let failures: i32 = sqlx::query_scalar(
            "INSERT INTO login_throttles (key, failures) VALUES ($1, 1)
             ON CONFLICT (key) DO UPDATE SET failures = login_throttles.failures + 1
             RETURNING failures",
        )
        .bind(key)
        .fetch_one(&mut *conn)
        .await?;
        if let Some(wait) = backoff(u32::try_from(failures).unwrap_or(u32::MAX), free, base, max) {
            sqlx::query("UPDATE login_throttles SET blocked_until = $2 WHERE key = $1")
                .bind(key)
                .bind(now + wait)
                .execute(&mut *conn)
                .await?;
        }
    }
    Ok(())
}

/// A successful login clears the address's counter (not the IP's).
///
/// # Errors
/// Storage errors.
pub async fn succeeded(conn: &mut PgConnection, keys: &LoginKeys) -> Result<(), AccountError> {
    sqlx::query("DELETE FROM login_throttles WHERE key = $1")
        .bind(&keys.address)
        .execute(conn)
        .await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_starts_after_the_free_failures_and_doubles_to_the_cap() {
        let (b, m) = (Duration::from_secs(1), Duration::from_secs(900));
        assert_eq!(backoff(5, 5, b, m), None);
        assert_eq!(backoff(6, 5, b, m), Some(Duration::from_secs(1)));
        assert_eq!(backoff(7, 5, b, m), Some(Duration::from_secs(2)));
        assert_eq!(backoff(10, 5, b, m), Some(Duration::from_secs(16)));
        assert_eq!(backoff(1000, 5, b, m), Some(m));
    }

    #[test]
    fn ipv6_clients_share_their_slash_64() {
        let a: IpAddr = "2001:db8:1:2:aaaa::1".parse().unwrap();
        let b: IpAddr = "2001:db8:1:2:bbbb::2".parse().unwrap();
        assert_eq!(canonical(a), canonical(b));
        assert_eq!(canonical("::ffff:10.0.0.1".parse().unwrap()), "10.0.0.1");
    }
}
