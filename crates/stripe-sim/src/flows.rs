//! What Stripe does, step by step: checkout, payment, subscription renewal, cancellation,
//! refunds and disputes, each emitting the events Stripe emits (shared/stripe/EVENTS.md).

use serde_json::{Value, json};

use crate::currencies;
use crate::error::StripeError;
use crate::objects::{self, Payment};
use crate::state::{SessionPlan, State};

/// What the reader does on the hosted checkout page.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Pays with a card that works.
    Pay,
    /// Tries a card that is declined; the session stays open.
    Decline,
    /// Pays, then the card holder disputes the charge.
    PayThenDispute,
}

const DAY: i64 = 86_400;

/// The end of a period of `interval` starting at `start`: calendar months and years, as
/// Stripe bills them (the 31st becomes the month's last day).
pub fn period_end(start: i64, interval: &str) -> i64 {
    let Ok(at) = time_from_unix(start) else {
        return start + 30 * DAY;
    };
    let months = if interval == "year" { 12 } else { 1 };
    let mut month = u32::from(at.month() as u8) - 1 + months;
    let year = at.year() + i32::try_from(month / 12).unwrap_or(0);
    month %= 12;
    let month =
        time::Month::try_from(u8::try_from(month + 1).unwrap_or(1)).unwrap_or(time::Month::January);
    let day = at.day().min(time::util::days_in_month(month, year));
    time::Date::from_calendar_date(year, month, day).map_or(start + 30 * DAY, |date| {
        at.replace_date(date).unix_timestamp()
    })
}

/// The first period end after `after` on the calendar of `anchor`: the 31st stays the 31st
/// (or the month's last day), never drifting to the 28th.
pub fn next_period_end(anchor: i64, after: i64, interval: &str) -> i64 {
    let Ok(at) = time_from_unix(anchor) else {
        return after + 30 * DAY;
    };
    let step = if interval == "year" { 12 } else { 1 };
    for k in 1..=2400_u32 {
        let months = u32::from(at.month() as u8) - 1 + k * step;
        let year = at.year() + i32::try_from(months / 12).unwrap_or(0);
        let month = time::Month::try_from(u8::try_from(months % 12 + 1).unwrap_or(1))
            .unwrap_or(time::Month::January);
        let day = at.day().min(time::util::days_in_month(month, year));
        let end = time::Date::from_calendar_date(year, month, day)
            .map_or(after + 30 * DAY, |d| at.replace_date(d).unix_timestamp());
        if end > after {
            return end;
        }
    }
    after + 30 * DAY
}

fn time_from_unix(t: i64) -> Result<time::OffsetDateTime, time::error::ComponentRange> {
    time::OffsetDateTime::from_unix_timestamp(t)
}

fn is_zero_decimal(currency: &str) -> bool {
    currencies::exponent(currency) == 0
}

fn string<'a>(params: &'a Value, key: &str) -> Option<&'a str> {
    params.get(key).and_then(Value::as_str)
}

fn integer(params: &Value, path: &str, key: &str) -> Result<Option<i64>, StripeError> {
    match params.get(key).and_then(Value::as_str) {
        None => Ok(None),
        Some(text) => text
            .parse::<i64>()
            .map(Some)
            .map_err(|_| StripeError::invalid(path, format!("Invalid integer: {text}"))),
    }
}

/// `POST /v1/checkout/sessions` with `price_data` line items (the only kind Kopilka sends).
pub fn create_checkout_session(
    state: &mut State,
    params: &Value,
    public_base: &str,
) -> Result<String, StripeError> {
    let mode = string(params, "mode").ok_or_else(|| StripeError::missing("mode"))?;
    if !matches!(mode, "payment" | "subscription") {
        return Err(StripeError::invalid(
            "mode",
            format!("Invalid mode: {mode}; the simulator supports payment and subscription"),
        ));
    }
    let items = params
        .get("line_items")
        .and_then(Value::as_array)
        .ok_or_else(|| StripeError::missing("line_items"))?;
    let [item] = items.as_slice() else {
        return Err(StripeError::invalid(
            "line_items",
            "The simulator takes exactly one line item.",
        ));
    };
    let price_data = item
        .get("price_data")
        .ok_or_else(|| StripeError::missing("line_items[0][price_data]"))?;
    let currency = string(price_data, "currency")
        .ok_or_else(|| StripeError::missing("line_items[0][price_data][currency]"))?
        .to_ascii_lowercase();
    let unit_amount = integer(
        price_data,
        "line_items[0][price_data][unit_amount]",
        "unit_amount",
    )?
    .ok_or_else(|| StripeError::missing("line_items[0][price_data][unit_amount]"))?;
    let quantity = integer(item, "line_items[0][quantity]", "quantity")?.unwrap_or(1);
    let amount = unit_amount
        .checked_mul(quantity)
        .filter(|a| *a >= 0)
        .ok_or_else(|| {
            StripeError::invalid("line_items[0][price_data][unit_amount]", "Invalid amount.")
        })?;
    state.account.check(
        amount,
        &currency,
        "line_items[0][price_data][unit_amount]",
        "line_items[0][price_data][currency]",
    )?;
    let interval = price_data
        .get("recurring")
        .and_then(|r| string(r, "interval"))
        .map(str::to_owned);
    match (mode, interval.as_deref()) {
        ("payment", None) | ("subscription", Some("month" | "year")) => {}
        ("payment", Some(_)) => {
            return Err(StripeError::invalid(
                "line_items[0][price_data][recurring]",
                "A recurring price cannot be used in payment mode.",
            ));
        }
        _ => {
            return Err(StripeError::invalid(
                "line_items[0][price_data][recurring][interval]",
                "Subscription mode needs recurring[interval] month or year.",
            ));
        }
    }
    let product_name = price_data
        .get("product_data")
        .and_then(|p| string(p, "name"))
        .unwrap_or("Contribution")
        .to_owned();
    let customer = string(params, "customer");
    if let Some(customer) = customer
        && !live_customer(state, customer)
    {
        return Err(StripeError::no_such("customer", customer));
    }
    let now = state.now();
    let expires_at = integer(params, "expires_at", "expires_at")?.unwrap_or(now + DAY);
    if !(now + 30 * 60 - 60..=now + DAY + 60).contains(&expires_at) {
        return Err(StripeError::invalid(
            "expires_at",
            "The expires_at timestamp must be between 30 minutes and 24 hours from now.",
        ));
    }
    let id = objects::new_id("cs_test_");
    let url = format!("{public_base}/checkout/{id}");
    let session = objects::checkout_session(&objects::SessionSpec {
        id: &id,
        url: &url,
        mode,
        amount_total: amount,
        currency: &currency,
        customer,
        customer_email: string(params, "customer_email"),
        client_reference_id: string(params, "client_reference_id"),
        metadata: params.get("metadata").cloned().unwrap_or_else(|| json!({})),
        success_url: string(params, "success_url"),
        cancel_url: string(params, "cancel_url"),
        submit_type: string(params, "submit_type"),
        expires_at,
        now,
    });
    let trial_days = trial_days(params, mode)?;
    state.insert(session);
    state.sessions.insert(
        id.clone(),
        SessionPlan {
            amount,
            currency,
            interval,
            product_name,
            subscription_metadata: params
                .get("subscription_data")
                .and_then(|s| s.get("metadata"))
                .cloned()
                .unwrap_or_else(|| json!({})),
            payment_metadata: params
                .get("payment_intent_data")
                .and_then(|p| p.get("metadata"))
                .cloned()
                .unwrap_or_else(|| json!({})),
            trial_days,
        },
    );
    Ok(id)
}

/// `subscription_data[trial_period_days]` (1–730), only in subscription mode.
fn trial_days(params: &Value, mode: &str) -> Result<Option<i64>, StripeError> {
    const PARAM: &str = "subscription_data[trial_period_days]";
    let Some(data) = params.get("subscription_data") else {
        return Ok(None);
    };
    let days = integer(data, PARAM, "trial_period_days")?;
    match days {
        Some(_) if mode != "subscription" => Err(StripeError::invalid(
            PARAM,
            "A trial needs mode=subscription.",
        )),
        Some(d) if !(1..=730).contains(&d) => Err(StripeError::invalid(
            PARAM,
            "trial_period_days must be between 1 and 730.",
        )),
        days => Ok(days),
    }
}

