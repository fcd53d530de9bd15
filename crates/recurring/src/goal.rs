//! "This costs us $10,000 a month: help us fill the gap." The figure is live monthly
//! recurring revenue (annual plans count a twelfth, a supporter pass of N months an Nth
//! of its payment during those months) plus one-off gifts this calendar month
//! (UTC), in the goal's currency; other currencies count only through the configured rates.
//! It is computed off the request path and kept in a [`GoalCache`] that the offer endpoint
//! reads without touching Postgres.
//!
//! What the cache holds is the *published* figure ([`publish`]): so that a watcher cannot
//! read single gifts off its steps, it is the figure as of the start of the current
//! `offer.goal.publish_lag_secs` window (epoch-aligned: 86400 = as of the last midnight UTC;
//! only payments and plans from before that instant count), rounded down to a multiple of
//! `offer.goal.round_minor`. Both 0 (the default) publish the exact, live figure.

use std::sync::Arc;
use std::time::Duration;

use kopilka_config::OfferSettings;
use kopilka_domain::{Currency, Money};
use kopilka_store::PgPool;
use serde::Serialize;
use sqlx::PgConnection;
use time::OffsetDateTime;
use tokio::sync::Notify;

use crate::RecurringError;

/// The channel a payment's landing is announced on (`NOTIFY kopilka_goal`), so a cache in
/// any process recomputes at once.
pub const CHANNEL: &str = "kopilka_goal";

/// The goal's progress at one moment.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct GoalFigure {
    /// The goal's currency.
    pub currency: Currency,
    /// The monthly target.
    pub target_minor: i64,
    /// Monthly recurring revenue plus this month's one-off gifts.
    pub current_minor: i64,
    /// When it was computed (unix seconds).
    pub computed_at: i64,
}

/// The first instant of `now`'s calendar month (UTC) and of the next one.
#[must_use]
pub fn month_bounds(now: OffsetDateTime) -> (OffsetDateTime, OffsetDateTime) {
    let now = now.to_offset(time::UtcOffset::UTC);
    let start = now
        .replace_day(1)
        .unwrap_or(now)
        .replace_time(time::Time::MIDNIGHT);
    let (year, month) = if now.month() == time::Month::December {
        (now.year() + 1, time::Month::January)
    } else {
        (now.year(), now.month().next())
    };
    let next = time::Date::from_calendar_date(year, month, 1)
        .map_or(start, |date| start.replace_date(date));
    (start, next)
}

/// Computes the exact figure at `now` (what `admin report goal` shows as `current_minor`).
///
/// # Errors
/// Storage errors, or an overflow (never with real amounts).
pub async fn compute(
    conn: &mut PgConnection,
    offer: &OfferSettings,
    now: OffsetDateTime,
) -> Result<GoalFigure, RecurringError> {
    figure(conn, offer, now, None).await
}

/// The start of the publication window `now` falls in (`now` itself when `lag_secs` is 0).
#[must_use]
pub fn window_start(now: OffsetDateTime, lag_secs: u64) -> OffsetDateTime {
    let Ok(lag) = i64::try_from(lag_secs) else {
        return now;
    };
    if lag == 0 {
        return now;
    }
    let at = now.unix_timestamp();
    OffsetDateTime::from_unix_timestamp(at - at.rem_euclid(lag)).unwrap_or(now)
}

/// `minor` rounded down to a multiple of `step` (unchanged when `step` is 0 or less).
#[must_use]
pub fn round_down(minor: i64, step: i64) -> i64 {
    if step <= 0 {
        minor
    } else {
        minor - minor.rem_euclid(step)
    }
}

/// The figure the public sees at `now` (see the module docs): as of the start of the
/// current publication window, counting only plans started and gifts made before it,
/// rounded down to `offer.goal.round_minor`. `computed_at` is the window's start.
///
/// # Errors
/// Storage errors, or an overflow (never with real amounts).
pub async fn publish(
    conn: &mut PgConnection,
    offer: &OfferSettings,
    now: OffsetDateTime,
) -> Result<GoalFigure, RecurringError> {
    let lag = offer.goal.publish_lag_secs;
    let mut published = if lag == 0 {
        figure(conn, offer, now, None).await?
    } else {
        let as_of = window_start(now, lag);
        figure(conn, offer, as_of, Some(as_of)).await?
    };
    published.current_minor = round_down(published.current_minor, offer.goal.round_minor);
    Ok(published)
}

