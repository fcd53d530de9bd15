//! A stateful BTCPay Server (Greenfield API) compatible HTTP server for `kopilka dev` and the
//! tests: one store's invoices (create, get, list, payment methods, mark status), store
//! webhooks with signed deliveries (`BTCPay-Sig`), automatic and manual redelivery, a
//! hosted invoice page whose buttons pay, pay partly, overpay, let expire, pay after expiry
//! or mark invalid, and a clock. Every object it renders holds exactly the fields of
//! BTCPay's OpenAPI schemas (`fixtures/`, checked by `tests/conformance.rs`).
//!
//! Beside `/api/v1/…`, control endpoints under `/_sim/` (see `control`) stand in for clicks
//! and for time passing.

mod api;
mod control;
mod delivery;
mod ids;
mod invoice;
mod page;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use serde_json::Value;
use tokio::sync::mpsc::UnboundedSender;

pub use invoice::Action;

/// How the simulator is set up.
#[derive(Debug, Clone)]
pub struct SimOptions {
    /// The one API key it accepts (`Authorization: token …`).
    pub api_key: String,
    /// The one store it keeps.
    pub store_id: String,
    /// A webhook registered at start (as `POST /_sim/webhook` would), if any.
    pub webhook_url: Option<String>,
    /// That webhook's secret.
    pub webhook_secret: String,
    /// Waits before each automatic redelivery of a failed delivery. BTCPay's: 10 s, 1 min,
    /// then six times 10 min.
    pub redelivery_delays: Vec<Duration>,
}

impl Default for SimOptions {
    fn default() -> Self {
        let mut delays = vec![Duration::from_secs(10), Duration::from_secs(60)];
        delays.extend([Duration::from_secs(600); 6]);
        Self {
            api_key: "kopilka-btcpay-sim-api-key".into(),
            store_id: "KopilkaSimStore1111111111111111111111111111".into(),
            webhook_url: None,
            webhook_secret: "kopilka-btcpay-sim-webhook-secret".into(),
            redelivery_delays: delays,
        }
    }
}

/// A registered store webhook.
#[derive(Debug, Clone)]
struct Webhook {
    id: String,
    url: String,
    secret: String,
    enabled: bool,
    automatic_redelivery: bool,
    everything: bool,
    specific_events: Vec<String>,
}

impl Webhook {
    fn wants(&self, kind: &str) -> bool {
        self.enabled && (self.everything || self.specific_events.iter().any(|e| e == kind))
    }

    fn render(&self, with_secret: bool) -> Value {
        let mut value = serde_json::json!({
            "id": self.id,
            "enabled": self.enabled,
            "automaticRedelivery": self.automatic_redelivery,
            "url": self.url,
            "authorizedEvents": {
                "everything": self.everything,
                "specificEvents": self.specific_events,
            },
        });
        if with_secret {
            value["secret"] = Value::String(self.secret.clone());
        }
        value
    }
}

/// One delivery of one event to one webhook.
#[derive(Debug, Clone)]
struct DeliveryRecord {
    id: String,
    webhook_id: String,
    /// The exact body sent (signed as is).
    body: Vec<u8>,
    timestamp: i64,
    delivery_time: Option<i64>,
    http_code: Option<u16>,
    error_message: Option<String>,
    status: &'static str,
}

impl DeliveryRecord {
    fn render(&self) -> Value {
        serde_json::json!({
            "id": self.id,
            "timestamp": self.timestamp,
            "deliveryTime": self.delivery_time.unwrap_or(self.timestamp),
            "httpCode": self.http_code,
            "errorMessage": self.error_message.clone().unwrap_or_default(),
            "status": self.status,
        })
    }
}

/// A Greenfield request the simulator received, kept for conformance tests.
#[derive(Debug, Clone)]
pub struct RecordedRequest {
    /// `GET`, `POST`, …
    pub method: String,
    /// The path, e.g. `/api/v1/stores/…/invoices`.
    pub path: String,
    /// The raw query string, if any.
    pub query: Option<String>,
    /// The body as received (empty for none).
    pub body: Vec<u8>,
}

#[derive(Debug, Default)]
struct State {
    clock_offset: i64,
    invoices: Vec<invoice::Invoice>,
    webhooks: Vec<Webhook>,
    deliveries: Vec<DeliveryRecord>,
    requests: Vec<RecordedRequest>,
}

impl State {
    fn now(&self) -> i64 {
        time::OffsetDateTime::now_utc().unix_timestamp() + self.clock_offset
    }

    fn invoice_mut(&mut self, id: &str) -> Option<&mut invoice::Invoice> {
        self.invoices.iter_mut().find(|i| i.id == id)
    }

    /// Expires every invoice whose time is up.
    fn sweep(&mut self) -> Vec<invoice::Emitted> {
        let now = self.now();
        self.invoices
            .iter_mut()
            .flat_map(|i| i.expire_if_due(now))
            .collect()
    }