/// The reader's action on the hosted page.
pub fn pay(
    state: &mut State,
    session_id: &str,
    outcome: Outcome,
    email: Option<&str>,
    card: Option<&str>,
) -> Result<(), StripeError> {
    let session = state
        .get(session_id)
        .ok_or_else(|| StripeError::no_such("checkout session", session_id))?;
    if session["status"] != "open" {
        return Err(StripeError::coded(
            "checkout_session_not_open",
            None,
            format!(
                "This Checkout Session is {}.",
                session["status"].as_str().unwrap_or("closed")
            ),
        ));
    }
    let plan = state
        .sessions
        .get(session_id)
        .cloned()
        .ok_or_else(|| StripeError::no_such("checkout session", session_id))?;
    let email = email
        .map(str::to_owned)
        .or_else(|| session["customer_email"].as_str().map(str::to_owned))
        .unwrap_or_else(|| "reader@example.org".to_owned());
    let existing_customer = session["customer"].as_str().map(str::to_owned);
    let now = state.now();
    let recurring = plan.interval.is_some();

    if outcome == Outcome::Decline {
        let payment = Payment {
            amount: plan.amount,
            currency: &plan.currency,
            customer: existing_customer.as_deref(),
            description: None,
            metadata: plan.payment_metadata.clone(),
            card: card.unwrap_or(objects::DECLINING_CARD),
            now,
        };
        decline_charge(state, &payment, None);
        return Ok(());
    }

    // Subscription mode always has a customer; payment mode only when one was passed.
    let customer = match existing_customer {
        Some(id) => Some(id),
        None if recurring => {
            let id = objects::new_id("cus_");
            state.insert(objects::customer(&id, Some(&email), None, now));
            state.emit("customer.created", &id, None, None);
            Some(id)
        }
        None => None,
    };

    let payment = Payment {
        amount: plan.amount,
        currency: &plan.currency,
        customer: customer.as_deref(),
        description: if recurring {
            Some("Subscription creation")
        } else {
            None
        },
        metadata: if recurring {
            json!({})
        } else {
            plan.payment_metadata.clone()
        },
        card: card.unwrap_or(objects::PAYING_CARD),
        now,
    };

    if let (Some(interval), Some(customer), Some(days)) =
        (&plan.interval, &customer, plan.trial_days)
    {
        let (subscription, invoice) =
            start_subscription(state, customer, &email, &plan, interval, Some(days), now);
        settle_trial_invoice(
            state,
            &invoice,
            &plan.product_name,
            (now, now + days * 86_400),
        );
        let session = state.get_mut(session_id).expect("checked above");
        objects::merge(
            session,
            json!({
                "status": "complete", "payment_status": "no_payment_required", "customer": customer,
                "subscription": subscription, "invoice": invoice,
                "customer_details": {"email": email, "name": null, "phone": null, "address": null, "tax_exempt": "none", "tax_ids": null, "business_name": null, "individual_name": null},
            }),
        );
        state.emit("checkout.session.completed", session_id, None, None);
        return Ok(());
    }

    let (subscription, invoice) = match (&plan.interval, &customer) {
        (Some(interval), Some(customer)) => {
            let (subscription, invoice) =
                start_subscription(state, customer, &email, &plan, interval, None, now);
            (Some(subscription), Some(invoice))
        }
        _ => (None, None),
    };
    let (payment_intent, charge) = succeed_charge(state, &payment, invoice.as_deref());
    if let (Some(subscription), Some(invoice)) = (&subscription, &invoice) {
        settle_invoice(state, invoice, &payment_intent, true);
        activate_subscription(state, subscription, invoice);
    }

    let session = state.get_mut(session_id).expect("checked above");
    objects::merge(
        session,
        json!({
            "status": "complete", "payment_status": "paid", "customer": customer,
            "payment_intent": if recurring { Value::Null } else { Value::from(payment_intent.clone()) },
            "subscription": subscription, "invoice": invoice,
            "customer_details": {"email": email, "name": null, "phone": null, "address": null, "tax_exempt": "none", "tax_ids": null, "business_name": null, "individual_name": null},
        }),
    );
    state.emit("checkout.session.completed", session_id, None, None);
    if outcome == Outcome::PayThenDispute {
        open_dispute(state, &charge, &payment_intent);
    }
    Ok(())
}

/// A successful card payment: payment intent, charge, balance transaction, and their events.
fn succeed_charge(
    state: &mut State,
    payment: &Payment<'_>,
    invoice: Option<&str>,
) -> (String, String) {
    let pi = objects::new_id("pi_");
    let ch = objects::new_id("ch_");
    let txn = objects::new_id("txn_");
    // Stripe's fee is taken in the currency the charge settles in.
    let settled = state.account.settle(payment.amount, payment.currency);
    let fee = objects::card_fee(settled.amount, is_zero_decimal(&settled.currency));
    state.insert(objects::payment_intent(
        &pi,
        payment,
        "requires_payment_method",
        None,
    ));
    state.emit("payment_intent.created", &pi, None, None);
    state.insert(objects::settled_transaction(
        &txn,
        &ch,
        &settled,
        fee,
        "charge",
        "charge",
        payment.now,
    ));
    state.insert(objects::charge(&ch, payment, &pi, Some(&txn), None));
    state.emit("charge.succeeded", &ch, None, None);
    let intent = state.get_mut(&pi).expect("just inserted");
    objects::merge(
        intent,
        json!({"status": "succeeded", "amount_received": payment.amount, "latest_charge": ch}),
    );
    if let Some(invoice) = invoice {
        intent["description"] = json!(format!("Invoice {invoice}"));
    }
    state.emit("payment_intent.succeeded", &pi, None, None);
    (pi, ch)
}

/// A declined card: the payment intent stays unpaid, the charge fails.
fn decline_charge(state: &mut State, payment: &Payment<'_>, invoice: Option<&str>) -> String {
    let pi = objects::new_id("pi_");
    let ch = objects::new_id("ch_");
    state.insert(objects::payment_intent(
        &pi,
        payment,
        "requires_payment_method",
        None,
    ));
    state.emit("payment_intent.created", &pi, None, None);
    state.insert(objects::charge(
        &ch,
        payment,
        &pi,
        None,
        Some(("card_declined", "Your card was declined.")),
    ));
    state.emit("charge.failed", &ch, None, None);
    let method = objects::payment_method(&format!("pm_{}", &pi[3..]), payment);
    let intent = state.get_mut(&pi).expect("just inserted");
    objects::merge(
        intent,
        json!({"latest_charge": ch, "last_payment_error": {"type": "card_error", "code": "card_declined", "decline_code": "generic_decline", "message": "Your card was declined.", "charge": ch, "payment_method": method}}),
    );
    if let Some(invoice) = invoice {
        intent["description"] = json!(format!("Invoice {invoice}"));
    }
    state.emit("payment_intent.payment_failed", &pi, None, None);
    pi
}

/// The price, subscription (incomplete) and first invoice of a new plan.
fn start_subscription(
    state: &mut State,
    customer: &str,
    email: &str,
    plan: &SessionPlan,
    interval: &str,
    trial_days: Option<i64>,
    now: i64,
) -> (String, String) {
    let product = objects::new_id("prod_");
    state.insert(objects::product(&product, &plan.product_name, now));
    let price_id = objects::new_id("price_");
    let price = objects::price(
        &price_id,
        &product,
        &plan.currency,
        plan.amount,
        Some(interval),
        now,
    );
    state.insert(price.clone());
    let sub = objects::new_id("sub_");
    // A trial is the first period; the first charge is at its end, the billing anchor.
    let trial_end = trial_days.map(|days| now + days * 86_400);
    let period = (now, trial_end.unwrap_or_else(|| period_end(now, interval)));
    let mut subscription = objects::subscription(
        &sub,
        customer,
        &price,
        period,
        if trial_end.is_some() {
            "trialing"
        } else {
            "incomplete"
        },
        plan.subscription_metadata.clone(),
        now,
    );
    if let Some(end) = trial_end {
        objects::merge(
            &mut subscription,
            json!({"trial_start": now, "trial_end": end, "billing_cycle_anchor": end}),
        );
    }
    // The trial's invoice bills the price at nothing.
    let mut billed = price.clone();
    if trial_end.is_some() {
        billed["unit_amount"] = json!(0);
        billed["unit_amount_decimal"] = json!("0");
    }
    let item = subscription["items"]["data"][0]["id"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    state.insert(subscription);
    let invoice = new_invoice(
        state,
        &sub,
        &item,
        customer,
        email,
        &billed,
        "subscription_create",
        period,
        now,
    );
    state.get_mut(&sub).expect("just inserted")["latest_invoice"] = json!(invoice);
    state.emit("customer.subscription.created", &sub, None, None);
    (sub, invoice)
}

/// The first invoice of a subscription that starts with a free trial: paid at `$0`, no
/// payment (Stripe's "Trial period" line).
fn settle_trial_invoice(state: &mut State, invoice: &str, product_name: &str, trial: (i64, i64)) {
    if let Some(object) = state.get_mut(invoice) {
        if let Some(line) = object["lines"]["data"].get_mut(0) {
            objects::merge(
                line,
                json!({"period": {"start": trial.0, "end": trial.1},
                       "description": format!("Trial period for {product_name}")}),
            );
        }
        objects::merge(
            object,
            json!({"status": "paid", "amount_paid": 0, "amount_remaining": 0, "attempted": true, "attempt_count": 0,
                   "next_payment_attempt": null, "status_transitions": {"paid_at": trial.0}}),
        );
    }
    state.emit("invoice.paid", invoice, None, None);
    state.emit("invoice.payment_succeeded", invoice, None, None);
}

#[allow(clippy::too_many_arguments, reason = "an invoice names all of these")]
fn new_invoice(
    state: &mut State,
    sub: &str,
    item: &str,
    customer: &str,
    email: &str,
    price: &Value,
    reason: &str,
    period: (i64, i64),
    now: i64,
) -> String {
    let id = objects::new_id("in_");
    let sequence = state
        .newest_first("invoice")
        .filter(|i| i["customer"] == customer)
        .count()
        + 1;
    let subscription_metadata = state
        .get(sub)
        .map_or_else(|| json!({}), |s| s["metadata"].clone());
    state.insert(objects::invoice(&objects::InvoiceSpec {
        id: &id,
        customer,
        customer_email: Some(email),
        subscription: sub,
        subscription_item: item,
        price,
        billing_reason: reason,
        period,
        sequence,
        subscription_metadata: &subscription_metadata,
        now,
    }));
    let hosted = format!("{}/invoice/{id}", state.base_url);
    if let Some(invoice) = state.get_mut(&id) {
        invoice["hosted_invoice_url"] = json!(hosted);
    }
    // Stripe creates the invoice as a draft and finalizes it (at once for the first
    // invoice, about an hour later for renewals).
    let open = state.get(&id).cloned().unwrap_or_default();
    if let Some(invoice) = state.get_mut(&id) {
        objects::merge(
            invoice,
            json!({"status": "draft", "number": null, "status_transitions": {"finalized_at": null}}),
        );
    }
    state.emit("invoice.created", &id, None, None);
    if let Some(invoice) = state.get_mut(&id) {
        *invoice = open;
    }
    state.emit(
        "invoice.finalized",
        &id,
        Some(json!({"status": "draft"})),
        None,
    );
    id
}

fn settle_invoice(state: &mut State, invoice: &str, payment_intent: &str, paid: bool) {
    let now = state.now();
    // A failed renewal is retried per the dunning settings until its last attempt; other
    // invoices (a switch, the first one) wait for the donor.
    let next_attempt = state.get(invoice).and_then(|object| {
        let renewal = object["billing_reason"] == "subscription_cycle";
        let attempts = object["attempt_count"].as_i64().unwrap_or(0) + 1;
        (renewal && attempts < state.dunning.attempts).then(|| now + state.dunning.spacing())
    });
    let mut payment = None;
    if let Some(object) = state.get_mut(invoice) {
        objects::invoice_settled(object, paid, now, next_attempt);
        if paid {
            payment = Some(objects::invoice_payment(
                &objects::new_id("inpay_"),
                invoice,
                object["amount_paid"].as_i64().unwrap_or(0),
                &object["currency"],
                payment_intent,
                now,
            ));
        }
    }
    if paid {
        state.emit("invoice.paid", invoice, None, None);
        state.emit("invoice.payment_succeeded", invoice, None, None);
        if let Some(payment) = payment {
            let id = state.insert(payment);
            state.emit("invoice_payment.paid", &id, None, None);
        }
    } else {
        state.emit("invoice.payment_failed", invoice, None, None);
    }
}

/// Credits the customer of subscription `sub` with its next invoice's amount (as a credit
/// note or a 100 % coupon would), so that invoice is paid from the balance: `$0` due, no
/// charge, no `invoice_payment`; Stripe still sends `invoice.paid` and
/// `invoice.payment_succeeded`.
///
/// # Errors
/// No such subscription.
pub fn credit_next_invoice(state: &mut State, sub: &str) -> Result<(), StripeError> {
    let subscription = state
        .get(sub)
        .filter(|s| s["object"] == "subscription")
        .cloned()
        .ok_or_else(|| StripeError::no_such("subscription", sub))?;
    let (_, price) = first_item(&subscription);
    let amount = price["unit_amount"].as_i64().unwrap_or(0);
    let customer = subscription["customer"].as_str().unwrap_or_default();
    adjust_balance(state, customer, -amount);
    Ok(())
}

/// The invoice's payments (`invoice_payment` objects), oldest first.
pub fn payments_of(state: &State, invoice: &str) -> Vec<Value> {
    let mut payments: Vec<Value> = state
        .newest_first("invoice_payment")
        .filter(|p| p["invoice"] == invoice)
        .cloned()
        .collect();
    payments.reverse();
    payments
}

fn set_subscription(
    state: &mut State,
    sub: &str,
    patch: Value,
    previous: Value,
    event: &str,
    request_id: Option<&str>,
) {
    if let Some(object) = state.get_mut(sub) {
        objects::merge(object, patch);
    }
    state.emit(event, sub, Some(previous), request_id);
}

fn activate_subscription(state: &mut State, sub: &str, invoice: &str) {
    let previous = json!({"status": "incomplete"});
    set_subscription(
        state,
        sub,
        json!({"status": "active", "latest_invoice": invoice}),
        previous,
        "customer.subscription.updated",
        None,
    );
}

/// Stripe's dispute fee in `currency`, the currency the disputed funds settle in (the
/// simulator's table, after Stripe's pricing pages: 15.00 in the US, Canada and the
/// euro area, £20, 25.00 in Australia, New Zealand, Switzerland and Singapore), in minor
/// units. Stripe returns it when the dispute is won.
pub fn dispute_fee(currency: &str) -> i64 {
    match currency {
        "gbp" => 2000,
        "aud" | "nzd" | "chf" | "sgd" => 2500,
        _ => 1500,
    }
}

/// Which kind of dispute the card holder opens.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DisputeKind {
    /// A chargeback: the funds and Stripe's fee are withdrawn at once.
    Chargeback,
    /// An inquiry (`warning_needs_response`): nothing moves unless it becomes a chargeback.
    Inquiry,
}

