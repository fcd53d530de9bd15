//! A stateful, Stripe-compatible HTTP server for `kopilka dev` and the tests: Stripe's REST
//! shape for the subset Kopilka uses, a hosted checkout page, signed webhook delivery of the
//! event sequences Stripe sends (`shared/stripe/EVENTS.md`), and a clock that renews
//! subscriptions. State lives in memory. Objects start from Stripe's published examples, so
//! they deserialize into async-stripe's types.
//!
//! Beside `/v1/…`, control endpoints under `/_sim/` (see `control`) stand in for clicks.

mod api;
mod control;
mod currencies;
mod delivery;
mod error;
mod flows;
mod form;
mod objects;
mod page;
mod state;

use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use axum::Json;
use serde_json::Value;
use tokio::sync::mpsc::UnboundedSender;

pub use error::StripeError;

/// The API version the simulator renders (async-stripe `=1.0.0-rc.10`'s).
pub const API_VERSION: &str = "2026-09-30.endive";

/// How the simulator is set up.
#[derive(Debug, Clone)]
pub struct SimOptions {
    /// The one secret key it accepts (`Authorization: Bearer …`).
    pub secret_key: String,
    /// The endpoint secret its webhook deliveries are signed with.
    pub webhook_secret: String,
    /// Where events are delivered; `None` keeps them for `GET /v1/events` only.
    pub webhook_url: Option<String>,
}

impl Default for SimOptions {
    fn default() -> Self {
        Self {
            secret_key: "sk_test_kopilka_simulator".into(),
            webhook_secret: "whsec_kopilka_simulator".into(),
            webhook_url: None,
        }
    }
}

/// What an injected fault does to one `/v1/…` request.
#[derive(Debug, Clone, Copy)]
enum Fault {
    /// Answer Stripe's `api_error` with this 5xx status, doing nothing.
    Fail(u16),
    /// Do the request, then hold the answer this long (the caller's timeout fires first;
    /// a retry with the same idempotency key gets the stored answer, as at Stripe).
    SlowAnswer(std::time::Duration),
}

/// Faults armed through `POST /_sim/faults`: the next `remaining` requests meet `fault`.
#[derive(Debug, Clone, Copy, Default)]
struct Faults {
    remaining: u32,
    fault: Option<Fault>,
}

/// A running simulator's handle; cheap to clone.
#[derive(Clone)]
pub struct Simulator {
    inner: Arc<Inner>,
}

