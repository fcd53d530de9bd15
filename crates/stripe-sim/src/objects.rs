//! Stripe objects, each started from Stripe's published example (`fixtures/objects.json`)
//! and given the fields a flow decides. Placeholder values of the examples that would
//! mislead a receiver (a discount on every customer, a past cancellation on every
//! subscription) are cleared.
#![allow(
    clippy::needless_pass_by_value,
    clippy::too_many_arguments,
    reason = "builders take the fields of Stripe's objects as they are, by value"
)]

use std::sync::LazyLock;

use serde_json::{Map, Value, json};

static TEMPLATES: LazyLock<Map<String, Value>> = LazyLock::new(|| {
    serde_json::from_str(include_str!("../fixtures/objects.json"))
        .expect("fixtures/objects.json is JSON")
});

/// A fresh copy of Stripe's example `kind` (e.g. `checkout.session`).
fn template(kind: &str) -> Value {
    TEMPLATES
        .get(kind)
        .cloned()
        .unwrap_or_else(|| panic!("no template for {kind}"))
}

/// Deep-merges `patch` into `target`: objects merge key by key, anything else replaces.
pub fn merge(target: &mut Value, patch: Value) {
    match (target, patch) {
        (Value::Object(target), Value::Object(patch)) => {
            for (key, value) in patch {
                match target.get_mut(&key) {
                    Some(existing) if existing.is_object() && value.is_object() => {
                        merge(existing, value);
                    }
                    _ => {
                        target.insert(key, value);
                    }
                }
            }
        }
        (target, patch) => *target = patch,
    }
}

fn from_template(kind: &str, patch: Value) -> Value {
    let mut object = template(kind);
    merge(&mut object, patch);
    object
}

/// A Stripe-style id: `prefix` and 24 random characters.
pub fn new_id(prefix: &str) -> String {
    let random = uuid::Uuid::new_v4().simple().to_string();
    format!("{prefix}{}", &random[..24])
}

/// Stripe's list envelope.
pub fn list(url: &str, data: Vec<Value>, has_more: bool) -> Value {
    json!({"object": "list", "data": data, "has_more": has_more, "url": url})
}

pub fn customer(id: &str, email: Option<&str>, name: Option<&str>, now: i64) -> Value {
    from_template(
        "customer",
        json!({
            "id": id, "created": now, "email": email, "name": name, "discount": null,
            "address": null, "shipping": null, "currency": null,
            "invoice_prefix": id[4..12].to_uppercase(),
        }),
    )
}

/// A Billing Portal session: where a customer updates their card.
pub fn billing_portal_session(
    id: &str,
    customer: &str,
    return_url: Option<&str>,
    flow: Option<&str>,
    url: &str,
    now: i64,
) -> Value {
    let mut session = from_template(
        "billing_portal.session",
        json!({
            "id": id, "created": now, "customer": customer, "return_url": return_url,
            "url": url, "livemode": false, "configuration": "bpc_simulator",
        }),
    );
    session["flow"] = flow.map_or(Value::Null, |kind| {
        json!({"type": kind, "after_completion": {"type": "portal_homepage", "hosted_confirmation": null, "redirect": null},
               "subscription_cancel": null, "subscription_update": null, "subscription_update_confirm": null})
    });
    session
}

pub fn product(id: &str, name: &str, now: i64) -> Value {
    from_template(
        "product",
        json!({
            "id": id, "created": now, "updated": now, "name": name, "description": null,
            "default_price": null, "package_dimensions": null, "type": "service",
        }),
    )
}

/// A price; `interval` `None` for a one-time price.
pub fn price(
    id: &str,
    product: &str,
    currency: &str,
    unit_amount: i64,
    interval: Option<&str>,
    now: i64,
) -> Value {
    let recurring = interval.map(|interval| {
        json!({"interval": interval, "interval_count": 1, "meter": null, "usage_type": "licensed", "trial_period_days": null})
    });
    from_template(
        "price",
        json!({
            "id": id, "created": now, "product": product, "currency": currency,
            "unit_amount": unit_amount, "unit_amount_decimal": unit_amount.to_string(),
            "recurring": recurring, "type": if interval.is_some() { "recurring" } else { "one_time" },
            "transform_quantity": null, "custom_unit_amount": null,
        }),
    )
}

