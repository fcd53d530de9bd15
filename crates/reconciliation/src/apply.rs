//! Applying one stored event: its type picks the owning crate's fact, read from
//! `data.object` alone (no Stripe call). Facts are idempotent and order-proof, so applying
//! twice, or out of order, ends in the same state.

use kopilka_contributions::facts::{self as contribution, Applied};
use kopilka_domain::Money;
use kopilka_domain::id::{ContributionId, ReaderId};
use kopilka_recurring::facts::{self as recurring, InvoicePaid, SubscriptionFact};
use kopilka_store::PgPool;
use serde_json::Value;

use crate::ReconciliationError;

/// What applying an event did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Applied (or found already applied).
    Processed,
    /// A type Kopilka does not act on, or an object that is not Kopilka's.
    Ignored,
}

impl Outcome {
    fn as_str(self) -> &'static str {
        match self {
            Self::Processed => "processed",
            Self::Ignored => "ignored",
        }
    }
}

fn text<'a>(object: &'a Value, key: &str) -> Option<&'a str> {
    object.get(key).and_then(Value::as_str)
}

fn malformed(what: &str) -> ReconciliationError {
    ReconciliationError::Malformed(what.to_owned())
}

fn money(minor: Option<i64>, currency: Option<&str>) -> Result<Money, ReconciliationError> {
    let currency = currency
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| malformed("currency"))?;
    Ok(Money::new(
        minor.ok_or_else(|| malformed("amount"))?,
        currency,
    ))
}

fn contribution_in(value: Option<&str>) -> Option<ContributionId> {
    value.and_then(|v| v.parse().ok())
}

/// The contribution `value` names, when it is one of Kopilka's.
async fn ours(
    conn: &mut sqlx::PgConnection,
    value: Option<&str>,
) -> Result<Option<ContributionId>, ReconciliationError> {
    match contribution_in(value) {
        Some(id) if contribution::is_kopilkas(conn, id).await? => Ok(Some(id)),
        _ => Ok(None),
    }
}

type EventRow = Option<(String, i64, Value, i16, Option<uuid::Uuid>, Option<String>)>;

