//! Request budgets shared by every instance through Postgres, with no round trip on the
//! request's path: an instance counts in memory ([`Limiter::admit`]) and, every flush
//! interval, adds what it admitted to the shared counters in one statement and reads the
//! sums back, and re-reads every counter it holds that is at least half spent
//! ([`Limiter::flush`]). Instances may together overshoot a budget by what they admit in
//! one interval; a budget is otherwise exact across instances.
//!
//! Budgets are fixed windows (`window_secs`, aligned to the epoch). Keys are whatever the
//! caller passes: keyed HMACs of clients and addresses, never the values themselves.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use sqlx::PgPool;

use crate::StoreError;

/// How many requests one key may make per window.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Budget {
    /// Requests per window.
    pub limit: u32,
    /// The window, in seconds (at least 1).
    pub window_secs: u32,
}

/// Why a request was not admitted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// A budget is spent: retry when its window turns.
    Over {
        /// Until the longest of the spent budgets' windows ends.
        retry_after: Duration,
    },
    /// The instance holds as many counters as it may: retry shortly.
    Full {
        /// A short wait.
        retry_after: Duration,
    },
}

#[derive(Debug, Clone, Copy)]
struct Counter {
    /// The shared count as last read back (other instances' hits included).
    shared: i64,
    /// Admitted here and not flushed yet.
    pending: i64,
    /// Admitted here and being added to the shared count by a flush that has not answered
    /// yet: still counted, so a slow flush never lets a budget be overshot.
    in_flight: i64,
    window_end: i64,
    /// The budget's limit (a counter at least half spent is re-read at every flush).
    limit: i64,
}

/// In-memory counts, flushed to the shared ones (table `rate_limits`).
#[derive(Debug)]
pub struct Limiter {
    counters: Mutex<HashMap<(String, i64), Counter>>,
    max_keys: usize,
}

/// A counter's key and window start, the count taken for a flush, its window's end and
/// its limit.
type Taken = ((String, i64), i64, i64, i64);

fn window_of(budget: Budget, now: i64) -> (i64, i64) {
    let secs = i64::from(budget.window_secs.max(1));
    let start = now.div_euclid(secs) * secs;
    (start, start + secs)
}

fn seconds(n: i64) -> Duration {
    Duration::from_secs(u64::try_from(n.max(1)).unwrap_or(1))
}

impl Limiter {
    /// A limiter keeping at most `max_keys` counters.
    #[must_use]
    pub fn new(max_keys: usize) -> Arc<Self> {
        Arc::new(Self {
            counters: Mutex::new(HashMap::new()),
            max_keys,
        })
    }

    /// Counts one request against every `(key, budget)` at `now` (unix seconds): all of them
    /// or none. Refused when any budget is spent (the longest wait), or when a new key would
    /// not fit.
    ///
    /// # Errors
    /// [`Refusal`].
    pub fn admit(&self, hits: &[(&str, Budget)], now: i64) -> Result<(), Refusal> {
        let mut counters = self.counters.lock().unwrap_or_else(PoisonError::into_inner);
        let new_keys = Self::spent(&counters, hits, now)?;
        if counters.len() + new_keys > self.max_keys {
            counters.retain(|_, c| c.window_end > now || c.pending > 0);
            if counters.len() + new_keys > self.max_keys {
                return Err(Refusal::Full {
                    retry_after: Duration::from_secs(1),
                });
            }
        }
        for (key, budget) in hits {
            let (start, window_end) = window_of(*budget, now);
            counters
                .entry(((*key).to_owned(), start))
                .or_insert(Counter {
                    shared: 0,
                    pending: 0,
                    in_flight: 0,
                    window_end,
                    limit: i64::from(budget.limit),
                })
                .pending += 1;
        }
        Ok(())
    }

    /// Whether [`Self::admit`] would refuse `hits` at `now` for a spent budget, counting
    /// nothing: `Err(Refusal::Over)` when one is spent.
    ///
    /// # Errors
    /// [`Refusal::Over`].
    pub fn peek(&self, hits: &[(&str, Budget)], now: i64) -> Result<(), Refusal> {
        let counters = self.counters.lock().unwrap_or_else(PoisonError::into_inner);
        Self::spent(&counters, hits, now).map(|_| ())
    }

