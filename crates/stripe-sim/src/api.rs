//! The Stripe-shaped REST API: `/v1/…`, form-encoded requests, `Authorization: Bearer` or Basic,
//! `Idempotency-Key`, Stripe's error JSON and list pagination.

use axum::Json;
use axum::body::{Body, Bytes};
use axum::extract::{Path, RawQuery, Request, State};
use axum::http::{HeaderValue, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde_json::Value;

use crate::error::StripeError;
use crate::{Simulator, flows, form, objects};

type Answer = Result<Json<Value>, StripeError>;

pub fn routes(sim: Simulator) -> axum::Router {
    axum::Router::new()
        .route("/v1/customers", post(create_customer).get(list_customers))
        .route(
            "/v1/customers/{id}",
            get(retrieve("customer")).post(update_customer).delete(delete_customer),
        )
        .route("/v1/billing_portal/sessions", post(create_billing_portal_session))
        .route("/v1/checkout/sessions", post(create_checkout_session).get(list_checkout_sessions))
        .route("/v1/checkout/sessions/{id}", get(retrieve("checkout.session")))
        .route("/v1/checkout/sessions/{id}/expire", post(expire_checkout_session))
        .route("/v1/subscriptions", get(list_subscriptions))
        .route(
            "/v1/subscriptions/{id}",
            get(retrieve("subscription")).post(update_subscription).delete(cancel_subscription),
        )
        .route("/v1/invoices", get(list_invoices))
        .route("/v1/invoices/{id}", get(retrieve_invoice))
        .route("/v1/invoice_payments", get(list_invoice_payments))
        .route("/v1/invoice_payments/{id}", get(retrieve("invoice_payment")))
        .route("/v1/payment_intents", get(list_payment_intents))
        .route("/v1/payment_intents/{id}", get(retrieve("payment_intent")))
        .route("/v1/charges", get(list_charges))
        .route("/v1/charges/{id}", get(retrieve("charge")))
        .route("/v1/refunds", post(create_refund).get(list_refunds))
        .route("/v1/refunds/{id}", get(retrieve("refund")))
        .route("/v1/disputes", get(list_disputes))
        .route("/v1/disputes/{id}", get(retrieve("dispute")))
        .route("/v1/disputes/{id}/close", post(close_dispute))
        .route("/v1/balance_transactions", get(list_balance_transactions))
        .route("/v1/balance_transactions/{id}", get(retrieve("balance_transaction")))
        .route("/v1/payouts", get(list_payouts))
        .route("/v1/payouts/{id}", get(retrieve("payout")))
        .route(
            "/v1/radar/early_fraud_warnings/{id}",
            get(retrieve("radar.early_fraud_warning")),
        )
        .route("/v1/events", get(list_events))
        .route("/v1/events/{id}", get(retrieve("event")))
        .route("/v1/prices", post(create_price))
        .route("/v1/prices/{id}", get(retrieve("price")))
        .route("/v1/products/{id}", get(retrieve("product")))
        .fallback(|| async { StripeError::invalid("path", "Unrecognized request URL. The simulator serves the subset of Stripe's API that Kopilka uses.") })
        .layer(axum::middleware::from_fn_with_state(sim.clone(), idempotency))
        .layer(axum::middleware::from_fn_with_state(sim.clone(), authenticate))
        .layer(axum::middleware::from_fn_with_state(sim.clone(), inject_faults))
        .with_state(sim)
}

/// Faults armed by `POST /_sim/faults` (a test's Stripe outage): a 5xx `api_error` without
/// doing anything, or the request done and its answer held back past the caller's timeout.
async fn inject_faults(State(sim): State<Simulator>, request: Request, next: Next) -> Response {
    match sim.next_fault() {
        None => next.run(request).await,
        Some(crate::Fault::Fail(status)) => StripeError::api_error(
            StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
        )
        .into_response(),
        Some(crate::Fault::SlowAnswer(delay)) => {
            let response = next.run(request).await;
            tokio::time::sleep(delay).await;
            response
        }
    }
}

/// The secret key, as Stripe takes it: `Authorization: Bearer <key>`, or HTTP Basic with
/// the key as the user and no password (Stripe's curl examples: `-u sk_test_…:`).
async fn authenticate(State(sim): State<Simulator>, request: Request, next: Next) -> Response {
    let given = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(api_key);
    if given.as_deref() != Some(sim.secret_key()) {
        return StripeError::unauthorized().into_response();
    }
    next.run(request).await
}

/// The API key an `Authorization` header carries, in either of Stripe's two schemes.
fn api_key(header: &str) -> Option<String> {
    let (scheme, value) = header.split_once(' ')?;
    if scheme.eq_ignore_ascii_case("bearer") {
        return Some(value.trim().to_owned());
    }
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    let decoded = String::from_utf8(base64_decode(value.trim())?).ok()?;
    // The password is ignored, as Stripe ignores it.
    let (user, _password) = decoded.split_once(':').unwrap_or((decoded.as_str(), ""));
    Some(user.to_owned())
}

/// Standard base64 (RFC 4648, padding optional); `None` for anything else.
fn base64_decode(text: &str) -> Option<Vec<u8>> {
    fn value(byte: u8) -> Option<u32> {
        Some(u32::from(match byte {
            b'A'..=b'Z' => byte - b'A',
            b'a'..=b'z' => byte - b'a' + 26,
            b'0'..=b'9' => byte - b'0' + 52,
            b'+' => 62,
            b'/' => 63,
            _ => return None,
        }))
    }
    let bytes = text.trim_end_matches('=').as_bytes();
    let mut out = Vec::with_capacity(bytes.len() * 3 / 4);
    for chunk in bytes.chunks(4) {
        if chunk.len() == 1 {
            return None;
        }
        let mut buffer = 0_u32;
        for (i, byte) in chunk.iter().enumerate() {
            buffer |= value(*byte)? << (18 - 6 * i);
        }
        let [_, a, b, c] = buffer.to_be_bytes();
        out.push(a);
        if chunk.len() > 2 {
            out.push(b);
        }
        if chunk.len() > 3 {
            out.push(c);
        }
    }
    Some(out)
}

/// Stripe's idempotency: a POST with an `Idempotency-Key` runs once; the same key with the
/// same request replays the first answer (`Idempotent-Replayed: true`), with another
/// request it is refused, and while the first is running it conflicts.
async fn idempotency(State(sim): State<Simulator>, request: Request, next: Next) -> Response {
    let key = request
        .headers()
        .get("idempotency-key")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let Some(key) = key.filter(|_| request.method() == Method::POST) else {
        return next.run(request).await;
    };
    let (parts, body) = request.into_parts();
    let Ok(body) = axum::body::to_bytes(body, 1 << 20).await else {
        return StripeError::invalid("body", "Request body too large.").into_response();
    };
    // The same parameters in any order are the same request.
    let fingerprint = format!(
        "{} {} {}",
        parts.method,
        parts.uri.path(),
        form::decode(&body)
    );
    match sim.idempotency_begin(&key, &fingerprint) {
        Ok(Some((status, stored))) => {
            let mut response = (
                StatusCode::from_u16(status).unwrap_or(StatusCode::OK),
                stored,
            )
                .into_response();
            let headers = response.headers_mut();
            headers.insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            );
            headers.insert("idempotent-replayed", HeaderValue::from_static("true"));
            return response;
        }
        Ok(None) => {}
        Err(err) => return err.into_response(),
    }
    // If the request is abandoned (client gone, panic), the key must not stay in flight.
    let mut guard = InFlight {
        sim: sim.clone(),
        key: key.clone(),
        done: false,
    };
    let response = next.run(Request::from_parts(parts, Body::from(body))).await;
    let (parts, body) = response.into_parts();
    let body = axum::body::to_bytes(body, 16 << 20)
        .await
        .unwrap_or_default();
    sim.idempotency_finish(&key, &fingerprint, parts.status.as_u16(), &body);
    guard.done = true;
    Response::from_parts(parts, Body::from(body))
}

