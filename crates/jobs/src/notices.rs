//! Emails about money: a receipt after every successful payment (one-off and each
//! renewal), and a failed-payment notice for each failed renewal attempt with a signed
//! link to update the card — the last notice before Stripe's final attempt says so.

use kopilka_accounts::plan_link::{self, PlanAction};
use kopilka_contributions::ledger;
use kopilka_domain::id::ReaderId;
use kopilka_domain::{Currency, Money};
use kopilka_queue::Job;
use time::OffsetDateTime;

use crate::Worker;
use crate::sends;

/// How long a receipt waits for the checkout event that names its reader (Stripe retries an
/// undelivered event for up to three days).
const READER_WAIT: time::Duration = time::Duration::days(3);

fn date(at: OffsetDateTime) -> String {
    at.date().to_string()
}

/// A signed one-click link (no sign-in) to do `action` to the plan, valid for
/// `accounts.plan_link_days`.
fn plan_link_url(
    worker: &Worker,
    plan_id: uuid::Uuid,
    action: PlanAction,
    now: OffsetDateTime,
) -> Result<String, String> {
    let days = i64::from(worker.settings.accounts.plan_link_days);
    let token = plan_link::token(
        &worker.accounts.keys,
        plan_id,
        action,
        now + time::Duration::days(days),
    );
    worker
        .settings
        .public_url
        .join(&format!("v1/plan-links/{token}"))
        .map(String::from)
        .map_err(|e| e.to_string())
}

/// A plan and the reader it belongs to (if linked).
async fn plan_and_reader(
    conn: &mut sqlx::PgConnection,
    plan_id: uuid::Uuid,
) -> Result<(kopilka_recurring::Plan, Option<ReaderId>), String> {
    let plan = kopilka_recurring::plan_by_id(conn, plan_id)
        .await
        .map_err(|e| e.to_string())?
        .ok_or("the plan of a notice is gone")?;
    let reader = ledger::reader_of(conn, plan.contribution_id)
        .await
        .map_err(|e| e.to_string())?
        .map(ReaderId::from_uuid);
    Ok((plan, reader))
}

/// Sends the receipt of the payment recorded under the job's provider and provider id.
pub(crate) async fn receipt(worker: &Worker, job: &Job, now: OffsetDateTime) -> Result<(), String> {
    let (provider, provider_id) = ledger::receipt_job_payment(&job.payload)
        .ok_or("a receipt job without its payment's provider and id")?;
    // A Stripe receipt's send is named as before providers, so none is sent twice.
    let logical_id = match provider {
        kopilka_domain::Provider::Stripe => format!("receipt-{provider_id}"),
        kopilka_domain::Provider::Btcpay => format!("receipt-{provider}-{provider_id}"),
    };
    let mut tx = worker.pool.begin().await.map_err(|e| e.to_string())?;
    let facts = ledger::receipt_facts(&mut tx, provider, provider_id)
        .await
        .map_err(|e| e.to_string())?
        .ok_or("the payment of a receipt job is not in the ledger")?;
    let reader = facts.reader_id.map(ReaderId::from_uuid);
    // A payment booked after its reader was erased (a plan payment's `invoice_payment.paid`
    // can come late) has no one to wait for.
    let erased = reader.is_none()
        && ledger::reader_erased(&mut tx, facts.contribution_id)
            .await
            .map_err(|e| e.to_string())?;
    // A crypto payment's reader is named with the payment or never (an anonymous gift).
    let may_be_named = provider == kopilka_domain::Provider::Stripe;
    if reader.is_none() && !erased && may_be_named && now - facts.occurred_at < READER_WAIT {
        // The payment may land before the checkout event that names its reader.
        return Err("waiting: the payment has no reader yet".into());
    }
    if !sends::claim(&mut tx, &logical_id, ledger::RECEIPT_JOB, reader).await? {
        return tx.commit().await.map_err(|e| e.to_string());
    }
    let recipient = match reader {
        Some(reader) => sends::recipient(&mut tx, reader).await?,
        None => None,
    };
    let (Some(reader_id), Some((reader, email))) = (reader, recipient) else {
        sends::skip(&mut tx, &logical_id, "no address to send to").await?;
        return tx.commit().await.map_err(|e| e.to_string());
    };
    let context = serde_json::json!({
        "name": reader.greeting_name(),
        "amount": facts.amount.to_string(),
        "date": date(facts.occurred_at),
        "interval": facts.interval,
        "renewal": facts.renewal,
        "reference": provider_id,
        "manage_url": worker.settings.public_url.as_str(),
    });
    let delivered = sends::render_and_deliver(
        worker,
        &mut tx,
        job,
        "receipt",
        &reader,
        &email,
        &logical_id,
        &context,
        now,
    )
    .await?;
    tx.commit().await.map_err(|e| e.to_string())?;
    tracing::info!(reader_id = %reader_id, contribution_id = %facts.contribution_id, ?delivered, "receipt emailed");
    Ok(())
}