/// Applies stored Stripe event `event_id` and records the outcome on it. With `stripe`, a
/// subscription event from the same second as a state our own call stored, or as another
/// state it would replace, re-reads the subscription (neither can be ordered by time;
/// Stripe's current state can), under the subscription's lock. `refund_on_fraud_warning`
/// is `stripe.refund_on_early_fraud_warning`: only then does an actionable early fraud
/// warning queue its refund job.
///
/// # Errors
/// [`ReconciliationError::NotYet`] when it must wait for another event (the job retries);
/// malformed objects, Stripe (on a re-read) and storage errors.
pub async fn apply_event(
    pool: &PgPool,
    stripe: Option<&kopilka_stripe::StripeClient>,
    event_id: &str,
    refund_on_fraud_warning: bool,
) -> Result<Outcome, ReconciliationError> {
    let mut tx = pool.begin().await?;
    let row: EventRow = sqlx::query_as(
        "SELECT type, created, payload, projection_version, reader_id, api_version
         FROM provider_events WHERE provider = 'stripe' AND id = $1 FOR UPDATE",
    )
    .bind(event_id)
    .fetch_optional(&mut *tx)
    .await?;
    let (kind, created, mut payload, version, reader, api_version) =
        row.ok_or_else(|| ReconciliationError::UnknownEvent(event_id.to_owned()))?;
    if version < crate::projection::VERSION {
        // Stored before these rules: applied from (and left as) its projection.
        payload = crate::projection::project_stored(&kind, &payload);
        sqlx::query("UPDATE provider_events SET payload = $2, projection_version = $3 WHERE provider = 'stripe' AND id = $1")
            .bind(event_id)
            .bind(&payload)
            .bind(crate::projection::VERSION)
            .execute(&mut *tx)
            .await?;
    }
    let object = &payload["object"];
    let reader = reader.map(ReaderId::from_uuid);
    let result = if crate::projection::is_handled(&kind)
        && api_version.as_deref() != Some(kopilka_stripe::api_version())
    {
        Err(ReconciliationError::ApiVersion {
            got: api_version.unwrap_or_else(|| "none".to_owned()),
            expected: kopilka_stripe::api_version(),
        })
    } else {
        route(
            &mut tx,
            stripe,
            &kind,
            created,
            object,
            reader,
            refund_on_fraud_warning,
        )
        .await
    };
    let outcome = match result {
        Ok(outcome) => outcome,
        Err(err) => {
            drop(tx);
            let mut conn = pool
                .acquire()
                .await
                .map_err(kopilka_store::StoreError::from)?;
            if matches!(err, ReconciliationError::ApiVersion { .. }) {
                tracing::error!(event_id, event_type = %kind, error = %err, "event refused");
            }
            let status = if matches!(err, ReconciliationError::NotYet(_)) {
                "pending"
            } else {
                "failed"
            };
            sqlx::query("UPDATE provider_events SET attempts = attempts + 1, last_error = $2, status = $3 WHERE provider = 'stripe' AND id = $1")
                .bind(event_id)
                .bind(err.to_string())
                .bind(status)
                .execute(&mut *conn)
                .await?;
            return Err(err);
        }
    };
    if outcome == Outcome::Processed && moves_money(&kind) {
        // The funding goal's figure is recomputed by whoever listens (the API's cache).
        sqlx::query("SELECT pg_notify($1, $2)")
            .bind(kopilka_recurring::goal::CHANNEL)
            .bind(event_id)
            .execute(&mut *tx)
            .await?;
    }
    sqlx::query("UPDATE provider_events SET status = $2, attempts = attempts + 1, last_error = NULL, processed_at = now() WHERE provider = 'stripe' AND id = $1")
        .bind(event_id)
        .bind(outcome.as_str())
        .execute(&mut *tx)
        .await?;
    tx.commit().await.map_err(kopilka_store::StoreError::from)?;
    tracing::info!(event_id, event_type = %kind, outcome = outcome.as_str(), "event applied");
    Ok(outcome)
}

