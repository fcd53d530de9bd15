//! What the inbox stores of an event: an allowlisted projection, never Stripe's body.
//!
//! For each event type Kopilka handles, [`project`] keeps ids, amounts, currencies,
//! statuses, intervals, period dates, Kopilka's own metadata keys and exactly the fields the
//! appliers read. Everything else — addresses, names, IPs, card details, dispute evidence,
//! invoice links, custom fields, and any field Stripe adds next year — is dropped before the
//! first write, because it is not on a list. Unhandled types keep the envelope only (its
//! columns), with an empty projection.
//!
//! A kept field must have its kind's shape (a string, an integer, a boolean) or be null;
//! anything else is dropped. A field that can arrive
//! expanded (`customer`, `payment_intent`, …) is kept as its id either way.

use kopilka_store::PgPool;
use serde_json::{Map, Value};

use crate::ReconciliationError;

/// The projection rules' version, stored with each event: rows of an older version are
/// projected again ([`reproject_stored`]) and, until then, when they are applied.
pub const VERSION: i16 = 1;

/// Metadata keys Kopilka itself sets on Stripe objects; other keys (another product's, or a
/// person's notes) are dropped.
pub const KOPILKA_METADATA_KEYS: &[&str] = &["contribution_id"];

/// How one field of an object is kept.
#[derive(Debug)]
enum Rule {
    /// A string (an id, an enum value, a currency); anything else is dropped.
    Text,
    /// An integer (an amount, a count, a Unix time); anything else is dropped.
    Int,
    /// A boolean; anything else is dropped.
    Bool,
    /// An expandable reference: its id, whether it arrives as a string or expanded.
    Id,
    /// Only Kopilka's own metadata keys, each a string.
    Metadata,
    /// A nested object, with its own rules.
    Object(&'static [(&'static str, Rule)]),
    /// An array of objects, each with these rules.
    Array(&'static [(&'static str, Rule)]),
    /// A Stripe list (`{object: "list", data: […], has_more}`), each item with these rules.
    List(&'static [(&'static str, Rule)]),
}

use Rule::{Array, Bool, Id, Int, List, Metadata, Object, Text};

const CHECKOUT_SESSION: &[(&str, Rule)] = &[
    ("id", Text),
    ("object", Text),
    ("livemode", Bool),
    ("created", Int),
    ("expires_at", Int),
    ("mode", Text),
    ("status", Text),
    ("payment_status", Text),
    ("client_reference_id", Text),
    ("amount_subtotal", Int),
    ("amount_total", Int),
    ("currency", Text),
    ("customer", Id),
    ("payment_intent", Id),
    ("subscription", Id),
    ("invoice", Id),
    ("metadata", Metadata),
];

const PAYMENT_INTENT: &[(&str, Rule)] = &[
    ("id", Text),
    ("object", Text),
    ("livemode", Bool),
    ("created", Int),
    ("status", Text),
    ("amount", Int),
    ("amount_received", Int),
    ("currency", Text),
    ("customer", Id),
    ("latest_charge", Id),
    ("cancellation_reason", Text),
    ("metadata", Metadata),
];

const REFUND: &[(&str, Rule)] = &[
    ("id", Text),
    ("object", Text),
    ("created", Int),
    ("status", Text),
    ("amount", Int),
    ("currency", Text),
    ("reason", Text),
    ("failure_reason", Text),
    ("payment_intent", Id),
    ("charge", Id),
    ("balance_transaction", Id),
    ("failure_balance_transaction", Id),
    ("metadata", Metadata),
];

const CHARGE: &[(&str, Rule)] = &[
    ("id", Text),
    ("object", Text),
    ("livemode", Bool),
    ("created", Int),
    ("status", Text),
    ("paid", Bool),
    ("captured", Bool),
    ("refunded", Bool),
    ("disputed", Bool),
    ("amount", Int),
    ("amount_captured", Int),
    ("amount_refunded", Int),
    ("currency", Text),
    ("payment_intent", Id),
    ("customer", Id),
    ("balance_transaction", Id),
    ("metadata", Metadata),
    ("refunds", List(REFUND)),
];

