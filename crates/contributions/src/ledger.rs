//! The payments ledger: every money movement once, immutable (the table refuses UPDATE and
//! DELETE). Balances and totals are derived from it, never stored.

use kopilka_domain::id::ContributionId;
use kopilka_domain::{Money, Provider};
use sqlx::PgConnection;
use time::OffsetDateTime;

use crate::ContributionError;

/// What moved.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EntryKind {
    /// A successful payment (positive), keyed by its payment intent.
    Payment,
    /// A refund (negative), keyed by `re_…`.
    Refund,
    /// A refund that failed after it was booked gives the money back (positive), keyed by
    /// `re_…:failed`.
    RefundReversal,
    /// Funds withdrawn by a dispute (negative), keyed by `dp_…`.
    Dispute,
    /// Funds reinstated by a won dispute (positive), keyed by `dp_…:reinstated`.
    DisputeReversal,
    /// Stripe's fee (negative; positive when Stripe gives it back), keyed by the balance
    /// transaction (`txn_…`) that charged it.
    Fee,
    /// A settled payment its provider took back (negative): a BTCPay invoice marked invalid
    /// after it settled, keyed `<invoice>:invalid`.
    Reversal,
}

impl EntryKind {
    fn as_str(self) -> &'static str {
        match self {
            Self::Payment => "payment",
            Self::Refund => "refund",
            Self::RefundReversal => "refund_reversal",
            Self::Dispute => "dispute",
            Self::DisputeReversal => "dispute_reversal",
            Self::Fee => "fee",
            Self::Reversal => "reversal",
        }
    }
}

/// A ledger row to record.
#[derive(Debug, Clone)]
pub struct NewEntry<'a> {
    /// What moved.
    pub kind: EntryKind,
    /// The provider the money moved through (no default: every booking says which).
    pub provider: Provider,
    /// The provider's id that makes it unique within its provider.
    pub provider_id: &'a str,
    /// The payment it belongs to.
    pub payment_intent_id: Option<&'a str>,
    /// The contribution it belongs to, when known.
    pub contribution_id: Option<ContributionId>,
    /// The recurring plan (renewals).
    pub plan_id: Option<uuid::Uuid>,
    /// Signed: payments and reinstatements positive, the rest negative.
    pub amount: Money,
    /// When it happened (Stripe's time).
    pub occurred_at: OffsetDateTime,
}

/// Records `entry` unless its provider's id is already there under its provider; returns
/// whether it was new. A payment through Stripe also queues the job that records Stripe's fee.
///
/// # Errors
/// Storage errors.
pub async fn record(
    conn: &mut PgConnection,
    entry: &NewEntry<'_>,
) -> Result<bool, ContributionError> {
    let inserted = sqlx::query(
        "INSERT INTO ledger_entries
             (id, kind, provider, provider_id, payment_intent_id, contribution_id, plan_id, amount_minor, currency, occurred_at)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)
         ON CONFLICT (provider, provider_id) DO NOTHING",
    )
    .bind(uuid::Uuid::now_v7())
    .bind(entry.kind.as_str())
    .bind(entry.provider.as_str())
    .bind(entry.provider_id)
    .bind(entry.payment_intent_id)
    .bind(entry.contribution_id.map(ContributionId::as_uuid))
    .bind(entry.plan_id)
    .bind(entry.amount.minor())
    .bind(entry.amount.currency().stripe_code())
    .bind(entry.occurred_at)
    .execute(&mut *conn)
    .await?;
    let new = inserted.rows_affected() == 1;
    if new && entry.kind == EntryKind::Payment {
        // Every payment gets its receipt, queued with the row that records it.
        let job = kopilka_queue::NewJob::new(RECEIPT_JOB, receipt_payload(entry))
            .attempts(kopilka_queue::PATIENT_ATTEMPTS)
            .dedup(receipt_dedup(entry.provider, entry.provider_id));
        kopilka_queue::enqueue(conn, &job).await?;
    }
    if new && entry.kind == EntryKind::Payment && entry.provider == Provider::Stripe {
        // And Stripe's fee on it: the event names the charge's balance transaction by id
        // only (or not at all), and applying an event calls no Stripe API, so a job
        // retrieves it after the payment is booked (see `FEE_JOB`).
        let payment_intent = entry.payment_intent_id.unwrap_or(entry.provider_id);
        let job = kopilka_queue::NewJob::new(
            FEE_JOB,
            serde_json::json!({"payment_intent": payment_intent}),
        )
        .attempts(kopilka_queue::PATIENT_ATTEMPTS)
        .dedup(format!("ledger:fee:{payment_intent}"));
        kopilka_queue::enqueue(conn, &job).await?;
    }
    Ok(new)
}

