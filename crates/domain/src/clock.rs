use std::sync::Mutex;

use time::OffsetDateTime;

/// Where "now" comes from. Logic takes a `&dyn Clock` instead of reading the system time,
/// so that `worker --as-of`, renewals and order-independence can be tested.
pub trait Clock: Send + Sync {
    /// The current instant, in UTC.
    fn now(&self) -> OffsetDateTime;
}

/// The machine's clock.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> OffsetDateTime {
        OffsetDateTime::now_utc()
    }
}

/// A clock that stands still until moved; for tests and `--as-of` runs.
#[derive(Debug)]
pub struct FixedClock(Mutex<OffsetDateTime>);

impl FixedClock {
    /// A clock showing `at`.
    #[must_use]
    pub fn new(at: OffsetDateTime) -> Self {
        Self(Mutex::new(at))
    }

    /// Moves the clock by `by` (which may be negative).
    pub fn advance(&self, by: time::Duration) {
        let mut now = self
            .0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        *now += by;
    }
}

impl Clock for FixedClock {
    fn now(&self) -> OffsetDateTime {
        *self
            .0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_fixed_clock_moves_only_when_advanced() {
        let start = time::macros::datetime!(2026-11-29 12:00 UTC);
        let clock = FixedClock::new(start);
        assert_eq!(clock.now(), start);
        clock.advance(time::Duration::days(31));
        assert_eq!(clock.now(), time::macros::datetime!(2026-12-30 12:00 UTC));
    }
}
