//! Streaming lists for reconciliation: every page is fetched as the stream is read, so
//! memory stays flat however many objects Stripe returns.

use futures_util::{Stream, StreamExt};
use stripe_types::{RangeBoundsTs, RangeQueryTs};

use crate::client::{ClientError, StripeClient, Subscription};

/// A charge, as reconciliation compares it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChargeRecord {
    /// `ch_…`.
    pub id: String,
    /// The payment it belongs to (the ledger's key).
    pub payment_intent: Option<String>,
    /// Charged.
    pub amount: i64,
    /// Lowercase ISO code.
    pub currency: String,
    /// Whether it succeeded.
    pub paid: bool,
    /// `created`.
    pub created: i64,
    /// Its balance transaction (`txn_…`, where Stripe's fee is), once it has one.
    pub balance_transaction: Option<String>,
}

/// A refund or a dispute, as reconciliation compares it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MovementRecord {
    /// `re_…` or `dp_…`.
    pub id: String,
    /// The payment it belongs to.
    pub payment_intent: Option<String>,
    /// How much (positive).
    pub amount: i64,
    /// Lowercase ISO code.
    pub currency: String,
    /// Stripe's status (`succeeded`; `won`, `lost`, `needs_response`, …).
    pub status: String,
    /// `created`.
    pub created: i64,
}

/// A dispute's state, as the repair of inquiries booked as withdrawals reads it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DisputeState {
    /// Stripe's status (`warning_needs_response`, `warning_closed`, `needs_response`, `won`, …).
    pub status: String,
    /// Whether any of its balance transactions withdrew funds.
    pub withdrew: bool,
}

impl DisputeState {
    /// An inquiry that withdrew nothing: a ledger withdrawal of it is wrong.
    #[must_use]
    pub fn is_inquiry_without_withdrawal(&self) -> bool {
        self.status.starts_with("warning_") && !self.withdrew
    }
}

/// A payout, as reconciliation reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PayoutRecord {
    /// `po_…`.
    pub id: String,
    /// Paid out.
    pub amount: i64,
    /// Lowercase ISO code.
    pub currency: String,
    /// Stripe's status.
    pub status: String,
    /// Only automatic payouts list their balance transactions.
    pub automatic: bool,
    /// `arrival_date`.
    pub arrival_date: i64,
}

/// One balance transaction of a payout.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BalanceRecord {
    /// `txn_…`.
    pub id: String,
    /// `charge`, `refund`, `adjustment`, `payout`, …
    pub kind: String,
    /// Gross.
    pub amount: i64,
    /// Stripe's fee.
    pub fee: i64,
    /// `amount − fee`.
    pub net: i64,
    /// What moved the money: `ch_…`, `re_…`, `dp_…`, `po_…`.
    pub source: Option<String>,
}

/// Stripe's fee on one payment: the balance transaction of its succeeded charge.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PaymentFee {
    /// `txn_…` (the ledger's key for the fee row).
    pub balance_transaction: String,
    /// The fee (positive), in the balance transaction's currency.
    pub fee: i64,
    /// What the payment added to the balance before the fee: the charge converted to the
    /// settlement currency when Stripe converted it, else the charge's amount.
    pub amount: i64,
    /// Lowercase ISO code of the balance transaction (the settlement currency).
    pub currency: String,
    /// The balance transaction's `created`.
    pub created: i64,
}

/// What one balance transaction moved, in the currency it settled in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settlement {
    /// `txn_…`.
    pub id: String,
    /// Signed, in `currency`'s minor units.
    pub amount: i64,
    /// Stripe's fee on it.
    pub fee: i64,
    /// Lowercase ISO code (the settlement currency).
    pub currency: String,
}

fn since(at: i64) -> RangeQueryTs {
    RangeQueryTs::Bounds(RangeBoundsTs {
        gte: Some(at),
        ..RangeBoundsTs::default()
    })
}

fn id_of<T: stripe_types::Object>(expandable: &stripe_types::Expandable<T>) -> String
where
    T::Id: ToString,
{
    expandable.id().to_string()
}

