//! Emailed links: sign in, verify the address, and "you already have an account". Each is
//! single-use, expires, and is rate-limited per address. The token is derived from the
//! link's id with the accounts secret, so the job that sends the email carries only ids;
//! the table keeps only the token's SHA-256.

use kopilka_domain::id::ReaderId;
use kopilka_queue::NewJob;
use sqlx::PgConnection;
use time::OffsetDateTime;

use crate::AccountError;
use crate::keys::{Keys, Purpose, token_hash};

/// The job kind that emails a link (payload: `reader_id`, `link_id`, `purpose`).
pub const EMAIL_LINK_JOB: &str = "accounts.email_link";

/// What a link is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LinkPurpose {
    /// Sign in without a password.
    SignIn,
    /// Confirm the address after sign-up (and the password that sign-up set).
    Verify,
    /// Someone signed up with an address that has an account: tell its owner, with a
    /// sign-in link.
    AlreadyRegistered,
}

impl LinkPurpose {
    /// The stored name.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::SignIn => "sign_in",
            Self::Verify => "verify",
            Self::AlreadyRegistered => "already_registered",
        }
    }

    /// The purpose of a stored name.
    #[must_use]
    pub fn parse(name: &str) -> Option<Self> {
        match name {
            "sign_in" => Some(Self::SignIn),
            "verify" => Some(Self::Verify),
            "already_registered" => Some(Self::AlreadyRegistered),
            _ => None,
        }
    }
}

/// The token of link `id` (for the email that carries it).
#[must_use]
pub fn token_for(keys: &Keys, id: uuid::Uuid) -> String {
    keys.sign(Purpose::EmailLink, id.as_bytes())
}

/// The page a link opens: `{public_url}/v1/sessions/magic-link?token=…`, which posts the
/// token back (a GET never consumes it: mail scanners prefetch links).
#[must_use]
pub fn url_for(keys: &Keys, public_url: &url::Url, id: uuid::Uuid) -> url::Url {
    let mut url = public_url.clone();
    url.set_path("/v1/sessions/magic-link");
    url.query_pairs_mut()
        .clear()
        .append_pair("token", &token_for(keys, id));
    url
}

/// Issues a link for `reader` and enqueues its email, in the caller's transaction. Returns
/// `None` (and sends nothing) when the address already had `per_hour` links this hour.
///
/// # Errors
/// Storage errors.
pub async fn issue(
    conn: &mut PgConnection,
    keys: &Keys,
    reader: ReaderId,
    purpose: LinkPurpose,
    lifetime: time::Duration,
    per_hour: u32,
    now: OffsetDateTime,
) -> Result<Option<uuid::Uuid>, AccountError> {
    // Serialise issuing per reader, so concurrent requests cannot both pass the limit.
    sqlx::query("SELECT id FROM readers WHERE id = $1 FOR UPDATE")
        .bind(reader.as_uuid())
        .execute(&mut *conn)
        .await?;
    let recent: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM email_links WHERE reader_id = $1 AND created_at > $2",
    )
    .bind(reader.as_uuid())
    .bind(now - time::Duration::HOUR)
    .fetch_one(&mut *conn)
    .await?;
    if recent >= i64::from(per_hour) {
        tracing::info!(reader_id = %reader, "email link not sent: hourly limit");
        return Ok(None);
    }
    let id = uuid::Uuid::now_v7();
    sqlx::query(
        "INSERT INTO email_links (id, reader_id, purpose, token_hash, expires_at, created_at)
         VALUES ($1, $2, $3, $4, $5, $6)",
    )
    .bind(id)
    .bind(reader.as_uuid())
    .bind(purpose.as_str())
    .bind(token_hash(&token_for(keys, id)))
    .bind(now + lifetime)
    .bind(now)
    .execute(&mut *conn)
    .await?;
    let job = NewJob::new(
        EMAIL_LINK_JOB,
        serde_json::json!({"reader_id": reader, "link_id": id, "purpose": purpose.as_str()}),
    )
    .dedup(format!("{EMAIL_LINK_JOB}:{id}"));
    kopilka_queue::enqueue(conn, &job).await?;
    tracing::info!(reader_id = %reader, link_id = %id, purpose = purpose.as_str(), "email link issued");
    Ok(Some(id))
}

/// A link that was just used.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Consumed {
    /// Whose it was.
    pub reader_id: ReaderId,
    /// What it was for.
    pub purpose: LinkPurpose,
    /// When it was issued (a password set after it is not the one it was sent for).
    pub issued_at: OffsetDateTime,
    /// Whether this use is what first proved the address.
    pub first_proof: bool,
}

