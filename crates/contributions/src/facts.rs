//! Facts from Stripe, applied to contributions. The webhook issue turns events into these;
//! each function is idempotent and safe against a stale fact arriving after a newer one.

use kopilka_domain::id::{ContributionId, ReaderId};
use kopilka_domain::{ContributionStatus, Currency, Money, Provider};
use sqlx::PgConnection;
use time::OffsetDateTime;

use crate::ContributionError;
use crate::ledger::{self, EntryKind, NewEntry};

/// What applying a fact did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Applied {
    /// The fact changed something.
    Changed,
    /// Already applied, or older than what is known: nothing changed.
    Unchanged,
    /// It names a contribution Kopilka does not have (e.g. a session made elsewhere).
    Unknown,
}

impl Applied {
    /// `Changed` when `changed`, else `Unchanged`.
    #[must_use]
    pub fn from_changed(changed: bool) -> Self {
        if changed {
            Self::Changed
        } else {
            Self::Unchanged
        }
    }
}

pub(crate) fn at(unix: i64) -> OffsetDateTime {
    OffsetDateTime::from_unix_timestamp(unix).unwrap_or(OffsetDateTime::UNIX_EPOCH)
}

/// `checkout.session.completed` (and `checkout.session.async_payment_succeeded`).
#[derive(Debug, Clone)]
pub struct CheckoutCompleted {
    /// `cs_…`.
    pub session_id: String,
    /// Our id, from `client_reference_id`.
    pub contribution_id: ContributionId,
    /// `payment_status == "paid"`; a completed but unpaid session (delayed methods) waits.
    pub paid: bool,
    /// `cus_…`.
    pub customer: Option<String>,
    /// `pi_…` (payment mode).
    pub payment_intent: Option<String>,
    /// `sub_…` (subscription mode).
    pub subscription: Option<String>,
    /// `amount_total` in the session's currency.
    pub amount: Option<Money>,
    /// The reader the session's address belongs to (linked at ingest; the address itself
    /// is never stored with the event).
    pub reader: Option<ReaderId>,
    /// The event's `created`.
    pub occurred_at: i64,
}

/// Whether contribution `id` is Kopilka's own: an object naming any other id (another
/// product on a shared Stripe account) is none of Kopilka's business.
///
/// # Errors
/// Storage errors.
pub async fn is_kopilkas(
    conn: &mut PgConnection,
    id: ContributionId,
) -> Result<bool, ContributionError> {
    Ok(
        sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM contributions WHERE id = $1)")
            .bind(id.as_uuid())
            .fetch_one(conn)
            .await?,
    )
}

/// Whether a Checkout Session's address may name the reader of contribution `id`: it is
/// Kopilka's (the row exists), has no reader yet, and its reader was never erased. Anything
/// else — another product's session on a shared Stripe account, an erased donor's later
/// events — must not create or link a reader.
///
/// # Errors
/// Storage errors.
pub async fn awaits_reader(
    conn: &mut PgConnection,
    id: ContributionId,
) -> Result<bool, ContributionError> {
    Ok(sqlx::query_scalar(
        "SELECT EXISTS (SELECT 1 FROM contributions
                        WHERE id = $1 AND reader_id IS NULL AND reader_erased_at IS NULL)",
    )
    .bind(id.as_uuid())
    .fetch_one(conn)
    .await?)
}

/// Reads a contribution's status and watermark, locking its row for the transaction.
async fn status_for_update(
    conn: &mut PgConnection,
    id: ContributionId,
) -> Result<Option<(ContributionStatus, i64)>, ContributionError> {
    let row: Option<(String, i64)> = sqlx::query_as(
        "SELECT status, stripe_watermark FROM contributions WHERE id = $1 FOR UPDATE",
    )
    .bind(id.as_uuid())
    .fetch_optional(&mut *conn)
    .await?;
    Ok(row.and_then(|(status, watermark)| Some((status.parse().ok()?, watermark))))
}

