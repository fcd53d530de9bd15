//! Prometheus metrics: the recorder, request counting, and `GET /metrics` — served on the
//! admin listener ([`admin_router`]), or on the public one only to the configured bearer
//! token (the counts of sign-ins, checkouts and erasures are not public).

use std::sync::OnceLock;
use std::time::Instant;

use axum::extract::Request;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};

/// The process-wide recorder (metrics are global; several apps in one test process share it).
fn handle() -> &'static PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE.get_or_init(|| {
        let recorder = PrometheusBuilder::new().build_recorder();
        let handle = recorder.handle();
        // Another recorder may already be installed (an embedding program's); then ours
        // renders what it was given directly, which is nothing, rather than failing.
        let _ = metrics::set_global_recorder(recorder);
        handle
    })
}

/// Prometheus text exposition of every metric.
pub(crate) async fn render() -> impl IntoResponse {
    (
        [(
            axum::http::header::CONTENT_TYPE,
            "text/plain; version=0.0.4",
        )],
        handle().render(),
    )
}

/// `GET /metrics` on the public listener: only with `Authorization: Bearer` and the
/// configured `server.metrics_token` (compared in constant time); 404 otherwise, as if the
/// route did not exist.
pub(crate) async fn render_to_bearer(
    axum::extract::State(token): axum::extract::State<std::sync::Arc<secrecy::SecretString>>,
    headers: axum::http::HeaderMap,
) -> Response {
    use secrecy::ExposeSecret as _;
    use subtle::ConstantTimeEq as _;
    let offered = headers
        .get(axum::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or("");
    // Digests first, so the comparison takes the same time whatever the lengths.
    let matches = {
        use sha2::Digest as _;
        let offered = sha2::Sha256::digest(offered.as_bytes());
        let expected = sha2::Sha256::digest(token.expose_secret().as_bytes());
        bool::from(offered.ct_eq(&expected))
    };
    if matches && !offered.is_empty() {
        render().await.into_response()
    } else {
        crate::AppError::NotFound.into_response()
    }
}

/// The operators' listener (`server.admin_addr`): `GET /metrics` and `GET /healthz`, with
/// nothing of the public API.
pub fn admin_router() -> axum::Router {
    axum::Router::new()
        .route("/metrics", axum::routing::get(render))
        .route("/healthz", axum::routing::get(|| async { "ok" }))
        .fallback(|| async { crate::AppError::NotFound })
}

/// Counts requests and their durations by method, route template and status.
pub(crate) async fn track(request: Request, next: Next) -> Response {
    let _ = handle();
    let started = Instant::now();
    let method = crate::layers::method_of(&request).to_owned();
    let route = crate::layers::route_of(&request).to_owned();
    let response = next.run(request).await;
    let labels = [
        ("method", method),
        ("route", route),
        ("status", response.status().as_u16().to_string()),
    ];
    metrics::counter!("http_requests_total", &labels).increment(1);
    metrics::histogram!("http_request_duration_seconds", &labels)
        .record(started.elapsed().as_secs_f64());
    response
}
