//! The crypto rail's facts: a BTCPay invoice, as BTCPay says it stands when one of its
//! deliveries is processed, applied to its contribution and the ledger. Applying the
//! invoice's current state (not the delivery's news) makes every delivery, late, repeated
//! or out of order, lead to the same end:
//!
//! | invoice | contribution | ledger | for the operator (`attention`) |
//! |---|---|---|---|
//! | `New`, `Processing` | pending | — | — |
//! | `Settled` | paid | a payment of the invoice's fiat amount | `overpayment` when more was paid; `marked_settled_short` when marked settled with less paid |
//! | `Expired`, nothing paid | abandoned | — | — |
//! | `Expired`, paid partly | abandoned | — | `partial_payment` |
//! | `Expired`, paid after expiry | abandoned | — (until the operator marks it settled) | `late_payment` |
//! | `Invalid`, never settled | failed | — | — |
//! | `Invalid` after it settled | paid | a `reversal` of the payment | `invalid_after_settlement` |
//!
//! A contribution's passes become paid when its invoice settles, and void when it expires,
//! goes invalid, or is taken back ([`crate::passes`]).
//!
//! Beside the fiat payment the contribution keeps what was paid in crypto and the rate;
//! never a transaction id or an address.

use kopilka_btcpay::{AdditionalStatus, Invoice, InvoiceStatus, PaymentMethod};
use kopilka_domain::id::{ContributionId, ReaderId};
use kopilka_domain::{ContributionStatus, Money, Provider};
use sqlx::PgConnection;

use crate::ContributionError;
use crate::facts::{Applied, at, move_to, note_gift};
use crate::ledger::{self, EntryKind, NewEntry};

/// Why an invoice needs the operator's eye.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Attention {
    /// Expired with less than the amount paid: refund it or mark it settled in BTCPay.
    PartialPayment,
    /// Paid after it expired (at a rate that may no longer hold): mark it settled in BTCPay
    /// to book it, or refund it.
    LatePayment,
    /// Settled with more than the amount paid: the amount is booked; refund the rest.
    Overpayment,
    /// Marked settled by hand with less than the amount paid: the amount is booked.
    MarkedSettledShort,
    /// Marked invalid after it settled: the payment is reversed in the ledger.
    InvalidAfterSettlement,
}

impl Attention {
    /// Its name in `contributions.attention`.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::PartialPayment => "partial_payment",
            Self::LatePayment => "late_payment",
            Self::Overpayment => "overpayment",
            Self::MarkedSettledShort => "marked_settled_short",
            Self::InvalidAfterSettlement => "invalid_after_settlement",
        }
    }
}

/// An invoice as BTCPay says it stands, for the contribution it was created for.
#[derive(Debug, Clone, Copy)]
pub struct InvoiceSeen<'a> {
    /// The contribution (`metadata.orderId`).
    pub contribution_id: ContributionId,
    /// The invoice, read from BTCPay.
    pub invoice: &'a Invoice,
    /// Its payment methods, read from BTCPay (needed once it settled).
    pub methods: &'a [PaymentMethod],
    /// When the delivery that brought it was created (unix seconds).
    pub occurred_at: i64,
    /// Days a paid pass code may wait to be redeemed (`passes.redeem_days`).
    pub redeem_days: u32,
}

/// Whether `invoice_id` is the invoice Kopilka created for contribution `id` (an invoice
/// naming another order, or a stranger's invoice naming Kopilka's id, is none of Kopilka's
/// business).
///
/// # Errors
/// Storage errors.
pub async fn is_kopilkas_invoice(
    conn: &mut PgConnection,
    id: ContributionId,
    invoice_id: &str,
) -> Result<bool, ContributionError> {
    Ok(sqlx::query_scalar(
        "SELECT EXISTS (SELECT 1 FROM contributions
                        WHERE id = $1 AND provider = 'btcpay' AND btcpay_invoice_id = $2)",
    )
    .bind(id.as_uuid())
    .bind(invoice_id)
    .fetch_one(conn)
    .await?)
}

/// The payment method that was paid (the one with the most paid), as (currency, amount,
/// exponent, rate).
fn paid_method(methods: &[PaymentMethod]) -> Option<(&str, i64, i16, &str)> {
    methods
        .iter()
        .filter_map(|method| {
            let (amount, exponent) =
                kopilka_btcpay::parse_crypto_amount(&method.payment_method_paid)?;
            (amount > 0 && kopilka_btcpay::is_positive_decimal(&method.rate)).then_some((
                method.currency.as_str(),
                amount,
                i16::from(exponent),
                method.rate.as_str(),
            ))
        })
        // The most paid, compared across exponents by scaling to the largest.
        .max_by_key(|(_, amount, exponent, _)| {
            i128::from(*amount) * 10_i128.pow(u32::try_from(18 - exponent).unwrap_or(0))
        })
}

