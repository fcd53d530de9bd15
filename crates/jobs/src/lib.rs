//! The job kinds and the worker loop. A worker claims due jobs in `worker.concurrency`
//! lanes, each one job at a time (lanes and several workers share the queue safely), runs
//! each kind's handler, and records success, a retry with backoff, or the dead letter. It wakes on `LISTEN kopilka_jobs` and also polls.
//!
//! Kinds: applying a Stripe event, processing a BTCPay delivery, recording Stripe's fee on a payment (see `fees`), emailing an account link, a due reminder, a receipt or
//! a failed-payment notice, deleting an erased reader's Stripe customer (queued by older
//! versions; erasure itself now ends everything at Stripe first, see `privacy`), and the
//! daily retention sweep (see `retention`). Emails are sent once each (see `sends`).

mod account_mail;
mod fees;
mod notices;
pub mod privacy;
mod reminders;
mod retention;
mod sends;
mod statements;

pub use retention::{RETENTION_SWEEP, Swept, sweep};
pub use statements::{STATEMENT_JOB, queue_statements};
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use kopilka_config::Settings;
use kopilka_queue::{Job, QueueError};
use kopilka_reconciliation::{APPLY_BTCPAY_EVENT, APPLY_EVENT, ReconciliationError};
use kopilka_store::PgPool;
use sqlx::postgres::PgListener;
use time::OffsetDateTime;

/// What the job handlers need: the database, Stripe, the mailer and templates, the
/// accounts' keys, and the settings. Cheap to clone.
#[derive(Clone)]
pub struct Worker {
    /// Postgres.
    pub pool: PgPool,
    /// Stripe, when configured.
    pub stripe: Option<kopilka_stripe::StripeClient>,
    /// BTCPay Server, when configured.
    pub btcpay: Option<kopilka_btcpay::BtcpayClient>,
    /// Where emails go.
    pub mailer: kopilka_mail::Mailer,
    /// What emails say.
    pub templates: Arc<kopilka_mail::Templates>,
    /// Token keys (links in emails).
    pub accounts: kopilka_accounts::Accounts,
    /// The settings.
    pub settings: Arc<Settings>,
}

impl std::fmt::Debug for Worker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Worker")
            .field("mailer", &self.mailer)
            .finish_non_exhaustive()
    }
}

