use kopilka_store::StoreError;
use kopilka_stripe::ClientError;

/// Why a request was refused: a stable code and a sentence, for a 422.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    /// e.g. `amount_below_minimum`.
    pub code: &'static str,
    /// What to fix.
    pub message: String,
}

impl Refusal {
    pub(crate) fn new(code: &'static str, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
        }
    }
}

/// What can go wrong with a contribution.
#[derive(Debug, thiserror::Error)]
pub enum ContributionError {
    /// The request's values are refused (422).
    #[error("{}", .0.message)]
    Refused(Refusal),
    /// The idempotency key was used before with another request (409).
    #[error("this Idempotency-Key was used with a different request")]
    KeyReused,
    /// The first request with this idempotency key is still running (409, retry).
    #[error("a request with this Idempotency-Key is in progress; retry shortly")]
    InProgress,
    /// Stripe could not be reached (503, retry with the same key).
    #[error("the payment provider is unavailable")]
    StripeUnavailable(#[source] ClientError),
    /// Stripe refused what we sent (502: our mistake, not the reader's).
    #[error("the payment provider refused the checkout")]
    StripeRefused(#[source] ClientError),
    /// The address is blocked by the card-testing shield (403, `Retry-After`).
    #[error("checkout is not available for this address for now")]
    Blocked {
        /// Seconds until the block ends.
        retry_after_secs: u64,
    },
    /// No Stripe client is configured (500).
    #[error("Stripe is not configured")]
    NoStripe,
    /// BTCPay Server could not be reached (503, retry with the same key).
    #[error("the payment provider is unavailable")]
    BtcpayUnavailable(#[source] kopilka_btcpay::ClientError),
    /// BTCPay Server refused what we sent, or answered unexpectedly (502).
    #[error("the payment provider refused the checkout")]
    BtcpayRefused(#[source] kopilka_btcpay::ClientError),
    /// The queue.
    #[error(transparent)]
    Queue(#[from] kopilka_queue::QueueError),
    /// Postgres.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The reader's account.
    #[error(transparent)]
    Account(#[from] kopilka_accounts::AccountError),
}

impl From<sqlx::Error> for ContributionError {
    fn from(err: sqlx::Error) -> Self {
        Self::Store(err.into())
    }
}

impl From<kopilka_btcpay::ClientError> for ContributionError {
    fn from(err: kopilka_btcpay::ClientError) -> Self {
        match err {
            kopilka_btcpay::ClientError::Unavailable(_) => Self::BtcpayUnavailable(err),
            _ => Self::BtcpayRefused(err),
        }
    }
}

impl ContributionError {
    /// Whether a provider refused a checkout for good: nothing was created there, so
    /// nothing stays here, and a retry with the same key asks again.
    #[must_use]
    pub fn refused_for_good(&self) -> bool {
        matches!(self, Self::StripeRefused(_) | Self::BtcpayRefused(_))
    }
}

impl From<ClientError> for ContributionError {
    fn from(err: ClientError) -> Self {
        match err {
            ClientError::Unavailable(_) => Self::StripeUnavailable(err),
            _ => Self::StripeRefused(err),
        }
    }
}
