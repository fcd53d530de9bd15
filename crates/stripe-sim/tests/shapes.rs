//! Shapes: every object the simulator answers or sends, through every flow Kopilka uses,
//! has exactly the keys of Stripe's example object of its type (`fixtures/objects.json`,
//! copied from Stripe's `fixtures3.json`) at every level the example fixes, and is `null`
//! wherever Stripe's example is `null` unless a flow sets that field (the list below).
//! Includable fields (`invoice.payments`, `checkout.session.line_items`) are absent unless
//! expanded.

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use kopilka_stripe_sim::{SimOptions, Spawned, spawn};
use serde_json::{Map, Value, json};

struct Sim {
    spawned: Spawned,
    http: reqwest::Client,
    /// Every object answered by the API so far.
    seen: std::sync::Mutex<Vec<(String, Value)>>,
}

/// Webhook deliveries as received (their bodies).
type Deliveries = Arc<Mutex<Vec<Value>>>;

async fn listen() -> (String, Deliveries) {
    let deliveries = Deliveries::default();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let app = axum::Router::new()
        .route(
            "/hook",
            axum::routing::post(
                |axum::extract::State(d): axum::extract::State<Deliveries>,
                 body: axum::body::Bytes| async move {
                    d.lock()
                        .unwrap()
                        .push(serde_json::from_slice(&body).unwrap());
                    axum::http::StatusCode::OK
                },
            ),
        )
        .with_state(deliveries.clone());
    tokio::spawn(async move { axum::serve(listener, app).await });
    (format!("http://{addr}/hook"), deliveries)
}

/// The deliveries, once `count` have arrived.
async fn delivered(deliveries: &Deliveries, count: usize) -> Vec<Value> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let received = deliveries.lock().unwrap().clone();
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

impl Sim {
    async fn start() -> Self {
        let spawned = spawn("127.0.0.1:0".parse().unwrap(), SimOptions::default())
            .await
            .unwrap();
        Self {
            spawned,
            http: reqwest::Client::new(),
            seen: std::sync::Mutex::default(),
        }
    }

    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.spawned.addr)
    }

    async fn send(&self, what: &str, request: reqwest::RequestBuilder) -> (u16, Value) {
        let response = request
            .bearer_auth(self.spawned.simulator.secret_key())
            .send()
            .await
            .unwrap();
        let status = response.status().as_u16();
        let body: Value = response.json().await.unwrap();
        self.seen
            .lock()
            .unwrap()
            .push((what.to_owned(), body.clone()));
        (status, body)
    }

    async fn get(&self, path: &str) -> Value {
        let (status, body) = self
            .send(&format!("GET {path}"), self.http.get(self.url(path)))
            .await;
        assert_eq!(status, 200, "GET {path}: {body}");
        body
    }

    async fn post(&self, path: &str, form: &[(&str, &str)]) -> Value {
        let (status, body) = self
            .send(
                &format!("POST {path}"),
                self.http.post(self.url(path)).form(form),
            )
            .await;
        assert_eq!(status, 200, "POST {path}: {body}");
        body
    }

    async fn control(&self, path: &str, body: Value) -> Value {
        let response = self
            .http
            .post(self.url(path))
            .json(&body)
            .send()
            .await
            .unwrap();
        assert!(response.status().is_success(), "{path}");
        response.json().await.unwrap()
    }

    async fn advance_days(&self, days: i64) {
        self.control("/_sim/clock/advance", json!({"seconds": days * 86_400}))
            .await;
    }

    async fn session(&self, mode: &str, amount: &str, interval: Option<&str>) -> Value {
        let mut form = vec![
            ("mode", mode),
            ("line_items[0][price_data][currency]", "usd"),
            ("line_items[0][price_data][unit_amount]", amount),
            ("line_items[0][price_data][product_data][name]", "Support"),
            ("line_items[0][quantity]", "1"),
            ("success_url", "https://news.example.org/thanks"),
            ("cancel_url", "https://news.example.org/support"),
            ("client_reference_id", "c-1"),
            ("metadata[contribution_id]", "c-1"),
        ];
        if let Some(interval) = interval {
            form.push(("line_items[0][price_data][recurring][interval]", interval));
            form.push(("subscription_data[metadata][contribution_id]", "c-1"));
        } else {
            form.push(("submit_type", "donate"));
        }
        self.post("/v1/checkout/sessions", &form).await
    }

    /// A session of `mode` paid (or declined) on the simulator's page; the session after.
    async fn paid(&self, amount: &str, interval: Option<&str>, action: &str) -> Value {
        let mode = if interval.is_some() {
            "subscription"
        } else {
            "payment"
        };
        let session = self.session(mode, amount, interval).await;
        let id = session["id"].as_str().unwrap();
        self.control(
            &format!("/_sim/checkout/{id}/{action}"),
            json!({"email": "donor@example.org"}),
        )
        .await;
        self.get(&format!("/v1/checkout/sessions/{id}")).await
    }

    /// Every page of a list.
    async fn all(&self, path: &str) -> Vec<Value> {
        let mut out = Vec::new();
        let mut after: Option<String> = None;
        loop {
            let sep = if path.contains('?') { '&' } else { '?' };
            let page = self
                .get(&format!(
                    "{path}{sep}limit=100{}",
                    after
                        .as_ref()
                        .map(|a| format!("&starting_after={a}"))
                        .unwrap_or_default()
                ))
                .await;
            let data = page["data"].as_array().unwrap().clone();
            after = data.last().map(|o| o["id"].as_str().unwrap().to_owned());
            out.extend(data);
            if page["has_more"] != true {
                return out;
            }
        }
    }
}

