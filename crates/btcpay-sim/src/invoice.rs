//! One invoice as the simulator keeps it, its Greenfield rendering (`InvoiceData`,
//! `InvoicePaymentMethodDataModel`) and its transitions. Each transition returns the
//! webhook events BTCPay would emit for it, in BTCPay's order.

use kopilka_domain::{Currency, Money};
use serde_json::{Value, json};

/// Satoshis per bitcoin.
const SATS: i128 = 100_000_000;

/// The only payment method the simulated store offers.
pub const METHOD: &str = "BTC-CHAIN";

/// A payment seen on the chain.
#[derive(Debug, Clone)]
pub struct Payment {
    pub id: String,
    pub received: i64,
    pub sats: i64,
    pub settled: bool,
    /// Received after the invoice expired.
    pub late: bool,
}

/// An invoice.
#[derive(Debug, Clone)]
pub struct Invoice {
    pub id: String,
    pub store_id: String,
    pub currency: Currency,
    pub amount_minor: i64,
    pub metadata: Value,
    pub expiration_minutes: i64,
    pub redirect_url: Option<String>,
    pub redirect_automatically: bool,
    pub created: i64,
    pub expiration: i64,
    pub monitoring_expiration: i64,
    pub status: &'static str,
    pub additional: &'static str,
    /// Fiat minor units per bitcoin, fixed when the invoice was created.
    pub rate_minor: i64,
    /// The amount in satoshis at that rate (rounded up, as a buyer must pay at least it).
    pub due_sats: i64,
    pub payments: Vec<Payment>,
    pub destination: String,
    pub key_index: usize,
}

/// A webhook event before it is addressed to a webhook: its type and type-specific fields
/// (the envelope's ids are added per delivery).
#[derive(Debug, Clone)]
pub struct Emitted {
    pub kind: &'static str,
    pub invoice_id: String,
    pub store_id: String,
    pub metadata: Value,
    pub extra: serde_json::Map<String, Value>,
}

/// What a button on the hosted page (or a `/_sim/invoices/{id}/{action}` call) does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Pay what is due, confirmed at once.
    Pay,
    /// Pay what is due, left unconfirmed (the invoice stays Processing).
    PayUnconfirmed,
    /// Confirm every unconfirmed payment.
    Confirm,
    /// Pay half of what is due.
    PayPartly,
    /// Pay what is due and a tenth more.
    Overpay,
    /// Let the invoice expire now.
    Expire,
    /// Let it expire (if it has not), then pay what was due.
    PayLate,
    /// Mark it invalid (as the merchant would).
    Invalid,
}

impl Action {
    /// The action a button or control route names (`pay`, `pay-partly`, …).
    #[must_use]
    pub fn from_name(name: &str) -> Option<Self> {
        Some(match name {
            "pay" => Self::Pay,
            "pay-unconfirmed" => Self::PayUnconfirmed,
            "confirm" => Self::Confirm,
            "pay-partly" => Self::PayPartly,
            "overpay" => Self::Overpay,
            "expire" => Self::Expire,
            "pay-late" => Self::PayLate,
            "invalid" => Self::Invalid,
            _ => return None,
        })
    }

    /// Every action with its route name and its button's label.
    pub const ALL: [(Self, &'static str, &'static str); 8] = [
        (Self::Pay, "pay", "Pay"),
        (Self::PayUnconfirmed, "pay-unconfirmed", "Pay, unconfirmed"),
        (Self::Confirm, "confirm", "Confirm payments"),
        (Self::PayPartly, "pay-partly", "Pay partly"),
        (Self::Overpay, "overpay", "Overpay"),
        (Self::Expire, "expire", "Let it expire"),
        (Self::PayLate, "pay-late", "Pay after expiry"),
        (Self::Invalid, "invalid", "Mark invalid"),
    ];
}

