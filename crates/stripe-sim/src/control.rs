//! `/_sim/…`: what a test drives instead of clicking — the checkout buttons, the clock,
//! delivery switches, a card that declines at renewal, Stripe's own totals, and bulk history
//! for benchmarks.

use axum::Json;
use axum::extract::{Path, State};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde::Deserialize;
use serde_json::json;

use crate::error::StripeError;
use crate::{Simulator, flows, page};

pub fn routes(sim: Simulator) -> axum::Router {
    axum::Router::new()
        .route("/_sim/checkout/{id}/{action}", post(checkout))
        .route("/_sim/clock/advance", post(advance))
        .route("/_sim/clock", get(clock))
        .route("/_sim/delivery", post(delivery))
        .route("/_sim/subscriptions/{id}/card", post(card))
        .route("/_sim/invoices/{id}/pay", post(pay_invoice))
        .route("/_sim/dunning", post(dunning))
        .route("/_sim/account", post(account))
        .route("/_sim/subscriptions/{id}/credit", post(credit))
        .route("/_sim/disputes", post(open_dispute))
        .route("/_sim/disputes/{id}/close", post(close_dispute))
        .route("/_sim/disputes/{id}/review", post(review_dispute))
        .route("/_sim/disputes/{id}/escalate", post(escalate_dispute))
        .route("/_sim/early_fraud_warnings", post(early_fraud_warning))
        .route("/_sim/refunds/{id}/fail", post(fail_refund))
        .route("/_sim/totals", get(totals))
        .route("/_sim/seed/payments", post(seed_payments))
        .route("/_sim/faults", post(faults).get(faults_left))
        .with_state(sim)
}

#[derive(Deserialize, Default)]
struct PayBody {
    email: Option<String>,
    /// The card number tried (default: `4242…` to pay, `4000000000000002` to decline).
    card: Option<String>,
}

async fn checkout(
    State(sim): State<Simulator>,
    Path((id, action)): Path<(String, String)>,
    body: Option<Json<PayBody>>,
) -> Result<Response, StripeError> {
    let outcome = page::parse_action(&action)
        .ok_or_else(|| StripeError::invalid("action", "pay, decline or pay-then-dispute"))?;
    let (email, card) = body.map_or((None, None), |Json(b)| (b.email, b.card));
    sim.act(|state| flows::pay(state, &id, outcome, email.as_deref(), card.as_deref()))?;
    Ok(sim.object(&id)?.into_response())
}

#[derive(Deserialize)]
struct Advance {
    seconds: i64,
}

async fn advance(
    State(sim): State<Simulator>,
    Json(body): Json<Advance>,
) -> Result<Json<serde_json::Value>, StripeError> {
    if body.seconds < 0 {
        return Err(StripeError::invalid(
            "seconds",
            "The clock only moves forward.",
        ));
    }
    let now = sim.act(|state| {
        flows::advance_clock(state, body.seconds);
        Ok(state.now())
    })?;
    Ok(Json(json!({"now": now})))
}

async fn clock(State(sim): State<Simulator>) -> Json<serde_json::Value> {
    Json(json!({"now": sim.with_state(crate::state::State::now)}))
}

#[derive(Deserialize)]
struct DeliveryBody {
    duplicates: Option<u32>,
    shuffle: Option<bool>,
    webhook_url: Option<String>,
}

async fn delivery(
    State(sim): State<Simulator>,
    Json(body): Json<DeliveryBody>,
) -> Json<serde_json::Value> {
    let mode = sim.set_delivery(|mode| {
        if let Some(duplicates) = body.duplicates {
            mode.duplicates = duplicates.min(10);
        }
        if let Some(shuffle) = body.shuffle {
            mode.shuffle = shuffle;
        }
        if let Some(url) = body.webhook_url {
            mode.webhook_url = Some(url).filter(|u| !u.is_empty());
        }
    });
    Json(
        json!({"duplicates": mode.duplicates, "shuffle": mode.shuffle, "webhook_url": mode.webhook_url}),
    )
}

/// `{"remaining": N}`: armed faults not met yet.
async fn faults_left(State(sim): State<Simulator>) -> Json<serde_json::Value> {
    Json(json!({"remaining": sim.faults_remaining()}))
}

