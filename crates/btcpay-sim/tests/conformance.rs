//! The simulator and the client held to BTCPay's own OpenAPI documents (`fixtures/`): every
//! answer the simulator gives, every request the `btcpay` client sends and every webhook
//! body delivered is validated against the documented schema; and each of the hosted page's
//! actions produces the statuses and event sequence BTCPay does.

mod support;

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::http::HeaderMap;
use kopilka_btcpay::{
    AdditionalStatus, BtcpayClient, InvoiceQuery, InvoiceStatus, NewInvoice, WebhookVerifier,
};
use kopilka_btcpay_sim::{SimOptions, Spawned};
use kopilka_domain::{Currency, Email, Money};
use secrecy::SecretString;
use serde_json::{Value, json};
use support::Spec;

const SECRET: &str = "conformance-secret";

/// What a receiver got: each delivery's `BTCPay-Sig` and body.
type Received = Arc<Mutex<Vec<(Option<String>, Vec<u8>)>>>;

/// A webhook receiver: every delivery's `BTCPay-Sig` and body, answering `fail_first`
/// deliveries with a 500 first.
#[derive(Clone, Default)]
struct Receiver {
    got: Received,
    fail_first: Arc<Mutex<u32>>,
}

impl Receiver {
    async fn spawn(fail_first: u32) -> (Self, String) {
        let receiver = Self::default();
        *receiver.fail_first.lock().unwrap() = fail_first;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let app = axum::Router::new()
            .route(
                "/hook",
                axum::routing::post(
                    |axum::extract::State(r): axum::extract::State<Self>,
                     headers: HeaderMap,
                     body: axum::body::Bytes| async move {
                        let signature = headers
                            .get("btcpay-sig")
                            .and_then(|v| v.to_str().ok())
                            .map(str::to_owned);
                        r.got.lock().unwrap().push((signature, body.to_vec()));
                        let mut fail = r.fail_first.lock().unwrap();
                        if *fail > 0 {
                            *fail -= 1;
                            axum::http::StatusCode::INTERNAL_SERVER_ERROR
                        } else {
                            axum::http::StatusCode::OK
                        }
                    },
                ),
            )
            .with_state(receiver.clone());
        tokio::spawn(async move { axum::serve(listener, app).await });
        (receiver, format!("http://{addr}/hook"))
    }

    fn bodies(&self) -> Vec<Value> {
        self.got
            .lock()
            .unwrap()
            .iter()
            .map(|(_, body)| serde_json::from_slice(body).unwrap())
            .collect()
    }

