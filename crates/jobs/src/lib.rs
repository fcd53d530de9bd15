//! The job kinds and the worker loop. A worker claims due jobs one at a time (several
//! workers share the queue safely), runs each kind's handler, and records success, a retry
//! with backoff, or the dead letter. It wakes on `LISTEN kopilka_jobs` and also polls.

use std::future::Future;
use std::time::Duration;

use kopilka_queue::{Job, QueueError};
use kopilka_reconciliation::{APPLY_EVENT, ReconciliationError};
use kopilka_store::PgPool;
use sqlx::postgres::PgListener;
use time::OffsetDateTime;

/// How a run of the worker went.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RunSummary {
    /// Jobs that succeeded.
    pub done: usize,
    /// Jobs that failed and will be retried.
    pub retrying: usize,
    /// Jobs that failed for good (the dead letter).
    pub failed: usize,
}

/// Runs one job's handler.
async fn run(pool: &PgPool, job: &Job) -> Result<(), String> {
    match job.kind.as_str() {
        APPLY_EVENT => {
            let event_id = job.payload["event_id"]
                .as_str()
                .ok_or("a stripe_event job without event_id")?;
            match kopilka_reconciliation::apply_event(pool, event_id).await {
                Ok(_) => Ok(()),
                Err(ReconciliationError::NotYet(why)) => Err(format!("waiting: {why}")),
                Err(err) => Err(err.to_string()),
            }
        }
        other => Err(format!("unknown job kind {other:?}")),
    }
}

/// Claims and runs every job due at `now`, then returns (`worker --once`).
///
/// # Errors
/// Storage errors of the queue itself.
pub async fn run_due(pool: &PgPool, now: OffsetDateTime) -> Result<RunSummary, QueueError> {
    let mut summary = RunSummary::default();
    // Jobs retried in this run are due later, so the loop ends.
    while let Some(job) = kopilka_queue::claim(pool, now).await? {
        match run(pool, &job).await {
            Ok(()) => {
                kopilka_queue::complete(pool, &job).await?;
                summary.done += 1;
            }
            Err(error) => {
                let retry = kopilka_queue::fail(pool, &job, &error, now).await?;
                tracing::warn!(job_id = %job.id, kind = %job.kind, attempt = job.attempt, retry, error, "job failed");
                if retry {
                    summary.retrying += 1;
                } else {
                    summary.failed += 1;
                    if let (APPLY_EVENT, Some(event_id)) =
                        (job.kind.as_str(), job.payload["event_id"].as_str())
                        && let Err(err) =
                            kopilka_reconciliation::inbox::mark_failed(pool, event_id, &error).await
                    {
                        tracing::warn!(event_id, error = %err, "could not mark the event failed");
                    }
                }
            }
        }
    }
    Ok(summary)
}

/// Runs jobs as they fall due until `shutdown` resolves: woken by `NOTIFY` and by polling
/// every `poll`.
pub async fn run_forever(pool: PgPool, poll: Duration, shutdown: impl Future<Output = ()>) {
    tokio::pin!(shutdown);
    let mut listener = match PgListener::connect_with(&pool).await {
        Ok(mut listener) => match listener.listen(kopilka_queue::CHANNEL).await {
            Ok(()) => Some(listener),
            Err(err) => {
                tracing::warn!(error = %err, "cannot LISTEN; polling only");
                None
            }
        },
        Err(err) => {
            tracing::warn!(error = %err, "cannot LISTEN; polling only");
            None
        }
    };
    loop {
        if let Err(err) = run_due(&pool, OffsetDateTime::now_utc()).await {
            tracing::warn!(error = %err, "worker run failed");
        }
        let woken = async {
            match listener.as_mut() {
                Some(listener) => {
                    let _ = listener.recv().await;
                }
                None => std::future::pending::<()>().await,
            }
        };
        tokio::select! {
            () = &mut shutdown => break,
            () = tokio::time::sleep(poll) => {}
            () = woken => {}
        }
    }
}