/// The legacy `plan` Stripe still renders beside a recurring price.
pub fn plan_of(price: &Value) -> Value {
    json!({
        "id": price["id"], "object": "plan", "active": true, "amount": price["unit_amount"],
        "amount_decimal": price["unit_amount_decimal"], "billing_scheme": "per_unit", "created": price["created"],
        "currency": price["currency"], "interval": price["recurring"]["interval"], "interval_count": 1,
        "livemode": false, "metadata": {}, "meter": null, "nickname": null, "product": price["product"],
        "tiers_mode": null, "transform_usage": null, "trial_period_days": null, "usage_type": "licensed",
    })
}

/// What a new checkout session needs.
pub struct SessionSpec<'a> {
    pub id: &'a str,
    pub url: &'a str,
    pub mode: &'a str,
    pub amount_total: i64,
    pub currency: &'a str,
    pub customer: Option<&'a str>,
    pub customer_email: Option<&'a str>,
    pub client_reference_id: Option<&'a str>,
    pub metadata: Value,
    pub success_url: Option<&'a str>,
    pub cancel_url: Option<&'a str>,
    pub submit_type: Option<&'a str>,
    pub expires_at: i64,
    pub now: i64,
}

pub fn checkout_session(spec: &SessionSpec<'_>) -> Value {
    from_template(
        "checkout.session",
        json!({
            "id": spec.id, "url": spec.url, "created": spec.now, "expires_at": spec.expires_at,
            "mode": spec.mode, "status": "open", "payment_status": "unpaid",
            "amount_subtotal": spec.amount_total, "amount_total": spec.amount_total,
            "currency": spec.currency, "customer": spec.customer, "customer_email": spec.customer_email,
            "customer_details": null, "client_reference_id": spec.client_reference_id,
            "metadata": spec.metadata, "success_url": spec.success_url, "cancel_url": spec.cancel_url,
            "submit_type": spec.submit_type, "payment_intent": null, "subscription": null, "invoice": null,
            "after_expiration": null, "shipping_cost": null, "shipping_address_collection": null,
            "shipping_options": [], "invoice_creation": null, "collected_information": null,
            "custom_text": {"after_submit": null, "shipping_address": null, "submit": null, "terms_of_service_acceptance": null},
            "payment_method_configuration_details": null, "discounts": null,
            "total_details": {"amount_discount": 0, "amount_shipping": null, "amount_tax": 0},
            "currency_conversion": null, "managed_payments": null,
            "customer_creation": if spec.mode == "payment" { "if_required" } else { "always" },
            "payment_method_collection": if spec.mode == "subscription" { Some("always") } else { None },
            "adaptive_pricing": {"enabled": false},
            "consent_collection": null, "client_secret": null,
        }),
    )
}

pub struct Payment<'a> {
    pub amount: i64,
    /// The card number the payer used (Stripe's test numbers: `4242…` works,
    /// `4000000000000002` is declined); its brand, last four digits and fingerprint show on
    /// the charge and the payment method.
    pub card: &'a str,
    pub currency: &'a str,
    pub customer: Option<&'a str>,
    pub description: Option<&'a str>,
    pub metadata: Value,
    pub now: i64,
}

pub fn payment_intent(
    id: &str,
    payment: &Payment<'_>,
    status: &str,
    latest_charge: Option<&str>,
) -> Value {
    let received = if status == "succeeded" {
        payment.amount
    } else {
        0
    };
    from_template(
        "payment_intent",
        json!({
            "id": id, "created": payment.now, "amount": payment.amount, "amount_received": received,
            "currency": payment.currency, "customer": payment.customer, "description": payment.description,
            "metadata": payment.metadata, "status": status, "latest_charge": latest_charge,
            "client_secret": format!("{id}_secret_{}", &new_id("")[..16]),
            "canceled_at": null, "last_payment_error": null, "next_action": null, "processing": null,
            "transfer_data": null, "shipping": null, "payment_method_configuration_details": null,
            "payment_method": format!("pm_{}", &id[3..]), "managed_payments": null,
            "automatic_payment_methods": null,
        }),
    )
}