/// Fields Stripe's example leaves `null` that a flow of the simulator sets, as Stripe does
/// (`type`, dotted path).
const SET_BY_FLOWS: &[(&str, &str)] = &[
    ("checkout.session", "client_reference_id"),
    ("checkout.session", "customer"),
    ("checkout.session", "subscription"),
    ("checkout.session", "invoice"),
    ("checkout.session", "submit_type"),
    ("checkout.session", "payment_method_collection"),
    ("checkout.session", "amount_subtotal"),
    ("checkout.session", "amount_total"),
    ("checkout.session", "currency"),
    // Stripe answers `if_required` (payment mode) or `always` when the request leaves it out.
    ("checkout.session", "customer_creation"),
    ("customer", "email"),
    ("payment_intent", "latest_charge"),
    ("payment_intent", "customer"),
    ("payment_intent", "description"),
    ("payment_intent", "payment_method"),
    ("charge", "customer"),
    ("charge", "failure_code"),
    ("charge", "failure_message"),
    ("charge", "outcome.reason"),
    ("charge", "outcome.network_status"),
    ("charge", "outcome.seller_message"),
    ("charge", "payment_intent"),
    ("refund", "payment_intent"),
    ("refund", "reason"),
    ("refund", "balance_transaction"),
    ("dispute", "payment_intent"),
    // Money Stripe converted to the settlement currency.
    ("dispute", "balance_transactions[].exchange_rate"),
    ("balance_transaction", "exchange_rate"),
    ("subscription", "latest_invoice"),
    ("subscription", "cancellation_details.reason"),
    ("invoice", "customer_email"),
    ("invoice", "number"),
    ("invoice", "status_transitions.finalized_at"),
    ("invoice", "status_transitions.paid_at"),
    ("invoice", "status_transitions.voided_at"),
    ("invoice", "hosted_invoice_url"),
    ("invoice", "lines.data[].subscription"),
    ("invoice", "lines.data[].pricing.unit_amount_decimal"),
    ("invoice", "lines.data[].quantity_decimal"),
    ("invoice", "ending_balance"),
    ("invoice", "parent.subscription_details.metadata"),
    ("invoice_payment", "status_transitions.paid_at"),
    ("invoice_payment", "amount_paid"),
    ("event", "api_version"),
    ("event", "request.id"),
    ("subscription", "items.data[].plan.amount"),
    ("subscription", "items.data[].plan.amount_decimal"),
    ("subscription", "items.data[].plan.metadata"),
    ("subscription", "items.data[].plan.product"),
    ("subscription", "pending_update.billing_cycle_anchor"),
    ("subscription", "pending_update.subscription_items"),
];

