//! `POST /v1/webhooks/btcpay`: BTCPay Server's store webhook deliveries, signed as BTCPay
//! signs them (`BTCPay-Sig: sha256=…`), by hand and by the simulator, stored once each in
//! the inbox beside Stripe's events.

use std::time::Duration;

use kopilka_test_support::{TestApp, eventually, send};
use reqwest::{Method, StatusCode};
use secrecy::{ExposeSecret as _, SecretString};
use serde_json::{Value, json};

const ORDER_ID: &str = "0190a3c2-7d7e-7000-8000-000000000001";
/// When BTCPay created the hand-made deliveries (unix seconds).
const TIMESTAMP: i64 = 1_765_000_000;

fn secret(app: &TestApp) -> String {
    app.settings.btcpay.webhook_secret[0]
        .expose_secret()
        .to_owned()
}

fn store(app: &TestApp) -> String {
    app.settings.btcpay.store_id.clone().unwrap()
}

/// `body` posted to the BTCPay route with `signature` as its `BTCPay-Sig`, if any.
fn post(app: &TestApp, body: &str, signature: Option<&str>) -> reqwest::RequestBuilder {
    let request = app
        .api
        .request(Method::POST, "/v1/webhooks/btcpay")
        .header("content-type", "application/json")
        .body(body.to_owned());
    match signature {
        Some(signature) => request.header("btcpay-sig", signature),
        None => request,
    }
}

/// `body` signed with `secret`, as BTCPay signs it.
fn signed_with(app: &TestApp, secret: &str, body: &str) -> reqwest::RequestBuilder {
    post(
        app,
        body,
        Some(&kopilka_btcpay::sign(secret, body.as_bytes())),
    )
}

/// `body` signed with the app's webhook secret.
fn signed(app: &TestApp, body: &str) -> reqwest::RequestBuilder {
    signed_with(app, &secret(app), body)
}

/// A payment delivery for the app's store (a first delivery: `originalDeliveryId` is its own
/// id), whose invoice's metadata carries the buyer's email beside Kopilka's id.
fn payment_delivery(app: &TestApp, delivery_id: &str) -> Value {
    json!({
        "deliveryId": delivery_id, "webhookId": "Wh1", "originalDeliveryId": delivery_id,
        "isRedelivery": false, "type": "InvoiceReceivedPayment", "timestamp": TIMESTAMP,
        "storeId": store(app), "invoiceId": "Inv1",
        "metadata": {"orderId": ORDER_ID, "buyerEmail": "reader@example.org", "buyerName": "A Reader"},
        "afterExpiration": false, "paymentMethodId": "BTC-CHAIN",
        "payment": {"id": "tx1-0", "receivedDate": TIMESTAMP, "value": "0.00012345",
                    "fee": "0.00000100", "status": "Processing", "destination": "bcrt1qsecret"}
    })
}

/// How many BTCPay events are stored.
async fn stored(app: &TestApp) -> i64 {
    sqlx::query_scalar("SELECT count(*) FROM provider_events WHERE provider = 'btcpay'")
        .fetch_one(&app.pool)
        .await
        .unwrap()
}

/// Waits until every stored BTCPay event has been processed (recorded `ignored` for now)
/// and every processing job is done (none failed, none waits for a retry).
async fn all_processed(app: &TestApp) {
    eventually(
        "every BTCPay event processed",
        Duration::from_secs(20),
        || async {
            let waiting: i64 = sqlx::query_scalar(
                "SELECT count(*) FROM provider_events WHERE provider = 'btcpay' AND status <> 'ignored'",
            )
            .fetch_one(&app.pool)
            .await
            .unwrap();
            let jobs: i64 = sqlx::query_scalar(
                "SELECT count(*) FROM jobs WHERE kind = 'btcpay_event' AND status <> 'done'",
            )
            .fetch_one(&app.pool)
            .await
            .unwrap();
            (waiting == 0 && jobs == 0).then_some(())
        },
    )
    .await;
}

