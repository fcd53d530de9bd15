//! The card-testing shield at checkout (issue #19, item 2; the counting and blocking is
//! [`kopilka_contributions::shield`]). Each `serve` keeps the shield's state in memory,
//! read from Postgres every `abuse.refresh_ms`, so a checkout never waits on a query for
//! it:
//!
//! - a blocked client is refused: 403 `blocked` with `Retry-After`;
//! - under attack, when a challenge is configured, a checkout without a solved one is
//!   refused: 403 `challenge_required` (or `challenge_failed`), the error carrying
//!   `challenge: {provider, site_key, script_url}` for the widget; the token is verified
//!   with the provider, server-side;
//! - under attack, the minimum amount is multiplied by `abuse.attack_minimum_factor`.

use std::net::IpAddr;
use std::sync::Arc;

use arc_swap::ArcSwap;
use kopilka_accounts::Keys;
use kopilka_config::{AbuseSettings, Settings};
use kopilka_contributions::shield::challenge::{Verdict, Verifier};
use kopilka_contributions::shield::{Attribution, Snapshot};
use kopilka_store::PgPool;

use crate::error::{AppError, ChallengeInfo};

/// The shield's state and its challenge.
pub struct Shield {
    snapshot: Arc<ArcSwap<Snapshot>>,
    settings: AbuseSettings,
    verifier: Option<Verifier>,
    keys: Keys,
}

/// The host names of the newsroom's origins: a challenge solved elsewhere is refused.
fn hosts(settings: &Settings) -> Vec<String> {
    let mut hosts: Vec<String> = settings
        .server
        .cors_allowed_origins
        .iter()
        .chain(&settings.offer.return_origins)
        .filter_map(|origin| url::Url::parse(origin).ok())
        .chain(std::iter::once(settings.public_url.clone()))
        .filter_map(|url| url.host_str().map(str::to_owned))
        .collect();
    hosts.sort();
    hosts.dedup();
    hosts
}

impl Shield {
    /// The shield `settings` configure (calm until the first refresh).
    #[must_use]
    pub fn new(settings: &Settings) -> Self {
        Self {
            snapshot: Arc::new(ArcSwap::from_pointee(Snapshot::default())),
            settings: settings.abuse.clone(),
            verifier: settings
                .abuse
                .challenge
                .configured()
                .map(|challenge| Verifier::new(challenge, hosts(settings))),
            keys: Keys::from_settings(&settings.accounts),
        }
    }

    /// Whether checkout is under attack, as last read.
    #[must_use]
    pub fn under_attack(&self) -> bool {
        self.snapshot.load().under_attack
    }

    /// The minimum's multiplier now (1 in calm).
    #[must_use]
    pub fn minimum_factor(&self) -> u32 {
        if self.under_attack() {
            self.settings.attack_minimum_factor
        } else {
            1
        }
    }

    fn challenge_info(&self) -> Option<ChallengeInfo> {
        self.verifier.as_ref().map(|v| {
            let c = v.challenge();
            ChallengeInfo {
                provider: c.provider.as_str().to_owned(),
                site_key: c.site_key.clone(),
                script_url: c.script_url.clone(),
            }
        })
    }

    /// Lets a checkout from `ip` with `token` (a solved challenge, if any) through, or
    /// refuses it; the answer names the client for the shield and the minimum's multiplier.
    pub(crate) async fn admit(
        &self,
        ip: Option<IpAddr>,
        token: Option<&str>,
    ) -> Result<Attribution, AppError> {
        let snapshot = self.snapshot.load();
        let client_key = ip.map(|ip| kopilka_contributions::shield::client_key(&self.keys, ip));
        let now = time::OffsetDateTime::now_utc();
        if let Some(until) = client_key
            .as_deref()
            .and_then(|key| snapshot.client_blocked(key, now))
        {
            metrics::counter!("kopilka_abuse_refused_total", "why" => "blocked").increment(1);
            return Err(AppError::Blocked {
                retry_after_secs: u64::try_from((until - now).whole_seconds())
                    .unwrap_or(1)
                    .max(1),
            });
        }
        let under_attack = snapshot.under_attack;
        drop(snapshot);
        if under_attack && let Some(verifier) = &self.verifier {
            let token = token.map(str::trim).filter(|t| !t.is_empty());
            let Some(token) = token.filter(|t| t.len() <= 4096) else {
                metrics::counter!("kopilka_abuse_refused_total", "why" => "challenge_required")
                    .increment(1);
                return Err(AppError::Challenge {
                    code: "challenge_required",
                    message: "solve the challenge, then send its token as challenge_token".into(),
                    challenge: self.challenge_info(),
                });
            };
            match verifier.verify(token).await {
                Ok(Verdict::Passed) => {}
                Ok(Verdict::Failed(codes)) => {
                    tracing::info!(codes = ?codes, "challenge failed");
                    metrics::counter!("kopilka_abuse_refused_total", "why" => "challenge_failed")
                        .increment(1);
                    return Err(AppError::Challenge {
                        code: "challenge_failed",
                        message: "the challenge was not solved, was used before or expired; solve it again".into(),
                        challenge: self.challenge_info(),
                    });
                }
                Err(_) => {
                    return Err(AppError::Upstream {
                        code: "challenge_unavailable",
                        message: "the challenge could not be checked; try again shortly".into(),
                        retry: true,
                    });
                }
            }
        }
        Ok(Attribution {
            client_key,
            minimum_factor: if under_attack {
                self.settings.attack_minimum_factor
            } else {
                1
            },
        })
    }

    /// Reads the state now (after a refresh the next checkout sees it).
    ///
    /// # Errors
    /// Storage errors.
    pub async fn refresh(&self, pool: &PgPool) -> Result<(), AppError> {
        let fresh = kopilka_contributions::shield::snapshot(pool, &self.settings).await?;
        let was = self.snapshot.load().under_attack;
        if fresh.under_attack != was {
            tracing::warn!(
                under_attack = fresh.under_attack,
                "checkout's card-testing shield changed state"
            );
        }
        metrics::gauge!("kopilka_under_attack").set(if fresh.under_attack { 1.0 } else { 0.0 });
        #[allow(clippy::cast_precision_loss)]
        metrics::gauge!("kopilka_blocked_clients").set(fresh.blocked_clients.len() as f64);
        self.snapshot.store(Arc::new(fresh));
        Ok(())
    }

    /// Refreshes the state every `abuse.refresh_ms` (a failed read keeps the last state).
    pub(crate) fn spawn_refresher(self: &Arc<Self>, pool: PgPool) -> tokio::task::JoinHandle<()> {
        let shield = Arc::clone(self);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(shield.settings.refresh());
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                if let Err(err) = shield.refresh(&pool).await {
                    tracing::warn!(error = %err, "shield state not refreshed");
                }
            }
        })
    }
}
