//! One-click plan links for emails: "cancel my monthly contribution" without signing in.
//! The token names the plan, the action and an expiry, signed with the accounts secret.
//!
//! A link is single use: [`redeem`] records its use in `plan_link_uses` under a keyed HMAC
//! of the link (never the token itself) in one `INSERT … ON CONFLICT DO NOTHING`, so a
//! second use — even one racing the first — finds the row and is refused. The rows are
//! needed only while the link could still work; [`forget_expired_uses`] deletes the rest.

use sqlx::PgConnection;
use time::OffsetDateTime;

use crate::AccountError;
use crate::keys::{Keys, Purpose};

/// What a plan link does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PlanAction {
    /// Cancel at the end of the paid period.
    Cancel,
    /// Update the card (through Stripe's hosted page).
    UpdateCard,
    /// Pay or authenticate (3-D Secure) the plan's open invoice, on Stripe's hosted invoice
    /// page read live when the link is used.
    CompletePayment,
}

impl PlanAction {
    fn byte(self) -> u8 {
        match self {
            Self::Cancel => 1,
            Self::UpdateCard => 2,
            Self::CompletePayment => 3,
        }
    }

    fn from_byte(b: u8) -> Option<Self> {
        match b {
            1 => Some(Self::Cancel),
            2 => Some(Self::UpdateCard),
            3 => Some(Self::CompletePayment),
            _ => None,
        }
    }
}

/// A token for `action` on plan `plan` that works until `expires_at`.
#[must_use]
pub fn token(
    keys: &Keys,
    plan: uuid::Uuid,
    action: PlanAction,
    expires_at: OffsetDateTime,
) -> String {
    let mut payload = plan.as_bytes().to_vec();
    payload.push(action.byte());
    payload.extend_from_slice(&expires_at.unix_timestamp().to_be_bytes());
    keys.sign(Purpose::PlanAction, &payload)
}

/// A genuine, unexpired plan link, opened.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlanLink {
    /// The plan it acts on.
    pub plan: uuid::Uuid,
    /// What it does.
    pub action: PlanAction,
    /// When it stops working.
    pub expires_at: OffsetDateTime,
    /// The keyed HMAC that records its use (the same for every spelling of the token).
    use_key: String,
}

/// The plan and action of a genuine, unexpired token.
#[must_use]
pub fn open(keys: &Keys, token: &str, now: OffsetDateTime) -> Option<(uuid::Uuid, PlanAction)> {
    verify(keys, token, now).map(|link| (link.plan, link.action))
}

/// The link a genuine, unexpired token stands for; `None` when forged, malformed or expired.
#[must_use]
pub fn verify(keys: &Keys, token: &str, now: OffsetDateTime) -> Option<PlanLink> {
    let payload = keys.open(Purpose::PlanAction, token)?;
    if payload.len() != 16 + 1 + 8 {
        return None;
    }
    let plan = uuid::Uuid::from_slice(&payload[..16]).ok()?;
    let action = PlanAction::from_byte(payload[16])?;
    let expires = i64::from_be_bytes(payload[17..].try_into().ok()?);
    let expires_at = OffsetDateTime::from_unix_timestamp(expires).ok()?;
    (now < expires_at).then(|| PlanLink {
        plan,
        action,
        expires_at,
        use_key: keys.digest(Purpose::PlanLinkUse, &payload),
    })
}

/// Records the use of `link`: `true` the first time, `false` when it was used before (one
/// atomic insert, so of two racing uses exactly one gets `true`).
///
/// # Errors
/// Storage errors.
pub async fn redeem(conn: &mut PgConnection, link: &PlanLink) -> Result<bool, AccountError> {
    let inserted = sqlx::query(
        "INSERT INTO plan_link_uses (use_key, link_expires_at) VALUES ($1, $2)
         ON CONFLICT (use_key) DO NOTHING",
    )
    .bind(&link.use_key)
    .bind(link.expires_at)
    .execute(conn)
    .await?;
    Ok(inserted.rows_affected() == 1)
}

/// Takes back a use whose action did not happen (Stripe failed), so the link works again.
///
/// # Errors
/// Storage errors.
pub async fn release(conn: &mut PgConnection, link: &PlanLink) -> Result<(), AccountError> {
    sqlx::query("DELETE FROM plan_link_uses WHERE use_key = $1")
        .bind(&link.use_key)
        .execute(conn)
        .await?;
    Ok(())
}

/// Forgets up to `limit` uses of links that expired before `before` (they cannot work
/// again, so their record is no longer needed); answers how many were forgotten. Run by the
/// daily retention sweep (`retention.sweep`) as of the worker's clock.
///
/// # Errors
/// Storage errors.
pub async fn forget_expired_uses(
    conn: &mut PgConnection,
    before: OffsetDateTime,
    limit: i64,
) -> Result<u64, AccountError> {
    Ok(kopilka_store::retention::batch(
        conn,
        "DELETE FROM plan_link_uses WHERE use_key IN (
             SELECT use_key FROM plan_link_uses WHERE link_expires_at < $1 LIMIT $2)",
        before,
        limit,
    )
    .await?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::datetime;

    #[test]
    fn a_plan_link_works_until_it_expires() {
        let keys = Keys::new(b"0123456789abcdef0123456789abcdef");
        let now = datetime!(2026-11-29 12:00 UTC);
        let plan = uuid::Uuid::now_v7();
        let t = token(
            &keys,
            plan,
            PlanAction::Cancel,
            now + time::Duration::days(14),
        );
        assert_eq!(open(&keys, &t, now), Some((plan, PlanAction::Cancel)));
        assert_eq!(open(&keys, &t, now + time::Duration::days(15)), None);
    }

    #[test]
    fn a_links_use_key_is_keyed_and_never_the_token() {
        let keys = Keys::new(b"0123456789abcdef0123456789abcdef");
        let other = Keys::new(b"fedcba9876543210fedcba9876543210");
        let now = datetime!(2026-11-29 12:00 UTC);
        let plan = uuid::Uuid::now_v7();
        let expires = now + time::Duration::days(14);
        let t = token(&keys, plan, PlanAction::Cancel, expires);
        let link = verify(&keys, &t, now).expect("genuine");
        assert!(!link.use_key.contains(&t) && !t.contains(&link.use_key));
        // The same link spelled with surrounding space is the same use.
        let spaced = verify(&keys, &format!(" {t} "), now).expect("genuine");
        assert_eq!(spaced.use_key, link.use_key);
        // Another secret gives another key (a keyed HMAC, not a bare hash).
        let t2 = token(&other, plan, PlanAction::Cancel, expires);
        let link2 = verify(&other, &t2, now).expect("genuine");
        assert_ne!(link2.use_key, link.use_key);
        // The other action on the same plan is another link.
        let card = token(&keys, plan, PlanAction::UpdateCard, expires);
        assert_ne!(
            verify(&keys, &card, now).expect("genuine").use_key,
            link.use_key
        );
        let pay = token(&keys, plan, PlanAction::CompletePayment, expires);
        assert_eq!(
            open(&keys, &pay, now),
            Some((plan, PlanAction::CompletePayment))
        );
        assert_ne!(
            verify(&keys, &pay, now).expect("genuine").use_key,
            verify(&keys, &card, now).expect("genuine").use_key
        );
    }
}
