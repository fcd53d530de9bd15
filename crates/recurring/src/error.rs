use kopilka_contributions::ContributionError;
use kopilka_store::StoreError;
use kopilka_stripe::ClientError;

/// What can go wrong with a plan.
#[derive(Debug, thiserror::Error)]
pub enum RecurringError {
    /// No such plan.
    #[error("no such plan")]
    NotFound,
    /// The change makes no sense for this plan (e.g. resuming a canceled plan).
    #[error("{0}")]
    Refused(String),
    /// An interval switch whose first payment did not go through (declined, or the bank
    /// asks for 3-D Secure): nothing changed; the donor completes it on Stripe's hosted
    /// invoice page at `url`, and the switch applies once it is paid.
    #[error("the switch waits for its payment")]
    PaymentIncomplete {
        /// Stripe's hosted invoice page, read live from Stripe's answer.
        url: Option<String>,
    },
    /// A one-click link that is forged, malformed or expired.
    #[error("this link is not valid any more; sign in to manage the plan")]
    LinkInvalid,
    /// A one-click link used before (links are single use).
    #[error("this link has been used already; sign in to manage the plan")]
    LinkUsed,
    /// A one-click link about a plan that has ended or a reader who was erased.
    #[error("this link no longer applies; sign in to manage the plan")]
    LinkRevoked,
    /// A payment link about an invoice that is paid, voided or gone: nothing to pay.
    #[error("there is nothing left to pay; sign in to manage the plan")]
    NothingToPay,
    /// Stripe refused or could not be reached.
    #[error(transparent)]
    Stripe(#[from] ClientError),
    /// The contributions side.
    #[error(transparent)]
    Contribution(#[from] ContributionError),
    /// The reader's account.
    #[error(transparent)]
    Account(#[from] kopilka_accounts::AccountError),
    /// The queue.
    #[error(transparent)]
    Queue(#[from] kopilka_queue::QueueError),
    /// Postgres.
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl From<sqlx::Error> for RecurringError {
    fn from(err: sqlx::Error) -> Self {
        Self::Store(err.into())
    }
}
