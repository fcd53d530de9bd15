//! The Thompson-sampling bandit: every `experiments.bandit_minutes` the worker recomputes
//! each running bandit's traffic shares from what it measured (see [`crate::report`]): a
//! variant's share is its probability to have the best first-year value per view, with
//! `experiments.floor_percent` kept for every variant. Until every variant has
//! `experiments.min_views_per_variant` views it does not exploit (the weights share the
//! traffic). The holdback is drawn before any share, so it is never exploited away. The
//! shares are stored on the experiment and announced, so every instance serves them within
//! seconds.

use kopilka_config::{ExperimentsSettings, OfferSettings};
use kopilka_store::PgPool;

use crate::ExperimentError;
use crate::spec::ExperimentSpec;
use crate::store::ExperimentRow;

/// The job kind the worker runs (queued once per period).
pub const BANDIT_JOB: &str = "experiments.bandit";

/// How many simulations a share rests on.
const SHARE_DRAWS: usize = 2_000;

/// Stored shares (`{"variant key": basis points}`) in the spec's order, if they name every
/// variant and sum to 10 000.
#[must_use]
pub fn shares_from_json(spec: &ExperimentSpec, stored: &serde_json::Value) -> Option<Vec<u32>> {
    let shares: Option<Vec<u32>> = spec
        .variants
        .iter()
        .map(|v| {
            stored
                .get(&v.key)
                .and_then(serde_json::Value::as_u64)
                .and_then(|n| u32::try_from(n).ok())
        })
        .collect();
    shares.filter(|s| s.iter().sum::<u32>() == 10_000)
}

/// The experiment's seed and stored shares.
///
/// # Errors
/// Storage errors.
pub async fn seed_and_shares(
    pool: &PgPool,
    experiment: &ExperimentRow,
) -> Result<(Vec<u8>, Option<Vec<u32>>), ExperimentError> {
    let (seed, shares): (Vec<u8>, Option<serde_json::Value>) =
        sqlx::query_as("SELECT seed, shares FROM experiments WHERE id = $1")
            .bind(experiment.id)
            .fetch_one(pool)
            .await?;
    let shares = shares.and_then(|s| shares_from_json(&experiment.spec, &s));
    Ok((seed, shares))
}

/// Whether any bandit runs (the worker queues [`BANDIT_JOB`] only then).
///
/// # Errors
/// Storage errors.
pub async fn any_running(pool: &PgPool) -> Result<bool, ExperimentError> {
    Ok(sqlx::query_scalar(
        "SELECT EXISTS (SELECT 1 FROM experiments
                        WHERE status = 'running' AND spec->>'method' = 'bandit')",
    )
    .fetch_one(pool)
    .await?)
}

/// What one recomputation decided for one experiment.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Update {
    /// The experiment.
    pub experiment: String,
    /// The new shares per variant key (basis points), or null while it does not exploit.
    pub shares: Option<std::collections::BTreeMap<String, u32>>,
}

/// Recomputes the shares of every running bandit.
///
/// # Errors
/// Storage errors.
pub async fn update_all(
    pool: &PgPool,
    offer: &OfferSettings,
    settings: &ExperimentsSettings,
) -> Result<Vec<Update>, ExperimentError> {
    let running: Vec<ExperimentRow> = crate::store::list(pool)
        .await?
        .into_iter()
        .filter(|e| e.status == crate::Status::Running && e.spec.method == crate::Method::Bandit)
        .collect();
    if running.is_empty() {
        return Ok(vec![]);
    }
    let valuation = crate::report::valuation(pool, settings).await?;
    let mut updates = Vec::new();
    for experiment in running {
        let (seed, _) = seed_and_shares(pool, &experiment).await?;
        let evidence = crate::report::evidence(pool, offer, experiment.id, &valuation).await?;
        let arms = crate::report::arms(&experiment, &evidence);
        let ready = arms
            .iter()
            .all(|arm| arm.views >= u64::from(settings.min_views_per_variant));
        let shares = ready.then(|| {
            let control = experiment.spec.control_index();
            let seed = crate::report::seed_of(&experiment, &seed);
            let post = crate::stats::posterior(&arms, control, SHARE_DRAWS, seed);
            let best: Vec<f64> = post.iter().map(|p| p.best).collect();
            let shares = crate::stats::shares(&best, settings.floor_percent);
            experiment
                .spec
                .variants
                .iter()
                .map(|v| v.key.clone())
                .zip(shares)
                .collect::<std::collections::BTreeMap<String, u32>>()
        });
        let mut tx = pool.begin().await?;
        let changed = sqlx::query(
            "UPDATE experiments SET shares = $2, shares_at = now()
             WHERE id = $1 AND status = 'running' AND shares IS DISTINCT FROM $2",
        )
        .bind(experiment.id)
        .bind(shares.as_ref().map(|s| serde_json::json!(s)))
        .execute(&mut *tx)
        .await?
        .rows_affected();
        if changed > 0 {
            sqlx::query("SELECT pg_notify($1, $2)")
                .bind(crate::CHANNEL)
                .bind(&experiment.name)
                .execute(&mut *tx)
                .await?;
            tracing::info!(experiment = %experiment.name, exploiting = shares.is_some(), "bandit shares updated");
        }
        tx.commit().await.map_err(kopilka_store::StoreError::from)?;
        updates.push(Update {
            experiment: experiment.name,
            shares,
        });
    }
    Ok(updates)
}
