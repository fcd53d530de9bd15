//! Experiments in Postgres: create (validated), list, show, and the lifecycle
//! `draft` → `running` ⇄ `paused` → `stopped` (stopped is final). Each change is announced
//! on [`CHANNEL`] in its transaction.

use kopilka_config::OfferSettings;
use kopilka_store::PgPool;
use serde::Serialize;
use time::OffsetDateTime;

use crate::ExperimentError;
use crate::spec::{ExperimentSpec, Refusal};

/// The channel each change is announced on (`NOTIFY kopilka_experiments`, payload the name).
pub const CHANNEL: &str = "kopilka_experiments";

/// Where an experiment is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    /// Created, never started.
    Draft,
    /// Serving its variants.
    Running,
    /// Serving nothing for now; may start again.
    Paused,
    /// Ended for good (its figures stay for the report).
    Stopped,
}

impl Status {
    /// Its name in `experiments.status`.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Draft => "draft",
            Self::Running => "running",
            Self::Paused => "paused",
            Self::Stopped => "stopped",
        }
    }

    fn parse(text: &str) -> Option<Self> {
        [Self::Draft, Self::Running, Self::Paused, Self::Stopped]
            .into_iter()
            .find(|s| s.as_str() == text)
    }

    /// Whether an experiment in this status may move to `next`.
    #[must_use]
    pub fn may_become(self, next: Self) -> bool {
        matches!(
            (self, next),
            (Self::Draft | Self::Paused, Self::Running)
                | (Self::Running, Self::Paused)
                | (Self::Draft | Self::Running | Self::Paused, Self::Stopped)
        )
    }
}

/// An experiment as stored.
#[derive(Debug, Clone, Serialize)]
pub struct ExperimentRow {
    /// Its id.
    pub id: uuid::Uuid,
    /// Its name.
    pub name: String,
    /// Where it is in its life.
    pub status: Status,
    /// The spec, as validated.
    pub spec: ExperimentSpec,
    /// When it was created.
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
    /// When it first started.
    #[serde(with = "time::serde::rfc3339::option")]
    pub started_at: Option<OffsetDateTime>,
    /// When it stopped.
    #[serde(with = "time::serde::rfc3339::option")]
    pub stopped_at: Option<OffsetDateTime>,
}

type Row = (
    uuid::Uuid,
    String,
    String,
    serde_json::Value,
    OffsetDateTime,
    Option<OffsetDateTime>,
    Option<OffsetDateTime>,
);

const COLUMNS: &str = "id, name, status, spec, created_at, started_at, stopped_at";

fn row(
    (id, name, status, spec, created_at, started_at, stopped_at): Row,
) -> Result<ExperimentRow, ExperimentError> {
    let refused = |what: &str| {
        ExperimentError::Refused(Refusal {
            code: "corrupt_experiment",
            message: format!("experiment {name:?}: its stored {what} does not read"),
        })
    };
    Ok(ExperimentRow {
        status: Status::parse(&status).ok_or_else(|| refused("status"))?,
        spec: serde_json::from_value(spec).map_err(|_| refused("spec"))?,
        id,
        name: name.clone(),
        created_at,
        started_at,
        stopped_at,
    })
}

/// Creates `spec` as a draft, after validating it against `offer`.
///
/// # Errors
/// [`ExperimentError::Refused`] for an invalid spec or a name already taken; storage errors.
pub async fn create(
    pool: &PgPool,
    offer: &OfferSettings,
    spec: &ExperimentSpec,
) -> Result<ExperimentRow, ExperimentError> {
    spec.validate(offer).map_err(ExperimentError::Refused)?;
    let mut seed = [0_u8; 16];
    getrandom::fill(&mut seed).expect("the operating system's random source");
    let mut tx = pool.begin().await?;
    let inserted: Option<Row> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "INSERT INTO experiments (id, name, spec, seed) VALUES ($1, $2, $3, $4)
         ON CONFLICT (name) DO NOTHING RETURNING {COLUMNS}"
    )))
    .bind(uuid::Uuid::now_v7())
    .bind(&spec.name)
    .bind(serde_json::to_value(spec).unwrap_or_default())
    .bind(seed.as_slice())
    .fetch_optional(&mut *tx)
    .await?;
    let Some(inserted) = inserted else {
        return Err(ExperimentError::Refused(Refusal {
            code: "name_taken",
            message: format!("an experiment is already called {:?}", spec.name),
        }));
    };
    announce(&mut tx, &spec.name).await?;
    tx.commit().await.map_err(kopilka_store::StoreError::from)?;
    tracing::info!(experiment = %spec.name, "experiment created");
    row(inserted)
}