/// Moves a contribution to `next` if that is a step forward and the fact is not older than
/// the newest fact already applied (a dispute's "created" arriving after its "closed: won"
/// must not reopen it).
pub(crate) async fn move_to(
    conn: &mut PgConnection,
    id: ContributionId,
    next: ContributionStatus,
    occurred_at: i64,
) -> Result<Applied, ContributionError> {
    let Some((current, watermark)) = status_for_update(conn, id).await? else {
        return Ok(Applied::Unknown);
    };
    if !current.may_become(next) || occurred_at < watermark {
        return Ok(Applied::Unchanged);
    }
    sqlx::query(
        "UPDATE contributions SET status = $2, stripe_watermark = greatest(stripe_watermark, $3),
             paid_at = CASE WHEN $2 = 'paid' THEN coalesce(paid_at, to_timestamp($3)) ELSE paid_at END
         WHERE id = $1",
    )
    .bind(id.as_uuid())
    .bind(next.as_str())
    .bind(occurred_at)
    .execute(&mut *conn)
    .await?;
    Ok(Applied::Changed)
}

/// A checkout completed: the contribution learns its Stripe ids and, when paid, becomes
/// paid; a one-off payment enters the ledger (a plan's first payment enters with its
/// invoice, through the recurring crate).
///
/// # Errors
/// Storage errors.
pub async fn checkout_completed(
    conn: &mut PgConnection,
    fact: &CheckoutCompleted,
) -> Result<Applied, ContributionError> {
    let linked = sqlx::query(
        "UPDATE contributions SET
             stripe_checkout_session_id = coalesce(stripe_checkout_session_id, $2),
             stripe_customer_id = coalesce(stripe_customer_id, $3),
             stripe_payment_intent_id = coalesce(stripe_payment_intent_id, $4),
             stripe_subscription_id = coalesce(stripe_subscription_id, $5),
             reader_id = CASE WHEN reader_erased_at IS NULL THEN coalesce(reader_id, $6) END
         WHERE id = $1",
    )
    .bind(fact.contribution_id.as_uuid())
    .bind(&fact.session_id)
    .bind(&fact.customer)
    .bind(&fact.payment_intent)
    .bind(&fact.subscription)
    .bind(fact.reader.map(ReaderId::as_uuid))
    .execute(&mut *conn)
    .await?;
    if linked.rows_affected() == 0 {
        return Ok(Applied::Unknown);
    }
    if !fact.paid {
        return Ok(Applied::Unchanged);
    }
    // The reader may be linked only now, after another event marked the gift paid.
    note_gift(conn, fact.contribution_id, fact.occurred_at).await?;
    let mut changed = move_to(
        conn,
        fact.contribution_id,
        ContributionStatus::Paid,
        fact.occurred_at,
    )
    .await?
        == Applied::Changed;
    if let (Some(pi), Some(amount), None) = (&fact.payment_intent, fact.amount, &fact.subscription)
    {
        changed |= ledger::record(
            conn,
            &NewEntry {
                kind: EntryKind::Payment,
                provider: Provider::Stripe,
                provider_id: pi,
                payment_intent_id: Some(pi),
                contribution_id: Some(fact.contribution_id),
                plan_id: None,
                amount,
                occurred_at: at(fact.occurred_at),
            },
        )
        .await?;
    }
    Ok(Applied::from_changed(changed))
}

