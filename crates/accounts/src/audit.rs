//! The append-only audit log of admin actions on readers: who, what, when — never an
//! address or a name (the reader appears by id).

use kopilka_domain::id::ReaderId;
use sqlx::PgConnection;

use crate::AccountError;

/// Records that `actor` did `action` to `reader`, with `detail` (ids and counts only).
///
/// # Errors
/// Storage errors.
pub async fn record(
    conn: &mut PgConnection,
    actor: &str,
    action: &str,
    reader: Option<ReaderId>,
    detail: &serde_json::Value,
) -> Result<(), AccountError> {
    sqlx::query("INSERT INTO audit_log (actor, action, reader_id, detail) VALUES ($1, $2, $3, $4)")
        .bind(actor)
        .bind(action)
        .bind(reader.map(ReaderId::as_uuid))
        .bind(detail)
        .execute(conn)
        .await?;
    Ok(())
}
