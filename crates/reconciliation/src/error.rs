/// What can go wrong reconciling.
#[derive(Debug, thiserror::Error)]
pub enum ReconciliationError {
    /// The event names an object Kopilka does not know yet (an invoice before its
    /// subscription): retry later, do not fail.
    #[error("not yet applicable: {0}")]
    NotYet(String),
    /// The event's object does not have the shape its type promises.
    #[error("malformed event object: {0}")]
    Malformed(String),
    /// No such stored event.
    #[error("no such event: {0}")]
    UnknownEvent(String),
    /// Contributions.
    #[error(transparent)]
    Contribution(#[from] kopilka_contributions::ContributionError),
    /// Plans.
    #[error(transparent)]
    Recurring(#[from] kopilka_recurring::RecurringError),
    /// Stripe refused or could not be reached.
    #[error("Stripe: {0}")]
    Stripe(#[from] kopilka_stripe::ClientError),
    /// Readers.
    #[error(transparent)]
    Account(#[from] kopilka_accounts::AccountError),
    /// The queue.
    #[error(transparent)]
    Queue(#[from] kopilka_queue::QueueError),
    /// Postgres.
    #[error(transparent)]
    Store(#[from] kopilka_store::StoreError),
}

impl From<sqlx::Error> for ReconciliationError {
    fn from(err: sqlx::Error) -> Self {
        Self::Store(err.into())
    }
}
