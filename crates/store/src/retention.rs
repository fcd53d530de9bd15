//! One batch of a retention deletion, for the table owners' `forget_*` functions.

use sqlx::PgConnection;
use sqlx::types::time::OffsetDateTime;

/// Runs `statement` (a `DELETE` or `UPDATE` whose `$1` is the cut-off and `$2` the batch
/// size) and returns how many rows it touched. Each owner keeps its own statement; this
/// only binds and runs it, so every retention step is bounded the same way.
///
/// # Errors
/// Storage errors.
pub async fn batch(
    conn: &mut PgConnection,
    statement: &'static str,
    before: OffsetDateTime,
    limit: i64,
) -> Result<u64, sqlx::Error> {
    let done = sqlx::query(statement)
        .bind(before)
        .bind(limit)
        .execute(conn)
        .await?;
    Ok(done.rows_affected())
}