    /// Waits until `count` deliveries arrived (or fails after ten seconds).
    async fn wait_for(&self, count: usize) -> Vec<Value> {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        loop {
            let bodies = self.bodies();
            if bodies.len() >= count {
                return bodies;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "only {} of {count} deliveries arrived: {bodies:#?}",
                bodies.len()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

async fn simulator(webhook_url: Option<String>) -> Spawned {
    kopilka_btcpay_sim::spawn(
        "127.0.0.1:0".parse::<SocketAddr>().unwrap(),
        SimOptions {
            webhook_url,
            webhook_secret: SECRET.into(),
            redelivery_delays: vec![Duration::from_millis(50); 3],
            ..SimOptions::default()
        },
    )
    .await
    .unwrap()
}

fn client(sim: &Spawned) -> BtcpayClient {
    BtcpayClient::new(
        sim.simulator.base_url().parse().unwrap(),
        sim.simulator.store_id().to_owned(),
        SecretString::from(sim.simulator.api_key().to_owned()),
        Duration::from_secs(5),
    )
}

fn usd(minor: i64) -> Money {
    Money::new(minor, "USD".parse::<Currency>().unwrap())
}

/// Calls the simulator as BTCPay's documents describe and validates the answer.
struct Caller {
    http: reqwest::Client,
    base: String,
    key: String,
    spec: Spec,
    errors: Vec<String>,
}

impl Caller {
    fn new(sim: &Spawned) -> Self {
        Self {
            http: reqwest::Client::new(),
            base: sim.simulator.base_url(),
            key: sim.simulator.api_key().to_owned(),
            spec: Spec::load(),
            errors: Vec::new(),
        }
    }

    async fn call(&mut self, method: &str, path: &str, body: Option<Value>) -> (u16, Value) {
        self.call_as(method, path, body, Some(&self.key.clone()))
            .await
    }

    async fn call_as(
        &mut self,
        method: &str,
        path: &str,
        body: Option<Value>,
        key: Option<&str>,
    ) -> (u16, Value) {
        let mut request = self
            .http
            .request(method.parse().unwrap(), format!("{}{path}", self.base));
        if let Some(key) = key {
            request = request.header("authorization", format!("token {key}"));
        }
        if let Some(body) = body {
            request = request
                .header("content-type", "application/json")
                .body(body.to_string());
        }
        let response = request.send().await.unwrap();
        let status = response.status().as_u16();
        let text = response.text().await.unwrap();
        let value: Value = if text.is_empty() {
            Value::Null
        } else {
            serde_json::from_str(&text).unwrap()
        };
        let bare = path.split('?').next().unwrap();
        if !(value.is_null() && status == 200) {
            self.errors
                .extend(self.spec.check_response(method, bare, status, &value));
        }
        (status, value)
    }

    fn assert_clean(&self) {
        assert!(self.errors.is_empty(), "{:#?}", self.errors);
    }
}

fn kinds_of(bodies: &[Value], invoice_id: &str) -> Vec<String> {
    bodies
        .iter()
        .filter(|b| b["invoiceId"] == invoice_id && b["isRedelivery"] == false)
        .map(|b| b["type"].as_str().unwrap().to_owned())
        .collect()
}

#[tokio::test]
async fn every_request_the_client_sends_conforms_and_email_goes_only_when_given() {
    let sim = simulator(None).await;
    let client = client(&sim);
    let email = Email::parse("reader@example.org").unwrap();
    let without = client
        .create_invoice(&NewInvoice {
            order_id: "contribution-1",
            amount: usd(1_000),
            buyer_email: None,
            redirect_url: Some("https://news.example.org/thanks?c=contribution-1"),
            expiration_minutes: Some(30),
            redirect_automatically: Some(true),
        })
        .await
        .unwrap();
    assert_eq!(without.amount, usd(1_000));
    assert_eq!(without.status, InvoiceStatus::New);
    assert_eq!(without.order_id.as_deref(), Some("contribution-1"));
    assert_eq!(without.expiration_time - without.created_time, 30 * 60);
    client
        .create_invoice(&NewInvoice {
            order_id: "contribution-2",
            amount: Money::new(500, "JPY".parse().unwrap()),
            buyer_email: Some(&email),
            redirect_url: None,
            expiration_minutes: None,
            redirect_automatically: None,
        })
        .await
        .unwrap();
    let got = client.invoice(&without.id).await.unwrap();
    assert_eq!(got, without);
    let listed = client
        .invoices(&InvoiceQuery {
            order_ids: vec!["contribution-1".into(), "contribution-2".into()],
            statuses: vec![InvoiceStatus::New, InvoiceStatus::Settled],
            start_date: Some(without.created_time - 10),
            end_date: Some(without.created_time + 10),
            skip: Some(0),
            take: Some(10),
        })
        .await
        .unwrap();
    assert_eq!(listed.len(), 2);
    let methods = client.payment_methods(&without.id).await.unwrap();
    assert_eq!(methods[0].currency, "BTC");
    assert_eq!(methods[0].rate, "60000.00");
    // $10.00 at $60,000.00 per bitcoin, rounded up to the satoshi.
    assert_eq!(methods[0].amount, "0.00016667");

    let spec = Spec::load();
    let requests = sim.simulator.requests();
    assert_eq!(requests.len(), 5);
    let mut errors = Vec::new();
    for request in &requests {
        errors.extend(spec.check_request(
            &request.method,
            &request.path,
            request.query.as_deref(),
            &request.body,
        ));
    }
    assert!(errors.is_empty(), "{errors:#?}");
    let first: Value = serde_json::from_slice(&requests[0].body).unwrap();
    assert_eq!(
        first,
        json!({
            "amount": "10.00",
            "currency": "USD",
            "metadata": { "orderId": "contribution-1" },
            "checkout": {
                "redirectURL": "https://news.example.org/thanks?c=contribution-1",
                "expirationMinutes": 30,
                "redirectAutomatically": true,
            },
        })
    );
    let second: Value = serde_json::from_slice(&requests[1].body).unwrap();
    assert_eq!(second["amount"], "500");
    assert_eq!(second["metadata"]["buyerEmail"], "reader@example.org");
    assert_eq!(second["checkout"], json!({}));
}

#[tokio::test]
async fn the_client_tells_refusals_from_unavailability() {
    let sim = simulator(None).await;
    let client = client(&sim);
    let missing = client.invoice("NoSuchInvoice").await.unwrap_err();
    assert_eq!(missing.code(), Some("invoice-not-found"));
    assert!(!missing.is_unavailable());
    let wrong_key = BtcpayClient::new(
        sim.simulator.base_url().parse().unwrap(),
        sim.simulator.store_id().to_owned(),
        SecretString::from("wrong"),
        Duration::from_secs(5),
    );
    assert_eq!(
        wrong_key.invoice("x").await.unwrap_err().code(),
        Some("unauthenticated")
    );
    let nobody = BtcpayClient::new(
        "http://127.0.0.1:9/".parse().unwrap(),
        "store".into(),
        SecretString::from("k"),
        Duration::from_secs(2),
    );
    assert!(nobody.invoice("x").await.unwrap_err().is_unavailable());
}

#[tokio::test]
async fn every_answer_and_delivery_conforms_and_each_action_emits_btcpays_sequence() {
    let (receiver, url) = Receiver::spawn(0).await;
    let sim = simulator(Some(url)).await;
    let mut caller = Caller::new(&sim);
    let store = sim.simulator.store_id().to_owned();
    let invoices = format!("/api/v1/stores/{store}/invoices");

    let mut expected: Vec<(String, Vec<&str>, &str, &str)> = Vec::new();
    for (action, status, additional, kinds) in [
        (
            "pay",
            "Settled",
            "None",
            vec![
                "InvoiceCreated",
                "InvoiceReceivedPayment",
                "InvoiceProcessing",
                "InvoicePaymentSettled",
                "InvoiceSettled",
            ],
        ),
        (
            "pay-partly",
            "New",
            "PaidPartial",
            vec![
                "InvoiceCreated",
                "InvoiceReceivedPayment",
                "InvoicePaymentSettled",
            ],
        ),
        (
            "overpay",
            "Settled",
            "PaidOver",
            vec![
                "InvoiceCreated",
                "InvoiceReceivedPayment",
                "InvoiceProcessing",
                "InvoicePaymentSettled",
                "InvoiceSettled",
            ],
        ),
        (
            "expire",
            "Expired",
            "None",
            vec!["InvoiceCreated", "InvoiceExpired"],
        ),
        (
            "pay-late",
            "Expired",
            "PaidLate",
            vec![
                "InvoiceCreated",
                "InvoiceExpired",
                "InvoiceReceivedPayment",
                "InvoicePaymentSettled",
            ],
        ),
        (
            "invalid",
            "Invalid",
            "Marked",
            vec!["InvoiceCreated", "InvoiceInvalid"],
        ),
    ] {
        let (code, created) = caller
            .call(
                "POST",
                &invoices,
                Some(json!({
                    "amount": "12.34",
                    "currency": "EUR",
                    "metadata": { "orderId": format!("order-{action}") },
                    "checkout": { "expirationMinutes": 15, "redirectURL": "https://news.example.org/back" },
                })),
            )
            .await;
        assert_eq!(code, 200, "{created}");
        let id = created["id"].as_str().unwrap().to_owned();
        let answer = reqwest::Client::new()
            .post(format!(
                "{}/_sim/invoices/{id}/{action}",
                sim.simulator.base_url()
            ))
            .send()
            .await
            .unwrap();
        assert_eq!(answer.status(), 200);
        let (_, invoice) = caller
            .call("GET", &format!("/api/v1/invoices/{id}"), None)
            .await;
        assert_eq!(invoice["status"], status, "{action}");
        assert_eq!(invoice["additionalStatus"], additional, "{action}");
        caller
            .call(
                "GET",
                &format!("/api/v1/invoices/{id}/payment-methods"),
                None,
            )
            .await;
        expected.push((id, kinds, status, additional));
    }
    // Paid in full but unconfirmed: Processing until the confirmation.
    let (_, created) = caller
        .call(
            "POST",
            &invoices,
            Some(json!({ "amount": "3", "currency": "GBP", "metadata": { "orderId": "order-slow" } })),
        )
        .await;
    let slow = created["id"].as_str().unwrap().to_owned();
    let control = |action: &str| {
        reqwest::Client::new()
            .post(format!(
                "{}/_sim/invoices/{slow}/{action}",
                sim.simulator.base_url()
            ))
            .send()
    };
    assert_eq!(control("pay-unconfirmed").await.unwrap().status(), 200);
    let (_, invoice) = caller
        .call("GET", &format!("/api/v1/invoices/{slow}"), None)
        .await;
    assert_eq!(invoice["status"], "Processing");
    let (_, methods) = caller
        .call(
            "GET",
            &format!("/api/v1/invoices/{slow}/payment-methods"),
            None,
        )
        .await;
    assert_eq!(methods[0]["payments"][0]["status"], "Processing");
    assert_eq!(control("confirm").await.unwrap().status(), 200);
    assert_eq!(control("confirm").await.unwrap().status(), 409);
    let (_, invoice) = caller
        .call("GET", &format!("/api/v1/invoices/{slow}"), None)
        .await;
    assert_eq!(invoice["status"], "Settled");
    expected.push((
        slow,
        vec![
            "InvoiceCreated",
            "InvoiceReceivedPayment",
            "InvoiceProcessing",
            "InvoicePaymentSettled",
            "InvoiceSettled",
        ],
        "Settled",
        "None",
    ));

    // The validator is not lenient: a field BTCPay does not document, or a status it does
    // not know, is caught.
    let mut extra = invoice.clone();
    extra["buyerEmail"] = json!("reader@example.org");
    assert!(
        !caller
            .spec
            .check_response("GET", "/api/v1/invoices/x", 200, &extra)
            .is_empty()
    );
    let mut unknown = invoice.clone();
    unknown["status"] = json!("Paid");
    assert!(
        !caller
            .spec
            .check_response("GET", "/api/v1/invoices/x", 200, &unknown)
            .is_empty()
    );
    let mut nested = invoice.clone();
    nested["checkout"]["colour"] = json!("red");
    assert!(
        !caller
            .spec
            .check_response("GET", "/api/v1/invoices/x", 200, &nested)
            .is_empty()
    );

    // A partly paid invoice expires as partly paid.
    let partly = expected[1].0.clone();
    sim.simulator.advance(16 * 60);
    let (_, invoice) = caller
        .call("GET", &format!("/api/v1/invoices/{partly}"), None)
        .await;
    assert_eq!(invoice["status"], "Expired");
    assert_eq!(invoice["additionalStatus"], "PaidPartial");
    expected[1].1.push("InvoiceExpired");

    // Marking through Greenfield, a listing with every filter, and BTCPay's errors.
    let (_, marked) = caller
        .call(
            "POST",
            &format!("/api/v1/invoices/{}/status", expected[3].0),
            Some(json!({ "status": "Settled" })),
        )
        .await;
    assert_eq!(marked["status"], "Settled");
    assert_eq!(marked["additionalStatus"], "Marked");
    expected[3].1.push("InvoiceSettled");
    let (_, listed) = caller
        .call(
            "GET",
            &format!("{invoices}?status=Settled&status=Expired&skip=0&take=50&includePaymentMethods=true&orderId=order-pay&orderId=order-overpay"),
            None,
        )
        .await;
    assert_eq!(listed.as_array().unwrap().len(), 2);
    let (code, _) = caller.call("GET", "/api/v1/invoices/Nope", None).await;
    assert_eq!(code, 404);
    let (code, _) = caller
        .call_as(
            "GET",
            &format!("/api/v1/invoices/{}", expected[0].0),
            None,
            None,
        )
        .await;
    assert_eq!(code, 401);
    let (code, _) = caller
        .call(
            "POST",
            &invoices,
            Some(json!({ "amount": "-1", "currency": "USD" })),
        )
        .await;
    assert_eq!(code, 400);
    let (code, _) = caller
        .call(
            "POST",
            &invoices,
            Some(json!({ "amount": "1", "currency": "XXQ" })),
        )
        .await;
    assert_eq!(code, 400);
    caller.assert_clean();

    let total: usize = expected.iter().map(|(_, kinds, _, _)| kinds.len()).sum();
    let bodies = receiver.wait_for(total).await;
    for (id, kinds, _, _) in &expected {
        assert_eq!(kinds_of(&bodies, id), *kinds, "invoice {id}");
    }
    // Every body conforms, is signed, and reads as a delivery.
    let spec = Spec::load();
    let verifier = WebhookVerifier::new(vec![SecretString::from(SECRET)]);
    let mut errors = Vec::new();
    for (signature, body) in receiver.got.lock().unwrap().iter() {
        errors.extend(spec.check_delivery(&serde_json::from_slice(body).unwrap()));
        let delivery = verifier
            .verify_delivery(signature.as_deref(), body)
            .expect("signed with the webhook's secret");
        assert_eq!(delivery.event_id(), delivery.delivery_id);
    }
    assert!(errors.is_empty(), "{errors:#?}");
    let settled = bodies
        .iter()
        .find(|b| b["invoiceId"] == expected[2].0.as_str() && b["type"] == "InvoiceSettled")
        .unwrap();
    assert_eq!(settled["overPaid"], true);
    assert_eq!(settled["manuallyMarked"], false);
    let late = bodies
        .iter()
        .find(|b| b["invoiceId"] == expected[4].0.as_str() && b["type"] == "InvoiceReceivedPayment")
        .unwrap();
    assert_eq!(late["afterExpiration"], true);
    let expired = bodies
        .iter()
        .find(|b| b["invoiceId"] == partly.as_str() && b["type"] == "InvoiceExpired")
        .unwrap();
    assert_eq!(expired["partiallyPaid"], true);
}

#[tokio::test]
async fn failed_deliveries_are_redelivered_with_the_original_id_and_the_webhook_api_conforms() {
    let (receiver, url) = Receiver::spawn(2).await;
    let sim = simulator(None).await;
    let mut caller = Caller::new(&sim);
    let store = sim.simulator.store_id().to_owned();
    let (code, webhook) = caller
        .call(
            "POST",
            &format!("/api/v1/stores/{store}/webhooks"),
            Some(json!({
                "url": url,
                "secret": SECRET,
                "automaticRedelivery": true,
                "authorizedEvents": { "everything": false, "specificEvents": ["InvoiceCreated"] },
            })),
        )
        .await;
    assert_eq!(code, 200);
    assert_eq!(webhook["secret"], SECRET);
    let webhook_id = webhook["id"].as_str().unwrap().to_owned();
    caller
        .call(
            "POST",
            &format!("/api/v1/stores/{store}/invoices"),
            Some(json!({ "amount": "5.00", "currency": "USD", "metadata": { "orderId": "o-1" } })),
        )
        .await;
    // Two failures, then the second automatic redelivery is accepted.
    let bodies = receiver.wait_for(3).await;
    let first = bodies[0]["deliveryId"].as_str().unwrap().to_owned();
    assert_eq!(bodies[0]["isRedelivery"], false);
    assert_eq!(bodies[0]["originalDeliveryId"], first.as_str());
    for again in &bodies[1..] {
        assert_eq!(again["isRedelivery"], true);
        assert_eq!(again["originalDeliveryId"], first.as_str());
        assert_ne!(again["deliveryId"], first.as_str());
        assert_eq!(again["timestamp"], bodies[0]["timestamp"]);
    }
    let verifier = WebhookVerifier::new(vec![SecretString::from(SECRET)]);
    let event_ids: Vec<String> = receiver
        .got
        .lock()
        .unwrap()
        .iter()
        .map(|(sig, body)| {
            verifier
                .verify_delivery(sig.as_deref(), body)
                .unwrap()
                .event_id()
                .to_owned()
        })
        .collect();
    assert!(event_ids.iter().all(|id| *id == first));

    // The Greenfield webhook API: list, get, deliveries, a delivery, its request, redeliver.
    caller
        .call("GET", &format!("/api/v1/stores/{store}/webhooks"), None)
        .await;
    caller
        .call("GET", &format!("/api/v1/webhooks/{webhook_id}"), None)
        .await;
    let (_, deliveries) = caller
        .call(
            "GET",
            &format!("/api/v1/webhooks/{webhook_id}/deliveries"),
            None,
        )
        .await;
    assert_eq!(deliveries.as_array().unwrap().len(), 3);
    caller
        .call(
            "GET",
            &format!("/api/v1/webhooks/{webhook_id}/deliveries/{first}"),
            None,
        )
        .await;
    let (_, request) = caller
        .call(
            "GET",
            &format!("/api/v1/webhooks/{webhook_id}/deliveries/{first}/request"),
            None,
        )
        .await;
    assert_eq!(request, bodies[0]);
    let (_, new_id) = caller
        .call(
            "POST",
            &format!("/api/v1/webhooks/{webhook_id}/deliveries/{first}/redeliver"),
            None,
        )
        .await;
    let again = receiver.wait_for(4).await;
    assert_eq!(again[3]["deliveryId"], new_id);
    assert_eq!(again[3]["originalDeliveryId"], first.as_str());
    caller.assert_clean();
}

#[tokio::test]
async fn the_hosted_page_offers_every_button_and_pays() {
    let sim = simulator(None).await;
    let client = client(&sim);
    let invoice = client
        .create_invoice(&NewInvoice {
            order_id: "c-page",
            amount: usd(2_500),
            buyer_email: None,
            redirect_url: Some("https://news.example.org/thanks"),
            expiration_minutes: None,
            redirect_automatically: Some(true),
        })
        .await
        .unwrap();
    let page = reqwest::get(&invoice.checkout_link)
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    for action in [
        "pay",
        "pay-partly",
        "overpay",
        "expire",
        "pay-late",
        "invalid",
    ] {
        assert!(
            page.contains(&format!("data-action=\"{action}\"")),
            "{action}"
        );
    }
    let no_redirects = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let clicked = no_redirects
        .post(format!("{}/pay", invoice.checkout_link))
        .send()
        .await
        .unwrap();
    assert_eq!(clicked.status(), 303);
    assert_eq!(
        clicked.headers()["location"],
        "https://news.example.org/thanks"
    );
    let paid = client.invoice(&invoice.id).await.unwrap();
    assert_eq!(paid.status, InvoiceStatus::Settled);
    assert_eq!(paid.additional_status, AdditionalStatus::None);
    assert_eq!(paid.paid_amount, usd(2_500));
    let methods = client.payment_methods(&invoice.id).await.unwrap();
    assert_eq!(methods[0].due, "0.00000000");
    assert_eq!(methods[0].payments.len(), 1);
}

#[test]
fn the_validator_refuses_what_btcpay_would_not_send() {
    let spec = Spec::load();
    let good = json!({ "id": "a", "receivedDate": 1, "value": "0.1", "fee": "0", "status": "Settled", "destination": "x" });
    assert!(spec.check_named(&good, "Payment").is_empty());
    let mut extra = good.clone();
    extra["kind"] = json!("x");
    assert!(!spec.check_named(&extra, "Payment").is_empty());
    let mut wrong_status = good.clone();
    wrong_status["status"] = json!("Confirmed");
    assert!(!spec.check_named(&wrong_status, "Payment").is_empty());
    let mut float = good;
    float["value"] = json!(0.1);
    assert!(!spec.check_named(&float, "Payment").is_empty());
}
