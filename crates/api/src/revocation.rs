//! Supporter tokens of erased readers, refused at once by this instance. `GET /v1/offer`
//! reads no database (ARCHITECTURE), so each instance keeps the revoked `sub`s in memory:
//! loaded at start, added to by this instance's own erasures, and reloaded whenever any
//! instance erases a reader (Postgres `NOTIFY kopilka_revoked_supporters`) or the listener
//! reconnects (a notification may have been missed meanwhile); a poll every
//! `paywall.keys_reload_secs` covers an instance that cannot LISTEN.

use std::collections::HashSet;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use kopilka_domain::id::ReaderId;
use kopilka_store::PgListener;
use kopilka_store::PgPool;
use time::OffsetDateTime;

/// The revoked supporter tokens' subjects, shared by every request.
#[derive(Clone, Default)]
pub struct RevokedSupporters(Arc<RwLock<HashSet<String>>>);

impl std::fmt::Debug for RevokedSupporters {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("RevokedSupporters")
    }
}

impl RevokedSupporters {
    /// Whether a token with subject `sub` is revoked.
    #[must_use]
    pub fn contains(&self, sub: &str) -> bool {
        self.0
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .contains(sub)
    }

    /// Revokes `reader`'s tokens in this instance now (the others hear it from Postgres).
    pub fn revoke(&self, reader: ReaderId) {
        self.0
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .insert(reader.to_string());
    }

    /// Replaces the set with what Postgres holds.
    ///
    /// # Errors
    /// Storage errors.
    pub async fn reload(&self, pool: &PgPool) -> Result<(), kopilka_accounts::AccountError> {
        let mut conn = pool
            .acquire()
            .await
            .map_err(kopilka_store::StoreError::from)?;
        let ids =
            kopilka_accounts::privacy::revoked_supporters(&mut conn, OffsetDateTime::now_utc())
                .await?;
        let set: HashSet<String> = ids.iter().map(ToString::to_string).collect();
        *self
            .0
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = set;
        Ok(())
    }

    /// Loads the set, then keeps it current (see the module docs), forever. The same
    /// connection also hears the ask experiments' changes and reloads `experiments` (one
    /// LISTEN connection per instance, not one per cache).
    pub fn spawn_listener(
        &self,
        pool: PgPool,
        poll: Duration,
        experiments: kopilka_experiments::live::LiveExperiments,
    ) -> tokio::task::JoinHandle<()> {
        let revoked = self.clone();
        tokio::spawn(async move {
            let reload_experiments =
                |pool: PgPool, experiments: kopilka_experiments::live::LiveExperiments| async move {
                    if let Err(err) = experiments.reload(&pool).await {
                        tracing::warn!(error = %err, "experiments not reloaded");
                    }
                };
            loop {
                let mut listener = match PgListener::connect_with(&pool).await {
                    Ok(mut listener) => match listener
                        .listen_all([
                            kopilka_accounts::privacy::REVOKED_SUPPORTERS_CHANNEL,
                            kopilka_experiments::CHANNEL,
                        ])
                        .await
                    {
                        Ok(()) => Some(listener),
                        Err(err) => {
                            tracing::warn!(error = %err, "revoked supporters: cannot LISTEN");
                            None
                        }
                    },
                    Err(err) => {
                        tracing::warn!(error = %err, "revoked supporters: cannot LISTEN");
                        None
                    }
                };
                // Loaded after LISTEN began: nothing committed in between is missed.
                if let Err(err) = revoked.reload(&pool).await {
                    tracing::warn!(error = %err, "revoked supporters not loaded");
                }
                reload_experiments(pool.clone(), experiments.clone()).await;
                loop {
                    let heard = match listener.as_mut() {
                        Some(listener) => tokio::time::timeout(poll, listener.try_recv()).await,
                        None => {
                            tokio::time::sleep(poll).await;
                            Ok(Ok(None))
                        }
                    };
                    match heard {
                        // An experiment changed: the running set is loaded again.
                        Ok(Ok(Some(notification)))
                            if notification.channel() == kopilka_experiments::CHANNEL =>
                        {
                            reload_experiments(pool.clone(), experiments.clone()).await;
                            continue;
                        }
                        // A notification: one reader, added at once.
                        Ok(Ok(Some(notification))) => {
                            if let Ok(id) = notification.payload().parse::<uuid::Uuid>() {
                                revoked
                                    .0
                                    .write()
                                    .unwrap_or_else(std::sync::PoisonError::into_inner)
                                    .insert(id.to_string());
                            }
                            continue;
                        }
                        // The connection was lost and re-made, or the poll came round: reload.
                        Ok(Ok(None)) | Err(_) => {
                            if let Err(err) = revoked.reload(&pool).await {
                                tracing::warn!(error = %err, "revoked supporters not reloaded");
                            }
                            reload_experiments(pool.clone(), experiments.clone()).await;
                        }
                        Ok(Err(err)) => {
                            tracing::warn!(error = %err, "revoked supporters: listener failed");
                            tokio::time::sleep(poll).await;
                            break;
                        }
                    }
                }
            }
        })
    }
}