    /// The keys of `hits` not counted yet, or [`Refusal::Over`] (the longest wait) when a
    /// budget is spent.
    fn spent(
        counters: &HashMap<(String, i64), Counter>,
        hits: &[(&str, Budget)],
        now: i64,
    ) -> Result<usize, Refusal> {
        let mut wait = None;
        let mut new_keys = 0;
        // One key buffer for every lookup: the map is keyed by owned strings.
        let mut probe = (String::new(), 0);
        for (key, budget) in hits {
            let (start, end) = window_of(*budget, now);
            probe.0.clear();
            probe.0.push_str(key);
            probe.1 = start;
            match counters.get(&probe) {
                Some(c) if c.shared + c.in_flight + c.pending >= i64::from(budget.limit) => {
                    wait = wait.max(Some(end - now));
                }
                Some(_) => {}
                None if budget.limit == 0 => wait = wait.max(Some(end - now)),
                None => new_keys += 1,
            }
        }
        match wait {
            Some(wait) => Err(Refusal::Over {
                retry_after: seconds(wait),
            }),
            None => Ok(new_keys),
        }
    }

    /// Adds what was admitted here since the last flush to the shared counters and reads
    /// their sums back; forgets counters whose window ended before `now`. On a storage
    /// error the counts stay pending for the next flush (nothing is lost).
    ///
    /// # Errors
    /// Storage errors.
    pub async fn flush(&self, pool: &PgPool, now: i64) -> Result<(), StoreError> {
        let (taken, at_risk) = self.take(now);
        // What the other instances admitted to the counters this one holds half spent.
        if !at_risk.is_empty() {
            let keys: Vec<&str> = at_risk.iter().map(|(k, _)| k.as_str()).collect();
            let starts: Vec<i64> = at_risk.iter().map(|(_, s)| *s).collect();
            let sums: Vec<(String, i64, i64)> = sqlx::query_as(
                "SELECT r.key, r.window_start, r.hits FROM rate_limits r
                 JOIN UNNEST($1::text[], $2::bigint[]) AS k(key, window_start)
                   ON r.key = k.key AND r.window_start = k.window_start",
            )
            .bind(&keys)
            .bind(&starts)
            .fetch_all(pool)
            .await?;
            let mut counters = self.counters.lock().unwrap_or_else(PoisonError::into_inner);
            for (key, start, hits) in sums {
                if let Some(c) = counters.get_mut(&(key, start)) {
                    c.shared = c.shared.max(hits);
                }
            }
        }
        if taken.is_empty() {
            return Ok(());
        }
        let keys: Vec<&str> = taken.iter().map(|((k, _), _, _, _)| k.as_str()).collect();
        let starts: Vec<i64> = taken.iter().map(|((_, s), _, _, _)| *s).collect();
        let ends: Vec<i64> = taken.iter().map(|(_, _, e, _)| *e).collect();
        let deltas: Vec<i64> = taken.iter().map(|(_, d, _, _)| *d).collect();
        let sums: Result<Vec<(String, i64, i64)>, sqlx::Error> = sqlx::query_as(
            "INSERT INTO rate_limits (key, window_start, window_end, hits)
             SELECT * FROM UNNEST($1::text[], $2::bigint[], $3::bigint[], $4::bigint[])
             ON CONFLICT (key, window_start) DO UPDATE SET hits = rate_limits.hits + EXCLUDED.hits
             RETURNING key, window_start, hits",
        )
        .bind(&keys)
        .bind(&starts)
        .bind(&ends)
        .bind(&deltas)
        .fetch_all(pool)
        .await;
        self.settle(taken, sums.map_err(StoreError::from))
    }