/// Sends the notice of one failed renewal attempt, with a signed card-update link.
pub(crate) async fn payment_failed(
    worker: &Worker,
    job: &Job,
    now: OffsetDateTime,
) -> Result<(), String> {
    let payload = &job.payload;
    let attempt = payload["attempt"].as_i64().unwrap_or(1);
    let next_attempt = payload["next_attempt"]
        .as_i64()
        .and_then(|t| OffsetDateTime::from_unix_timestamp(t).ok());
    let mut tx = worker.pool.begin().await.map_err(|e| e.to_string())?;
    let Some((notice, logical_id)) = claim_plan_notice(
        &mut tx,
        payload,
        kopilka_recurring::facts::PAYMENT_FAILED_JOB,
        |invoice| format!("payment-failed-{invoice}-{attempt}"),
    )
    .await?
    else {
        return tx.commit().await.map_err(|e| e.to_string());
    };
    let PlanNotice {
        plan_id,
        plan,
        amount,
        reader_id,
        reader,
        email,
    } = notice;
    // The failure before Stripe's last attempt, or one after which it will not try again.
    let attempts = i64::from(worker.settings.notices.dunning_attempts);
    let last = next_attempt.is_none() || attempt + 1 >= attempts;
    let card_url = plan_link_url(worker, plan_id, PlanAction::UpdateCard, now)?;
    let context = serde_json::json!({
        "name": reader.greeting_name(),
        "amount": amount.to_string(),
        "interval": plan.interval.to_string(),
        "card_url": card_url.as_str(),
        "next_attempt": next_attempt.map(date),
        "last": last,
    });
    let kind = if last {
        "payment_last_notice"
    } else {
        "payment_failed"
    };
    let delivered = sends::render_and_deliver(
        worker,
        &mut tx,
        job,
        kind,
        &reader,
        &email,
        &logical_id,
        &context,
        now,
    )
    .await?;
    tx.commit().await.map_err(|e| e.to_string())?;
    tracing::info!(reader_id = %reader_id, plan_id = %plan_id, attempt, last, ?delivered, "failed payment emailed");
    Ok(())
}

/// A notice about one of a plan's payments, claimed for sending: the plan, the payment's
/// amount and whom it goes to.
struct PlanNotice {
    plan_id: uuid::Uuid,
    plan: kopilka_recurring::Plan,
    amount: Money,
    reader_id: ReaderId,
    reader: kopilka_accounts::reader::Reader,
    email: kopilka_domain::Email,
}

/// Reads the plan and amount of a payment notice job, and claims `logical_id` (built from
/// the payload's `invoice_id`) for sending. `None` when it was sent before, or when there is
/// no one to send it to (recorded as skipped); commit `tx` either way.
async fn claim_plan_notice(
    tx: &mut sqlx::PgConnection,
    payload: &serde_json::Value,
    job_kind: &str,
    logical_id: impl Fn(&str) -> String,
) -> Result<Option<(PlanNotice, String)>, String> {
    let plan_id: uuid::Uuid = payload["plan_id"]
        .as_str()
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| format!("a {job_kind} job without plan_id"))?;
    let invoice = payload["invoice_id"].as_str().ok_or("no invoice_id")?;
    let currency: Currency = payload["currency"]
        .as_str()
        .and_then(|c| c.parse().ok())
        .ok_or("no currency")?;
    let amount = Money::new(payload["amount_minor"].as_i64().unwrap_or(0), currency);
    let logical_id = logical_id(invoice);
    let (plan, reader) = plan_and_reader(tx, plan_id).await?;
    if !sends::claim(tx, &logical_id, job_kind, reader).await? {
        return Ok(None);
    }
    let recipient = match reader {
        Some(reader) => sends::recipient(tx, reader).await?,
        None => None,
    };
    let (Some(reader_id), Some((reader, email))) = (reader, recipient) else {
        sends::skip(tx, &logical_id, "no address to send to").await?;
        return Ok(None);
    };
    Ok(Some((
        PlanNotice {
            plan_id,
            plan,
            amount,
            reader_id,
            reader,
            email,
        },
        logical_id,
    )))
}