fn open_dispute(state: &mut State, charge: &str, payment_intent: &str) {
    open_dispute_of(state, charge, payment_intent, DisputeKind::Chargeback);
}

/// Opens a dispute on `charge`: `charge.dispute.created`, and for a chargeback
/// `charge.dispute.funds_withdrawn` with its balance transaction (amount and fee).
pub fn open_dispute_of(
    state: &mut State,
    charge: &str,
    payment_intent: &str,
    kind: DisputeKind,
) -> String {
    let now = state.now();
    let (amount, currency) = {
        let ch = &state.get(charge).expect("a charge");
        (
            ch["amount"].as_i64().unwrap_or(0) - ch["amount_refunded"].as_i64().unwrap_or(0),
            ch["currency"].as_str().unwrap_or("usd").to_owned(),
        )
    };
    let dp = objects::new_id("dp_");
    let mut dispute = objects::dispute(
        &dp,
        charge,
        Some(payment_intent),
        amount,
        &currency,
        vec![],
        now,
    );
    if kind == DisputeKind::Inquiry {
        objects::merge(
            &mut dispute,
            json!({"status": "warning_needs_response", "is_charge_refundable": true, "reason": "general",
                   "payment_method_details": {"card": {"case_type": "inquiry"}}}),
        );
    }
    state.insert(dispute);
    if let Some(ch) = state.get_mut(charge) {
        ch["disputed"] = json!(true);
    }
    state.emit("charge.dispute.created", &dp, None, None);
    if kind == DisputeKind::Chargeback {
        dispute_moves_funds(state, &dp, -amount, DisputeFee::Charged);
        state.emit("charge.dispute.funds_withdrawn", &dp, None, None);
    }
    dp
}

/// A dispute's fee on one of its balance transactions.
#[derive(Debug, Clone, Copy)]
enum DisputeFee {
    /// Stripe's dispute fee in the currency the funds settle in ([`dispute_fee`]).
    Charged,
    /// The fee charged earlier, given back (a won dispute).
    GivenBack(i64),
}

/// A balance transaction of dispute `dp` (`amount` signed, in the dispute's currency; the
/// transaction is in the currency it settles in), added to the dispute's
/// `balance_transactions`.
fn dispute_moves_funds(state: &mut State, dp: &str, amount: i64, fee: DisputeFee) {
    let now = state.now();
    let Some(disputed_currency) = state
        .get(dp)
        .and_then(|d| d["currency"].as_str())
        .map(str::to_owned)
    else {
        return;
    };
    let settled = state.account.settle(amount, &disputed_currency);
    let currency = settled.currency.clone();
    let fee = match fee {
        DisputeFee::Charged => dispute_fee(&currency),
        DisputeFee::GivenBack(fee) => -fee,
    };
    let mut txn = objects::settled_transaction(
        &objects::new_id("txn_"),
        dp,
        &settled,
        fee,
        "adjustment",
        if amount < 0 {
            "dispute"
        } else {
            "dispute_reversal"
        },
        now,
    );
    if fee != 0 {
        txn["fee_details"] = json!([{"amount": fee, "application": null, "currency": currency,
            "description": if fee > 0 { "Dispute fee" } else { "Dispute fee refund" }, "type": "stripe_fee"}]);
    }
    state.insert(txn.clone());
    if let Some(dispute) = state.get_mut(dp)
        && let Some(list) = dispute["balance_transactions"].as_array_mut()
    {
        list.push(txn);
    }
}

/// How a dispute ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DisputeOutcome {
    /// The evidence won: the funds and Stripe's fee come back
    /// (`charge.dispute.funds_reinstated`).
    Won,
    /// Lost (or accepted): the withdrawal stands.
    Lost,
}

/// Closes dispute `id`: an inquiry ends `warning_closed` (nothing moved, nothing comes
/// back); a chargeback ends `won` (funds reinstated) or `lost`.
///
/// # Errors
/// No such dispute, or closed already.
pub fn end_dispute(
    state: &mut State,
    id: &str,
    outcome: DisputeOutcome,
    request_id: Option<&str>,
) -> Result<(), StripeError> {
    let dispute = state
        .get_mut(id)
        .filter(|o| o["object"] == "dispute")
        .ok_or_else(|| StripeError::no_such("dispute", id))?;
    let previous = dispute["status"].clone();
    if matches!(previous.as_str(), Some("won" | "lost" | "warning_closed")) {
        return Err(StripeError::coded(
            "charge_dispute_closed",
            None,
            "This dispute is already closed.",
        ));
    }
    let inquiry = previous
        .as_str()
        .is_some_and(|status| status.starts_with("warning_"));
    let status = match (inquiry, outcome) {
        (true, _) => "warning_closed",
        (false, DisputeOutcome::Won) => "won",
        (false, DisputeOutcome::Lost) => "lost",
    };
    let amount = dispute["amount"].as_i64().unwrap_or(0);
    // What the withdrawal charged as its fee, which Stripe gives back on a win.
    let fee: i64 = dispute["balance_transactions"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|t| t["fee"].as_i64())
        .sum();
    dispute["status"] = json!(status);
    if status == "won" {
        dispute_moves_funds(state, id, amount, DisputeFee::GivenBack(fee));
    }
    state.emit(
        "charge.dispute.closed",
        id,
        Some(json!({"status": previous})),
        request_id,
    );
    if status == "won" {
        state.emit("charge.dispute.funds_reinstated", id, None, None);
    }
    Ok(())
}

/// Evidence was submitted for open dispute `id`: an inquiry goes `warning_needs_response` →
/// `warning_under_review`, a chargeback `needs_response` → `under_review`
/// (`charge.dispute.updated`). Nothing moves.
///
/// # Errors
/// No such dispute, or not awaiting a response.
pub fn review_dispute(state: &mut State, id: &str) -> Result<(), StripeError> {
    let dispute = state
        .get_mut(id)
        .filter(|o| o["object"] == "dispute")
        .ok_or_else(|| StripeError::no_such("dispute", id))?;
    let previous = dispute["status"].clone();
    let status = match previous.as_str() {
        Some("warning_needs_response") => "warning_under_review",
        Some("needs_response") => "under_review",
        _ => {
            return Err(StripeError::invalid(
                "dispute",
                "Only a dispute awaiting a response goes under review.",
            ));
        }
    };
    let count = dispute["evidence_details"]["submission_count"]
        .as_i64()
        .unwrap_or(0);
    objects::merge(
        dispute,
        json!({"status": status, "evidence_details": {"has_evidence": true, "submission_count": count + 1}}),
    );
    state.emit(
        "charge.dispute.updated",
        id,
        Some(json!({"status": previous, "evidence_details": {"has_evidence": false, "submission_count": count}})),
        None,
    );
    Ok(())
}

