//! Year-end statements: `kopilka admin statements send --year Y [--fiscal-start MM-DD]`
//! queues one per reader who gave in that (fiscal) year; each job emails the reader's totals
//! per currency, once.

use kopilka_contributions::ledger;
use kopilka_domain::id::ReaderId;
use kopilka_queue::{Job, NewJob};
use kopilka_store::PgPool;
use time::OffsetDateTime;

use crate::{Worker, sends};

/// The kind of the job that emails one reader's statement (payload `reader_id`, `from`,
/// `to` as unix seconds).
pub const STATEMENT_JOB: &str = "mail.statement";

/// Queues a statement for every reader with a payment in `[from, to)` (a second run for the
/// same period queues nothing new); returns how many were queued now.
///
/// # Errors
/// Storage errors.
pub async fn queue_statements(
    pool: &PgPool,
    from: OffsetDateTime,
    to: OffsetDateTime,
) -> Result<usize, String> {
    let mut tx = pool.begin().await.map_err(|e| e.to_string())?;
    let readers = ledger::readers_who_gave(&mut tx, from, to)
        .await
        .map_err(|e| e.to_string())?;
    let mut queued = 0;
    for reader in readers {
        let job = NewJob::new(
            STATEMENT_JOB,
            serde_json::json!({"reader_id": reader, "from": from.unix_timestamp(), "to": to.unix_timestamp()}),
        )
        .attempts(kopilka_queue::PATIENT_ATTEMPTS)
        .dedup(format!("mail:statement:{reader}:{}", from.unix_timestamp()));
        if kopilka_queue::enqueue(&mut tx, &job)
            .await
            .map_err(|e| e.to_string())?
            .is_some()
        {
            queued += 1;
        }
    }
    tx.commit().await.map_err(|e| e.to_string())?;
    Ok(queued)
}

/// Sends one reader's statement.
pub(crate) async fn send(worker: &Worker, job: &Job, now: OffsetDateTime) -> Result<(), String> {
    let reader: uuid::Uuid = job.payload["reader_id"]
        .as_str()
        .and_then(|s| s.parse().ok())
        .ok_or("a statement job without reader_id")?;
    let instant = |key: &str| {
        job.payload[key]
            .as_i64()
            .and_then(|t| OffsetDateTime::from_unix_timestamp(t).ok())
            .ok_or_else(|| format!("a statement job without {key}"))
    };
    let (from, to) = (instant("from")?, instant("to")?);
    let reader_id = ReaderId::from_uuid(reader);
    let logical_id = format!("statement-{reader}-{}", from.unix_timestamp());
    let mut tx = worker.pool.begin().await.map_err(|e| e.to_string())?;
    if !sends::claim(&mut tx, &logical_id, STATEMENT_JOB, Some(reader_id)).await? {
        return tx.commit().await.map_err(|e| e.to_string());
    }
    let totals = ledger::given_by_reader(&mut tx, reader, from, to)
        .await
        .map_err(|e| e.to_string())?;
    let recipient = sends::recipient(&mut tx, reader_id).await?;
    let Some((person, email)) = recipient.filter(|_| !totals.is_empty()) else {
        sends::skip(&mut tx, &logical_id, "no address or nothing given").await?;
        return tx.commit().await.map_err(|e| e.to_string());
    };
    let last_day = (to - time::Duration::days(1)).date();
    let context = serde_json::json!({
        "name": person.greeting_name(),
        "from": from.date().to_string(),
        "to": last_day.to_string(),
        "year": from.year(),
        "totals": totals
            .iter()
            .map(|t| serde_json::json!({"amount": t.net.to_string(), "payments": t.payments}))
            .collect::<Vec<_>>(),
    });
    let delivered = sends::render_and_deliver(
        worker,
        &mut tx,
        job,
        "statement",
        &person,
        &email,
        &logical_id,
        &context,
        now,
    )
    .await?;
    tx.commit().await.map_err(|e| e.to_string())?;
    tracing::info!(reader_id = %reader_id, ?delivered, "statement emailed");
    Ok(())
}
