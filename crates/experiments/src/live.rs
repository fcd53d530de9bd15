//! The running experiments every instance serves from memory (never a query per page view):
//! loaded whole, replaced whole when something changed, reloaded when a change is announced
//! on [`crate::CHANNEL`] and, in case a notification was missed (a lost connection), on a
//! poll. Each running experiment carries its [`Tally`]: views and clicks counted in memory
//! and added to `experiment_counts` in one statement per flush ([`LiveExperiments::flush`]).

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use kopilka_store::PgPool;
use time::OffsetDateTime;

use crate::ExperimentError;
use crate::assign::Assignment;
use crate::spec::ExperimentSpec;

/// Views and clicks of one experiment since the last flush: slot 0 is the holdback, slot
/// `1 + i` the variant at index `i`. Counting is one relaxed atomic add.
#[derive(Debug)]
pub struct Tally {
    keys: Vec<String>,
    views: Box<[AtomicU64]>,
    clicks: Box<[AtomicU64]>,
}

impl Tally {
    fn new(spec: &ExperimentSpec) -> Self {
        let keys: Vec<String> = std::iter::once(String::new())
            .chain(spec.variants.iter().map(|v| v.key.clone()))
            .collect();
        let zeros = || keys.iter().map(|_| AtomicU64::new(0)).collect();
        Self {
            views: zeros(),
            clicks: zeros(),
            keys,
        }
    }

    fn slot(assignment: Assignment) -> usize {
        match assignment {
            Assignment::Holdback => 0,
            Assignment::Variant(index) => index + 1,
        }
    }