/// The issuer escalates inquiry `id` to a chargeback, on the same dispute: its status
/// becomes `needs_response` (`charge.dispute.updated`), and the amount and Stripe's fee are
/// withdrawn (`charge.dispute.funds_withdrawn`), as for a dispute opened as a chargeback.
///
/// # Errors
/// No such dispute, or not an open inquiry.
pub fn escalate_dispute(state: &mut State, id: &str) -> Result<(), StripeError> {
    let dispute = state
        .get_mut(id)
        .filter(|o| o["object"] == "dispute")
        .ok_or_else(|| StripeError::no_such("dispute", id))?;
    let previous = dispute["status"].clone();
    if !matches!(
        previous.as_str(),
        Some("warning_needs_response" | "warning_under_review")
    ) {
        return Err(StripeError::invalid(
            "dispute",
            "Only an open inquiry can be escalated to a chargeback.",
        ));
    }
    let now = state.now();
    let dispute = state.get_mut(id).expect("found above");
    let amount = dispute["amount"].as_i64().unwrap_or(0);
    objects::merge(
        dispute,
        json!({"status": "needs_response", "is_charge_refundable": false,
               "evidence_details": {"due_by": now + 7 * 86_400, "past_due": false},
               "payment_method_details": {"card": {"case_type": "chargeback"}}}),
    );
    state.emit(
        "charge.dispute.updated",
        id,
        Some(json!({"status": previous, "is_charge_refundable": true,
                    "payment_method_details": {"card": {"case_type": "inquiry"}}})),
        None,
    );
    dispute_moves_funds(state, id, -amount, DisputeFee::Charged);
    state.emit("charge.dispute.funds_withdrawn", id, None, None);
    Ok(())
}

/// The card network warns that `charge` was probably fraudulent: a
/// `radar.early_fraud_warning` (`radar.early_fraud_warning.created`). Answers its id.
///
/// # Errors
/// No such charge, or an unknown fraud type.
pub fn early_fraud_warning(
    state: &mut State,
    charge: &str,
    fraud_type: &str,
) -> Result<String, StripeError> {
    const TYPES: [&str; 7] = [
        "card_never_received",
        "fraudulent_card_application",
        "made_with_counterfeit_card",
        "made_with_lost_card",
        "made_with_stolen_card",
        "misc",
        "unauthorized_use_of_card",
    ];
    if !TYPES.contains(&fraud_type) {
        return Err(StripeError::invalid("fraud_type", TYPES.join(", ")));
    }
    let ch = state
        .get(charge)
        .filter(|o| o["object"] == "charge" && o["status"] == "succeeded")
        .ok_or_else(|| StripeError::no_such("charge", charge))?;
    // Actionable while the charge can still be refunded or disputed.
    let actionable = ch["refunded"] != true && ch["disputed"] != true;
    let id = objects::new_id("issfr_");
    let warning = objects::early_fraud_warning(&id, charge, fraud_type, actionable, state.now());
    state.insert(warning);
    state.emit("radar.early_fraud_warning.created", &id, None, None);
    Ok(id)
}

/// `POST /v1/disputes/{id}/close`: accepting the loss (an inquiry just closes).
pub fn close_dispute(state: &mut State, id: &str, request_id: &str) -> Result<(), StripeError> {
    end_dispute(state, id, DisputeOutcome::Lost, Some(request_id))
}

/// A refund that had succeeded fails (the card was closed, the bank returned it): its
/// status becomes `failed`, a `refund_failure` balance transaction gives the amount back,
/// the charge's `amount_refunded` drops, and Stripe sends `refund.updated` and
/// `refund.failed`.
///
/// # Errors
/// No such refund, or it is not `succeeded`/`pending`.
pub fn fail_refund(state: &mut State, id: &str) -> Result<(), StripeError> {
    let now = state.now();
    let refund = state
        .get(id)
        .filter(|o| o["object"] == "refund")
        .cloned()
        .ok_or_else(|| StripeError::no_such("refund", id))?;
    let previous = refund["status"].clone();
    if !matches!(previous.as_str(), Some("succeeded" | "pending")) {
        return Err(StripeError::invalid(
            "refund",
            "Only a succeeded or pending refund can fail.",
        ));
    }
    let amount = refund["amount"].as_i64().unwrap_or(0);
    let currency = refund["currency"].as_str().unwrap_or("usd").to_owned();
    let txn = objects::new_id("txn_");
    state.insert(objects::settled_transaction(
        &txn,
        id,
        &state.account.settle(amount, &currency),
        0,
        "refund_failure",
        "refund_failure",
        now,
    ));
    if let Some(object) = state.get_mut(id) {
        objects::merge(
            object,
            json!({"status": "failed", "failure_reason": "expired_or_canceled_card",
                   "failure_balance_transaction": txn}),
        );
    }
    if let Some(charge) = refund["charge"].as_str().and_then(|c| state.get_mut(c)) {
        let refunded = charge["amount_refunded"].as_i64().unwrap_or(0) - amount;
        charge["amount_refunded"] = json!(refunded.max(0));
        charge["refunded"] = json!(false);
    }
    state.emit(
        "refund.updated",
        id,
        Some(json!({"status": previous, "failure_reason": null, "failure_balance_transaction": null})),
        None,
    );
    state.emit("refund.failed", id, None, None);
    Ok(())
}

/// `POST /v1/checkout/sessions/{id}/expire`, and the clock's expiry of open sessions.
pub fn expire_session(
    state: &mut State,
    id: &str,
    request_id: Option<&str>,
) -> Result<(), StripeError> {
    let session = state
        .get_mut(id)
        .filter(|o| o["object"] == "checkout.session")
        .ok_or_else(|| StripeError::no_such("checkout session", id))?;
    if session["status"] != "open" {
        return Err(StripeError::coded(
            "checkout_session_not_open",
            None,
            "Only open Checkout Sessions can be expired.",
        ));
    }
    session["status"] = json!("expired");
    session["url"] = Value::Null;
    state.emit("checkout.session.expired", id, None, request_id);
    Ok(())
}

/// `POST /v1/refunds` against a `charge` or `payment_intent`; `amount` defaults to what
/// is left. Each refund is its own object; the charge's `amount_refunded` is cumulative.
pub fn create_refund(
    state: &mut State,
    params: &Value,
    request_id: &str,
) -> Result<String, StripeError> {
    let charge_id = match (string(params, "charge"), string(params, "payment_intent")) {
        (Some(charge), _) => charge.to_owned(),
        (None, Some(pi)) => state
            .get(pi)
            .and_then(|p| p["latest_charge"].as_str())
            .map(str::to_owned)
            .ok_or_else(|| StripeError::no_such("payment_intent", pi))?,
        (None, None) => return Err(StripeError::missing("charge")),
    };
    let charge = state
        .get(&charge_id)
        .filter(|o| o["object"] == "charge")
        .ok_or_else(|| StripeError::no_such("charge", &charge_id))?;
    if charge["paid"] != true {
        return Err(StripeError::coded(
            "charge_not_refundable",
            Some("charge"),
            "This charge cannot be refunded.",
        ));
    }
    // A charge under an inquiry can still be refunded (Stripe: "no funds have been withdrawn
    // and the payment it relates to can still be refunded"; a full refund resolves it);
    // one under a chargeback cannot.
    let inquiry = state
        .newest_first("dispute")
        .find(|d| d["charge"] == charge_id.as_str())
        .filter(|d| d["is_charge_refundable"] == true)
        .and_then(|d| d["id"].as_str())
        .map(str::to_owned);
    if charge["disputed"] == true && inquiry.is_none() {
        return Err(StripeError::coded(
            "charge_disputed",
            Some("charge"),
            format!("Charge {charge_id} has been charged back; it cannot be refunded."),
        ));
    }
    let captured = charge["amount_captured"].as_i64().unwrap_or(0);
    let refunded = charge["amount_refunded"].as_i64().unwrap_or(0);
    let remaining = captured - refunded;
    let amount = integer(params, "amount", "amount")?.unwrap_or(remaining);
    if amount <= 0 {
        return Err(StripeError::invalid(
            "amount",
            "Refund amount must be positive.",
        ));
    }
    if amount > remaining {
        return Err(StripeError::coded(
            "charge_already_refunded",
            Some("amount"),
            format!(
                "Refund amount ({amount}) is greater than unrefunded amount on charge ({remaining})."
            ),
        ));
    }
    let currency = charge["currency"].as_str().unwrap_or("usd").to_owned();
    let pi = charge["payment_intent"].as_str().map(str::to_owned);
    let now = state.now();
    let txn = objects::new_id("txn_");
    let re = objects::new_id("re_");
    state.insert(objects::settled_transaction(
        &txn,
        &re,
        &state.account.settle(-amount, &currency),
        0,
        "refund",
        "refund",
        now,
    ));
    let metadata = params.get("metadata").cloned().unwrap_or_else(|| json!({}));
    state.insert(objects::refund(
        &re,
        &charge_id,
        pi.as_deref(),
        amount,
        &currency,
        string(params, "reason"),
        &txn,
        metadata,
        now,
    ));
    let total = refunded + amount;
    if let Some(ch) = state.get_mut(&charge_id) {
        objects::merge(
            ch,
            json!({"amount_refunded": total, "refunded": total == captured}),
        );
    }
    state.emit("refund.created", &re, None, Some(request_id));
    state.emit(
        "charge.refunded",
        &charge_id,
        Some(json!({"amount_refunded": refunded, "refunded": false})),
        Some(request_id),
    );
    // Refunded in full, an open inquiry is resolved: it closes with no money moved.
    if let Some(inquiry) = inquiry.filter(|_| total == captured) {
        let open = state.get(&inquiry).is_some_and(|d| {
            matches!(
                d["status"].as_str(),
                Some("warning_needs_response" | "warning_under_review")
            )
        });
        if open {
            end_dispute(state, &inquiry, DisputeOutcome::Won, None)?;
        }
    }
    Ok(re)
}

