//! The banner's state — closed, snoozed until, gave at — so the decision is the same on every
//! device: stored for a signed-in reader, carried in a signed cookie for an anonymous one.

use kopilka_domain::id::ReaderId;
use serde::{Deserialize, Serialize};
use sqlx::PgConnection;
use time::OffsetDateTime;

use crate::AccountError;
use crate::keys::{Keys, Purpose};

/// The longest snooze: a year.
const MAX_SNOOZE: time::Duration = time::Duration::days(366);

/// How long a closed banner keeps asks hidden.
pub const CLOSED_FOR: time::Duration = time::Duration::days(30);

/// What the reader did with the banner.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct BannerState {
    /// When they closed it (`None`: open).
    #[serde(default, with = "time::serde::rfc3339::option")]
    pub closed_at: Option<OffsetDateTime>,
    /// Hidden until then.
    #[serde(default, with = "time::serde::rfc3339::option")]
    pub snoozed_until: Option<OffsetDateTime>,
    /// Their latest gift.
    #[serde(default, with = "time::serde::rfc3339::option")]
    pub gave_at: Option<OffsetDateTime>,
}

/// A change the reader asks for; absent fields stay as they are.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
pub struct BannerChange {
    /// Close (`true`) or reopen (`false`).
    #[serde(default)]
    pub closed: Option<bool>,
    /// Snooze until this instant; `null` ends a snooze.
    #[serde(default, deserialize_with = "present")]
    pub snoozed_until: Option<Option<OffsetDateTime>>,
}

/// A field that is present (perhaps `null`) becomes `Some`, an absent one stays `None`.
fn present<'de, D: serde::Deserializer<'de>>(
    d: D,
) -> Result<Option<Option<OffsetDateTime>>, D::Error> {
    time::serde::rfc3339::option::deserialize(d).map(Some)
}

impl BannerState {
    /// This state after `change` at `now`.
    ///
    /// # Errors
    /// [`AccountError::Refused`] `invalid_snooze` for a snooze in the past or over a year.
    pub fn after(
        mut self,
        change: BannerChange,
        now: OffsetDateTime,
    ) -> Result<Self, AccountError> {
        if let Some(closed) = change.closed {
            self.closed_at = closed.then_some(now);
        }
        if let Some(until) = change.snoozed_until {
            if let Some(until) = until
                && (until <= now || until > now + MAX_SNOOZE)
            {
                return Err(AccountError::refused(
                    "invalid_snooze",
                    "snoozed_until must be in the future and at most a year away",
                ));
            }
            self.snoozed_until = until;
        }
        Ok(self)
    }

    /// Until when asks stay hidden: the snooze, or a closed banner for [`CLOSED_FOR`].
    #[must_use]
    pub fn hides_asks_until(&self) -> Option<OffsetDateTime> {
        [self.snoozed_until, self.closed_at.map(|at| at + CLOSED_FOR)]
            .into_iter()
            .flatten()
            .max()
    }

    /// The anonymous reader's cookie value: this state, signed.
    #[must_use]
    pub fn to_cookie(&self, keys: &Keys) -> String {
        keys.sign(
            Purpose::BannerCookie,
            &serde_json::to_vec(self).unwrap_or_default(),
        )
    }

    /// The state in a cookie, if it is genuine.
    #[must_use]
    pub fn from_cookie(keys: &Keys, cookie: &str) -> Option<Self> {
        keys.open(Purpose::BannerCookie, cookie)
            .and_then(|bytes| serde_json::from_slice(&bytes).ok())
    }
}

/// A signed-in reader's banner state.
///
/// # Errors
/// Storage errors.
pub async fn load(conn: &mut PgConnection, reader: ReaderId) -> Result<BannerState, AccountError> {
    let row: Option<(
        Option<OffsetDateTime>,
        Option<OffsetDateTime>,
        Option<OffsetDateTime>,
    )> = sqlx::query_as(
        "SELECT closed_at, snoozed_until, gave_at FROM banner_states WHERE reader_id = $1",
    )
    .bind(reader.as_uuid())
    .fetch_optional(conn)
    .await?;
    Ok(row.map_or_else(
        BannerState::default,
        |(closed_at, snoozed_until, gave_at)| BannerState {
            closed_at,
            snoozed_until,
            gave_at,
        },
    ))
}

/// Applies `change` to a signed-in reader's banner state and returns the result.
///
/// # Errors
/// [`AccountError::Refused`] for a bad snooze; storage errors.
pub async fn change(
    conn: &mut PgConnection,
    reader: ReaderId,
    change: BannerChange,
    now: OffsetDateTime,
) -> Result<BannerState, AccountError> {
    let next = load(&mut *conn, reader).await?.after(change, now)?;
    sqlx::query(
        "INSERT INTO banner_states (reader_id, closed_at, snoozed_until) VALUES ($1, $2, $3)
         ON CONFLICT (reader_id) DO UPDATE SET closed_at = $2, snoozed_until = $3",
    )
    .bind(reader.as_uuid())
    .bind(next.closed_at)
    .bind(next.snoozed_until)
    .execute(conn)
    .await?;
    Ok(next)
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::datetime;

    #[test]
    fn a_cookie_round_trips_and_refuses_tampering() {
        let keys = Keys::new(b"0123456789abcdef0123456789abcdef");
        let now = datetime!(2026-11-29 12:00 UTC);
        let state = BannerState::default()
            .after(
                BannerChange {
                    closed: Some(true),
                    snoozed_until: Some(Some(now + time::Duration::days(7))),
                },
                now,
            )
            .unwrap();
        let cookie = state.to_cookie(&keys);
        assert_eq!(BannerState::from_cookie(&keys, &cookie), Some(state));
        let mut forged = cookie.clone();
        forged.insert(3, 'A');
        assert_eq!(BannerState::from_cookie(&keys, &forged), None);
    }

    #[test]
    fn a_snooze_must_lie_ahead_and_within_a_year() {
        let now = datetime!(2026-11-29 12:00 UTC);
        let snooze = |until| BannerChange {
            closed: None,
            snoozed_until: Some(Some(until)),
        };
        assert!(
            BannerState::default()
                .after(snooze(now - time::Duration::HOUR), now)
                .is_err()
        );
        assert!(
            BannerState::default()
                .after(snooze(now + time::Duration::days(400)), now)
                .is_err()
        );
        let cleared = BannerState::default()
            .after(snooze(now + time::Duration::DAY), now)
            .unwrap()
            .after(
                BannerChange {
                    closed: None,
                    snoozed_until: Some(None),
                },
                now,
            )
            .unwrap();
        assert_eq!(cleared.snoozed_until, None);
    }
}
