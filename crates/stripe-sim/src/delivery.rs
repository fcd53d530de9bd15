//! Webhook delivery: every emitted event, signed like Stripe signs, POSTed to the webhook
//! URL, retried with backoff until a 2xx (at least once). Switches for tests of the
//! receiving side: duplicates of each event, and shuffled order within a burst.

use std::time::Duration;

use serde_json::Value;
use tokio::sync::mpsc;

/// How deliveries behave (`POST /_sim/delivery`).
#[derive(Debug, Clone, Default)]
pub struct Mode {
    /// Extra copies of every event.
    pub duplicates: u32,
    /// Shuffle each burst of events (one API call or click) before sending.
    pub shuffle: bool,
    /// Where events go; none means they are only listed by `GET /v1/events`.
    pub webhook_url: Option<String>,
}

/// One delivery attempt's input.
#[derive(Debug)]
pub struct Delivery {
    pub url: String,
    pub body: Vec<u8>,
    pub attempt: u32,
    /// How many identical copies to send at once (more than one to test deduplication).
    pub copies: u32,
}

/// How many times a delivery is tried before it is given up. Stripe keeps trying for three
/// days; here backoff doubles from 250 ms to a minute, so about two hours.
const MAX_ATTEMPTS: u32 = 128;

fn backoff(attempt: u32) -> Duration {
    Duration::from_millis(250_u64.saturating_mul(1 << attempt.min(8)).min(60_000))
}

/// Shuffles `items` in place (Fisher–Yates) from the kernel's randomness via UUIDs.
pub fn shuffle<T>(items: &mut [T]) {
    for i in (1..items.len()).rev() {
        let random = uuid::Uuid::new_v4().as_u128();
        let j = usize::try_from(random % (i as u128 + 1)).unwrap_or(0);
        items.swap(i, j);
    }
}

/// Starts the delivery worker; events sent to the returned channel are delivered in the
/// order received (retries go to the back).
pub fn start(secret: String) -> mpsc::UnboundedSender<Delivery> {
    let (tx, mut rx) = mpsc::unbounded_channel::<Delivery>();
    let retry = tx.clone();
    tokio::spawn(async move {
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(10))
            .build()
            .unwrap_or_default();
        while let Some(delivery) = rx.recv().await {
            let timestamp = time::OffsetDateTime::now_utc().unix_timestamp();
            let signature = kopilka_stripe::sign(&secret, timestamp, &delivery.body);
            let send = || {
                client
                    .post(&delivery.url)
                    .header("content-type", "application/json; charset=utf-8")
                    .header("stripe-signature", signature.clone())
                    .header(
                        "user-agent",
                        "Stripe/1.0 (+https://stripe.com/docs/webhooks)",
                    )
                    .body(delivery.body.clone())
                    .send()
            };
            // Copies go out together, so a receiver's deduplication meets real concurrency;
            // the delivery counts as done once the first is accepted.
            let mut copies = tokio::task::JoinSet::new();
            for _ in 1..delivery.copies {
                copies.spawn(send());
            }
            let sent = send().await;
            while copies.join_next().await.is_some() {}
            let delivered = sent.as_ref().is_ok_and(|r| r.status().is_success());
            if delivered {
                continue;
            }
            let event_id = serde_json::from_slice::<Value>(&delivery.body)
                .ok()
                .and_then(|e| e["id"].as_str().map(str::to_owned))
                .unwrap_or_default();
            let status = sent.map_or_else(|e| e.to_string(), |r| r.status().as_u16().to_string());
            if delivery.attempt + 1 >= MAX_ATTEMPTS {
                tracing::warn!(event_id, status, "webhook delivery given up");
                continue;
            }
            tracing::debug!(
                event_id,
                status,
                attempt = delivery.attempt,
                "webhook delivery failed; will retry"
            );
            let retry = retry.clone();
            tokio::spawn(async move {
                tokio::time::sleep(backoff(delivery.attempt)).await;
                let _ = retry.send(Delivery {
                    attempt: delivery.attempt + 1,
                    copies: 1,
                    ..delivery
                });
            });
        }
    });
    tx
}