#[derive(Deserialize)]
struct FaultsBody {
    /// How many of the next `/v1/…` requests meet the fault (0 disarms).
    count: u32,
    /// Answer this 5xx status (`api_error`) without doing the request.
    status: Option<u16>,
    /// Or: do the request and hold its answer this many milliseconds.
    delay_ms: Option<u64>,
}

/// `{"count": 2, "status": 500}` or `{"count": 1, "delay_ms": 5000}`: Stripe failing or slow
/// for the next requests; `{"count": 0}` disarms.
async fn faults(
    State(sim): State<Simulator>,
    Json(body): Json<FaultsBody>,
) -> Result<Json<serde_json::Value>, StripeError> {
    if body.count == 0 {
        sim.set_faults(crate::Faults::default());
        return Ok(Json(json!({"count": 0})));
    }
    let fault = match (body.status, body.delay_ms) {
        (Some(status), None) if (500..600).contains(&status) => crate::Fault::Fail(status),
        (None, Some(ms)) if ms <= 120_000 => {
            crate::Fault::SlowAnswer(std::time::Duration::from_millis(ms))
        }
        _ => {
            return Err(StripeError::invalid(
                "status",
                "Give either a 5xx status or delay_ms (at most 120000).",
            ));
        }
    };
    sim.set_faults(crate::Faults {
        remaining: body.count,
        fault: Some(fault),
    });
    Ok(Json(json!({"count": body.count})))
}

#[derive(Deserialize)]
struct Card {
    outcome: String,
}

/// `{"outcome":"decline"}` makes the subscription's next charges fail, `"require_action"`
/// makes them ask for 3-D Secure (`requires_action`); `"succeed"` mends it.
async fn card(
    State(sim): State<Simulator>,
    Path(id): Path<String>,
    Json(body): Json<Card>,
) -> Result<Json<serde_json::Value>, StripeError> {
    let outcome = body.outcome.clone();
    if !matches!(outcome.as_str(), "decline" | "require_action" | "succeed") {
        return Err(StripeError::invalid(
            "outcome",
            "decline, require_action or succeed",
        ));
    }
    sim.act(|state| {
        if state.get(&id).is_none_or(|s| s["object"] != "subscription") {
            return Err(StripeError::no_such("subscription", &id));
        }
        state.declining.remove(&id);
        state.authenticating.remove(&id);
        match outcome.as_str() {
            "decline" => state.declining.insert(id.clone()),
            "require_action" => state.authenticating.insert(id.clone()),
            _ => false,
        };
        Ok(())
    })?;
    Ok(Json(json!({"subscription": id, "outcome": body.outcome})))
}

/// What the hosted invoice page's button does: pays the open invoice (after 3-D Secure or
/// with a working card) and applies a pending subscription change.
async fn pay_invoice(
    State(sim): State<Simulator>,
    Path(id): Path<String>,
) -> Result<Json<serde_json::Value>, StripeError> {
    sim.act(|state| flows::pay_invoice(state, &id))?;
    Ok(Json(json!({"invoice": id, "status": "paid"})))
}

#[derive(Deserialize)]
struct DunningSettings {
    attempts: Option<i64>,
    window_days: Option<i64>,
    then: Option<String>,
}

/// Stripe's retry settings for failed renewals: `attempts` in all (2–8), spread over
/// `window_days` (7, 14, 21, 30 or 60), `then` `canceled`, `unpaid` or `past_due` after
/// the last. Answers the settings in force.
async fn dunning(
    State(sim): State<Simulator>,
    Json(body): Json<DunningSettings>,
) -> Result<Json<serde_json::Value>, StripeError> {
    if body.attempts.is_some_and(|a| !(1..=8).contains(&a)) {
        return Err(StripeError::invalid("attempts", "attempts must be 1 to 8"));
    }
    if body
        .window_days
        .is_some_and(|d| ![7, 14, 21, 30, 60].contains(&d))
    {
        return Err(StripeError::invalid(
            "window_days",
            "window_days must be 7, 14, 21, 30 or 60",
        ));
    }
    if body
        .then
        .as_deref()
        .is_some_and(|t| !matches!(t, "canceled" | "unpaid" | "past_due"))
    {
        return Err(StripeError::invalid(
            "then",
            "then must be canceled, unpaid or past_due",
        ));
    }
    let settings = sim.act(|state| {
        if let Some(attempts) = body.attempts {
            state.dunning.attempts = attempts;
        }
        if let Some(days) = body.window_days {
            state.dunning.window_days = days;
        }
        if let Some(then) = body.then.clone() {
            state.dunning.then = then;
        }
        Ok::<_, StripeError>(state.dunning.clone())
    })?;
    Ok(Json(
        json!({"attempts": settings.attempts, "window_days": settings.window_days, "then": settings.then}),
    ))
}

