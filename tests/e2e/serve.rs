use std::time::Duration;

use kopilka_test_support::{ApiClient, eventually, fresh_database};
use kopilka_tests::{Running, free_port, kopilka};
use reqwest::StatusCode;
use secrecy::ExposeSecret;

#[tokio::test]
async fn serve_answers_health_and_stops_cleanly_on_sigterm() {
    let db = fresh_database().await;
    let port = free_port();
    let mut command = kopilka(&["serve"]);
    command
        .env("KOPILKA_ENV", "test")
        .env("DATABASE_URL", db.url.expose_secret())
        .env("KOPILKA__SERVER__ADDR", format!("127.0.0.1:{port}"));
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

    let status = server.terminate(Duration::from_secs(15)).await;
    assert!(status.success(), "exit status {status:?}");
}
