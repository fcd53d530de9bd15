//! Server-side sessions: a random token handed to the reader (cookie or bearer), only its
//! SHA-256 stored; revocable one by one or all at once; a new one at every sign-in.

use kopilka_domain::id::ReaderId;
use secrecy::{ExposeSecret, SecretString};
use serde::Serialize;
use sqlx::PgConnection;
use time::OffsetDateTime;

use crate::AccountError;
use crate::keys::{random_token, token_hash};

/// How the reader proved who they are when the session began.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Proof {
    /// An emailed link: they read the address's mail.
    Mailbox,
    /// A password.
    Password,
}

impl Proof {
    fn as_str(self) -> &'static str {
        match self {
            Self::Mailbox => "mailbox",
            Self::Password => "password",
        }
    }
}

/// A session just begun: the token is shown once, to its reader.
#[derive(Debug)]
pub struct NewSession {
    /// The session's id (listed, revocable).
    pub id: uuid::Uuid,
    /// The bearer token / cookie value.
    pub token: SecretString,
    /// When it stops working.
    pub expires_at: OffsetDateTime,
}

/// The reader behind a valid session.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SignedIn {
    /// The session.
    pub session_id: uuid::Uuid,
    /// Its reader.
    pub reader_id: ReaderId,
    /// Whether this session may see what is linked to the address (contributions, plans,
    /// reminders): the address is verified and the session was begun by an emailed link or
    /// with a password whose sign-up was confirmed from the mailbox.
    pub sees_linked: bool,
}

/// One of a reader's sessions, as they list them.
#[derive(Debug, Clone, Serialize)]
pub struct SessionInfo {
    /// Its id.
    pub id: uuid::Uuid,
    /// `mailbox` or `password`.
    pub proof: String,
    /// When it began.
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
    /// When it was last used (to the minute).
    #[serde(with = "time::serde::rfc3339")]
    pub last_seen_at: OffsetDateTime,
    /// When it ends.
    #[serde(with = "time::serde::rfc3339")]
    pub expires_at: OffsetDateTime,
    /// Whether it is the one asking.
    pub current: bool,
}

/// Begins a session for `reader`.
///
/// # Errors
/// Storage errors.
pub async fn begin(
    conn: &mut PgConnection,
    reader: ReaderId,
    proof: Proof,
    lifetime: std::time::Duration,
    now: OffsetDateTime,
) -> Result<NewSession, AccountError> {
    let token = random_token();
    let id = uuid::Uuid::now_v7();
    let expires_at = now + lifetime;
    // A password session is tied to the password that began it (see `authenticate`).
    sqlx::query(
        "INSERT INTO sessions (id, reader_id, token_hash, proof, created_at, last_seen_at, expires_at,
                               credential_set_at)
         VALUES ($1, $2, $3, $4, $5, $5, $6,
                 CASE WHEN $4 = 'password' THEN (SELECT set_at FROM credentials WHERE reader_id = $2) END)",
    )
    .bind(id)
    .bind(reader.as_uuid())
    .bind(token_hash(&token))
    .bind(proof.as_str())
    .bind(now)
    .bind(expires_at)
    .execute(conn)
    .await?;
    tracing::info!(reader_id = %reader, session_id = %id, proof = proof.as_str(), "session begun");
    Ok(NewSession {
        id,
        token: SecretString::from(token),
        expires_at,
    })
}

/// The reader behind `token`, if it names a live session.
///
/// # Errors
/// Storage errors.
pub async fn authenticate(
    conn: &mut PgConnection,
    token: &SecretString,
    idle: std::time::Duration,
    now: OffsetDateTime,
) -> Result<Option<SignedIn>, AccountError> {
    let idle_since = now - idle;
    let token = token.expose_secret();
    if token.is_empty() || token.len() > 128 {
        return Ok(None);
    }
    let row: Option<(uuid::Uuid, uuid::Uuid, bool)> = sqlx::query_as(
        "UPDATE sessions s SET last_seen_at = CASE WHEN s.last_seen_at < $2 - interval '1 minute'
                 THEN $2 ELSE s.last_seen_at END
         FROM readers r LEFT JOIN credentials c ON c.reader_id = r.id
         WHERE s.token_hash = $1 AND s.revoked_at IS NULL AND s.expires_at > $2
           AND s.last_seen_at > $3
           AND r.id = s.reader_id AND r.erased_at IS NULL
         RETURNING s.id, s.reader_id,
           (r.verified_at IS NOT NULL AND (s.proof = 'mailbox'
             OR (c.confirmed_at IS NOT NULL AND c.set_at = s.credential_set_at)))",
    )
    .bind(token_hash(token))
    .bind(now)
    .bind(idle_since)
    .fetch_optional(conn)
    .await?;
    Ok(row.map(|(session_id, reader, sees_linked)| SignedIn {
        session_id,
        reader_id: ReaderId::from_uuid(reader),
        sees_linked,
    }))
}