/// Sends the notice of a renewal waiting for 3-D Secure (once per invoice), with a signed
/// link that opens the invoice's hosted page, read live from Stripe when it is used.
pub(crate) async fn payment_action_required(
    worker: &Worker,
    job: &Job,
    now: OffsetDateTime,
) -> Result<(), String> {
    let mut tx = worker.pool.begin().await.map_err(|e| e.to_string())?;
    let Some((notice, logical_id)) = claim_plan_notice(
        &mut tx,
        &job.payload,
        kopilka_recurring::facts::PAYMENT_ACTION_JOB,
        |invoice| format!("payment-action-{invoice}"),
    )
    .await?
    else {
        return tx.commit().await.map_err(|e| e.to_string());
    };
    let PlanNotice {
        plan_id,
        plan,
        amount,
        reader_id,
        reader,
        email,
    } = notice;
    let pay_url = plan_link_url(worker, plan_id, PlanAction::CompletePayment, now)?;
    let context = serde_json::json!({
        "name": reader.greeting_name(),
        "amount": amount.to_string(),
        "interval": plan.interval.to_string(),
        "pay_url": pay_url.as_str(),
    });
    let delivered = sends::render_and_deliver(
        worker,
        &mut tx,
        job,
        "payment_action_required",
        &reader,
        &email,
        &logical_id,
        &context,
        now,
    )
    .await?;
    tx.commit().await.map_err(|e| e.to_string())?;
    tracing::info!(reader_id = %reader_id, plan_id = %plan_id, ?delivered, "payment authentication request emailed");
    Ok(())
}

/// Queues the renewal notices that fall due by `now`.
pub(crate) async fn queue_renewal_notices(
    worker: &Worker,
    now: OffsetDateTime,
) -> Result<usize, String> {
    let days = i64::from(worker.settings.notices.renewal_notice_days);
    let mut tx = worker.pool.begin().await.map_err(|e| e.to_string())?;
    let queued = kopilka_recurring::facts::queue_renewal_notices(
        &mut tx,
        now,
        now + time::Duration::days(days),
    )
    .await
    .map_err(|e| e.to_string())?;
    tx.commit().await.map_err(|e| e.to_string())?;
    Ok(queued)
}

