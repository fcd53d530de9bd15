use std::time::Duration;

use kopilka_test_support::{ApiClient, eventually, fresh_database, send};
use kopilka_tests::{Running, free_port, kopilka, run};
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

#[tokio::test]
async fn an_event_stored_before_a_crash_is_applied_by_the_worker_afterwards() {
    let db = fresh_database().await;
    let contribution = uuid::Uuid::now_v7();
    sqlx::query("INSERT INTO contributions (id, interval, amount_minor, currency) VALUES ($1, 'once', 1200, 'eur')")
        .bind(contribution)
        .execute(&db.pool)
        .await
        .unwrap();
    let port = free_port();
    let secret = "whsec_crash_test";
    let mut command = kopilka(&["serve"]);
    command
        .env("KOPILKA_ENV", "test")
        .env("DATABASE_URL", db.url.expose_secret())
        .env("KOPILKA__SERVER__ADDR", format!("127.0.0.1:{port}"))
        .env("KOPILKA__STRIPE__WEBHOOK_SECRET", secret);
    let server = Running::start(command);
    let api = ApiClient::new(format!("http://127.0.0.1:{port}"));
    eventually("the server to listen", Duration::from_secs(30), || async {
        api.request(reqwest::Method::GET, "/healthz")
            .send()
            .await
            .ok()
            .map(|_| ())
    })
    .await;

    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    let body = serde_json::json!({"id": "evt_before_crash", "object": "event", "type": "checkout.session.completed",
        "created": now, "livemode": false, "data": {"object": {"id": "cs_crash", "object": "checkout.session",
        "client_reference_id": contribution.to_string(), "payment_status": "paid", "payment_intent": "pi_crash",
        "amount_total": 1200, "currency": "eur"}}})
    .to_string();
    let stored = send(
        api.request(reqwest::Method::POST, "/v1/webhooks/stripe")
            .header(
                "stripe-signature",
                kopilka_stripe::sign(secret, now, body.as_bytes()),
            )
            .body(body),
    )
    .await;
    assert_eq!(
        stored.status,
        StatusCode::OK,
        "{}",
        String::from_utf8_lossy(&stored.body)
    );
    // serve runs no worker by default: the event waits, durable, when the server dies.
    server.kill().await;
    let status: String = sqlx::query_scalar("SELECT status FROM contributions WHERE id = $1")
        .bind(contribution)
        .fetch_one(&db.pool)
        .await
        .unwrap();
    assert_eq!(status, "pending");

    let mut worker = kopilka(&["worker", "--once"]);
    worker
        .env("KOPILKA_ENV", "test")
        .env("DATABASE_URL", db.url.expose_secret());
    let out = run(worker).await;
    assert!(out.status.success(), "{}", out.stderr);
    assert!(out.stdout.contains("1 done"), "{}", out.stdout);
    let status: String = sqlx::query_scalar("SELECT status FROM contributions WHERE id = $1")
        .bind(contribution)
        .fetch_one(&db.pool)
        .await
        .unwrap();
    assert_eq!(status, "paid");
    let ledger: i64 = sqlx::query_scalar("SELECT sum(amount_minor)::bigint FROM ledger_entries")
        .fetch_one(&db.pool)
        .await
        .unwrap();
    assert_eq!(ledger, 1200);
}