    /// The first half of a flush: forgets counters whose window ended, moves every pending
    /// count in flight (still counted by [`Self::admit`]), and lists the counters at least
    /// half spent whose shared sums should be re-read.
    fn take(&self, now: i64) -> (Vec<Taken>, Vec<(String, i64)>) {
        let mut counters = self.counters.lock().unwrap_or_else(PoisonError::into_inner);
        counters.retain(|_, c| c.window_end > now || c.pending > 0 || c.in_flight > 0);
        let at_risk = counters
            .iter()
            .filter(|(_, c)| {
                c.pending == 0 && c.in_flight == 0 && c.window_end > now && c.shared * 2 >= c.limit
            })
            .map(|(k, _)| k.clone())
            .collect();
        let taken = counters
            .iter_mut()
            .filter(|(_, c)| c.pending > 0)
            .map(|(k, c)| {
                let pending = std::mem::take(&mut c.pending);
                c.in_flight += pending;
                (k.clone(), pending, c.window_end, c.limit)
            })
            .collect();
        (taken, at_risk)
    }

    /// The second half of a flush: with the shared sums, what was in flight is in them;
    /// without (a storage error), it is pending again for the next flush.
    fn settle(
        &self,
        taken: Vec<Taken>,
        sums: Result<Vec<(String, i64, i64)>, StoreError>,
    ) -> Result<(), StoreError> {
        let mut counters = self.counters.lock().unwrap_or_else(PoisonError::into_inner);
        match sums {
            Ok(sums) => {
                let mut sums: HashMap<(String, i64), i64> = sums
                    .into_iter()
                    .map(|(key, start, hits)| ((key, start), hits))
                    .collect();
                for (counter, delta, _, _) in taken {
                    if let Some(c) = counters.get_mut(&counter) {
                        // The shared sum now holds what was in flight.
                        c.in_flight -= delta;
                        if let Some(hits) = sums.remove(&counter) {
                            c.shared = c.shared.max(hits);
                        }
                    }
                }
                Ok(())
            }
            Err(err) => {
                for ((key, start), delta, window_end, limit) in taken {
                    let c = counters.entry((key, start)).or_insert(Counter {
                        shared: 0,
                        pending: 0,
                        in_flight: delta,
                        window_end,
                        limit,
                    });
                    c.in_flight -= delta;
                    c.pending += delta;
                }
                Err(err)
            }
        }
    }

    /// Flushes every `every` until the task is aborted; every few minutes also deletes
    /// shared counters whose window ended.
    pub fn spawn_flusher(
        self: &Arc<Self>,
        pool: PgPool,
        every: Duration,
    ) -> tokio::task::JoinHandle<()> {
        let limiter = Arc::clone(self);
        tokio::spawn(async move {
            let mut ticker = tokio::time::interval(every);
            ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            let mut rounds: u64 = 0;
            loop {
                ticker.tick().await;
                let now = unix_now();
                if let Err(err) = limiter.flush(&pool, now).await {
                    tracing::warn!(error = %err, "rate limit counters not flushed; kept for the next round");
                }
                rounds += 1;
                if rounds.is_multiple_of(600)
                    && let Err(err) = forget_ended(&pool, now).await
                {
                    tracing::warn!(error = %err, "ended rate limit counters not deleted");
                }
            }
        })
    }
}

/// Deletes shared counters whose window ended a minute or more before `now`.
///
/// # Errors
/// Storage errors.
pub async fn forget_ended(pool: &PgPool, now: i64) -> Result<u64, StoreError> {
    let done = sqlx::query("DELETE FROM rate_limits WHERE window_end < $1")
        .bind(now - 60)
        .execute(pool)
        .await?;
    Ok(done.rows_affected())
}

/// Seconds since the epoch.
#[must_use]
pub fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}

#[cfg(test)]
mod tests {
    use super::*;

    const TWO_PER_MINUTE: Budget = Budget {
        limit: 2,
        window_secs: 60,
    };

