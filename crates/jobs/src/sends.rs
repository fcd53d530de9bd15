//! The send record of every logical email (table `email_sends`, owned here). A mail job
//! claims its record in a transaction (the row stays locked while the message goes out),
//! and marks it sent or failed — and completes the job — in that same transaction. So two
//! workers never send one email twice, and a crash before the commit leaves the email to
//! the job's retry (a resend after a crash keeps its `Message-ID`).

use kopilka_domain::id::ReaderId;
use kopilka_mail::{MailError, Outgoing};
use kopilka_queue::Job;
use sqlx::PgConnection;
use time::OffsetDateTime;

use crate::Worker;

/// An email send, as the reader's export shows it.
#[derive(Debug, Clone, serde::Serialize, sqlx::FromRow)]
pub struct SendExport {
    /// Kopilka's id of the logical email (its kind and the ids it is about).
    pub logical_id: String,
    /// Which email.
    pub kind: String,
    /// `pending`, `sent`, `failed` or `skipped`.
    pub status: String,
    /// Attempts made.
    pub attempts: i32,
    /// When it went out.
    #[serde(with = "time::serde::rfc3339::option")]
    pub sent_at: Option<OffsetDateTime>,
    /// When it was first queued.
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
}

/// Every email send to `reader`, oldest first.
pub(crate) async fn of_reader(
    conn: &mut PgConnection,
    reader: ReaderId,
) -> Result<Vec<SendExport>, sqlx::Error> {
    sqlx::query_as(
        "SELECT logical_id, kind, status, attempts, sent_at, created_at FROM email_sends
         WHERE reader_id = $1 ORDER BY created_at, logical_id",
    )
    .bind(reader.as_uuid())
    .fetch_all(conn)
    .await
}

/// Deletes every email send to `reader` (erasure).
pub(crate) async fn forget_reader(
    conn: &mut PgConnection,
    reader: ReaderId,
) -> Result<u64, sqlx::Error> {
    Ok(sqlx::query("DELETE FROM email_sends WHERE reader_id = $1")
        .bind(reader.as_uuid())
        .execute(conn)
        .await?
        .rows_affected())
}

/// Creates the record of `logical_id` if new and locks it; `true` when it still has to be
/// sent (a record already `sent`, `failed` or `skipped` is left alone).
pub(crate) async fn claim(
    conn: &mut PgConnection,
    logical_id: &str,
    kind: &str,
    reader: Option<ReaderId>,
) -> Result<bool, String> {
    sqlx::query(
        "INSERT INTO email_sends (logical_id, kind, reader_id) VALUES ($1, $2, $3)
         ON CONFLICT (logical_id) DO NOTHING",
    )
    .bind(logical_id)
    .bind(kind)
    .bind(reader.map(ReaderId::as_uuid))
    .execute(&mut *conn)
    .await
    .map_err(|e| e.to_string())?;
    let status: String =
        sqlx::query_scalar("SELECT status FROM email_sends WHERE logical_id = $1 FOR UPDATE")
            .bind(logical_id)
            .fetch_one(&mut *conn)
            .await
            .map_err(|e| e.to_string())?;
    Ok(status == "pending")
}

/// Forgets the details of up to `limit` finished email sends last changed before `before`:
/// the reader they went to and the mail server's last answer are cleared; the logical id,
/// kind and status stay, so the same email is still never sent twice. Returns how many.
/// Run by the daily retention sweep (`retention.email_send_days`).
pub(crate) async fn forget_details(
    conn: &mut PgConnection,
    before: OffsetDateTime,
    limit: i64,
) -> Result<u64, String> {
    kopilka_store::retention::batch(
        conn,
        "UPDATE email_sends SET reader_id = NULL, last_error = NULL
         WHERE logical_id IN (
             SELECT logical_id FROM email_sends
             WHERE status <> 'pending' AND updated_at < $1
               AND (reader_id IS NOT NULL OR last_error IS NOT NULL)
             LIMIT $2)",
        before,
        limit,
    )
    .await
    .map_err(|e| e.to_string())
}

