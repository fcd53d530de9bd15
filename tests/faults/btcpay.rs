//! The second rail under faults: BTCPay Server's deliveries forged, repeated and racing
//! across two servers; BTCPay down when a reader starts a crypto checkout and while the
//! worker reads the invoices its deliveries name.

use std::time::Duration;

use kopilka_test_support::{ApiResponse, eventually, send};
use reqwest::Method;
use serde_json::{Value, json};

use crate::stack::{BTCPAY_STORE, BTCPAY_WEBHOOK_SECRET, Stack};

/// A crypto checkout of $10 through server `index` (with an `Idempotency-Key`, if given).
async fn crypto_checkout(stack: &Stack, index: usize, key: Option<&str>) -> ApiResponse {
    let mut request = stack.apis[index]
        .request(Method::POST, "/v1/checkout")
        .json(
            &json!({"interval": "once", "amount_minor": 1_000, "currency": "usd",
                      "rail": "crypto"}),
        );
    if let Some(key) = key {
        request = request.header("idempotency-key", key);
    }
    send(request).await
}

fn invoice_of(answer: &ApiResponse) -> String {
    answer.json()["checkout_url"]
        .as_str()
        .and_then(|url| url.rsplit('/').next())
        .expect("an invoice page")
        .to_owned()
}

/// `body` posted to server `index`'s BTCPay route with `signature` (if any).
async fn deliver(stack: &Stack, index: usize, body: &str, signature: Option<&str>) -> ApiResponse {
    let mut request = stack.apis[index]
        .request(Method::POST, "/v1/webhooks/btcpay")
        .header("content-type", "application/json")
        .body(body.to_owned());
    if let Some(signature) = signature {
        request = request.header("btcpay-sig", signature);
    }
    send(request).await
}

async fn stored_btcpay_events(stack: &Stack) -> i64 {
    stack
        .count("SELECT count(*) FROM provider_events WHERE provider = 'btcpay'")
        .await
}

