use std::collections::HashSet;

use sqlx::PgPool;
use sqlx::migrate::Migrator;

use crate::StoreError;

/// The one shared schema: every file in `/migrations`, compiled into the binary.
pub static MIGRATOR: Migrator = sqlx::migrate!("../../migrations");

/// What [`migrate`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MigrationReport {
    /// Migrations applied by this run, oldest first (empty when the schema was current).
    pub applied: Vec<AppliedMigration>,
    /// How many migrations the binary knows.
    pub known: usize,
}

/// One migration applied by a run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AppliedMigration {
    /// Its timestamp version.
    pub version: i64,
    /// Its description (the file name after the version).
    pub description: String,
}

/// Applies every pending migration (under sqlx's advisory lock, so concurrent runs are
/// safe) and reports which ones ran; a second run is a no-op.
///
/// # Errors
/// [`StoreError`] when the database is unreachable or a migration fails (it is rolled back).
pub async fn migrate(pool: &PgPool) -> Result<MigrationReport, StoreError> {
    let before = applied_versions(pool).await?;
    MIGRATOR.run(pool).await?;
    let applied = MIGRATOR
        .iter()
        .filter(|m| m.migration_type.is_up_migration() && !before.contains(&m.version))
        .map(|m| AppliedMigration {
            version: m.version,
            description: m.description.to_string(),
        })
        .collect();
    Ok(MigrationReport {
        applied,
        known: MIGRATOR.iter().count(),
    })
}

async fn applied_versions(pool: &PgPool) -> Result<HashSet<i64>, StoreError> {
    let has_table: bool = sqlx::query_scalar("SELECT to_regclass('_sqlx_migrations') IS NOT NULL")
        .fetch_one(pool)
        .await?;
    if !has_table {
        return Ok(HashSet::new());
    }
    let versions: Vec<i64> =
        sqlx::query_scalar("SELECT version FROM _sqlx_migrations WHERE success")
            .fetch_all(pool)
            .await?;
    Ok(versions.into_iter().collect())
}