const BALANCE_TRANSACTION: &[(&str, Rule)] = &[
    ("id", Text),
    ("object", Text),
    ("created", Int),
    ("type", Text),
    ("reporting_category", Text),
    ("amount", Int),
    ("fee", Int),
    ("net", Int),
    ("currency", Text),
    ("source", Id),
];

const DISPUTE: &[(&str, Rule)] = &[
    ("id", Text),
    ("object", Text),
    ("livemode", Bool),
    ("created", Int),
    ("status", Text),
    ("reason", Text),
    ("amount", Int),
    ("currency", Text),
    ("is_charge_refundable", Bool),
    ("charge", Id),
    ("payment_intent", Id),
    ("balance_transactions", Array(BALANCE_TRANSACTION)),
    ("metadata", Metadata),
];

const PRICE: &[(&str, Rule)] = &[
    ("id", Text),
    ("object", Text),
    ("type", Text),
    ("unit_amount", Int),
    ("currency", Text),
    ("product", Id),
    (
        "recurring",
        Object(&[
            ("interval", Text),
            ("interval_count", Int),
            ("usage_type", Text),
        ]),
    ),
];

const SUBSCRIPTION_ITEM: &[(&str, Rule)] = &[
    ("id", Text),
    ("object", Text),
    ("created", Int),
    ("quantity", Int),
    ("current_period_start", Int),
    ("current_period_end", Int),
    ("subscription", Id),
    ("price", Object(PRICE)),
];

const SUBSCRIPTION: &[(&str, Rule)] = &[
    ("id", Text),
    ("object", Text),
    ("livemode", Bool),
    ("created", Int),
    ("start_date", Int),
    ("status", Text),
    ("currency", Text),
    ("billing_cycle_anchor", Int),
    ("cancel_at_period_end", Bool),
    ("cancel_at", Int),
    ("canceled_at", Int),
    ("ended_at", Int),
    ("customer", Id),
    ("latest_invoice", Id),
    ("metadata", Metadata),
    (
        "pause_collection",
        Object(&[("behavior", Text), ("resumes_at", Int)]),
    ),
    // `feedback` is one of Stripe's fixed reasons; `comment` is free text and dropped.
    (
        "cancellation_details",
        Object(&[("reason", Text), ("feedback", Text)]),
    ),
    ("items", List(SUBSCRIPTION_ITEM)),
];

const INVOICE_PAYMENT: &[(&str, Rule)] = &[
    ("id", Text),
    ("object", Text),
    ("created", Int),
    ("status", Text),
    ("is_default", Bool),
    ("amount_paid", Int),
    ("amount_requested", Int),
    ("currency", Text),
    (
        "payment",
        Object(&[("type", Text), ("payment_intent", Id), ("charge", Id)]),
    ),
];

const INVOICE_PAYMENT_EVENT: &[(&str, Rule)] = &[
    ("id", Text),
    ("object", Text),
    ("livemode", Bool),
    ("created", Int),
    ("status", Text),
    ("is_default", Bool),
    ("amount_paid", Int),
    ("amount_requested", Int),
    ("currency", Text),
    ("invoice", Id),
    (
        "payment",
        Object(&[("type", Text), ("payment_intent", Id), ("charge", Id)]),
    ),
    (
        "status_transitions",
        Object(&[("paid_at", Int), ("canceled_at", Int)]),
    ),
];

const EARLY_FRAUD_WARNING: &[(&str, Rule)] = &[
    ("id", Text),
    ("object", Text),
    ("livemode", Bool),
    ("created", Int),
    ("actionable", Bool),
    ("fraud_type", Text),
    ("charge", Id),
    ("payment_intent", Id),
];