/// `POST /v1/customers`.
pub fn create_customer(state: &mut State, params: &Value, request_id: &str) -> String {
    let id = objects::new_id("cus_");
    let now = state.now();
    let mut customer = objects::customer(&id, string(params, "email"), string(params, "name"), now);
    if let Some(metadata) = params.get("metadata") {
        customer["metadata"] = metadata.clone();
    }
    state.insert(customer);
    state.emit("customer.created", &id, None, Some(request_id));
    id
}

/// Whether `id` names a customer that exists and is not deleted (Stripe answers "No such
/// customer" to every use of a deleted one but a retrieve).
pub fn live_customer(state: &State, id: &str) -> bool {
    state
        .get(id)
        .is_some_and(|c| c["object"] == "customer" && c["deleted"] != true)
}

/// `DELETE /v1/customers/{id}`: as Stripe does, every subscription of the customer that is
/// not yet canceled is canceled at once (`customer.subscription.deleted`), then
/// `customer.deleted` carries the customer as it was, and the stored object becomes
/// `{"id","object":"customer","deleted":true}` (what a retrieve answers from then on). A
/// second delete is 404 `resource_missing`.
pub fn delete_customer(state: &mut State, id: &str, request_id: &str) -> Result<(), StripeError> {
    if !live_customer(state, id) {
        return Err(StripeError::no_such("customer", id));
    }
    let live: Vec<String> = state
        .newest_first("subscription")
        .filter(|s| s["customer"] == id && s["status"] != "canceled")
        .filter_map(|s| s["id"].as_str().map(str::to_owned))
        .collect();
    for sub in live {
        cancel_subscription(state, &sub, Some(request_id), "cancellation_requested")?;
    }
    state.emit("customer.deleted", id, None, Some(request_id));
    if let Some(customer) = state.get_mut(id) {
        *customer = json!({"id": id, "object": "customer", "deleted": true});
    }
    Ok(())
}

/// `POST /v1/billing_portal/sessions`: a portal page for an existing customer.
pub fn create_billing_portal_session(
    state: &mut State,
    params: &Value,
    base_url: &str,
) -> Result<String, StripeError> {
    let customer = string(params, "customer")
        .ok_or_else(|| StripeError::missing("customer"))?
        .to_owned();
    if !live_customer(state, &customer) {
        return Err(StripeError::no_such("customer", &customer));
    }
    let id = objects::new_id("bps_");
    let url = format!("{base_url}/portal/{id}");
    let flow = params["flow_data"]["type"].as_str();
    let session = objects::billing_portal_session(
        &id,
        &customer,
        string(params, "return_url"),
        flow,
        &url,
        state.now(),
    );
    state.insert(session);
    Ok(id)
}

/// `POST /v1/customers/{id}`: the personal fields given are set; an empty string unsets one
/// (Stripe's convention), e.g. when Kopilka erases a reader.
pub fn update_customer(
    state: &mut State,
    id: &str,
    params: &Value,
    request_id: &str,
) -> Result<(), StripeError> {
    if !live_customer(state, id) {
        return Err(StripeError::no_such("customer", id));
    }
    let customer = state
        .get_mut(id)
        .ok_or_else(|| StripeError::no_such("customer", id))?;
    let mut previous = serde_json::Map::new();
    for field in ["email", "name", "phone", "description"] {
        if let Some(value) = params.get(field).and_then(Value::as_str) {
            let next = if value.is_empty() {
                Value::Null
            } else {
                Value::from(value)
            };
            if customer[field] != next {
                previous.insert(field.to_owned(), customer[field].clone());
                customer[field] = next;
            }
        }
    }
    if !previous.is_empty() {
        state.emit(
            "customer.updated",
            id,
            Some(Value::Object(previous)),
            Some(request_id),
        );
    }
    Ok(())
}

fn first_item(subscription: &Value) -> (String, Value) {
    let item = &subscription["items"]["data"][0];
    (
        item["id"].as_str().unwrap_or_default().to_owned(),
        item["price"].clone(),
    )
}

/// `POST /v1/subscriptions/{id}`: a new amount or interval for the one item (through
/// `items[0][price_data]`), or `cancel_at_period_end`. An amount change applies from the
/// next renewal (`proration_behavior=none`); an interval change starts a new period now and
/// invoices it at once, as Stripe does.
pub fn update_subscription(
    state: &mut State,
    id: &str,
    params: &Value,
    request_id: &str,
) -> Result<(), StripeError> {
    let subscription = state
        .get(id)
        .filter(|o| o["object"] == "subscription")
        .ok_or_else(|| StripeError::no_such("subscription", id))?
        .clone();
    if matches!(
        subscription["status"].as_str(),
        Some("canceled" | "incomplete_expired")
    ) {
        return Err(StripeError::coded(
            "resource_missing",
            None,
            "A canceled subscription can only update its cancellation_details and metadata.",
        ));
    }
    let mut previous = json!({});
    let mut patch = json!({});
    if let Some(flag) = string(params, "cancel_at_period_end") {
        let cancel = flag == "true";
        previous["cancel_at_period_end"] = subscription["cancel_at_period_end"].clone();
        previous["canceled_at"] = subscription["canceled_at"].clone();
        patch["cancel_at_period_end"] = json!(cancel);
        patch["canceled_at"] = if cancel {
            json!(state.now())
        } else {
            Value::Null
        };
        patch["cancellation_details"] =
            json!({"reason": if cancel { Some("cancellation_requested") } else { None }});
    }
    if let Some(metadata) = params.get("metadata") {
        previous["metadata"] = subscription["metadata"].clone();
        patch["metadata"] = metadata.clone();
    }
    let mut switch = None;
    if let Some(item) = params.get("items").and_then(|i| i.get(0)) {
        let (_, old_price) = first_item(&subscription);
        let proration = string(params, "proration_behavior").unwrap_or("create_prorations");
        if !matches!(proration, "create_prorations" | "always_invoice" | "none") {
            return Err(StripeError::invalid(
                "proration_behavior",
                "Invalid proration_behavior: must be one of create_prorations, always_invoice, or none",
            ));
        }
        let now = state.now();
        let price = if let Some(price_id) = string(item, "price") {
            state
                .get(price_id)
                .filter(|p| p["object"] == "price")
                .cloned()
                .ok_or_else(|| StripeError::no_such("price", price_id))?
        } else {
            let price_data = item
                .get("price_data")
                .ok_or_else(|| StripeError::missing("items[0][price]"))?;
            if string(params, "payment_behavior") == Some("pending_if_incomplete") {
                // Stripe's pending updates reference: items take only price and quantity.
                return Err(StripeError::invalid(
                    "items[0][price_data]",
                    "When payment_behavior=pending_if_incomplete, items can only set price and quantity.",
                ));
            }
            let currency = string(price_data, "currency")
                .unwrap_or(old_price["currency"].as_str().unwrap_or("usd"))
                .to_owned();
            let amount = integer(
                price_data,
                "items[0][price_data][unit_amount]",
                "unit_amount",
            )?
            .ok_or_else(|| StripeError::missing("items[0][price_data][unit_amount]"))?;
            state.account.check(
                amount,
                &currency,
                "items[0][price_data][unit_amount]",
                "items[0][price_data][currency]",
            )?;
            let interval = price_data
                .get("recurring")
                .and_then(|r| string(r, "interval"))
                .unwrap_or(
                    old_price["recurring"]["interval"]
                        .as_str()
                        .unwrap_or("month"),
                )
                .to_owned();
            if !matches!(interval.as_str(), "month" | "year") {
                return Err(StripeError::invalid(
                    "items[0][price_data][recurring][interval]",
                    "Interval must be month or year.",
                ));
            }
            let product = string(price_data, "product")
                .unwrap_or(old_price["product"].as_str().unwrap_or_default())
                .to_owned();
            let price_id = objects::new_id("price_");
            let price =
                objects::price(&price_id, &product, &currency, amount, Some(&interval), now);
            state.insert(price.clone());
            price
        };
        let amount = price["unit_amount"].as_i64().unwrap_or(0);
        let Some(interval) = price["recurring"]["interval"].as_str().map(str::to_owned) else {
            return Err(StripeError::invalid(
                "items[0][price]",
                "The price must be recurring.",
            ));
        };
        let mut items = subscription["items"].clone();
        previous["items"] = items.clone();
        let old_item = items["data"][0].clone();
        items["data"][0]["plan"] = objects::plan_of(&price);
        items["data"][0]["price"] = price;
        // The unused part of the period paid for, which a proration credits.
        let unused = if proration == "none" {
            0
        } else {
            unused_time_credit(&old_item, now)
        };
        if Some(interval.as_str()) == old_price["recurring"]["interval"].as_str() {
            // Same interval: the new price from the next renewal; a proration is the
            // difference for the rest of this period, on the customer's balance (the next
            // invoice) or, with always_invoice, invoiced now.
            if proration != "none" {
                let new_part = remaining_share(&old_item, amount, now);
                let net = new_part - unused;
                if let Some(customer) = subscription["customer"].as_str() {
                    adjust_balance(state, customer, net);
                }
            }
        } else {
            // Another interval resets the billing anchor and bills the new price at once.
            let period = (now, period_end(now, &interval));
            items["data"][0]["current_period_start"] = json!(period.0);
            items["data"][0]["current_period_end"] = json!(period.1);
            previous["billing_cycle_anchor"] = subscription["billing_cycle_anchor"].clone();
            patch["billing_cycle_anchor"] = json!(now);
            switch = Some((period, unused));
        }
        patch["items"] = items;
    }
    if patch.as_object().is_some_and(serde_json::Map::is_empty) {
        return Ok(());
    }
    let payment_behavior = string(params, "payment_behavior").unwrap_or("allow_incomplete");
    if !matches!(
        payment_behavior,
        "allow_incomplete" | "pending_if_incomplete" | "error_if_incomplete" | "default_incomplete"
    ) {
        return Err(StripeError::invalid(
            "payment_behavior",
            "Invalid payment_behavior: must be one of allow_incomplete, default_incomplete, error_if_incomplete, or pending_if_incomplete",
        ));
    }
    let Some((period, credit)) = switch else {
        set_subscription(
            state,
            id,
            patch,
            previous,
            "customer.subscription.updated",
            Some(request_id),
        );
        return Ok(());
    };
    if payment_behavior == "error_if_incomplete" && card_outcome(state, id) != CardOutcome::Succeed
    {
        return Err(StripeError::card_declined());
    }
    if payment_behavior == "pending_if_incomplete" {
        // Nothing changes until the invoice is paid: Stripe bills the new price with the
        // change kept as `pending_update`, applied when (if) the invoice is paid.
        let new_item = patch["items"]["data"][0].clone();
        let invoice = bill_switch(state, id, &new_item, period, credit);
        let paid = state.get(&invoice).is_some_and(|i| i["status"] == "paid");
        if paid {
            set_subscription(
                state,
                id,
                patch,
                previous,
                "customer.subscription.updated",
                Some(request_id),
            );
        } else {
            state
                .pending_changes
                .insert(invoice.clone(), (id.to_owned(), patch));
            // Stripe: the earlier of the current period's end and 23 hours from now.
            let period_end = subscription["items"]["data"][0]["current_period_end"]
                .as_i64()
                .unwrap_or(i64::MAX);
            let expires_at = (period.0 + 23 * 3600).min(period_end);
            let pending = json!({
                "billing_cycle_anchor": period.0, "expires_at": expires_at,
                "subscription_items": [new_item], "trial_end": null, "trial_from_plan": null,
                "discount": null, "discounts": [], "metadata": null,
            });
            set_subscription(
                state,
                id,
                json!({"pending_update": pending, "latest_invoice": invoice}),
                json!({"pending_update": null, "latest_invoice": subscription["latest_invoice"]}),
                "customer.subscription.updated",
                Some(request_id),
            );
        }
        return Ok(());
    }
    set_subscription(
        state,
        id,
        patch,
        previous,
        "customer.subscription.updated",
        Some(request_id),
    );
    let new_item = state
        .get(id)
        .map(|s| s["items"]["data"][0].clone())
        .unwrap_or_default();
    let invoice = bill_switch(state, id, &new_item, period, credit);
    let paid = state.get(&invoice).is_some_and(|i| i["status"] == "paid");
    if !paid && subscription["status"] == "active" {
        set_subscription(
            state,
            id,
            json!({"status": "past_due"}),
            json!({"status": "active"}),
            "customer.subscription.updated",
            None,
        );
    }
    Ok(())
}

