//! The Postgres job queue. Jobs are enqueued inside the caller's transaction (so a job
//! exists exactly when what caused it was committed), claimed with `FOR UPDATE SKIP LOCKED`
//! (several workers on several machines never run one job at once), retried with
//! exponential backoff up to a maximum, then left `failed` with the last error (the dead
//! letter). `enqueue` sends `NOTIFY kopilka_jobs` so an idle worker wakes at once, unless
//! the job is [`NewJob::quiet`]: hot paths wake workers after their commit through
//! [`Wakeups`], coalesced, because Postgres commits notifying transactions one at a time.
//! The queue knows no job kind; the `jobs` crate does.

use std::time::Duration;

use kopilka_domain::id::JobId;
use kopilka_store::{PgPool, StoreError};
use sqlx::PgConnection;
use time::OffsetDateTime;

/// Attempts for work that waits on an outside service which may be away for hours (a mail
/// server): with the backoff capped at an hour, about a day of retries.
pub const PATIENT_ATTEMPTS: i32 = 30;

/// The channel `enqueue` notifies and workers listen on.
pub const CHANNEL: &str = "kopilka_jobs";

/// What can go wrong with the queue.
#[derive(Debug, thiserror::Error)]
pub enum QueueError {
    /// Postgres.
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl From<sqlx::Error> for QueueError {
    fn from(err: sqlx::Error) -> Self {
        Self::Store(err.into())
    }
}

/// A job to enqueue.
#[derive(Debug, Clone)]
pub struct NewJob<'a> {
    /// Which handler runs it.
    pub kind: &'a str,
    /// Ids, never PII.
    pub payload: serde_json::Value,
    /// At most one live job per key (e.g. `event:evt_…`).
    pub dedup_key: Option<String>,
    /// When it becomes due.
    pub run_at: Option<OffsetDateTime>,
    /// Attempts before it is left `failed`.
    pub max_attempts: i32,
    /// No `NOTIFY` in the caller's transaction: the caller wakes workers after its commit
    /// with [`Wakeups::wake`].
    pub quiet: bool,
}

impl<'a> NewJob<'a> {
    /// A job of `kind` with `payload`, due now, ten attempts.
    #[must_use]
    pub fn new(kind: &'a str, payload: serde_json::Value) -> Self {
        Self {
            kind,
            payload,
            dedup_key: None,
            run_at: None,
            max_attempts: 10,
            quiet: false,
        }
    }

    /// Sends no `NOTIFY` with the insert; the caller calls [`Wakeups::wake`] after its
    /// commit. For paths that enqueue thousands of jobs a second: every notifying commit
    /// takes one cluster-wide lock, so it ends group commit (measured: the webhook's
    /// transaction at 2 900 TPS with `NOTIFY`, 3 900 without, in pgbench on two cores).
    #[must_use]
    pub fn quiet(mut self) -> Self {
        self.quiet = true;
        self
    }

    /// Allows `attempts` attempts before the job is left `failed`.
    #[must_use]
    pub fn attempts(mut self, attempts: i32) -> Self {
        self.max_attempts = attempts;
        self
    }

    /// At most one job with this key.
    #[must_use]
    pub fn dedup(mut self, key: impl Into<String>) -> Self {
        self.dedup_key = Some(key.into());
        self
    }
}

/// Enqueues `job` in the caller's transaction (`conn`); a job with an existing dedup key is
/// not enqueued again. Returns the job's id when it was new.
///
/// # Errors
/// Storage errors.
pub async fn enqueue(
    conn: &mut PgConnection,
    job: &NewJob<'_>,
) -> Result<Option<JobId>, QueueError> {
    let id = JobId::new();
    // One round trip: the insert and, when it stored a job, the wake-up.
    let inserted: i64 = sqlx::query_scalar(
        "WITH new AS (
             INSERT INTO jobs (id, kind, payload, dedup_key, run_at, max_attempts)
             VALUES ($1, $2, $3, $4, coalesce($5, now()), $6) ON CONFLICT (dedup_key) DO NOTHING
             RETURNING kind)
         SELECT count(CASE WHEN $8 THEN kind ELSE pg_notify($7, kind)::text END) FROM new",
    )
    .bind(id.as_uuid())
    .bind(job.kind)
    .bind(&job.payload)
    .bind(&job.dedup_key)
    .bind(job.run_at)
    .bind(job.max_attempts)
    .bind(CHANNEL)
    .bind(job.quiet)
    .fetch_one(&mut *conn)
    .await?;
    if inserted == 0 {
        return Ok(None);
    }
    Ok(Some(id))
}

