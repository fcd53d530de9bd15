use std::time::Duration;

use kopilka_test_support::{ApiClient, eventually, fresh_database};
use kopilka_tests::{Running, free_port, kopilka};
use reqwest::StatusCode;
use secrecy::ExposeSecret;

#[tokio::test]
async fn serve_answers_health_and_stops_cleanly_on_sigterm() {
    let db = fresh_database().await;
    let port = free_port();
    let admin_port = free_port();
    let mut command = kopilka(&["serve"]);
    command
        .env("KOPILKA_ENV", "test")
        .env("DATABASE_URL", db.url.expose_secret())
        .env("KOPILKA__SERVER__ADDR", format!("127.0.0.1:{port}"))
        .env(
            "KOPILKA__SERVER__ADMIN_ADDR",
            format!("127.0.0.1:{admin_port}"),
        );
    let server = Running::start(command);
    let api = ApiClient::new(format!("http://127.0.0.1:{port}"));

    eventually("the server to listen", Duration::from_secs(30), || async {
        let response = api
            .request(reqwest::Method::GET, "/healthz")
            .send()
            .await
            .ok()?;
        (response.status() == StatusCode::OK).then_some(())
    })
    .await;
    assert_eq!(api.readyz().await.status, StatusCode::OK);
    assert_eq!(api.get("/nope").await.error_code(404), "not_found");
    // Metrics are on the admin listener only, not on the public API.
    assert_eq!(api.get("/metrics").await.error_code(404), "not_found");
    let admin = ApiClient::new(format!("http://127.0.0.1:{admin_port}"));
    let metrics = admin.get("/metrics").await;
    assert_eq!(metrics.status, StatusCode::OK);
    assert!(
        String::from_utf8_lossy(&metrics.body).contains("http_requests_total"),
        "the public listener's requests are counted"
    );
    assert_eq!(admin.get("/v1/offer").await.status, StatusCode::NOT_FOUND);

    let status = server.terminate(Duration::from_secs(15)).await;
    assert!(status.success(), "exit status {status:?}");
}
