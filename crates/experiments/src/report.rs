//! What an experiment measured, exactly, from Kopilka's own tables: views and clicks from
//! the flushed counts; checkouts, payments and revenue from the contributions the checkout
//! attributed to a variant and their ledger rows. Each paying conversion is valued at its
//! expected first-year value (see [`Valuation`]), in the goal's currency; the posterior
//! ([`crate::stats`]) gives the credible interval, the probability to beat the control and
//! the bandit's probability to be best.

use std::collections::BTreeMap;

use kopilka_config::{ExperimentsSettings, OfferSettings};
use kopilka_domain::{Currency, Money};
use kopilka_store::PgPool;
use serde::Serialize;

use crate::ExperimentError;
use crate::stats::{Arm, posterior};
use crate::store::ExperimentRow;

/// How many simulations the report's figures rest on.
pub const REPORT_DRAWS: usize = 4_000;

/// One plan interval's measured retention, over the plans that paid at least once.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Retention {
    /// Plans of this interval that paid at least once.
    pub plans: i64,
    /// Their paid periods (each a chance to end before the next).
    pub paid_periods: i64,
    /// Plans cancelled.
    pub cancelled: i64,
    /// Plans ended by payments that failed and were never recovered (`unpaid`); a plan
    /// `past_due` may still recover and counts as neither.
    pub failed: i64,
    /// The loss per period used, with the prior: `(cancelled + failed + prior) / (paid
    /// periods + prior weight)`, four decimals.
    pub loss_rate: String,
}

/// How a paying conversion is valued for its first year.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Valuation {
    /// Monthly plans.
    pub monthly: Retention,
    /// Annual plans (one payment in a first year, whatever their retention).
    pub annual: Retention,
    /// The payments a new monthly plan is expected to make in its first year,
    /// `Σ_{m<12} (1 − loss)^m`, in basis points (e.g. 78 300 for 7.83).
    pub monthly_first_year_payments_bp: i64,
    /// The further payments a live monthly plan that has paid `k` times is expected to make
    /// in its first year, `Σ_{1 ≤ j ≤ 12 − k} (1 − loss)^j`, in basis points, for `k` = 0 to 12.
    #[serde(skip)]
    pub monthly_remaining_bp: Vec<i64>,
    /// The rule, in words.
    pub rule: &'static str,
}

const RULE: &str = "a one-off gift or pass: its net payment; a live monthly plan: what it paid \
                    plus its amount times the further payments expected in its first year; an \
                    annual plan, or a plan that has ended: what it paid; each net of refunds, \
                    reversals and lost disputes";

/// A per-period loss rate with its prior, as a fraction.
#[allow(clippy::float_arithmetic, clippy::cast_precision_loss)]
fn loss(ended: i64, periods: i64, prior: f64, weight: u32) -> f64 {
    let weight = f64::from(weight);
    ((ended as f64 + prior * weight) / (periods as f64 + weight)).clamp(0.0, 1.0)
}

#[allow(
    clippy::float_arithmetic,
    clippy::cast_possible_truncation,
    clippy::cast_precision_loss
)]
fn fraction_4(value: f64) -> String {
    let scaled = (value * 10_000.0).round() as i64;
    format!("{}.{:04}", scaled / 10_000, scaled % 10_000)
}

/// Measures the plans' retention and how a conversion is valued.
///
/// # Errors
/// Storage errors.
#[allow(
    clippy::float_arithmetic,
    clippy::cast_possible_truncation,
    clippy::cast_possible_wrap
)]
pub async fn valuation(
    pool: &PgPool,
    settings: &ExperimentsSettings,
) -> Result<Valuation, ExperimentError> {
    let rows: Vec<(String, i64, i64, i64, i64)> = sqlx::query_as(
        "SELECT p.interval, count(*),
                coalesce(sum(paid.n), 0)::bigint,
                count(*) FILTER (WHERE p.status = 'canceled'),
                count(*) FILTER (WHERE p.status = 'unpaid')
         FROM recurring_plans p
         JOIN LATERAL (SELECT count(*) AS n FROM ledger_entries l
                       WHERE l.plan_id = p.id AND l.kind = 'payment') paid ON paid.n > 0
         GROUP BY p.interval",
    )
    .fetch_all(pool)
    .await?;
    let monthly_prior = settings.prior_monthly_churn_percent / 100.0;
    let annual_prior = 1.0 - (1.0 - monthly_prior).powi(12);
    let measured = |interval: &str, prior: f64| {
        let (plans, paid_periods, cancelled, failed) = rows
            .iter()
            .find(|row| row.0 == interval)
            .map_or((0, 0, 0, 0), |row| (row.1, row.2, row.3, row.4));
        let rate = loss(
            cancelled + failed,
            paid_periods,
            prior,
            settings.prior_plan_months,
        );
        (
            Retention {
                plans,
                paid_periods,
                cancelled,
                failed,
                loss_rate: fraction_4(rate),
            },
            rate,
        )
    };
    let (monthly, monthly_loss) = measured("month", monthly_prior);
    let (annual, _) = measured("year", annual_prior);
    let keep = 1.0 - monthly_loss;
    let expected: f64 = (0..12).map(|m| keep.powi(m)).sum();
    let remaining = (0..=12)
        .map(|paid: i32| {
            let further: f64 = (1..=12 - paid).map(|j| keep.powi(j)).sum();
            (further * 10_000.0).round() as i64
        })
        .collect();
    Ok(Valuation {
        monthly,
        annual,
        monthly_first_year_payments_bp: (expected * 10_000.0).round() as i64,
        monthly_remaining_bp: remaining,
        rule: RULE,
    })
}

