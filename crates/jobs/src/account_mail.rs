//! Emails of the accounts crate: sign-in, verification and "already registered" links.
//! The job holds ids only; the address is read when the email is written, and the token is
//! derived again from the link's id (it was never stored).

use kopilka_accounts::link::{self, LinkPurpose};
use kopilka_domain::id::ReaderId;
use kopilka_mail::{MailError, Outgoing};
use kopilka_queue::Job;
use time::OffsetDateTime;

use crate::Worker;

/// Sends the email of one issued link, unless the link was used or expired meanwhile. A
/// permanent refusal stops mail to the address (no retry); a transient one retries.
pub(crate) async fn email_link(
    worker: &Worker,
    job: &Job,
    now: OffsetDateTime,
) -> Result<(), String> {
    let link_id: uuid::Uuid = job.payload["link_id"]
        .as_str()
        .and_then(|s| s.parse().ok())
        .ok_or("an email_link job without link_id")?;
    let mut conn = worker.pool.acquire().await.map_err(|e| e.to_string())?;
    let Some((reader_id, purpose, expires_at)) = link::pending(&mut conn, link_id, now)
        .await
        .map_err(|e| e.to_string())?
    else {
        tracing::info!(link_id = %link_id, "link used or expired before its email went out");
        return Ok(());
    };
    let Some(reader) = kopilka_accounts::reader::by_id(&mut conn, reader_id)
        .await
        .map_err(|e| e.to_string())?
    else {
        return Ok(());
    };
    drop(conn);
    let Some(email) = reader.email.as_ref() else {
        return Ok(());
    };
    let url = link::url_for(&worker.accounts.keys, &worker.settings.public_url, link_id);
    let minutes = (expires_at - now).whole_minutes().max(1);
    let context = serde_json::json!({
        "name": reader.greeting_name(),
        "link_url": url.as_str(),
        "expires_minutes": minutes,
        "expires_hours": (minutes + 59) / 60,
    });
    let kind = match purpose {
        LinkPurpose::SignIn => "sign_in",
        LinkPurpose::Verify => "verify",
        LinkPurpose::AlreadyRegistered => "already_registered",
    };
    let rendered = worker
        .templates
        .render(kind, reader.locale, &context)
        .map_err(|e| e.to_string())?;
    let logical_id = format!("link-{link_id}");
    let outgoing = Outgoing {
        to: email,
        logical_id: &logical_id,
        rendered: &rendered,
        unsubscribe_url: None,
    };
    match worker.mailer.send(&outgoing).await {
        Ok(_) => {
            tracing::info!(reader_id = %reader_id, link_id = %link_id, kind, "link emailed");
            Ok(())
        }
        Err(MailError::Permanent(why)) => {
            suppress(worker, reader_id, now).await;
            tracing::warn!(reader_id = %reader_id, error = %why, "link email refused for good; mail to the address stopped");
            Ok(())
        }
        Err(err) => Err(err.to_string()),
    }
}

async fn suppress(worker: &Worker, reader: ReaderId, now: OffsetDateTime) {
    let result = async {
        let mut conn = worker.pool.acquire().await.map_err(|e| e.to_string())?;
        kopilka_accounts::reader::suppress_mail(&mut conn, reader, now)
            .await
            .map_err(|e| e.to_string())
    }
    .await;
    if let Err(err) = result {
        tracing::warn!(reader_id = %reader, error = %err, "could not suppress mail");
    }
}