/// Processes stored BTCPay delivery `event_id` (its `originalDeliveryId`) and records the
/// outcome on it. A delivery about an invoice Kopilka created (its `orderId` is a
/// contribution whose invoice it is) is applied by reading the invoice as it stands now
/// from BTCPay, and its payment methods once it settled (a delivery names no amounts), so
/// deliveries late, repeated or out of order all end the same way (see
/// [`kopilka_contributions::crypto`]); any other delivery is recorded `ignored`. A paid
/// pass code may be redeemed for `redeem_days`.
///
/// # Errors
/// [`ReconciliationError::UnknownEvent`] when no such delivery is stored;
/// [`ReconciliationError::NotYet`] when BTCPay is not configured (the job waits);
/// BTCPay's refusal or unavailability; storage errors.
pub async fn apply_btcpay_event(
    pool: &PgPool,
    btcpay: Option<&kopilka_btcpay::BtcpayClient>,
    event_id: &str,
    redeem_days: u32,
) -> Result<Outcome, ReconciliationError> {
    let row: Option<(String, Value, i64)> = sqlx::query_as(
        "SELECT type, payload, created FROM provider_events WHERE provider = 'btcpay' AND id = $1",
    )
    .bind(event_id)
    .fetch_optional(pool)
    .await?;
    let (kind, projection, created) =
        row.ok_or_else(|| ReconciliationError::UnknownEvent(event_id.to_owned()))?;
    let invoice_id = text(&projection, "invoiceId");
    let contribution = text(&projection, "orderId")
        .and_then(|id| uuid::Uuid::parse_str(id).ok())
        .map(ContributionId::from_uuid);
    let ours = match (
        kopilka_btcpay::EventKind::from_name(&kind),
        invoice_id,
        contribution,
    ) {
        (kopilka_btcpay::EventKind::Other(_), _, _) => None,
        (_, Some(invoice_id), Some(contribution)) => {
            let mut conn = pool
                .acquire()
                .await
                .map_err(kopilka_store::StoreError::from)?;
            kopilka_contributions::crypto::is_kopilkas_invoice(&mut conn, contribution, invoice_id)
                .await?
                .then_some((invoice_id, contribution))
        }
        _ => None,
    };
    // BTCPay is read before the transaction locks anything: it may be slow.
    let read = match ours {
        None => None,
        Some((invoice_id, contribution)) => {
            let btcpay = btcpay.ok_or_else(|| {
                ReconciliationError::NotYet("BTCPay Server is not configured".into())
            })?;
            Some((contribution, read_invoice(btcpay, invoice_id).await?))
        }
    };
    let mut tx = pool.begin().await?;
    let outcome = match &read {
        None => Outcome::Ignored,
        Some((contribution, (invoice, methods))) => {
            apply_invoice(
                &mut tx,
                &kopilka_contributions::crypto::InvoiceSeen {
                    contribution_id: *contribution,
                    invoice,
                    methods,
                    occurred_at: created,
                    redeem_days,
                },
            )
            .await?;
            Outcome::Processed
        }
    };
    sqlx::query("UPDATE provider_events SET status = $2, attempts = attempts + 1, last_error = NULL, processed_at = now() WHERE provider = 'btcpay' AND id = $1")
        .bind(event_id)
        .bind(outcome.as_str())
        .execute(&mut *tx)
        .await?;
    tx.commit().await.map_err(kopilka_store::StoreError::from)?;
    tracing::info!(event_id, event_type = %kind, outcome = outcome.as_str(), "BTCPay delivery processed");
    Ok(outcome)
}

/// A BTCPay invoice as it stands, and its payment methods once it settled (what a settled
/// invoice was paid with).
///
/// # Errors
/// BTCPay's refusal or unavailability.
pub(crate) async fn read_invoice(
    btcpay: &kopilka_btcpay::BtcpayClient,
    invoice_id: &str,
) -> Result<(kopilka_btcpay::Invoice, Vec<kopilka_btcpay::PaymentMethod>), ReconciliationError> {
    let invoice = btcpay.invoice(invoice_id).await?;
    let methods = methods_of(btcpay, &invoice).await?;
    Ok((invoice, methods))
}

/// The payment methods of `invoice` once it settled (none before: nothing to book yet).
///
/// # Errors
/// BTCPay's refusal or unavailability.
pub(crate) async fn methods_of(
    btcpay: &kopilka_btcpay::BtcpayClient,
    invoice: &kopilka_btcpay::Invoice,
) -> Result<Vec<kopilka_btcpay::PaymentMethod>, ReconciliationError> {
    if invoice.status == kopilka_btcpay::InvoiceStatus::Settled {
        Ok(btcpay.payment_methods(&invoice.id).await?)
    } else {
        Ok(Vec::new())
    }
}

/// Applies `seen` in the caller's transaction and, when it changed something, announces it
/// so every goal cache recomputes.
///
/// # Errors
/// Storage errors.
pub(crate) async fn apply_invoice(
    conn: &mut sqlx::PgConnection,
    seen: &kopilka_contributions::crypto::InvoiceSeen<'_>,
) -> Result<(), ReconciliationError> {
    if kopilka_contributions::crypto::invoice_seen(conn, seen).await? == Applied::Changed {
        sqlx::query("SELECT pg_notify($1, $2)")
            .bind(kopilka_recurring::goal::CHANNEL)
            .bind(&seen.invoice.id)
            .execute(conn)
            .await?;
    }
    Ok(())
}