/// One variant's (or the holdback's) evidence.
#[derive(Debug, Clone, Default)]
pub struct Evidence {
    /// Views counted.
    pub views: i64,
    /// Clicks (checkouts asked for) counted.
    pub clicks: i64,
    /// Contributions the checkout attributed to it.
    pub checkouts: i64,
    /// Those with a payment.
    pub payments: i64,
    /// Their net revenue so far, in the goal's currency.
    pub revenue_minor: i64,
    /// Each paying conversion's first-year value, in the goal's currency.
    pub values: Vec<i64>,
    /// Payments in a currency without a rate to the goal's (left out of the values).
    pub unconverted: i64,
}

type ContributionRow = (String, String, String, i64, i64, i64, Option<String>);

fn in_goal(offer: &OfferSettings, currency: Currency, minor: i64) -> Option<i64> {
    let goal = offer.goal.currency;
    if currency == goal {
        return Some(minor);
    }
    let rate = offer.rates.get(&currency)?;
    Money::new(minor, currency)
        .convert(goal, *rate)
        .ok()
        .map(Money::minor)
}

/// The evidence per variant key (`""` for the holdback).
///
/// # Errors
/// Storage errors.
pub async fn evidence(
    pool: &PgPool,
    offer: &OfferSettings,
    experiment: uuid::Uuid,
    valuation: &Valuation,
) -> Result<BTreeMap<String, Evidence>, ExperimentError> {
    let mut by_key: BTreeMap<String, Evidence> = BTreeMap::new();
    let counts: Vec<(String, i64, i64)> = sqlx::query_as(
        "SELECT variant, sum(views)::bigint, sum(clicks)::bigint FROM experiment_counts
         WHERE experiment_id = $1 GROUP BY variant",
    )
    .bind(experiment)
    .fetch_all(pool)
    .await?;
    for (key, views, clicks) in counts {
        let entry = by_key.entry(key).or_default();
        entry.views = views;
        entry.clicks = clicks;
    }
    // One row per attributed contribution: its ledger rows and, for a plan, its renewals'.
    let rows: Vec<ContributionRow> = sqlx::query_as(
        "SELECT c.experiment_variant, c.interval, c.currency, c.amount_minor,
                count(l.id) FILTER (WHERE l.kind = 'payment'),
                coalesce(sum(l.amount_minor) FILTER (WHERE l.kind <> 'fee'), 0)::bigint,
                p.status
         FROM contributions c
         LEFT JOIN recurring_plans p ON p.contribution_id = c.id
         LEFT JOIN ledger_entries l
           ON l.contribution_id = c.id OR (p.id IS NOT NULL AND l.plan_id = p.id)
         WHERE c.experiment_id = $1
         GROUP BY c.id, p.status",
    )
    .bind(experiment)
    .fetch_all(pool)
    .await?;
    for (key, interval, currency, amount, payments, net, plan_status) in rows {
        let entry = by_key.entry(key).or_default();
        entry.checkouts += 1;
        if payments == 0 {
            continue;
        }
        entry.payments += 1;
        // A live monthly plan: what it paid, and what it is expected to pay within its
        // first year; anything else (a gift, a pass, an annual plan, an ended plan): what it
        // paid, net.
        let live = matches!(
            plan_status.as_deref(),
            Some("active" | "trialing" | "past_due")
        );
        let value = if interval == "month" && live {
            let paid = usize::try_from(payments).unwrap_or(usize::MAX).min(12);
            let further = valuation
                .monthly_remaining_bp
                .get(paid)
                .copied()
                .unwrap_or(0);
            let expected = i128::from(amount) * i128::from(further) / 10_000;
            net.saturating_add(i64::try_from(expected).unwrap_or(i64::MAX))
        } else {
            net
        };
        let Ok(currency) = currency.parse::<Currency>() else {
            entry.unconverted += 1;
            continue;
        };
        match (
            in_goal(offer, currency, value),
            in_goal(offer, currency, net),
        ) {
            (Some(value), Some(net)) => {
                entry.values.push(value);
                entry.revenue_minor += net;
            }
            _ => entry.unconverted += 1,
        }
    }
    Ok(by_key)
}