/// Ends every live session of `reader` but `except` ("sign out everywhere", or after a
/// password change); returns how many ended.
///
/// # Errors
/// Storage errors.
pub async fn end_all(
    conn: &mut PgConnection,
    reader: ReaderId,
    except: Option<uuid::Uuid>,
    now: OffsetDateTime,
) -> Result<u64, AccountError> {
    let ended = sqlx::query(
        "UPDATE sessions SET revoked_at = $3
         WHERE reader_id = $1 AND revoked_at IS NULL AND id IS DISTINCT FROM $2",
    )
    .bind(reader.as_uuid())
    .bind(except)
    .bind(now)
    .execute(conn)
    .await?;
    tracing::info!(reader_id = %reader, ended = ended.rows_affected(), "sessions ended");
    Ok(ended.rows_affected())
}

/// Ends session `id` (sign-out). Returns whether it was live.
///
/// # Errors
/// Storage errors.
pub async fn end(
    conn: &mut PgConnection,
    id: uuid::Uuid,
    now: OffsetDateTime,
) -> Result<bool, AccountError> {
    Ok(
        sqlx::query("UPDATE sessions SET revoked_at = $2 WHERE id = $1 AND revoked_at IS NULL")
            .bind(id)
            .bind(now)
            .execute(conn)
            .await?
            .rows_affected()
            > 0,
    )
}

/// Ends `reader`'s session `id`; `false` when it is not theirs or already over.
///
/// # Errors
/// Storage errors.
pub async fn revoke(
    conn: &mut PgConnection,
    reader: ReaderId,
    id: uuid::Uuid,
    now: OffsetDateTime,
) -> Result<bool, AccountError> {
    Ok(sqlx::query(
        "UPDATE sessions SET revoked_at = $3 WHERE id = $1 AND reader_id = $2 AND revoked_at IS NULL",
    )
    .bind(id)
    .bind(reader.as_uuid())
    .bind(now)
    .execute(conn)
    .await?
    .rows_affected()
        > 0)
}

/// `reader`'s live sessions, newest first; `current` marks `asking`.
///
/// # Errors
/// Storage errors.
pub async fn list(
    conn: &mut PgConnection,
    reader: ReaderId,
    asking: uuid::Uuid,
    now: OffsetDateTime,
) -> Result<Vec<SessionInfo>, AccountError> {
    let rows: Vec<(
        uuid::Uuid,
        String,
        OffsetDateTime,
        OffsetDateTime,
        OffsetDateTime,
    )> = sqlx::query_as(
        "SELECT id, proof, created_at, last_seen_at, expires_at FROM sessions
         WHERE reader_id = $1 AND revoked_at IS NULL AND expires_at > $2 ORDER BY created_at DESC",
    )
    .bind(reader.as_uuid())
    .bind(now)
    .fetch_all(conn)
    .await?;
    Ok(rows
        .into_iter()
        .map(
            |(id, proof, created_at, last_seen_at, expires_at)| SessionInfo {
                id,
                proof,
                created_at,
                last_seen_at,
                expires_at,
                current: id == asking,
            },
        )
        .collect())
}

/// Deletes up to `limit` sessions that expired or were revoked before `before`; returns
/// how many. Run by the daily retention sweep (`retention.session_days`).
///
/// # Errors
/// Storage errors.
pub async fn forget_ended(
    conn: &mut PgConnection,
    before: OffsetDateTime,
    limit: i64,
) -> Result<u64, AccountError> {
    Ok(kopilka_store::retention::batch(
        conn,
        "DELETE FROM sessions WHERE id IN (
             SELECT id FROM sessions
             WHERE least(expires_at, coalesce(revoked_at, expires_at)) < $1
             LIMIT $2)",
        before,
        limit,
    )
    .await?)
}