    #[test]
    fn a_spent_budget_refuses_until_its_window_turns_and_all_or_none_is_counted() {
        let limiter = Limiter::new(1_000);
        let now = 120;
        assert!(limiter.admit(&[("a", TWO_PER_MINUTE)], now).is_ok());
        assert!(limiter.admit(&[("a", TWO_PER_MINUTE)], now + 1).is_ok());
        assert_eq!(
            limiter.admit(&[("a", TWO_PER_MINUTE)], now + 10),
            Err(Refusal::Over {
                retry_after: Duration::from_secs(50)
            })
        );
        // Refused as a whole: "b" was not counted.
        assert!(
            limiter
                .admit(&[("b", TWO_PER_MINUTE), ("a", TWO_PER_MINUTE)], now + 10)
                .is_err()
        );
        assert!(limiter.admit(&[("b", TWO_PER_MINUTE)], now + 10).is_ok());
        assert!(limiter.admit(&[("b", TWO_PER_MINUTE)], now + 10).is_ok());
        assert!(limiter.admit(&[("a", TWO_PER_MINUTE)], now + 60).is_ok());
    }

    #[test]
    fn counts_in_flight_to_the_shared_counter_still_count() {
        let limiter = Limiter::new(1_000);
        assert!(limiter.admit(&[("a", TWO_PER_MINUTE)], 120).is_ok());
        assert!(limiter.admit(&[("a", TWO_PER_MINUTE)], 120).is_ok());
        // A flush has taken both counts and its statement has not answered yet.
        let (taken, _) = limiter.take(120);
        assert_eq!(taken.len(), 1);
        assert!(
            limiter.admit(&[("a", TWO_PER_MINUTE)], 121).is_err(),
            "a slow flush lets nothing extra through"
        );
        // The statement fails: the counts are pending again, still counted, flushed next.
        limiter
            .settle(
                taken,
                Err(StoreError::Unavailable(sqlx::Error::PoolTimedOut)),
            )
            .unwrap_err();
        assert!(limiter.admit(&[("a", TWO_PER_MINUTE)], 121).is_err());
        let (taken, _) = limiter.take(121);
        assert_eq!(taken[0].1, 2, "nothing lost, nothing doubled");
        // It answers with the shared sum (another instance added one).
        limiter
            .settle(taken, Ok(vec![("a".to_owned(), 120, 3)]))
            .unwrap();
        let counters = limiter.counters.lock().unwrap();
        let c = counters.get(&("a".to_owned(), 120)).unwrap();
        assert_eq!((c.shared, c.pending, c.in_flight), (3, 0, 0));
    }

    #[test]
    fn a_peek_counts_nothing_and_says_what_admit_would_of_a_spent_budget() {
        let limiter = Limiter::new(10);
        for _ in 0..5 {
            assert!(limiter.peek(&[("a", TWO_PER_MINUTE)], 0).is_ok());
        }
        assert!(limiter.admit(&[("a", TWO_PER_MINUTE)], 0).is_ok());
        assert!(limiter.admit(&[("a", TWO_PER_MINUTE)], 0).is_ok());
        assert_eq!(
            limiter.peek(&[("b", TWO_PER_MINUTE), ("a", TWO_PER_MINUTE)], 10),
            Err(Refusal::Over {
                retry_after: Duration::from_secs(50)
            })
        );
        // The peek made no counter for "b": it can still be admitted twice.
        assert!(limiter.admit(&[("b", TWO_PER_MINUTE)], 10).is_ok());
        assert!(limiter.admit(&[("b", TWO_PER_MINUTE)], 10).is_ok());
        assert!(limiter.admit(&[("b", TWO_PER_MINUTE)], 10).is_err());
    }

    #[test]
    fn a_full_limiter_refuses_new_keys_but_not_known_ones() {
        let limiter = Limiter::new(2);
        assert!(limiter.admit(&[("a", TWO_PER_MINUTE)], 0).is_ok());
        assert!(limiter.admit(&[("b", TWO_PER_MINUTE)], 0).is_ok());
        assert!(matches!(
            limiter.admit(&[("c", TWO_PER_MINUTE)], 0),
            Err(Refusal::Full { .. })
        ));
        assert!(limiter.admit(&[("a", TWO_PER_MINUTE)], 0).is_ok());
        // Once the window turned, the old counters make room (flushed ones only: these
        // were never flushed, so they still hold their pending counts).
        assert!(matches!(
            limiter.admit(&[("c", TWO_PER_MINUTE)], 61),
            Err(Refusal::Full { .. })
        ));
    }
}