fn receipt_payload(entry: &NewEntry<'_>) -> serde_json::Value {
    serde_json::json!({"provider": entry.provider, "provider_id": entry.provider_id})
}

/// The receipt job's dedup key: a Stripe payment's as it was before providers (so a job
/// queued by an earlier Kopilka still deduplicates), another provider's prefixed by its name.
fn receipt_dedup(provider: Provider, provider_id: &str) -> String {
    match provider {
        Provider::Stripe => format!("mail:receipt:{provider_id}"),
        Provider::Btcpay => format!("mail:receipt:{provider}:{provider_id}"),
    }
}

/// The payment a [`RECEIPT_JOB`]'s payload names: `{"provider", "provider_id"}`, or
/// `{"stripe_id"}` as an earlier Kopilka queued it.
#[must_use]
pub fn receipt_job_payment(payload: &serde_json::Value) -> Option<(Provider, &str)> {
    if let Some(stripe_id) = payload["stripe_id"].as_str() {
        return Some((Provider::Stripe, stripe_id));
    }
    Some((
        payload["provider"].as_str()?.parse().ok()?,
        payload["provider_id"].as_str()?,
    ))
}

/// The kind of the job that records Stripe's fee on a payment (payload `payment_intent`):
/// it retrieves the balance transaction of the payment's charge and records a [`EntryKind::Fee`]
/// row keyed by its `txn_…` id, so running it again records nothing more.
pub const FEE_JOB: &str = "ledger.fee";

/// Records Stripe's `fee` (positive, in `currency`) charged by balance transaction `txn` on
/// the payment booked under `payment_intent`, as a negative `fee` row of the same
/// contribution and plan. Returns whether it was new; `Ok(false)` also when the payment is
/// not in the ledger, or the fee is zero (nothing moved).
///
/// # Errors
/// Storage errors.
pub async fn record_payment_fee(
    conn: &mut PgConnection,
    payment_intent: &str,
    txn: &str,
    fee: Money,
    occurred_at: OffsetDateTime,
) -> Result<bool, ContributionError> {
    if fee.minor() == 0 {
        return Ok(false);
    }
    let payment: Option<(Option<uuid::Uuid>, Option<uuid::Uuid>)> = sqlx::query_as(
        "SELECT contribution_id, plan_id FROM ledger_entries
         WHERE provider = 'stripe' AND kind = 'payment'
           AND (coalesce(payment_intent_id, provider_id) = $1 OR provider_id = kopilka_payment_key($1))
         LIMIT 1",
    )
    .bind(payment_intent)
    .fetch_optional(&mut *conn)
    .await?;
    let Some((contribution, plan)) = payment else {
        return Ok(false);
    };
    record(
        conn,
        &NewEntry {
            kind: EntryKind::Fee,
            provider: Provider::Stripe,
            provider_id: txn,
            payment_intent_id: Some(payment_intent),
            contribution_id: contribution.map(ContributionId::from_uuid),
            plan_id: plan,
            amount: Money::new(-fee.minor(), fee.currency()),
            occurred_at,
        },
    )
    .await
}

/// The kind of the job that records what a refund (or a failed refund's return) settled
/// as (payload `stripe_id`, the ledger row's key, and `balance_transaction`, its `txn_…`):
/// a refund names its balance transaction by id only, and in a converted currency only
/// that transaction says how much left the balance.
pub const SETTLEMENT_JOB: &str = "ledger.settlement";

