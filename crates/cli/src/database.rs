//! Reaching the database named by the settings.

use anyhow::Context as _;
use kopilka_config::Settings;
use kopilka_store::PgPool;

/// The pool for `DATABASE_URL`; explains what to do when it is unset.
pub fn pool(settings: &Settings) -> anyhow::Result<PgPool> {
    let url = settings.database.url.as_ref().context(
        "DATABASE_URL is not set: set it to your Postgres, or run `kopilka dev` for a private one",
    )?;
    Ok(kopilka_store::connect(&settings.database, url)?)
}

/// Applies pending migrations, then projects stored events kept under older rules (a whole
/// Stripe body stored by an earlier Kopilka leaves the database here, not at its next use).
pub async fn migrate(
    pool: &kopilka_store::PgPool,
) -> anyhow::Result<kopilka_store::MigrationReport> {
    let report = kopilka_store::migrate(pool)
        .await
        .context("applying migrations")?;
    let projected = kopilka_reconciliation::projection::reproject_stored(pool)
        .await
        .context("projecting stored events")?;
    if projected > 0 {
        tracing::info!(projected, "stored events projected under the current rules");
    }
    Ok(report)
}