/// Forgets an in-flight idempotency key unless its request finished.
struct InFlight {
    sim: Simulator,
    key: String,
    done: bool,
}

impl Drop for InFlight {
    fn drop(&mut self) {
        if !self.done {
            self.sim.idempotency_forget(&self.key);
        }
    }
}

fn request_id() -> String {
    objects::new_id("req_")
}

fn retrieve(
    kind: &'static str,
) -> impl Fn(State<Simulator>, Path<String>) -> std::future::Ready<Answer> + Clone {
    move |State(sim): State<Simulator>, Path(id): Path<String>| {
        std::future::ready(sim.with_state(|state| {
            state
                .get(&id)
                .filter(|o| o["object"] == kind)
                .cloned()
                .map(Json)
                .ok_or_else(|| StripeError::no_such(&kind.replace(['.', '_'], " "), &id))
        }))
    }
}

/// Whether `expand[]` (as decoded from the query) names `field`.
fn expands(query: &Value, field: &str) -> bool {
    match query.get("expand") {
        Some(Value::Array(fields)) => fields.iter().any(|f| f == field),
        Some(Value::Object(fields)) => fields.values().any(|f| f == field),
        Some(Value::String(f)) => f == field,
        _ => false,
    }
}

/// `GET /v1/invoices/{id}`: `payments` is includable, so it is there only with
/// `expand[]=payments`.
async fn retrieve_invoice(
    State(sim): State<Simulator>,
    Path(id): Path<String>,
    RawQuery(query): RawQuery,
) -> Answer {
    let query = form::decode(query.unwrap_or_default().as_bytes());
    sim.with_state(|state| {
        let invoice = state
            .get(&id)
            .filter(|o| o["object"] == "invoice")
            .ok_or_else(|| StripeError::no_such("invoice", &id))?;
        Ok(Json(if expands(&query, "payments") {
            objects::with_payments(invoice, flows::payments_of(state, &id))
        } else {
            invoice.clone()
        }))
    })
}

