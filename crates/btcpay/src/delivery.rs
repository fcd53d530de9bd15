//! The lenient delivery envelope: what a verified BTCPay webhook body says, read from an
//! allowlist of fields. Unknown event types are kept by name ([`EventKind::Other`]);
//! unknown fields are ignored; `metadata` yields only `orderId` (Kopilka's id), never
//! `buyerEmail` or anything else a store put there.
//!
//! Deduplication: BTCPay gives each delivery a fresh `deliveryId`; a redelivery (by hand or
//! automatic, after a failure) carries `isRedelivery: true` and the first delivery's id in
//! `originalDeliveryId`. [`Delivery::event_id`] is the id that stays the same across them.

use serde::Deserialize;

use crate::PaymentRecord;

/// The event types Kopilka acts on, and any other by name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EventKind {
    /// `InvoiceCreated`.
    InvoiceCreated,
    /// `InvoiceReceivedPayment`: one payment seen (maybe partial, maybe late).
    InvoiceReceivedPayment,
    /// `InvoiceProcessing`: paid in full, waiting for confirmations.
    InvoiceProcessing,
    /// `InvoicePaymentSettled`: one payment confirmed.
    InvoicePaymentSettled,
    /// `InvoiceSettled`: paid and confirmed (or marked settled).
    InvoiceSettled,
    /// `InvoiceExpired`: not paid in full in time.
    InvoiceExpired,
    /// `InvoiceInvalid`: marked invalid, or payments failed to confirm in time.
    InvoiceInvalid,
    /// Anything else (payment requests, payouts, subscriptions…), by its name.
    Other(String),
}

impl EventKind {
    /// The kind named `name`.
    #[must_use]
    pub fn from_name(name: &str) -> Self {
        match name {
            "InvoiceCreated" => Self::InvoiceCreated,
            "InvoiceReceivedPayment" => Self::InvoiceReceivedPayment,
            "InvoiceProcessing" => Self::InvoiceProcessing,
            "InvoicePaymentSettled" => Self::InvoicePaymentSettled,
            "InvoiceSettled" => Self::InvoiceSettled,
            "InvoiceExpired" => Self::InvoiceExpired,
            "InvoiceInvalid" => Self::InvoiceInvalid,
            other => Self::Other(other.to_owned()),
        }
    }

    /// BTCPay's name for it.
    #[must_use]
    pub fn as_str(&self) -> &str {
        match self {
            Self::InvoiceCreated => "InvoiceCreated",
            Self::InvoiceReceivedPayment => "InvoiceReceivedPayment",
            Self::InvoiceProcessing => "InvoiceProcessing",
            Self::InvoicePaymentSettled => "InvoicePaymentSettled",
            Self::InvoiceSettled => "InvoiceSettled",
            Self::InvoiceExpired => "InvoiceExpired",
            Self::InvoiceInvalid => "InvoiceInvalid",
            Self::Other(name) => name,
        }
    }
}

/// Why a verified body is not a delivery.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DeliveryError {
    /// Not JSON, or without `deliveryId` / `type`.
    #[error("not a BTCPay webhook delivery: {0}")]
    Malformed(&'static str),
}

/// One webhook delivery, as Kopilka reads it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Delivery {
    /// This delivery's id (new for each redelivery).
    pub delivery_id: String,
    /// The first delivery's id (the same as [`Self::delivery_id`] on a first delivery).
    pub original_delivery_id: Option<String>,
    /// Whether this is a redelivery.
    pub is_redelivery: bool,
    /// The webhook that sent it.
    pub webhook_id: Option<String>,
    /// What happened.
    pub kind: EventKind,
    /// When the first delivery was created (unix seconds).
    pub timestamp: Option<i64>,
    /// The store.
    pub store_id: Option<String>,
    /// The invoice, for invoice events.
    pub invoice_id: Option<String>,
    /// Kopilka's id (`metadata.orderId`), for invoice events.
    pub order_id: Option<String>,
    /// `InvoiceSettled` / `InvoiceInvalid`: marked by hand (or through the API).
    pub manually_marked: Option<bool>,
    /// `InvoiceSettled` / `InvoiceProcessing`: more than the amount was received.
    pub over_paid: Option<bool>,
    /// `InvoiceReceivedPayment` / `InvoicePaymentSettled`: paid after the invoice expired.
    pub after_expiration: Option<bool>,
    /// `InvoiceExpired`: some payment arrived before it expired.
    pub partially_paid: Option<bool>,
    /// `InvoiceReceivedPayment` / `InvoicePaymentSettled`: the method (`BTC-CHAIN`, …).
    pub payment_method_id: Option<String>,
    /// `InvoiceReceivedPayment` / `InvoicePaymentSettled`: the payment.
    pub payment: Option<PaymentRecord>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Envelope {
    delivery_id: String,
    #[serde(default)]
    original_delivery_id: Option<String>,
    #[serde(default)]
    is_redelivery: Option<bool>,
    #[serde(default)]
    webhook_id: Option<String>,
    #[serde(rename = "type")]
    kind: String,
    #[serde(default)]
    timestamp: Option<i64>,
    #[serde(default)]
    store_id: Option<String>,
    #[serde(default)]
    invoice_id: Option<String>,
    #[serde(default)]
    metadata: Option<serde_json::Value>,
    #[serde(default)]
    manually_marked: Option<bool>,
    #[serde(default)]
    over_paid: Option<bool>,
    #[serde(default)]
    after_expiration: Option<bool>,
    #[serde(default)]
    partially_paid: Option<bool>,
    #[serde(default)]
    payment_method_id: Option<String>,
    #[serde(default)]
    payment: Option<PaymentRecord>,
}

