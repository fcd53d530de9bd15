//! Webhook delivery: each delivery's body POSTed with `BTCPay-Sig: sha256=…` to its
//! webhook's URL, one at a time in the order emitted. A failed delivery (no 2xx) of a
//! webhook with `automaticRedelivery` is redelivered as BTCPay does: after each of
//! [`crate::SimOptions::redelivery_delays`], a *new* delivery (`isRedelivery: true`, the
//! first one's id in `originalDeliveryId`), until one succeeds.

use std::time::Duration;

use tokio::sync::mpsc::UnboundedReceiver;

use crate::{Simulator, lock};

/// One delivery to send, and which automatic attempt it is (`usize::MAX`: sent by hand,
/// no automatic retry follows).
#[derive(Debug)]
pub struct Outgoing {
    pub id: String,
    pub attempt: usize,
}

/// Starts the delivery worker.
pub fn start(simulator: &Simulator, mut receiver: UnboundedReceiver<Outgoing>) {
    let weak = std::sync::Arc::downgrade(&simulator.inner);
    tokio::spawn(async move {
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(10))
            .build()
            .unwrap_or_default();
        while let Some(outgoing) = receiver.recv().await {
            let Some(inner) = weak.upgrade() else { return };
            let simulator = Simulator { inner };
            send(&simulator, &client, outgoing).await;
        }
    });
}

async fn send(simulator: &Simulator, client: &reqwest::Client, outgoing: Outgoing) {
    let Some((record, webhook)) = ({
        let state = lock(&simulator.inner.state);
        state
            .deliveries
            .iter()
            .find(|d| d.id == outgoing.id)
            .cloned()
            .and_then(|record| {
                let webhook = state
                    .webhooks
                    .iter()
                    .find(|w| w.id == record.webhook_id)
                    .cloned()?;
                Some((record, webhook))
            })
    }) else {
        return;
    };
    let signature = kopilka_btcpay::sign(&webhook.secret, &record.body);
    let sent = client
        .post(&webhook.url)
        .header("content-type", "application/json")
        .header("btcpay-sig", signature)
        .header("user-agent", "BTCPayServer")
        .body(record.body.clone())
        .send()
        .await;
    let (http_code, error_message, status) = match &sent {
        Ok(response) if response.status().is_success() => {
            (Some(response.status().as_u16()), None, "HttpSuccess")
        }
        Ok(response) => (
            Some(response.status().as_u16()),
            Some(format!("HTTP {}", response.status().as_u16())),
            "HttpError",
        ),
        Err(_) => (None, Some("The request failed".to_owned()), "Failed"),
    };
    let now = {
        let mut state = lock(&simulator.inner.state);
        let now = state.now();
        if let Some(stored) = state.deliveries.iter_mut().find(|d| d.id == record.id) {
            stored.delivery_time = Some(now);
            stored.http_code = http_code;
            stored.error_message.clone_from(&error_message);
            stored.status = status;
        }
        now
    };
    tracing::debug!(delivery_id = record.id, status, now, "webhook delivery");
    if status == "HttpSuccess" || !webhook.automatic_redelivery {
        return;
    }
    let Some(delay) = simulator
        .inner
        .options
        .redelivery_delays
        .get(outgoing.attempt)
        .copied()
    else {
        if outgoing.attempt != usize::MAX {
            tracing::warn!(delivery_id = record.id, "webhook delivery given up");
        }
        return;
    };
    let retry = simulator.clone();
    let attempt = outgoing.attempt + 1;
    tokio::spawn(async move {
        tokio::time::sleep(delay).await;
        let Some(id) = lock(&retry.inner.state).redelivery(&record.id) else {
            return;
        };
        let _ = retry.inner.outbox.send(Outgoing { id, attempt });
    });
}
