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