    /// Counts a view served under `assignment`.
    pub fn view(&self, assignment: Assignment) {
        if let Some(count) = self.views.get(Self::slot(assignment)) {
            count.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Counts a click (a checkout asked for) under `assignment`.
    pub fn click(&self, assignment: Assignment) {
        if let Some(count) = self.clicks.get(Self::slot(assignment)) {
            count.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Takes the counts (leaving zeros): `(variant key or '' for the holdback, views, clicks)`
    /// of every slot that counted something.
    fn take(&self) -> Vec<(&str, u64, u64)> {
        self.keys
            .iter()
            .zip(self.views.iter().zip(self.clicks.iter()))
            .filter_map(|(key, (views, clicks))| {
                let views = views.swap(0, Ordering::Relaxed);
                let clicks = clicks.swap(0, Ordering::Relaxed);
                (views + clicks > 0).then_some((key.as_str(), views, clicks))
            })
            .collect()
    }

    /// Gives back counts a failed flush could not write.
    fn restore(&self, key: &str, views: u64, clicks: u64) {
        if let Some(slot) = self.keys.iter().position(|k| k == key) {
            self.views[slot].fetch_add(views, Ordering::Relaxed);
            self.clicks[slot].fetch_add(clicks, Ordering::Relaxed);
        }
    }
}

/// One running experiment, as served.
#[derive(Debug, Clone)]
pub struct LiveExperiment {
    /// Its id.
    pub id: uuid::Uuid,
    /// Its name.
    pub name: String,
    /// Its assignment seed.
    pub seed: Vec<u8>,
    /// Its keyed hash, made once from the seed.
    pub keyed: crate::assign::Keyed,
    /// Its spec.
    pub spec: ExperimentSpec,
    /// The bandit's shares per variant (basis points of the views not held back), once
    /// computed; `None` under `split`, or before the first computation.
    pub shares: Option<Vec<u32>>,
    /// What this instance counted since its last flush.
    pub tally: Arc<Tally>,
}

impl LiveExperiment {
    /// Whether it runs at `now` (its schedule).
    #[must_use]
    pub fn in_schedule(&self, now: OffsetDateTime) -> bool {
        self.spec.starts_at.is_none_or(|start| start <= now)
            && self.spec.ends_at.is_none_or(|end| now < end)
    }

    /// Where `visitor` falls: the holdback, else by the bandit's shares when it has them,
    /// else by weight.
    #[must_use]
    pub fn assign(&self, visitor: &str) -> Assignment {
        crate::assign::assign_keyed(&self.keyed, visitor, &self.spec, self.shares.as_deref())
    }
}

/// The running experiments of one load, highest priority first (then by name), and a
/// number that changes whenever they do (caches keyed on them start afresh).
#[derive(Debug, Default)]
pub struct Running {
    /// Changes with every load that changed something.
    pub generation: u64,
    list: Vec<LiveExperiment>,
}

impl std::ops::Deref for Running {
    type Target = [LiveExperiment];

    fn deref(&self) -> &Self::Target {
        &self.list
    }
}

type StoredRow = (
    uuid::Uuid,
    String,
    Vec<u8>,
    serde_json::Value,
    Option<serde_json::Value>,
);

/// The running experiments as stored, highest priority first (then by name); their tallies
/// are fresh.
///
/// # Errors
/// Storage errors.
pub async fn running(pool: &PgPool) -> Result<Vec<LiveExperiment>, ExperimentError> {
    let rows: Vec<StoredRow> = sqlx::query_as(
        "SELECT id, name, seed, spec, shares FROM experiments WHERE status = 'running' ORDER BY name",
    )
    .fetch_all(pool)
    .await?;
    let mut live: Vec<LiveExperiment> = rows
        .into_iter()
        .filter_map(|(id, name, seed, spec, shares)| {
            let spec: ExperimentSpec = serde_json::from_value(spec)
                .inspect_err(|_| tracing::error!(experiment = %name, "a stored spec does not read"))
                .ok()?;
            let shares = (spec.method == crate::Method::Bandit)
                .then(|| shares.and_then(|s| crate::bandit::shares_from_json(&spec, &s)))
                .flatten();
            Some(LiveExperiment {
                tally: Arc::new(Tally::new(&spec)),
                keyed: crate::assign::Keyed::new(&seed),
                id,
                name,
                seed,
                spec,
                shares,
            })
        })
        .collect();
    live.sort_by(|a, b| {
        b.spec
            .priority
            .cmp(&a.spec.priority)
            .then(a.name.cmp(&b.name))
    });
    Ok(live)
}

/// The experiments an instance serves, shared by every request; replaced whole on a reload
/// that changed something. Cloning shares them.
#[derive(Clone, Default)]
pub struct LiveExperiments {
    current: Arc<arc_swap::ArcSwap<Running>>,
    /// Every tally with counts not yet flushed (a stopped experiment's stay until flushed).
    /// `current` is replaced only under this lock, so a flush sees a consistent pair.
    tallies: Arc<Mutex<BTreeMap<uuid::Uuid, Arc<Tally>>>>,
    /// One reload at a time (each one's generation follows the last's).
    reloading: Arc<tokio::sync::Mutex<()>>,
}

impl std::fmt::Debug for LiveExperiments {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LiveExperiments")
            .field("running", &self.current.load().len())
            .finish()
    }
}

impl LiveExperiments {
    /// What is served now.
    #[must_use]
    pub fn get(&self) -> Arc<Running> {
        self.current.load_full()
    }

    /// What is served now, borrowed for one request (no reference count touched: the hot
    /// path's read).
    #[must_use]
    pub fn load(&self) -> arc_swap::Guard<Arc<Running>> {
        self.current.load()
    }

    /// Loads the running experiments now; what is served changes only if they did.
    ///
    /// # Errors
    /// Storage errors (what was served stays).
    pub async fn reload(&self, pool: &PgPool) -> Result<(), ExperimentError> {
        let _one_at_a_time = self.reloading.lock().await;
        let mut fresh = running(pool).await?;
        let current = self.current.load_full();
        let same = current.len() == fresh.len()
            && current.iter().zip(&fresh).all(|(a, b)| {
                a.id == b.id && a.spec == b.spec && a.shares == b.shares && a.name == b.name
            });
        if same {
            return Ok(());
        }
        let mut tallies = self
            .tallies
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        for experiment in &mut fresh {
            let tally = tallies
                .entry(experiment.id)
                .or_insert_with(|| Arc::clone(&experiment.tally));
            experiment.tally = Arc::clone(tally);
        }
        self.current.store(Arc::new(Running {
            generation: current.generation + 1,
            list: fresh,
        }));
        Ok(())
    }

    /// Adds every count since the last flush to `experiment_counts` under `day`, in one
    /// statement; returns how many rows it touched. On failure the counts are kept for the
    /// next flush: nothing is lost.
    ///
    /// # Errors
    /// Storage errors.
    pub async fn flush(&self, pool: &PgPool, day: time::Date) -> Result<usize, ExperimentError> {
        let tallies: Vec<(uuid::Uuid, Arc<Tally>)> = {
            let mut tallies = self
                .tallies
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            // Under the lock: a reload cannot publish a tally between these two reads.
            let live: Vec<uuid::Uuid> = self.current.load().iter().map(|e| e.id).collect();
            let taken = tallies
                .iter()
                .map(|(id, tally)| (*id, Arc::clone(tally)))
                .collect();
            // A stopped experiment's tally is flushed this once more, then forgotten.
            tallies.retain(|id, _| live.contains(id));
            taken
        };
        // In (experiment, variant) order on every instance: two instances' flushes of the
        // same rows lock them in the same order, never into a deadlock.
        let mut rows: Vec<(uuid::Uuid, String, u64, u64)> = tallies
            .iter()
            .flat_map(|(id, tally)| {
                tally
                    .take()
                    .into_iter()
                    .map(|(key, v, c)| (*id, key.to_owned(), v, c))
            })
            .collect();
        rows.sort_by(|a, b| (a.0, &a.1).cmp(&(b.0, &b.1)));
        let (mut ids, mut keys, mut views, mut clicks) = (vec![], vec![], vec![], vec![]);
        for (id, key, v, c) in rows {
            ids.push(id);
            keys.push(key);
            views.push(i64::try_from(v).unwrap_or(i64::MAX));
            clicks.push(i64::try_from(c).unwrap_or(i64::MAX));
        }
        if ids.is_empty() {
            return Ok(0);
        }
        let written = sqlx::query(
            "INSERT INTO experiment_counts (experiment_id, variant, day, views, clicks)
             SELECT id, variant, $3, views, clicks
               FROM unnest($1::uuid[], $2::text[], $4::bigint[], $5::bigint[])
                 AS t (id, variant, views, clicks)
             ON CONFLICT (experiment_id, variant, day) DO UPDATE
                SET views = experiment_counts.views + EXCLUDED.views,
                    clicks = experiment_counts.clicks + EXCLUDED.clicks",
        )
        .bind(&ids)
        .bind(&keys)
        .bind(day)
        .bind(&views)
        .bind(&clicks)
        .execute(pool)
        .await;
        match written {
            Ok(_) => Ok(ids.len()),
            Err(err) => {
                // Kept for the next flush, in the tally the map holds now (a reload may have
                // put a new one there meanwhile), even if the experiment stopped.
                let mut kept = self
                    .tallies
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner);
                for (id, tally) in tallies {
                    kept.entry(id).or_insert(tally);
                }
                for (((id, key), v), c) in ids.iter().zip(&keys).zip(&views).zip(&clicks) {
                    if let Some(tally) = kept.get(id) {
                        tally.restore(key, v.unsigned_abs(), c.unsigned_abs());
                    }
                }
                Err(err.into())
            }
        }
    }

    /// Flushes every `every` (see [`Self::flush`]) until `stop` says so, then once more and
    /// ends: never aborted half-way, so a graceful restart loses nothing counted.
    #[must_use]
    pub fn spawn_flusher(
        &self,
        pool: PgPool,
        every: Duration,
        mut stop: tokio::sync::watch::Receiver<bool>,
    ) -> tokio::task::JoinHandle<()> {
        let live = self.clone();
        tokio::spawn(async move {
            let mut ticks = tokio::time::interval(every);
            ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            ticks.tick().await;
            // A dropped sender (its owner gone without a stop) leaves it flushing for good.
            let mut watching = true;
            loop {
                let stopping = tokio::select! {
                    _ = ticks.tick() => false,
                    told = stop.changed(), if watching => {
                        watching = told.is_ok();
                        told.is_ok()
                    }
                };
                if let Err(err) = live.flush(&pool, OffsetDateTime::now_utc().date()).await {
                    tracing::warn!(error = %err, "experiment counts not flushed (kept)");
                }
                if stopping || *stop.borrow() {
                    break;
                }
            }
        })
    }

    /// Reloads on every announced change and every `poll`; the task ends with its runtime.
    #[must_use]
    pub fn spawn_reloader(&self, pool: PgPool, poll: Duration) -> tokio::task::JoinHandle<()> {
        let live = self.clone();
        tokio::spawn(async move {
            loop {
                // One listener for as long as it lasts; a lost one is replaced.
                let mut listener = match sqlx::postgres::PgListener::connect_with(&pool).await {
                    Ok(mut listener) => match listener.listen(crate::CHANNEL).await {
                        Ok(()) => Some(listener),
                        Err(_) => None,
                    },
                    Err(_) => None,
                };
                if let Err(err) = live.reload(&pool).await {
                    tracing::warn!(error = %err, "experiments not reloaded");
                }
                let Some(listening) = listener.as_mut() else {
                    // No LISTEN: try again after a poll's wait.
                    tokio::time::sleep(poll).await;
                    continue;
                };
                loop {
                    let heard = tokio::select! {
                        () = tokio::time::sleep(poll) => true,
                        note = listening.recv() => note.is_ok(),
                    };
                    if !heard {
                        break;
                    }
                    if let Err(err) = live.reload(&pool).await {
                        tracing::warn!(error = %err, "experiments not reloaded");
                    }
                }
            }
        })
    }
}