/// The value of what is left of `item`'s current period, at its price: a proration credit.
fn unused_time_credit(item: &Value, now: i64) -> i64 {
    let amount = item["price"]["unit_amount"].as_i64().unwrap_or(0);
    remaining_share(item, amount, now)
}

/// `amount` × the share of `item`'s current period still to run, rounded to the nearest
/// minor unit (as Stripe rounds prorations).
fn remaining_share(item: &Value, amount: i64, now: i64) -> i64 {
    let start = item["current_period_start"].as_i64().unwrap_or(now);
    let end = item["current_period_end"].as_i64().unwrap_or(now);
    let total = i128::from((end - start).max(1));
    let left = i128::from((end - now).clamp(0, end - start));
    let share = (i128::from(amount) * left * 2 + total) / (total * 2);
    i64::try_from(share).unwrap_or(0)
}

/// Adds `amount` to a customer's balance (negative: credit the next invoices use first).
fn adjust_balance(state: &mut State, customer: &str, amount: i64) {
    if amount == 0 {
        return;
    }
    let Some(object) = state.get_mut(customer) else {
        return;
    };
    let before = object["balance"].as_i64().unwrap_or(0);
    object["balance"] = json!(before + amount);
    state.emit(
        "customer.updated",
        customer,
        Some(json!({"balance": before})),
        None,
    );
}

/// How a subscription's card answers an off-session charge.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum CardOutcome {
    Succeed,
    Decline,
    RequireAction,
}

fn card_outcome(state: &State, sub: &str) -> CardOutcome {
    if state.declining.contains(sub) {
        CardOutcome::Decline
    } else if state.authenticating.contains(sub) {
        CardOutcome::RequireAction
    } else {
        CardOutcome::Succeed
    }
}

/// The invoice of an interval switch: the new price for the new period, less the unused
/// time's credit (what is left of the credit goes to the customer's balance); attempted at
/// once. Returns its id.
fn bill_switch(
    state: &mut State,
    sub: &str,
    new_item: &Value,
    period: (i64, i64),
    credit: i64,
) -> String {
    let price = new_item["price"].clone();
    let item = new_item["id"].as_str().unwrap_or_default().to_owned();
    bill(
        state,
        sub,
        &item,
        &price,
        "subscription_update",
        period,
        credit,
    )
}