const INVOICE: &[(&str, Rule)] = &[
    ("id", Text),
    ("object", Text),
    ("livemode", Bool),
    ("created", Int),
    ("status", Text),
    ("billing_reason", Text),
    ("collection_method", Text),
    ("amount_due", Int),
    ("amount_paid", Int),
    ("amount_remaining", Int),
    ("currency", Text),
    ("attempt_count", Int),
    ("attempted", Bool),
    ("next_payment_attempt", Int),
    ("period_start", Int),
    ("period_end", Int),
    ("customer", Id),
    // Before the 2025 "basil" API the subscription sat on the invoice itself.
    ("subscription", Id),
    ("metadata", Metadata),
    (
        "parent",
        Object(&[
            ("type", Text),
            (
                "subscription_details",
                Object(&[("subscription", Id), ("metadata", Metadata)]),
            ),
        ]),
    ),
    (
        "status_transitions",
        Object(&[
            ("finalized_at", Int),
            ("paid_at", Int),
            ("voided_at", Int),
            ("marked_uncollectible_at", Int),
        ]),
    ),
    ("payments", List(INVOICE_PAYMENT)),
    // Each line's amount and period: the interval the invoice paid for (MRR).
    (
        "lines",
        List(&[
            ("amount", Int),
            ("period", Object(&[("start", Int), ("end", Int)])),
        ]),
    ),
];

/// Every event type Kopilka handles, with the rules for its `data.object`. An event of any
/// other type keeps its envelope only.
const HANDLED: &[(&str, &[(&str, Rule)])] = &[
    ("checkout.session.completed", CHECKOUT_SESSION),
    ("checkout.session.async_payment_succeeded", CHECKOUT_SESSION),
    ("checkout.session.async_payment_failed", CHECKOUT_SESSION),
    ("checkout.session.expired", CHECKOUT_SESSION),
    ("payment_intent.succeeded", PAYMENT_INTENT),
    ("payment_intent.payment_failed", PAYMENT_INTENT),
    ("refund.created", REFUND),
    ("refund.updated", REFUND),
    ("charge.refund.updated", REFUND),
    ("charge.refunded", CHARGE),
    ("charge.dispute.created", DISPUTE),
    ("charge.dispute.updated", DISPUTE),
    ("charge.dispute.closed", DISPUTE),
    ("charge.dispute.funds_withdrawn", DISPUTE),
    ("charge.dispute.funds_reinstated", DISPUTE),
    ("customer.subscription.created", SUBSCRIPTION),
    ("customer.subscription.updated", SUBSCRIPTION),
    ("customer.subscription.deleted", SUBSCRIPTION),
    ("invoice.paid", INVOICE),
    ("invoice.payment_succeeded", INVOICE),
    ("invoice.payment_failed", INVOICE),
    ("invoice.payment_action_required", INVOICE),
    ("invoice_payment.paid", INVOICE_PAYMENT_EVENT),
    ("refund.failed", REFUND),
    ("radar.early_fraud_warning.created", EARLY_FRAUD_WARNING),
    ("radar.early_fraud_warning.updated", EARLY_FRAUD_WARNING),
];

/// The event types Kopilka handles (and so the ones its webhook endpoint should subscribe to).
pub fn handled_event_types() -> impl Iterator<Item = &'static str> {
    HANDLED.iter().map(|(kind, _)| *kind)
}

/// Whether Kopilka acts on events of `kind`.
#[must_use]
pub fn is_handled(kind: &str) -> bool {
    HANDLED.iter().any(|(handled, _)| *handled == kind)
}

/// The stored projection of an event of `kind` whose `data.object` is `object`:
/// `{"object": {…allowlisted…}}` for a handled type, `{}` for any other.
#[must_use]
pub fn project(kind: &str, object: &Value) -> Value {
    let mut stored = Map::new();
    if let Some((_, rules)) = HANDLED.iter().find(|(handled, _)| *handled == kind) {
        stored.insert("object".to_owned(), keep_object(object, rules));
    }
    Value::Object(stored)
}