/// A card charge: `failure` is `Some((code, message))` for a decline.
pub fn charge(
    id: &str,
    payment: &Payment<'_>,
    payment_intent: &str,
    balance_transaction: Option<&str>,
    failure: Option<(&str, &str)>,
) -> Value {
    let paid = failure.is_none();
    let outcome = if paid {
        json!({"network_status": "approved_by_network", "reason": null, "seller_message": "Payment complete.", "type": "authorized", "advice_code": null, "network_advice_code": null, "network_decline_code": null})
    } else {
        json!({"network_status": "declined_by_network", "reason": "generic_decline", "seller_message": "The bank did not return any further details with this decline.", "type": "issuer_declined", "advice_code": null, "network_advice_code": null, "network_decline_code": null})
    };
    let mut charge = from_template(
        "charge",
        json!({
            "id": id, "created": payment.now, "amount": payment.amount,
            "amount_captured": if paid { payment.amount } else { 0 }, "amount_refunded": 0,
            "currency": payment.currency, "customer": payment.customer, "description": payment.description,
            "metadata": payment.metadata, "payment_intent": payment_intent,
            "balance_transaction": balance_transaction, "captured": paid, "paid": paid,
            "status": if paid { "succeeded" } else { "failed" }, "refunded": false, "disputed": false,
            "failure_code": failure.map(|f| f.0), "failure_message": failure.map(|f| f.1),
            "outcome": outcome, "billing_details": {"address": null, "email": null, "name": null, "phone": null, "tax_id": null},
            "receipt_url": null, "payment_method": format!("pm_{}", &payment_intent[3..]),
            "source": null, "transfer_data": null,
            "payment_method_details": {"card": {"installments": null, "wallet": null, "three_d_secure": null,
                "overcapture": {"maximum_amount_capturable": payment.amount, "status": "unavailable"}}},
            "refunds": {"object": "list", "data": [], "has_more": false, "url": format!("/v1/charges/{id}/refunds")},
        }),
    );
    let details = card_details(payment.card);
    for field in ["brand", "last4", "fingerprint"] {
        charge["payment_method_details"]["card"][field] = details[field].clone();
    }
    charge["payment_method_details"]["card"]["network"] = details["brand"].clone();
    charge
}

/// The card a payer uses when a test names none: Stripe's `4242 4242 4242 4242`.
pub const PAYING_CARD: &str = "4242424242424242";

/// The card the hosted page's "Decline card" uses: Stripe's generic decline test card.
pub const DECLINING_CARD: &str = "4000000000000002";

/// What Stripe shows of a card: brand, last four digits, and a fingerprint (16 characters,
/// the same for the same number on one account, so one card tried many times is
/// recognisable).
pub fn card_details(number: &str) -> Value {
    let digits: String = number.chars().filter(char::is_ascii_digit).collect();
    let brand = match digits.as_bytes() {
        [b'4', ..] => "visa",
        [b'3', b'4' | b'7', ..] => "amex",
        [b'5' | b'2', ..] => "mastercard",
        [b'6', ..] => "discover",
        _ => "unknown",
    };
    let last4 = if digits.len() >= 4 {
        digits[digits.len() - 4..].to_owned()
    } else {
        "0000".to_owned()
    };
    // FNV-1a, twice with different seeds, as 16 base-62 characters.
    const ALPHABET: &[u8] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";
    let mut fingerprint = String::with_capacity(16);
    for seed in [0xcbf2_9ce4_8422_2325_u64, 0x8422_2325_cbf2_9ce4_u64] {
        let mut hash = seed;
        for byte in digits.bytes() {
            hash ^= u64::from(byte);
            hash = hash.wrapping_mul(0x0100_0000_01b3);
        }
        for _ in 0..8 {
            fingerprint.push(char::from(
                ALPHABET[usize::try_from(hash % 62).unwrap_or(0)],
            ));
            hash /= 62;
        }
    }
    json!({"brand": brand, "last4": last4, "fingerprint": fingerprint, "display_brand": brand})
}

