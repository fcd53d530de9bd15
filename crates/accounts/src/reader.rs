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

impl Reader {
    /// The name emails may greet them by: only once the address is proven (a name given
    /// with an unproven address may be anyone's text, so such emails greet generically).
    #[must_use]
    pub fn greeting_name(&self) -> Option<&str> {
        self.verified_at.and(self.name.as_deref())
    }
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

/// Where a pass of [`forget_unverified`] stopped: the next batch starts after it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReaderCursor {
    created_at: OffsetDateTime,
    id: uuid::Uuid,
}

/// Deletes readers who signed up (or were named at a checkout or reminder) before
/// `before`, never verified their address, were never erased, and have nothing linked,
/// looking at up to `limit` candidates after `after`; returns how many were deleted and,
/// when the batch was full, where the next batch starts. Run by the daily retention sweep
/// (`retention.unverified_reader_days`), one transaction per batch.
///
/// Nothing linked means: no reminder (of any status) and no live session here, no
/// contribution (and so no plan), and no row of any other table naming the reader (a
/// stored event…). Those tables reference `readers` without cascading, so their foreign
/// keys refuse the delete; each reader is deleted under its own savepoint and a refused one
/// is kept. What cascades with the reader is the reader's own: credentials, spent links,
/// banner state, ended sessions, email-send records.
///
/// The candidates are locked first (`FOR UPDATE SKIP LOCKED`: a reader another
/// transaction is linking right now is skipped), and the delete re-reads what is linked
/// in a later snapshot: a reminder or contribution committed meanwhile keeps the reader,
/// and one written after the lock waits for this transaction and then finds no reader (a
/// checkout or reminder for the same address creates a fresh one).
///
/// # Errors
/// Storage errors.
pub async fn forget_unverified(
    conn: &mut PgConnection,
    before: OffsetDateTime,
    now: OffsetDateTime,
    limit: i64,
    after: Option<ReaderCursor>,
) -> Result<(u64, Option<ReaderCursor>), AccountError> {
    // Readers with a contribution are by far the most common linked ones (most donors
    // never sign in): leave them out here, so a batch is not filled with keepers.
    let candidates: Vec<(uuid::Uuid, OffsetDateTime)> = sqlx::query_as(
        "SELECT id, created_at FROM readers r
         WHERE verified_at IS NULL AND erased_at IS NULL AND created_at < $1
           AND ($3::timestamptz IS NULL OR (created_at, id) > ($3, $4))
           AND NOT EXISTS (SELECT 1 FROM reminders m WHERE m.reader_id = r.id)
           AND NOT EXISTS (SELECT 1 FROM contributions c WHERE c.reader_id = r.id)
         ORDER BY created_at, id
         LIMIT $2
         FOR UPDATE SKIP LOCKED",
    )
    .bind(before)
    .bind(limit)
    .bind(after.map(|c| c.created_at))
    .bind(after.map(|c| c.id))
    .fetch_all(&mut *conn)
    .await?;
    let next = (i64::try_from(candidates.len()).unwrap_or(i64::MAX) >= limit)
        .then(|| {
            candidates
                .last()
                .map(|&(id, created_at)| ReaderCursor { created_at, id })
        })
        .flatten();
    let mut deleted = 0;
    for (id, _) in candidates {
        sqlx::query("SAVEPOINT forget_reader")
            .execute(&mut *conn)
            .await?;
        let outcome = sqlx::query(
            "DELETE FROM readers r
             WHERE id = $1 AND verified_at IS NULL AND erased_at IS NULL
               AND NOT EXISTS (SELECT 1 FROM reminders m WHERE m.reader_id = r.id)
               AND NOT EXISTS (SELECT 1 FROM sessions s WHERE s.reader_id = r.id
                               AND s.revoked_at IS NULL AND s.expires_at > $2)",
        )
        .bind(id)
        .bind(now)
        .execute(&mut *conn)
        .await;
        match outcome {
            Ok(done) => {
                deleted += done.rows_affected();
                sqlx::query("RELEASE SAVEPOINT forget_reader")
                    .execute(&mut *conn)
                    .await?;
            }
            // Another table's row names the reader: linked, so kept.
            Err(sqlx::Error::Database(err)) if err.is_foreign_key_violation() => {
                sqlx::query("ROLLBACK TO SAVEPOINT forget_reader")
                    .execute(&mut *conn)
                    .await?;
            }
            Err(err) => return Err(err.into()),
        }
    }
    Ok((deleted, next))
}