/// One variant's figures.
#[derive(Debug, Clone, Serialize)]
pub struct VariantFigures {
    /// Its key.
    pub key: String,
    /// Whether it is the control.
    pub control: bool,
    /// Views served.
    pub views: i64,
    /// Checkouts asked for (the banner's Continue reaching Kopilka).
    pub clicks: i64,
    /// Checkouts started (contributions attributed to it).
    pub checkouts: i64,
    /// Those paid.
    pub payments: i64,
    /// Payments per view, four decimals.
    pub conversion_rate: String,
    /// Net revenue so far (goal currency, minor units).
    pub revenue_minor: i64,
    /// The payments' expected first-year value.
    pub first_year_value_minor: i64,
    /// First-year value per 1 000 views.
    pub value_per_1000_minor: i64,
    /// Its 95 % credible interval: the 2.5 % quantile …
    pub value_per_1000_low_minor: i64,
    /// … and the 97.5 % quantile.
    pub value_per_1000_high_minor: i64,
    /// The probability that its value per view beats the control's (null for the control).
    pub probability_to_beat_control: Option<f64>,
    /// The probability that it is the best variant.
    pub probability_best: f64,
    /// Its share of the views not held back now, in basis points (the bandit's, else the
    /// weights').
    pub share_bp: u32,
    /// Payments left out for want of a rate to the goal's currency.
    pub unconverted_payments: i64,
}

/// The holdback's figures (readers who saw no ask).
#[derive(Debug, Clone, Serialize)]
pub struct HoldbackFigures {
    /// Views held back.
    pub views: i64,
    /// Contributions from held-back readers (given elsewhere on the site).
    pub checkouts: i64,
    /// Those paid.
    pub payments: i64,
    /// Their net revenue.
    pub revenue_minor: i64,
    /// Their first-year value per 1 000 views.
    pub value_per_1000_minor: i64,
}

/// One day's views and clicks of one variant.
#[derive(Debug, Clone, Serialize)]
pub struct DayFigures {
    /// `YYYY-MM-DD`.
    pub day: String,
    /// The variant's key (`""` for the holdback).
    pub variant: String,
    /// Views.
    pub views: i64,
    /// Clicks.
    pub clicks: i64,
}

/// `admin experiments report NAME`.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// The experiment.
    pub experiment: String,
    /// Its status.
    pub status: &'static str,
    /// `split` or `bandit`.
    pub method: &'static str,
    /// When it first ran.
    #[serde(with = "time::serde::rfc3339::option")]
    pub started_at: Option<time::OffsetDateTime>,
    /// The currency of every amount (the goal's).
    pub currency: String,
    /// Its decimal places.
    pub exponent: u32,
    /// Per variant, in the spec's order.
    pub variants: Vec<VariantFigures>,
    /// The holdback, when it has one.
    pub holdback: Option<HoldbackFigures>,
    /// A variant whose probability to beat the control is above 0.95, if any.
    pub winner: Option<String>,
    /// How conversions are valued.
    pub valuation: Valuation,
    /// Views and clicks per day (for charts).
    pub days: Vec<DayFigures>,
}

#[allow(
    clippy::float_arithmetic,
    clippy::cast_possible_truncation,
    clippy::cast_precision_loss
)]
fn whole(value: f64) -> i64 {
    value.round() as i64
}

#[allow(clippy::float_arithmetic)]
fn round4(value: f64) -> f64 {
    (value * 10_000.0).round() / 10_000.0
}

