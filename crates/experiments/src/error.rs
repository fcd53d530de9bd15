use crate::spec::Refusal;

/// What can go wrong with an experiment.
#[derive(Debug, thiserror::Error)]
pub enum ExperimentError {
    /// The spec or the change is refused (a code and what to fix).
    #[error("{}: {}", .0.code, .0.message)]
    Refused(Refusal),
    /// No experiment of that name.
    #[error("no experiment named {0:?}")]
    NotFound(String),
    /// Postgres.
    #[error(transparent)]
    Store(#[from] kopilka_store::StoreError),
}

impl From<sqlx::Error> for ExperimentError {
    fn from(err: sqlx::Error) -> Self {
        Self::Store(err.into())
    }
}