pub async fn forged_duplicated_and_racing_deliveries_on_two_servers_book_once() {
    let stack = Stack::options()
        .servers(2)
        .worker_in_serve(true)
        .btcpay()
        .start()
        .await;
    let forged =
        json!({"deliveryId": "Forged1", "webhookId": "Wh1", "originalDeliveryId": "Forged1",
                        "isRedelivery": false, "type": "InvoiceSettled", "timestamp": 1_765_000_000,
                        "storeId": BTCPAY_STORE, "invoiceId": "Inv1",
                        "metadata": {"orderId": "0190a3c2-7d7e-7000-8000-000000000001"},
                        "manuallyMarked": true, "overPaid": false})
        .to_string();
    let other = forged.replace("Inv1", "Inv2");
    for (signature, what) in [
        (None, "missing"),
        (Some("sha256=00".to_owned()), "malformed"),
        (
            Some(kopilka_btcpay::sign("another-secret", forged.as_bytes())),
            "another secret",
        ),
        (
            Some(kopilka_btcpay::sign(
                BTCPAY_WEBHOOK_SECRET,
                other.as_bytes(),
            )),
            "tampered body",
        ),
    ] {
        for index in 0..2 {
            let answer = deliver(&stack, index, &forged, signature.as_deref()).await;
            assert_eq!(answer.error_code(400), "invalid_signature", "{what}");
        }
    }
    assert_eq!(stored_btcpay_events(&stack).await, 0);

    // BTCPay's deliveries go nowhere (the test sends them itself): recorded, not received.
    stack
        .btcpay_control(
            "/_sim/webhook",
            &json!({"url": "http://127.0.0.1:9/nowhere", "secret": BTCPAY_WEBHOOK_SECRET,
                    "automaticRedelivery": false}),
        )
        .await;
    let started = crypto_checkout(&stack, 0, None).await;
    assert_eq!(started.status.as_u16(), 201);
    let contribution = started.json()["contribution_id"]
        .as_str()
        .unwrap()
        .to_owned();
    let invoice = invoice_of(&started);
    stack
        .btcpay_control(&format!("/_sim/invoices/{invoice}/pay"), &json!({}))
        .await;
    let base = stack.btcpay_base.clone().unwrap();
    let deliveries: Vec<Value> = reqwest::get(format!("{base}/_sim/deliveries"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let bodies: Vec<String> = deliveries
        .iter()
        .map(|d| d["body"].to_string())
        .filter(|body| body.contains(&invoice))
        .collect();
    assert_eq!(bodies.len(), 5, "the invoice's five events: {deliveries:?}");

    // Every delivery five times at once, split across the two servers.
    let mut sends = Vec::new();
    for body in &bodies {
        let signature = kopilka_btcpay::sign(BTCPAY_WEBHOOK_SECRET, body.as_bytes());
        for copy in 0..5 {
            let (stack, body, signature) = (&stack, body.clone(), signature.clone());
            sends.push(async move { deliver(stack, copy % 2, &body, Some(&signature)).await });
        }
    }
    let answers = futures_util::future::join_all(sends).await;
    assert!(
        answers.iter().all(|a| a.status.is_success()),
        "{:?}",
        answers.iter().map(|a| a.status).collect::<Vec<_>>()
    );
    let duplicates = answers
        .iter()
        .filter(|a| a.json()["duplicate"] == json!(true))
        .count();
    assert_eq!(duplicates, 20, "four of each five are duplicates");
    eventually("every delivery applied", Duration::from_secs(60), || async {
        let waiting = stack
            .count("SELECT count(*) FROM provider_events WHERE provider = 'btcpay' AND status NOT IN ('processed', 'ignored')")
            .await;
        (waiting == 0).then_some(())
    })
    .await;
    assert_eq!(stored_btcpay_events(&stack).await, 5);
    assert_eq!(
        stack
            .count("SELECT count(*) FROM jobs WHERE kind = 'btcpay_event'")
            .await,
        5
    );
    assert_eq!(
        stack
            .count(&format!(
                "SELECT count(*) FROM ledger_entries WHERE provider = 'btcpay' AND provider_id = '{invoice}'"
            ))
            .await,
        1
    );
    assert_eq!(
        stack
            .count(&format!(
                "SELECT count(*) FROM contributions WHERE id = '{contribution}' AND status = 'paid'"
            ))
            .await,
        1
    );
    stack.finish().await;
}

pub async fn btcpay_down_at_checkout_and_in_the_worker_loses_nothing_and_books_once() {
    let mut stack = Stack::options()
        .worker_in_serve(false)
        .btcpay()
        .start()
        .await;
    let url = format!("{}/v1/webhooks/btcpay", stack.bases[0]);
    stack
        .btcpay_control(
            "/_sim/webhook",
            &json!({"url": url, "secret": BTCPAY_WEBHOOK_SECRET}),
        )
        .await;

    // BTCPay down when the reader presses Continue: a clear 503, nothing at BTCPay.
    stack
        .btcpay_control("/_sim/faults", &json!({"count": 1, "status": 503}))
        .await;
    let down = crypto_checkout(&stack, 0, Some("faults-crypto-1")).await;
    assert_eq!(down.error_code(503), "payment_provider_unavailable");
    assert!(down.headers.contains_key("retry-after"));
    assert_eq!(
        stack
            .count("SELECT count(*) FROM contributions WHERE btcpay_invoice_id IS NOT NULL")
            .await,
        0
    );
    // The retry with the same key: the same contribution, one invoice.
    let again = crypto_checkout(&stack, 0, Some("faults-crypto-1")).await;
    assert_eq!(again.status.as_u16(), 201, "{:?}", again.json());
    let invoice = invoice_of(&again);
    assert_eq!(stack.count("SELECT count(*) FROM contributions").await, 1);
    let base = stack.btcpay_base.clone().unwrap();
    let listed: Vec<Value> = reqwest::Client::new()
        .get(format!("{base}/api/v1/stores/{BTCPAY_STORE}/invoices"))
        .header(
            "authorization",
            format!("token {}", crate::stack::BTCPAY_API_KEY),
        )
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(listed.len(), 1, "one invoice at BTCPay");

    // Paid; its deliveries are stored; BTCPay is down when the worker reads the invoice.
    stack
        .btcpay_control(&format!("/_sim/invoices/{invoice}/pay"), &json!({}))
        .await;
    eventually("the deliveries stored", Duration::from_secs(30), || async {
        (stored_btcpay_events(&stack).await == 5).then_some(())
    })
    .await;
    stack
        .btcpay_control("/_sim/faults", &json!({"count": 3, "status": 502}))
        .await;
    let first = stack.run(&["worker", "--once"]).await;
    assert!(first.status.success(), "{}", first.stderr);
    let failed_for_good = stack
        .count("SELECT count(*) FROM jobs WHERE kind = 'btcpay_event' AND status = 'failed'")
        .await;
    assert_eq!(
        failed_for_good, 0,
        "an outage is retried, never given up at once"
    );
    let waiting = stack
        .count("SELECT count(*) FROM jobs WHERE kind = 'btcpay_event' AND status = 'queued'")
        .await;
    assert!(
        waiting > 0,
        "the outage met the worker: some jobs wait for a retry"
    );
    // Time passes; the retries find BTCPay back.
    stack.work_through(30).await;
    assert_eq!(
        stack
            .count("SELECT count(*) FROM provider_events WHERE provider = 'btcpay' AND status <> 'processed'")
            .await,
        0
    );
    assert_eq!(
        stack
            .count(&format!(
                "SELECT count(*) FROM ledger_entries WHERE provider = 'btcpay' AND provider_id = '{invoice}'"
            ))
            .await,
        1
    );
    assert_eq!(
        stack
            .count("SELECT count(*) FROM contributions WHERE status = 'paid'")
            .await,
        1
    );
    stack.finish().await;
}