async fn announce(conn: &mut sqlx::PgConnection, name: &str) -> Result<(), ExperimentError> {
    sqlx::query("SELECT pg_notify($1, $2)")
        .bind(CHANNEL)
        .bind(name)
        .execute(conn)
        .await?;
    Ok(())
}

/// Every experiment, newest first.
///
/// # Errors
/// Storage errors.
pub async fn list(pool: &PgPool) -> Result<Vec<ExperimentRow>, ExperimentError> {
    let rows: Vec<Row> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT {COLUMNS} FROM experiments ORDER BY created_at DESC, name"
    )))
    .fetch_all(pool)
    .await?;
    rows.into_iter().map(row).collect()
}

/// The experiment called `name`.
///
/// # Errors
/// [`ExperimentError::NotFound`]; storage errors.
pub async fn show(pool: &PgPool, name: &str) -> Result<ExperimentRow, ExperimentError> {
    let found: Option<Row> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT {COLUMNS} FROM experiments WHERE name = $1"
    )))
    .bind(name)
    .fetch_optional(pool)
    .await?;
    found
        .map(row)
        .transpose()?
        .ok_or_else(|| ExperimentError::NotFound(name.to_owned()))
}

/// Moves experiment `name` to `next` (start, pause or stop), when its lifecycle allows it;
/// starting one checks its spec against today's offer again.
///
/// # Errors
/// [`ExperimentError::NotFound`]; [`ExperimentError::Refused`] `invalid_transition` (e.g.
/// starting a stopped one) or a spec the offer no longer allows; storage errors.
pub async fn transition(
    pool: &PgPool,
    offer: &OfferSettings,
    name: &str,
    next: Status,
) -> Result<ExperimentRow, ExperimentError> {
    let mut tx = pool.begin().await?;
    let found: Option<Row> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT {COLUMNS} FROM experiments WHERE name = $1 FOR UPDATE"
    )))
    .bind(name)
    .fetch_optional(&mut *tx)
    .await?;
    let current = found
        .map(row)
        .transpose()?
        .ok_or_else(|| ExperimentError::NotFound(name.to_owned()))?;
    if !current.status.may_become(next) {
        return Err(ExperimentError::Refused(Refusal {
            code: "invalid_transition",
            message: format!(
                "experiment {name:?} is {}: it cannot become {}",
                current.status.as_str(),
                next.as_str()
            ),
        }));
    }
    if next == Status::Running {
        // The offer may have changed since it was created (a minimum raised).
        current
            .spec
            .validate(offer)
            .map_err(ExperimentError::Refused)?;
    }
    let updated: Row = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "UPDATE experiments SET status = $2,
             started_at = CASE WHEN $2 = 'running' THEN coalesce(started_at, now()) ELSE started_at END,
             stopped_at = CASE WHEN $2 = 'stopped' THEN now() ELSE stopped_at END
         WHERE name = $1 RETURNING {COLUMNS}"
    )))
    .bind(name)
    .bind(next.as_str())
    .fetch_one(&mut *tx)
    .await?;
    announce(&mut tx, name).await?;
    tx.commit().await.map_err(kopilka_store::StoreError::from)?;
    tracing::info!(experiment = %name, status = next.as_str(), "experiment changed");
    row(updated)
}
