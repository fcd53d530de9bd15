//! `admin reconcile` for the crypto rail: page through the BTCPay store's invoices created
//! since a day, compare each of Kopilka's (its `orderId` a contribution whose invoice it is)
//! with the ledger and the contribution, and report each difference with the Stripe pass's
//! drift kinds. `--apply` first applies each invoice as it stands (the path a delivery
//! takes), so what a lost delivery left out is repaired.

use std::collections::HashSet;

use kopilka_btcpay::{BtcpayClient, Invoice, InvoiceQuery, InvoiceStatus};
use kopilka_contributions::crypto::{self, InvoiceSeen};
use kopilka_domain::id::ContributionId;
use kopilka_store::PgPool;
use sqlx::PgConnection;

use crate::ReconciliationError;
use crate::drift::{Drift, Report};

/// Invoices per page.
const PAGE: u32 = 100;

/// When the money of `invoice` arrived: its last payment's time, else its creation.
fn settled_at(invoice: &Invoice, methods: &[kopilka_btcpay::PaymentMethod]) -> i64 {
    methods
        .iter()
        .flat_map(|m| m.payments.iter())
        .filter_map(|p| p.received_date)
        .max()
        .unwrap_or(invoice.created_time)
}

/// Applies `invoice` (of `contribution`) as it stands, dated by its last payment.
async fn apply(
    pool: &PgPool,
    btcpay: &BtcpayClient,
    contribution: ContributionId,
    invoice: &Invoice,
    redeem_days: u32,
) -> Result<(), ReconciliationError> {
    let methods = crate::apply::methods_of(btcpay, invoice).await?;
    let mut tx = pool.begin().await?;
    crate::apply::apply_invoice(
        &mut tx,
        &InvoiceSeen {
            contribution_id: contribution,
            invoice,
            methods: &methods,
            occurred_at: settled_at(invoice, &methods),
            redeem_days,
        },
    )
    .await?;
    tx.commit().await.map_err(kopilka_store::StoreError::from)?;
    Ok(())
}

/// The payment booked for `invoice_id` (amount, currency) and whether it was reversed.
async fn booked(
    conn: &mut PgConnection,
    invoice_id: &str,
) -> Result<(Option<(i64, String)>, bool), ReconciliationError> {
    let payment: Option<(i64, String)> = sqlx::query_as(
        "SELECT amount_minor, currency FROM ledger_entries
         WHERE provider = 'btcpay' AND provider_id = $1 AND kind = 'payment'",
    )
    .bind(invoice_id)
    .fetch_optional(&mut *conn)
    .await?;
    let reversed: bool = sqlx::query_scalar(
        "SELECT EXISTS (SELECT 1 FROM ledger_entries
                        WHERE provider = 'btcpay' AND provider_id = $1 AND kind = 'reversal')",
    )
    .bind(format!("{invoice_id}:invalid"))
    .fetch_one(&mut *conn)
    .await?;
    Ok((payment, reversed))
}