/// Wakes idle workers after commits of [`NewJob::quiet`] jobs: each [`Self::wake`] asks
/// for one `NOTIFY kopilka_jobs`, sent by a task of its own outside any transaction; wakes
/// asked for while one is on its way become one more. A wake lost to a crash costs at most
/// `worker.poll_secs`. Cheap to clone; the task starts on the first wake and ends with the
/// last handle.
#[derive(Clone, Debug)]
pub struct Wakeups {
    pool: PgPool,
    sender: std::sync::Arc<std::sync::OnceLock<tokio::sync::mpsc::Sender<()>>>,
}

impl Wakeups {
    /// Wake-ups over `pool`.
    #[must_use]
    pub fn new(pool: PgPool) -> Self {
        Self {
            pool,
            sender: std::sync::Arc::default(),
        }
    }

    /// Asks for one `NOTIFY` soon (call after the commit that stored the jobs). Must be
    /// called within the Tokio runtime.
    pub fn wake(&self) {
        let sender = self.sender.get_or_init(|| {
            // One pending wake is enough: more while it waits mean the same.
            let (sender, mut wakes) = tokio::sync::mpsc::channel::<()>(1);
            let pool = self.pool.clone();
            tokio::spawn(async move {
                while wakes.recv().await.is_some() {
                    if let Err(err) = sqlx::query("SELECT pg_notify($1, 'wake')")
                        .bind(CHANNEL)
                        .execute(&pool)
                        .await
                    {
                        tracing::warn!(error = %err, "workers not woken; they poll");
                    }
                }
            });
            sender
        });
        let _ = sender.try_send(());
    }
}

/// A claimed job.
#[derive(Debug, Clone)]
pub struct Job {
    /// Its id.
    pub id: JobId,
    /// Its kind.
    pub kind: String,
    /// Its payload.
    pub payload: serde_json::Value,
    /// This is attempt number `attempt` (1 for the first).
    pub attempt: i32,
    /// Attempts allowed.
    pub max_attempts: i32,
}

/// How long a claim holds before another worker may take the job over (a worker that died
/// mid-job).
pub const LEASE: Duration = Duration::from_secs(300);

/// Claims one job due at `now` (queued, or running with an expired lease), or `None`.
///
/// # Errors
/// Storage errors.
pub async fn claim(pool: &PgPool, now: OffsetDateTime) -> Result<Option<Job>, QueueError> {
    // The lease runs from the real clock (a long run's `now` goes stale; `--as-of` may be
    // ahead of it).
    let lease_end = now.max(OffsetDateTime::now_utc()) + LEASE;
    let row: Option<(uuid::Uuid, String, serde_json::Value, i32, i32)> = sqlx::query_as(
        "UPDATE jobs SET status = 'running', attempts = attempts + 1, locked_until = $2
         WHERE id = (
             SELECT id FROM jobs
             WHERE run_at <= $1 AND (status = 'queued' OR (status = 'running' AND locked_until < $1))
             ORDER BY run_at, id
             FOR UPDATE SKIP LOCKED
             LIMIT 1)
         RETURNING id, kind, payload, attempts, max_attempts",
    )
    .bind(now)
    .bind(lease_end)
    .fetch_optional(pool)
    .await?;
    Ok(row.map(|(id, kind, payload, attempt, max_attempts)| Job {
        id: JobId::from_uuid(id),
        kind,
        payload,
        attempt,
        max_attempts,
    }))
}

/// Marks a job done, unless its handler already did ([`complete_in`]): then nothing is
/// written (no second row version, no durable commit).
///
/// # Errors
/// Storage errors.
pub async fn complete(pool: &PgPool, job: &Job) -> Result<(), QueueError> {
    sqlx::query(
        "UPDATE jobs SET status = 'done', locked_until = NULL, last_error = NULL
         WHERE id = $1 AND status <> 'done'",
    )
    .bind(job.id.as_uuid())
    .execute(pool)
    .await?;
    Ok(())
}