/// Queues [`SETTLEMENT_JOB`] for ledger row `stripe_id`, moved by balance transaction
/// `txn` (once per transaction).
///
/// # Errors
/// Storage errors.
pub async fn queue_settlement(
    conn: &mut PgConnection,
    stripe_id: &str,
    txn: &str,
) -> Result<(), ContributionError> {
    let job = kopilka_queue::NewJob::new(
        SETTLEMENT_JOB,
        serde_json::json!({"stripe_id": stripe_id, "balance_transaction": txn}),
    )
    .attempts(kopilka_queue::PATIENT_ATTEMPTS)
    .dedup(format!("ledger:settlement:{txn}"));
    kopilka_queue::enqueue(conn, &job).await?;
    Ok(())
}

/// Records that Stripe ledger row `stripe_id` settled as `settled` (signed, in the balance
/// transaction's currency) through balance transaction `txn`. Returns whether it was new;
/// `Ok(false)` also when no such row is in the ledger.
///
/// # Errors
/// Storage errors.
pub async fn record_settlement(
    conn: &mut PgConnection,
    stripe_id: &str,
    txn: &str,
    settled: Money,
) -> Result<bool, ContributionError> {
    let inserted = sqlx::query(
        "INSERT INTO ledger_settlements (balance_transaction, provider, stripe_id, amount_minor, currency)
         SELECT $1, 'stripe', $2, $3, $4
         WHERE EXISTS (SELECT 1 FROM ledger_entries WHERE provider = 'stripe' AND provider_id = $2)
         ON CONFLICT DO NOTHING",
    )
    .bind(txn)
    .bind(stripe_id)
    .bind(settled.minor())
    .bind(settled.currency().stripe_code())
    .execute(conn)
    .await?;
    Ok(inserted.rows_affected() == 1)
}

/// [`record_settlement`] for the payment booked under `payment_intent`.
///
/// # Errors
/// Storage errors.
pub async fn record_payment_settlement(
    conn: &mut PgConnection,
    payment_intent: &str,
    txn: &str,
    settled: Money,
) -> Result<bool, ContributionError> {
    let payment: Option<String> = sqlx::query_scalar(
        "SELECT provider_id FROM ledger_entries
         WHERE provider = 'stripe' AND kind = 'payment'
           AND (coalesce(payment_intent_id, provider_id) = $1 OR provider_id = kopilka_payment_key($1))
         LIMIT 1",
    )
    .bind(payment_intent)
    .fetch_optional(&mut *conn)
    .await?;
    match payment {
        Some(stripe_id) => record_settlement(conn, &stripe_id, txn, settled).await,
        None => Ok(false),
    }
}

/// Whether a row is recorded under `provider_id` of `provider`.
///
/// # Errors
/// Storage errors.
pub async fn recorded(
    conn: &mut PgConnection,
    provider: Provider,
    provider_id: &str,
) -> Result<bool, ContributionError> {
    Ok(sqlx::query_scalar(
        "SELECT EXISTS (SELECT 1 FROM ledger_entries WHERE provider = $1 AND provider_id = $2)",
    )
    .bind(provider.as_str())
    .bind(provider_id)
    .fetch_one(conn)
    .await?)
}

/// The kind of the job that emails a payment's receipt (payload `{"provider",
/// "provider_id"}`, read by [`receipt_job_payment`]).
pub const RECEIPT_JOB: &str = "mail.receipt";

/// What a receipt says about one payment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReceiptFacts {
    /// The contribution paid for.
    pub contribution_id: ContributionId,
    /// Its reader, once known.
    pub reader_id: Option<uuid::Uuid>,
    /// `once`, `month` or `year`.
    pub interval: String,
    /// The plan, for a recurring payment.
    pub plan_id: Option<uuid::Uuid>,
    /// A plan's payment after its first.
    pub renewal: bool,
    /// What was paid.
    pub amount: Money,
    /// When.
    pub occurred_at: OffsetDateTime,
}