/// Keys Stripe documents as present only in some states, which its example (an object in
/// another state) lacks: (`type`, dotted path of the map, key, when).
const OPTIONAL: &[(&str, &str, &str)] = &[
    // A card error (Stripe's example is an idempotency error).
    ("payment_intent", "last_payment_error", "charge"),
    ("payment_intent", "last_payment_error", "code"),
    ("payment_intent", "last_payment_error", "decline_code"),
    ("payment_intent", "last_payment_error", "message"),
    // "The PaymentMethod object for errors returned on a request involving a PaymentMethod"
    // (Stripe's API reference): the card that was declined, its fingerprint included.
    ("payment_intent", "last_payment_error", "payment_method"),
];

/// Whether `key`, absent from the example at `path`, may be there: a state-dependent key
/// ([`OPTIONAL`]; a failed refund's `failure_reason` and `failure_balance_transaction`, which
/// say why and name the transaction that gave the money back), or the sub-object Stripe's polymorphic `{"type": X, X: {…}}` names.
fn optional(kind: &str, path: &str, key: &str, actual: &Map<String, Value>) -> bool {
    let path = if path == "." { "" } else { path };
    OPTIONAL.contains(&(kind, path, key))
        || (kind == "refund"
            && path.is_empty()
            && actual["status"] == "failed"
            && key.starts_with("failure_"))
        || actual.get("type").and_then(Value::as_str) == Some(key)
}

/// Sub-objects of Stripe's examples that are what Stripe sends for a card payment of an
/// account without tax, shipping or Connect (the simulator keeps them as they are).
const STRIPES_DEFAULTS: &[(&str, &str)] = &[
    ("checkout.session", "automatic_tax"),
    ("checkout.session", "consent"),
    ("checkout.session", "permissions"),
    ("checkout.session", "phone_number_collection"),
    ("checkout.session", "saved_payment_method_options"),
    ("checkout.session", "payment_method_types"),
    ("customer", "invoice_settings"),
    ("invoice", "automatic_tax"),
    ("invoice", "customer_address"),
    ("invoice", "issuer"),
    ("invoice", "rendering"),
    ("invoice", "status_transitions"),
    ("subscription", "automatic_tax"),
    ("subscription", "invoice_settings"),
    ("subscription", "trial_settings"),
    ("subscription", "cancellation_details"),
    ("payment_intent", "amount_details"),
    ("payment_intent", "payment_method_types"),
    ("refund", "destination_details"),
    ("event", "request"),
    ("price", "recurring"),
    ("dispute", "evidence"),
    ("dispute", "payment_method_details"),
    ("charge", "payment_method_details.card.checks"),
    (
        "charge",
        "payment_method_details.card.extended_authorization",
    ),
    (
        "charge",
        "payment_method_details.card.incremental_authorization",
    ),
    ("charge", "payment_method_details.card.multicapture"),
    ("charge", "payment_method_details.card.network_token"),
    ("subscription", "items.data[].price.recurring"),
];

/// Whether `path` is (within) one of [`STRIPES_DEFAULTS`].
fn default_of_stripe(kind: &str, path: &str) -> bool {
    STRIPES_DEFAULTS
        .iter()
        .any(|(k, p)| *k == kind && (path == *p || path.starts_with(&format!("{p}."))))
}

/// A value copied from Stripe's example that no flow decided: an id of Stripe's test
/// account, a placeholder string, one of the example's invented large numbers, or a whole
/// sub-object of the example (e.g. `currency_conversion`, `shipping_cost`) not in
/// [`STRIPES_DEFAULTS`].
fn copied(kind: &str, path: &str, example: &Value, actual: &Value) -> bool {
    if example != actual {
        return false;
    }
    let key = path.rsplit('.').next().unwrap_or(path);
    match actual {
        Value::Object(map) => !map.is_empty() && !free_form(path) && !default_of_stripe(kind, path),
        Value::Array(items) => !items.is_empty() && !default_of_stripe(kind, path),
        Value::String(s) => {
            [
                "B7WZ01zgkW",
                "created for API docs",
                "example.com",
                "stripe.me",
                "obj_123",
            ]
            .iter()
            .any(|p| s.contains(p))
                || s == key
        }
        Value::Number(n) => n
            .as_i64()
            .is_some_and(|n| n.abs() >= 100_000 && n != 1_234_567_890),
        _ => false,
    }
}

/// Free-form maps: any keys.
fn free_form(path: &str) -> bool {
    path.ends_with("metadata") || path.ends_with("previous_attributes")
}