/// Whether events of `kind` can change the ledger or a plan (and so the goal).
fn moves_money(kind: &str) -> bool {
    kind.starts_with("checkout.session.")
        || kind.starts_with("payment_intent.")
        || kind.starts_with("refund.")
        || kind.starts_with("charge.")
        || kind.starts_with("customer.subscription.")
        || kind.starts_with("invoice.")
        || kind.starts_with("invoice_payment.")
}

async fn route(
    conn: &mut sqlx::PgConnection,
    stripe: Option<&kopilka_stripe::StripeClient>,
    kind: &str,
    created: i64,
    object: &Value,
    reader: Option<ReaderId>,
    refund_on_fraud_warning: bool,
) -> Result<Outcome, ReconciliationError> {
    if !crate::projection::is_handled(kind) {
        return Ok(Outcome::Ignored);
    }
    let applied = match kind {
        "checkout.session.completed" | "checkout.session.async_payment_succeeded" => {
            let Some(contribution_id) = ours(conn, text(object, "client_reference_id")).await?
            else {
                return Ok(Outcome::Ignored);
            };
            let fact = contribution::CheckoutCompleted {
                session_id: text(object, "id")
                    .ok_or_else(|| malformed("id"))?
                    .to_owned(),
                contribution_id,
                paid: text(object, "payment_status") == Some("paid"),
                customer: text(object, "customer").map(str::to_owned),
                payment_intent: text(object, "payment_intent").map(str::to_owned),
                subscription: text(object, "subscription").map(str::to_owned),
                amount: money(object["amount_total"].as_i64(), text(object, "currency")).ok(),
                reader,
                occurred_at: created,
            };
            contribution::checkout_completed(conn, &fact).await?
        }
        "checkout.session.expired" | "checkout.session.async_payment_failed" => {
            let Some(contribution_id) = ours(conn, text(object, "client_reference_id")).await?
            else {
                return Ok(Outcome::Ignored);
            };
            if kind.ends_with("expired") {
                contribution::checkout_expired(conn, contribution_id, created).await?
            } else {
                contribution::payment_failed(conn, contribution_id, created).await?
            }
        }
        "payment_intent.succeeded" | "payment_intent.payment_failed" => {
            let Some(contribution_id) = ours(
                conn,
                object["metadata"]
                    .get("contribution_id")
                    .and_then(Value::as_str),
            )
            .await?
            else {
                return Ok(Outcome::Ignored);
            };
            if kind.ends_with("succeeded") {
                let pi = text(object, "id").ok_or_else(|| malformed("id"))?;
                let amount = money(object["amount_received"].as_i64(), text(object, "currency"))?;
                contribution::one_off_paid(conn, contribution_id, pi, amount, created).await?
            } else {
                contribution::payment_failed(conn, contribution_id, created).await?
            }
        }
        "refund.created" | "refund.updated" | "charge.refund.updated" | "refund.failed" => {
            match text(object, "status") {
                Some("succeeded") => refund(conn, object).await?,
                Some("failed") => refund_failed(conn, object, created).await?,
                // pending, requires_action, canceled: no money moved (yet).
                _ => return Ok(Outcome::Processed),
            }
        }
        "charge.refunded" => {
            // Refunds are applied from their own objects (refund.created), never from the
            // charge's cumulative amount; an expanded list is applied the same way.
            let refunds = object["refunds"]["data"]
                .as_array()
                .cloned()
                .unwrap_or_default();
            let mut applied = Applied::Unchanged;
            for item in refunds
                .iter()
                .filter(|r| text(r, "status") == Some("succeeded"))
            {
                if refund(conn, item).await? == Applied::Changed {
                    applied = Applied::Changed;
                }
            }
            applied
        }
        "charge.dispute.created"
        | "charge.dispute.closed"
        | "charge.dispute.funds_withdrawn"
        | "charge.dispute.funds_reinstated"
        | "charge.dispute.updated" => {
            let Some(pi) = text(object, "payment_intent") else {
                return Ok(Outcome::Ignored);
            };
            let movements = object["balance_transactions"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|txn| {
                    Some(contribution::DisputeMovement {
                        id: txn["id"].as_str()?,
                        amount: txn["amount"].as_i64()?,
                        fee: txn["fee"].as_i64().unwrap_or(0),
                        currency: txn["currency"].as_str()?.parse().ok()?,
                    })
                })
                .collect();
            let fact = contribution::DisputeFact {
                dispute_id: text(object, "id")
                    .ok_or_else(|| malformed("id"))?
                    .to_owned(),
                payment_intent: pi.to_owned(),
                amount: money(object["amount"].as_i64(), text(object, "currency"))?,
                withdrawn: kind == "charge.dispute.funds_withdrawn",
                reinstated: kind == "charge.dispute.funds_reinstated",
                movements,
                occurred_at: created,
            };
            contribution::dispute_changed(conn, &fact).await?
        }
        "customer.subscription.created"
        | "customer.subscription.updated"
        | "customer.subscription.deleted" => {
            let item = &object["items"]["data"][0];
            let price = &item["price"];
            let Some(interval) = price["recurring"]["interval"]
                .as_str()
                .and_then(|i| i.parse().ok())
            else {
                return Err(malformed("items.data[0].price.recurring.interval"));
            };
            let named = object["metadata"]
                .get("contribution_id")
                .and_then(Value::as_str);
            let contribution_id = ours(conn, named).await?;
            if named.is_some() && contribution_id.is_none() {
                // Another product's subscription (or a contribution id that is not ours).
                return Ok(Outcome::Ignored);
            }
            let fact = SubscriptionFact {
                subscription_id: text(object, "id")
                    .ok_or_else(|| malformed("id"))?
                    .to_owned(),
                customer: text(object, "customer").map(str::to_owned),
                contribution_id,
                status: text(object, "status")
                    .ok_or_else(|| malformed("status"))?
                    .to_owned(),
                amount: money(price["unit_amount"].as_i64(), text(price, "currency"))?,
                interval,
                current_period_end: item["current_period_end"]
                    .as_i64()
                    .ok_or_else(|| malformed("current_period_end"))?,
                cancel_at_period_end: object["cancel_at_period_end"].as_bool().unwrap_or(false),
                occurred_at: created,
                answered: false,
            };
            // Held until this event's transaction ends: a re-read and its store are one step
            // against a reader's change of the same subscription.
            if stripe.is_some() {
                recurring::lock_subscription(conn, &fact.subscription_id).await?;
            }
            let fact = match stripe {
                Some(stripe)
                    if recurring::ties_with_an_answer(conn, &fact.subscription_id, created)
                        .await?
                        || recurring::ties_with_another_state(conn, &fact).await? =>
                {
                    let live = stripe
                        .retrieve_subscription(&fact.subscription_id)
                        .await
                        .map_err(|e| {
                            ReconciliationError::NotYet(format!("re-reading the subscription: {e}"))
                        })?;
                    recurring::answered_state(&live, fact.contribution_id, created)?
                }
                _ => fact,
            };
            let applied = recurring::subscription_changed(conn, &fact).await?;
            if applied == Applied::Unknown && contribution_id.is_none() {
                // Not started through Kopilka.
                return Ok(Outcome::Ignored);
            }
            applied
        }
        "invoice.paid" | "invoice.payment_succeeded" => {
            let Some(sub) = kopilkas_invoice(conn, object).await? else {
                return Ok(Outcome::Ignored);
            };
            let payment_intent = object["payments"]["data"]
                .as_array()
                .and_then(|payments| {
                    payments
                        .iter()
                        .find_map(|p| p["payment"]["payment_intent"].as_str())
                })
                .map(str::to_owned);
            let fact = InvoicePaid {
                invoice_id: text(object, "id")
                    .ok_or_else(|| malformed("id"))?
                    .to_owned(),
                subscription_id: sub.to_owned(),
                payment_intent,
                amount: money(object["amount_paid"].as_i64(), text(object, "currency"))?,
                occurred_at: created,
                interval: paid_interval(object),
            };
            recurring::invoice_paid(conn, &fact).await?
        }
        "invoice_payment.paid" => {
            if text(object, "status") != Some("paid") {
                return Ok(Outcome::Processed);
            }
            let invoice_id = text(object, "invoice").ok_or_else(|| malformed("invoice"))?;
            let id = text(object, "id").ok_or_else(|| malformed("id"))?;
            let payment = &object["payment"];
            let key = text(payment, "payment_intent")
                .or_else(|| text(payment, "charge"))
                .unwrap_or(id);
            let fact = recurring::InvoicePaymentPaid {
                invoice_payment_id: id.to_owned(),
                invoice_id: invoice_id.to_owned(),
                payment: key.to_owned(),
                amount: money(object["amount_paid"].as_i64(), text(object, "currency"))?,
                occurred_at: created,
            };
            match recurring::invoice_payment_paid(conn, &fact).await? {
                recurring::PaymentOfInvoice::Applied(applied) => applied,
                // Another product's invoice (its invoice.paid was stored and ignored).
                recurring::PaymentOfInvoice::UnknownInvoice
                    if invoice_was_ignored(conn, invoice_id).await? =>
                {
                    return Ok(Outcome::Ignored);
                }
                // Its invoice.paid has not been applied yet: wait for it.
                recurring::PaymentOfInvoice::UnknownInvoice => Applied::Unknown,
            }
        }
        // The plan's status arrives with customer.subscription.updated; a failed renewal
        // queues its email (once per attempt). A switch's payment (`subscription_update`)
        // is no renewal: the donor was told by the switch's 402 answer.
        "invoice.payment_failed" => {
            let Some(sub) = kopilkas_invoice(conn, object).await? else {
                return Ok(Outcome::Ignored);
            };
            if text(object, "billing_reason") == Some("subscription_update") {
                return Ok(Outcome::Ignored);
            }
            let fact = recurring::InvoiceFailed {
                invoice_id: text(object, "id")
                    .ok_or_else(|| malformed("id"))?
                    .to_owned(),
                subscription_id: sub.to_owned(),
                attempt: object["attempt_count"].as_i64().unwrap_or(1),
                next_attempt: object["next_payment_attempt"].as_i64(),
                amount: money(object["amount_due"].as_i64(), text(object, "currency"))?,
            };
            recurring::invoice_failed(conn, &fact).await?
        }
        // A renewal waiting for 3-D Secure emails the donor a link to complete it (once per
        // invoice). A switch's (`subscription_update`) leads to the 402 answer instead.
        "invoice.payment_action_required" => {
            let Some(sub) = kopilkas_invoice(conn, object).await? else {
                return Ok(Outcome::Ignored);
            };
            if text(object, "billing_reason") != Some("subscription_cycle") {
                return Ok(Outcome::Ignored);
            }
            let fact = recurring::InvoiceActionRequired {
                invoice_id: text(object, "id")
                    .ok_or_else(|| malformed("id"))?
                    .to_owned(),
                subscription_id: sub.to_owned(),
                amount: money(object["amount_due"].as_i64(), text(object, "currency"))?,
            };
            recurring::invoice_action_required(conn, &fact).await?
        }
        // Stored (as projections) for `admin report fraud-warnings`; a refund, when
        // configured, is queued for the worker (see `crate::fraud`).
        "radar.early_fraud_warning.created" | "radar.early_fraud_warning.updated" => {
            crate::fraud::warning_applied(conn, object, refund_on_fraud_warning).await?
        }
        _ => return Ok(Outcome::Ignored),
    };
    match applied {
        Applied::Unknown => Err(ReconciliationError::NotYet(format!(
            "{kind} names an object not known yet"
        ))),
        Applied::Changed | Applied::Unchanged => Ok(Outcome::Processed),
    }
}