/// The payment method a payment was tried with (on a payment intent's
/// `last_payment_error.payment_method`).
pub fn payment_method(id: &str, payment: &Payment<'_>) -> Value {
    let mut card = card_details(payment.card);
    if let Some(card) = card.as_object_mut() {
        card.remove("display_brand");
    }
    let mut method = from_template(
        "payment_method",
        json!({
            "id": id, "created": payment.now, "customer": payment.customer, "metadata": {},
            "billing_details": {"address": {"city": null, "country": null, "line1": null, "line2": null, "postal_code": null, "state": null},
                "email": null, "name": null, "phone": null, "tax_id": null},
            "card": card,
        }),
    );
    method["card"]["display_brand"] = method["card"]["brand"].clone();
    method["card"]["wallet"] = Value::Null;
    method
}

/// Stripe's standard card pricing (2.9 % + 30 minor units; 3.6 % for zero-decimal
/// currencies), in integers.
pub fn card_fee(amount: i64, zero_decimal: bool) -> i64 {
    if zero_decimal {
        amount * 36 / 1000
    } else {
        amount * 29 / 1000 + 30
    }
}

/// A balance transaction of `settled` money (see [`crate::currencies::settle`]): its
/// `amount`, `currency` and `exchange_rate` are the settled ones, `fee` in that currency.
#[allow(clippy::too_many_arguments)]
pub fn settled_transaction(
    id: &str,
    source: &str,
    settled: &crate::currencies::Settled,
    fee: i64,
    kind: &str,
    category: &str,
    now: i64,
) -> Value {
    let mut txn = balance_transaction(
        id,
        source,
        settled.amount,
        fee,
        &settled.currency,
        kind,
        category,
        now,
    );
    // A JSON number, as Stripe writes it.
    txn["exchange_rate"] = settled
        .exchange_rate
        .as_deref()
        .and_then(|rate| serde_json::from_str(rate).ok())
        .unwrap_or(Value::Null);
    txn
}

pub fn balance_transaction(
    id: &str,
    source: &str,
    amount: i64,
    fee: i64,
    currency: &str,
    kind: &str,
    category: &str,
    now: i64,
) -> Value {
    let fee_details = if fee == 0 {
        json!([])
    } else {
        json!([{"amount": fee, "application": null, "currency": currency, "description": "Stripe processing fees", "type": "stripe_fee"}])
    };
    from_template(
        "balance_transaction",
        json!({
            "id": id, "created": now, "available_on": now + 2 * 86_400, "amount": amount, "fee": fee,
            "fee_details": fee_details, "net": amount - fee, "currency": currency, "type": kind,
            "reporting_category": category, "source": source, "status": "pending", "description": null,
        }),
    )
}

pub fn payout(id: &str, amount: i64, currency: &str, balance_transaction: &str, now: i64) -> Value {
    from_template(
        "payout",
        json!({
            "id": id, "created": now, "arrival_date": now + 86_400, "amount": amount, "currency": currency,
            "automatic": true, "balance_transaction": balance_transaction, "status": "pending",
            "reconciliation_status": "not_applicable", "destination": null, "trace_id": null,
            "description": "STRIPE PAYOUT", "source_type": "card",
        }),
    )
}

pub fn refund(
    id: &str,
    charge: &str,
    payment_intent: Option<&str>,
    amount: i64,
    currency: &str,
    reason: Option<&str>,
    balance_transaction: &str,
    metadata: Value,
    now: i64,
) -> Value {
    from_template(
        "refund",
        json!({
            "id": id, "created": now, "amount": amount, "charge": charge, "payment_intent": payment_intent,
            "currency": currency, "reason": reason, "status": "succeeded", "metadata": metadata,
            "balance_transaction": balance_transaction,
        }),
    )
}

pub fn dispute(
    id: &str,
    charge: &str,
    payment_intent: Option<&str>,
    amount: i64,
    currency: &str,
    balance_transactions: Vec<Value>,
    now: i64,
) -> Value {
    from_template(
        "dispute",
        json!({
            "id": id, "created": now, "amount": amount, "charge": charge, "payment_intent": payment_intent,
            "currency": currency, "status": "needs_response", "reason": "fraudulent",
            "balance_transactions": balance_transactions, "is_charge_refundable": false,
            "enhanced_eligibility_types": [],
            "evidence_details": {"due_by": now + 7 * 86_400, "has_evidence": false, "past_due": false, "submission_count": 0},
            "payment_method_details": {"card": {"brand": "visa", "case_type": "chargeback", "network_reason_code": "10.4"}, "type": "card"},
        }),
    )
}