fn check(kind: &str, path: &str, example: &Value, actual: &Value, errors: &mut Vec<String>) {
    let at = if path.is_empty() { "." } else { path };
    if !path.is_empty() && copied(kind, path, example, actual) {
        errors.push(format!(
            "{kind} {at}: {actual} is copied from Stripe's example"
        ));
        return;
    }
    match (example, actual) {
        (Value::Object(example), Value::Object(actual)) => {
            if free_form(path) {
                return;
            }
            // An event's object is checked as an object of its own type.
            if kind == "event" && path == "data" {
                let keys: BTreeSet<_> = actual.keys().collect();
                let allowed: BTreeSet<_> = ["object", "previous_attributes"].iter().collect();
                if !keys
                    .iter()
                    .all(|k| allowed.iter().any(|a| **a == k.as_str()))
                {
                    errors.push(format!("{kind} {at}: keys {keys:?}"));
                }
                return;
            }
            keys(kind, at, example, actual, errors);
            for (key, value) in actual {
                if let Some(expected) = example.get(key) {
                    let path = if path.is_empty() {
                        key.clone()
                    } else {
                        format!("{path}.{key}")
                    };
                    check(kind, &path, expected, value, errors);
                }
            }
        }
        (Value::Array(example), Value::Array(actual)) => {
            if let Some(first) = example.first() {
                for item in actual {
                    check(kind, &format!("{path}[]"), first, item, errors);
                }
            }
        }
        (_, Value::Null) => {}
        (Value::Null, _) if !SET_BY_FLOWS.contains(&(kind, path)) => {
            errors.push(format!(
                "{kind} {at}: null in Stripe's example, {actual} here"
            ));
        }
        // A flow sets what Stripe's example leaves null.
        (Value::Null, _) => {}
        (Value::Object(_) | Value::Array(_), _) | (_, Value::Object(_) | Value::Array(_)) => {
            errors.push(format!(
                "{kind} {at}: Stripe's example is {example}, here {actual}"
            ));
        }
        _ => {}
    }
}

fn keys(
    kind: &str,
    at: &str,
    example: &Map<String, Value>,
    actual: &Map<String, Value>,
    errors: &mut Vec<String>,
) {
    let want: BTreeSet<_> = example.keys().collect();
    let have: BTreeSet<_> = actual
        .keys()
        .filter(|k| example.contains_key(*k) || !optional(kind, at, k, actual))
        .collect();
    let missing: Vec<_> = want.difference(&have).collect();
    let extra: Vec<_> = have.difference(&want).collect();
    if !missing.is_empty() || !extra.is_empty() {
        errors.push(format!(
            "{kind} {at}: missing {missing:?}, not in Stripe's example {extra:?}"
        ));
    }
}

fn templates() -> Map<String, Value> {
    serde_json::from_str(include_str!("../fixtures/objects.json")).unwrap()
}

/// Checks one object answered or sent (`from` says where), and the objects it embeds as
/// lists' items or an event's object.
fn check_object(
    templates: &Map<String, Value>,
    from: &str,
    object: &Value,
    seen: &mut BTreeSet<String>,
    errors: &mut Vec<String>,
) {
    let Some(kind) = object["object"].as_str() else {
        // An error body: Stripe's shape.
        if let Some(error) = object.get("error") {
            let allowed = [
                "type",
                "message",
                "code",
                "param",
                "decline_code",
                "doc_url",
                "request_log_url",
                "charge",
                "payment_intent",
                "advice_code",
            ];
            for key in error.as_object().unwrap().keys() {
                if !allowed.contains(&key.as_str()) {
                    errors.push(format!("{from}: error body has {key}"));
                }
            }
            seen.insert("error".into());
        }
        return;
    };
    if kind == "list" {
        let keys: BTreeSet<_> = object.as_object().unwrap().keys().cloned().collect();
        let want: BTreeSet<String> = ["object", "data", "has_more", "url"]
            .iter()
            .map(|s| (*s).to_owned())
            .collect();
        if keys != want {
            errors.push(format!("{from}: list keys {keys:?}"));
        }
        seen.insert("list".into());
        for item in object["data"].as_array().unwrap() {
            check_object(templates, from, item, seen, errors);
        }
        return;
    }
    let name = if object["deleted"] == true {
        format!("deleted_{kind}")
    } else {
        kind.to_owned()
    };
    let Some(example) = templates.get(&name) else {
        errors.push(format!("{from}: no example of {name}"));
        return;
    };
    seen.insert(name.clone());
    let mut found = Vec::new();
    let mut object = object.clone();
    if kind == "invoice" && from.contains("expand[]=payments") {
        let payments = object.as_object_mut().unwrap().remove("payments");
        let payments = payments.unwrap_or_else(|| panic!("{from}: not expanded"));
        check_object(templates, from, &payments, seen, errors);
    }
    let object = &object;
    check(&name, "", example, object, &mut found);
    errors.extend(
        found
            .into_iter()
            .map(|e| format!("{e}   [{from} {}]", object["id"])),
    );
    if kind == "event" {
        check_object(
            templates,
            &format!("{from} {}", object["type"]),
            &object["data"]["object"],
            seen,
            errors,
        );
    }
}