async fn create_customer(State(sim): State<Simulator>, body: Bytes) -> Answer {
    let params = form::decode(&body);
    let id = sim.act(|state| Ok(flows::create_customer(state, &params, &request_id())))?;
    sim.object(&id)
}

async fn update_customer(
    State(sim): State<Simulator>,
    Path(id): Path<String>,
    body: Bytes,
) -> Answer {
    let params = form::decode(&body);
    sim.act(|state| flows::update_customer(state, &id, &params, &request_id()))?;
    sim.object(&id)
}

async fn delete_customer(State(sim): State<Simulator>, Path(id): Path<String>) -> Answer {
    sim.act(|state| flows::delete_customer(state, &id, &request_id()))?;
    sim.object(&id)
}

async fn create_billing_portal_session(State(sim): State<Simulator>, body: Bytes) -> Answer {
    let params = form::decode(&body);
    let base = sim.base_url();
    let id = sim.act(|state| flows::create_billing_portal_session(state, &params, &base))?;
    sim.object(&id)
}

async fn create_checkout_session(State(sim): State<Simulator>, body: Bytes) -> Answer {
    let params = form::decode(&body);
    let base = sim.base_url();
    let id = sim.act(|state| flows::create_checkout_session(state, &params, &base))?;
    sim.object(&id)
}

async fn expire_checkout_session(State(sim): State<Simulator>, Path(id): Path<String>) -> Answer {
    let request = request_id();
    sim.act(|state| flows::expire_session(state, &id, Some(&request)))?;
    sim.object(&id)
}

async fn create_price(State(sim): State<Simulator>, body: Bytes) -> Answer {
    let params = form::decode(&body);
    let id = sim.act(|state| flows::create_price(state, &params))?;
    sim.object(&id)
}

async fn update_subscription(
    State(sim): State<Simulator>,
    Path(id): Path<String>,
    body: Bytes,
) -> Answer {
    let params = form::decode(&body);
    sim.act(|state| flows::update_subscription(state, &id, &params, &request_id()))?;
    let Json(mut subscription) = sim.object(&id)?;
    let expand = params["expand"].as_array().cloned().unwrap_or_default();
    if expand.iter().any(|e| e == "latest_invoice")
        && let Some(invoice) = subscription["latest_invoice"].as_str()
        && let Ok(Json(invoice)) = sim.object(invoice)
    {
        subscription["latest_invoice"] = invoice;
    }
    Ok(Json(subscription))
}