/// The figure at `now`; with a `cutoff`, only plans created and gifts made before it count.
async fn figure(
    conn: &mut PgConnection,
    offer: &OfferSettings,
    now: OffsetDateTime,
    cutoff: Option<OffsetDateTime>,
) -> Result<GoalFigure, RecurringError> {
    let goal = offer.goal.currency;
    // Annualised per currency (monthly × 12 + annual), divided by 12 once at the end, so
    // twelve annual plans of 1 200 make exactly 1 200 a month.
    let mut recurring: Vec<(String, i64)> = sqlx::query_as(
        "SELECT currency, sum(CASE interval WHEN 'month' THEN amount_minor * 12 ELSE amount_minor END)::bigint
         FROM recurring_plans WHERE status IN ('active', 'past_due', 'trialing')
           AND ($1::timestamptz IS NULL OR created_at < $1)
         GROUP BY currency",
    )
    .bind(cutoff)
    .fetch_all(&mut *conn)
    .await?;
    // Supporter passes count like plans: a pass of N months an Nth of its payment in each
    // month it covers (annualised here as plans are).
    let passes: Vec<(String, i64)> = sqlx::query_as(
        "SELECT l.currency, sum(l.amount_minor * 12 / c.pass_months)::bigint
         FROM ledger_entries l JOIN contributions c ON c.id = l.contribution_id
         WHERE c.pass_months IS NOT NULL AND l.kind <> 'fee'
           AND l.occurred_at <= $1
           AND l.occurred_at + make_interval(months => c.pass_months::int) > $1
           AND ($2::timestamptz IS NULL OR l.occurred_at < $2)
         GROUP BY l.currency",
    )
    .bind(now)
    .bind(cutoff)
    .fetch_all(&mut *conn)
    .await?;
    recurring.extend(passes);
    let (start, end) = month_bounds(now);
    let end = cutoff.map_or(end, |cutoff| cutoff.min(end));
    let one_off: Vec<(String, i64)> = sqlx::query_as(
        "SELECT l.currency, sum(l.amount_minor)::bigint
         FROM ledger_entries l JOIN contributions c ON c.id = l.contribution_id
         WHERE c.interval = 'once' AND c.pass_months IS NULL AND l.plan_id IS NULL AND l.kind <> 'fee'
           AND l.occurred_at >= $1 AND l.occurred_at < $2
         GROUP BY l.currency",
    )
    .bind(start)
    .bind(end)
    .fetch_all(&mut *conn)
    .await?;

    let in_goal = |rows: Vec<(String, i64)>| -> Result<i64, RecurringError> {
        let mut total = Money::zero(goal);
        for (currency, minor) in rows {
            let Ok(currency) = currency.parse::<Currency>() else {
                continue;
            };
            let amount = Money::new(minor, currency);
            let converted = if currency == goal {
                amount
            } else {
                match offer.rates.get(&currency) {
                    Some(rate) => amount
                        .convert(goal, *rate)
                        .map_err(|e| RecurringError::Refused(e.to_string()))?,
                    // Validation requires a rate for every offered currency; anything else
                    // (a currency since removed from the offer) is left out, and said so.
                    None => {
                        tracing::warn!(%currency, "no rate: left out of the goal");
                        continue;
                    }
                }
            };
            total = total
                .checked_add(converted)
                .map_err(|e| RecurringError::Refused(e.to_string()))?;
        }
        Ok(total.minor())
    };
    let monthly = in_goal(recurring)? / 12;
    let gifts = in_goal(one_off)?;
    Ok(GoalFigure {
        currency: goal,
        target_minor: offer.goal.target_minor,
        current_minor: monthly + gifts,
        computed_at: now.unix_timestamp(),
    })
}

/// The latest figure, shared by the refresher (writes) and the offer endpoint (reads).
#[derive(Clone, Default)]
pub struct GoalCache {
    figure: Arc<arc_swap::ArcSwapOption<GoalFigure>>,
    nudge: Arc<Notify>,
}

impl std::fmt::Debug for GoalCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GoalCache")
            .field("figure", &self.get())
            .finish_non_exhaustive()
    }
}

