//! Kopilka's Postgres: the connection pool, the embedded migrations from `/migrations`,
//! the transaction helper, and the private cluster that `kopilka dev` and the tests start
//! when `DATABASE_URL` is unset.
//!
//! Storage errors are classified here, once: [`StoreError::Unavailable`] means "Postgres is
//! not reachable right now, try again" (503 at the HTTP edge); anything else is a bug or a
//! constraint and is reported as such.

mod error;
pub mod limits;
mod migrate;
mod pool;
pub mod private_postgres;
pub mod retention;
mod transaction;

pub use error::StoreError;
pub use migrate::{AppliedMigration, MIGRATOR, MigrationReport, migrate};
pub use pool::{connect, create_database, ping};
pub use private_postgres::{PrivatePostgres, PrivatePostgresError};
pub use sqlx::postgres::PgListener;
pub use sqlx::{PgConnection, PgPool, Postgres, Transaction};

/// A connection borrowed from the pool.
pub type PooledConnection = sqlx::pool::PoolConnection<sqlx::Postgres>;
pub use transaction::transaction;
