//! Readers: the only rows holding PII. Every other table names a reader by id.

use kopilka_domain::id::ReaderId;
use kopilka_domain::{Email, Locale};
use sqlx::PgConnection;
use time::OffsetDateTime;

use crate::AccountError;

/// The longest name kept (longer ones are refused, never cut).
pub const MAX_NAME_CHARS: usize = 200;

/// A reader as their own account shows them.
#[derive(Debug, Clone)]
pub struct Reader {
    /// Kopilka's id.
    pub id: ReaderId,
    /// Their address (`None` once erased).
    pub email: Option<Email>,
    /// What they asked to be called.
    pub name: Option<String>,
    /// The language emails are written in.
    pub locale: Locale,
    /// When an emailed link proved the address.
    pub verified_at: Option<OffsetDateTime>,
    /// When they first appeared (checkout, reminder or sign-up).
    pub created_at: OffsetDateTime,
    /// Mail to them stopped (a hard bounce).
    pub mail_suppressed_at: Option<OffsetDateTime>,
}

/// Checks a display name: trimmed, at most [`MAX_NAME_CHARS`], no control characters.
///
/// # Errors
/// [`AccountError::Refused`] `invalid_name`.
pub fn parse_name(raw: Option<&str>) -> Result<Option<String>, AccountError> {
    let Some(name) = raw.map(str::trim).filter(|n| !n.is_empty()) else {
        return Ok(None);
    };
    if name.chars().count() > MAX_NAME_CHARS || name.chars().any(char::is_control) {
        return Err(AccountError::refused(
            "invalid_name",
            format!("a name has at most {MAX_NAME_CHARS} characters and no control characters"),
        ));
    }
    Ok(Some(name.to_owned()))
}

/// The reader of `email`, created (unverified) when there is none.
///
/// # Errors
/// Storage errors.
pub async fn find_or_create(
    conn: &mut PgConnection,
    email: &Email,
) -> Result<ReaderId, AccountError> {
    let id: uuid::Uuid = sqlx::query_scalar(
        "INSERT INTO readers (id, email) VALUES ($1, $2)
         ON CONFLICT (lower(email)) WHERE email IS NOT NULL DO UPDATE SET email = readers.email
         RETURNING id",
    )
    .bind(ReaderId::new().as_uuid())
    .bind(email.expose())
    .fetch_one(conn)
    .await?;
    Ok(ReaderId::from_uuid(id))
}

/// The reader of `email`, if any (erased readers have no address and are never found).
///
/// # Errors
/// Storage errors.
pub async fn find(
    conn: &mut PgConnection,
    email: &Email,
) -> Result<Option<ReaderId>, AccountError> {
    let id: Option<uuid::Uuid> =
        sqlx::query_scalar("SELECT id FROM readers WHERE lower(email) = $1")
            .bind(email.expose())
            .fetch_optional(conn)
            .await?;
    Ok(id.map(ReaderId::from_uuid))
}

/// Reader `id`.
///
/// # Errors
/// Storage errors.
pub async fn by_id(conn: &mut PgConnection, id: ReaderId) -> Result<Option<Reader>, AccountError> {
    type Row = (
        uuid::Uuid,
        Option<String>,
        Option<String>,
        String,
        Option<OffsetDateTime>,
        OffsetDateTime,
        Option<OffsetDateTime>,
    );
    let row: Option<Row> = sqlx::query_as(
        "SELECT id, email, name, locale, verified_at, created_at, mail_suppressed_at
         FROM readers WHERE id = $1",
    )
    .bind(id.as_uuid())
    .fetch_optional(conn)
    .await?;
    Ok(row.map(
        |(id, email, name, locale, verified_at, created_at, mail_suppressed_at)| Reader {
            id: ReaderId::from_uuid(id),
            email: email.and_then(|e| Email::parse(&e).ok()),
            name,
            locale: locale.parse().unwrap_or_default(),
            verified_at,
            created_at,
            mail_suppressed_at,
        },
    ))
}

/// Sets the name and language the reader asked for (only those given).
///
/// # Errors
/// Storage errors.
pub async fn update_profile(
    conn: &mut PgConnection,
    id: ReaderId,
    name: Option<&str>,
    locale: Option<Locale>,
) -> Result<(), AccountError> {
    sqlx::query(
        "UPDATE readers SET name = coalesce($2, name), locale = coalesce($3, locale)
         WHERE id = $1 AND erased_at IS NULL",
    )
    .bind(id.as_uuid())
    .bind(name)
    .bind(locale.map(Locale::as_str))
    .execute(conn)
    .await?;
    Ok(())
}

/// Stops asks to this reader's address (a permanent delivery failure): pending reminders
/// are suppressed. Returns whether anything changed.
///
/// # Errors
/// Storage errors.
pub async fn suppress_mail(
    conn: &mut PgConnection,
    id: ReaderId,
    now: OffsetDateTime,
) -> Result<bool, AccountError> {
    let changed = sqlx::query(
        "UPDATE readers SET mail_suppressed_at = coalesce(mail_suppressed_at, $2) WHERE id = $1",
    )
    .bind(id.as_uuid())
    .bind(now)
    .execute(&mut *conn)
    .await?
    .rows_affected()
        > 0;
    sqlx::query(
        "UPDATE reminders SET status = 'suppressed', reason = 'mail_suppressed'
         WHERE reader_id = $1 AND status = 'pending'",
    )
    .bind(id.as_uuid())
    .execute(conn)
    .await?;
    Ok(changed)
}
