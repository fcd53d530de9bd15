use std::str::FromStr;

use kopilka_config::DatabaseSettings;
use secrecy::{ExposeSecret, SecretString};
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{ConnectOptions, Connection, PgConnection, PgPool};

use crate::StoreError;

/// A pool sized from `settings`, connecting lazily: the server starts (and answers
/// `/readyz` 503) while Postgres is down, and recovers by itself when it returns, because
/// every connection is checked before it is handed out.
///
/// # Errors
/// [`StoreError::Database`] when `url` is not a Postgres URL.
pub fn connect(settings: &DatabaseSettings, url: &SecretString) -> Result<PgPool, StoreError> {
    let options = PgConnectOptions::from_str(url.expose_secret())?
        .application_name("kopilka")
        .log_statements(tracing::log::LevelFilter::Trace);
    Ok(PgPoolOptions::new()
        .max_connections(settings.max_connections)
        .min_connections(settings.min_connections)
        .acquire_timeout(settings.acquire_timeout())
        .test_before_acquire(true)
        .connect_lazy_with(options))
}

/// One round trip (`SELECT 1`): is the database there?
///
/// # Errors
/// [`StoreError::Unavailable`] when it is not.
pub async fn ping(pool: &PgPool) -> Result<(), StoreError> {
    sqlx::query("SELECT 1").execute(pool).await?;
    Ok(())
}

/// Creates database `name` on the server at `server_url` unless it exists; `template` picks
/// the database to copy (Postgres' `template1` when `None`). Returns whether it was created.
///
/// # Errors
/// [`StoreError`] when the server cannot be reached or refuses.
pub async fn create_database(
    server_url: &SecretString,
    name: &str,
    template: Option<&str>,
) -> Result<bool, StoreError> {
    let mut conn = PgConnection::connect(server_url.expose_secret()).await?;
    let exists: bool =
        sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM pg_database WHERE datname = $1)")
            .bind(name)
            .fetch_one(&mut conn)
            .await?;
    if !exists {
        let mut statement = format!("CREATE DATABASE {}", quote_ident(name));
        if let Some(template) = template {
            statement.push_str(&format!(" TEMPLATE {}", quote_ident(template)));
        }
        sqlx::raw_sql(sqlx::AssertSqlSafe(statement))
            .execute(&mut conn)
            .await?;
    }
    conn.close().await?;
    Ok(!exists)
}

/// Quotes an SQL identifier (database names cannot be bound as parameters).
fn quote_ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

#[cfg(test)]
mod tests {
    #[test]
    fn identifiers_are_quoted() {
        assert_eq!(super::quote_ident("kopilka"), "\"kopilka\"");
        assert_eq!(super::quote_ident("a\"b"), "\"a\"\"b\"");
    }
}