/// Compares (and with `apply`, first applies) every invoice of the store created since
/// `since` (unix seconds) that is Kopilka's; `on_item` is called for each invoice read.
///
/// # Errors
/// BTCPay's refusal or unavailability; storage errors.
pub async fn reconcile_btcpay(
    pool: &PgPool,
    btcpay: &BtcpayClient,
    since: i64,
    apply_first: bool,
    redeem_days: u32,
    on_item: &(dyn Fn() + Sync),
) -> Result<Report, ReconciliationError> {
    let mut report = Report::default();
    let mut drift = |kind, object: &str, detail: String| {
        report.drift.push(Drift {
            provider: "btcpay",
            kind,
            object: object.to_owned(),
            detail,
        });
    };
    let mut seen = HashSet::new();
    let mut checked = 0_u64;
    let mut skip = 0;
    loop {
        let page = btcpay
            .invoices(&InvoiceQuery {
                start_date: Some(since),
                skip: Some(skip),
                take: Some(PAGE),
                ..InvoiceQuery::default()
            })
            .await?;
        for invoice in &page {
            checked += 1;
            on_item();
            let Some(contribution) = invoice
                .order_id
                .as_deref()
                .and_then(|id| uuid::Uuid::parse_str(id).ok())
                .map(ContributionId::from_uuid)
            else {
                continue;
            };
            let mut conn = pool
                .acquire()
                .await
                .map_err(kopilka_store::StoreError::from)?;
            if !crypto::is_kopilkas_invoice(&mut conn, contribution, &invoice.id).await? {
                continue;
            }
            drop(conn);
            seen.insert(invoice.id.clone());
            if apply_first {
                apply(pool, btcpay, contribution, invoice, redeem_days).await?;
            }
            let mut conn = pool
                .acquire()
                .await
                .map_err(kopilka_store::StoreError::from)?;
            let (payment, reversed) = booked(&mut conn, &invoice.id).await?;
            let status: String =
                sqlx::query_scalar("SELECT status FROM contributions WHERE id = $1")
                    .bind(contribution.as_uuid())
                    .fetch_one(&mut *conn)
                    .await?;
            let currency = invoice.amount.currency().stripe_code();
            match (invoice.status, &payment) {
                (InvoiceStatus::Settled, None) => drift(
                    "missing_in_ledger",
                    &invoice.id,
                    format!(
                        "BTCPay settled {}, the ledger has no payment",
                        invoice.amount
                    ),
                ),
                (InvoiceStatus::Settled, Some((_, booked))) if *booked != currency => drift(
                    "currency_mismatch",
                    &invoice.id,
                    format!("BTCPay {currency}, ledger {booked}"),
                ),
                (InvoiceStatus::Settled, Some((minor, _))) if *minor != invoice.amount.minor() => {
                    drift(
                        "amount_mismatch",
                        &invoice.id,
                        format!("BTCPay {}, ledger {minor}", invoice.amount.minor()),
                    );
                }
                (InvoiceStatus::Settled, Some(_)) if status != "paid" => drift(
                    "status_mismatch",
                    &invoice.id,
                    format!("BTCPay Settled, contribution {status}"),
                ),
                (InvoiceStatus::Invalid, Some(_)) if !reversed => drift(
                    "status_mismatch",
                    &invoice.id,
                    "BTCPay Invalid, the ledger books its payment and no reversal".into(),
                ),
                (
                    InvoiceStatus::New | InvoiceStatus::Processing | InvoiceStatus::Expired,
                    Some(_),
                ) => drift(
                    "status_mismatch",
                    &invoice.id,
                    format!(
                        "BTCPay {}, the ledger books a payment",
                        invoice.status.as_str()
                    ),
                ),
                _ => {}
            }
        }
        if page.len() < usize::try_from(PAGE).unwrap_or(usize::MAX) {
            break;
        }
        skip += PAGE;
    }
    // Payments booked for invoices BTCPay did not list (of contributions started in the
    // window: BTCPay filters invoices by creation).
    let mut conn = pool
        .acquire()
        .await
        .map_err(kopilka_store::StoreError::from)?;
    let ours: Vec<String> = sqlx::query_scalar(
        "SELECT l.provider_id FROM ledger_entries l JOIN contributions c ON c.id = l.contribution_id
         WHERE l.provider = 'btcpay' AND l.kind = 'payment'
           AND c.created_at >= to_timestamp($1) ORDER BY l.provider_id",
    )
    .bind(since)
    .fetch_all(&mut *conn)
    .await?;
    for invoice_id in ours {
        if !seen.contains(&invoice_id) {
            drift(
                "unknown_to_btcpay",
                &invoice_id,
                "the ledger books a payment of an invoice BTCPay does not list".into(),
            );
        }
    }
    report.checked = checked;
    Ok(report)
}