/// Why an action cannot be done now.
#[derive(Debug)]
pub struct Refusal(pub &'static str);

/// A decimal of `sats` in bitcoin, with BTCPay's 8 decimals (`-0.00010000` when negative).
pub fn btc(sats: i64) -> String {
    let sign = if sats < 0 { "-" } else { "" };
    let magnitude = sats.unsigned_abs();
    format!(
        "{sign}{}.{:08}",
        magnitude / 100_000_000,
        magnitude % 100_000_000
    )
}

/// The simulator's fixed bitcoin rates, in major units of each fiat currency.
pub fn rate_major(currency: Currency) -> i64 {
    match currency.iso_code() {
        "EUR" => 55_000,
        "GBP" => 48_000,
        "CHF" => 53_000,
        "RUB" => 5_500_000,
        "JPY" => 9_000_000,
        "UAH" => 2_500_000,
        "KZT" => 30_000_000,
        _ => 60_000,
    }
}

/// `minor` fiat at `rate_minor` per bitcoin, in satoshis, rounded up.
pub fn sats_for(minor: i64, rate_minor: i64) -> i64 {
    let numerator = i128::from(minor) * SATS;
    let rate = i128::from(rate_minor.max(1));
    i64::try_from((numerator + rate - 1) / rate).unwrap_or(i64::MAX)
}

impl Invoice {
    pub fn paid_sats(&self) -> i64 {
        self.payments.iter().map(|p| p.sats).sum()
    }

    fn remaining_sats(&self) -> i64 {
        (self.due_sats - self.paid_sats()).max(0)
    }

    /// What was paid, in the invoice's fiat at its rate (the whole amount when exactly
    /// the amount was paid; rounded down otherwise).
    pub fn paid_minor(&self) -> i64 {
        let paid = self.paid_sats();
        if paid == self.due_sats {
            return self.amount_minor;
        }
        let value =
            i128::from(self.amount_minor) * i128::from(paid) / i128::from(self.due_sats.max(1));
        i64::try_from(value).unwrap_or(i64::MAX)
    }

    fn emitted(&self, kind: &'static str, extra: Value) -> Emitted {
        Emitted {
            kind,
            invoice_id: self.id.clone(),
            store_id: self.store_id.clone(),
            metadata: self.metadata.clone(),
            extra: match extra {
                Value::Object(map) => map,
                _ => serde_json::Map::new(),
            },
        }
    }

    /// `InvoiceCreated`.
    pub fn created_event(&self) -> Emitted {
        self.emitted("InvoiceCreated", json!({}))
    }

    fn payment_json(&self, payment: &Payment) -> Value {
        json!({
            "id": payment.id,
            "receivedDate": payment.received,
            "value": btc(payment.sats),
            "fee": btc(0),
            "status": if payment.settled { "Settled" } else { "Processing" },
            "destination": self.destination,
        })
    }

    fn payment_event(
        &self,
        kind: &'static str,
        payment: &Payment,
        after_expiration: bool,
    ) -> Emitted {
        self.emitted(
            kind,
            json!({
                "afterExpiration": after_expiration,
                "paymentMethodId": METHOD,
                "payment": self.payment_json(payment),
            }),
        )
    }

    /// Expires the invoice if it is new and its time is up: `InvoiceExpired`.
    pub fn expire_if_due(&mut self, now: i64) -> Vec<Emitted> {
        if self.status != "New" || now < self.expiration {
            return Vec::new();
        }
        self.status = "Expired";
        let partially_paid = self.paid_sats() > 0;
        if partially_paid {
            self.additional = "PaidPartial";
        }
        vec![self.emitted("InvoiceExpired", json!({ "partiallyPaid": partially_paid }))]
    }

    /// A payment of `sats` arrives at `now`: `InvoiceReceivedPayment`, and the invoice's
    /// move to Processing when now paid in full (`InvoiceProcessing`). With `confirm`, it
    /// also confirms at once (see [`Self::confirm`]).
    fn receive(&mut self, sats: i64, now: i64, confirm: bool) -> Vec<Emitted> {
        let mut events = Vec::new();
        let late = self.status == "Expired";
        let payment = Payment {
            id: format!("{}-{}", hex_of(&self.id), self.payments.len()),
            received: now,
            sats,
            settled: false,
            late,
        };
        self.payments.push(payment.clone());
        events.push(self.payment_event("InvoiceReceivedPayment", &payment, late));
        if late {
            // BTCPay keeps an expired invoice expired and notes the late payment.
            self.additional = "PaidLate";
        } else if self.paid_sats() >= self.due_sats {
            self.status = "Processing";
            let over = self.paid_sats() > self.due_sats;
            self.additional = if over { "PaidOver" } else { "None" };
            events.push(self.emitted("InvoiceProcessing", json!({ "overPaid": over })));
        } else {
            self.additional = "PaidPartial";
        }
        if confirm {
            events.extend(self.confirm());
        }
        events
    }

    /// Every unconfirmed payment gets its confirmation (one: the store's default speed
    /// policy, MediumSpeed): `InvoicePaymentSettled` each, then `InvoiceSettled` when the
    /// invoice was Processing.
    fn confirm(&mut self) -> Vec<Emitted> {
        let mut events = Vec::new();
        for index in 0..self.payments.len() {
            if self.payments[index].settled {
                continue;
            }
            self.payments[index].settled = true;
            let payment = self.payments[index].clone();
            events.push(self.payment_event("InvoicePaymentSettled", &payment, payment.late));
        }
        if self.status == "Processing" {
            self.status = "Settled";
            let over = self.additional == "PaidOver";
            events.push(self.emitted(
                "InvoiceSettled",
                json!({ "manuallyMarked": false, "overPaid": over }),
            ));
        }
        events
    }

    /// Does `action` at `now`.
    pub fn act(&mut self, action: Action, now: i64) -> Result<Vec<Emitted>, Refusal> {
        let mut events = self.expire_if_due(now);
        match action {
            Action::Pay | Action::PayUnconfirmed | Action::PayPartly | Action::Overpay => {
                if self.status != "New" {
                    return Err(Refusal(
                        "only a new invoice can be paid; try pay-late after expiry",
                    ));
                }
                let remaining = self.remaining_sats();
                let sats = match action {
                    Action::PayPartly => (remaining / 2).max(1),
                    Action::Overpay => remaining + (remaining / 10).max(1),
                    _ => remaining,
                };
                events.extend(self.receive(sats, now, action != Action::PayUnconfirmed));
            }
            Action::Confirm => {
                if self.payments.iter().all(|p| p.settled) {
                    return Err(Refusal("no payment waits for a confirmation"));
                }
                events.extend(self.confirm());
            }
            Action::Expire => {
                if self.status != "New" {
                    return Err(Refusal("only a new invoice can expire"));
                }
                self.expiration = now;
                events.extend(self.expire_if_due(now));
            }
            Action::PayLate => {
                if self.status == "New" {
                    self.expiration = now;
                    events.extend(self.expire_if_due(now));
                }
                if self.status != "Expired" || now > self.monitoring_expiration {
                    return Err(Refusal(
                        "only an expired invoice still monitored can be paid late",
                    ));
                }
                let sats = self.remaining_sats().max(1);
                events.extend(self.receive(sats, now, true));
            }
            Action::Invalid => {
                events.extend(self.mark("Invalid")?);
            }
        }
        Ok(events)
    }

    /// Marks the invoice `Invalid` or `Settled` by hand (Greenfield's `POST …/status`).
    pub fn mark(&mut self, status: &'static str) -> Result<Vec<Emitted>, Refusal> {
        if !self.available_marks().contains(&status) {
            return Err(Refusal("the invoice cannot be marked so"));
        }
        self.status = status;
        self.additional = "Marked";
        Ok(vec![if status == "Invalid" {
            self.emitted("InvoiceInvalid", json!({ "manuallyMarked": true }))
        } else {
            self.emitted(
                "InvoiceSettled",
                json!({ "manuallyMarked": true, "overPaid": false }),
            )
        }])
    }

    fn available_marks(&self) -> Vec<&'static str> {
        match self.status {
            "Settled" => vec!["Invalid"],
            "Invalid" => vec!["Settled"],
            _ => vec!["Settled", "Invalid"],
        }
    }

    /// `InvoiceData`.
    pub fn render(&self, base_url: &str) -> Value {
        let money = |minor| Money::new(minor, self.currency).format_major();
        json!({
            "id": self.id,
            "storeId": self.store_id,
            "amount": money(self.amount_minor),
            "paidAmount": money(self.paid_minor()),
            "currency": self.currency.iso_code(),
            "type": "Standard",
            "checkoutLink": format!("{base_url}/i/{}", self.id),
            "createdTime": self.created,
            "expirationTime": self.expiration,
            "monitoringExpiration": self.monitoring_expiration,
            "status": self.status,
            "additionalStatus": self.additional,
            "availableStatusesForManualMarking": self.available_marks(),
            "archived": false,
            "metadata": self.metadata,
            "checkout": {
                "speedPolicy": "MediumSpeed",
                "paymentMethods": [METHOD],
                "defaultPaymentMethod": METHOD,
                "lazyPaymentMethods": false,
                "expirationMinutes": self.expiration_minutes,
                "monitoringMinutes": 1440,
                "paymentTolerance": 0,
                "redirectURL": self.redirect_url,
                "redirectAutomatically": self.redirect_automatically,
                "defaultLanguage": null,
            },
            "receipt": { "enabled": true, "showQR": null, "showPayments": null },
        })
    }

    /// `InvoicePaymentMethodDataModel` of the one method.
    pub fn payment_method(&self) -> Value {
        let paid = self.paid_sats();
        json!({
            "paymentMethodId": METHOD,
            "currency": "BTC",
            "destination": self.destination,
            "paymentLink": format!("bitcoin:{}?amount={}", self.destination, btc(self.remaining_sats())),
            "rate": Money::new(self.rate_minor, self.currency).format_major(),
            "paymentMethodPaid": btc(paid),
            "totalPaid": btc(paid),
            "due": btc(self.due_sats - paid),
            "amount": btc(self.due_sats),
            "paymentMethodFee": btc(0),
            "payments": self.payments.iter().map(|p| self.payment_json(p)).collect::<Vec<_>>(),
            "activated": true,
            "additionalData": {
                "keyPath": format!("0/{}", self.key_index),
                "payjoinEnabled": false,
            },
        })
    }
}

fn hex_of(id: &str) -> String {
    id.bytes().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bitcoin_amounts_are_exact() {
        assert_eq!(btc(12_345), "0.00012345");
        assert_eq!(btc(-5), "-0.00000005");
        assert_eq!(btc(150_000_000), "1.50000000");
        // $10.00 at $60,000.00: 16,666.67 sats, rounded up.
        assert_eq!(sats_for(1_000, 6_000_000), 16_667);
    }
}