/// Stripe Radar's early fraud warning on `charge`, as its example has it.
pub fn early_fraud_warning(
    id: &str,
    charge: &str,
    fraud_type: &str,
    actionable: bool,
    now: i64,
) -> Value {
    from_template(
        "radar.early_fraud_warning",
        json!({"id": id, "charge": charge, "fraud_type": fraud_type, "actionable": actionable,
               "created": now, "livemode": false}),
    )
}

/// A subscription with one item of `price`, in its current period.
pub fn subscription(
    id: &str,
    customer: &str,
    price: &Value,
    period: (i64, i64),
    status: &str,
    metadata: Value,
    now: i64,
) -> Value {
    let mut base = template("subscription");
    let mut item = base["items"]["data"][0].take();
    merge(
        &mut item,
        json!({
            "id": new_id("si_"), "created": now, "subscription": id,
            "current_period_start": period.0, "current_period_end": period.1, "billing_thresholds": null,
        }),
    );
    item["price"] = price.clone();
    item["plan"] = plan_of(price);
    merge(
        &mut base,
        json!({
            "id": id, "created": now, "start_date": now, "billing_cycle_anchor": period.0,
            "customer": customer, "currency": price["currency"], "status": status, "metadata": metadata,
            "items": {"object": "list", "data": [item], "has_more": false, "url": format!("/v1/subscription_items?subscription={id}")},
            "billing_cycle_anchor_config": null, "cancel_at": null, "canceled_at": null, "ended_at": null,
            "cancel_at_period_end": false, "cancellation_details": {"comment": null, "feedback": null, "reason": null},
            "next_pending_invoice_item_invoice": null, "pause_collection": null, "pending_invoice_item_interval": null,
            "pending_update": null, "transfer_data": null, "trial_end": null, "trial_start": null,
            "latest_invoice": null, "billing_thresholds": null, "billing_schedules": [],
            "managed_payments": null, "billing_mode": {"flexible": null, "type": "classic"},
            "payment_settings": {"payment_method_options": null, "payment_method_types": null, "save_default_payment_method": null},
        }),
    );
    base
}

pub struct InvoiceSpec<'a> {
    pub id: &'a str,
    pub customer: &'a str,
    pub customer_email: Option<&'a str>,
    pub subscription: &'a str,
    pub subscription_item: &'a str,
    pub price: &'a Value,
    pub billing_reason: &'a str,
    pub period: (i64, i64),
    /// The customer's invoice number (1, 2, …).
    pub sequence: usize,
    /// The subscription's metadata, as Stripe copies it to the invoice.
    pub subscription_metadata: &'a Value,
    pub now: i64,
}