/// Sends an annual plan's renewal notice, unless it was cancelled or moved meanwhile.
pub(crate) async fn renewal_notice(
    worker: &Worker,
    job: &Job,
    now: OffsetDateTime,
) -> Result<(), String> {
    let plan_id: uuid::Uuid = job.payload["plan_id"]
        .as_str()
        .and_then(|s| s.parse().ok())
        .ok_or("a renewal_notice job without plan_id")?;
    let renews_at = job.payload["renews_at"]
        .as_i64()
        .and_then(|t| OffsetDateTime::from_unix_timestamp(t).ok())
        .ok_or("a renewal_notice job without renews_at")?;
    let logical_id = format!("renewal-{plan_id}-{}", renews_at.unix_timestamp());
    let mut tx = worker.pool.begin().await.map_err(|e| e.to_string())?;
    let (plan, reader) = plan_and_reader(&mut tx, plan_id).await?;
    if !sends::claim(
        &mut tx,
        &logical_id,
        kopilka_recurring::facts::RENEWAL_NOTICE_JOB,
        reader,
    )
    .await?
    {
        return tx.commit().await.map_err(|e| e.to_string());
    }
    let still_renews = kopilka_recurring::facts::is_live(&plan.status)
        && !plan.cancel_at_period_end
        && plan.current_period_end == Some(renews_at);
    let recipient = match reader {
        Some(reader) if still_renews => sends::recipient(&mut tx, reader).await?,
        _ => None,
    };
    let (Some(reader_id), Some((reader, email))) = (reader, recipient) else {
        sends::skip(&mut tx, &logical_id, "plan changed or no address").await?;
        return tx.commit().await.map_err(|e| e.to_string());
    };
    let cancel_url = plan_link_url(worker, plan_id, PlanAction::Cancel, now)?;
    let context = serde_json::json!({
        "name": reader.greeting_name(),
        "amount": plan.amount.to_string(),
        "renews_on": date(renews_at),
        "cancel_url": cancel_url.as_str(),
    });
    let delivered = sends::render_and_deliver(
        worker,
        &mut tx,
        job,
        "renewal_notice",
        &reader,
        &email,
        &logical_id,
        &context,
        now,
    )
    .await?;
    tx.commit().await.map_err(|e| e.to_string())?;
    tracing::info!(reader_id = %reader_id, plan_id = %plan_id, ?delivered, "renewal notice emailed");
    Ok(())
}

/// Queues the notices of passes that end within `passes.ending_notice_days`.
pub(crate) async fn queue_pass_endings(
    worker: &Worker,
    now: OffsetDateTime,
) -> Result<usize, String> {
    let days = i64::from(worker.settings.passes.ending_notice_days);
    let mut tx = worker.pool.begin().await.map_err(|e| e.to_string())?;
    let queued = kopilka_contributions::passes::queue_ending_notices(
        &mut tx,
        now,
        now + time::Duration::days(days),
    )
    .await
    .map_err(|e| e.to_string())?;
    tx.commit().await.map_err(|e| e.to_string())?;
    Ok(queued)
}

/// Tells a pass's holder it ends soon, unless they renewed meanwhile (or have no address).
pub(crate) async fn pass_ending(
    worker: &Worker,
    job: &Job,
    now: OffsetDateTime,
) -> Result<(), String> {
    let pass_id: uuid::Uuid = job.payload["pass_id"]
        .as_str()
        .and_then(|s| s.parse().ok())
        .ok_or("a pass_ending job without pass_id")?;
    let ends_at = job.payload["ends_at"]
        .as_i64()
        .and_then(|t| OffsetDateTime::from_unix_timestamp(t).ok())
        .ok_or("a pass_ending job without ends_at")?;
    let logical_id = format!("pass-ending-{pass_id}-{}", ends_at.unix_timestamp());
    let mut tx = worker.pool.begin().await.map_err(|e| e.to_string())?;
    let holder = kopilka_contributions::passes::ending_holder(&mut tx, pass_id, ends_at)
        .await
        .map_err(|e| e.to_string())?;
    let reader = holder.map(|(reader, _)| reader);
    if !sends::claim(
        &mut tx,
        &logical_id,
        kopilka_contributions::passes::ENDING_NOTICE_JOB,
        reader,
    )
    .await?
    {
        return tx.commit().await.map_err(|e| e.to_string());
    }
    let recipient = match holder {
        Some((reader, true)) => sends::recipient(&mut tx, reader).await?,
        _ => None,
    };
    let (Some(reader_id), Some((reader, email))) = (reader, recipient) else {
        sends::skip(&mut tx, &logical_id, "renewed, voided or no address").await?;
        return tx.commit().await.map_err(|e| e.to_string());
    };
    let context = serde_json::json!({
        "name": reader.greeting_name(),
        "ends_on": date(ends_at),
        "renew_url": worker.settings.publisher.website.as_str(),
    });
    let delivered = sends::render_and_deliver(
        worker,
        &mut tx,
        job,
        "pass_ending",
        &reader,
        &email,
        &logical_id,
        &context,
        now,
    )
    .await?;
    tx.commit().await.map_err(|e| e.to_string())?;
    tracing::info!(reader_id = %reader_id, pass_id = %pass_id, ?delivered, "pass ending notice emailed");
    Ok(())
}