/// Creates, finalizes and attempts an invoice for `price` less `credit` and the customer's
/// balance; answers its id.
#[allow(clippy::too_many_arguments, reason = "an invoice names all of these")]
fn bill(
    state: &mut State,
    sub: &str,
    item: &str,
    price: &Value,
    reason: &str,
    period: (i64, i64),
    credit: i64,
) -> String {
    let Some(subscription) = state.get(sub).cloned() else {
        return String::new();
    };
    let customer = subscription["customer"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    let email = state
        .get(&customer)
        .and_then(|c| c["email"].as_str())
        .unwrap_or("reader@example.org")
        .to_owned();
    let now = state.now();
    let amount = price["unit_amount"].as_i64().unwrap_or(0);
    let balance = state
        .get(&customer)
        .and_then(|c| c["balance"].as_i64())
        .unwrap_or(0);
    // Stripe applies the proration credit and then the customer balance.
    let total = amount - credit;
    let due = (total + balance).max(0);
    let ending_balance = (total + balance).min(0);
    let invoice = new_invoice(
        state, sub, item, &customer, &email, price, reason, period, now,
    );
    if let Some(object) = state.get_mut(&invoice) {
        if credit != 0 {
            // Stripe's proration line: the unused time, credited.
            let mut line = object["lines"]["data"][0].clone();
            line["id"] = json!(objects::new_id("il_"));
            line["amount"] = json!(-credit);
            line["subtotal"] = json!(-credit);
            line["quantity"] = json!(1);
            line["quantity_decimal"] = json!("1");
            line["description"] = json!("Unused time on the previous price");
            line["parent"]["subscription_item_details"]["proration"] = json!(true);
            line["pricing"]["unit_amount_decimal"] = json!((-credit).to_string());
            line["period"] = json!({"start": now, "end": period.1});
            if let Some(lines) = object["lines"]["data"].as_array_mut() {
                lines.insert(0, line);
            }
        }
        objects::merge(
            object,
            json!({"amount_due": due, "amount_remaining": due, "total": total,
                   "subtotal": total, "total_excluding_tax": total, "subtotal_excluding_tax": total,
                   "starting_balance": balance, "ending_balance": ending_balance}),
        );
    }
    if ending_balance != balance {
        adjust_balance(state, &customer, ending_balance - balance);
    }
    if let Some(object) = state.get_mut(sub) {
        object["latest_invoice"] = json!(invoice);
    }
    let currency = price["currency"].as_str().unwrap_or("usd").to_owned();
    let below_minimum = due > 0 && due < state.account.minimum(&currency);
    if below_minimum {
        // Stripe does not charge less than its minimum: the invoice is paid and the amount
        // is carried to the customer's balance, for the next invoice.
        adjust_balance(state, &customer, due);
    }
    if due == 0 || below_minimum {
        // Nothing to charge: paid from credit (or carried over).
        let now = state.now();
        if let Some(object) = state.get_mut(&invoice) {
            objects::merge(
                object,
                json!({"status": "paid", "amount_paid": 0, "amount_remaining": 0, "attempted": true, "attempt_count": 0,
                       "next_payment_attempt": null, "status_transitions": {"paid_at": now}}),
            );
        }
        state.emit("invoice.paid", &invoice, None, None);
        state.emit("invoice.payment_succeeded", &invoice, None, None);
        return invoice;
    }
    let payment = Payment {
        amount: due,
        currency: &currency,
        customer: Some(&customer),
        description: Some(if reason == "subscription_cycle" {
            "Subscription cycle"
        } else {
            "Subscription update"
        }),
        metadata: json!({}),
        card: objects::PAYING_CARD,
        now,
    };
    match card_outcome(state, sub) {
        CardOutcome::Succeed => {
            let (pi, _) = succeed_charge(state, &payment, Some(&invoice));
            settle_invoice(state, &invoice, &pi, true);
        }
        CardOutcome::Decline => {
            let pi = decline_charge(state, &payment, Some(&invoice));
            settle_invoice(state, &invoice, &pi, false);
        }
        CardOutcome::RequireAction => {
            require_action(state, &payment, &invoice);
        }
    }
    invoice
}

/// A card that asks for 3-D Secure: the payment intent waits in `requires_action`, no
/// charge is made, and Stripe says so (`invoice.payment_action_required`).
fn require_action(state: &mut State, payment: &Payment<'_>, invoice: &str) {
    let pi = objects::new_id("pi_");
    state.insert(objects::payment_intent(
        &pi,
        payment,
        "requires_action",
        None,
    ));
    if let Some(intent) = state.get_mut(&pi) {
        intent["description"] = json!(format!("Invoice {invoice}"));
        intent["next_action"] = json!({"type": "use_stripe_sdk", "use_stripe_sdk": {}});
    }
    state.emit("payment_intent.created", &pi, None, None);
    state.emit("payment_intent.requires_action", &pi, None, None);
    if let Some(object) = state.get_mut(invoice) {
        let attempts = object["attempt_count"].as_i64().unwrap_or(0) + 1;
        objects::merge(
            object,
            json!({"attempt_count": attempts, "attempted": true, "next_payment_attempt": null}),
        );
    }
    state.emit("invoice.payment_action_required", invoice, None, None);
}

/// The donor pays (or authenticates) an open invoice on its hosted page: the charge
/// succeeds, the invoice is paid, a pending subscription change made with
/// `pending_if_incomplete` is applied, and a `past_due` subscription is active again.
pub fn pay_invoice(state: &mut State, invoice: &str) -> Result<(), StripeError> {
    let object = state
        .get(invoice)
        .filter(|o| o["object"] == "invoice")
        .cloned()
        .ok_or_else(|| StripeError::no_such("invoice", invoice))?;
    if object["status"] != "open" {
        return Err(StripeError::coded(
            "invoice_not_editable",
            None,
            "This invoice is not open: it cannot be paid.",
        ));
    }
    let sub = object["parent"]["subscription_details"]["subscription"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    let customer = object["customer"].as_str().unwrap_or_default().to_owned();
    let currency = object["currency"].as_str().unwrap_or("usd").to_owned();
    let now = state.now();
    let payment = Payment {
        amount: object["amount_due"].as_i64().unwrap_or(0),
        currency: &currency,
        customer: Some(&customer),
        description: Some("Subscription update"),
        metadata: json!({}),
        card: objects::PAYING_CARD,
        now,
    };
    // The authenticated (or new) card works from now on.
    state.declining.remove(&sub);
    state.authenticating.remove(&sub);
    let (pi, _) = succeed_charge(state, &payment, Some(invoice));
    settle_invoice(state, invoice, &pi, true);
    if let Some((sub, patch)) = state.pending_changes.remove(invoice) {
        let before = state.get(&sub).cloned().unwrap_or_default();
        let mut previous = json!({"pending_update": before["pending_update"].clone()});
        for key in patch
            .as_object()
            .map(|o| o.keys().cloned().collect::<Vec<_>>())
            .unwrap_or_default()
        {
            previous[&key] = before[&key].clone();
        }
        let mut patch = patch;
        patch["pending_update"] = Value::Null;
        set_subscription(
            state,
            &sub,
            patch,
            previous,
            "customer.subscription.updated",
            None,
        );
    }
    if state.get(&sub).is_some_and(|s| s["status"] == "past_due") {
        set_subscription(
            state,
            &sub,
            json!({"status": "active"}),
            json!({"status": "past_due"}),
            "customer.subscription.updated",
            None,
        );
    }
    Ok(())
}

/// `POST /v1/prices`: a price of an existing product (`currency`, `unit_amount`, optional
/// `recurring[interval]` month or year).
pub fn create_price(state: &mut State, params: &Value) -> Result<String, StripeError> {
    let currency = string(params, "currency")
        .ok_or_else(|| StripeError::missing("currency"))?
        .to_ascii_lowercase();
    let amount = integer(params, "unit_amount", "unit_amount")?
        .ok_or_else(|| StripeError::missing("unit_amount"))?;
    state
        .account
        .check(amount, &currency, "unit_amount", "currency")?;
    let product = string(params, "product").ok_or_else(|| StripeError::missing("product"))?;
    if state.get(product).is_none_or(|p| p["object"] != "product") {
        return Err(StripeError::no_such("product", product));
    }
    let interval = params
        .get("recurring")
        .and_then(|r| string(r, "interval"))
        .map(str::to_owned);
    if interval
        .as_deref()
        .is_some_and(|i| !matches!(i, "month" | "year"))
    {
        return Err(StripeError::invalid(
            "recurring[interval]",
            "The simulator's recurring prices are month or year.",
        ));
    }
    let id = objects::new_id("price_");
    let now = state.now();
    let product = product.to_owned();
    state.insert(objects::price(
        &id,
        &product,
        &currency,
        amount,
        interval.as_deref(),
        now,
    ));
    state.emit("price.created", &id, None, None);
    Ok(id)
}

/// `DELETE /v1/subscriptions/{id}`: cancels now.
pub fn cancel_subscription(
    state: &mut State,
    id: &str,
    request_id: Option<&str>,
    reason: &str,
) -> Result<(), StripeError> {
    let subscription = state
        .get(id)
        .filter(|o| o["object"] == "subscription")
        .ok_or_else(|| StripeError::no_such("subscription", id))?;
    if subscription["status"] == "canceled" {
        return Err(StripeError::coded(
            "resource_missing",
            None,
            format!("No such subscription: '{id}' (it is canceled)"),
        ));
    }
    let previous = json!({"status": subscription["status"]});
    let now = state.now();
    let patch = json!({"status": "canceled", "ended_at": now, "canceled_at": subscription["canceled_at"].as_i64().unwrap_or(now),
        "cancellation_details": {"reason": reason}});
    set_subscription(
        state,
        id,
        patch,
        previous,
        "customer.subscription.deleted",
        request_id,
    );
    Ok(())
}

/// Invoices and charges one period of a subscription (renewal or interval switch).
fn charge_period(state: &mut State, sub: &str, reason: &str, period: (i64, i64)) {
    let Some(subscription) = state.get(sub).cloned() else {
        return;
    };
    let (item, price) = first_item(&subscription);
    let invoice = bill(state, sub, &item, &price, reason, period, 0);
    let paid = state.get(&invoice).is_some_and(|i| i["status"] == "paid");
    match (paid, subscription["status"].as_str()) {
        (false, Some("active")) => set_subscription(
            state,
            sub,
            json!({"status": "past_due"}),
            json!({"status": "active"}),
            "customer.subscription.updated",
            None,
        ),
        (true, Some(status @ ("past_due" | "trialing"))) => set_subscription(
            state,
            sub,
            json!({"status": "active"}),
            json!({"status": status}),
            "customer.subscription.updated",
            None,
        ),
        (false, Some("trialing")) => set_subscription(
            state,
            sub,
            json!({"status": "past_due"}),
            json!({"status": "trialing"}),
            "customer.subscription.updated",
            None,
        ),
        _ => {}
    }
}

/// An automatic retry of a failed renewal. It succeeds (paid, `active` again) or fails
/// again; after the last attempt Stripe stops (`next_payment_attempt` null) and, per the
/// dunning settings, cancels the subscription (`customer.subscription.deleted`,
/// `cancellation_details.reason=payment_failed`), marks it `unpaid`, or leaves it.
fn retry_invoice(state: &mut State, invoice: &str) {
    let Some(object) = state.get(invoice).cloned() else {
        return;
    };
    let sub = object["parent"]["subscription_details"]["subscription"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    let live = state
        .get(&sub)
        .is_some_and(|s| matches!(s["status"].as_str(), Some("active" | "past_due")));
    if !live {
        if let Some(object) = state.get_mut(invoice) {
            object["next_payment_attempt"] = Value::Null;
        }
        return;
    }
    let currency = object["currency"].as_str().unwrap_or("usd").to_owned();
    let customer = object["customer"].as_str().unwrap_or_default().to_owned();
    let now = state.now();
    let payment = Payment {
        amount: object["amount_due"].as_i64().unwrap_or(0),
        currency: &currency,
        customer: Some(&customer),
        description: Some("Subscription cycle"),
        metadata: json!({}),
        card: objects::PAYING_CARD,
        now,
    };
    if card_outcome(state, &sub) == CardOutcome::Succeed {
        let (pi, _) = succeed_charge(state, &payment, Some(invoice));
        settle_invoice(state, invoice, &pi, true);
        if state.get(&sub).is_some_and(|s| s["status"] == "past_due") {
            set_subscription(
                state,
                &sub,
                json!({"status": "active"}),
                json!({"status": "past_due"}),
                "customer.subscription.updated",
                None,
            );
        }
        return;
    }
    let pi = decline_charge(state, &payment, Some(invoice));
    settle_invoice(state, invoice, &pi, false);
    let exhausted = state
        .get(invoice)
        .is_some_and(|i| i["next_payment_attempt"].is_null());
    if !exhausted {
        return;
    }
    match state.dunning.then.clone().as_str() {
        "canceled" => {
            let _ = cancel_subscription(state, &sub, None, "payment_failed");
        }
        "unpaid" => set_subscription(
            state,
            &sub,
            json!({"status": "unpaid"}),
            json!({"status": "past_due"}),
            "customer.subscription.updated",
            None,
        ),
        _ => {}
    }
}

/// Stripe's pending-update expiry: "the invoice is voided and the pending update is
/// discarded" (pending updates reference).
fn expire_pending_update(state: &mut State, sub: &str) {
    let Some(subscription) = state.get(sub).cloned() else {
        return;
    };
    let invoice = subscription["latest_invoice"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    state.pending_changes.remove(&invoice);
    let now = state.now();
    let open = state.get(&invoice).is_some_and(|i| i["status"] == "open");
    if open {
        if let Some(object) = state.get_mut(&invoice) {
            objects::merge(
                object,
                json!({"status": "void", "amount_remaining": 0, "next_payment_attempt": null,
                       "status_transitions": {"voided_at": now}}),
            );
        }
        state.emit(
            "invoice.voided",
            &invoice,
            Some(json!({"status": "open"})),
            None,
        );
    }
    set_subscription(
        state,
        sub,
        json!({"pending_update": null}),
        json!({"pending_update": subscription["pending_update"].clone()}),
        "customer.subscription.updated",
        None,
    );
}

/// Moves the clock by `seconds` and does what falls due, in time order: open checkout
/// sessions expire; subscriptions renew (new period, invoice, charge) or, when set to
/// cancel at period end, end.
pub fn advance_clock(state: &mut State, seconds: i64) {
    let start = state.now();
    let now = start.saturating_add(seconds);
    let mut expired: Vec<(String, i64)> = state
        .newest_first("checkout.session")
        .filter(|s| s["status"] == "open" && s["expires_at"].as_i64().is_some_and(|t| t <= now))
        .filter_map(|s| Some((s["id"].as_str()?.to_owned(), s["expires_at"].as_i64()?)))
        .collect();
    expired.sort_by_key(|(_, at)| *at);
    for (id, at) in expired {
        state.set_now(at);
        let _ = expire_session(state, &id, None);
    }
    // A pending update nobody completed expires: its invoice is voided, the change dropped.
    let mut expiring: Vec<(String, i64)> = state
        .newest_first("subscription")
        .filter_map(|s| {
            let at = s["pending_update"]["expires_at"].as_i64()?;
            (at <= now).then(|| (s["id"].as_str().unwrap_or_default().to_owned(), at))
        })
        .collect();
    expiring.sort_by_key(|(_, at)| *at);
    for (sub, at) in expiring {
        state.set_now(at);
        expire_pending_update(state, &sub);
    }
    // Renew period by period so a jump of a year bills each month; retry failed renewals
    // when their next attempt falls due, in time order with the renewals.
    for _ in 0..2_000 {
        let renewal: Option<(String, i64)> = state
            .newest_first("subscription")
            .filter(|s| {
                matches!(
                    s["status"].as_str(),
                    Some("active" | "past_due" | "trialing")
                )
            })
            .filter_map(|s| {
                let end = s["items"]["data"][0]["current_period_end"].as_i64()?;
                (end <= now).then(|| (s["id"].as_str().unwrap_or_default().to_owned(), end))
            })
            .min_by_key(|(_, end)| *end);
        let retry: Option<(String, i64)> = state
            .newest_first("invoice")
            .filter(|i| i["status"] == "open")
            .filter_map(|i| {
                let at = i["next_payment_attempt"].as_i64()?;
                (at <= now).then(|| (i["id"].as_str().unwrap_or_default().to_owned(), at))
            })
            .min_by_key(|(_, at)| *at);
        match (renewal, retry) {
            (Some((sub, end)), retry) if retry.as_ref().is_none_or(|(_, at)| end <= *at) => {
                // Each renewal happens, and is stamped, at its period's end.
                state.set_now(end);
                renew(state, &sub, end);
            }
            (_, Some((invoice, at))) => {
                state.set_now(at);
                retry_invoice(state, &invoice);
            }
            _ => break,
        }
    }
    state.set_now(now);
    pay_out(state);
}

/// Stripe's automatic payouts: balance transactions whose funds became available are paid
/// out, one payout per currency, each linked to what it contains (`?payout=po_…`).
fn pay_out(state: &mut State) {
    use std::collections::BTreeMap;
    let now = state.now();
    let mut by_currency: BTreeMap<String, (i64, Vec<String>)> = BTreeMap::new();
    for bt in state.newest_first("balance_transaction") {
        let due = bt["status"] == "pending"
            && bt["available_on"].as_i64().is_some_and(|t| t <= now)
            && bt["type"] != "payout";
        if due {
            let entry = by_currency
                .entry(bt["currency"].as_str().unwrap_or_default().to_owned())
                .or_default();
            entry.0 += bt["net"].as_i64().unwrap_or(0);
            entry
                .1
                .push(bt["id"].as_str().unwrap_or_default().to_owned());
        }
    }
    for (currency, (net, included)) in by_currency {
        if net <= 0 {
            // A negative balance waits (pending) until later income covers it.
            continue;
        }
        for id in &included {
            if let Some(bt) = state.get_mut(id) {
                bt["status"] = json!("available");
            }
        }
        let payout = objects::new_id("po_");
        let txn = objects::new_id("txn_");
        let mut payout_bt = objects::balance_transaction(
            &txn, &payout, -net, 0, &currency, "payout", "payout", now,
        );
        payout_bt["status"] = json!("available");
        payout_bt["available_on"] = json!(now);
        state.insert(payout_bt);
        state.insert(objects::payout(&payout, net, &currency, &txn, now));
        state.emit("payout.created", &payout, None, None);
        for id in included.into_iter().chain(std::iter::once(txn)) {
            state.payout_of.insert(id, payout.clone());
        }
        if let Some(object) = state.get_mut(&payout) {
            objects::merge(
                object,
                json!({"status": "paid", "reconciliation_status": "completed"}),
            );
        }
        state.emit(
            "payout.paid",
            &payout,
            Some(json!({"status": "pending"})),
            None,
        );
        state.emit("payout.reconciliation_completed", &payout, None, None);
    }
}

fn renew(state: &mut State, sub: &str, period_start: i64) {
    let Some(subscription) = state.get(sub).cloned() else {
        return;
    };
    if subscription["cancel_at_period_end"] == true {
        let _ = cancel_subscription(state, sub, None, "cancellation_requested");
        return;
    }
    let (_, price) = first_item(&subscription);
    let interval = price["recurring"]["interval"]
        .as_str()
        .unwrap_or("month")
        .to_owned();
    let anchor = subscription["billing_cycle_anchor"]
        .as_i64()
        .unwrap_or(period_start);
    let period = (
        period_start,
        next_period_end(anchor, period_start, &interval),
    );
    let mut items = subscription["items"].clone();
    let previous =
        json!({"items": items.clone(), "latest_invoice": subscription["latest_invoice"]});
    items["data"][0]["current_period_start"] = json!(period.0);
    items["data"][0]["current_period_end"] = json!(period.1);
    set_subscription(
        state,
        sub,
        json!({"items": items}),
        previous,
        "customer.subscription.updated",
        None,
    );
    // Stripe attempts a renewal invoice about an hour after creating it, so the payment and
    // any failure (past_due) come an hour after the period's start, not in the same second.
    state.set_now(period_start + 3600);
    charge_period(state, sub, "subscription_cycle", period);
}

/// What Stripe would count per currency. In the currency a donor paid in (the charge's,
/// refund's and dispute's): gross = succeeded charges, refunded = succeeded refunds,
/// disputed = what disputes withdrew and did not reinstate, net = gross − refunded −
/// disputed, payments = succeeded charges. In the currency the money settled in (the
/// balance transactions'; the same one unless converted): fees = the `fee` of every
/// balance transaction (card processing and dispute fees, less fees given back),
/// stripe_net = the `net` of every balance transaction but payouts (what the balance
/// gained). A failed refund is not a refund.
pub fn totals(state: &State) -> Value {
    use std::collections::BTreeMap;
    #[derive(Default)]
    struct Sum {
        gross: i64,
        refunded: i64,
        lost: i64,
        payments: i64,
        fees: i64,
        stripe_net: i64,
    }
    let mut sums: BTreeMap<String, Sum> = BTreeMap::new();
    let currency = |o: &Value| o["currency"].as_str().unwrap_or_default().to_owned();
    for charge in state
        .newest_first("charge")
        .filter(|c| c["status"] == "succeeded")
    {
        let sum = sums.entry(currency(charge)).or_default();
        sum.gross += charge["amount"].as_i64().unwrap_or(0);
        sum.payments += 1;
    }
    for refund in state
        .newest_first("refund")
        .filter(|r| r["status"] == "succeeded")
    {
        sums.entry(currency(refund)).or_default().refunded +=
            refund["amount"].as_i64().unwrap_or(0);
    }
    // What disputes took and did not give back, in the dispute's currency: its amount for
    // each withdrawal among its balance transactions, less it for each reinstatement.
    for dispute in state.newest_first("dispute") {
        let amount = dispute["amount"].as_i64().unwrap_or(0);
        let lost: i64 = dispute["balance_transactions"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|t| t["amount"].as_i64())
            .map(|moved| -moved.signum() * amount)
            .sum();
        sums.entry(currency(dispute)).or_default().lost += lost;
    }
    for txn in state
        .newest_first("balance_transaction")
        .filter(|t| t["type"] != "payout")
    {
        let sum = sums.entry(currency(txn)).or_default();
        sum.fees += txn["fee"].as_i64().unwrap_or(0);
        sum.stripe_net += txn["net"].as_i64().unwrap_or(0);
    }
    let totals: Vec<Value> = sums
        .into_iter()
        .map(|(currency, s)| {
            let net = s.gross - s.refunded - s.lost;
            json!({"currency": currency, "gross_minor": s.gross, "refunded_minor": s.refunded,
            "net_minor": net, "payments": s.payments, "disputed_minor": s.lost,
            "fees_minor": s.fees, "stripe_net_minor": s.stripe_net})
        })
        .collect();
    json!({"totals": totals})
}

#[cfg(test)]
mod tests {
    use super::period_end;

    #[test]
    fn renewals_keep_the_anchor_day() {
        // Anchored on 2026-01-31 12:00: Feb 28, then Mar 31 (not Mar 28).
        let jan31 = 1_769_860_800;
        let feb28 = super::next_period_end(jan31, jan31, "month");
        assert_eq!(feb28, 1_772_280_000);
        assert_eq!(super::next_period_end(jan31, feb28, "month"), 1_774_958_400);
    }

    #[test]
    fn periods_follow_the_calendar() {
        // 2026-01-31 12:00 UTC → 2026-02-28 12:00 UTC; a year later for annual plans.
        let jan31 = 1_769_860_800;
        assert_eq!(period_end(jan31, "month"), 1_772_280_000);
        assert_eq!(period_end(jan31, "year"), 1_801_396_800);
    }
}