impl StripeClient {
    /// Charges created since `at`.
    pub fn charges_since(
        &self,
        at: i64,
    ) -> impl Stream<Item = Result<ChargeRecord, ClientError>> + Unpin + '_ {
        stripe_core::charge::ListCharge::new()
            .created(since(at))
            .limit(100)
            .paginate()
            .stream(self.inner())
            .map(|item| {
                item.map_err(ClientError::from).map(|c| ChargeRecord {
                    id: c.id.to_string(),
                    payment_intent: c.payment_intent.as_ref().map(id_of),
                    amount: c.amount,
                    currency: c.currency.to_string(),
                    paid: c.paid && c.status.as_str() == "succeeded",
                    created: c.created,
                    balance_transaction: c.balance_transaction.as_ref().map(id_of),
                })
            })
    }

    /// Refunds created since `at`.
    pub fn refunds_since(
        &self,
        at: i64,
    ) -> impl Stream<Item = Result<MovementRecord, ClientError>> + Unpin + '_ {
        stripe_core::refund::ListRefund::new()
            .created(since(at))
            .limit(100)
            .paginate()
            .stream(self.inner())
            .map(|item| {
                item.map_err(ClientError::from).map(|r| MovementRecord {
                    id: r.id.to_string(),
                    payment_intent: r.payment_intent.as_ref().map(id_of),
                    amount: r.amount,
                    currency: r.currency.to_string(),
                    status: r.status.clone().unwrap_or_default(),
                    created: r.created,
                })
            })
    }

    /// Disputes created since `at`.
    pub fn disputes_since(
        &self,
        at: i64,
    ) -> impl Stream<Item = Result<MovementRecord, ClientError>> + Unpin + '_ {
        stripe_core::dispute::ListDispute::new()
            .created(since(at))
            .limit(100)
            .paginate()
            .stream(self.inner())
            .map(|item| {
                item.map_err(ClientError::from).map(|d| MovementRecord {
                    id: d.id.to_string(),
                    payment_intent: d.payment_intent.as_ref().map(id_of),
                    amount: d.amount,
                    currency: d.currency.to_string(),
                    status: d.status.as_str().to_owned(),
                    created: d.created,
                })
            })
    }

    /// Every subscription, whatever its status.
    pub fn all_subscriptions(
        &self,
    ) -> impl Stream<Item = Result<Subscription, ClientError>> + Unpin + '_ {
        stripe_billing::subscription::ListSubscription::new()
            .status(stripe_billing::subscription::ListSubscriptionStatus::All)
            .limit(100)
            .paginate()
            .stream(self.inner())
            .map(|item| item.map_err(ClientError::from).map(Subscription::from))
    }

    /// Payouts created since `at`.
    pub fn payouts_since(
        &self,
        at: i64,
    ) -> impl Stream<Item = Result<PayoutRecord, ClientError>> + Unpin + '_ {
        stripe_core::payout::ListPayout::new()
            .created(since(at))
            .limit(100)
            .paginate()
            .stream(self.inner())
            .map(|item| {
                item.map_err(ClientError::from).map(|p| PayoutRecord {
                    id: p.id.to_string(),
                    amount: p.amount,
                    currency: p.currency.to_string(),
                    status: p.status.clone(),
                    automatic: p.automatic,
                    arrival_date: p.arrival_date,
                })
            })
    }

    /// The balance transactions an automatic payout paid out.
    pub fn payout_transactions(
        &self,
        payout: &str,
    ) -> impl Stream<Item = Result<BalanceRecord, ClientError>> + Unpin + '_ {
        stripe_core::balance_transaction::ListBalanceTransaction::new()
            .payout(payout)
            .limit(100)
            .paginate()
            .stream(self.inner())
            .map(|item| {
                item.map_err(ClientError::from).map(|t| BalanceRecord {
                    id: t.id.to_string(),
                    kind: t.type_.as_str().to_owned(),
                    amount: t.amount,
                    fee: t.fee,
                    net: t.net,
                    source: t.source.as_ref().map(|s| s.id().to_string()),
                })
            })
    }

    /// The payment intent of charge `id`.
    ///
    /// # Errors
    /// [`ClientError`].
    pub async fn payment_intent_of_charge(&self, id: &str) -> Result<Option<String>, ClientError> {
        let charge = stripe_core::charge::RetrieveCharge::new(id)
            .send(self.inner())
            .await?;
        Ok(charge.payment_intent.as_ref().map(id_of))
    }

    /// Stripe's fee on payment intent `payment_intent`: its succeeded charge names its
    /// balance transaction by id, which is retrieved (`fee` and `fee_details` are on it).
    /// `None` while no charge of it succeeded or its balance transaction is not there yet.
    ///
    /// # Errors
    /// [`ClientError`].
    pub async fn payment_fee(
        &self,
        payment_intent: &str,
    ) -> Result<Option<PaymentFee>, ClientError> {
        let charges = stripe_core::charge::ListCharge::new()
            .payment_intent(payment_intent)
            .limit(10)
            .send(self.inner())
            .await?;
        let Some(txn) = charges
            .data
            .iter()
            .filter(|c| c.paid && c.status.as_str() == "succeeded")
            .find_map(|c| c.balance_transaction.as_ref().map(id_of))
        else {
            return Ok(None);
        };
        let t = stripe_core::balance_transaction::RetrieveBalanceTransaction::new(txn.as_str())
            .send(self.inner())
            .await?;
        Ok(Some(PaymentFee {
            balance_transaction: t.id.to_string(),
            fee: t.fee,
            amount: t.amount,
            currency: t.currency.to_string(),
            created: t.created,
        }))
    }

    /// Balance transaction `txn`: what it moved, in the currency it settled in.
    ///
    /// # Errors
    /// [`ClientError`].
    pub async fn settlement(&self, txn: &str) -> Result<Settlement, ClientError> {
        let t = stripe_core::balance_transaction::RetrieveBalanceTransaction::new(txn)
            .send(self.inner())
            .await?;
        Ok(Settlement {
            id: t.id.to_string(),
            amount: t.amount,
            fee: t.fee,
            currency: t.currency.to_string(),
        })
    }

    /// Event ids and types since `at` (Stripe keeps 30 days).
    pub fn events_since(
        &self,
        at: i64,
    ) -> impl Stream<Item = Result<(String, String), ClientError>> + Unpin + '_ {
        stripe_core::event::ListEvent::new()
            .created(since(at))
            .limit(100)
            .paginate()
            .stream(self.inner())
            .map(|item| {
                item.map_err(ClientError::from)
                    .map(|e| (e.id.to_string(), e.type_.to_string()))
            })
    }

    /// One event exactly as Stripe renders it (raw JSON), to store in the inbox.
    ///
    /// # Errors
    /// [`ClientError`].
    pub async fn raw_event(&self, id: &str) -> Result<String, ClientError> {
        Ok(miniserde::json::to_string(
            &self.raw_get(&format!("/events/{id}")).await?,
        ))
    }

    /// The hosted page of subscription `subscription`'s latest invoice while that invoice is
    /// open (its payment declined or waiting for 3-D Secure), read live: the page is a bearer
    /// link, never stored. `None` when there is nothing to pay.
    ///
    /// # Errors
    /// [`ClientError`].
    pub async fn open_invoice_page(
        &self,
        subscription: &str,
    ) -> Result<Option<String>, ClientError> {
        let sub: serde_json::Value = serde_json::from_str(&miniserde::json::to_string(
            &self
                .raw_get(&format!("/subscriptions/{subscription}"))
                .await?,
        ))
        .unwrap_or_default();
        let Some(invoice) = sub["latest_invoice"].as_str() else {
            return Ok(None);
        };
        let invoice: serde_json::Value = serde_json::from_str(&miniserde::json::to_string(
            &self.raw_get(&format!("/invoices/{invoice}")).await?,
        ))
        .unwrap_or_default();
        if invoice["status"] != "open" {
            return Ok(None);
        }
        Ok(invoice["hosted_invoice_url"].as_str().map(str::to_owned))
    }

    /// The payment intents of invoice `invoice`'s paid payments
    /// (`GET /v1/invoice_payments?invoice=in_…`: since the 2025 "basil" API an invoice names
    /// them only there, or when its `payments` are expanded).
    ///
    /// # Errors
    /// [`ClientError`].
    pub async fn invoice_payment_intents(&self, invoice: &str) -> Result<Vec<String>, ClientError> {
        use stripe_client_core::{RequestBuilder, StripeMethod};
        let value: miniserde::json::Value =
            RequestBuilder::new(StripeMethod::Get, "/invoice_payments")
                .query(&std::collections::BTreeMap::from([
                    ("invoice", invoice),
                    ("limit", "100"),
                ]))
                .customize::<miniserde::json::Value>()
                .send(self.inner())
                .await?;
        let list: serde_json::Value =
            serde_json::from_str(&miniserde::json::to_string(&value)).unwrap_or_default();
        Ok(list["data"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|p| p["status"] == "paid")
            .filter_map(|p| p["payment"]["payment_intent"].as_str().map(str::to_owned))
            .collect())
    }

    /// Dispute `id` as Stripe has it now: its status and whether any of its balance
    /// transactions withdrew funds (an inquiry's never do, unless it became a chargeback).
    ///
    /// # Errors
    /// [`ClientError`].
    pub async fn dispute_state(&self, id: &str) -> Result<DisputeState, ClientError> {
        let dispute: serde_json::Value = serde_json::from_str(&miniserde::json::to_string(
            &self.raw_get(&format!("/disputes/{id}")).await?,
        ))
        .unwrap_or_default();
        Ok(DisputeState {
            status: dispute["status"].as_str().unwrap_or_default().to_owned(),
            withdrew: dispute["balance_transactions"]
                .as_array()
                .into_iter()
                .flatten()
                .any(|t| t["amount"].as_i64().is_some_and(|a| a < 0)),
        })
    }

    async fn raw_get(&self, path: &str) -> Result<miniserde::json::Value, ClientError> {
        use stripe_client_core::{RequestBuilder, StripeMethod};
        let value: miniserde::json::Value = RequestBuilder::new(StripeMethod::Get, path)
            .customize::<miniserde::json::Value>()
            .send(self.inner())
            .await?;
        Ok(value)
    }
}