struct Inner {
    state: Mutex<state::State>,
    options: SimOptions,
    base_url: String,
    mode: Mutex<delivery::Mode>,
    faults: Mutex<Faults>,
    deliveries: UnboundedSender<delivery::Delivery>,
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Simulator {
    /// A simulator answering at `base_url` (where its hosted pages are); starts the delivery
    /// worker, so it must be called inside a Tokio runtime.
    #[must_use]
    pub fn new(options: SimOptions, base_url: String) -> Self {
        let deliveries = delivery::start(options.webhook_secret.clone());
        let mode = delivery::Mode {
            webhook_url: options.webhook_url.clone(),
            ..delivery::Mode::default()
        };
        Self {
            inner: Arc::new(Inner {
                state: Mutex::new(state::State::with_base_url(base_url.clone())),
                options,
                base_url,
                mode: Mutex::new(mode),
                faults: Mutex::new(Faults::default()),
                deliveries,
            }),
        }
    }

    /// The secret key clients must send.
    #[must_use]
    pub fn secret_key(&self) -> &str {
        &self.inner.options.secret_key
    }

    /// The secret webhook deliveries are signed with.
    #[must_use]
    pub fn webhook_secret(&self) -> &str {
        &self.inner.options.webhook_secret
    }

    /// Where it answers, e.g. `http://127.0.0.1:12111` (the API base for clients).
    #[must_use]
    pub fn base_url(&self) -> String {
        self.inner.base_url.clone()
    }

    /// Every route: `/v1/…`, the hosted checkout page and `/_sim/…`.
    pub fn router(&self) -> axum::Router {
        api::routes(self.clone())
            .merge(page::routes(self.clone()))
            .merge(control::routes(self.clone()))
    }

    fn with_state<T>(&self, read: impl FnOnce(&state::State) -> T) -> T {
        read(&lock(&self.inner.state))
    }

    /// Runs a flow under the lock, then hands the events it emitted to delivery.
    fn act<T>(
        &self,
        flow: impl FnOnce(&mut state::State) -> Result<T, StripeError>,
    ) -> Result<T, StripeError> {
        let (result, events) = {
            let mut state = lock(&self.inner.state);
            let result = flow(&mut state);
            let events: Vec<Value> = std::mem::take(&mut state.outbox)
                .iter()
                .filter_map(|id| state.get(id).cloned())
                .collect();
            (result, events)
        };
        self.dispatch(events);
        result
    }

    fn dispatch(&self, mut events: Vec<Value>) {
        let mode = lock(&self.inner.mode).clone();
        let Some(url) = mode.webhook_url else { return };
        if mode.shuffle {
            delivery::shuffle(&mut events);
        }
        for event in events {
            let body = serde_json::to_vec(&event).unwrap_or_default();
            let _ = self.inner.deliveries.send(delivery::Delivery {
                url: url.clone(),
                body,
                attempt: 0,
                copies: mode.duplicates + 1,
            });
        }
    }

    /// The fault the next `/v1/…` request meets, if any are armed (each is used once).
    fn next_fault(&self) -> Option<Fault> {
        let mut faults = lock(&self.inner.faults);
        let fault = faults.fault?;
        faults.remaining = faults.remaining.checked_sub(1)?;
        Some(fault)
    }

    /// How many armed faults are left (a test waits for its request to have met one).
    fn faults_remaining(&self) -> u32 {
        lock(&self.inner.faults).remaining
    }

    fn set_faults(&self, faults: Faults) {
        *lock(&self.inner.faults) = faults;
    }

    fn set_delivery(&self, change: impl FnOnce(&mut delivery::Mode)) -> delivery::Mode {
        let mut mode = lock(&self.inner.mode);
        change(&mut mode);
        mode.clone()
    }

    fn object(&self, id: &str) -> Result<Json<Value>, StripeError> {
        self.with_state(|state| state.get(id).cloned())
            .map(Json)
            .ok_or_else(|| StripeError::no_such("object", id))
    }

    fn idempotency_begin(
        &self,
        key: &str,
        fingerprint: &str,
    ) -> Result<Option<(u16, Vec<u8>)>, StripeError> {
        use axum::http::StatusCode;
        use state::Idempotent;
        let mut state = lock(&self.inner.state);
        match state.idempotency.get(key) {
            Some(Idempotent::Done {
                fingerprint: first,
                status,
                body,
            }) if first == fingerprint => Ok(Some((*status, body.clone()))),
            Some(Idempotent::InFlight { fingerprint: first }) if first == fingerprint => {
                Err(StripeError::idempotency(
                    StatusCode::CONFLICT,
                    "There is currently another in-progress request using this Idempotent Key. Try again later.",
                ))
            }
            Some(_) => Err(StripeError::idempotency(
                StatusCode::BAD_REQUEST,
                format!(
                    "Keys for idempotent requests can only be used with the same parameters they were first used with. Try using a key other than '{key}' if you meant to execute a different request."
                ),
            )),
            None => {
                state.idempotency.insert(
                    key.to_owned(),
                    Idempotent::InFlight {
                        fingerprint: fingerprint.to_owned(),
                    },
                );
                Ok(None)
            }
        }
    }

    fn idempotency_forget(&self, key: &str) {
        lock(&self.inner.state).idempotency.remove(key);
    }

    fn idempotency_finish(&self, key: &str, fingerprint: &str, status: u16, body: &[u8]) {
        let mut state = lock(&self.inner.state);
        if status >= 400 {
            // Stripe keeps no result for requests refused by validation or failed on its side.
            state.idempotency.remove(key);
        } else {
            state.idempotency.insert(
                key.to_owned(),
                state::Idempotent::Done {
                    fingerprint: fingerprint.to_owned(),
                    status,
                    body: body.to_vec(),
                },
            );
        }
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
            tracing::error!(error = %err, "the Stripe simulator stopped");
        }
    });
    Ok(Spawned { simulator, addr })
}
