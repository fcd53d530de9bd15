//! Which supporter-token signing keys exist and when each retires. The keys themselves are
//! derived by the paywall crate from its secret and the key's id; only ids and dates are
//! stored. The newest key signs; `rotate` adds one and starts the grace period of every key
//! older than the previous one.

use sqlx::PgConnection;
use time::OffsetDateTime;

use crate::AccountError;

/// A stored key id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SigningKey {
    /// The `kid`.
    pub kid: String,
    /// When it was added.
    pub created_at: OffsetDateTime,
    /// When it stops verifying.
    pub retires_at: Option<OffsetDateTime>,
}

/// Every key, oldest first.
///
/// # Errors
/// Storage errors.
pub async fn all(conn: &mut PgConnection) -> Result<Vec<SigningKey>, AccountError> {
    let rows: Vec<(String, OffsetDateTime, Option<OffsetDateTime>)> = sqlx::query_as(
        "SELECT kid, created_at, retires_at FROM signing_keys ORDER BY created_at, kid",
    )
    .fetch_all(conn)
    .await?;
    Ok(rows
        .into_iter()
        .map(|(kid, created_at, retires_at)| SigningKey {
            kid,
            created_at,
            retires_at,
        })
        .collect())
}

fn new_kid(now: OffsetDateTime) -> String {
    let suffix = crate::keys::random_bytes::<4>()
        .iter()
        .fold(String::new(), |mut s, b| {
            use std::fmt::Write as _;
            let _ = write!(s, "{b:02x}");
            s
        });
    format!("k{}-{suffix}", now.unix_timestamp())
}

/// Makes sure a key exists (the first start); returns the keys.
///
/// # Errors
/// Storage errors.
pub async fn ensure_one(
    conn: &mut PgConnection,
    now: OffsetDateTime,
) -> Result<Vec<SigningKey>, AccountError> {
    // Two instances starting at once must not both add a first key.
    sqlx::query("SELECT pg_advisory_xact_lock(hashtext('kopilka_signing_keys'))")
        .execute(&mut *conn)
        .await?;
    let live: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM signing_keys WHERE retires_at IS NULL OR retires_at > $1",
    )
    .bind(now)
    .fetch_one(&mut *conn)
    .await?;
    if live == 0 {
        sqlx::query("INSERT INTO signing_keys (kid, created_at) VALUES ($1, $2)")
            .bind(new_kid(now))
            .bind(now)
            .execute(&mut *conn)
            .await?;
    }
    all(conn).await
}

/// What a rotation did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rotation {
    /// The key that signs from now on.
    pub signing: String,
    /// Keys that now retire at the end of the grace period.
    pub retiring: Vec<String>,
    /// When they retire.
    pub retires_at: OffsetDateTime,
}

/// Adds a new signing key; the previous one keeps verifying (published as "previous"), and
/// every older live key retires after `grace`.
///
/// # Errors
/// Storage errors.
pub async fn rotate(
    conn: &mut PgConnection,
    now: OffsetDateTime,
    grace: time::Duration,
) -> Result<Rotation, AccountError> {
    sqlx::query("SELECT pg_advisory_xact_lock(hashtext('kopilka_signing_keys'))")
        .execute(&mut *conn)
        .await?;
    let previous: Option<String> = sqlx::query_scalar(
        "SELECT kid FROM signing_keys WHERE retires_at IS NULL ORDER BY created_at DESC, kid DESC LIMIT 1",
    )
    .fetch_optional(&mut *conn)
    .await?;
    let retires_at = now + grace;
    let retiring: Vec<String> = sqlx::query_scalar(
        "UPDATE signing_keys SET retires_at = $2
         WHERE retires_at IS NULL AND kid IS DISTINCT FROM $1 RETURNING kid",
    )
    .bind(previous.as_deref())
    .bind(retires_at)
    .fetch_all(&mut *conn)
    .await?;
    let signing = new_kid(now);
    sqlx::query("INSERT INTO signing_keys (kid, created_at) VALUES ($1, $2)")
        .bind(&signing)
        .bind(now)
        .execute(&mut *conn)
        .await?;
    tracing::info!(kid = %signing, retiring = retiring.len(), "signing key rotated");
    Ok(Rotation {
        signing,
        retiring,
        retires_at,
    })
}
