//! `kopilka worker`: runs background jobs (Stripe events, emails, notices, statements).
//! `--once` runs every job due (as of `--as-of`, default now) and exits.

use std::time::Duration;

use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use crate::{database, logging, output, shutdown};

/// Options of `kopilka worker`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Run every job that is due, then exit.
    #[arg(long)]
    once: bool,
    /// With --once: treat this instant (RFC 3339) as now.
    #[arg(long, value_parser = parse_rfc3339, requires = "once")]
    as_of: Option<OffsetDateTime>,
}

fn parse_rfc3339(text: &str) -> Result<OffsetDateTime, String> {
    OffsetDateTime::parse(text, &Rfc3339)
        .map_err(|e| format!("expected RFC 3339 (2026-11-29T12:00:00Z): {e}"))
}

pub async fn run(args: &Args) -> anyhow::Result<()> {
    let settings = kopilka_config::load()?;
    logging::init(&settings.log);
    let pool = database::pool(&settings)?;
    let worker = kopilka_jobs::Worker::new(pool, &settings)?;
    if args.once {
        let now = args.as_of.unwrap_or_else(OffsetDateTime::now_utc);
        let summary = kopilka_jobs::run_due(&worker, now).await?;
        output::line(&format!(
            "kopilka worker: {} done, {} to retry, {} failed (as of {})",
            summary.done,
            summary.retrying,
            summary.failed,
            now.format(&Rfc3339)?
        ));
        if summary.sweeps > 0 {
            output::line(&format!(
                "kopilka worker: retention sweep: {}",
                summary.swept
            ));
        }
        return Ok(());
    }
    let shutdown = shutdown::signal_received();
    tracing::info!("worker running");
    kopilka_jobs::run_forever(
        worker,
        Duration::from_secs(settings.worker.poll_secs),
        shutdown,
    )
    .await;
    Ok(())
}

/// A worker loop running inside `serve` or `dev`.
pub struct InProcess {
    stop: tokio::sync::oneshot::Sender<()>,
    handle: tokio::task::JoinHandle<()>,
}

/// Starts the job loop in this process.
///
/// # Errors
/// When the mailer, templates or Stripe client cannot be built.
pub fn in_process(
    pool: &kopilka_store::PgPool,
    settings: &kopilka_config::Settings,
) -> Result<InProcess, kopilka_jobs::WorkerError> {
    let worker = kopilka_jobs::Worker::new(pool.clone(), settings)?;
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let poll = Duration::from_secs(settings.worker.poll_secs);
    let handle = tokio::spawn(kopilka_jobs::run_forever(worker, poll, async {
        let _ = stopped.await;
    }));
    Ok(InProcess { stop, handle })
}

impl InProcess {
    /// Lets the running job finish, then stops the loop (releasing its connections).
    pub async fn stop(self) {
        let _ = self.stop.send(());
        let _ = self.handle.await;
    }
}
