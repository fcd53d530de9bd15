//! The running experiments every instance serves from memory (never a query per page view):
//! loaded whole, replaced whole, reloaded when a change is announced on [`crate::CHANNEL`]
//! and, in case a notification was missed (a lost connection), on a poll.

use std::sync::Arc;
use std::time::Duration;

use kopilka_store::PgPool;
use time::OffsetDateTime;

use crate::ExperimentError;
use crate::spec::ExperimentSpec;

/// One running experiment, as served.
#[derive(Debug, Clone)]
pub struct LiveExperiment {
    /// Its name.
    pub name: String,
    /// Its assignment seed.
    pub seed: Vec<u8>,
    /// Its spec.
    pub spec: ExperimentSpec,
}

impl LiveExperiment {
    /// Whether it runs at `now` (its schedule).
    #[must_use]
    pub fn in_schedule(&self, now: OffsetDateTime) -> bool {
        self.spec.starts_at.is_none_or(|start| start <= now)
            && self.spec.ends_at.is_none_or(|end| now < end)
    }
}

/// The running experiments, highest priority first (then by name).
///
/// # Errors
/// Storage errors.
pub async fn running(pool: &PgPool) -> Result<Vec<LiveExperiment>, ExperimentError> {
    let rows: Vec<(String, Vec<u8>, serde_json::Value)> = sqlx::query_as(
        "SELECT name, seed, spec FROM experiments WHERE status = 'running' ORDER BY name",
    )
    .fetch_all(pool)
    .await?;
    let mut live: Vec<LiveExperiment> = rows
        .into_iter()
        .filter_map(|(name, seed, spec)| {
            let spec = serde_json::from_value(spec)
                .inspect_err(|_| tracing::error!(experiment = %name, "a stored spec does not read"))
                .ok()?;
            Some(LiveExperiment { name, seed, spec })
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

/// The experiments an instance serves, shared by every request; replaced whole on reload.
#[derive(Clone, Default)]
pub struct LiveExperiments(Arc<arc_swap::ArcSwap<Vec<LiveExperiment>>>);

impl std::fmt::Debug for LiveExperiments {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LiveExperiments")
            .field("running", &self.0.load().len())
            .finish()
    }
}

impl LiveExperiments {
    /// What is served now.
    #[must_use]
    pub fn get(&self) -> Arc<Vec<LiveExperiment>> {
        self.0.load_full()
    }

    /// What is served now, borrowed for one request (no reference count touched: the hot
    /// path's read).
    #[must_use]
    pub fn load(&self) -> arc_swap::Guard<Arc<Vec<LiveExperiment>>> {
        self.0.load()
    }

    /// Loads the running experiments now.
    ///
    /// # Errors
    /// Storage errors (what was served stays).
    pub async fn reload(&self, pool: &PgPool) -> Result<(), ExperimentError> {
        self.0.store(Arc::new(running(pool).await?));
        Ok(())
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