#[tokio::test]
async fn every_object_of_every_flow_has_the_shape_of_stripes_example() {
    let sim = Sim::start().await;
    let (hook, deliveries) = listen().await;
    sim.control("/_sim/delivery", json!({"webhook_url": hook}))
        .await;

    // Customers, the billing portal.
    let customer = sim
        .post(
            "/v1/customers",
            &[
                ("email", "reader@example.org"),
                ("metadata[reader_id]", "r1"),
            ],
        )
        .await;
    let cus = customer["id"].as_str().unwrap().to_owned();
    sim.post(
        "/v1/billing_portal/sessions",
        &[
            ("customer", cus.as_str()),
            ("return_url", "https://news.example.org/account"),
            ("flow_data[type]", "payment_method_update"),
        ],
    )
    .await;
    sim.post("/v1/billing_portal/sessions", &[("customer", cus.as_str())])
        .await;

    // One-off payments: paid, declined, expired; refunds (one failing); disputes of each
    // kind.
    let mut intents = Vec::new();
    for amount in [
        "2500", "1000", "1200", "1300", "1400", "1500", "1600", "1700",
    ] {
        let session = sim.paid(amount, None, "pay").await;
        intents.push(session["payment_intent"].as_str().unwrap().to_owned());
    }
    sim.paid("900", None, "decline").await;
    let open = sim.session("payment", "800", None).await;
    sim.post(
        &format!(
            "/v1/checkout/sessions/{}/expire",
            open["id"].as_str().unwrap()
        ),
        &[],
    )
    .await;
    sim.post(
        "/v1/refunds",
        &[("payment_intent", intents[0].as_str()), ("amount", "1000")],
    )
    .await;
    let refund = sim
        .post(
            "/v1/refunds",
            &[
                ("payment_intent", intents[1].as_str()),
                ("reason", "requested_by_customer"),
                ("metadata[contribution_id]", "c-2"),
            ],
        )
        .await;
    sim.control(
        &format!("/_sim/refunds/{}/fail", refund["id"].as_str().unwrap()),
        json!({}),
    )
    .await;
    for (pi, kind, outcome) in [
        (&intents[2], "chargeback", "won"),
        (&intents[3], "chargeback", "lost"),
        (&intents[4], "inquiry", "lost"),
    ] {
        let dispute = sim
            .control(
                "/_sim/disputes",
                json!({"payment_intent": pi, "kind": kind}),
            )
            .await;
        sim.control(
            &format!("/_sim/disputes/{}/close", dispute["id"].as_str().unwrap()),
            json!({"outcome": outcome}),
        )
        .await;
    }
    // An inquiry under review, escalated to a chargeback, under review, lost; an early
    // fraud warning.
    let inquiry = sim
        .control(
            "/_sim/disputes",
            json!({"payment_intent": intents[6], "kind": "inquiry"}),
        )
        .await;
    let inquiry = inquiry["id"].as_str().unwrap();
    for step in ["review", "escalate", "review"] {
        sim.control(&format!("/_sim/disputes/{inquiry}/{step}"), json!({}))
            .await;
    }
    sim.post(&format!("/v1/disputes/{inquiry}/close"), &[])
        .await;
    let warning = sim
        .control(
            "/_sim/early_fraud_warnings",
            json!({"payment_intent": intents[7]}),
        )
        .await;
    sim.get(&format!(
        "/v1/radar/early_fraud_warnings/{}",
        warning["id"].as_str().unwrap()
    ))
    .await;
    let dispute = sim
        .control("/_sim/disputes", json!({"payment_intent": intents[5]}))
        .await;
    sim.post(
        &format!("/v1/disputes/{}/close", dispute["id"].as_str().unwrap()),
        &[],
    )
    .await;

    // Plans: monthly and annual, renewals, a decline and dunning, a $0 month, a switch,
    // 3-D Secure, cancel; a customer deleted with its plan.
    let monthly = sim.paid("500", Some("month"), "pay").await;
    let annual = sim.paid("6000", Some("year"), "pay").await;
    let doomed = sim.paid("700", Some("month"), "pay").await;
    let trial = sim
        .post(
            "/v1/checkout/sessions",
            &[
                ("mode", "subscription"),
                ("line_items[0][price_data][currency]", "usd"),
                ("line_items[0][price_data][unit_amount]", "800"),
                ("line_items[0][price_data][recurring][interval]", "month"),
                ("line_items[0][price_data][product_data][name]", "Trial"),
                ("line_items[0][quantity]", "1"),
                ("subscription_data[trial_period_days]", "7"),
                ("success_url", "https://news.example.org/thanks"),
            ],
        )
        .await;
    sim.control(
        &format!("/_sim/checkout/{}/pay", trial["id"].as_str().unwrap()),
        json!({}),
    )
    .await;
    let monthly_sub = monthly["subscription"].as_str().unwrap().to_owned();
    let annual_sub = annual["subscription"].as_str().unwrap().to_owned();
    sim.control(
        &format!("/_sim/subscriptions/{monthly_sub}/credit"),
        json!({}),
    )
    .await;
    sim.advance_days(32).await;
    sim.control(
        &format!("/_sim/subscriptions/{monthly_sub}/card"),
        json!({"outcome": "decline"}),
    )
    .await;
    sim.advance_days(32).await;
    sim.advance_days(4).await;
    sim.control(
        &format!("/_sim/subscriptions/{monthly_sub}/card"),
        json!({"outcome": "succeed"}),
    )
    .await;
    sim.advance_days(10).await;
    let subscription = sim.get(&format!("/v1/subscriptions/{annual_sub}")).await;
    let product = subscription["items"]["data"][0]["price"]["product"]
        .as_str()
        .unwrap()
        .to_owned();
    sim.get(&format!("/v1/products/{product}")).await;
    sim.post(
        &format!("/v1/subscriptions/{annual_sub}"),
        &[
            (
                "items[0][id]",
                subscription["items"]["data"][0]["id"].as_str().unwrap(),
            ),
            ("items[0][price_data][currency]", "usd"),
            ("items[0][price_data][unit_amount]", "600"),
            ("items[0][price_data][product]", product.as_str()),
            ("items[0][price_data][recurring][interval]", "month"),
            ("proration_behavior", "create_prorations"),
        ],
    )
    .await;
    sim.control(
        &format!("/_sim/subscriptions/{annual_sub}/card"),
        json!({"outcome": "require_action"}),
    )
    .await;
    let price = sim
        .post(
            "/v1/prices",
            &[
                ("currency", "usd"),
                ("unit_amount", "7000"),
                ("product", product.as_str()),
                ("recurring[interval]", "year"),
            ],
        )
        .await;
    let subscription = sim.get(&format!("/v1/subscriptions/{annual_sub}")).await;
    sim.post(
        &format!("/v1/subscriptions/{annual_sub}"),
        &[
            (
                "items[0][id]",
                subscription["items"]["data"][0]["id"].as_str().unwrap(),
            ),
            ("items[0][price]", price["id"].as_str().unwrap()),
            ("proration_behavior", "always_invoice"),
            ("payment_behavior", "pending_if_incomplete"),
        ],
    )
    .await;
    sim.post(
        &format!("/v1/subscriptions/{monthly_sub}"),
        &[("cancel_at_period_end", "true")],
    )
    .await;
    let (status, _) = sim
        .send(
            "DELETE subscription",
            sim.http
                .delete(sim.url(&format!("/v1/subscriptions/{monthly_sub}"))),
        )
        .await;
    assert_eq!(status, 200);
    let doomed_customer = doomed["customer"].as_str().unwrap().to_owned();
    let (status, _) = sim
        .send(
            "DELETE customer",
            sim.http
                .delete(sim.url(&format!("/v1/customers/{doomed_customer}"))),
        )
        .await;
    assert_eq!(status, 200);
    sim.get(&format!("/v1/customers/{doomed_customer}")).await;
    // Two days on, the balance is paid out.
    sim.advance_days(3).await;

    // Errors.
    let (status, _) = sim
        .send(
            "GET missing",
            sim.http.get(sim.url("/v1/charges/ch_nothing")),
        )
        .await;
    assert_eq!(status, 404);
    let (status, _) = sim
        .send(
            "POST bad",
            sim.http
                .post(sim.url("/v1/checkout/sessions"))
                .form(&[("mode", "nonsense")]),
        )
        .await;
    assert_eq!(status, 400);

    // Retrieve and list everything there is.
    for path in [
        "/v1/customers",
        "/v1/checkout/sessions",
        "/v1/subscriptions?status=all",
        "/v1/invoices",
        "/v1/invoice_payments",
        "/v1/payment_intents",
        "/v1/charges",
        "/v1/refunds",
        "/v1/disputes",
        "/v1/balance_transactions",
        "/v1/payouts",
        "/v1/events",
    ] {
        for object in sim.all(path).await {
            let kind = object["object"].as_str().unwrap();
            let collection = path.split('?').next().unwrap();
            let one = sim
                .get(&format!("{collection}/{}", object["id"].as_str().unwrap()))
                .await;
            assert_eq!(one["object"], kind);
        }
    }
    let invoices = sim.all("/v1/invoices").await;
    for invoice in &invoices {
        assert_eq!(invoice.get("payments"), None, "includable: {invoice}");
        sim.get(&format!(
            "/v1/invoices/{}?expand[]=payments",
            invoice["id"].as_str().unwrap()
        ))
        .await;
    }
    for session in sim.all("/v1/checkout/sessions").await {
        assert_eq!(session.get("line_items"), None, "includable: {session}");
    }
    let prices: BTreeSet<String> = sim
        .all("/v1/subscriptions?status=all")
        .await
        .iter()
        .map(|s| {
            s["items"]["data"][0]["price"]["id"]
                .as_str()
                .unwrap()
                .to_owned()
        })
        .collect();
    for price in prices {
        sim.get(&format!("/v1/prices/{price}")).await;
    }

    // Every object answered, and every event's object (as webhooks carry it).
    let templates = templates();
    let mut errors = Vec::new();
    let mut seen = BTreeSet::new();
    let answers = sim.seen.lock().unwrap().clone();
    if let Ok(path) = std::env::var("SHAPES_DUMP") {
        std::fs::write(path, serde_json::to_string(&answers).unwrap()).unwrap();
    }
    for (from, body) in &answers {
        check_object(&templates, from, body, &mut seen, &mut errors);
    }
    let events: Vec<&Value> = answers
        .iter()
        .filter(|(_, b)| b["object"] == "event")
        .map(|(_, b)| b)
        .collect();
    let all_events = sim.all("/v1/events").await;
    let delivered = delivered(&deliveries, all_events.len()).await;
    assert_eq!(delivered.len(), all_events.len());
    for event in &delivered {
        check_object(&templates, "webhook", event, &mut seen, &mut errors);
    }
    // What a webhook carries is the event the API answers, byte for byte in JSON terms.
    for event in &all_events {
        assert!(
            delivered.contains(event),
            "delivered as listed: {}",
            event["id"]
        );
    }
    for event in events.iter().copied().chain(&delivered) {
        assert_eq!(
            event["data"]["object"].get("payments"),
            None,
            "includable: {event}"
        );
    }
    errors.sort();
    errors.dedup_by(|a, b| a.split("   [").next() == b.split("   [").next());
    assert!(
        errors.is_empty(),
        "{} divergences from Stripe's examples:\n{}",
        errors.len(),
        errors.join("\n")
    );
    for kind in [
        "checkout.session",
        "customer",
        "deleted_customer",
        "subscription",
        "invoice",
        "invoice_payment",
        "payment_intent",
        "charge",
        "refund",
        "dispute",
        "balance_transaction",
        "payout",
        "price",
        "product",
        "billing_portal.session",
        "event",
        "list",
        "error",
        "radar.early_fraud_warning",
    ] {
        assert!(seen.contains(kind), "no {kind} was checked: {seen:?}");
    }
}