/// The interval a plan invoice paid for: the period of its largest positive line (a
/// switch's invoice also has proration lines, negative for the unused time), a year when
/// that period is longer than 200 days. `None` without lines.
fn paid_interval(invoice: &Value) -> Option<kopilka_domain::Interval> {
    let line = invoice["lines"]["data"]
        .as_array()?
        .iter()
        .filter(|l| l["amount"].as_i64().is_some_and(|a| a > 0))
        .max_by_key(|l| l["amount"].as_i64())?;
    let days = (line["period"]["end"].as_i64()? - line["period"]["start"].as_i64()?) / 86_400;
    Some(if days > 200 {
        kopilka_domain::Interval::Year
    } else {
        kopilka_domain::Interval::Month
    })
}

/// The subscription a plan invoice belongs to, when the plan is Kopilka's: its
/// subscription's metadata (copied onto the invoice by Stripe) names one of Kopilka's
/// contributions, or the subscription is a known plan. Another product's invoice is `None`.
async fn kopilkas_invoice<'a>(
    conn: &mut sqlx::PgConnection,
    object: &'a Value,
) -> Result<Option<&'a str>, ReconciliationError> {
    let details = &object["parent"]["subscription_details"];
    let Some(sub) = details["subscription"].as_str() else {
        return Ok(None);
    };
    let named = details["metadata"]
        .get("contribution_id")
        .and_then(Value::as_str);
    if ours(conn, named).await?.is_some() || recurring::is_plan(conn, sub).await? {
        Ok(Some(sub))
    } else {
        Ok(None)
    }
}