/// The projection of a stored payload of any version: a whole event (version 0, as stored
/// before projections) or a projection (kept as it is, projected again).
#[must_use]
pub fn project_stored(kind: &str, payload: &Value) -> Value {
    let object = payload
        .get("data")
        .map_or_else(|| &payload["object"], |data| &data["object"]);
    project(kind, object)
}

/// Projects every event stored under older rules, in batches; returns how many. Run after
/// migrations (`kopilka migrate`, `serve --migrate`, `dev`): it turns whole Stripe bodies
/// stored by an earlier Kopilka into projections, so nothing personal outlives an upgrade.
///
/// # Errors
/// Storage errors.
pub async fn reproject_stored(pool: &PgPool) -> Result<u64, ReconciliationError> {
    let mut total = 0;
    loop {
        let mut tx = pool.begin().await?;
        let rows: Vec<(String, String, Value)> = sqlx::query_as(
            "SELECT id, type, payload FROM provider_events
             WHERE provider = 'stripe' AND projection_version < $1
             ORDER BY id LIMIT 500 FOR UPDATE SKIP LOCKED",
        )
        .bind(VERSION)
        .fetch_all(&mut *tx)
        .await?;
        if rows.is_empty() {
            return Ok(total);
        }
        for (id, kind, payload) in &rows {
            sqlx::query(
                "UPDATE provider_events SET payload = $2, projection_version = $3
                 WHERE provider = 'stripe' AND id = $1",
            )
            .bind(id)
            .bind(project_stored(kind, payload))
            .bind(VERSION)
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await.map_err(kopilka_store::StoreError::from)?;
        total += rows.len() as u64;
    }
}

/// The version of BTCPay deliveries' projection ([`project_delivery`]), stored in
/// `projection_version` beside it.
pub const DELIVERY_VERSION: i16 = 1;

/// The stored projection of a verified BTCPay delivery: for the invoice events Kopilka
/// acts on, the invoice, Kopilka's id (`orderId`, kept only when it is one of Kopilka's
/// ids, a UUID: another order id is a stranger's), the flags that decide how an invoice
/// ends (`manuallyMarked`, `overPaid`, `afterExpiration`, `partiallyPaid`), the payment
/// method and the payment (`value`, `status`, `receivedDate`); `{}` for any other type.
/// Never `metadata` beyond `orderId` (`buyerEmail`, a store's own keys), never the
/// payment's id (on-chain, its transaction: it would tie a reader to the chain),
/// destination or fee: [`kopilka_btcpay::Delivery`] reads nothing else, and this keeps
/// less.
#[must_use]
pub fn project_delivery(delivery: &kopilka_btcpay::Delivery) -> Value {
    if matches!(delivery.kind, kopilka_btcpay::EventKind::Other(_)) {
        return Value::Object(Map::new());
    }
    let mut kept = Map::new();
    let mut put = |name: &str, value: Option<Value>| {
        if let Some(value) = value {
            kept.insert(name.to_owned(), value);
        }
    };
    put("invoiceId", delivery.invoice_id.clone().map(Value::String));
    put(
        "orderId",
        delivery
            .order_id
            .as_deref()
            .filter(|id| uuid::Uuid::parse_str(id).is_ok())
            .map(|id| Value::String(id.to_owned())),
    );
    put("manuallyMarked", delivery.manually_marked.map(Value::Bool));
    put("overPaid", delivery.over_paid.map(Value::Bool));
    put(
        "afterExpiration",
        delivery.after_expiration.map(Value::Bool),
    );
    put("partiallyPaid", delivery.partially_paid.map(Value::Bool));
    put(
        "paymentMethodId",
        delivery.payment_method_id.clone().map(Value::String),
    );
    put(
        "payment",
        delivery.payment.as_ref().map(|payment| {
            let mut kept = Map::new();
            kept.insert("value".to_owned(), Value::String(payment.value.clone()));
            kept.insert(
                "status".to_owned(),
                serde_json::to_value(payment.status).unwrap_or(Value::Null),
            );
            if let Some(received) = payment.received_date {
                kept.insert("receivedDate".to_owned(), Value::from(received));
            }
            Value::Object(kept)
        }),
    );
    Value::Object(kept)
}

fn keep_object(value: &Value, rules: &[(&str, Rule)]) -> Value {
    let Some(fields) = value.as_object() else {
        return Value::Null;
    };
    let mut kept = Map::new();
    for (name, rule) in rules {
        let Some(field) = fields.get(*name) else {
            continue;
        };
        let projected = keep(field, rule);
        // A field of the wrong shape is dropped rather than stored as something else.
        if !projected.is_null() || field.is_null() {
            kept.insert((*name).to_owned(), projected);
        }
    }
    Value::Object(kept)
}

fn keep(value: &Value, rule: &Rule) -> Value {
    match rule {
        Text => match value {
            Value::String(_) => value.clone(),
            _ => Value::Null,
        },
        Int => match value {
            Value::Number(n) if n.is_i64() => value.clone(),
            _ => Value::Null,
        },
        Bool => match value {
            Value::Bool(_) => value.clone(),
            _ => Value::Null,
        },
        Id => match value {
            Value::String(_) | Value::Null => value.clone(),
            Value::Object(expanded) => match expanded.get("id") {
                Some(Value::String(id)) => Value::String(id.clone()),
                _ => Value::Null,
            },
            _ => Value::Null,
        },
        Metadata => {
            let Some(metadata) = value.as_object() else {
                return Value::Null;
            };
            Value::Object(
                KOPILKA_METADATA_KEYS
                    .iter()
                    .filter_map(|key| match metadata.get(*key) {
                        Some(Value::String(v)) => {
                            Some(((*key).to_owned(), Value::String(v.clone())))
                        }
                        _ => None,
                    })
                    .collect(),
            )
        }
        Object(rules) => keep_object(value, rules),
        Array(rules) => match value.as_array() {
            Some(items) => {
                Value::Array(items.iter().map(|item| keep_object(item, rules)).collect())
            }
            None => Value::Null,
        },
        List(rules) => {
            let Some(list) = value.as_object() else {
                return Value::Null;
            };
            let mut kept = Map::new();
            for key in ["object", "has_more", "total_count"] {
                if let Some(v) = list.get(key).filter(|v| !v.is_object() && !v.is_array()) {
                    kept.insert(key.to_owned(), v.clone());
                }
            }
            if let Some(items) = list.get("data").and_then(Value::as_array) {
                kept.insert(
                    "data".to_owned(),
                    Value::Array(items.iter().map(|item| keep_object(item, rules)).collect()),
                );
            }
            Value::Object(kept)
        }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn a_checkout_session_keeps_what_the_applier_reads_and_nothing_personal() {
        let object = json!({
            "id": "cs_1", "object": "checkout.session", "client_reference_id": "c-1",
            "payment_status": "paid", "amount_total": 500, "currency": "usd",
            "customer": {"id": "cus_1", "object": "customer", "email": "a@example.org"},
            "payment_intent": "pi_1", "subscription": null,
            "customer_details": {"email": "a@example.org", "name": "A", "address": {"city": "X"}},
            "custom_fields": [{"key": "why", "text": {"value": "secret"}}],
            "metadata": {"contribution_id": "c-1", "note": "from Alice"},
            "brand_new_field_of_2027": "a@example.org"
        });
        let stored = project("checkout.session.completed", &object);
        assert_eq!(
            stored,
            json!({"object": {
                "id": "cs_1", "object": "checkout.session", "client_reference_id": "c-1",
                "payment_status": "paid", "amount_total": 500, "currency": "usd",
                "customer": "cus_1", "payment_intent": "pi_1", "subscription": null,
                "metadata": {"contribution_id": "c-1"}
            }})
        );
    }

    #[test]
    fn unhandled_types_keep_the_envelope_only() {
        let object = json!({"id": "cus_1", "object": "customer", "email": "a@example.org"});
        assert_eq!(project("customer.updated", &object), json!({}));
        assert!(!is_handled("customer.updated"));
        assert!(is_handled("invoice.paid"));
    }

    #[test]
    fn a_field_of_the_wrong_shape_is_dropped() {
        let object = json!({"id": {"nested": "a@example.org"}, "amount": [1], "currency": "eur",
                            "payment_intent": 7});
        assert_eq!(
            project("refund.created", &object),
            json!({"object": {"currency": "eur"}})
        );
    }

    #[test]
    fn a_delivery_keeps_its_allowlist_and_nothing_of_the_buyer() {
        let body = br#"{"deliveryId":"d2","webhookId":"w1","originalDeliveryId":"d1","isRedelivery":true,
            "type":"InvoiceReceivedPayment","timestamp":1700000000,"storeId":"s1","invoiceId":"i1",
            "metadata":{"orderId":"0190a3c2-7d7e-7000-8000-000000000001","buyerEmail":"reader@example.org","itemDesc":"x"},
            "afterExpiration":true,"paymentMethodId":"BTC-CHAIN","payment":{"id":"tx-0",
            "receivedDate":1700000000,"value":"0.00010000","fee":"0.00000100","status":"Processing",
            "destination":"bc1qsecret"}}"#;
        let delivery = kopilka_btcpay::Delivery::parse(body).unwrap();
        assert_eq!(
            project_delivery(&delivery),
            json!({"invoiceId": "i1", "orderId": "0190a3c2-7d7e-7000-8000-000000000001",
                   "afterExpiration": true, "paymentMethodId": "BTC-CHAIN",
                   "payment": {"value": "0.00010000", "status": "Processing",
                               "receivedDate": 1_700_000_000}})
        );
    }

    #[test]
    fn a_strangers_order_id_and_other_types_are_not_kept() {
        let settled = kopilka_btcpay::Delivery::parse(
            br#"{"deliveryId":"d","type":"InvoiceSettled","invoiceId":"i1","metadata":{"orderId":"reader@example.org"},"manuallyMarked":false,"overPaid":true}"#,
        )
        .unwrap();
        assert_eq!(
            project_delivery(&settled),
            json!({"invoiceId": "i1", "manuallyMarked": false, "overPaid": true})
        );
        let other = kopilka_btcpay::Delivery::parse(
            br#"{"deliveryId":"d","type":"PayoutCreated","metadata":{"orderId":"0190a3c2-7d7e-7000-8000-000000000001"}}"#,
        )
        .unwrap();
        assert_eq!(project_delivery(&other), json!({}));
    }

    #[test]
    fn projecting_is_idempotent_across_stored_versions() {
        let event = json!({"id": "evt_1", "type": "invoice.paid", "data": {"object": {
            "id": "in_1", "object": "invoice", "customer_email": "a@example.org",
            "hosted_invoice_url": "https://invoice.stripe.com/i/secret", "amount_paid": 500,
            "currency": "usd", "account_tax_ids": ["txi_1"],
            "parent": {"type": "subscription_details", "subscription_details": {
                "subscription": "sub_1", "metadata": {"contribution_id": "c-1", "x": "y"}}},
            "payments": {"object": "list", "has_more": false, "url": "/v1/invoice_payments",
                "data": [{"id": "inpay_1", "object": "invoice_payment",
                          "payment": {"type": "payment_intent", "payment_intent": "pi_1"}}]}
        }}});
        let once = project_stored("invoice.paid", &event);
        assert_eq!(project_stored("invoice.paid", &once), once);
        let text = once.to_string();
        assert!(
            !text.contains("a@example.org") && !text.contains("secret") && !text.contains("txi_1"),
            "{text}"
        );
        assert_eq!(
            once["object"]["parent"]["subscription_details"]["metadata"],
            json!({"contribution_id": "c-1"})
        );
        assert_eq!(
            once["object"]["payments"]["data"][0]["payment"]["payment_intent"],
            "pi_1"
        );
        assert_eq!(once["object"]["payments"].get("url"), None);
    }
}