    /// Addresses `events` to every webhook that wants them; returns the deliveries to send.
    fn address(&mut self, events: Vec<invoice::Emitted>) -> Vec<String> {
        let now = self.now();
        let mut ids = Vec::new();
        for event in events {
            for webhook in self.webhooks.iter().filter(|w| w.wants(event.kind)) {
                let delivery_id = ids::new_id();
                let mut body = serde_json::Map::new();
                body.insert("deliveryId".into(), delivery_id.clone().into());
                body.insert("webhookId".into(), webhook.id.clone().into());
                body.insert("originalDeliveryId".into(), delivery_id.clone().into());
                body.insert("isRedelivery".into(), false.into());
                body.insert("type".into(), event.kind.into());
                body.insert("timestamp".into(), now.into());
                body.insert("storeId".into(), event.store_id.clone().into());
                body.insert("invoiceId".into(), event.invoice_id.clone().into());
                body.insert("metadata".into(), event.metadata.clone());
                body.extend(event.extra.clone());
                self.deliveries.push(DeliveryRecord {
                    id: delivery_id.clone(),
                    webhook_id: webhook.id.clone(),
                    body: serde_json::to_vec(&Value::Object(body)).unwrap_or_default(),
                    timestamp: now,
                    delivery_time: None,
                    http_code: None,
                    error_message: None,
                    status: "Failed",
                });
                ids.push(delivery_id);
            }
        }
        ids
    }

    /// A redelivery of `delivery_id`: the same body with a new `deliveryId`,
    /// `isRedelivery: true` and the first delivery's id kept in `originalDeliveryId`.
    fn redelivery(&mut self, delivery_id: &str) -> Option<String> {
        let old = self
            .deliveries
            .iter()
            .find(|d| d.id == delivery_id)?
            .clone();
        let mut body: serde_json::Map<String, Value> = serde_json::from_slice(&old.body).ok()?;
        let new_id = ids::new_id();
        body.insert("deliveryId".into(), new_id.clone().into());
        body.insert("isRedelivery".into(), true.into());
        if !body.get("originalDeliveryId").is_some_and(Value::is_string) {
            body.insert("originalDeliveryId".into(), delivery_id.into());
        }
        let now = self.now();
        self.deliveries.push(DeliveryRecord {
            id: new_id.clone(),
            webhook_id: old.webhook_id,
            body: serde_json::to_vec(&Value::Object(body)).unwrap_or_default(),
            timestamp: now,
            delivery_time: None,
            http_code: None,
            error_message: None,
            status: "Failed",
        });
        Some(new_id)
    }
}

/// A running simulator's handle; cheap to clone.
#[derive(Clone)]
pub struct Simulator {
    inner: Arc<Inner>,
}