async fn cancel_subscription(State(sim): State<Simulator>, Path(id): Path<String>) -> Answer {
    let request = request_id();
    sim.act(|state| {
        flows::cancel_subscription(state, &id, Some(&request), "cancellation_requested")
    })?;
    sim.object(&id)
}

async fn create_refund(State(sim): State<Simulator>, body: Bytes) -> Answer {
    let params = form::decode(&body);
    let id = sim.act(|state| flows::create_refund(state, &params, &request_id()))?;
    sim.object(&id)
}

async fn close_dispute(State(sim): State<Simulator>, Path(id): Path<String>) -> Answer {
    sim.act(|state| flows::close_dispute(state, &id, &request_id()))?;
    sim.object(&id)
}

/// Reads a filter's value from the query: `customer=cus_…`.
fn matches(query: &Value, key: &str, object: &Value, field: &str) -> bool {
    query
        .get(key)
        .and_then(Value::as_str)
        .is_none_or(|wanted| object[field].as_str() == Some(wanted))
}

/// `created=N` or `created[gt|gte|lt|lte]=N`.
fn created_matches(query: &Value, object: &Value) -> bool {
    let created = object["created"].as_i64().unwrap_or(0);
    match query.get("created") {
        None => true,
        Some(Value::String(exact)) => exact.parse::<i64>().is_ok_and(|t| t == created),
        Some(range) => ["gt", "gte", "lt", "lte"].iter().all(|op| {
            range
                .get(*op)
                .and_then(Value::as_str)
                .and_then(|t| t.parse::<i64>().ok())
                .is_none_or(|t| match *op {
                    "gt" => created > t,
                    "gte" => created >= t,
                    "lt" => created < t,
                    _ => created <= t,
                })
        }),
    }
}

/// A page of `kind`, newest first, with Stripe's `limit`, `starting_after` and
/// `ending_before`.
fn page(
    sim: &Simulator,
    kind: &str,
    url: &str,
    raw_query: Option<String>,
    filter: impl Fn(&Value, &Value) -> bool,
) -> Answer {
    let query = form::decode(raw_query.unwrap_or_default().as_bytes());
    let limit = match query.get("limit").and_then(Value::as_str) {
        None => 10,
        Some(text) => text
            .parse::<usize>()
            .ok()
            .filter(|l| (1..=100).contains(l))
            .ok_or_else(|| StripeError::invalid("limit", "limit must be between 1 and 100."))?,
    };
    let matching = |o: &&Value| created_matches(&query, o) && filter(&query, o);
    sim.with_state(|state| {
        let (data, has_more): (Vec<Value>, bool) =
            if let Some(before) = query.get("ending_before").and_then(Value::as_str) {
                let all: Vec<&Value> = state.newest_first(kind).filter(matching).collect();
                let before = all
                    .iter()
                    .position(|o| o["id"] == before)
                    .ok_or_else(|| StripeError::no_such(kind, before))?;
                let head = &all[..before];
                let start = head.len().saturating_sub(limit);
                (
                    head[start..].iter().map(|o| (*o).clone()).collect(),
                    start > 0,
                )
            } else {
                // Read lazily from the cursor: a page costs its own length, not the list's.
                let after = query.get("starting_after").and_then(Value::as_str);
                let mut data: Vec<Value> = state
                    .newest_first_after(kind, after)
                    .ok_or_else(|| StripeError::no_such(kind, after.unwrap_or_default()))?
                    .filter(matching)
                    .take(limit + 1)
                    .cloned()
                    .collect();
                let has_more = data.len() > limit;
                data.truncate(limit);
                (data, has_more)
            };
        Ok(Json(objects::list(url, data, has_more)))
    })
}

macro_rules! lister {
    ($name:ident, $kind:literal, $url:literal, |$q:ident, $o:ident| $filter:expr) => {
        async fn $name(State(sim): State<Simulator>, RawQuery(query): RawQuery) -> Answer {
            page(&sim, $kind, $url, query, |$q: &Value, $o: &Value| $filter)
        }
    };
}

