//! Control routes under `/_sim/`, for tests and developers, standing in for a buyer's
//! clicks and for time:
//!
//! - `POST /_sim/invoices/{id}/{action}` (`pay`, `pay-unconfirmed`, `confirm`,
//!   `pay-partly`, `overpay`, `expire`, `pay-late`, `invalid`): what the hosted page's
//!   buttons do; answers the `InvoiceData`.
//! - `POST /_sim/clock/advance {"seconds":N}`: time passes (invoices expire); answers
//!   `{"now"}`. `GET /_sim/clock` answers `{"now"}`.
//! - `POST /_sim/webhook {"url","secret"?,"automaticRedelivery"?,"specificEvents"?}`:
//!   registers a store webhook (as Greenfield's `POST …/webhooks` does); answers the
//!   webhook with its secret.
//! - `POST /_sim/deliveries/{deliveryId}/redeliver`: redelivers one delivery (as Greenfield's
//!   redeliver does), answering the new delivery id. `GET /_sim/deliveries` lists every
//!   delivery `{"id","webhookId","status","httpCode","body"}`, oldest first.
//! - `POST /_sim/faults {"count":N,"status":503}`: the next N Greenfield requests answer that
//!   5xx, as BTCPay's proxy does while the server is down, or with `"status":400` a
//!   validation refusal of `amount` (`{"count":0}` disarms); `GET /_sim/faults` answers
//!   `{"remaining"}`.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::{Value, json};

use crate::invoice::Action;
use crate::{Simulator, lock};

pub fn routes(sim: Simulator) -> Router {
    Router::new()
        .route("/_sim/invoices/{invoice_id}/{action}", post(act))
        .route("/_sim/clock/advance", post(advance))
        .route("/_sim/clock", get(clock))
        .route("/_sim/webhook", post(webhook))
        .route("/_sim/deliveries", get(deliveries))
        .route("/_sim/deliveries/{delivery_id}/redeliver", post(redeliver))
        .route("/_sim/faults", post(faults).get(faults_left))
        .with_state(sim)
}

#[derive(Deserialize)]
struct Faults {
    count: u32,
    #[serde(default = "unavailable")]
    status: u16,
}

fn unavailable() -> u16 {
    503
}

async fn faults(State(sim): State<Simulator>, Json(body): Json<Faults>) -> Response {
    if body.status != 400 && !(500..600).contains(&body.status) {
        return refused(StatusCode::BAD_REQUEST, "status must be 400 or a 5xx");
    }
    sim.set_faults(body.count, body.status);
    Json(json!({"count": body.count})).into_response()
}

async fn faults_left(State(sim): State<Simulator>) -> Json<Value> {
    Json(json!({"remaining": sim.faults_remaining()}))
}

fn refused(status: StatusCode, why: &str) -> Response {
    (status, Json(json!({ "error": why }))).into_response()
}

async fn act(
    State(sim): State<Simulator>,
    Path((invoice_id, action)): Path<(String, String)>,
) -> Response {
    let Some(action) = Action::from_name(&action) else {
        return refused(StatusCode::NOT_FOUND, "no such action");
    };
    match sim.act_on(&invoice_id, action) {
        Ok(invoice) => Json(invoice).into_response(),
        Err(why) if why == "no such invoice" => refused(StatusCode::NOT_FOUND, &why),
        Err(why) => refused(StatusCode::CONFLICT, &why),
    }
}

#[derive(Deserialize)]
struct Advance {
    seconds: i64,
}

async fn advance(State(sim): State<Simulator>, Json(body): Json<Advance>) -> Response {
    if body.seconds < 0 {
        return refused(StatusCode::BAD_REQUEST, "the clock only moves forward");
    }
    Json(json!({ "now": sim.advance(body.seconds) })).into_response()
}

async fn clock(State(sim): State<Simulator>) -> Json<Value> {
    Json(json!({ "now": sim.now() }))
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct NewWebhook {
    url: String,
    secret: Option<String>,
    automatic_redelivery: Option<bool>,
    #[serde(default)]
    specific_events: Vec<String>,
}

async fn webhook(State(sim): State<Simulator>, Json(body): Json<NewWebhook>) -> Response {
    if url::Url::parse(&body.url).is_err() {
        return refused(StatusCode::BAD_REQUEST, "url is not a URL");
    }
    let secret = body
        .secret
        .filter(|s| !s.is_empty())
        .unwrap_or_else(crate::ids::new_id);
    Json(sim.register_webhook(
        body.url,
        secret,
        true,
        body.automatic_redelivery.unwrap_or(true),
        body.specific_events,
    ))
    .into_response()
}

async fn deliveries(State(sim): State<Simulator>) -> Json<Value> {
    let listed: Vec<Value> = lock(&sim.inner.state)
        .deliveries
        .iter()
        .map(|d| {
            json!({
                "id": d.id,
                "webhookId": d.webhook_id,
                "status": d.status,
                "httpCode": d.http_code,
                "body": serde_json::from_slice::<Value>(&d.body).unwrap_or(Value::Null),
            })
        })
        .collect();
    Json(Value::Array(listed))
}

async fn redeliver(State(sim): State<Simulator>, Path(delivery_id): Path<String>) -> Response {
    sim.redeliver(&delivery_id).map_or_else(
        || refused(StatusCode::NOT_FOUND, "no such delivery"),
        |id| Json(Value::String(id)).into_response(),
    )
}
