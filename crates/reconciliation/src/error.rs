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
    /// The event was rendered in an API version Kopilka does not speak: its object may
    /// lack what the applier reads (an invoice without `parent`), so it is refused, not
    /// misread. Re-point the webhook endpoint at the pinned version and replay it.
    #[error(
        "event rendered in API version {got}, Kopilka speaks {expected}: set the webhook endpoint's API version to {expected}, then replay the event (admin events replay --failed)"
    )]
    ApiVersion {
        /// The event's `api_version` (`none` when missing).
        got: String,
        /// [`kopilka_stripe::api_version`].
        expected: &'static str,
    },
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
    /// BTCPay Server refused or could not be reached.
    #[error("BTCPay: {0}")]
    Btcpay(#[from] kopilka_btcpay::ClientError),
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