/// The arms of `experiment` in its spec's order, from `evidence`.
#[allow(clippy::cast_precision_loss, clippy::cast_sign_loss)]
pub(crate) fn arms(experiment: &ExperimentRow, evidence: &BTreeMap<String, Evidence>) -> Vec<Arm> {
    experiment
        .spec
        .variants
        .iter()
        .map(|variant| {
            let seen = evidence.get(&variant.key).cloned().unwrap_or_default();
            Arm {
                views: seen.views.max(0) as u64,
                values: seen.values.iter().map(|&v| v as f64).collect(),
            }
        })
        .collect()
}

/// A seed from the experiment's own, so its figures are the same each time for the same data.
pub(crate) fn seed_of(experiment: &ExperimentRow, seed: &[u8]) -> u64 {
    let mut bytes = [0_u8; 8];
    for (i, b) in seed.iter().chain(experiment.id.as_bytes()).enumerate() {
        bytes[i % 8] ^= *b;
    }
    u64::from_le_bytes(bytes)
}

/// The report of the experiment called `name`.
///
/// # Errors
/// [`ExperimentError::NotFound`], storage errors.
#[allow(clippy::cast_precision_loss, clippy::float_arithmetic)]
pub async fn report(
    pool: &PgPool,
    offer: &OfferSettings,
    settings: &ExperimentsSettings,
    name: &str,
) -> Result<Report, ExperimentError> {
    let experiment = crate::store::show(pool, name).await?;
    let (seed, shares) = crate::bandit::seed_and_shares(pool, &experiment).await?;
    let valuation = valuation(pool, settings).await?;
    let evidence = evidence(pool, offer, experiment.id, &valuation).await?;
    let arms = arms(&experiment, &evidence);
    let control = experiment.spec.control_index();
    let posterior = posterior(&arms, control, REPORT_DRAWS, seed_of(&experiment, &seed));
    let total_weight: u32 = experiment.spec.variants.iter().map(|v| v.weight).sum();
    let variants: Vec<VariantFigures> = experiment
        .spec
        .variants
        .iter()
        .enumerate()
        .map(|(index, variant)| {
            let seen = evidence.get(&variant.key).cloned().unwrap_or_default();
            let post = &posterior[index];
            VariantFigures {
                key: variant.key.clone(),
                control: variant.control,
                views: seen.views,
                clicks: seen.clicks,
                checkouts: seen.checkouts,
                payments: seen.payments,
                conversion_rate: if seen.views > 0 {
                    fraction_4(seen.payments as f64 / seen.views as f64)
                } else {
                    "0.0000".into()
                },
                revenue_minor: seen.revenue_minor,
                first_year_value_minor: seen.values.iter().sum(),
                value_per_1000_minor: whole(post.per_1000),
                value_per_1000_low_minor: whole(post.low),
                value_per_1000_high_minor: whole(post.high),
                probability_to_beat_control: post.beat_control.map(round4),
                probability_best: round4(post.best),
                share_bp: shares
                    .as_ref()
                    .and_then(|s| s.get(index).copied())
                    .unwrap_or_else(|| variant.weight * 10_000 / total_weight.max(1)),
                unconverted_payments: seen.unconverted,
            }
        })
        .collect();
    let holdback = (experiment.spec.holdback_percent > 0).then(|| {
        let seen = evidence.get("").cloned().unwrap_or_default();
        HoldbackFigures {
            views: seen.views,
            checkouts: seen.checkouts,
            payments: seen.payments,
            revenue_minor: seen.revenue_minor,
            value_per_1000_minor: if seen.views > 0 {
                seen.values.iter().sum::<i64>().saturating_mul(1_000) / seen.views
            } else {
                0
            },
        }
    });
    let winner = variants
        .iter()
        .filter(|v| v.probability_to_beat_control.is_some_and(|p| p > 0.95))
        .max_by(|a, b| a.value_per_1000_minor.cmp(&b.value_per_1000_minor))
        .map(|v| v.key.clone());
    let days: Vec<(time::Date, String, i64, i64)> = sqlx::query_as(
        "SELECT day, variant, views, clicks FROM experiment_counts
         WHERE experiment_id = $1 ORDER BY day, variant",
    )
    .bind(experiment.id)
    .fetch_all(pool)
    .await?;
    Ok(Report {
        experiment: experiment.name.clone(),
        status: experiment.status.as_str(),
        method: experiment.spec.method.as_str(),
        started_at: experiment.started_at,
        currency: offer.goal.currency.stripe_code(),
        exponent: offer.goal.currency.exponent(),
        variants,
        holdback,
        winner,
        valuation,
        days: days
            .into_iter()
            .map(|(day, variant, views, clicks)| DayFigures {
                day: day.to_string(),
                variant,
                views,
                clicks,
            })
            .collect(),
    })
}
