//! Webhook delivery: signed like Stripe, verified by Kopilka's own verifier, retried until
//! a 2xx, duplicated and shuffled on request.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use kopilka_stripe::WebhookVerifier;
use kopilka_stripe_sim::{SimOptions, spawn};
use secrecy::SecretString;
use serde_json::{Value, json};

/// A delivery as received: the `Stripe-Signature` header and the raw body.
type Received = (Option<String>, Vec<u8>);

#[derive(Clone, Default)]
struct Receiver {
    received: Arc<Mutex<Vec<Received>>>,
    /// How many of the first deliveries to refuse with a 500.
    refuse_first: Arc<Mutex<usize>>,
}

async fn receive(
    State(receiver): State<Receiver>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> StatusCode {
    {
        let mut refuse = receiver.refuse_first.lock().unwrap();
        if *refuse > 0 {
            *refuse -= 1;
            return StatusCode::INTERNAL_SERVER_ERROR;
        }
    }
    let signature = headers
        .get("stripe-signature")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    receiver
        .received
        .lock()
        .unwrap()
        .push((signature, body.to_vec()));
    StatusCode::OK
}

async fn listen(receiver: Receiver) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let app = axum::Router::new()
        .route("/hook", post(receive))
        .with_state(receiver);
    tokio::spawn(async move { axum::serve(listener, app).await });
    format!("http://{addr}/hook")
}