/// A one-off payment succeeded (`payment_intent.succeeded` with the contribution in its
/// metadata): the ledger row and the paid status, whichever event brings them first.
///
/// # Errors
/// Storage errors.
pub async fn one_off_paid(
    conn: &mut PgConnection,
    contribution_id: ContributionId,
    payment_intent: &str,
    amount: Money,
    occurred_at: i64,
) -> Result<Applied, ContributionError> {
    // Locks the contribution before the ledger row, in the order checkout_completed takes
    // them: the two events of one payment, applied at once, must not deadlock.
    let interval: Option<String> =
        sqlx::query_scalar("SELECT interval FROM contributions WHERE id = $1 FOR UPDATE")
            .bind(contribution_id.as_uuid())
            .fetch_optional(&mut *conn)
            .await?;
    if interval.as_deref() != Some("once") {
        return Ok(Applied::Unknown);
    }
    let new = ledger::record(
        conn,
        &NewEntry {
            kind: EntryKind::Payment,
            provider: Provider::Stripe,
            provider_id: payment_intent,
            payment_intent_id: Some(payment_intent),
            contribution_id: Some(contribution_id),
            plan_id: None,
            amount,
            occurred_at: at(occurred_at),
        },
    )
    .await?;
    let moved = move_to(conn, contribution_id, ContributionStatus::Paid, occurred_at).await?
        == Applied::Changed;
    note_gift(conn, contribution_id, occurred_at).await?;
    Ok(Applied::from_changed(new || moved))
}

/// A payment for the contribution landed (a plan's first invoice was paid).
///
/// # Errors
/// Storage errors.
pub async fn payment_landed(
    conn: &mut PgConnection,
    contribution_id: ContributionId,
    occurred_at: i64,
) -> Result<Applied, ContributionError> {
    let moved = move_to(conn, contribution_id, ContributionStatus::Paid, occurred_at).await?;
    note_gift(conn, contribution_id, occurred_at).await?;
    Ok(moved)
}

/// Tells the contribution's reader's account (if it has one) that they gave at `at`:
/// their pending reminders are suppressed and the banner remembers the gift.
pub(crate) async fn note_gift(
    conn: &mut PgConnection,
    contribution_id: ContributionId,
    at_unix: i64,
) -> Result<(), ContributionError> {
    let reader: Option<uuid::Uuid> = sqlx::query_scalar(
        "SELECT reader_id FROM contributions WHERE id = $1 AND reader_id IS NOT NULL",
    )
    .bind(contribution_id.as_uuid())
    .fetch_optional(&mut *conn)
    .await?;
    if let Some(reader) = reader {
        kopilka_accounts::reminder::reader_gave(conn, ReaderId::from_uuid(reader), at(at_unix))
            .await?;
    }
    Ok(())
}

/// `checkout.session.expired`: an unpaid contribution becomes abandoned.
///
/// # Errors
/// Storage errors.
pub async fn checkout_expired(
    conn: &mut PgConnection,
    contribution_id: ContributionId,
    occurred_at: i64,
) -> Result<Applied, ContributionError> {
    move_to(
        conn,
        contribution_id,
        ContributionStatus::Abandoned,
        occurred_at,
    )
    .await
}

/// `payment_intent.payment_failed` for a checkout: the reader's card was declined.
///
/// # Errors
/// Storage errors.
pub async fn payment_failed(
    conn: &mut PgConnection,
    contribution_id: ContributionId,
    occurred_at: i64,
) -> Result<Applied, ContributionError> {
    move_to(
        conn,
        contribution_id,
        ContributionStatus::Failed,
        occurred_at,
    )
    .await
}

/// One refund of a payment (`charge.refunded` carries the refunds; each is applied once).
#[derive(Debug, Clone)]
pub struct RefundFact {
    /// `re_…`.
    pub refund_id: String,
    /// The refunded payment.
    pub payment_intent: String,
    /// How much was refunded (positive).
    pub amount: Money,
    /// The refund's `created`.
    pub occurred_at: i64,
    /// Its `balance_transaction` (`txn_…`), which says what it settled as.
    pub balance_transaction: Option<String>,
}

/// Whether the payment is in the ledger (under its payment intent, or the row its alias
/// names: see [`crate::alias`]): a refund or dispute of a payment not recorded yet waits for
/// it (the caller retries), so the ledger never holds a refund of nothing.
async fn payment_known(
    conn: &mut PgConnection,
    payment_intent: &str,
) -> Result<bool, ContributionError> {
    let known: bool = sqlx::query_scalar(
        "SELECT EXISTS (SELECT 1 FROM ledger_entries
                        WHERE provider = 'stripe' AND provider_id = kopilka_payment_key($1)
                          AND kind = 'payment')",
    )
    .bind(payment_intent)
    .fetch_one(conn)
    .await?;
    Ok(known)
}