/// Whether a paid event about invoice `invoice_id` was stored and ignored (another
/// product's invoice on the same Stripe account).
async fn invoice_was_ignored(
    conn: &mut sqlx::PgConnection,
    invoice_id: &str,
) -> Result<bool, ReconciliationError> {
    Ok(sqlx::query_scalar(
        "SELECT EXISTS (SELECT 1 FROM provider_events
                        WHERE provider = 'stripe' AND object_id = $1 AND type IN ('invoice.paid', 'invoice.payment_succeeded')
                          AND status = 'ignored')",
    )
    .bind(invoice_id)
    .fetch_one(conn)
    .await?)
}

async fn refund_failed(
    conn: &mut sqlx::PgConnection,
    object: &Value,
    created: i64,
) -> Result<Applied, ReconciliationError> {
    let Some(pi) = text(object, "payment_intent") else {
        return Ok(Applied::Unchanged);
    };
    let fact = contribution::RefundFailedFact {
        refund_id: text(object, "id")
            .ok_or_else(|| malformed("id"))?
            .to_owned(),
        payment_intent: pi.to_owned(),
        amount: money(object["amount"].as_i64(), text(object, "currency"))?,
        refunded_at: object["created"].as_i64().unwrap_or(created),
        occurred_at: created,
        balance_transaction: text(object, "balance_transaction").map(str::to_owned),
        failure_balance_transaction: text(object, "failure_balance_transaction").map(str::to_owned),
    };
    Ok(contribution::refund_failed(conn, &fact).await?)
}

async fn refund(
    conn: &mut sqlx::PgConnection,
    object: &Value,
) -> Result<Applied, ReconciliationError> {
    let Some(pi) = text(object, "payment_intent") else {
        return Ok(Applied::Unchanged);
    };
    let fact = contribution::RefundFact {
        refund_id: text(object, "id")
            .ok_or_else(|| malformed("id"))?
            .to_owned(),
        payment_intent: pi.to_owned(),
        amount: money(object["amount"].as_i64(), text(object, "currency"))?,
        occurred_at: object["created"].as_i64().unwrap_or(0),
        balance_transaction: text(object, "balance_transaction").map(str::to_owned),
    };
    Ok(contribution::refund_recorded(conn, &fact).await?)
}