/// Uses the link of `token` once: the address counts as verified from now on. (Whether a
/// verification link also confirms a password is the caller's decision: see
/// `Accounts::sign_in_with_link`.) Unknown, forged, used and expired tokens are all
/// [`AccountError::InvalidLink`].
///
/// # Errors
/// [`AccountError::InvalidLink`]; storage errors.
pub async fn consume(
    conn: &mut PgConnection,
    keys: &Keys,
    token: &str,
    now: OffsetDateTime,
) -> Result<Consumed, AccountError> {
    let id = keys
        .open(Purpose::EmailLink, token)
        .and_then(|bytes| uuid::Uuid::from_slice(&bytes).ok())
        .ok_or(AccountError::InvalidLink)?;
    let row: Option<(uuid::Uuid, String, OffsetDateTime)> = sqlx::query_as(
        "UPDATE email_links SET used_at = $3
         WHERE id = $1 AND token_hash = $2 AND used_at IS NULL AND expires_at > $3
         RETURNING reader_id, purpose, created_at",
    )
    .bind(id)
    .bind(token_hash(token))
    .bind(now)
    .fetch_optional(&mut *conn)
    .await?;
    let (reader, purpose, issued_at) = row.ok_or(AccountError::InvalidLink)?;
    let purpose = LinkPurpose::parse(&purpose).ok_or(AccountError::InvalidLink)?;
    let was_verified: Option<Option<OffsetDateTime>> = sqlx::query_scalar(
        "SELECT verified_at FROM readers WHERE id = $1 AND erased_at IS NULL FOR UPDATE",
    )
    .bind(reader)
    .fetch_optional(&mut *conn)
    .await?;
    let Some(was_verified) = was_verified else {
        return Err(AccountError::InvalidLink);
    };
    sqlx::query("UPDATE readers SET verified_at = coalesce(verified_at, $2) WHERE id = $1")
        .bind(reader)
        .bind(now)
        .execute(&mut *conn)
        .await?;
    tracing::info!(reader_id = %reader, link_id = %id, purpose = purpose.as_str(), "email link used");
    Ok(Consumed {
        reader_id: ReaderId::from_uuid(reader),
        purpose,
        issued_at,
        first_proof: was_verified.is_none(),
    })
}

/// The unconfirmed password hash a usable verification link `token` would confirm (the one
/// its sign-up set, not replaced since), read without locking: a caller checks a password
/// against it before taking any lock, then [`consume`]s and compares again under the lock.
///
/// # Errors
/// Storage errors.
pub async fn pending_password(
    conn: &mut PgConnection,
    keys: &Keys,
    token: &str,
    now: OffsetDateTime,
) -> Result<Option<String>, AccountError> {
    let Some(id) = keys
        .open(Purpose::EmailLink, token)
        .and_then(|bytes| uuid::Uuid::from_slice(&bytes).ok())
    else {
        return Ok(None);
    };
    Ok(sqlx::query_scalar(
        "SELECT c.password_hash FROM email_links l
         JOIN credentials c ON c.reader_id = l.reader_id
         WHERE l.id = $1 AND l.token_hash = $2 AND l.used_at IS NULL AND l.expires_at > $3
           AND l.purpose = 'verify' AND c.confirmed_at IS NULL AND c.set_at <= l.created_at",
    )
    .bind(id)
    .bind(token_hash(token))
    .bind(now)
    .fetch_optional(conn)
    .await?)
}

/// What the email for link `id` needs: its reader, purpose and whether it is still usable.
///
/// # Errors
/// Storage errors.
pub async fn pending(
    conn: &mut PgConnection,
    id: uuid::Uuid,
    now: OffsetDateTime,
) -> Result<Option<(ReaderId, LinkPurpose, OffsetDateTime)>, AccountError> {
    let row: Option<(uuid::Uuid, String, OffsetDateTime)> = sqlx::query_as(
        "SELECT reader_id, purpose, expires_at FROM email_links
         WHERE id = $1 AND used_at IS NULL AND expires_at > $2",
    )
    .bind(id)
    .bind(now)
    .fetch_optional(conn)
    .await?;
    Ok(row.and_then(|(reader, purpose, expires)| {
        LinkPurpose::parse(&purpose).map(|p| (ReaderId::from_uuid(reader), p, expires))
    }))
}

/// Deletes up to `limit` emailed links that were used or expired before `before`; returns
/// how many. Run by the daily retention sweep (`retention.link_days`). (Unsubscribe and
/// one-click plan tokens are signed, not stored: nothing of theirs is here.)
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
        "DELETE FROM email_links WHERE id IN (
             SELECT id FROM email_links
             WHERE least(expires_at, coalesce(used_at, expires_at)) < $1
             LIMIT $2)",
        before,
        limit,
    )
    .await?)
}
