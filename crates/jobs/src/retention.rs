//! The daily retention sweep (`retention.sweep`): deletes what outlived its window in
//! `[retention]`. Each table's owner does its own deleting (accounts: sessions, links,
//! throttles, unverified readers; contributions: checkout requests; the queue: finished
//! jobs; this crate: email-send details); the sweep only asks each in turn, as of the
//! worker's clock (`worker --once --as-of` moves it).
//!
//! Every step deletes whole rows in batches of [`BATCH`], one transaction per batch, and
//! asks again until a batch comes back short: a sweep cut off anywhere leaves every row
//! either gone or whole (a reader goes with its own credentials, links and sessions in one
//! statement), and the job's retry simply carries on.

use kopilka_config::{AbuseSettings, RetentionSettings};
use kopilka_queue::NewJob;
use kopilka_store::PgPool;
use serde::Serialize;
use time::OffsetDateTime;

use crate::Worker;

/// The kind of the daily sweep job (payload `{"day": "YYYY-MM-DD"}`, one per day).
pub const RETENTION_SWEEP: &str = "retention.sweep";

/// Rows per transaction.
const BATCH: i64 = 1000;

/// What one sweep deleted (or, for email sends, unlinked).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Swept {
    /// Sessions deleted (`retention.session_days` after they ended).
    pub sessions: u64,
    /// Emailed links deleted (`retention.link_days` after use or expiry).
    pub links: u64,
    /// Login-throttle counters deleted (`retention.throttle_hours` after the backoff).
    pub throttles: u64,
    /// Email sends whose reader and last error were cleared (`retention.email_send_days`).
    pub email_sends: u64,
    /// Unverified readers with nothing linked deleted (`retention.unverified_reader_days`).
    pub readers: u64,
    /// Finished queue jobs deleted (`retention.done_job_days`).
    pub jobs: u64,
    /// Checkout requests (idempotency fingerprints) deleted
    /// (`retention.checkout_request_hours`).
    pub checkout_requests: u64,
    /// Records of used one-click plan links deleted once the link expired.
    pub plan_link_uses: u64,
    /// The card-testing shield's rows deleted: checkout attributions a day past the
    /// shield's window, failures past it, blocks over for longer than it.
    pub shield: u64,
}

impl std::ops::AddAssign for Swept {
    fn add_assign(&mut self, other: Self) {
        self.sessions += other.sessions;
        self.links += other.links;
        self.throttles += other.throttles;
        self.email_sends += other.email_sends;
        self.readers += other.readers;
        self.jobs += other.jobs;
        self.checkout_requests += other.checkout_requests;
        self.plan_link_uses += other.plan_link_uses;
        self.shield += other.shield;
    }
}

impl std::fmt::Display for Swept {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} sessions, {} links, {} throttles, {} readers, {} jobs, {} checkout requests, {} plan link uses, {} shield rows deleted; {} email sends unlinked",
            self.sessions,
            self.links,
            self.throttles,
            self.readers,
            self.jobs,
            self.checkout_requests,
            self.plan_link_uses,
            self.shield,
            self.email_sends
        )
    }
}

/// Queues the sweep of `now`'s day (UTC) unless it was queued already; `true` when new.
pub(crate) async fn queue_daily(worker: &Worker, now: OffsetDateTime) -> Result<bool, String> {
    let day = now.date().to_string();
    let job = NewJob::new(RETENTION_SWEEP, serde_json::json!({ "day": day }))
        .dedup(format!("{RETENTION_SWEEP}:{day}"));
    let job = NewJob {
        run_at: Some(now),
        ..job
    };
    let mut conn = worker.pool.acquire().await.map_err(|e| e.to_string())?;
    let queued = kopilka_queue::enqueue(&mut conn, &job)
        .await
        .map_err(|e| e.to_string())?;
    Ok(queued.is_some())
}

/// The batched deletions, in the order the sweep runs them.
#[derive(Debug, Clone, Copy)]
enum Step {
    Sessions,
    Links,
    Throttles,
    EmailSends,
    Jobs,
    CheckoutRequests,
    PlanLinkUses,
    Shield,
}