async fn contribution_of_payment(
    conn: &mut PgConnection,
    payment_intent: &str,
) -> Result<Option<ContributionId>, ContributionError> {
    let id: Option<uuid::Uuid> = sqlx::query_scalar(
        "SELECT contribution_id FROM ledger_entries
         WHERE provider = 'stripe' AND provider_id = kopilka_payment_key($1) AND kind = 'payment'
         UNION ALL SELECT id FROM contributions WHERE stripe_payment_intent_id = $1 LIMIT 1",
    )
    .bind(payment_intent)
    .fetch_optional(&mut *conn)
    .await?
    .flatten();
    Ok(id.map(ContributionId::from_uuid))
}

/// A refund enters the ledger (negative); a contribution whose payment is refunded in full
/// becomes refunded.
///
/// # Errors
/// Storage errors.
pub async fn refund_recorded(
    conn: &mut PgConnection,
    fact: &RefundFact,
) -> Result<Applied, ContributionError> {
    if !payment_known(conn, &fact.payment_intent).await? {
        return Ok(Applied::Unknown);
    }
    let contribution = contribution_of_payment(conn, &fact.payment_intent).await?;
    let negative = Money::new(-fact.amount.minor().abs(), fact.amount.currency());
    let new = ledger::record(
        conn,
        &NewEntry {
            kind: EntryKind::Refund,
            provider: Provider::Stripe,
            provider_id: &fact.refund_id,
            payment_intent_id: Some(&fact.payment_intent),
            contribution_id: contribution,
            plan_id: None,
            amount: negative,
            occurred_at: at(fact.occurred_at),
        },
    )
    .await?;
    if new && let Some(txn) = &fact.balance_transaction {
        ledger::queue_settlement(conn, &fact.refund_id, txn).await?;
    }
    if let Some(contribution) = contribution
        && ledger::remaining_of_payment(conn, &fact.payment_intent).await? <= 0
        && own_payment(conn, contribution, &fact.payment_intent).await?
    {
        move_to(
            conn,
            contribution,
            ContributionStatus::Refunded,
            fact.occurred_at,
        )
        .await?;
    }
    Ok(Applied::from_changed(new))
}

/// Whether `payment_intent` is the contribution's own first payment (not a plan renewal).
async fn own_payment(
    conn: &mut PgConnection,
    contribution: ContributionId,
    payment_intent: &str,
) -> Result<bool, ContributionError> {
    let own: bool = sqlx::query_scalar(
        "SELECT EXISTS (SELECT 1 FROM ledger_entries
                        WHERE provider = 'stripe' AND provider_id = kopilka_payment_key($2)
                          AND contribution_id = $1 AND plan_id IS NULL)",
    )
    .bind(contribution.as_uuid())
    .bind(payment_intent)
    .fetch_one(conn)
    .await?;
    Ok(own)
}

/// A refund that failed after it succeeded (`refund.failed`, or `refund.updated` with
/// status `failed`).
#[derive(Debug, Clone)]
pub struct RefundFailedFact {
    /// `re_…`.
    pub refund_id: String,
    /// The payment it refunded.
    pub payment_intent: String,
    /// How much it refunded (positive).
    pub amount: Money,
    /// The refund's `created`.
    pub refunded_at: i64,
    /// The event's `created` (when it failed).
    pub occurred_at: i64,
    /// The refund's `balance_transaction` (what left the balance).
    pub balance_transaction: Option<String>,
    /// Its `failure_balance_transaction` (what came back).
    pub failure_balance_transaction: Option<String>,
}