type ReceiptRow = (
    uuid::Uuid,
    Option<uuid::Uuid>,
    String,
    Option<uuid::Uuid>,
    i64,
    String,
    OffsetDateTime,
    bool,
);

/// The payment recorded under `provider_id` of `provider`, for its receipt.
///
/// # Errors
/// Storage errors.
pub async fn receipt_facts(
    conn: &mut PgConnection,
    provider: Provider,
    provider_id: &str,
) -> Result<Option<ReceiptFacts>, ContributionError> {
    let row: Option<ReceiptRow> = sqlx::query_as(
        "SELECT c.id, c.reader_id, c.interval, l.plan_id, l.amount_minor, l.currency, l.occurred_at,
                 EXISTS (SELECT 1 FROM ledger_entries e WHERE e.plan_id = l.plan_id
                         AND e.kind = 'payment' AND e.occurred_at < l.occurred_at)
             FROM ledger_entries l JOIN contributions c ON c.id = l.contribution_id
             WHERE l.provider = $1 AND l.provider_id = $2 AND l.kind = 'payment'",
    )
    .bind(provider.as_str())
    .bind(provider_id)
    .fetch_optional(conn)
    .await?;
    Ok(row.and_then(
        |(contribution, reader, interval, plan, minor, currency, at, renewal)| {
            Some(ReceiptFacts {
                contribution_id: ContributionId::from_uuid(contribution),
                reader_id: reader,
                interval,
                plan_id: plan,
                renewal,
                amount: Money::new(minor, currency.parse().ok()?),
                occurred_at: at,
            })
        },
    ))
}

/// The sum of every entry of a payment (what is left of it after refunds and disputes).
///
/// # Errors
/// Storage errors.
pub async fn remaining_of_payment(
    conn: &mut PgConnection,
    payment_intent_id: &str,
) -> Result<i64, ContributionError> {
    let remaining: Option<i64> = sqlx::query_scalar(
        "SELECT sum(amount_minor)::bigint FROM ledger_entries
         WHERE payment_intent_id IN ($1, kopilka_payment_key($1))
           AND kind IN ('payment', 'refund', 'refund_reversal', 'dispute', 'dispute_reversal')",
    )
    .bind(payment_intent_id)
    .fetch_one(conn)
    .await?;
    Ok(remaining.unwrap_or(0))
}

/// Per-currency totals between two instants.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct CurrencyTotals {
    /// Lowercase ISO code.
    pub currency: String,
    /// Succeeded payments.
    pub gross_minor: i64,
    /// Refunds, net of refunds that failed (positive number).
    pub refunded_minor: i64,
    /// Gross − refunded − disputes (net of reinstatements).
    pub net_minor: i64,
    /// How many payments.
    pub payments: i64,
    /// What disputes withdrew, net of what they reinstated (positive number).
    pub disputed_minor: i64,
    /// Stripe's fees (card processing and dispute fees, net of fees given back), in the
    /// currency they were taken in (the settlement currency).
    pub fees_minor: i64,
    /// What Stripe's balance gained in this currency: every Stripe movement that settled in
    /// it (converted movements count in the currency they were converted to), less
    /// `fees_minor`. Without conversion and crypto, `net_minor − fees_minor`.
    pub stripe_net_minor: i64,
}

