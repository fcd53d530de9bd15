//! One-click plan links for emails: "cancel my monthly contribution" without signing in.
//! The token names the plan, the action and an expiry, signed with the accounts secret.

use time::OffsetDateTime;

use crate::keys::{Keys, Purpose};

/// What a plan link does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PlanAction {
    /// Cancel at the end of the paid period.
    Cancel,
    /// Update the card (through Stripe's hosted page).
    UpdateCard,
}

impl PlanAction {
    fn byte(self) -> u8 {
        match self {
            Self::Cancel => 1,
            Self::UpdateCard => 2,
        }
    }

    fn from_byte(b: u8) -> Option<Self> {
        match b {
            1 => Some(Self::Cancel),
            2 => Some(Self::UpdateCard),
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

/// The plan and action of a genuine, unexpired token.
#[must_use]
pub fn open(keys: &Keys, token: &str, now: OffsetDateTime) -> Option<(uuid::Uuid, PlanAction)> {
    let payload = keys.open(Purpose::PlanAction, token)?;
    if payload.len() != 16 + 1 + 8 {
        return None;
    }
    let plan = uuid::Uuid::from_slice(&payload[..16]).ok()?;
    let action = PlanAction::from_byte(payload[16])?;
    let expires = i64::from_be_bytes(payload[17..].try_into().ok()?);
    (now.unix_timestamp() < expires).then_some((plan, action))
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
}
