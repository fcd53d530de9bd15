//! Who counts as a supporter: a reader with a live plan, a running supporter pass, or a
//! one-off gift within the configured number of days. One function, used by the paywall and the reminder logic.

use kopilka_domain::Interval;
use kopilka_domain::id::ReaderId;
use sqlx::PgConnection;
use time::{Duration, OffsetDateTime};

use crate::RecurringError;

/// A reader's supporter status.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SupporterStatus {
    /// Whether they count as a supporter now.
    pub supporter: bool,
    /// Their strongest tie: an annual plan, a monthly plan, or a one-off gift.
    pub interval: Option<Interval>,
    /// Until when the status holds without another payment.
    pub paid_through: Option<OffsetDateTime>,
    /// Whether a supporter pass is what makes them one (`interval` is then `once`).
    pub pass: bool,
}

/// The status of `reader` at `now`, with one-off gifts counting for `one_off_days`.
///
/// # Errors
/// Storage errors.
pub async fn supporter_status(
    conn: &mut PgConnection,
    reader: ReaderId,
    now: OffsetDateTime,
    one_off_days: u32,
) -> Result<SupporterStatus, RecurringError> {
    let plan: Option<(String, Option<OffsetDateTime>)> = sqlx::query_as(
        "SELECT p.interval, p.current_period_end FROM recurring_plans p
         JOIN contributions c ON c.id = p.contribution_id
         WHERE c.reader_id = $1 AND p.status IN ('active', 'past_due', 'trialing')
         ORDER BY (p.interval = 'year') DESC, p.current_period_end DESC NULLS LAST LIMIT 1",
    )
    .bind(reader.as_uuid())
    .fetch_optional(&mut *conn)
    .await?;
    if let Some((interval, end)) = plan {
        return Ok(SupporterStatus {
            supporter: true,
            interval: interval.parse().ok(),
            paid_through: end,
            pass: false,
        });
    }
    if let Some(end) = kopilka_contributions::passes::paid_through(conn, reader, now).await? {
        return Ok(SupporterStatus {
            supporter: true,
            interval: Some(Interval::Once),
            paid_through: Some(end),
            pass: true,
        });
    }
    let since = now - Duration::days(i64::from(one_off_days));
    let last_gift: Option<OffsetDateTime> = sqlx::query_scalar(
        "SELECT max(l.occurred_at) FROM ledger_entries l JOIN contributions c ON c.id = l.contribution_id
         WHERE c.reader_id = $1 AND c.interval = 'once' AND c.status = 'paid' AND l.kind = 'payment'
           AND l.occurred_at > $2
           -- A payment its provider took back counts for nothing; a pass the buyer holds
           -- counts for its own months (above), not as a one-off gift.
           AND NOT EXISTS (SELECT 1 FROM ledger_entries r
                           WHERE r.contribution_id = c.id AND r.kind = 'reversal')
           AND NOT EXISTS (SELECT 1 FROM passes p
                           WHERE p.contribution_id = c.id AND p.code_hash IS NULL)",
    )
    .bind(reader.as_uuid())
    .bind(since)
    .fetch_one(&mut *conn)
    .await?;
    Ok(match last_gift {
        Some(at) => SupporterStatus {
            supporter: true,
            interval: Some(Interval::Once),
            paid_through: Some(at + Duration::days(i64::from(one_off_days))),
            pass: false,
        },
        None => SupporterStatus {
            supporter: false,
            interval: None,
            paid_through: None,
            pass: false,
        },
    })
}