/// Marks a job done inside the caller's transaction (so the job ends exactly when what it
/// did is committed).
///
/// # Errors
/// Storage errors.
pub async fn complete_in(conn: &mut PgConnection, job: &Job) -> Result<(), QueueError> {
    sqlx::query(
        "UPDATE jobs SET status = 'done', locked_until = NULL, last_error = NULL WHERE id = $1",
    )
    .bind(job.id.as_uuid())
    .execute(conn)
    .await?;
    Ok(())
}

/// The delay before attempt `attempt + 1`: 2^attempt seconds, capped at an hour.
#[must_use]
pub fn backoff(attempt: i32) -> Duration {
    let exponent = u32::try_from(attempt.clamp(0, 12)).unwrap_or(12);
    Duration::from_secs(2_u64.pow(exponent)).min(Duration::from_secs(3600))
}

/// Records a failed attempt: retried after [`backoff`], or left `failed` (with `error`) once
/// its attempts are used up. Returns whether it will be retried.
///
/// # Errors
/// Storage errors.
pub async fn fail(
    pool: &PgPool,
    job: &Job,
    error: &str,
    now: OffsetDateTime,
) -> Result<bool, QueueError> {
    let retry = job.attempt < job.max_attempts;
    let next = now + backoff(job.attempt);
    sqlx::query(
        "UPDATE jobs SET status = CASE WHEN $2 THEN 'queued' ELSE 'failed' END,
             run_at = CASE WHEN $2 THEN $3 ELSE run_at END, locked_until = NULL, last_error = $4
         WHERE id = $1",
    )
    .bind(job.id.as_uuid())
    .bind(retry)
    .bind(next)
    .bind(error.chars().take(2000).collect::<String>())
    .execute(pool)
    .await?;
    Ok(retry)
}

/// Records a failure that no retry can mend: the job is left `failed` (the dead letter)
/// at once, with `error`, whatever attempts it has left.
///
/// # Errors
/// Storage errors.
pub async fn give_up(pool: &PgPool, job: &Job, error: &str) -> Result<(), QueueError> {
    sqlx::query(
        "UPDATE jobs SET status = 'failed', locked_until = NULL, last_error = $2 WHERE id = $1",
    )
    .bind(job.id.as_uuid())
    .bind(error.chars().take(2000).collect::<String>())
    .execute(pool)
    .await?;
    Ok(())
}

/// Puts failed jobs of `kind` (all kinds when `None`) back in the queue, due now, with fresh
/// attempts; returns how many.
///
/// # Errors
/// Storage errors.
pub async fn retry_failed(pool: &PgPool, kind: Option<&str>) -> Result<u64, QueueError> {
    let done = sqlx::query(
        "UPDATE jobs SET status = 'queued', attempts = 0, run_at = now(), last_error = NULL
         WHERE status = 'failed' AND ($1::text IS NULL OR kind = $1)",
    )
    .bind(kind)
    .execute(pool)
    .await?;
    Ok(done.rows_affected())
}

/// Deletes up to `limit` jobs that finished (`done`) before `before`; returns how many.
/// Failed jobs (the dead letter) stay until someone retries or reads them. Run by the
/// daily retention sweep (`retention.done_job_days`). A job's dedup key goes with it: by
/// then its work is recorded where it belongs (an event's status, an email's send record).
///
/// # Errors
/// Storage errors.
pub async fn forget_done(
    conn: &mut PgConnection,
    before: OffsetDateTime,
    limit: i64,
) -> Result<u64, QueueError> {
    Ok(kopilka_store::retention::batch(
        conn,
        "DELETE FROM jobs WHERE id IN (
             SELECT id FROM jobs WHERE status = 'done' AND updated_at < $1 LIMIT $2)",
        before,
        limit,
    )
    .await?)
}

#[cfg(test)]
mod tests {
    #[test]
    fn backoff_doubles_and_is_capped() {
        assert_eq!(super::backoff(1).as_secs(), 2);
        assert_eq!(super::backoff(3).as_secs(), 8);
        assert_eq!(super::backoff(30).as_secs(), 3600);
    }
}
