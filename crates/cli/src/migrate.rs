//! `kopilka migrate`: apply pending migrations; a no-op when the schema is current.

use crate::{database, logging, output};

pub async fn run() -> anyhow::Result<()> {
    let settings = kopilka_config::load()?;
    logging::init(&settings.log);
    let pool = database::pool(&settings)?;
    let report = crate::database::migrate(&pool).await?;
    if report.applied.is_empty() {
        output::line(&format!(
            "schema up to date ({} migrations); nothing applied",
            report.known
        ));
    } else {
        output::line(&format!("applied {} migration(s):", report.applied.len()));
        for migration in &report.applied {
            output::line(&format!(
                "  {} {}",
                migration.version, migration.description
            ));
        }
    }
    pool.close().await;
    Ok(())
}
