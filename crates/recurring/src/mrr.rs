//! Monthly recurring revenue and churn per calendar month, derived from the ledger: a month
//! counts a monthly payment made in it, and an annual payment made in it or the eleven
//! months before (a twelfth of it). Each payment counts for the interval it paid for (its
//! invoice's period, remembered in `plan_invoices`), so a plan switched monthly → annual
//! keeps its past monthly payments monthly; payments of earlier versions, whose invoice's
//! interval was not remembered, count for the plan's current interval. A plan counted last month and not this month
//! churned. In the goal's currency, through the configured rates.
//!
//! Supporter passes (the crypto rail's months paid ahead) are their own line: a pass bought
//! for N months counts an Nth of its payment in each of the N months from its payment.

use std::collections::{BTreeMap, BTreeSet};

use kopilka_config::OfferSettings;
use kopilka_domain::{Currency, Money};
use serde::Serialize;
use sqlx::PgConnection;
use time::OffsetDateTime;

use crate::RecurringError;

/// One month's figures.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct MonthFigures {
    /// `YYYY-MM`.
    pub month: String,
    /// MRR in the goal's currency.
    pub mrr_minor: i64,
    /// Plans counted.
    pub plans: usize,
    /// Plans counted the month before and not this one.
    pub churned: usize,
    /// `churned / plans of the month before`, as an exact decimal with four places.
    pub churn_rate: String,
    /// Supporter passes' share of the month, in the goal's currency (not in `mrr_minor`).
    pub pass_mrr_minor: i64,
    /// Pass purchases counted.
    pub passes: usize,
}

type Row = (OffsetDateTime, uuid::Uuid, String, i64);