#[tokio::test]
async fn a_signed_delivery_is_stored_once_as_a_projection_without_the_buyer() {
    let app = TestApp::spawn().await;
    let body = payment_delivery(&app, "Del1").to_string();
    let answer = send(signed(&app, &body)).await;
    assert_eq!(
        answer.status,
        StatusCode::OK,
        "{}",
        String::from_utf8_lossy(&answer.body)
    );
    assert_eq!(answer.json(), json!({"received": true, "duplicate": false}));

    let row: Value = sqlx::query_scalar(
        "SELECT to_jsonb(e) - 'payload' - 'received_at' - 'updated_at' - 'processed_at'
                - 'status' - 'attempts' FROM provider_events e",
    )
    .fetch_one(&app.pool)
    .await
    .unwrap();
    assert_eq!(
        row,
        json!({"provider": "btcpay", "id": "Del1", "type": "InvoiceReceivedPayment",
               "created": TIMESTAMP, "livemode": null, "api_version": null,
               "object_id": "Inv1", "reader_id": null, "last_error": null,
               "projection_version": 1})
    );
    let payload: Value = sqlx::query_scalar("SELECT payload FROM provider_events")
        .fetch_one(&app.pool)
        .await
        .unwrap();
    assert_eq!(payload["orderId"], ORDER_ID);
    assert_eq!(payload["payment"]["value"], "0.00012345");
    assert_eq!(payload["payment"]["status"], "Processing");
    let text = payload.to_string();
    for private in [
        "buyerEmail",
        "reader@example.org",
        "A Reader",
        "bcrt1qsecret",
        "tx1-0",
        "metadata",
        "fee",
    ] {
        assert!(!text.contains(private), "{private} in {text}");
    }
    // Its job processes it without failing or retrying (invoices are applied later).
    all_processed(&app).await;
}

#[tokio::test]
async fn a_duplicate_and_a_redelivery_change_nothing() {
    let app = TestApp::spawn().await;
    let first = payment_delivery(&app, "Del1");
    let body = first.to_string();
    assert_eq!(send(signed(&app, &body)).await.json()["duplicate"], false);
    let again = send(signed(&app, &body)).await;
    assert_eq!(again.status, StatusCode::OK);
    assert_eq!(again.json(), json!({"received": true, "duplicate": true}));

    // BTCPay's redelivery: a new deliveryId, the first one's in originalDeliveryId.
    let mut redelivery = first.clone();
    redelivery["deliveryId"] = json!("Del2");
    redelivery["isRedelivery"] = json!(true);
    let answer = send(signed(&app, &redelivery.to_string())).await;
    assert_eq!(answer.status, StatusCode::OK);
    assert_eq!(answer.json(), json!({"received": true, "duplicate": true}));

    assert_eq!(stored(&app).await, 1);
    let id: String = sqlx::query_scalar("SELECT id FROM provider_events")
        .fetch_one(&app.pool)
        .await
        .unwrap();
    assert_eq!(id, "Del1");
    all_processed(&app).await;
    let runs: i32 = sqlx::query_scalar(
        "SELECT attempts FROM provider_events WHERE provider = 'btcpay' AND id = 'Del1'",
    )
    .fetch_one(&app.pool)
    .await
    .unwrap();
    assert_eq!(runs, 1, "one processing job for the three deliveries");
    let jobs: i64 = sqlx::query_scalar("SELECT count(*) FROM jobs WHERE kind = 'btcpay_event'")
        .fetch_one(&app.pool)
        .await
        .unwrap();
    assert_eq!(jobs, 1);
}

