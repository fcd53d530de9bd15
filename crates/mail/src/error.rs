/// What can go wrong with an email.
#[derive(Debug, thiserror::Error)]
pub enum MailError {
    /// A template is missing or failed to render (a bug).
    #[error("template: {0}")]
    Template(String),
    /// The message could not be built (e.g. an unusable address).
    #[error("message: {0}")]
    Message(String),
    /// The mail server refused for good (5xx): do not retry this address.
    #[error("permanent delivery failure: {0}")]
    Permanent(String),
    /// The mail server or the network failed for now (4xx, timeout, refused connection):
    /// retry later.
    #[error("transient delivery failure: {0}")]
    Transient(String),
    /// The transport could not be configured.
    #[error("mail configuration: {0}")]
    Config(String),
}

impl MailError {
    /// Whether trying again later may succeed.
    #[must_use]
    pub fn is_transient(&self) -> bool {
        matches!(self, Self::Transient(_))
    }
}