/// A subscription invoice, `open` until [`invoice_settled`] marks it.
pub fn invoice(spec: &InvoiceSpec<'_>) -> Value {
    let amount = spec.price["unit_amount"].as_i64().unwrap_or(0);
    let currency = spec.price["currency"].clone();
    let line = json!({
        "id": new_id("il_"), "object": "line_item", "amount": amount, "currency": currency,
        "description": format!("1 × {}", spec.price["product"].as_str().unwrap_or("contribution")),
        "discount_amounts": [], "discountable": true, "discounts": [], "invoice": spec.id, "livemode": false,
        "metadata": {}, "period": {"start": spec.period.0, "end": spec.period.1}, "quantity": 1,
        "subscription": spec.subscription, "pretax_credit_amounts": null, "taxes": null,
        "parent": {"type": "subscription_item_details", "invoice_item_details": null,
            "subscription_item_details": {"invoice_item": null, "proration": false, "proration_details": {"credited_items": null},
                "subscription": spec.subscription, "subscription_item": spec.subscription_item}},
        "pricing": {"type": "price_details", "unit_amount_decimal": amount.to_string(), "price_details": {"price": spec.price["id"], "product": spec.price["product"]}},
        "subtotal": amount, "quantity_decimal": "1",
    });
    from_template(
        "invoice",
        json!({
            "id": spec.id, "created": spec.now, "customer": spec.customer, "customer_email": spec.customer_email,
            "currency": currency, "amount_due": amount, "amount_paid": 0, "amount_remaining": amount,
            "amount_overpaid": 0, "subtotal": amount, "subtotal_excluding_tax": amount, "total": amount,
            "total_excluding_tax": amount, "billing_reason": spec.billing_reason, "status": "open",
            "attempt_count": 0, "attempted": false, "auto_advance": true,
            "period_start": spec.period.0, "period_end": spec.period.1,
            "lines": {"object": "list", "data": [line], "has_more": false, "url": format!("/v1/invoices/{}/lines", spec.id)},
            "parent": {"type": "subscription_details", "quote_details": null,
                "subscription_details": {"metadata": spec.subscription_metadata, "subscription": spec.subscription}},
            "due_date": null, "from_invoice": null, "last_finalization_error": null, "latest_revision": null,
            "webhooks_delivered_at": spec.now, "next_payment_attempt": null, "effective_at": spec.now,
            "status_transitions": {"finalized_at": spec.now, "marked_uncollectible_at": null, "paid_at": null, "voided_at": null},
            "shipping_cost": null, "shipping_details": null,
            "payment_settings": {"default_mandate": null, "payment_method_options": null, "payment_method_types": null},
            "number": format!("{}-{:04}", &spec.customer[4..12].to_uppercase(), spec.sequence),
        }),
    )
}

/// Marks `invoice` paid or failed at `now` (`next_attempt`: when a failed one is retried).
/// Its payments are not part of it: since 2025-05-28.basil `payments` is includable, so
/// Stripe renders it only when expanded (see [`with_payments`]); each payment is an
/// `invoice_payment` of its own ([`invoice_payment`]).
pub fn invoice_settled(invoice: &mut Value, paid: bool, now: i64, next_attempt: Option<i64>) {
    let amount = invoice["amount_due"].as_i64().unwrap_or(0);
    let attempts = invoice["attempt_count"].as_i64().unwrap_or(0) + 1;
    let patch = if paid {
        json!({"status": "paid", "amount_paid": amount, "amount_remaining": 0, "attempt_count": attempts, "attempted": true,
               "next_payment_attempt": null, "status_transitions": {"paid_at": now}})
    } else {
        json!({"attempt_count": attempts, "attempted": true, "next_payment_attempt": next_attempt})
    };
    merge(invoice, patch);
}

/// One payment of an invoice (`invoice_payment`, the object of `invoice_payment.paid`), with
/// exactly the fields of Stripe's example plus the payment intent its `payment` names.
pub fn invoice_payment(
    id: &str,
    invoice: &str,
    amount: i64,
    currency: &Value,
    payment_intent: &str,
    now: i64,
) -> Value {
    from_template(
        "invoice_payment",
        json!({
            "id": id, "invoice": invoice, "amount_paid": amount, "amount_requested": amount,
            "created": now, "currency": currency, "is_default": true, "livemode": false,
            "payment": {"type": "payment_intent", "payment_intent": payment_intent},
            "status": "paid", "status_transitions": {"canceled_at": null, "paid_at": now},
        }),
    )
}

/// `invoice` as Stripe renders it with `expand[]=payments`: its payments as a list.
pub fn with_payments(invoice: &Value, payments: Vec<Value>) -> Value {
    let mut expanded = invoice.clone();
    expanded["payments"] = list(
        &format!(
            "/v1/invoices/{}/payments",
            invoice["id"].as_str().unwrap_or_default()
        ),
        payments,
        false,
    );
    expanded
}

pub fn event(
    id: &str,
    kind: &str,
    object: Value,
    previous_attributes: Option<Value>,
    request_id: Option<&str>,
    now: i64,
) -> Value {
    let mut data = json!({"object": object});
    if let Some(previous) = previous_attributes {
        data["previous_attributes"] = previous;
    }
    json!({
        "id": id, "object": "event", "api_version": crate::API_VERSION, "created": now, "data": data,
        "livemode": false, "pending_webhooks": 1, "request": {"id": request_id, "idempotency_key": null},
        "type": kind,
    })
}