#[derive(Deserialize)]
struct AccountSettings {
    bank_account_currencies: Vec<String>,
}

/// The account's bank accounts: money in `bank_account_currencies` (and USD, the default
/// currency) settles as itself; every other currency is converted to USD, and its minimum
/// charge is what converts to US$0.50. Answers the currencies in force.
async fn account(
    State(sim): State<Simulator>,
    Json(body): Json<AccountSettings>,
) -> Result<Json<serde_json::Value>, StripeError> {
    let account = crate::currencies::Account::with_bank_accounts(&body.bank_account_currencies)
        .map_err(|why| StripeError::invalid("bank_account_currencies", why))?;
    let currencies = account.bank_account_currencies();
    sim.act(|state| {
        state.account = account;
        Ok::<_, StripeError>(())
    })?;
    Ok(Json(json!({"bank_account_currencies": currencies})))
}

/// The subscription's next invoice is paid in full from the customer's credit balance
/// (as a 100 % coupon or a credit would): `$0` due, no charge, no `invoice_payment`.
async fn credit(
    State(sim): State<Simulator>,
    Path(id): Path<String>,
) -> Result<Json<serde_json::Value>, StripeError> {
    sim.act(|state| flows::credit_next_invoice(state, &id))?;
    Ok(Json(
        json!({"subscription": id, "next_invoice": "paid_from_credit"}),
    ))
}

#[derive(Deserialize)]
struct NewDispute {
    payment_intent: String,
    /// `chargeback` (default) or `inquiry`.
    kind: Option<String>,
}

/// `{"payment_intent":"pi_…","kind":"chargeback"|"inquiry"}`: the card holder disputes the
/// payment's charge. Answers the dispute.
async fn open_dispute(
    State(sim): State<Simulator>,
    Json(body): Json<NewDispute>,
) -> Result<Response, StripeError> {
    let kind = match body.kind.as_deref() {
        None | Some("chargeback") => flows::DisputeKind::Chargeback,
        Some("inquiry") => flows::DisputeKind::Inquiry,
        Some(_) => return Err(StripeError::invalid("kind", "chargeback or inquiry")),
    };
    let id = sim.act(|state| {
        let charge = state
            .get(&body.payment_intent)
            .filter(|pi| pi["object"] == "payment_intent" && pi["status"] == "succeeded")
            .and_then(|pi| pi["latest_charge"].as_str())
            .map(str::to_owned)
            .ok_or_else(|| StripeError::no_such("payment_intent", &body.payment_intent))?;
        Ok(flows::open_dispute_of(
            state,
            &charge,
            &body.payment_intent,
            kind,
        ))
    })?;
    Ok(sim.object(&id)?.into_response())
}

#[derive(Deserialize)]
struct CloseDispute {
    outcome: String,
}

/// `{"outcome":"won"|"lost"}`: the card network decides (an inquiry just closes).
async fn close_dispute(
    State(sim): State<Simulator>,
    Path(id): Path<String>,
    Json(body): Json<CloseDispute>,
) -> Result<Response, StripeError> {
    let outcome = match body.outcome.as_str() {
        "won" => flows::DisputeOutcome::Won,
        "lost" => flows::DisputeOutcome::Lost,
        _ => return Err(StripeError::invalid("outcome", "won or lost")),
    };
    sim.act(|state| flows::end_dispute(state, &id, outcome, None))?;
    Ok(sim.object(&id)?.into_response())
}

