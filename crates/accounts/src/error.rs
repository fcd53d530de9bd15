use kopilka_store::StoreError;

/// What can go wrong with an account. Messages never name an address, a token or a
/// password, and never say whether an address has an account.
#[derive(Debug, thiserror::Error)]
pub enum AccountError {
    /// A value was refused (422): a stable code and what to fix.
    #[error("{message}")]
    Refused {
        /// e.g. `password_too_short`.
        code: &'static str,
        /// What to fix.
        message: String,
    },
    /// Wrong address or password (401), the same words whichever it was.
    #[error("the email address or password is not right")]
    InvalidCredentials,
    /// Too many failed logins (429): wait, or ask for an emailed link.
    #[error("too many attempts; try again later or ask for a sign-in link")]
    Throttled {
        /// When trying again makes sense.
        retry_after: std::time::Duration,
    },
    /// An emailed link or one-click token that is unknown, used, expired or forged (400).
    #[error("this link is not valid any more; ask for a new one")]
    InvalidLink,
    /// The change needs fresh proof (403): the current password, or a session begun by an
    /// emailed link within the link's lifetime.
    #[error("give your current password, or sign in with a fresh emailed link first")]
    ReauthenticationRequired,
    /// Not found, or not this reader's (404).
    #[error("not found")]
    NotFound,
    /// Postgres.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The queue (an email could not be enqueued).
    #[error(transparent)]
    Queue(#[from] kopilka_queue::QueueError),
    /// A password hash could not be computed (a bug or exhausted resources).
    #[error("password hashing failed: {0}")]
    Hashing(String),
}

impl AccountError {
    pub(crate) fn refused(code: &'static str, message: impl Into<String>) -> Self {
        Self::Refused {
            code,
            message: message.into(),
        }
    }
}

impl From<sqlx::Error> for AccountError {
    fn from(err: sqlx::Error) -> Self {
        Self::Store(err.into())
    }
}