#[tokio::test]
async fn forged_missing_and_foreign_signatures_are_refused_and_nothing_is_stored() {
    let app = TestApp::spawn_with(|settings| {
        settings.server.metrics_token = Some("btcpay-metrics-token".to_owned().into());
    })
    .await;
    let body = payment_delivery(&app, "Del1").to_string();
    let tampered = body.replace("0.00012345", "1.00012345");
    let genuine = kopilka_btcpay::sign(&secret(&app), body.as_bytes());
    let cases = [
        ("missing", post(&app, &body, None)),
        ("tampered body", post(&app, &tampered, Some(&genuine))),
        (
            "wrong secret",
            signed_with(&app, "someone-elses-secret", &body),
        ),
        (
            "not sha256=",
            post(&app, &body, Some(genuine.trim_start_matches("sha256="))),
        ),
        ("nonsense", post(&app, &body, Some("sha256=zz"))),
        ("empty", post(&app, &body, Some(""))),
    ];
    for (what, request) in cases {
        let answer = send(request).await;
        assert_eq!(answer.error_code(400), "invalid_signature", "{what}");
    }
    assert_eq!(stored(&app).await, 0, "nothing refused was stored");
    let jobs: i64 = sqlx::query_scalar("SELECT count(*) FROM jobs WHERE kind = 'btcpay_event'")
        .fetch_one(&app.pool)
        .await
        .unwrap();
    assert_eq!(jobs, 0);
    // Counted for the operator (a secret that does not match shows on /metrics), not logged
    // line by line. The counter is the process's: other tests in this binary add to it.
    let metrics = String::from_utf8(
        send(
            app.api
                .request(Method::GET, "/metrics")
                .bearer_auth("btcpay-metrics-token"),
        )
        .await
        .body,
    )
    .unwrap();
    let refused: f64 = metrics
        .lines()
        .find(|l| l.starts_with("kopilka_webhooks_refused_total{provider=\"btcpay\"}"))
        .and_then(|l| l.rsplit(' ').next()?.parse().ok())
        .unwrap_or_else(|| panic!("no refusal count: {metrics}"));
    assert!(refused >= 6.0, "{refused}");
}

#[tokio::test]
async fn either_secret_verifies_while_a_secret_is_rolled() {
    let app = TestApp::spawn_with(|s| {
        s.btcpay.webhook_secret = vec![
            SecretString::from("the-old-secret"),
            SecretString::from("the-new-secret"),
        ];
    })
    .await;
    let old = payment_delivery(&app, "Del1").to_string();
    let new = payment_delivery(&app, "Del2").to_string();
    let retired = payment_delivery(&app, "Del3").to_string();
    assert_eq!(
        send(signed_with(&app, "the-old-secret", &old)).await.status,
        StatusCode::OK
    );
    assert_eq!(
        send(signed_with(&app, "the-new-secret", &new)).await.status,
        StatusCode::OK
    );
    assert_eq!(
        send(signed_with(&app, "a-retired-secret", &retired))
            .await
            .error_code(400),
        "invalid_signature"
    );
    assert_eq!(stored(&app).await, 2);
}

#[tokio::test]
async fn a_signed_body_that_is_not_a_delivery_is_refused() {
    let app = TestApp::spawn().await;
    for body in [
        "{not json",
        "[]",
        r#"{"type":"InvoiceSettled","invoiceId":"Inv1"}"#,
        r#"{"deliveryId":"","type":"InvoiceSettled"}"#,
        r#"{"deliveryId":"Del1","type":"InvoiceSettled","timestamp":"yesterday"}"#,
    ] {
        let answer = send(signed(&app, body)).await;
        assert_eq!(answer.error_code(400), "invalid_delivery", "{body}");
    }
    assert_eq!(stored(&app).await, 0);
}

#[tokio::test]
async fn another_stores_delivery_is_refused_so_btcpay_shows_it_failed() {
    let app = TestApp::spawn().await;
    let mut delivery = payment_delivery(&app, "Del1");
    delivery["storeId"] = json!("AnotherStore");
    let answer = send(signed(&app, &delivery.to_string())).await;
    assert_eq!(answer.error_code(400), "unknown_store");
    assert_eq!(stored(&app).await, 0);
}

