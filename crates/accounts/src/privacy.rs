//! GDPR: what Kopilka holds about a reader (export) and erasure. Erasure removes the
//! address and name and every row that describes the reader (credentials, sessions, links,
//! reminders, banner state); the reader row stays, without PII, so the ledger's amounts,
//! currencies, dates and Stripe ids keep their meaning.

use kopilka_domain::id::ReaderId;
use serde::Serialize;
use sqlx::PgConnection;
use time::OffsetDateTime;

use crate::banner::{self, BannerState};
use crate::reminder::{self, Reminder};
use crate::{AccountError, reader};

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

/// Erases reader `id`'s PII and what describes them (see the module docs). Returns `false`
/// when they were already erased.
///
/// # Errors
/// [`AccountError::NotFound`]; storage errors.
pub async fn erase(
    conn: &mut PgConnection,
    id: ReaderId,
    now: OffsetDateTime,
) -> Result<bool, AccountError> {
    let erased: Option<bool> =
        sqlx::query_scalar("SELECT erased_at IS NOT NULL FROM readers WHERE id = $1 FOR UPDATE")
            .bind(id.as_uuid())
            .fetch_optional(&mut *conn)
            .await?;
    match erased {
        None => return Err(AccountError::NotFound),
        Some(true) => return Ok(false),
        Some(false) => {}
    }
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
    sqlx::query(
        "UPDATE readers SET email = NULL, name = NULL, verified_at = NULL, erased_at = $2
         WHERE id = $1",
    )
    .bind(id.as_uuid())
    .bind(now)
    .execute(conn)
    .await?;
    tracing::info!(reader_id = %id, "reader erased");
    Ok(true)
}