struct Inner {
    state: Mutex<State>,
    /// `POST /_sim/faults`: the next N Greenfield requests answer this 5xx (the server down
    /// behind its proxy) without doing anything.
    faults: Mutex<(u32, u16)>,
    options: SimOptions,
    base_url: String,
    outbox: UnboundedSender<delivery::Outgoing>,
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Simulator {
    /// A simulator answering at `base_url` (where its hosted pages are); starts the delivery
    /// worker, so it must be called inside a Tokio runtime.
    #[must_use]
    pub fn new(options: SimOptions, base_url: String) -> Self {
        let (outbox, receiver) = tokio::sync::mpsc::unbounded_channel();
        let simulator = Self {
            inner: Arc::new(Inner {
                state: Mutex::new(State::default()),
                faults: Mutex::new((0, 503)),
                options,
                base_url,
                outbox,
            }),
        };
        if let Some(url) = simulator.inner.options.webhook_url.clone() {
            let secret = simulator.inner.options.webhook_secret.clone();
            simulator.register_webhook(url, secret, true, true, Vec::new());
        }
        delivery::start(&simulator, receiver);
        simulator
    }

    /// The API key clients must send.
    #[must_use]
    pub fn api_key(&self) -> &str {
        &self.inner.options.api_key
    }

    /// The store's id.
    #[must_use]
    pub fn store_id(&self) -> &str {
        &self.inner.options.store_id
    }

    /// Where it answers, e.g. `http://127.0.0.1:12112` (the base URL for clients).
    #[must_use]
    pub fn base_url(&self) -> String {
        self.inner.base_url.clone()
    }

    /// Every Greenfield request received so far, oldest first.
    #[must_use]
    pub fn requests(&self) -> Vec<RecordedRequest> {
        lock(&self.inner.state).requests.clone()
    }

    /// The exact body of every delivery so far (first deliveries and redeliveries), oldest
    /// first.
    #[must_use]
    pub fn delivery_bodies(&self) -> Vec<Vec<u8>> {
        lock(&self.inner.state)
            .deliveries
            .iter()
            .map(|d| d.body.clone())
            .collect()
    }

    /// The simulator's now (unix seconds): the wall clock plus every advance.
    #[must_use]
    pub fn now(&self) -> i64 {
        lock(&self.inner.state).now()
    }

    /// Arms `count` faults: the next `count` Greenfield requests answer `status` (0 disarms).
    pub fn set_faults(&self, count: u32, status: u16) {
        *lock(&self.inner.faults) = (count, status);
    }

    /// Armed faults not met yet.
    #[must_use]
    pub fn faults_remaining(&self) -> u32 {
        lock(&self.inner.faults).0
    }

    /// Takes one armed fault, if any: its status.
    fn next_fault(&self) -> Option<u16> {
        let mut faults = lock(&self.inner.faults);
        if faults.0 == 0 {
            return None;
        }
        faults.0 -= 1;
        Some(faults.1)
    }

    /// Every route: `/api/v1/…`, the hosted invoice page and `/_sim/…`.
    pub fn router(&self) -> axum::Router {
        api::routes(self.clone())
            .merge(page::routes(self.clone()))
            .merge(control::routes(self.clone()))
    }

    /// Moves the clock `seconds` ahead and expires what is due.
    pub fn advance(&self, seconds: i64) -> i64 {
        self.act(|state| {
            state.clock_offset = state.clock_offset.saturating_add(seconds.max(0));
            (state.now(), Vec::new())
        })
    }

    /// Does `action` on the invoice `id`, as its hosted page's button would.
    ///
    /// # Errors
    /// A sentence when there is no such invoice or the action does not apply now.
    pub fn act_on(&self, id: &str, action: Action) -> Result<Value, String> {
        let base = self.inner.base_url.clone();
        self.act(|state| {
            let now = state.now();
            let Some(invoice) = state.invoice_mut(id) else {
                return (Err("no such invoice".to_owned()), Vec::new());
            };
            match invoice.act(action, now) {
                Ok(events) => (Ok(invoice.render(&base)), events),
                Err(invoice::Refusal(why)) => (Err(why.to_owned()), Vec::new()),
            }
        })
    }

    /// Registers a store webhook; returns its id.
    pub fn register_webhook(
        &self,
        url: String,
        secret: String,
        enabled: bool,
        automatic_redelivery: bool,
        specific_events: Vec<String>,
    ) -> Value {
        let webhook = Webhook {
            id: ids::new_id(),
            url,
            secret,
            enabled,
            automatic_redelivery,
            everything: specific_events.is_empty(),
            specific_events,
        };
        let rendered = webhook.render(true);
        lock(&self.inner.state).webhooks.push(webhook);
        rendered
    }

    /// Runs `change` under the lock after expiring what is due, then sends the events it
    /// emitted.
    fn act<T>(&self, change: impl FnOnce(&mut State) -> (T, Vec<invoice::Emitted>)) -> T {
        let (result, deliveries) = {
            let mut state = lock(&self.inner.state);
            let mut events = state.sweep();
            let (result, more) = change(&mut state);
            events.extend(more);
            events.extend(state.sweep());
            (result, state.address(events))
        };
        for id in deliveries {
            let _ = self
                .inner
                .outbox
                .send(delivery::Outgoing { id, attempt: 0 });
        }
        result
    }

    fn record(&self, method: &str, path: &str, query: Option<&str>, body: &[u8]) {
        lock(&self.inner.state).requests.push(RecordedRequest {
            method: method.to_owned(),
            path: path.to_owned(),
            query: query.map(str::to_owned),
            body: body.to_vec(),
        });
    }

    /// Redelivers `delivery_id` now (by hand: no automatic retries follow a failure).
    fn redeliver(&self, delivery_id: &str) -> Option<String> {
        let id = lock(&self.inner.state).redelivery(delivery_id)?;
        let _ = self.inner.outbox.send(delivery::Outgoing {
            id: id.clone(),
            attempt: usize::MAX,
        });
        Some(id)
    }

    fn webhooks_by_id(&self) -> HashMap<String, Webhook> {
        lock(&self.inner.state)
            .webhooks
            .iter()
            .map(|w| (w.id.clone(), w.clone()))
            .collect()
    }
}

/// A simulator serving on a port of its own, for tests and `kopilka dev`.
pub struct Spawned {
    /// Its handle.
    pub simulator: Simulator,
    /// Where it listens.
    pub addr: SocketAddr,
}

/// Binds `addr` (port 0 for any free one) and serves the simulator there in the background.
///
/// # Errors
/// When the address cannot be bound.
pub async fn spawn(addr: SocketAddr, options: SimOptions) -> std::io::Result<Spawned> {
    let listener = tokio::net::TcpListener::bind(addr).await?;
    let addr = listener.local_addr()?;
    let simulator = Simulator::new(options, format!("http://{addr}"));
    let app = simulator.router();
    tokio::spawn(async move {
        if let Err(err) = axum::serve(listener, app).await {
            tracing::error!(error = %err, "the BTCPay simulator stopped");
        }
    });
    Ok(Spawned { simulator, addr })
}