/// Applies `seen` (see the module docs).
///
/// # Errors
/// Storage errors.
pub async fn invoice_seen(
    conn: &mut PgConnection,
    seen: &InvoiceSeen<'_>,
) -> Result<Applied, ContributionError> {
    let invoice = seen.invoice;
    type Row = (String, Option<uuid::Uuid>, bool, Option<String>);
    let row: Option<Row> = sqlx::query_as(
        "SELECT status, reader_id, reader_erased_at IS NOT NULL, attention FROM contributions
         WHERE id = $1 AND provider = 'btcpay' AND btcpay_invoice_id = $2 FOR UPDATE",
    )
    .bind(seen.contribution_id.as_uuid())
    .bind(&invoice.id)
    .fetch_optional(&mut *conn)
    .await?;
    let Some((status, reader, erased, attention)) = row else {
        return Ok(Applied::Unknown);
    };
    let status: Option<ContributionStatus> = status.parse().ok();
    let paid_short = invoice.paid_amount.minor() < invoice.amount.minor();
    // What was paid so far, once anything was (a retried checkout's pass codes are then
    // never reissued; the operator's report shows it).
    let paid_seen = invoice.paid_amount.is_positive()
        && sqlx::query(
            "UPDATE contributions SET paid_minor = $2 WHERE id = $1
                 AND paid_minor IS DISTINCT FROM $2",
        )
        .bind(seen.contribution_id.as_uuid())
        .bind(invoice.paid_amount.minor())
        .execute(&mut *conn)
        .await?
        .rows_affected()
            > 0;
    let changed = match invoice.status {
        InvoiceStatus::Settled => {
            let mut changed = ledger::record(
                conn,
                &NewEntry {
                    kind: EntryKind::Payment,
                    provider: Provider::Btcpay,
                    provider_id: &invoice.id,
                    payment_intent_id: None,
                    contribution_id: Some(seen.contribution_id),
                    plan_id: None,
                    amount: invoice.amount,
                    occurred_at: at(seen.occurred_at),
                },
            )
            .await?;
            if let Some((currency, amount, exponent, rate)) = paid_method(seen.methods) {
                sqlx::query(
                    "UPDATE contributions SET crypto_currency = $2, crypto_amount_minor = $3,
                         crypto_exponent = $4, crypto_rate = $5::numeric
                     WHERE id = $1",
                )
                .bind(seen.contribution_id.as_uuid())
                .bind(currency)
                .bind(amount)
                .bind(exponent)
                .bind(rate)
                .execute(&mut *conn)
                .await?;
            }
            // An anonymous reader who asked for an emailed receipt is named by the address
            // BTCPay kept for it, now that the money settled.
            if reader.is_none()
                && !erased
                && let Some(email) = &invoice.buyer_email
            {
                let reader = kopilka_accounts::reader::find_or_create(conn, email).await?;
                sqlx::query("UPDATE contributions SET reader_id = $2 WHERE id = $1")
                    .bind(seen.contribution_id.as_uuid())
                    .bind(ReaderId::as_uuid(reader))
                    .execute(&mut *conn)
                    .await?;
                changed = true;
            }
            changed |= move_to(
                conn,
                seen.contribution_id,
                ContributionStatus::Paid,
                seen.occurred_at,
            )
            .await?
                == Applied::Changed;
            note_gift(conn, seen.contribution_id, seen.occurred_at).await?;
            changed |= crate::passes::paid(
                conn,
                seen.contribution_id,
                at(seen.occurred_at),
                seen.redeem_days,
            )
            .await?;
            let flag = match invoice.additional_status {
                AdditionalStatus::PaidOver => Some(Attention::Overpayment),
                AdditionalStatus::Marked if paid_short => Some(Attention::MarkedSettledShort),
                _ => None,
            };
            changed | flag_for(conn, seen, flag, attention.as_deref()).await?
        }
        InvoiceStatus::Expired => {
            // An invoice that settled stays paid, whatever a late delivery says.
            if status == Some(ContributionStatus::Paid) {
                false
            } else {
                let moved = move_to(
                    conn,
                    seen.contribution_id,
                    ContributionStatus::Abandoned,
                    seen.occurred_at,
                )
                .await?
                    == Applied::Changed;
                let moved = crate::passes::void(conn, seen.contribution_id).await? | moved;
                let flag = match invoice.additional_status {
                    AdditionalStatus::PaidLate => Some(Attention::LatePayment),
                    _ if invoice.paid_amount.is_positive() => Some(Attention::PartialPayment),
                    _ => None,
                };
                moved | flag_for(conn, seen, flag, attention.as_deref()).await?
            }
        }
        InvoiceStatus::Invalid => {
            let reversal = format!("{}:invalid", invoice.id);
            let settled: bool = sqlx::query_scalar(
                "SELECT EXISTS (SELECT 1 FROM ledger_entries
                                WHERE provider = 'btcpay' AND provider_id = $1 AND kind = 'payment')",
            )
            .bind(&invoice.id)
            .fetch_one(&mut *conn)
            .await?;
            if settled {
                let reversed = ledger::record(
                    conn,
                    &NewEntry {
                        kind: EntryKind::Reversal,
                        provider: Provider::Btcpay,
                        provider_id: &reversal,
                        payment_intent_id: None,
                        contribution_id: Some(seen.contribution_id),
                        plan_id: None,
                        amount: Money::new(-invoice.amount.minor(), invoice.amount.currency()),
                        occurred_at: at(seen.occurred_at),
                    },
                )
                .await?;
                let flag = Some(Attention::InvalidAfterSettlement);
                let voided = crate::passes::void(conn, seen.contribution_id).await?;
                reversed | voided | flag_for(conn, seen, flag, attention.as_deref()).await?
            } else {
                let voided = crate::passes::void(conn, seen.contribution_id).await?;
                move_to(
                    conn,
                    seen.contribution_id,
                    ContributionStatus::Failed,
                    seen.occurred_at,
                )
                .await?
                    == Applied::Changed
                    || voided
            }
        }
        InvoiceStatus::New | InvoiceStatus::Processing | InvoiceStatus::Unknown => false,
    };
    Ok(Applied::from_changed(changed || paid_seen))
}