impl Step {
    fn name(self) -> &'static str {
        match self {
            Self::Sessions => "sessions",
            Self::Links => "links",
            Self::Throttles => "throttles",
            Self::EmailSends => "email sends",
            Self::Jobs => "jobs",
            Self::CheckoutRequests => "checkout requests",
            Self::PlanLinkUses => "plan link uses",
            Self::Shield => "shield",
        }
    }

    /// One batch of this step, as of `now`: how many rows it deleted (or unlinked).
    async fn batch(
        self,
        conn: &mut sqlx::PgConnection,
        windows: &RetentionSettings,
        abuse: &AbuseSettings,
        now: OffsetDateTime,
    ) -> Result<u64, String> {
        use kopilka_accounts::{link, plan_link, session, throttle};
        let text = |e: &dyn std::fmt::Display| e.to_string();
        match self {
            Self::Sessions => session::forget_ended(conn, now - windows.sessions(), BATCH)
                .await
                .map_err(|e| text(&e)),
            Self::Links => link::forget_spent(conn, now - windows.links(), BATCH)
                .await
                .map_err(|e| text(&e)),
            Self::Throttles => throttle::forget_spent(conn, now - windows.throttles(), BATCH)
                .await
                .map_err(|e| text(&e)),
            Self::EmailSends => {
                crate::sends::forget_details(conn, now - windows.email_sends(), BATCH).await
            }
            Self::Jobs => kopilka_queue::forget_done(conn, now - windows.done_jobs(), BATCH)
                .await
                .map_err(|e| text(&e)),
            Self::CheckoutRequests => kopilka_contributions::forget_old_requests(
                conn,
                now - windows.checkout_requests(),
                BATCH,
            )
            .await
            .map_err(|e| text(&e)),
            // A used link's record is needed only while the link could still work.
            Self::PlanLinkUses => plan_link::forget_expired_uses(conn, now, BATCH)
                .await
                .map_err(|e| text(&e)),
            Self::Shield => kopilka_contributions::shield::forget_spent(conn, abuse, now, BATCH)
                .await
                .map_err(|e| text(&e)),
        }
    }

    /// Runs this step in batches, one transaction each, until a batch comes back short;
    /// returns the total.
    async fn run(
        self,
        pool: &PgPool,
        windows: &RetentionSettings,
        abuse: &AbuseSettings,
        now: OffsetDateTime,
    ) -> Result<u64, String> {
        let mut total = 0;
        loop {
            let mut tx = pool.begin().await.map_err(|e| e.to_string())?;
            let done = self
                .batch(&mut tx, windows, abuse, now)
                .await
                .map_err(|e| format!("{}: {e}", self.name()))?;
            tx.commit().await.map_err(|e| e.to_string())?;
            total += done;
            if done < u64::try_from(BATCH).unwrap_or(u64::MAX) {
                return Ok(total);
            }
        }
    }
}

/// Deletes everything past its window as of `now`; returns the counts.
///
/// # Errors
/// Storage errors (what was deleted before one stays deleted; a rerun continues).
pub async fn sweep(
    pool: &PgPool,
    windows: &RetentionSettings,
    abuse: &AbuseSettings,
    now: OffsetDateTime,
) -> Result<Swept, String> {
    use kopilka_accounts::reader;
    let mut swept = Swept {
        sessions: Step::Sessions.run(pool, windows, abuse, now).await?,
        links: Step::Links.run(pool, windows, abuse, now).await?,
        throttles: Step::Throttles.run(pool, windows, abuse, now).await?,
        email_sends: Step::EmailSends.run(pool, windows, abuse, now).await?,
        readers: 0,
        jobs: Step::Jobs.run(pool, windows, abuse, now).await?,
        checkout_requests: Step::CheckoutRequests
            .run(pool, windows, abuse, now)
            .await?,
        plan_link_uses: Step::PlanLinkUses.run(pool, windows, abuse, now).await?,
        shield: Step::Shield.run(pool, windows, abuse, now).await?,
    };
    // Readers last: what the steps above deleted no longer keeps anyone. A cursor walks
    // the candidates, so readers kept for a link outside this crate's view never fill a
    // batch for ever.
    let mut after = None;
    loop {
        let mut tx = pool.begin().await.map_err(|e| e.to_string())?;
        let (deleted, next) = reader::forget_unverified(
            &mut tx,
            now - windows.unverified_readers(),
            now,
            BATCH,
            after,
        )
        .await
        .map_err(|e| format!("readers: {e}"))?;
        tx.commit().await.map_err(|e| e.to_string())?;
        swept.readers += deleted;
        match next {
            Some(cursor) => after = Some(cursor),
            None => break,
        }
    }
    tracing::info!(
        sessions = swept.sessions,
        links = swept.links,
        throttles = swept.throttles,
        email_sends = swept.email_sends,
        readers = swept.readers,
        jobs = swept.jobs,
        checkout_requests = swept.checkout_requests,
        plan_link_uses = swept.plan_link_uses,
        shield = swept.shield,
        "retention sweep done"
    );
    Ok(swept)
}
