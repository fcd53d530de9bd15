//! GDPR: what Kopilka holds about a reader (export) and the accounts' part of erasure.
//! Erasure removes every row that describes the reader (credentials, sessions, links,
//! reminders, banner state, the address's throttle) and then the reader row itself; the
//! ledger keeps amounts, currencies, dates and Stripe ids with no reader. Their supporter
//! tokens are revoked at once (`revoked_supporters`, announced by NOTIFY).

use kopilka_domain::Email;
use kopilka_domain::id::ReaderId;
use serde::Serialize;
use sqlx::PgConnection;
use time::OffsetDateTime;

use crate::banner::{self, BannerState};
use crate::reminder::{self, Reminder};
use crate::{AccountError, Keys, reader};

/// Everything the accounts crate holds about a reader.
#[derive(Debug, Clone, Serialize)]
pub struct AccountExport {
    /// Their id.
    pub id: ReaderId,
    /// Their address.
    pub email: Option<String>,
    /// Their name.
    pub name: Option<String>,
    /// Their language.
    pub locale: String,
    /// When the address was verified.
    #[serde(with = "time::serde::rfc3339::option")]
    pub verified_at: Option<OffsetDateTime>,
    /// When they first appeared.
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
    /// Whether a password is set (never the hash).
    pub has_password: bool,
    /// Sessions (ids and times).
    pub sessions: Vec<serde_json::Value>,
    /// Reminders.
    pub reminders: Vec<Reminder>,
    /// The banner's state.
    pub banner: BannerState,
}

/// The accounts part of a reader's export.
///
/// # Errors
/// [`AccountError::NotFound`]; storage errors.
pub async fn export(conn: &mut PgConnection, id: ReaderId) -> Result<AccountExport, AccountError> {
    let reader = reader::by_id(&mut *conn, id)
        .await?
        .ok_or(AccountError::NotFound)?;
    let has_password: bool =
        sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM credentials WHERE reader_id = $1)")
            .bind(id.as_uuid())
            .fetch_one(&mut *conn)
            .await?;
    let sessions: Vec<serde_json::Value> = sqlx::query_scalar(
        "SELECT jsonb_build_object('id', id, 'proof', proof, 'created_at', created_at,
                'last_seen_at', last_seen_at, 'expires_at', expires_at, 'revoked_at', revoked_at)
         FROM sessions WHERE reader_id = $1 ORDER BY created_at",
    )
    .bind(id.as_uuid())
    .fetch_all(&mut *conn)
    .await?;
    Ok(AccountExport {
        id,
        email: reader.email.as_ref().map(|e| e.expose().to_owned()),
        name: reader.name,
        locale: reader.locale.to_string(),
        verified_at: reader.verified_at,
        created_at: reader.created_at,
        has_password,
        sessions,
        reminders: reminder::of_reader(&mut *conn, id).await?,
        banner: banner::load(conn, id).await?,
    })
}

/// The NOTIFY channel that tells every API instance a supporter token was revoked.
pub const REVOKED_SUPPORTERS_CHANNEL: &str = "kopilka_revoked_supporters";

/// Locks reader `id` for erasure (in the caller's transaction) and returns their address,
/// if any is left.
///
/// # Errors
/// [`AccountError::NotFound`]; storage errors.
pub async fn lock_for_erasure(
    conn: &mut PgConnection,
    id: ReaderId,
) -> Result<Option<Email>, AccountError> {
    let row: Option<Option<String>> =
        sqlx::query_scalar("SELECT email FROM readers WHERE id = $1 FOR UPDATE")
            .bind(id.as_uuid())
            .fetch_optional(&mut *conn)
            .await?;
    let email = row.ok_or(AccountError::NotFound)?;
    Ok(email.and_then(|e| Email::parse(&e).ok()))
}

/// Forgets reader `id` (in the caller's transaction, after [`lock_for_erasure`] and after
/// every other crate unlinked its rows): sessions, magic links, credentials, reminders,
/// banner state, the address's sign-in throttle and the reader row itself go. Their
/// supporter tokens are revoked until `revoke_until` (when the last one issued expires), and
/// every API instance hears of it on commit (NOTIFY).
///
/// # Errors
/// Storage errors (e.g. a row of another crate still pointing at the reader).
pub async fn forget(
    conn: &mut PgConnection,
    keys: &Keys,
    id: ReaderId,
    email: Option<&Email>,
    now: OffsetDateTime,
    revoke_until: OffsetDateTime,
) -> Result<(), AccountError> {
    for table in [
        "DELETE FROM sessions WHERE reader_id = $1",
        "DELETE FROM email_links WHERE reader_id = $1",
        "DELETE FROM credentials WHERE reader_id = $1",
        "DELETE FROM reminders WHERE reader_id = $1",
        "DELETE FROM banner_states WHERE reader_id = $1",
    ] {
        sqlx::query(table)
            .bind(id.as_uuid())
            .execute(&mut *conn)
            .await?;
    }
    if let Some(email) = email {
        crate::throttle::forget_address(&mut *conn, keys, email).await?;
    }
    sqlx::query(
        "INSERT INTO revoked_supporters (reader_id, revoked_at, until) VALUES ($1, $2, $3)
         ON CONFLICT (reader_id) DO UPDATE SET until = greatest(revoked_supporters.until, $3)",
    )
    .bind(id.as_uuid())
    .bind(now)
    .bind(revoke_until)
    .execute(&mut *conn)
    .await?;
    sqlx::query("DELETE FROM readers WHERE id = $1")
        .bind(id.as_uuid())
        .execute(&mut *conn)
        .await?;
    sqlx::query("SELECT pg_notify($1, $2)")
        .bind(REVOKED_SUPPORTERS_CHANNEL)
        .bind(id.to_string())
        .execute(conn)
        .await?;
    tracing::info!(reader_id = %id, "reader erased");
    Ok(())
}

/// The former reader ids whose supporter tokens are revoked and may still be unexpired at
/// `now` (what an API instance loads at start and on each NOTIFY).
///
/// # Errors
/// Storage errors.
pub async fn revoked_supporters(
    conn: &mut PgConnection,
    now: OffsetDateTime,
) -> Result<Vec<uuid::Uuid>, AccountError> {
    Ok(
        sqlx::query_scalar("SELECT reader_id FROM revoked_supporters WHERE until > $1")
            .bind(now)
            .fetch_all(conn)
            .await?,
    )
}
