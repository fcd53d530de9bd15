//! `[retention]`: how long rows that tie something to a person outlive their use. The daily
//! `retention.sweep` job deletes (or, for email sends, unlinks) what is past its window.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::ConfigError;

/// Retention windows, each counted from the moment the row stopped being needed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
pub struct RetentionSettings {
    /// Days a session row is kept after it expired or was revoked.
    pub session_days: u32,
    /// Days an emailed link's row (sign-in, verification) is kept after it was used or
    /// expired.
    pub link_days: u32,
    /// Hours a login-throttle counter is kept after its backoff ended (or after its last
    /// failure, when it never reached a backoff).
    pub throttle_hours: u32,
    /// Days an email send keeps its reader and its last error; after that only its logical
    /// id and status stay (so the same email is still never sent twice).
    pub email_send_days: u32,
    /// Days after sign-up a reader who never verified the address and has nothing linked
    /// (no contribution, plan, reminder or stored event) is deleted.
    pub unverified_reader_days: u32,
    /// Days a finished (`done`) queue job is kept.
    pub done_job_days: u32,
    /// Hours a checkout's `Idempotency-Key` and body fingerprint are kept.
    pub checkout_request_hours: u32,
}

const DAY: u64 = 86_400;
const HOUR: u64 = 3_600;

impl RetentionSettings {
    /// [`Self::session_days`] as a duration.
    #[must_use]
    pub fn sessions(&self) -> Duration {
        Duration::from_secs(u64::from(self.session_days) * DAY)
    }

    /// [`Self::link_days`] as a duration.
    #[must_use]
    pub fn links(&self) -> Duration {
        Duration::from_secs(u64::from(self.link_days) * DAY)
    }

    /// [`Self::throttle_hours`] as a duration.
    #[must_use]
    pub fn throttles(&self) -> Duration {
        Duration::from_secs(u64::from(self.throttle_hours) * HOUR)
    }

    /// [`Self::email_send_days`] as a duration.
    #[must_use]
    pub fn email_sends(&self) -> Duration {
        Duration::from_secs(u64::from(self.email_send_days) * DAY)
    }

    /// [`Self::unverified_reader_days`] as a duration.
    #[must_use]
    pub fn unverified_readers(&self) -> Duration {
        Duration::from_secs(u64::from(self.unverified_reader_days) * DAY)
    }

    /// [`Self::done_job_days`] as a duration.
    #[must_use]
    pub fn done_jobs(&self) -> Duration {
        Duration::from_secs(u64::from(self.done_job_days) * DAY)
    }

    /// [`Self::checkout_request_hours`] as a duration.
    #[must_use]
    pub fn checkout_requests(&self) -> Duration {
        Duration::from_secs(u64::from(self.checkout_request_hours) * HOUR)
    }

    pub(crate) fn validate(&self) -> Result<(), ConfigError> {
        let windows = [
            ("session_days", self.session_days),
            ("link_days", self.link_days),
            ("throttle_hours", self.throttle_hours),
            ("email_send_days", self.email_send_days),
            ("unverified_reader_days", self.unverified_reader_days),
            ("done_job_days", self.done_job_days),
            ("checkout_request_hours", self.checkout_request_hours),
        ];
        for (name, value) in windows {
            if value == 0 {
                return Err(ConfigError::Invalid(format!(
                    "retention.{name} must be at least 1"
                )));
            }
            if value > 36_500 {
                return Err(ConfigError::Invalid(format!(
                    "retention.{name} must be at most 36500"
                )));
            }
        }
        Ok(())
    }
}
