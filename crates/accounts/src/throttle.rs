//! Failed-login throttling with exponential backoff, per address and per client IP. Both
//! keys are HMACs under the accounts secret (no address and no IP is stored, and an unknown
//! address is throttled exactly like a known one). A row goes when its backoff has ended
//! and `retention.throttle_hours` have passed ([`forget_spent`]).

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
            ip: ip.map(|ip| {
                format!(
                    "ip:{}",
                    keys.digest(Purpose::IpKey, canonical(ip).as_bytes())
                )
            }),
        }
    }
}

impl LoginKeys {
    /// Keys for a pass-code attempt from `ip`: the client's own code counter (counted
    /// against `free_failures_per_account`) and the IP counter password sign-ins count on,
    /// so guessing codes and guessing passwords spend one budget.
    #[must_use]
    pub fn for_code(keys: &Keys, ip: Option<IpAddr>) -> Self {
        let ip = ip.map(|ip| keys.digest(Purpose::IpKey, canonical(ip).as_bytes()));
        Self {
            address: format!("code:{}", ip.as_deref().unwrap_or("unknown")),
            ip: ip.map(|ip| format!("ip:{ip}")),
        }
    }
}

/// IPv6 clients are throttled per /64 (one host usually owns the whole prefix): see
/// [`kopilka_domain::client::throttle_key`], the one rule every per-client limit uses.
#[must_use]
pub fn canonical(ip: IpAddr) -> String {
    match kopilka_domain::client::throttle_key(ip) {
        IpAddr::V4(v4) => v4.to_string(),
        IpAddr::V6(v6) => format!("{v6}/64"),
    }
}

/// The backoff after `failures` failures when `free` are allowed: none, then `base`,
/// doubling, at most `max`.
#[must_use]
pub fn backoff(failures: u32, free: u32, base: Duration, max: Duration) -> Option<Duration> {
    let over = failures.checked_sub(free)?.checked_sub(1)?;
    let factor = 2_u32.saturating_pow(over.min(31));
    Some(base.saturating_mul(factor).min(max))
}

/// Reserves one attempt on both keys, counted as a failure until [`succeeded`] says
/// otherwise, or answers how long to wait while either key is blocked. The block is set when
/// the attempt is reserved, in the same statement that counts it, so a burst of parallel
/// guesses cannot all pass the check before the first failure is written. Commit the
/// transaction before checking the password; a refusal leaves nothing to commit.
///
/// # Errors
/// Storage errors.
pub async fn reserve(
    conn: &mut PgConnection,
    keys: &LoginKeys,
    settings: &AccountsSettings,
    now: OffsetDateTime,
) -> Result<Option<Duration>, AccountError> {
    let base = Duration::from_secs(settings.backoff_base_secs);
    let max = Duration::from_secs(settings.backoff_max_secs);
    let mut both = vec![(keys.address.as_str(), settings.free_failures_per_account)];
    if let Some(ip) = &keys.ip {
        both.push((ip.as_str(), settings.free_failures_per_ip));
    }
    for (key, free) in both {
        let counted: Option<i32> = sqlx::query_scalar(
            "INSERT INTO login_throttles (key, failures) VALUES ($1, 1)
             ON CONFLICT (key) DO UPDATE SET failures = login_throttles.failures + 1
                 WHERE login_throttles.blocked_until IS NULL OR login_throttles.blocked_until <= $2
             RETURNING failures",
        )
        .bind(key)
        .bind(now)
        .fetch_optional(&mut *conn)
        .await?;
        let Some(failures) = counted else {
            let until: Option<OffsetDateTime> =
                sqlx::query_scalar("SELECT blocked_until FROM login_throttles WHERE key = $1")
                    .bind(key)
                    .fetch_one(&mut *conn)
                    .await?;
            let wait = until.map_or(base, |u| Duration::try_from(u - now).unwrap_or(base));
            return Ok(Some(wait));
        };
        if let Some(wait) = backoff(u32::try_from(failures).unwrap_or(u32::MAX), free, base, max) {
            sqlx::query("UPDATE login_throttles SET blocked_until = $2 WHERE key = $1")
                .bind(key)
                .bind(now + wait)
                .execute(&mut *conn)
                .await?;
        }
    }
    Ok(None)
}

/// A successful login clears the address's counter and takes back the IP's reserved
/// failure (lifting the IP's block if that brings it under the free failures).
///
/// # Errors
/// Storage errors.
pub async fn succeeded(
    conn: &mut PgConnection,
    keys: &LoginKeys,
    settings: &AccountsSettings,
) -> Result<(), AccountError> {
    sqlx::query("DELETE FROM login_throttles WHERE key = $1")
        .bind(&keys.address)
        .execute(&mut *conn)
        .await?;
    if let Some(ip) = &keys.ip {
        sqlx::query(
            "UPDATE login_throttles SET failures = greatest(failures - 1, 0),
                 blocked_until = CASE WHEN failures - 1 <= $2 THEN NULL ELSE blocked_until END
             WHERE key = $1",
        )
        .bind(ip)
        .bind(i64::from(settings.free_failures_per_ip))
        .execute(&mut *conn)
        .await?;
        // An IP with nothing counted against it needs no row.
        sqlx::query("DELETE FROM login_throttles WHERE key = $1 AND failures <= 0")
            .bind(ip)
            .execute(conn)
            .await?;
    }
    Ok(())
}

/// Forgets the sign-in throttle of `email` (erasure: the key is a keyed digest of the
/// address, so it would still tie the address to attempts).
///
/// # Errors
/// Storage errors.
pub async fn forget_address(
    conn: &mut PgConnection,
    keys: &Keys,
    email: &Email,
) -> Result<(), AccountError> {
    sqlx::query("DELETE FROM login_throttles WHERE key = $1")
        .bind(&LoginKeys::new(keys, email, None).address)
        .execute(conn)
        .await?;
    Ok(())
}

/// Deletes up to `limit` counters whose backoff ended (or, never blocked, whose last
/// failure was) before `before`; returns how many. A key that fails again later starts
/// from zero. Run by the daily retention sweep (`retention.throttle_hours`).
///
/// # Errors
/// Storage errors.
pub async fn forget_spent(
    conn: &mut PgConnection,
    before: OffsetDateTime,
    limit: i64,
) -> Result<u64, AccountError> {
    Ok(kopilka_store::retention::batch(
        conn,
        "DELETE FROM login_throttles WHERE key IN (
             SELECT key FROM login_throttles
             WHERE greatest(updated_at, coalesce(blocked_until, updated_at)) < $1
             LIMIT $2)",
        before,
        limit,
    )
    .await?)
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