/// A failed refund: the money comes back as a `refund_reversal` row (`re_…:failed`). The
/// refund's own row is recorded too if its `refund.created` has not arrived yet, so the
/// ledger ends the same in either order. A contribution that was refunded in full is
/// `paid` again.
///
/// # Errors
/// Storage errors.
pub async fn refund_failed(
    conn: &mut PgConnection,
    fact: &RefundFailedFact,
) -> Result<Applied, ContributionError> {
    if !payment_known(conn, &fact.payment_intent).await? {
        return Ok(Applied::Unknown);
    }
    let contribution = contribution_of_payment(conn, &fact.payment_intent).await?;
    let minor = fact.amount.minor().abs();
    let entry = |kind, provider_id, minor, when| NewEntry {
        kind,
        provider: Provider::Stripe,
        provider_id,
        payment_intent_id: Some(&fact.payment_intent),
        contribution_id: contribution,
        plan_id: None,
        amount: Money::new(minor, fact.amount.currency()),
        occurred_at: at(when),
    };
    let refunded = ledger::record(
        conn,
        &entry(EntryKind::Refund, &fact.refund_id, -minor, fact.refunded_at),
    )
    .await?;
    if refunded && let Some(txn) = &fact.balance_transaction {
        ledger::queue_settlement(conn, &fact.refund_id, txn).await?;
    }
    let reversal = format!("{}:failed", fact.refund_id);
    let reversed = ledger::record(
        conn,
        &entry(
            EntryKind::RefundReversal,
            &reversal,
            minor,
            fact.occurred_at,
        ),
    )
    .await?;
    if reversed && let Some(txn) = &fact.failure_balance_transaction {
        ledger::queue_settlement(conn, &reversal, txn).await?;
    }
    let changed = refunded || reversed;
    if let Some(contribution) = contribution
        && ledger::remaining_of_payment(conn, &fact.payment_intent).await? > 0
        && own_payment(conn, contribution, &fact.payment_intent).await?
    {
        // Not a step of the contribution's state machine (a refund is final there): the
        // refund never happened, so the contribution is what it was.
        sqlx::query(
            "UPDATE contributions SET status = 'paid',
                 stripe_watermark = greatest(stripe_watermark, $2)
             WHERE id = $1 AND status = 'refunded'",
        )
        .bind(contribution.as_uuid())
        .bind(fact.occurred_at)
        .execute(&mut *conn)
        .await?;
    }
    Ok(Applied::from_changed(changed))
}

/// One balance transaction of a dispute: money Stripe moved.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DisputeMovement<'a> {
    /// `txn_…`.
    pub id: &'a str,
    /// Signed: negative when funds were withdrawn, positive when reinstated.
    pub amount: i64,
    /// Stripe's fee on it (positive when charged, negative when given back).
    pub fee: i64,
    /// The balance transaction's currency: the one the funds settled in (the dispute's
    /// own unless Stripe converted it), which `amount` and `fee` are in.
    pub currency: Currency,
}

/// A dispute event, as far as money goes.
#[derive(Debug, Clone)]
pub struct DisputeFact<'a> {
    /// `dp_…`.
    pub dispute_id: String,
    /// The disputed payment.
    pub payment_intent: String,
    /// The disputed amount (positive) and its currency.
    pub amount: Money,
    /// The event says funds were withdrawn (`charge.dispute.funds_withdrawn`).
    pub withdrawn: bool,
    /// The event says funds were reinstated (`charge.dispute.funds_reinstated`).
    pub reinstated: bool,
    /// The dispute's balance transactions (0–2: withdrawal, reinstatement).
    pub movements: Vec<DisputeMovement<'a>>,
    /// The event's `created`.
    pub occurred_at: i64,
}