/// Totals per currency over `[since, until)`, as Stripe counts them: payments, refunds and
/// disputes in the currency the donor paid in (fees apart in `net_minor`); Stripe's fees
/// and net in the currency the money settled in (see [`CurrencyTotals::stripe_net_minor`]).
///
/// # Errors
/// Storage errors.
pub async fn totals(
    conn: &mut PgConnection,
    since: OffsetDateTime,
    until: OffsetDateTime,
) -> Result<Vec<CurrencyTotals>, ContributionError> {
    use std::collections::BTreeMap;
    let rows: Vec<(String, i64, i64, i64, i64, i64, i64)> = sqlx::query_as(
        "SELECT currency,
                coalesce(sum(amount_minor) FILTER (WHERE kind = 'payment'), 0)::bigint,
                coalesce(-sum(amount_minor) FILTER (WHERE kind IN ('refund', 'refund_reversal')), 0)::bigint,
                coalesce(sum(amount_minor) FILTER (WHERE kind <> 'fee'), 0)::bigint,
                count(*) FILTER (WHERE kind = 'payment'),
                coalesce(-sum(amount_minor) FILTER (WHERE kind IN ('dispute', 'dispute_reversal')), 0)::bigint,
                coalesce(-sum(amount_minor) FILTER (WHERE kind = 'fee'), 0)::bigint
         FROM ledger_entries WHERE occurred_at >= $1 AND occurred_at < $2
         GROUP BY currency ORDER BY currency",
    )
    .bind(since)
    .bind(until)
    .fetch_all(&mut *conn)
    .await?;
    // Each movement as it settled: its settlement if recorded, else itself.
    let settled: Vec<(String, i64)> = sqlx::query_as(
        "SELECT coalesce(s.currency, e.currency),
                sum(coalesce(s.amount_minor, e.amount_minor))::bigint
         FROM ledger_entries e LEFT JOIN ledger_settlements s
             ON s.provider = e.provider AND s.stripe_id = e.provider_id
         WHERE e.occurred_at >= $1 AND e.occurred_at < $2 AND e.kind <> 'fee'
           AND e.provider = 'stripe'
         GROUP BY 1",
    )
    .bind(since)
    .bind(until)
    .fetch_all(&mut *conn)
    .await?;
    let mut by_currency: BTreeMap<String, CurrencyTotals> = BTreeMap::new();
    let empty = |currency: &str| CurrencyTotals {
        currency: currency.to_owned(),
        gross_minor: 0,
        refunded_minor: 0,
        net_minor: 0,
        payments: 0,
        disputed_minor: 0,
        fees_minor: 0,
        stripe_net_minor: 0,
    };
    for (currency, gross_minor, refunded_minor, net_minor, payments, disputed_minor, fees_minor) in
        rows
    {
        let t = by_currency
            .entry(currency.clone())
            .or_insert_with(|| empty(&currency));
        t.gross_minor = gross_minor;
        t.refunded_minor = refunded_minor;
        t.net_minor = net_minor;
        t.payments = payments;
        t.disputed_minor = disputed_minor;
        t.fees_minor = fees_minor;
        t.stripe_net_minor -= fees_minor;
    }
    for (currency, minor) in settled {
        by_currency
            .entry(currency.clone())
            .or_insert_with(|| empty(&currency))
            .stripe_net_minor += minor;
    }
    Ok(by_currency.into_values().collect())
}

/// One provider's totals in one currency.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct ProviderTotals {
    /// `stripe` or `btcpay`.
    pub provider: String,
    /// Lowercase ISO code (a crypto payment counts in its invoice's fiat currency).
    pub currency: String,
    /// Succeeded payments.
    pub gross_minor: i64,
    /// Refunds, net of refunds that failed (positive number).
    pub refunded_minor: i64,
    /// Every movement but fees: payments less refunds, disputes and reversals.
    pub net_minor: i64,
    /// How many payments.
    pub payments: i64,
}