impl Receiver {
    /// Event types received so far, waiting until `count` arrived.
    async fn wait_for(&self, count: usize) -> Vec<Received> {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let received = self.received.lock().unwrap().clone();
            if received.len() >= count {
                return received;
            }
            assert!(
                Instant::now() < deadline,
                "only {} of {count} deliveries arrived",
                received.len()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

async fn paid_checkout(sim: &kopilka_stripe_sim::Spawned) -> String {
    let http = reqwest::Client::new();
    let session: Value = http
        .post(format!("http://{}/v1/checkout/sessions", sim.addr))
        .bearer_auth(sim.simulator.secret_key())
        .form(&[
            ("mode", "payment"),
            ("line_items[0][price_data][currency]", "usd"),
            ("line_items[0][price_data][unit_amount]", "700"),
            ("success_url", "https://news.example.org/thanks"),
        ])
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let id = session["id"].as_str().unwrap().to_owned();
    let paid = http
        .post(format!("http://{}/_sim/checkout/{id}/pay", sim.addr))
        .json(&json!({}))
        .send()
        .await
        .unwrap();
    assert!(paid.status().is_success());
    id
}

fn types(received: &[Received]) -> Vec<String> {
    received
        .iter()
        .map(|(_, body)| {
            serde_json::from_slice::<Value>(body).unwrap()["type"]
                .as_str()
                .unwrap()
                .to_owned()
        })
        .collect()
}

/// payment_intent.created, charge.succeeded, payment_intent.succeeded, checkout.session.completed.
const ONE_OFF_EVENTS: usize = 4;

#[tokio::test]
async fn a_paid_checkout_arrives_signed_and_verifies() {
    let receiver = Receiver::default();
    let url = listen(receiver.clone()).await;
    let options = SimOptions {
        webhook_url: Some(url),
        ..SimOptions::default()
    };
    let sim = spawn("127.0.0.1:0".parse().unwrap(), options)
        .await
        .unwrap();
    let session = paid_checkout(&sim).await;

    let received = receiver.wait_for(ONE_OFF_EVENTS).await;
    let verifier = WebhookVerifier::new(
        vec![SecretString::from(
            sim.simulator.webhook_secret().to_owned(),
        )],
        300,
    );
    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    for (signature, body) in &received {
        let event = verifier
            .verify_event(signature.as_deref(), body, now)
            .expect("a valid signature");
        assert!(event.id.starts_with("evt_"));
    }
    let kinds = types(&received);
    assert_eq!(
        kinds,
        [
            "payment_intent.created",
            "charge.succeeded",
            "payment_intent.succeeded",
            "checkout.session.completed"
        ]
    );
    let completed: Value = serde_json::from_slice(&received[3].1).unwrap();
    assert_eq!(completed["data"]["object"]["id"], session.as_str());
    assert_eq!(completed["data"]["object"]["payment_status"], "paid");

    // A wrong secret does not verify the same deliveries.
    let wrong = WebhookVerifier::new(vec![SecretString::from("whsec_wrong".to_owned())], 300);
    assert!(
        wrong
            .verify(received[0].0.as_deref(), &received[0].1, now)
            .is_err()
    );
}

#[tokio::test]
async fn refused_deliveries_are_retried_until_accepted() {
    let receiver = Receiver::default();
    *receiver.refuse_first.lock().unwrap() = 3;
    let url = listen(receiver.clone()).await;
    let sim = spawn(
        "127.0.0.1:0".parse().unwrap(),
        SimOptions {
            webhook_url: Some(url),
            ..SimOptions::default()
        },
    )
    .await
    .unwrap();
    paid_checkout(&sim).await;
    let received = receiver.wait_for(ONE_OFF_EVENTS).await;
    let mut kinds = types(&received);
    kinds.sort();
    kinds.dedup();
    assert_eq!(
        kinds.len(),
        ONE_OFF_EVENTS,
        "every event arrived despite three refusals"
    );
}

#[tokio::test]
async fn duplicates_and_shuffling_are_switchable() {
    let receiver = Receiver::default();
    let url = listen(receiver.clone()).await;
    let sim = spawn("127.0.0.1:0".parse().unwrap(), SimOptions::default())
        .await
        .unwrap();
    let switched: Value = reqwest::Client::new()
        .post(format!("http://{}/_sim/delivery", sim.addr))
        .json(&json!({"duplicates": 2, "shuffle": true, "webhook_url": url}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(switched["duplicates"], 2);
    paid_checkout(&sim).await;
    let received = receiver.wait_for(ONE_OFF_EVENTS * 3).await;
    let mut ids: Vec<String> = received
        .iter()
        .map(|(_, body)| {
            serde_json::from_slice::<Value>(body).unwrap()["id"]
                .as_str()
                .unwrap()
                .to_owned()
        })
        .collect();
    ids.sort();
    let copies: Vec<usize> = ids.chunk_by(|a, b| a == b).map(<[String]>::len).collect();
    assert_eq!(
        copies,
        vec![3; ONE_OFF_EVENTS],
        "each event three times, same id"
    );
}

#[tokio::test]
async fn shuffled_bursts_arrive_out_of_emission_order() {
    let receiver = Receiver::default();
    let url = listen(receiver.clone()).await;
    let sim = spawn("127.0.0.1:0".parse().unwrap(), SimOptions::default())
        .await
        .unwrap();
    let http = reqwest::Client::new();
    http.post(format!("http://{}/_sim/delivery", sim.addr))
        .json(&json!({"shuffle": true, "webhook_url": url}))
        .send()
        .await
        .unwrap();
    // A subscription checkout emits a long burst (a dozen events), so a shuffle that kept
    // emission order would be a one-in-hundreds-of-millions accident.
    let session: Value = http
        .post(format!("http://{}/v1/checkout/sessions", sim.addr))
        .bearer_auth(sim.simulator.secret_key())
        .form(&[
            ("mode", "subscription"),
            ("line_items[0][price_data][currency]", "usd"),
            ("line_items[0][price_data][unit_amount]", "500"),
            ("line_items[0][price_data][recurring][interval]", "month"),
            ("success_url", "https://news.example.org/thanks"),
        ])
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let id = session["id"].as_str().unwrap();
    http.post(format!("http://{}/_sim/checkout/{id}/pay", sim.addr))
        .json(&json!({}))
        .send()
        .await
        .unwrap();
    let events: Value = http
        .get(format!("http://{}/v1/events?limit=100", sim.addr))
        .bearer_auth(sim.simulator.secret_key())
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let mut emitted: Vec<String> = events["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["id"].as_str().unwrap().to_owned())
        .collect();
    emitted.reverse(); // lists are newest first
    assert!(emitted.len() >= 10, "{emitted:?}");
    let received = receiver.wait_for(emitted.len()).await;
    let arrived: Vec<String> = received
        .iter()
        .map(|(_, body)| {
            serde_json::from_slice::<Value>(body).unwrap()["id"]
                .as_str()
                .unwrap()
                .to_owned()
        })
        .collect();
    let (mut got, mut want) = (arrived.clone(), emitted.clone());
    got.sort();
    want.sort();
    assert_eq!(got, want, "every event arrives once");
    assert_ne!(arrived, emitted, "the burst was shuffled");
}
