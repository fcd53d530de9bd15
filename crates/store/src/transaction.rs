use futures_util::future::BoxFuture;
use sqlx::{PgConnection, PgPool};

use crate::StoreError;

/// Runs `work` in one transaction: committed when it returns `Ok`, rolled back when it
/// returns `Err` (or panics). Callers that need several steps to land together (a ledger
/// row and the job that follows it) pass them here.
///
/// ```text
/// let id = transaction(&pool, |conn| Box::pin(async move {
///     record_contribution(conn, &new).await?;
///     enqueue(conn, Job::Receipt(new.id)).await?;
///     Ok::<_, MyError>(new.id)
/// })).await?;
/// ```
///
/// # Errors
/// Whatever `work` returns, or [`StoreError`] (converted into `E`) when the transaction
/// cannot begin or commit.
pub async fn transaction<T, E, F>(pool: &PgPool, work: F) -> Result<T, E>
where
    F: for<'c> FnOnce(&'c mut PgConnection) -> BoxFuture<'c, Result<T, E>>,
    E: From<StoreError>,
{
    let mut tx = pool.begin().await.map_err(StoreError::from)?;
    let value = work(&mut tx).await?;
    tx.commit().await.map_err(StoreError::from)?;
    Ok(value)
}