// A deleted customer is left out of the list, as Stripe does.
lister!(
    list_customers,
    "customer",
    "/v1/customers",
    |q, o| o["deleted"] != true && matches(q, "email", o, "email")
);
lister!(
    list_checkout_sessions,
    "checkout.session",
    "/v1/checkout/sessions",
    |q, o| matches(q, "customer", o, "customer")
        && matches(q, "subscription", o, "subscription")
        && matches(q, "payment_intent", o, "payment_intent")
        && matches(q, "status", o, "status")
);
lister!(
    list_subscriptions,
    "subscription",
    "/v1/subscriptions",
    |q, o| matches(q, "customer", o, "customer")
        && (q
            .get("status")
            .and_then(Value::as_str)
            .is_some_and(|s| s == "all" || o["status"] == s)
            || (q.get("status").is_none() && o["status"] != "canceled"))
);
lister!(
    list_invoice_payments,
    "invoice_payment",
    "/v1/invoice_payments",
    |q, o| matches(q, "invoice", o, "invoice")
);
lister!(list_invoices, "invoice", "/v1/invoices", |q, o| matches(
    q, "customer", o, "customer"
)
    && matches(q, "status", o, "status")
    && q.get("subscription").and_then(Value::as_str).is_none_or(
        |s| o["parent"]["subscription_details"]["subscription"] == s
    ));
lister!(
    list_payment_intents,
    "payment_intent",
    "/v1/payment_intents",
    |q, o| matches(q, "customer", o, "customer")
);
lister!(list_charges, "charge", "/v1/charges", |q, o| matches(
    q, "customer", o, "customer"
) && matches(
    q,
    "payment_intent",
    o,
    "payment_intent"
));
lister!(list_refunds, "refund", "/v1/refunds", |q, o| matches(
    q, "charge", o, "charge"
) && matches(
    q,
    "payment_intent",
    o,
    "payment_intent"
));
lister!(list_disputes, "dispute", "/v1/disputes", |q, o| matches(
    q, "charge", o, "charge"
)
    && matches(q, "payment_intent", o, "payment_intent"));
/// Balance transactions; `payout=po_…` lists what an automatic payout paid out.
async fn list_balance_transactions(
    State(sim): State<Simulator>,
    RawQuery(query): RawQuery,
) -> Answer {
    let payout_of = sim.with_state(|state| state.payout_of.clone());
    page(
        &sim,
        "balance_transaction",
        "/v1/balance_transactions",
        query,
        |q, o| {
            matches(q, "type", o, "type")
                && matches(q, "source", o, "source")
                && matches(q, "currency", o, "currency")
                && q.get("payout").and_then(Value::as_str).is_none_or(|p| {
                    o["id"]
                        .as_str()
                        .and_then(|id| payout_of.get(id))
                        .is_some_and(|of| of == p)
                })
        },
    )
}
lister!(list_payouts, "payout", "/v1/payouts", |q, o| matches(
    q, "status", o, "status"
));
lister!(list_events, "event", "/v1/events", |q, o| {
    event_type_matches(q, o)
});

/// `type` (with `*` wildcards) or `types[]`.
fn event_type_matches(query: &Value, event: &Value) -> bool {
    let kind = event["type"].as_str().unwrap_or_default();
    let wildcard = |pattern: &str| match pattern.strip_suffix('*') {
        Some(prefix) => kind.starts_with(prefix),
        None => kind == pattern,
    };
    let single = query
        .get("type")
        .and_then(Value::as_str)
        .is_none_or(wildcard);
    let several = query
        .get("types")
        .and_then(Value::as_array)
        .is_none_or(|types| types.iter().filter_map(Value::as_str).any(wildcard));
    single && several
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_key_is_read_from_bearer_or_basic() {
        assert_eq!(api_key("Bearer sk_test_1").as_deref(), Some("sk_test_1"));
        // `curl -u sk_test_1:` sends base64("sk_test_1:").
        assert_eq!(
            api_key("Basic c2tfdGVzdF8xOg==").as_deref(),
            Some("sk_test_1")
        );
        assert_eq!(
            api_key("basic c2tfdGVzdF8xOg").as_deref(),
            Some("sk_test_1")
        );
        assert_eq!(api_key("Basic !!!"), None);
        assert_eq!(api_key("Digest x"), None);
    }
}