#[tokio::test]
async fn without_a_webhook_secret_deliveries_wait_with_503() {
    let app = TestApp::spawn_with(|s| s.btcpay.webhook_secret = Vec::new()).await;
    let body = payment_delivery(&app, "Del1").to_string();
    let answer = send(signed_with(
        &app,
        "kopilka-btcpay-sim-webhook-secret",
        &body,
    ))
    .await;
    assert_eq!(answer.error_code(503), "webhook_not_configured");
    assert_eq!(stored(&app).await, 0);

    // Nor without the store (the rail off): nothing could say whose delivery it is.
    let off = TestApp::spawn_with(|s| {
        s.btcpay.url = None;
        s.btcpay.store_id = None;
        s.btcpay.api_key = None;
    })
    .await;
    let answer = send(signed(&off, &body)).await;
    assert_eq!(answer.error_code(503), "webhook_not_configured");
    assert_eq!(stored(&off).await, 0);
}

#[tokio::test]
async fn the_simulator_delivers_a_paid_invoice_and_its_redelivery_changes_nothing() {
    let app = TestApp::spawn().await;
    app.deliver_btcpay_webhooks_here().await;
    let sim = &app.btcpay.simulator;
    let created: Value = reqwest::Client::new()
        .post(format!(
            "{}/api/v1/stores/{}/invoices",
            sim.base_url(),
            sim.store_id()
        ))
        .header("authorization", format!("token {}", sim.api_key()))
        .json(&json!({"amount": "5.00", "currency": "USD",
                      "metadata": {"orderId": ORDER_ID, "buyerEmail": "reader@example.org"}}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let invoice = created["id"].as_str().expect("an invoice id").to_owned();
    app.btcpay_control(&format!("/_sim/invoices/{invoice}/pay"), &json!({}))
        .await;

    let expected = [
        "InvoiceCreated",
        "InvoiceReceivedPayment",
        "InvoiceProcessing",
        "InvoicePaymentSettled",
        "InvoiceSettled",
    ];
    let kinds = eventually(
        "the invoice's five events stored",
        Duration::from_secs(20),
        || async {
            let mut kinds: Vec<String> = sqlx::query_scalar(
                "SELECT type FROM provider_events WHERE provider = 'btcpay' AND object_id = $1",
            )
            .bind(&invoice)
            .fetch_all(&app.pool)
            .await
            .unwrap();
            kinds.sort();
            (kinds.len() == expected.len()).then_some(kinds)
        },
    )
    .await;
    let mut sorted = expected.map(str::to_owned).to_vec();
    sorted.sort();
    assert_eq!(kinds, sorted);
    let payloads: Vec<Value> =
        sqlx::query_scalar("SELECT payload FROM provider_events WHERE provider = 'btcpay'")
            .fetch_all(&app.pool)
            .await
            .unwrap();
    for payload in &payloads {
        assert_eq!(payload["orderId"], ORDER_ID, "{payload}");
        assert!(!payload.to_string().contains("reader@"), "{payload}");
    }
    all_processed(&app).await;

    // Every delivery succeeded; BTCPay's redelivery of one (a new delivery id) is a duplicate.
    let deliveries: Value = reqwest::get(format!("{}/_sim/deliveries", sim.base_url()))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let deliveries = deliveries.as_array().unwrap();
    assert_eq!(deliveries.len(), expected.len());
    assert!(
        deliveries.iter().all(|d| d["status"] == "HttpSuccess"),
        "{deliveries:?}"
    );
    let first = deliveries[0]["id"].as_str().unwrap();
    let redelivered = app
        .btcpay_control(&format!("/_sim/deliveries/{first}/redeliver"), &json!({}))
        .await;
    let redelivered = redelivered.as_str().unwrap().to_owned();
    eventually(
        "the redelivery acknowledged",
        Duration::from_secs(20),
        || async {
            let deliveries: Value = reqwest::get(format!("{}/_sim/deliveries", sim.base_url()))
                .await
                .ok()?
                .json()
                .await
                .ok()?;
            deliveries
                .as_array()?
                .iter()
                .any(|d| d["id"] == redelivered.as_str() && d["status"] == "HttpSuccess")
                .then_some(())
        },
    )
    .await;
    assert_eq!(stored(&app).await, i64::try_from(expected.len()).unwrap());
}