/// Evidence submitted: the dispute goes under review (`warning_under_review` for an
/// inquiry, `under_review` for a chargeback).
async fn review_dispute(
    State(sim): State<Simulator>,
    Path(id): Path<String>,
) -> Result<Response, StripeError> {
    sim.act(|state| flows::review_dispute(state, &id))?;
    Ok(sim.object(&id)?.into_response())
}

/// The issuer escalates the inquiry to a chargeback (same dispute: `needs_response`, funds
/// and fee withdrawn).
async fn escalate_dispute(
    State(sim): State<Simulator>,
    Path(id): Path<String>,
) -> Result<Response, StripeError> {
    sim.act(|state| flows::escalate_dispute(state, &id))?;
    Ok(sim.object(&id)?.into_response())
}

#[derive(Deserialize)]
struct NewEarlyFraudWarning {
    /// `ch_…` or `pi_…` (its latest charge).
    charge: Option<String>,
    payment_intent: Option<String>,
    fraud_type: Option<String>,
}

/// `{"payment_intent":"pi_…"}` or `{"charge":"ch_…"}`, optional `"fraud_type"` (default
/// `made_with_stolen_card`): an early fraud warning on the charge
/// (`radar.early_fraud_warning.created`). Answers the warning.
async fn early_fraud_warning(
    State(sim): State<Simulator>,
    Json(body): Json<NewEarlyFraudWarning>,
) -> Result<Response, StripeError> {
    let id = sim.act(|state| {
        let charge = match (&body.charge, &body.payment_intent) {
            (Some(charge), _) => charge.clone(),
            (None, Some(pi)) => state
                .get(pi)
                .filter(|o| o["object"] == "payment_intent")
                .and_then(|o| o["latest_charge"].as_str())
                .map(str::to_owned)
                .ok_or_else(|| StripeError::no_such("payment_intent", pi))?,
            (None, None) => return Err(StripeError::missing("charge")),
        };
        flows::early_fraud_warning(
            state,
            &charge,
            body.fraud_type
                .as_deref()
                .unwrap_or("made_with_stolen_card"),
        )
    })?;
    Ok(sim.object(&id)?.into_response())
}

/// The refund, which had succeeded, fails now (`refund.updated`, `refund.failed`).
async fn fail_refund(
    State(sim): State<Simulator>,
    Path(id): Path<String>,
) -> Result<Response, StripeError> {
    sim.act(|state| flows::fail_refund(state, &id))?;
    Ok(sim.object(&id)?.into_response())
}

async fn totals(State(sim): State<Simulator>) -> Json<serde_json::Value> {
    Json(sim.with_state(flows::totals))
}

#[derive(Deserialize)]
struct SeedPayments {
    count: u32,
    amount: i64,
    currency: String,
}

/// The most payments one seed call creates.
const SEED_LIMIT: u32 = 200_000;

/// `{"count","amount","currency"}`: that many succeeded one-off card payments (a payment
/// intent and its charge each), as past history: no events, no webhooks. Answers the
/// payment intents' ids, oldest first, for the caller's ledger.
async fn seed_payments(
    State(sim): State<Simulator>,
    Json(body): Json<SeedPayments>,
) -> Result<Json<serde_json::Value>, StripeError> {
    if body.count > SEED_LIMIT {
        return Err(StripeError::invalid(
            "count",
            format!("At most {SEED_LIMIT} payments per call."),
        ));
    }
    if body.amount <= 0 {
        return Err(StripeError::invalid(
            "amount",
            "The amount must be positive.",
        ));
    }
    let ids = sim.act(|state| {
        let now = state.now();
        let payment = crate::objects::Payment {
            amount: body.amount,
            currency: &body.currency,
            customer: None,
            description: None,
            metadata: json!({}),
            card: crate::objects::PAYING_CARD,
            now,
        };
        let ids: Vec<String> = (0..body.count)
            .map(|_| {
                let pi = crate::objects::new_id("pi_");
                let charge = crate::objects::new_id("ch_");
                state.insert(crate::objects::payment_intent(
                    &pi,
                    &payment,
                    "succeeded",
                    Some(&charge),
                ));
                state.insert(crate::objects::charge(&charge, &payment, &pi, None, None));
                pi
            })
            .collect();
        Ok(ids)
    })?;
    Ok(Json(json!({"payment_intents": ids})))
}