/// Why a worker could not be built.
#[derive(Debug, thiserror::Error)]
pub enum WorkerError {
    /// The mail transport or templates.
    #[error(transparent)]
    Mail(#[from] kopilka_mail::MailError),
    /// The Stripe client.
    #[error(transparent)]
    Stripe(#[from] kopilka_stripe::ClientError),
}

impl Worker {
    /// A worker over `pool` as `settings` describe it.
    ///
    /// # Errors
    /// [`WorkerError`] when the mailer, templates or Stripe client cannot be built.
    pub fn new(pool: PgPool, settings: &Settings) -> Result<Self, WorkerError> {
        Ok(Self {
            pool,
            stripe: kopilka_stripe::StripeClient::from_settings(&settings.stripe)?,
            btcpay: kopilka_btcpay::BtcpayClient::from_settings(&settings.btcpay),
            mailer: kopilka_mail::Mailer::from_settings(&settings.smtp)?,
            templates: Arc::new(kopilka_mail::Templates::new(&settings.publisher)?),
            accounts: kopilka_accounts::Accounts::from_settings(&settings.accounts),
            settings: Arc::new(settings.clone()),
        })
    }
}

/// How a run of the worker went.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RunSummary {
    /// Jobs that succeeded (the retention sweep is counted apart, in `sweeps`).
    pub done: usize,
    /// Jobs that failed and will be retried.
    pub retrying: usize,
    /// Jobs that failed for good (the dead letter).
    pub failed: usize,
    /// Retention sweeps that ran to the end (at most one a day).
    pub sweeps: usize,
    /// What they deleted.
    pub swept: Swept,
}

/// An actionable early fraud warning's refund (when `stripe.refund_on_early_fraud_warning`
/// is on): what is left of the payment, once (the warning's id is the idempotency key). A
/// payment already refunded or disputed needs nothing more.
async fn refund_on_fraud_warning(worker: &Worker, job: &Job) -> Result<(), String> {
    if !worker.settings.stripe.refund_on_early_fraud_warning {
        return Ok(());
    }
    let payment_intent = job.payload["payment_intent"]
        .as_str()
        .ok_or("a fraud-warning refund without payment_intent")?;
    let warning = job.payload["warning_id"]
        .as_str()
        .ok_or("a fraud-warning refund without warning_id")?;
    let stripe = worker.stripe.as_ref().ok_or("Stripe is not configured")?;
    match stripe
        .refund(payment_intent, &format!("efw-{warning}"), None)
        .await
    {
        Ok(_) => {
            tracing::info!(
                payment_intent,
                warning_id = warning,
                "refunded after an early fraud warning"
            );
            Ok(())
        }
        Err(err)
            if matches!(
                err.code(),
                Some("charge_already_refunded" | "charge_disputed")
            ) =>
        {
            Ok(())
        }
        Err(err) => Err(err.to_string()),
    }
}

/// Starts a handler's error that no retry can mend (an event refused for its API version):
/// the job goes to the dead letter at once, without a retry or a second log line.
const FINAL: &str = "final: ";

/// Runs one job's handler.
async fn run(worker: &Worker, job: &Job, now: OffsetDateTime) -> Result<(), String> {
    let pool = &worker.pool;
    match job.kind.as_str() {
        APPLY_EVENT => {
            let event_id = job.payload["event_id"]
                .as_str()
                .ok_or("a stripe_event job without event_id")?;
            match kopilka_reconciliation::apply_event(
                pool,
                worker.stripe.as_ref(),
                event_id,
                worker.settings.stripe.refund_on_early_fraud_warning,
            )
            .await
            {
                Ok(_) => Ok(()),
                Err(ReconciliationError::NotYet(why)) => Err(format!("waiting: {why}")),
                Err(err @ ReconciliationError::ApiVersion { .. }) => Err(format!("{FINAL}{err}")),
                Err(err) => Err(err.to_string()),
            }
        }
        APPLY_BTCPAY_EVENT => {
            let event_id = job.payload["event_id"]
                .as_str()
                .ok_or("a btcpay_event job without event_id")?;
            match kopilka_reconciliation::apply_btcpay_event(
                pool,
                worker.btcpay.as_ref(),
                event_id,
                worker.settings.passes.redeem_days,
            )
            .await
            {
                Ok(_) => Ok(()),
                Err(ReconciliationError::NotYet(why)) => Err(format!("waiting: {why}")),
                Err(err) => Err(err.to_string()),
            }
        }
        kopilka_reconciliation::fraud::REFUND_JOB => refund_on_fraud_warning(worker, job).await,
        kopilka_accounts::link::EMAIL_LINK_JOB => account_mail::email_link(worker, job, now).await,
        kopilka_accounts::reminder::REMINDER_JOB => reminders::send(worker, job, now).await,
        kopilka_contributions::ledger::RECEIPT_JOB => notices::receipt(worker, job, now).await,
        kopilka_contributions::passes::ENDING_NOTICE_JOB => {
            notices::pass_ending(worker, job, now).await
        }
        kopilka_contributions::ledger::FEE_JOB => fees::record(worker, job).await,
        kopilka_contributions::ledger::SETTLEMENT_JOB => fees::record_settlement(worker, job).await,
        statements::STATEMENT_JOB => statements::send(worker, job, now).await,
        kopilka_recurring::facts::RENEWAL_NOTICE_JOB => {
            notices::renewal_notice(worker, job, now).await
        }
        kopilka_recurring::facts::PAYMENT_FAILED_JOB => {
            notices::payment_failed(worker, job, now).await
        }
        kopilka_recurring::facts::PAYMENT_ACTION_JOB => {
            notices::payment_action_required(worker, job, now).await
        }
        kopilka_recurring::privacy::CLEAR_STRIPE_CUSTOMER => {
            let customer = job.payload["customer_id"]
                .as_str()
                .ok_or("a clear_stripe_customer job without customer_id")?;
            let stripe = worker.stripe.as_ref().ok_or("Stripe is not configured")?;
            stripe
                .delete_customer(customer)
                .await
                .map_err(|e| e.to_string())?;
            tracing::info!(
                customer_id = customer,
                "erased reader's Stripe customer deleted"
            );
            Ok(())
        }
        kopilka_experiments::bandit::BANDIT_JOB => kopilka_experiments::bandit::update_all(
            &worker.pool,
            &worker.settings.offer,
            &worker.settings.experiments,
        )
        .await
        .map(|_| ())
        .map_err(|e| e.to_string()),
        other => Err(format!("unknown job kind {other:?}")),
    }
}

/// Queues the recomputation of the bandits' shares once per `experiments.bandit_minutes`
/// period (whichever worker gets there first), while a bandit runs.
async fn queue_bandit(worker: &Worker, now: OffsetDateTime) -> Result<(), String> {
    let running = kopilka_experiments::bandit::any_running(&worker.pool)
        .await
        .map_err(|e| e.to_string())?;
    if !running {
        return Ok(());
    }
    let period = i64::from(worker.settings.experiments.bandit_minutes.max(1)) * 60;
    let slot = now.unix_timestamp().div_euclid(period);
    let job = kopilka_queue::NewJob::new(
        kopilka_experiments::bandit::BANDIT_JOB,
        serde_json::json!({ "slot": slot }),
    )
    .dedup(format!(
        "{}:{slot}",
        kopilka_experiments::bandit::BANDIT_JOB
    ));
    let job = kopilka_queue::NewJob {
        run_at: Some(now),
        ..job
    };
    let mut conn = worker.pool.acquire().await.map_err(|e| e.to_string())?;
    kopilka_queue::enqueue(&mut conn, &job)
        .await
        .map_err(|e| e.to_string())?;
    Ok(())
}

/// Claims and runs every job due at `now`, then returns (`worker --once`).
///
/// # Errors
/// Storage errors of the queue itself.
pub async fn run_due(worker: &Worker, now: OffsetDateTime) -> Result<RunSummary, QueueError> {
    // What fell due by `now` is queued first (once each, whichever worker gets there).
    if let Err(error) = reminders::queue_due(worker, now).await {
        tracing::warn!(error, "due reminders not queued");
    }
    if let Err(error) = notices::queue_renewal_notices(worker, now).await {
        tracing::warn!(error, "renewal notices not queued");
    }
    if let Err(error) = notices::queue_pass_endings(worker, now).await {
        tracing::warn!(error, "pass ending notices not queued");
    }
    if let Err(error) = retention::queue_daily(worker, now).await {
        tracing::warn!(error, "the retention sweep not queued");
    }
    if let Err(error) = queue_bandit(worker, now).await {
        tracing::warn!(error, "the bandit's recomputation not queued");
    }
    // `worker.concurrency` lanes claim and run jobs side by side until none is due; each
    // job is claimed by one lane only (SKIP LOCKED), as with several workers.
    let lanes = worker.settings.worker.concurrency.max(1);
    let results = futures_util::future::join_all((0..lanes).map(|_| run_lane(worker, now))).await;
    let mut summary = RunSummary::default();
    for result in results {
        let lane = result?;
        summary.done += lane.done;
        summary.retrying += lane.retrying;
        summary.failed += lane.failed;
        summary.sweeps += lane.sweeps;
        summary.swept += lane.swept;
    }
    Ok(summary)
}

/// One lane of [`run_due`]: claims and runs due jobs one at a time until none is left.
async fn run_lane(worker: &Worker, now: OffsetDateTime) -> Result<RunSummary, QueueError> {
    let pool = &worker.pool;
    let mut summary = RunSummary::default();
    // Jobs retried in this run are due later, so the loop ends.
    while let Some(job) = kopilka_queue::claim(pool, now).await? {
        let outcome = if job.kind == RETENTION_SWEEP {
            retention::sweep(
                pool,
                &worker.settings.retention,
                &worker.settings.abuse,
                now,
            )
            .await
            .map(Some)
        } else {
            run(worker, &job, now).await.map(|()| None)
        };
        match outcome {
            Ok(swept) => {
                kopilka_queue::complete(pool, &job).await?;
                match swept {
                    Some(swept) => {
                        summary.sweeps += 1;
                        summary.swept += swept;
                    }
                    None => summary.done += 1,
                }
            }
            Err(error) if error.starts_with(FINAL) => {
                // The handler logged it (once); retrying would only log it again.
                let error = &error[FINAL.len()..];
                kopilka_queue::give_up(pool, &job, error).await?;
                summary.failed += 1;
            }
            Err(error) => {
                let retry = kopilka_queue::fail(pool, &job, &error, now).await?;
                tracing::warn!(job_id = %job.id, kind = %job.kind, attempt = job.attempt, retry, error, "job failed");
                if retry {
                    summary.retrying += 1;
                } else {
                    summary.failed += 1;
                    // APPLY_EVENT applies Stripe's events, APPLY_BTCPAY_EVENT BTCPay's.
                    let provider = match job.kind.as_str() {
                        APPLY_EVENT => Some(kopilka_domain::Provider::Stripe),
                        APPLY_BTCPAY_EVENT => Some(kopilka_domain::Provider::Btcpay),
                        _ => None,
                    };
                    if let (Some(provider), Some(event_id)) =
                        (provider, job.payload["event_id"].as_str())
                        && let Err(err) = kopilka_reconciliation::inbox::mark_failed(
                            pool, provider, event_id, &error,
                        )
                        .await
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
pub async fn run_forever(worker: Worker, poll: Duration, shutdown: impl Future<Output = ()>) {
    tokio::pin!(shutdown);
    let mut listener = match PgListener::connect_with(&worker.pool).await {
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
        if let Err(err) = run_due(&worker, OffsetDateTime::now_utc()).await {
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
