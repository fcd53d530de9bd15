use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// Where a contribution stands. Facts from Stripe arrive in any order, so a transition is
/// applied only when it moves forward: money that landed is never forgotten because an
/// older "expired" or "failed" fact arrived late.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ContributionStatus {
    /// Checkout started, nothing paid yet.
    Pending,
    /// The reader's card was declined (they may still pay on the same page).
    Failed,
    /// The checkout expired unpaid.
    Abandoned,
    /// Paid.
    Paid,
    /// Paid, then disputed by the card holder.
    Disputed,
    /// Paid, then refunded in full.
    Refunded,
}

/// A status name that is not one of ours.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown contribution status {0:?}")]
pub struct StatusError(String);

impl ContributionStatus {
    /// The stored name.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Failed => "failed",
            Self::Abandoned => "abandoned",
            Self::Paid => "paid",
            Self::Disputed => "disputed",
            Self::Refunded => "refunded",
        }
    }

    /// Whether a fact saying `next` may move a contribution from `self`. Unpaid states
    /// give way to payment; payment gives way to a refund or a dispute; a dispute can be
    /// won (back to paid) or end in a refund; a refund is final.
    #[must_use]
    pub fn may_become(self, next: Self) -> bool {
        use ContributionStatus::{Abandoned, Disputed, Failed, Paid, Pending, Refunded};
        matches!(
            (self, next),
            (Pending, Failed | Abandoned | Paid)
                | (Failed, Abandoned | Paid)
                | (Abandoned, Paid)
                | (Paid, Disputed | Refunded)
                | (Disputed, Paid | Refunded)
        )
    }
}

impl FromStr for ContributionStatus {
    type Err = StatusError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        [
            Self::Pending,
            Self::Failed,
            Self::Abandoned,
            Self::Paid,
            Self::Disputed,
            Self::Refunded,
        ]
        .into_iter()
        .find(|status| status.as_str() == s)
        .ok_or_else(|| StatusError(s.chars().take(32).collect()))
    }
}

impl fmt::Display for ContributionStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::ContributionStatus::{self, Abandoned, Disputed, Failed, Paid, Pending, Refunded};

    #[test]
    fn money_that_landed_is_never_undone_by_a_late_unpaid_fact() {
        for late in [Pending, Failed, Abandoned] {
            assert!(!Paid.may_become(late), "paid → {late}");
            assert!(!Refunded.may_become(late), "refunded → {late}");
        }
        assert!(Abandoned.may_become(Paid), "a late payment still counts");
        assert!(Pending.may_become(Paid) && Paid.may_become(Refunded) && Disputed.may_become(Paid));
        assert!(!Refunded.may_become(Paid) && !Paid.may_become(Paid));
    }

    #[test]
    fn names_round_trip() {
        for status in [Pending, Failed, Abandoned, Paid, Disputed, Refunded] {
            assert_eq!(status.as_str().parse::<ContributionStatus>(), Ok(status));
        }
        assert!("lost".parse::<ContributionStatus>().is_err());
    }
}