/// Figures for each month from `from`'s month to `to`'s month (UTC).
///
/// # Errors
/// Storage errors.
pub async fn mrr_by_month(
    conn: &mut PgConnection,
    offer: &OfferSettings,
    from: OffsetDateTime,
    to: OffsetDateTime,
) -> Result<Vec<MonthFigures>, RecurringError> {
    // One row per (month, plan payment that covers it): annualised amounts, /12 at the end.
    let rows: Vec<Row> = sqlx::query_as(
        "WITH months AS (
             SELECT generate_series(date_trunc('month', $1::timestamptz AT TIME ZONE 'UTC'),
                                    date_trunc('month', $2::timestamptz AT TIME ZONE 'UTC'),
                                    interval '1 month') AT TIME ZONE 'UTC' AS month)
         , payments AS (
             SELECT l.plan_id, l.currency, l.amount_minor, l.occurred_at,
                    coalesce(i.interval, p.interval) AS paid_for
             FROM ledger_entries l
             JOIN recurring_plans p ON p.id = l.plan_id
             LEFT JOIN plan_invoices i ON l.provider = 'stripe' AND i.payment_intent = l.provider_id
             WHERE l.kind = 'payment' AND l.plan_id IS NOT NULL)
         SELECT m.month, l.plan_id, l.currency,
                (CASE l.paid_for WHEN 'month' THEN l.amount_minor * 12 ELSE l.amount_minor END)::bigint
         FROM months m
         JOIN payments l
           ON (l.paid_for = 'month' AND l.occurred_at >= m.month AND l.occurred_at < m.month + interval '1 month')
           OR (l.paid_for = 'year' AND l.occurred_at >= m.month - interval '11 months' AND l.occurred_at < m.month + interval '1 month')
         ORDER BY m.month",
    )
    .bind(from)
    .bind(to)
    .fetch_all(&mut *conn)
    .await?;
    // One row per (month, pass purchase that covers it), annualised the same way.
    let pass_rows: Vec<Row> = sqlx::query_as(
        "WITH months AS (
             SELECT generate_series(date_trunc('month', $1::timestamptz AT TIME ZONE 'UTC'),
                                    date_trunc('month', $2::timestamptz AT TIME ZONE 'UTC'),
                                    interval '1 month') AT TIME ZONE 'UTC' AS month)
         , purchases AS (
             -- Each pass purchase: when it was paid, and what is left of it (a payment
             -- taken back by its provider is a `reversal`).
             SELECT c.id, c.pass_months, l.currency,
                    min(l.occurred_at) FILTER (WHERE l.kind = 'payment') AS paid_at,
                    sum(l.amount_minor) FILTER (WHERE l.kind IN ('payment', 'reversal')) AS net
             FROM ledger_entries l
             JOIN contributions c ON c.id = l.contribution_id AND c.pass_months IS NOT NULL
             GROUP BY c.id, c.pass_months, l.currency)
         SELECT m.month, p.id, p.currency, (p.net * 12 / p.pass_months)::bigint
         FROM months m
         JOIN purchases p ON p.net > 0
          AND p.paid_at < m.month + interval '1 month'
          AND p.paid_at + make_interval(months => p.pass_months::int) > m.month
         ORDER BY m.month",
    )
    .bind(from)
    .bind(to)
    .fetch_all(&mut *conn)
    .await?;
    let mut passes_by_month: BTreeMap<
        OffsetDateTime,
        (BTreeMap<Currency, i64>, BTreeSet<uuid::Uuid>),
    > = BTreeMap::new();
    for (month, purchase, currency, annualised) in pass_rows {
        let Ok(currency) = currency.parse::<Currency>() else {
            continue;
        };
        let entry = passes_by_month.entry(month).or_default();
        *entry.0.entry(currency).or_default() += annualised;
        entry.1.insert(purchase);
    }

    let mut by_month: BTreeMap<OffsetDateTime, (BTreeMap<Currency, i64>, BTreeSet<uuid::Uuid>)> =
        BTreeMap::new();
    for (month, plan, currency, annualised) in rows {
        let Ok(currency) = currency.parse::<Currency>() else {
            continue;
        };
        let entry = by_month.entry(month).or_default();
        *entry.0.entry(currency).or_default() += annualised;
        entry.1.insert(plan);
    }
    // Every month of the window appears, even without plans.
    let mut month = crate::goal::month_bounds(from).0;
    let last = crate::goal::month_bounds(to).0;
    let mut figures = Vec::new();
    let mut previous: BTreeSet<uuid::Uuid> = BTreeSet::new();
    while month <= last {
        let (sums, plans) = by_month.remove(&month).unwrap_or_default();
        let total = in_goal_currency(offer, sums)?;
        let (pass_sums, purchases) = passes_by_month.remove(&month).unwrap_or_default();
        let pass_total = in_goal_currency(offer, pass_sums)?;
        let churned = previous.difference(&plans).count();
        let rate = if previous.is_empty() {
            0
        } else {
            churned * 10_000 / previous.len()
        };
        figures.push(MonthFigures {
            month: format!("{}-{:02}", month.year(), u8::from(month.month())),
            mrr_minor: total / 12,
            plans: plans.len(),
            churned,
            churn_rate: format!("{}.{:04}", rate / 10_000, rate % 10_000),
            pass_mrr_minor: pass_total / 12,
            passes: purchases.len(),
        });
        previous = plans;
        month = crate::goal::month_bounds(month).1;
    }
    Ok(figures)
}

/// The sum of annualised amounts per currency, in the goal's currency (a currency without a
/// configured rate is left out).
fn in_goal_currency(
    offer: &OfferSettings,
    sums: BTreeMap<Currency, i64>,
) -> Result<i64, RecurringError> {
    let goal = offer.goal.currency;
    let mut total = Money::zero(goal);
    for (currency, annualised) in sums {
        let amount = Money::new(annualised, currency);
        let converted = if currency == goal {
            amount
        } else if let Some(rate) = offer.rates.get(&currency) {
            amount
                .convert(goal, *rate)
                .map_err(|e| RecurringError::Refused(e.to_string()))?
        } else {
            continue;
        };
        total = total
            .checked_add(converted)
            .map_err(|e| RecurringError::Refused(e.to_string()))?;
    }
    Ok(total.minor())
}