impl GoalCache {
    /// The last computed figure; `None` until the first computation succeeded.
    #[must_use]
    pub fn get(&self) -> Option<GoalFigure> {
        // Every page view reads it: a lock-free load, no shared count touched.
        self.figure.load().as_deref().cloned()
    }

    /// Asks the refresher to recompute now (a payment landed).
    pub fn nudge(&self) {
        self.nudge.notify_one();
    }

    /// Recomputes the published figure (see [`publish`]) from `pool` at `now`.
    ///
    /// # Errors
    /// Storage errors; the previous figure stays.
    pub async fn refresh(
        &self,
        pool: &PgPool,
        offer: &OfferSettings,
        now: OffsetDateTime,
    ) -> Result<(), RecurringError> {
        let mut conn = pool
            .acquire()
            .await
            .map_err(kopilka_store::StoreError::from)?;
        let figure = publish(&mut conn, offer, now).await?;
        tracing::debug!("goal refreshed");
        self.figure.store(Some(Arc::new(figure)));
        Ok(())
    }

    /// Refreshes every `offer.goal.refresh_secs`, whenever nudged, and whenever a payment
    /// lands anywhere (`LISTEN kopilka_goal`), until the runtime stops. Failures are logged
    /// and retried on the next tick.
    pub fn spawn_refresher(
        &self,
        pool: PgPool,
        offer: OfferSettings,
    ) -> tokio::task::JoinHandle<()> {
        let cache = self.clone();
        let every = Duration::from_secs(offer.goal.refresh_secs);
        tokio::spawn(async move {
            let mut listener: Option<sqlx::postgres::PgListener> = None;
            loop {
                if listener.is_none() {
                    // Listen before computing, so a payment landing meanwhile is not missed;
                    // retried every round while Postgres is away.
                    match sqlx::postgres::PgListener::connect_with(&pool).await {
                        Ok(mut fresh) => match fresh.listen(CHANNEL).await {
                            Ok(()) => listener = Some(fresh),
                            Err(err) => tracing::warn!(error = %err, "goal: cannot LISTEN"),
                        },
                        Err(err) => tracing::warn!(error = %err, "goal: cannot connect a listener"),
                    }
                }
                if let Err(err) = cache
                    .refresh(&pool, &offer, OffsetDateTime::now_utc())
                    .await
                {
                    tracing::warn!(error = %err, "goal not refreshed");
                }
                let landed = async {
                    match listener.as_mut() {
                        Some(l) => l.recv().await.is_ok(),
                        None => std::future::pending().await,
                    }
                };
                tokio::select! {
                    () = tokio::time::sleep(every) => {}
                    () = cache.nudge.notified() => {}
                    ok = landed => {
                        if !ok {
                            listener = None;
                        }
                    }
                }
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use time::macros::datetime;

    use super::{month_bounds, round_down, window_start};

    #[test]
    fn publication_windows_align_to_the_epoch_and_rounding_goes_down() {
        assert_eq!(
            window_start(datetime!(2026-11-29 14:05 UTC), 86_400),
            datetime!(2026-11-29 0:00 UTC)
        );
        assert_eq!(
            window_start(datetime!(2026-11-29 0:00 UTC), 86_400),
            datetime!(2026-11-29 0:00 UTC)
        );
        assert_eq!(
            window_start(datetime!(2026-11-29 14:05:07 UTC), 0),
            datetime!(2026-11-29 14:05:07 UTC)
        );
        assert_eq!(round_down(123_456, 10_000), 120_000);
        assert_eq!(round_down(9_999, 10_000), 0);
        assert_eq!(round_down(123_456, 0), 123_456);
    }

    #[test]
    fn months_start_at_midnight_utc_on_the_first() {
        assert_eq!(
            month_bounds(datetime!(2026-11-29 14:05 UTC)),
            (
                datetime!(2026-11-01 0:00 UTC),
                datetime!(2026-12-01 0:00 UTC)
            )
        );
        assert_eq!(
            month_bounds(datetime!(2026-12-31 23:59:59 UTC)),
            (
                datetime!(2026-12-01 0:00 UTC),
                datetime!(2027-01-01 0:00 UTC)
            )
        );
        assert_eq!(
            month_bounds(datetime!(2027-01-01 0:00 UTC)),
            (
                datetime!(2027-01-01 0:00 UTC),
                datetime!(2027-02-01 0:00 UTC)
            )
        );
    }
}