/// A dispute moves money only when Stripe moves it: the withdrawal (`dp_…`, −amount) on
/// `funds_withdrawn` or when the dispute's balance transactions show it, the reinstatement
/// (`dp_…:reinstated`, +amount) on `funds_reinstated` or when they show it, and Stripe's
/// dispute fee as a `fee` row per balance transaction that charged (or returned) one.
/// An inquiry (`warning_*`) moves nothing. The contribution is `disputed` while the funds
/// are out and `paid` again when they come back. Every event carries the dispute's whole
/// list of balance transactions, so the ledger ends the same in any order.
///
/// # Errors
/// Storage errors.
pub async fn dispute_changed(
    conn: &mut PgConnection,
    fact: &DisputeFact<'_>,
) -> Result<Applied, ContributionError> {
    if !payment_known(conn, &fact.payment_intent).await? {
        return Ok(Applied::Unknown);
    }
    let contribution = contribution_of_payment(conn, &fact.payment_intent).await?;
    let currency = fact.amount.currency();
    let reinstatement_key = format!("{}:reinstated", fact.dispute_id);
    let withdrawal_key = crate::alias::withdrawal_key(conn, &fact.dispute_id).await?;
    let entry = |kind, provider_id, minor| NewEntry {
        kind,
        provider: Provider::Stripe,
        provider_id,
        payment_intent_id: Some(&fact.payment_intent),
        contribution_id: contribution,
        plan_id: None,
        amount: Money::new(minor, currency),
        occurred_at: at(fact.occurred_at),
    };
    let withdrawal = fact.movements.iter().find(|m| m.amount < 0);
    let reinstatement = fact.movements.iter().find(|m| m.amount > 0);
    // The ledger row is in the dispute's currency: a movement Stripe converted moved the
    // dispute's whole amount (its own amount is in the settlement currency).
    let disputed = |m: &DisputeMovement<'_>| {
        if m.currency == currency {
            m.amount.abs()
        } else {
            fact.amount.minor().abs()
        }
    };
    let withdrawn = withdrawal
        .map(disputed)
        .or(fact.withdrawn.then(|| fact.amount.minor().abs()));
    let reinstated = reinstatement
        .map(disputed)
        .or(fact.reinstated.then(|| fact.amount.minor().abs()));
    let mut changed = false;
    if let Some(minor) = withdrawn.filter(|m| *m > 0) {
        changed |=
            ledger::record(conn, &entry(EntryKind::Dispute, &withdrawal_key, -minor)).await?;
        if let Some(m) = withdrawal {
            ledger::record_settlement(
                conn,
                &withdrawal_key,
                m.id,
                Money::new(m.amount, m.currency),
            )
            .await?;
        }
    }
    // Before issue #18 a won dispute's reinstatement was keyed `dp_…:won`; a database that
    // has one must not get a second.
    let legacy_won = format!("{}:won", fact.dispute_id);
    if let Some(minor) = reinstated.filter(|m| *m > 0)
        && !ledger::recorded(conn, Provider::Stripe, &legacy_won).await?
    {
        changed |= ledger::record(
            conn,
            &entry(EntryKind::DisputeReversal, &reinstatement_key, minor),
        )
        .await?;
        if let Some(m) = reinstatement {
            ledger::record_settlement(
                conn,
                &reinstatement_key,
                m.id,
                Money::new(m.amount, m.currency),
            )
            .await?;
        }
    }
    for movement in fact.movements.iter().filter(|m| m.fee != 0) {
        // Stripe's dispute fee, in the currency it was taken in.
        let fee = NewEntry {
            amount: Money::new(-movement.fee, movement.currency),
            ..entry(EntryKind::Fee, movement.id, 0)
        };
        changed |= ledger::record(conn, &fee).await?;
    }
    if let Some(contribution) = contribution {
        // Funds already reinstated (by an event of the same second applied first) keep the
        // gift paid whatever order the withdrawal's event comes in.
        let back = reinstated.is_some()
            || ledger::recorded(conn, Provider::Stripe, &reinstatement_key).await?
            || ledger::recorded(conn, Provider::Stripe, &legacy_won).await?;
        if withdrawn.is_some() && !back {
            move_to(
                conn,
                contribution,
                ContributionStatus::Disputed,
                fact.occurred_at,
            )
            .await?;
        }
        if reinstated.is_some() {
            move_to(
                conn,
                contribution,
                ContributionStatus::Paid,
                fact.occurred_at,
            )
            .await?;
        }
    }
    Ok(Applied::from_changed(changed))
}