/// Totals per provider and currency over `[since, until)`.
///
/// # Errors
/// Storage errors.
pub async fn totals_by_provider(
    conn: &mut PgConnection,
    since: OffsetDateTime,
    until: OffsetDateTime,
) -> Result<Vec<ProviderTotals>, ContributionError> {
    let rows: Vec<(String, String, i64, i64, i64, i64)> = sqlx::query_as(
        "SELECT provider, currency,
                coalesce(sum(amount_minor) FILTER (WHERE kind = 'payment'), 0)::bigint,
                coalesce(-sum(amount_minor) FILTER (WHERE kind IN ('refund', 'refund_reversal')), 0)::bigint,
                coalesce(sum(amount_minor) FILTER (WHERE kind <> 'fee'), 0)::bigint,
                count(*) FILTER (WHERE kind = 'payment')
         FROM ledger_entries WHERE occurred_at >= $1 AND occurred_at < $2
         GROUP BY provider, currency ORDER BY provider, currency",
    )
    .bind(since)
    .bind(until)
    .fetch_all(conn)
    .await?;
    Ok(rows
        .into_iter()
        .map(
            |(provider, currency, gross_minor, refunded_minor, net_minor, payments)| {
                ProviderTotals {
                    provider,
                    currency,
                    gross_minor,
                    refunded_minor,
                    net_minor,
                    payments,
                }
            },
        )
        .collect())
}

/// Whether the reader of contribution `contribution` was erased: nothing will ever name a
/// reader for it again, so whatever waits for one stops waiting.
///
/// # Errors
/// Storage errors.
pub async fn reader_erased(
    conn: &mut PgConnection,
    contribution: ContributionId,
) -> Result<bool, ContributionError> {
    Ok(sqlx::query_scalar(
        "SELECT EXISTS (SELECT 1 FROM contributions WHERE id = $1 AND reader_erased_at IS NOT NULL)",
    )
    .bind(contribution.as_uuid())
    .fetch_one(conn)
    .await?)
}

/// The reader a contribution is linked to, if any.
///
/// # Errors
/// Storage errors.
pub async fn reader_of(
    conn: &mut PgConnection,
    contribution: ContributionId,
) -> Result<Option<uuid::Uuid>, ContributionError> {
    Ok(
        sqlx::query_scalar("SELECT reader_id FROM contributions WHERE id = $1")
            .bind(contribution.as_uuid())
            .fetch_optional(conn)
            .await?
            .flatten(),
    )
}

/// Readers with at least one payment in `[from, to)`.
///
/// # Errors
/// Storage errors.
pub async fn readers_who_gave(
    conn: &mut PgConnection,
    from: OffsetDateTime,
    to: OffsetDateTime,
) -> Result<Vec<uuid::Uuid>, ContributionError> {
    Ok(sqlx::query_scalar(
        "SELECT DISTINCT c.reader_id FROM ledger_entries l
         JOIN contributions c ON c.id = l.contribution_id
         WHERE l.kind = 'payment' AND l.occurred_at >= $1 AND l.occurred_at < $2
           AND c.reader_id IS NOT NULL
         ORDER BY 1",
    )
    .bind(from)
    .bind(to)
    .fetch_all(conn)
    .await?)
}

/// One currency's line of a statement.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GivenTotal {
    /// What was given, net of refunds and lost disputes (fees are Stripe's, not the reader's).
    pub net: Money,
    /// How many payments.
    pub payments: i64,
}

/// What `reader` gave in `[from, to)`, per currency.
///
/// # Errors
/// Storage errors.
pub async fn given_by_reader(
    conn: &mut PgConnection,
    reader: uuid::Uuid,
    from: OffsetDateTime,
    to: OffsetDateTime,
) -> Result<Vec<GivenTotal>, ContributionError> {
    let rows: Vec<(String, i64, i64)> = sqlx::query_as(
        "SELECT l.currency, sum(l.amount_minor)::bigint, count(*) FILTER (WHERE l.kind = 'payment')
         FROM ledger_entries l JOIN contributions c ON c.id = l.contribution_id
         WHERE c.reader_id = $1 AND l.kind <> 'fee' AND l.occurred_at >= $2 AND l.occurred_at < $3
         GROUP BY l.currency ORDER BY l.currency",
    )
    .bind(reader)
    .bind(from)
    .bind(to)
    .fetch_all(conn)
    .await?;
    Ok(rows
        .into_iter()
        .filter_map(|(currency, net, payments)| {
            Some(GivenTotal {
                net: Money::new(net, currency.parse().ok()?),
                payments,
            })
        })
        .collect())
}