/// Records that `logical_id` will not be sent (`why`: an id-free reason).
pub(crate) async fn skip(
    conn: &mut PgConnection,
    logical_id: &str,
    why: &str,
) -> Result<(), String> {
    sqlx::query("UPDATE email_sends SET status = 'skipped', last_error = $2 WHERE logical_id = $1")
        .bind(logical_id)
        .bind(why)
        .execute(conn)
        .await
        .map_err(|e| e.to_string())?;
    Ok(())
}

/// The reader's address when mail may go to it (not erased, not suppressed).
pub(crate) async fn recipient(
    conn: &mut PgConnection,
    reader: ReaderId,
) -> Result<Option<(kopilka_accounts::reader::Reader, kopilka_domain::Email)>, String> {
    let reader = kopilka_accounts::reader::by_id(conn, reader)
        .await
        .map_err(|e| e.to_string())?;
    Ok(reader.and_then(|r| {
        let email = r.email.clone()?;
        r.mail_suppressed_at.is_none().then_some((r, email))
    }))
}

/// Renders email `kind` in the reader's language and delivers it as [`deliver`] does.
#[allow(
    clippy::too_many_arguments,
    reason = "one call site per email kind, all named"
)]
pub(crate) async fn render_and_deliver(
    worker: &Worker,
    conn: &mut PgConnection,
    job: &Job,
    kind: &str,
    reader: &kopilka_accounts::reader::Reader,
    email: &kopilka_domain::Email,
    logical_id: &str,
    context: &serde_json::Value,
    now: OffsetDateTime,
) -> Result<Delivered, String> {
    let rendered = worker
        .templates
        .render(kind, reader.locale, context)
        .map_err(|e| e.to_string())?;
    let outgoing = Outgoing {
        to: email,
        logical_id,
        rendered: &rendered,
        unsubscribe_url: None,
    };
    deliver(worker, conn, job, reader.id, &outgoing, now).await
}

/// What became of a delivery.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Delivered {
    /// The server took it.
    Sent,
    /// The server refused it for good: the address is suppressed, no retry.
    Refused,
}

/// Sends `outgoing` while its record is locked by `conn`'s transaction and records the
/// outcome there, completing `job` too. A permanent refusal (5xx) marks the record failed
/// and suppresses the reader's address; a transient failure is an `Err` (the caller drops
/// the transaction, the job retries with backoff).
pub(crate) async fn deliver(
    worker: &Worker,
    conn: &mut PgConnection,
    job: &Job,
    reader: ReaderId,
    outgoing: &Outgoing<'_>,
    now: OffsetDateTime,
) -> Result<Delivered, String> {
    let delivered = match worker.mailer.send(outgoing).await {
        Ok(_) => {
            sqlx::query(
                "UPDATE email_sends SET status = 'sent', sent_at = $2, attempts = attempts + 1,
                     last_error = NULL
                 WHERE logical_id = $1",
            )
            .bind(outgoing.logical_id)
            .bind(now)
            .execute(&mut *conn)
            .await
            .map_err(|e| e.to_string())?;
            Delivered::Sent
        }
        // An address the server refused for good, or one no message can be built for.
        Err(MailError::Permanent(why) | MailError::Message(why)) => {
            sqlx::query(
                "UPDATE email_sends SET status = 'failed', attempts = attempts + 1, last_error = $2
                 WHERE logical_id = $1",
            )
            .bind(outgoing.logical_id)
            .bind(&why)
            .execute(&mut *conn)
            .await
            .map_err(|e| e.to_string())?;
            kopilka_accounts::reader::suppress_mail(conn, reader, now)
                .await
                .map_err(|e| e.to_string())?;
            tracing::warn!(reader_id = %reader, logical_id = outgoing.logical_id, error = %why,
                "email refused for good; mail to the address stopped");
            Delivered::Refused
        }
        Err(err) => return Err(err.to_string()),
    };
    kopilka_queue::complete_in(conn, job)
        .await
        .map_err(|e| e.to_string())?;
    Ok(delivered)
}
