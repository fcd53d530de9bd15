//! "Remind me later" emails. Due reminders are queued once each ([`queue_due`], safe with
//! several workers), and each job sends one email on its day unless the reader gave,
//! unsubscribed or bounced meanwhile, with RFC 8058 one-click unsubscribe headers.

use kopilka_accounts::reminder::{self, REMINDER_JOB};
use kopilka_domain::id::ReminderId;
use kopilka_mail::Outgoing;
use kopilka_queue::{Job, NewJob};
use time::{Date, OffsetDateTime};

use crate::Worker;
use crate::sends::{self, Delivered};

/// A reminder late by more than this (workers were down) is not sent any more.
const LATE_GRACE: time::Duration = time::Duration::days(7);

/// Reminders queued per transaction.
const BATCH: i64 = 500;

/// Queues a job for every pending reminder due by `now`'s date that has none yet; returns
/// how many were queued.
///
/// # Errors
/// Storage errors.
pub(crate) async fn queue_due(worker: &Worker, now: OffsetDateTime) -> Result<usize, String> {
    let mut queued = 0;
    loop {
        let mut tx = worker.pool.begin().await.map_err(|e| e.to_string())?;
        let due = reminder::take_due(&mut tx, now.date(), now, BATCH)
            .await
            .map_err(|e| e.to_string())?;
        for item in &due {
            let job = NewJob::new(
                REMINDER_JOB,
                serde_json::json!({"reminder_id": item.id, "remind_on": item.remind_on.to_string()}),
            )
            .attempts(kopilka_queue::PATIENT_ATTEMPTS)
        .dedup(format!("mail:reminder:{}:{}", item.id, item.remind_on));
            // Due on its day, not before, for whichever worker (`--as-of` travels in time).
            let job = NewJob {
                run_at: Some(item.remind_on.midnight().assume_utc()),
                ..job
            };
            kopilka_queue::enqueue(&mut tx, &job)
                .await
                .map_err(|e| e.to_string())?;
        }
        tx.commit().await.map_err(|e| e.to_string())?;
        queued += due.len();
        if due.len() < usize::try_from(BATCH).unwrap_or(usize::MAX) {
            return Ok(queued);
        }
    }
}

/// Sends one reminder's email.
pub(crate) async fn send(worker: &Worker, job: &Job, now: OffsetDateTime) -> Result<(), String> {
    let id: uuid::Uuid = job.payload["reminder_id"]
        .as_str()
        .and_then(|s| s.parse().ok())
        .ok_or("a reminder job without reminder_id")?;
    let id = ReminderId::from_uuid(id);
    let remind_on = job.payload["remind_on"]
        .as_str()
        .and_then(|s| {
            Date::parse(s, time::macros::format_description!("[year]-[month]-[day]")).ok()
        })
        .ok_or("a reminder job without remind_on")?;
    let logical_id = format!("reminder-{id}-{remind_on}");
    let mut tx = worker.pool.begin().await.map_err(|e| e.to_string())?;
    let pending = reminder::lock_pending(&mut tx, id, remind_on)
        .await
        .map_err(|e| e.to_string())?;
    if !sends::claim(
        &mut tx,
        &logical_id,
        REMINDER_JOB,
        pending.map(|p| p.reader_id),
    )
    .await?
    {
        return tx.commit().await.map_err(|e| e.to_string());
    }
    let Some(due) = pending.filter(|_| now.date() - remind_on <= LATE_GRACE) else {
        // Sent, suppressed (the reader gave), unsubscribed or moved meanwhile, or a week late.
        sends::skip(&mut tx, &logical_id, "reminder no longer pending or late").await?;
        tracing::info!(reminder_id = %id, "reminder no longer pending; not sent");
        return tx.commit().await.map_err(|e| e.to_string());
    };
    let reader = kopilka_accounts::reader::by_id(&mut tx, due.reader_id)
        .await
        .map_err(|e| e.to_string())?;
    let Some((reader, email)) = reader.and_then(|r| {
        let email = r.email.clone()?;
        r.mail_suppressed_at.is_none().then_some((r, email))
    }) else {
        sends::skip(&mut tx, &logical_id, "address erased or suppressed").await?;
        return tx.commit().await.map_err(|e| e.to_string());
    };
    let unsubscribe_url = worker
        .settings
        .public_url
        .join(&format!(
            "v1/reminders/unsubscribe?token={}",
            worker.accounts.unsubscribe_token(id)
        ))
        .map_err(|e| e.to_string())?;
    let context = serde_json::json!({
        "name": reader.greeting_name(),
        "give_url": worker.settings.publisher.website.as_str(),
        "unsubscribe_url": unsubscribe_url.as_str(),
        "remind_on": remind_on.to_string(),
    });
    let rendered = worker
        .templates
        .render("reminder", reader.locale, &context)
        .map_err(|e| e.to_string())?;
    let outgoing = Outgoing {
        to: &email,
        logical_id: &logical_id,
        rendered: &rendered,
        unsubscribe_url: Some(unsubscribe_url.as_str()),
    };
    // Marked sent before the message goes out: a failure after the server took it could
    // otherwise roll back the mark alone. A transient failure rolls both back.
    reminder::sent(&mut tx, id, now)
        .await
        .map_err(|e| e.to_string())?;
    let delivered = sends::deliver(worker, &mut tx, job, due.reader_id, &outgoing, now).await?;
    if delivered == Delivered::Refused {
        reminder::bounced(&mut tx, id)
            .await
            .map_err(|e| e.to_string())?;
    }
    tx.commit().await.map_err(|e| e.to_string())?;
    tracing::info!(reminder_id = %id, reader_id = %due.reader_id, ?delivered, "reminder emailed");
    Ok(())
}
