//! The simulator's memory: every object by id, creation order per kind, the event outbox,
//! idempotency records and the clock.

use std::collections::{HashMap, HashSet};
use std::time::{SystemTime, UNIX_EPOCH};

use serde_json::Value;

use crate::objects;

/// What a checkout session sells; Stripe keeps it as line items, which the session object
/// does not show unless expanded.
#[derive(Debug, Clone)]
pub struct SessionPlan {
    pub amount: i64,
    pub currency: String,
    pub interval: Option<String>,
    pub product_name: String,
    pub subscription_metadata: Value,
    /// `payment_intent_data[metadata]`: what the payment intent and its charge carry.
    pub payment_metadata: Value,
    /// `subscription_data[trial_period_days]`: a free trial before the first charge.
    pub trial_days: Option<i64>,
}

/// A stored answer to an idempotent request.
#[derive(Debug, Clone)]
pub enum Idempotent {
    /// The first request with this key is still running.
    InFlight { fingerprint: String },
    /// Its answer, replayed for the same request.
    Done {
        fingerprint: String,
        status: u16,
        body: Vec<u8>,
    },
}

/// Stripe's "Manage failed payments" settings: how many attempts a failed renewal gets in
/// what window, and what happens to the subscription after the last one.
#[derive(Debug, Clone)]
pub struct Dunning {
    /// Attempts in all, the first included (Stripe recommends 8).
    pub attempts: i64,
    /// The window they are spread over, in days (Stripe: 1 week … 2 months; 2 weeks).
    pub window_days: i64,
    /// After the last failure: `canceled`, `unpaid` or `past_due` (leave it as it is).
    pub then: String,
}

impl Default for Dunning {
    fn default() -> Self {
        Self {
            attempts: 8,
            window_days: 14,
            then: "canceled".into(),
        }
    }
}

impl Dunning {
    /// Seconds between two attempts.
    pub fn spacing(&self) -> i64 {
        self.window_days * 86_400 / (self.attempts - 1).max(1)
    }
}

#[derive(Debug, Default)]
pub struct State {
    objects: HashMap<String, Value>,
    order: HashMap<String, Vec<String>>,
    /// Each object's place in its kind's `order`, so a list page starts without a scan.
    place: HashMap<String, usize>,
    pub sessions: HashMap<String, SessionPlan>,
    /// Subscriptions whose card declines at the next charge.
    pub declining: HashSet<String>,
    /// Subscriptions whose card asks for 3-D Secure at the next off-session charge.
    pub authenticating: HashSet<String>,
    /// Subscription changes made with `payment_behavior=pending_if_incomplete` whose invoice
    /// is not paid yet: invoice id → (subscription, the patch to apply once it is paid).
    pub pending_changes: HashMap<String, (String, Value)>,
    /// Where the simulator's hosted pages are (`hosted_invoice_url`).
    pub base_url: String,
    /// The account's retry settings for failed renewals.
    pub dunning: Dunning,
    pub idempotency: HashMap<String, Idempotent>,
    /// Seconds added to the machine's clock by `/_sim/clock/advance`.
    pub clock_offset: i64,
    /// Events emitted and not yet handed to delivery.
    pub outbox: Vec<String>,
    /// Which automatic payout paid out each balance transaction (`?payout=po_…`).
    pub payout_of: HashMap<String, String>,
    /// Which currencies settle as themselves (`/_sim/account`).
    pub account: crate::currencies::Account,
}

fn real_now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}

impl State {
    /// An empty state whose hosted pages are at `base_url`.
    pub fn with_base_url(base_url: String) -> Self {
        Self {
            base_url,
            ..Self::default()
        }
    }

    /// The simulator's now (unix seconds): the machine's clock plus every advance.
    pub fn now(&self) -> i64 {
        real_now().saturating_add(self.clock_offset)
    }

    /// Sets the clock to `at` (only forward), so what happens next is stamped `at`.
    pub fn set_now(&mut self, at: i64) {
        if at > self.now() {
            self.clock_offset = at - real_now();
        }
    }

    /// Stores a new object; its `object` field names its kind.
    pub fn insert(&mut self, object: Value) -> String {
        let id = object["id"].as_str().unwrap_or_default().to_owned();
        let kind = object["object"].as_str().unwrap_or_default().to_owned();
        let order = self.order.entry(kind).or_default();
        self.place.insert(id.clone(), order.len());
        order.push(id.clone());
        self.objects.insert(id.clone(), object);
        id
    }

    pub fn get(&self, id: &str) -> Option<&Value> {
        self.objects.get(id)
    }

    pub fn get_mut(&mut self, id: &str) -> Option<&mut Value> {
        self.objects.get_mut(id)
    }

    /// Objects of `kind`, newest first (Stripe's list order).
    pub fn newest_first(&self, kind: &str) -> impl Iterator<Item = &Value> {
        self.order
            .get(kind)
            .into_iter()
            .flat_map(|ids| ids.iter().rev())
            .filter_map(|id| self.objects.get(id))
    }

    /// Objects of `kind`, newest first, after the one with id `after` (or from the newest);
    /// `None` when `after` is not a `kind`.
    pub fn newest_first_after(
        &self,
        kind: &str,
        after: Option<&str>,
    ) -> Option<impl Iterator<Item = &Value>> {
        let ids = self.order.get(kind).map_or(&[][..], Vec::as_slice);
        let end = match after {
            None => ids.len(),
            Some(id) => {
                let place = *self.place.get(id)?;
                (ids.get(place).is_some_and(|at| at == id)).then_some(place)?
            }
        };
        Some(
            ids[..end]
                .iter()
                .rev()
                .filter_map(|id| self.objects.get(id)),
        )
    }

    /// Emits `event_type` about the object `object_id` as it is now (the event's data is
    /// frozen at emission), to be delivered.
    pub fn emit(
        &mut self,
        event_type: &str,
        object_id: &str,
        previous: Option<Value>,
        request_id: Option<&str>,
    ) {
        let Some(snapshot) = self.objects.get(object_id).cloned() else {
            return;
        };
        let id = objects::new_id("evt_");
        let event = objects::event(&id, event_type, snapshot, previous, request_id, self.now());
        self.insert(event);
        self.outbox.push(id);
    }
}
