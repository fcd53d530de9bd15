//! Liveness and readiness, for load balancers and orchestrators.

use std::time::Duration;

use axum::Json;
use axum::extract::State;
use serde::{Deserialize, Serialize};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::{AppError, AppState, ErrorBody};

/// How long readiness waits for Postgres before answering 503.
const READINESS_TIMEOUT: Duration = Duration::from_secs(2);

pub(crate) fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(healthz))
        .routes(routes!(readyz))
}

/// The answer of `/healthz` and `/readyz`.
#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Health {
    /// `ok` when alive (and, for readiness, when Postgres answers).
    pub status: String,
}

/// Liveness: the process is up and serving. Never touches Postgres.
#[utoipa::path(get, path = "/healthz", tag = "health",
    responses((status = 200, description = "The process is alive", body = Health)))]
async fn healthz() -> Json<Health> {
    Json(Health {
        status: "ok".into(),
    })
}

/// Readiness: Postgres answers. 503 while it is unreachable; recovers by itself.
#[utoipa::path(get, path = "/readyz", tag = "health",
    responses(
        (status = 200, description = "Ready to serve", body = Health),
        (status = 503, description = "Postgres is unreachable", body = ErrorBody)
    ))]
async fn readyz(State(state): State<AppState>) -> Result<Json<Health>, AppError> {
    match tokio::time::timeout(READINESS_TIMEOUT, kopilka_store::ping(&state.pool)).await {
        Ok(Ok(())) => Ok(Json(Health {
            status: "ok".into(),
        })),
        Ok(Err(err)) => {
            tracing::warn!(error = %err, "readiness: database unreachable");
            Err(AppError::Unavailable)
        }
        Err(_elapsed) => Err(AppError::Unavailable),
    }
}