/// Records `flag` on the contribution unless it already says so.
async fn flag_for(
    conn: &mut PgConnection,
    seen: &InvoiceSeen<'_>,
    flag: Option<Attention>,
    current: Option<&str>,
) -> Result<bool, ContributionError> {
    let Some(flag) = flag else {
        return Ok(false);
    };
    if current == Some(flag.as_str()) {
        return Ok(false);
    }
    sqlx::query(
        "UPDATE contributions SET attention = $2, attention_at = to_timestamp($3) WHERE id = $1",
    )
    .bind(seen.contribution_id.as_uuid())
    .bind(flag.as_str())
    .bind(seen.occurred_at)
    .execute(&mut *conn)
    .await?;
    tracing::warn!(contribution_id = %seen.contribution_id, attention = flag.as_str(), "a crypto payment needs the operator");
    Ok(true)
}

/// A contribution whose provider's record needs the operator (see [`Attention`]).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct NeedsAttention {
    /// Kopilka's id.
    pub contribution_id: ContributionId,
    /// `btcpay`.
    pub provider: String,
    /// The provider's record to open (BTCPay's invoice).
    pub invoice_id: Option<String>,
    /// Why (`partial_payment`, `late_payment`, …).
    pub attention: String,
    /// Since when.
    #[serde(with = "time::serde::rfc3339")]
    pub since: time::OffsetDateTime,
    /// The contribution's status.
    pub status: String,
    /// The amount asked.
    pub amount_minor: i64,
    /// What the provider says was paid, in the same currency.
    pub paid_minor: Option<i64>,
    /// Lowercase ISO code.
    pub currency: String,
}

/// Every contribution needing the operator, oldest first (at most `limit`).
///
/// # Errors
/// Storage errors.
pub async fn needing_attention(
    conn: &mut PgConnection,
    limit: i64,
) -> Result<Vec<NeedsAttention>, ContributionError> {
    type Row = (
        uuid::Uuid,
        String,
        Option<String>,
        String,
        time::OffsetDateTime,
        String,
        i64,
        Option<i64>,
        String,
    );
    let rows: Vec<Row> = sqlx::query_as(
        "SELECT id, provider, btcpay_invoice_id, attention, attention_at, status, amount_minor,
                paid_minor, currency
         FROM contributions WHERE attention IS NOT NULL ORDER BY attention_at, id LIMIT $1",
    )
    .bind(limit)
    .fetch_all(conn)
    .await?;
    Ok(rows
        .into_iter()
        .map(
            |(
                id,
                provider,
                invoice_id,
                attention,
                since,
                status,
                amount_minor,
                paid_minor,
                currency,
            )| {
                NeedsAttention {
                    contribution_id: ContributionId::from_uuid(id),
                    provider,
                    invoice_id,
                    attention,
                    since,
                    status,
                    amount_minor,
                    paid_minor,
                    currency,
                }
            },
        )
        .collect())
}
