//! The Greenfield routes: invoices of the one store, their payment methods and manual
//! marking, and store webhooks with their deliveries. Auth is `Authorization: token <key>`;
//! errors are BTCPay's `ProblemDetails` (`{"code","message"}`) or, for a refused body, its
//! `ValidationProblemDetails` (`[{"path","message"}]`).

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, RawQuery, State};
use axum::http::{HeaderMap, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use kopilka_domain::Currency;
use serde_json::{Value, json};

use crate::invoice::{self, Invoice};
use crate::{Simulator, ids, lock};

type Answer = Result<Response, Problem>;

/// An error answer: a status and BTCPay's error body.
pub struct Problem {
    status: StatusCode,
    body: Value,
}

impl IntoResponse for Problem {
    fn into_response(self) -> Response {
        (self.status, axum::Json(self.body)).into_response()
    }
}

fn problem(status: StatusCode, code: &str, message: &str) -> Problem {
    Problem {
        status,
        body: json!({ "code": code, "message": message }),
    }
}

fn invalid(path: &str, message: &str) -> Problem {
    Problem {
        status: StatusCode::BAD_REQUEST,
        body: json!([{ "path": path, "message": message }]),
    }
}

fn ok(value: Value) -> Answer {
    Ok(axum::Json(value).into_response())
}

fn not_found(what: &str) -> Problem {
    problem(
        StatusCode::NOT_FOUND,
        &format!("{what}-not-found"),
        &format!("The {what} was not found"),
    )
}

impl Simulator {
    /// Records the request, then checks its API key and, when given, its store.
    fn authorise(
        &self,
        method: &Method,
        path: &str,
        query: Option<&str>,
        headers: &HeaderMap,
        body: &[u8],
        store_id: Option<&str>,
    ) -> Result<(), Problem> {
        self.record(method.as_str(), path, query, body);
        let expected = format!("token {}", self.api_key());
        let given = headers
            .get(axum::http::header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok());
        if given != Some(expected.as_str()) {
            return Err(problem(
                StatusCode::UNAUTHORIZED,
                "unauthenticated",
                "Authentication is required for accessing this endpoint",
            ));
        }
        if store_id.is_some_and(|s| s != self.store_id()) {
            return Err(problem(
                StatusCode::FORBIDDEN,
                "missing-permission",
                "Insufficient API Permissions. Please use an API key with the permission for this store.",
            ));
        }
        Ok(())
    }
}

pub fn routes(sim: Simulator) -> Router {
    Router::new()
        .route(
            "/api/v1/stores/{store_id}/invoices",
            post(create_invoice).get(list_invoices),
        )
        .route("/api/v1/invoices/{invoice_id}", get(get_invoice))
        .route(
            "/api/v1/invoices/{invoice_id}/payment-methods",
            get(payment_methods),
        )
        .route("/api/v1/invoices/{invoice_id}/status", post(mark_status))
        .route(
            "/api/v1/stores/{store_id}/webhooks",
            post(create_webhook).get(list_webhooks),
        )
        .route(
            "/api/v1/webhooks/{webhook_id}",
            get(get_webhook).delete(delete_webhook),
        )
        .route(
            "/api/v1/webhooks/{webhook_id}/deliveries",
            get(list_deliveries),
        )
        .route(
            "/api/v1/webhooks/{webhook_id}/deliveries/{delivery_id}",
            get(get_delivery),
        )
        .route(
            "/api/v1/webhooks/{webhook_id}/deliveries/{delivery_id}/request",
            get(delivery_request),
        )
        .route(
            "/api/v1/webhooks/{webhook_id}/deliveries/{delivery_id}/redeliver",
            post(redeliver),
        )
        .layer(axum::middleware::from_fn_with_state(
            sim.clone(),
            inject_faults,
        ))
        .with_state(sim)
}

/// Faults armed by `POST /_sim/faults`: a 5xx as the server's reverse proxy answers while it
/// is down (an HTML page, no Greenfield body), or a 400 as Greenfield refuses a request
/// (`ValidationProblemDetails`); nothing done either way.
async fn inject_faults(
    State(sim): State<Simulator>,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    match sim.next_fault() {
        None => next.run(request).await,
        Some(400) => invalid("amount", "The amount is not accepted by this store").into_response(),
        Some(status) => (
            StatusCode::from_u16(status).unwrap_or(StatusCode::SERVICE_UNAVAILABLE),
            [(axum::http::header::CONTENT_TYPE, "text/html")],
            "<html><body><h1>503 Service Temporarily Unavailable</h1></body></html>",
        )
            .into_response(),
    }
}

fn text_of(value: Option<&Value>) -> Option<String> {
    match value? {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

async fn create_invoice(
    State(sim): State<Simulator>,
    Path(store_id): Path<String>,
    method: Method,
    headers: HeaderMap,
    body: Bytes,
) -> Answer {
    let path = format!("/api/v1/stores/{store_id}/invoices");
    sim.authorise(&method, &path, None, &headers, &body, Some(&store_id))?;
    let Ok(Value::Object(request)) = serde_json::from_slice::<Value>(&body) else {
        return Err(invalid("", "The request body is not a JSON object"));
    };
    let currency_text = text_of(request.get("currency")).unwrap_or_else(|| "USD".to_owned());
    let Ok(currency) = currency_text.to_ascii_uppercase().parse::<Currency>() else {
        return Err(invalid("currency", "Invalid currency"));
    };
    let Some(amount_text) = text_of(request.get("amount")) else {
        return Err(invalid(
            "amount",
            "The simulator does not create top-up invoices: give an amount",
        ));
    };
    let amount = kopilka_btcpay::parse_fiat_amount(&amount_text, currency)
        .map_err(|_| invalid("amount", "Invalid amount"))?;
    if !amount.is_positive() {
        return Err(invalid("amount", "The amount should be more than 0."));
    }
    let metadata = match request.get("metadata") {
        None | Some(Value::Null) => json!({}),
        Some(Value::Object(m)) => Value::Object(m.clone()),
        Some(_) => return Err(invalid("metadata", "metadata should be a JSON object")),
    };
    let checkout = request.get("checkout").cloned().unwrap_or(Value::Null);
    let expiration_minutes = match checkout.get("expirationMinutes") {
        None | Some(Value::Null) => 15,
        Some(v) => match v.as_i64() {
            Some(m) if m >= 1 => m,
            _ => {
                return Err(invalid(
                    "checkout.expirationMinutes",
                    "expirationMinutes should be a positive number of minutes",
                ));
            }
        },
    };
    let redirect_url = match checkout.get("redirectURL") {
        None | Some(Value::Null) => None,
        Some(Value::String(url)) if url::Url::parse(url).is_ok() => Some(url.clone()),
        Some(_) => return Err(invalid("checkout.redirectURL", "Invalid redirectURL")),
    };
    let redirect_automatically = checkout
        .get("redirectAutomatically")
        .and_then(Value::as_bool)
        .unwrap_or(false);
    let base = sim.base_url();
    let rendered = sim.act(|state| {
        let now = state.now();
        let rate_minor = invoice::rate_major(currency).saturating_mul(currency.minor_per_major());
        let key_index = state.invoices.len();
        let id = ids::new_id();
        let invoice = Invoice {
            destination: format!("bcrt1qsim{}", id.to_ascii_lowercase()),
            id,
            store_id: store_id.clone(),
            currency,
            amount_minor: amount.minor(),
            metadata,
            expiration_minutes,
            redirect_url,
            redirect_automatically,
            created: now,
            expiration: now + expiration_minutes * 60,
            monitoring_expiration: now + expiration_minutes * 60 + 1440 * 60,
            status: "New",
            additional: "None",
            rate_minor,
            due_sats: invoice::sats_for(amount.minor(), rate_minor),
            payments: Vec::new(),
            key_index,
        };
        let rendered = invoice.render(&base);
        let created = invoice.created_event();
        state.invoices.push(invoice);
        (rendered, vec![created])
    });
    ok(rendered)
}

async fn list_invoices(
    State(sim): State<Simulator>,
    Path(store_id): Path<String>,
    method: Method,
    headers: HeaderMap,
    RawQuery(query): RawQuery,
) -> Answer {
    let path = format!("/api/v1/stores/{store_id}/invoices");
    sim.authorise(
        &method,
        &path,
        query.as_deref(),
        &headers,
        b"",
        Some(&store_id),
    )?;
    let pairs: Vec<(String, String)> =
        url::form_urlencoded::parse(query.unwrap_or_default().as_bytes())
            .into_owned()
            .collect();
    let all = |key: &str| -> Vec<String> {
        pairs
            .iter()
            .filter(|(k, _)| k.eq_ignore_ascii_case(key))
            .map(|(_, v)| v.clone())
            .collect()
    };
    let number = |key: &str| -> Result<Option<i64>, Problem> {
        all(key)
            .first()
            .map(|v| v.parse::<i64>().map_err(|_| invalid(key, "Invalid number")))
            .transpose()
    };
    let order_ids = all("orderId");
    let statuses = all("status");
    let text = all("textSearch").into_iter().next();
    let start = number("startDate")?;
    let end = number("endDate")?;
    let skip = usize::try_from(number("skip")?.unwrap_or(0).max(0)).unwrap_or(0);
    let take = number("take")?.map(|t| usize::try_from(t.max(0)).unwrap_or(0));
    let with_methods = all("includePaymentMethods")
        .first()
        .is_some_and(|v| v.eq_ignore_ascii_case("true"));
    let base = sim.base_url();
    let listed = sim.act(|state| {
        let mut matching: Vec<&Invoice> = state
            .invoices
            .iter()
            .filter(|i| i.store_id == store_id)
            .filter(|i| {
                order_ids.is_empty()
                    || i.metadata
                        .get("orderId")
                        .and_then(Value::as_str)
                        .is_some_and(|o| order_ids.iter().any(|w| w == o))
            })
            .filter(|i| {
                statuses.is_empty() || statuses.iter().any(|s| s.eq_ignore_ascii_case(i.status))
            })
            .filter(|i| start.is_none_or(|s| i.created >= s))
            .filter(|i| end.is_none_or(|e| i.created <= e))
            .filter(|i| {
                text.as_deref().is_none_or(|t| {
                    i.id.contains(t)
                        || i.metadata
                            .get("orderId")
                            .and_then(Value::as_str)
                            .is_some_and(|o| o.contains(t))
                })
            })
            .collect();
        // Newest first, as BTCPay lists them.
        matching.sort_by(|a, b| {
            b.created
                .cmp(&a.created)
                .then(b.key_index.cmp(&a.key_index))
        });
        let page: Vec<Value> = matching
            .into_iter()
            .skip(skip)
            .take(take.unwrap_or(usize::MAX))
            .map(|i| {
                let mut value = i.render(&base);
                if with_methods {
                    value["paymentMethods"] = json!([i.payment_method()]);
                }
                value
            })
            .collect();
        (page, Vec::new())
    });
    ok(Value::Array(listed))
}

async fn get_invoice(
    State(sim): State<Simulator>,
    Path(invoice_id): Path<String>,
    method: Method,
    headers: HeaderMap,
    RawQuery(query): RawQuery,
) -> Answer {
    let path = format!("/api/v1/invoices/{invoice_id}");
    sim.authorise(&method, &path, query.as_deref(), &headers, b"", None)?;
    let base = sim.base_url();
    let found = sim.act(|state| {
        (
            state.invoice_mut(&invoice_id).map(|i| i.render(&base)),
            Vec::new(),
        )
    });
    found.map_or_else(|| Err(not_found("invoice")), ok)
}

async fn payment_methods(
    State(sim): State<Simulator>,
    Path(invoice_id): Path<String>,
    method: Method,
    headers: HeaderMap,
    RawQuery(query): RawQuery,
) -> Answer {
    let path = format!("/api/v1/invoices/{invoice_id}/payment-methods");
    sim.authorise(&method, &path, query.as_deref(), &headers, b"", None)?;
    let found = sim.act(|state| {
        (
            state
                .invoice_mut(&invoice_id)
                .map(|i| json!([i.payment_method()])),
            Vec::new(),
        )
    });
    found.map_or_else(|| Err(not_found("invoice")), ok)
}

async fn mark_status(
    State(sim): State<Simulator>,
    Path(invoice_id): Path<String>,
    method: Method,
    headers: HeaderMap,
    body: Bytes,
) -> Answer {
    let path = format!("/api/v1/invoices/{invoice_id}/status");
    sim.authorise(&method, &path, None, &headers, &body, None)?;
    let status = match serde_json::from_slice::<Value>(&body)
        .ok()
        .and_then(|v| v.get("status").and_then(Value::as_str).map(str::to_owned))
        .as_deref()
    {
        Some("Invalid") => "Invalid",
        Some("Settled") => "Settled",
        _ => {
            return Err(invalid(
                "status",
                "Status can only be marked to Settled or Invalid",
            ));
        }
    };
    let base = sim.base_url();
    let result = sim.act(|state| match state.invoice_mut(&invoice_id) {
        None => (Err(not_found("invoice")), Vec::new()),
        Some(invoice) => match invoice.mark(status) {
            Ok(events) => (Ok(invoice.render(&base)), events),
            Err(_) => (
                Err(invalid(
                    "status",
                    "Status can't be marked as this invoice's current status",
                )),
                Vec::new(),
            ),
        },
    });
    result.and_then(ok)
}

async fn create_webhook(
    State(sim): State<Simulator>,
    Path(store_id): Path<String>,
    method: Method,
    headers: HeaderMap,
    body: Bytes,
) -> Answer {
    let path = format!("/api/v1/stores/{store_id}/webhooks");
    sim.authorise(&method, &path, None, &headers, &body, Some(&store_id))?;
    let Ok(Value::Object(request)) = serde_json::from_slice::<Value>(&body) else {
        return Err(invalid("", "The request body is not a JSON object"));
    };
    let Some(url) = request
        .get("url")
        .and_then(Value::as_str)
        .filter(|u| url::Url::parse(u).is_ok_and(|u| matches!(u.scheme(), "http" | "https")))
    else {
        return Err(invalid("url", "url is invalid"));
    };
    let secret = request
        .get("secret")
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty())
        .map_or_else(ids::new_id, str::to_owned);
    let events = request.get("authorizedEvents");
    let everything = events
        .and_then(|e| e.get("everything"))
        .and_then(Value::as_bool)
        .unwrap_or(true);
    let specific: Vec<String> = if everything {
        Vec::new()
    } else {
        events
            .and_then(|e| e.get("specificEvents"))
            .and_then(Value::as_array)
            .map(|a| {
                a.iter()
                    .filter_map(Value::as_str)
                    .map(str::to_owned)
                    .collect()
            })
            .unwrap_or_default()
    };
    if !everything && specific.is_empty() {
        return Err(invalid(
            "authorizedEvents.specificEvents",
            "If everything is false, specificEvents should not be empty",
        ));
    }
    let flag = |name: &str| request.get(name).and_then(Value::as_bool).unwrap_or(true);
    ok(sim.register_webhook(
        url.to_owned(),
        secret,
        flag("enabled"),
        flag("automaticRedelivery"),
        specific,
    ))
}

async fn list_webhooks(
    State(sim): State<Simulator>,
    Path(store_id): Path<String>,
    method: Method,
    headers: HeaderMap,
) -> Answer {
    let path = format!("/api/v1/stores/{store_id}/webhooks");
    sim.authorise(&method, &path, None, &headers, b"", Some(&store_id))?;
    let listed: Vec<Value> = lock(&sim.inner.state)
        .webhooks
        .iter()
        .map(|w| w.render(false))
        .collect();
    ok(Value::Array(listed))
}

async fn get_webhook(
    State(sim): State<Simulator>,
    Path(webhook_id): Path<String>,
    method: Method,
    headers: HeaderMap,
) -> Answer {
    sim.authorise(
        &method,
        &format!("/api/v1/webhooks/{webhook_id}"),
        None,
        &headers,
        b"",
        None,
    )?;
    sim.webhooks_by_id()
        .get(&webhook_id)
        .map_or_else(|| Err(not_found("webhook")), |w| ok(w.render(false)))
}

async fn delete_webhook(
    State(sim): State<Simulator>,
    Path(webhook_id): Path<String>,
    method: Method,
    headers: HeaderMap,
) -> Answer {
    sim.authorise(
        &method,
        &format!("/api/v1/webhooks/{webhook_id}"),
        None,
        &headers,
        b"",
        None,
    )?;
    let mut state = lock(&sim.inner.state);
    let before = state.webhooks.len();
    state.webhooks.retain(|w| w.id != webhook_id);
    if state.webhooks.len() == before {
        return Err(not_found("webhook"));
    }
    Ok(StatusCode::OK.into_response())
}

async fn list_deliveries(
    State(sim): State<Simulator>,
    Path(webhook_id): Path<String>,
    method: Method,
    headers: HeaderMap,
) -> Answer {
    let path = format!("/api/v1/webhooks/{webhook_id}/deliveries");
    sim.authorise(&method, &path, None, &headers, b"", None)?;
    if !sim.webhooks_by_id().contains_key(&webhook_id) {
        return Err(not_found("webhook"));
    }
    // Newest first.
    let listed: Vec<Value> = lock(&sim.inner.state)
        .deliveries
        .iter()
        .rev()
        .filter(|d| d.webhook_id == webhook_id)
        .map(crate::DeliveryRecord::render)
        .collect();
    ok(Value::Array(listed))
}

fn find_delivery(
    sim: &Simulator,
    webhook_id: &str,
    delivery_id: &str,
) -> Result<crate::DeliveryRecord, Problem> {
    lock(&sim.inner.state)
        .deliveries
        .iter()
        .find(|d| d.id == delivery_id && d.webhook_id == webhook_id)
        .cloned()
        .ok_or_else(|| not_found("webhookdelivery"))
}

async fn get_delivery(
    State(sim): State<Simulator>,
    Path((webhook_id, delivery_id)): Path<(String, String)>,
    method: Method,
    headers: HeaderMap,
) -> Answer {
    let path = format!("/api/v1/webhooks/{webhook_id}/deliveries/{delivery_id}");
    sim.authorise(&method, &path, None, &headers, b"", None)?;
    ok(find_delivery(&sim, &webhook_id, &delivery_id)?.render())
}

async fn delivery_request(
    State(sim): State<Simulator>,
    Path((webhook_id, delivery_id)): Path<(String, String)>,
    method: Method,
    headers: HeaderMap,
) -> Answer {
    let path = format!("/api/v1/webhooks/{webhook_id}/deliveries/{delivery_id}/request");
    sim.authorise(&method, &path, None, &headers, b"", None)?;
    let record = find_delivery(&sim, &webhook_id, &delivery_id)?;
    Ok((
        [(axum::http::header::CONTENT_TYPE, "application/json")],
        record.body,
    )
        .into_response())
}

async fn redeliver(
    State(sim): State<Simulator>,
    Path((webhook_id, delivery_id)): Path<(String, String)>,
    method: Method,
    headers: HeaderMap,
) -> Answer {
    let path = format!("/api/v1/webhooks/{webhook_id}/deliveries/{delivery_id}/redeliver");
    sim.authorise(&method, &path, None, &headers, b"", None)?;
    find_delivery(&sim, &webhook_id, &delivery_id)?;
    sim.redeliver(&delivery_id).map_or_else(
        || Err(not_found("webhookdelivery")),
        |id| ok(Value::String(id)),
    )
}