impl Delivery {
    /// Reads a delivery from a (verified) raw body.
    ///
    /// # Errors
    /// [`DeliveryError::Malformed`] when the body is not JSON or lacks `deliveryId`/`type`.
    pub fn parse(body: &[u8]) -> Result<Self, DeliveryError> {
        let envelope: Envelope = serde_json::from_slice(body).map_err(|_| {
            DeliveryError::Malformed("expected a JSON object with deliveryId and type")
        })?;
        if envelope.delivery_id.is_empty() || envelope.kind.is_empty() {
            return Err(DeliveryError::Malformed("empty deliveryId or type"));
        }
        let order_id = envelope
            .metadata
            .as_ref()
            .and_then(|m| m.get("orderId"))
            .and_then(serde_json::Value::as_str)
            .map(str::to_owned);
        Ok(Self {
            delivery_id: envelope.delivery_id,
            original_delivery_id: envelope.original_delivery_id.filter(|id| !id.is_empty()),
            is_redelivery: envelope.is_redelivery.unwrap_or(false),
            webhook_id: envelope.webhook_id,
            kind: EventKind::from_name(&envelope.kind),
            timestamp: envelope.timestamp,
            store_id: envelope.store_id,
            invoice_id: envelope.invoice_id,
            order_id,
            manually_marked: envelope.manually_marked,
            over_paid: envelope.over_paid,
            after_expiration: envelope.after_expiration,
            partially_paid: envelope.partially_paid,
            payment_method_id: envelope.payment_method_id,
            payment: envelope.payment,
        })
    }

    /// The id shared by a delivery and all its redeliveries: `originalDeliveryId` when
    /// present, else `deliveryId`. Store events under it and a redelivery changes nothing.
    #[must_use]
    pub fn event_id(&self) -> &str {
        self.original_delivery_id
            .as_deref()
            .unwrap_or(&self.delivery_id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_payment_delivery_reads_its_payment_and_nothing_private() {
        let body =
            br#"{"deliveryId":"d2","webhookId":"w1","originalDeliveryId":"d1","isRedelivery":true,
            "type":"InvoiceReceivedPayment","timestamp":1700000000,"storeId":"s1","invoiceId":"i1",
            "metadata":{"orderId":"c1","buyerEmail":"reader@example.org"},"afterExpiration":true,
            "paymentMethodId":"BTC-CHAIN","payment":{"id":"tx-0","receivedDate":1700000000,
            "value":"0.00010000","fee":"0.00000100","status":"Processing","destination":"bc1q"},
            "somethingNew":{"x":1}}"#;
        let delivery = Delivery::parse(body).unwrap();
        assert_eq!(delivery.kind, EventKind::InvoiceReceivedPayment);
        assert_eq!(delivery.event_id(), "d1");
        assert!(delivery.is_redelivery);
        assert_eq!(delivery.after_expiration, Some(true));
        assert_eq!(delivery.payment.as_ref().unwrap().value, "0.00010000");
        assert!(!format!("{delivery:?}").contains("reader@"));
    }

    #[test]
    fn unknown_types_are_kept_by_name() {
        let delivery =
            Delivery::parse(br#"{"deliveryId":"d","type":"PayoutCreated","timestamp":1}"#).unwrap();
        assert_eq!(delivery.kind, EventKind::Other("PayoutCreated".into()));
        assert_eq!(delivery.event_id(), "d");
    }

    #[test]
    fn bodies_without_ids_are_refused() {
        assert!(Delivery::parse(b"[]").is_err());
        assert!(Delivery::parse(br#"{"type":"InvoiceSettled"}"#).is_err());
        assert!(Delivery::parse(br#"{"deliveryId":"","type":"InvoiceSettled"}"#).is_err());
    }
}
