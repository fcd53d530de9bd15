//! Facts from Stripe about plans. Idempotent and order-proof: a subscription state older
//! than the one stored never overwrites it; each paid invoice is one ledger row.

use kopilka_contributions::facts::Applied;
use kopilka_contributions::ledger::{self, EntryKind, NewEntry};
use kopilka_domain::id::ContributionId;
use kopilka_domain::{Interval, Money, Provider};
use sqlx::PgConnection;
use time::OffsetDateTime;

use crate::RecurringError;

/// A subscription's state (`customer.subscription.created/updated/deleted`, or Stripe's
/// answer to a change).
#[derive(Debug, Clone)]
pub struct SubscriptionFact {
    /// `sub_…`.
    pub subscription_id: String,
    /// `cus_…`.
    pub customer: Option<String>,
    /// From the subscription's metadata (set at checkout); needed to create the plan.
    pub contribution_id: Option<ContributionId>,
    /// Stripe's status.
    pub status: String,
    /// Per interval.
    pub amount: Money,
    /// Monthly or annual.
    pub interval: Interval,
    /// The end of the current period (unix seconds).
    pub current_period_end: i64,
    /// Whether it ends then.
    pub cancel_at_period_end: bool,
    /// When Stripe reported this state (the event's `created`).
    pub occurred_at: i64,
    /// Whether this is Stripe's answer to Kopilka's own call (not an event): within its
    /// second it follows every event, which Stripe sent before answering.
    pub answered: bool,
}

/// Stores a subscription state unless a newer one is already stored. Within the same second
/// (Stripe's resolution), `incomplete` never replaces a later state, nothing replaces an
/// ended one, and an event never replaces the state of an answer to our own call (the
/// event's caller re-reads the subscription instead: see [`ties_with_an_answer`]).
///
/// # Errors
/// Storage errors.
pub async fn subscription_changed(
    conn: &mut PgConnection,
    fact: &SubscriptionFact,
) -> Result<Applied, RecurringError> {
    if fact.interval == Interval::Once {
        return Ok(Applied::Unknown);
    }
    let end = OffsetDateTime::from_unix_timestamp(fact.current_period_end).ok();
    let contribution = match fact.contribution_id {
        Some(id) => Some(id.as_uuid()),
        None => {
            sqlx::query_scalar(
                "SELECT contribution_id FROM recurring_plans WHERE stripe_subscription_id = $1",
            )
            .bind(&fact.subscription_id)
            .fetch_optional(&mut *conn)
            .await?
        }
    };
    let Some(contribution) = contribution else {
        return Ok(Applied::Unknown);
    };
    let exists: bool =
        sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM contributions WHERE id = $1)")
            .bind(contribution)
            .fetch_one(&mut *conn)
            .await?;
    if !exists {
        return Ok(Applied::Unknown);
    }
    let written = sqlx::query(
        "INSERT INTO recurring_plans AS p
             (id, contribution_id, stripe_subscription_id, stripe_customer_id, status, interval, amount_minor,
              currency, current_period_end, cancel_at_period_end, stripe_watermark, stripe_state_answered,
              provider)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13)
         ON CONFLICT (stripe_subscription_id) DO UPDATE SET
             stripe_customer_id = coalesce(p.stripe_customer_id, EXCLUDED.stripe_customer_id),
             status = EXCLUDED.status, interval = EXCLUDED.interval, amount_minor = EXCLUDED.amount_minor,
             currency = EXCLUDED.currency, current_period_end = EXCLUDED.current_period_end,
             cancel_at_period_end = EXCLUDED.cancel_at_period_end, stripe_watermark = EXCLUDED.stripe_watermark,
             stripe_state_answered = EXCLUDED.stripe_state_answered
         WHERE p.stripe_watermark < EXCLUDED.stripe_watermark
            OR (p.stripe_watermark = EXCLUDED.stripe_watermark
                AND (EXCLUDED.stripe_state_answered OR NOT p.stripe_state_answered)
                AND p.status NOT IN ('canceled', 'incomplete_expired')
                AND EXCLUDED.status <> 'incomplete'
                AND (p.status, p.amount_minor, p.interval, p.current_period_end, p.cancel_at_period_end)
                    IS DISTINCT FROM (EXCLUDED.status, EXCLUDED.amount_minor, EXCLUDED.interval,
                                      EXCLUDED.current_period_end, EXCLUDED.cancel_at_period_end))",
    )
    .bind(uuid::Uuid::now_v7())
    .bind(contribution)
    .bind(&fact.subscription_id)
    .bind(&fact.customer)
    .bind(&fact.status)
    .bind(fact.interval.as_str())
    .bind(fact.amount.minor())
    .bind(fact.amount.currency().stripe_code())
    .bind(end)
    .bind(fact.cancel_at_period_end)
    .bind(fact.occurred_at)
    .bind(fact.answered)
    // A plan is a Stripe subscription.
    .bind(Provider::Stripe.as_str())
    .execute(&mut *conn)
    .await?;
    Ok(Applied::from_changed(written.rows_affected() == 1))
}

/// The state in Stripe's answer (to a change, or a re-read) as a fact at `occurred_at`.
///
/// # Errors
/// [`RecurringError::Stripe`] when the answer has no amount or interval.
pub fn answered_state(
    answer: &kopilka_stripe::Subscription,
    contribution_id: Option<ContributionId>,
    occurred_at: i64,
) -> Result<SubscriptionFact, RecurringError> {
    let (Some(amount), Some(interval)) = (answer.amount, answer.interval) else {
        return Err(RecurringError::Stripe(
            kopilka_stripe::ClientError::Unexpected("a subscription without an amount".into()),
        ));
    };
    Ok(SubscriptionFact {
        subscription_id: answer.id.clone(),
        customer: Some(answer.customer.clone()),
        contribution_id,
        status: answer.status.clone(),
        amount,
        interval,
        current_period_end: answer.current_period_end,
        cancel_at_period_end: answer.cancel_at_period_end,
        occurred_at,
        answered: true,
    })
}

/// Holds, until the caller's transaction ends, the lock that serialises "ask Stripe about
/// subscription `subscription_id`, then store its answer": a reader's change
/// ([`crate::change_plan`]) and the worker's re-read of a same-second event each hold it
/// across both steps. Without it a re-read that asked Stripe before a change and stored
/// after it (at the same second, so the same watermark) would put back the state the change
/// had just replaced.
///
/// # Errors
/// Storage errors.
pub async fn lock_subscription(
    conn: &mut PgConnection,
    subscription_id: &str,
) -> Result<(), RecurringError> {
    sqlx::query("SELECT pg_advisory_xact_lock(hashtextextended('subscription:' || $1, 0))")
        .bind(subscription_id)
        .execute(conn)
        .await?;
    Ok(())
}

/// Whether an event about `subscription_id` created at `created` falls in the same second as
/// a stored state from one of our own calls. Neither can be ordered by time then: the caller
/// re-reads the subscription from Stripe and stores that instead of the event.
///
/// # Errors
/// Storage errors.
pub async fn ties_with_an_answer(
    conn: &mut PgConnection,
    subscription_id: &str,
    created: i64,
) -> Result<bool, RecurringError> {
    Ok(sqlx::query_scalar(
        "SELECT EXISTS (SELECT 1 FROM recurring_plans
                        WHERE stripe_subscription_id = $1 AND stripe_watermark = $2
                          AND stripe_state_answered)",
    )
    .bind(subscription_id)
    .bind(created)
    .fetch_one(&mut *conn)
    .await?)
}

/// Whether another state of `fact`'s subscription is stored from the same second, one that
/// `fact` would replace (two events of one second, such as a cancel and a resume in the
/// Dashboard): time cannot order them, so the caller re-reads Stripe's current state and
/// stores that, which every order of arrival ends in. (`incomplete` and ended states need
/// no re-read: the rules of [`subscription_changed`] already order them.)
///
/// # Errors
/// Storage errors.
pub async fn ties_with_another_state(
    conn: &mut PgConnection,
    fact: &SubscriptionFact,
) -> Result<bool, RecurringError> {
    if fact.status == "incomplete" {
        return Ok(false);
    }
    Ok(sqlx::query_scalar(
        "SELECT EXISTS (SELECT 1 FROM recurring_plans
                        WHERE stripe_subscription_id = $1 AND stripe_watermark = $2
                          AND status NOT IN ('incomplete', 'canceled', 'incomplete_expired')
                          AND (status, amount_minor, interval, current_period_end, cancel_at_period_end)
                              IS DISTINCT FROM ($3, $4, $5, $6, $7))",
    )
    .bind(&fact.subscription_id)
    .bind(fact.occurred_at)
    .bind(&fact.status)
    .bind(fact.amount.minor())
    .bind(fact.interval.as_str())
    .bind(OffsetDateTime::from_unix_timestamp(fact.current_period_end).ok())
    .bind(fact.cancel_at_period_end)
    .fetch_one(&mut *conn)
    .await?)
}

/// Whether `subscription_id` is one of Kopilka's plans.
///
/// # Errors
/// Storage errors.
pub async fn is_plan(
    conn: &mut PgConnection,
    subscription_id: &str,
) -> Result<bool, RecurringError> {
    Ok(sqlx::query_scalar(
        "SELECT EXISTS (SELECT 1 FROM recurring_plans WHERE stripe_subscription_id = $1)",
    )
    .bind(subscription_id)
    .fetch_one(&mut *conn)
    .await?)
}

/// `invoice.paid` for a subscription.
#[derive(Debug, Clone)]
pub struct InvoicePaid {
    /// `in_…`.
    pub invoice_id: String,
    /// `parent.subscription_details.subscription`.
    pub subscription_id: String,
    /// `payments.data[].payment.payment_intent`, only when the invoice arrives with its
    /// payments expanded (a webhook's invoice never has them: `invoice_payment.paid` brings
    /// the payment intent).
    pub payment_intent: Option<String>,
    /// `amount_paid` (0 for an invoice paid by a coupon, a trial or the credit balance).
    pub amount: Money,
    /// When it was paid (the event's `created`).
    pub occurred_at: i64,
    /// The interval it paid for (`month` or `year`, from its lines' periods), when known.
    pub interval: Option<Interval>,
}

fn at(unix: i64) -> OffsetDateTime {
    OffsetDateTime::from_unix_timestamp(unix).unwrap_or(OffsetDateTime::UNIX_EPOCH)
}

/// A paid invoice: remembered as the plan's (so its `invoice_payment.paid` finds the plan),
/// and the plan's first payment marks its contribution paid. The money enters the ledger
/// with the payment ([`invoice_payment_paid`]), keyed by its payment intent, so refunds and
/// disputes (which name the payment intent) land on it; only an invoice whose payments are
/// expanded books it here. A `$0` invoice books nothing. `Unknown` when the plan is not
/// known yet (the invoice arrived before the subscription): the caller retries later.
///
/// # Errors
/// Storage errors.
pub async fn invoice_paid(
    conn: &mut PgConnection,
    fact: &InvoicePaid,
) -> Result<Applied, RecurringError> {
    let plan: Option<(uuid::Uuid, uuid::Uuid)> = sqlx::query_as(
        "SELECT id, contribution_id FROM recurring_plans WHERE stripe_subscription_id = $1",
    )
    .bind(&fact.subscription_id)
    .fetch_optional(&mut *conn)
    .await?;
    let Some((plan, contribution)) = plan else {
        return Ok(Applied::Unknown);
    };
    let contribution = ContributionId::from_uuid(contribution);
    let remembered = sqlx::query(
        "INSERT INTO plan_invoices (invoice_id, plan_id, paid_at, interval, payment_intent)
         VALUES ($1, $2, $3, $4, $5)
         ON CONFLICT (invoice_id) DO NOTHING",
    )
    .bind(&fact.invoice_id)
    .bind(plan)
    .bind(at(fact.occurred_at))
    .bind(fact.interval.map(Interval::as_str))
    .bind(fact.payment_intent.as_deref())
    .execute(&mut *conn)
    .await?
    .rows_affected()
        == 1;
    let mut new = false;
    if let Some(pi) = fact.payment_intent.as_deref()
        && fact.amount.minor() > 0
    {
        new = ledger::record(
            conn,
            &NewEntry {
                kind: EntryKind::Payment,
                provider: Provider::Stripe,
                provider_id: pi,
                payment_intent_id: Some(pi),
                contribution_id: Some(contribution),
                plan_id: Some(plan),
                amount: fact.amount,
                occurred_at: at(fact.occurred_at),
            },
        )
        .await?;
    }
    kopilka_contributions::facts::payment_landed(conn, contribution, fact.occurred_at).await?;
    Ok(Applied::from_changed(new || remembered))
}

/// `invoice_payment.paid`: one payment of an invoice.
#[derive(Debug, Clone)]
pub struct InvoicePaymentPaid {
    /// `inpay_…`.
    pub invoice_payment_id: String,
    /// The invoice it pays (`in_…`).
    pub invoice_id: String,
    /// `payment.payment_intent` (or, for another kind of payment, its charge or this
    /// payment's own id): the ledger row's key.
    pub payment: String,
    /// `amount_paid`.
    pub amount: Money,
    /// The event's `created`.
    pub occurred_at: i64,
}

/// What [`invoice_payment_paid`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PaymentOfInvoice {
    /// The invoice is a known plan's: applied (or found applied).
    Applied(Applied),
    /// No plan invoice of that id is known (yet, or at all: another product's).
    UnknownInvoice,
}

/// A plan invoice's payment enters the ledger under its payment intent, tied to the plan
/// and its contribution (once: the row is unique on the payment intent). A `$0` payment
/// books nothing. An invoice a Kopilka before #18 booked under its own id (on
/// `invoice.paid`) is not booked again: its row becomes the payment's (an alias, see
/// [`kopilka_contributions::alias`]) and the invoice is remembered as the plan's.
///
/// # Errors
/// Storage errors.
pub async fn invoice_payment_paid(
    conn: &mut PgConnection,
    fact: &InvoicePaymentPaid,
) -> Result<PaymentOfInvoice, RecurringError> {
    if fact.amount.minor() > 0
        && let Some(applied) =
            payment_booked_by_invoice(conn, &fact.invoice_id, &fact.payment).await?
    {
        return Ok(PaymentOfInvoice::Applied(applied));
    }
    let plan: Option<(uuid::Uuid, uuid::Uuid)> = sqlx::query_as(
        "SELECT p.id, p.contribution_id FROM plan_invoices i
         JOIN recurring_plans p ON p.id = i.plan_id WHERE i.invoice_id = $1",
    )
    .bind(&fact.invoice_id)
    .fetch_optional(&mut *conn)
    .await?;
    let Some((plan, contribution)) = plan else {
        return Ok(PaymentOfInvoice::UnknownInvoice);
    };
    if fact.amount.minor() <= 0 {
        return Ok(PaymentOfInvoice::Applied(Applied::Unchanged));
    }
    // Which payment paid the invoice (for MRR: the interval it paid for).
    sqlx::query(
        "UPDATE plan_invoices SET payment_intent = $2 WHERE invoice_id = $1 AND payment_intent IS NULL",
    )
    .bind(&fact.invoice_id)
    .bind(&fact.payment)
    .execute(&mut *conn)
    .await?;
    let new = ledger::record(
        conn,
        &NewEntry {
            kind: EntryKind::Payment,
            provider: Provider::Stripe,
            provider_id: &fact.payment,
            payment_intent_id: Some(&fact.payment),
            contribution_id: Some(ContributionId::from_uuid(contribution)),
            plan_id: Some(plan),
            amount: fact.amount,
            occurred_at: at(fact.occurred_at),
        },
    )
    .await?;
    Ok(PaymentOfInvoice::Applied(Applied::from_changed(new)))
}

/// When a Kopilka before #18 booked invoice `invoice_id` under its own id, makes that row
/// the payment of `payment_intent` and remembers the invoice as its plan's (with the
/// payment intent, for MRR), once. `None` when no row is keyed by the invoice.
///
/// # Errors
/// Storage errors.
pub async fn payment_booked_by_invoice(
    conn: &mut PgConnection,
    invoice_id: &str,
    payment_intent: &str,
) -> Result<Option<Applied>, RecurringError> {
    use kopilka_contributions::alias::{self, InvoicePayment};
    let InvoicePayment::Aliased { new, plan_id } =
        alias::alias_invoice_payment(conn, invoice_id, payment_intent).await?
    else {
        return Ok(None);
    };
    let mut remembered = false;
    if let Some(plan) = plan_id {
        remembered = sqlx::query(
            "INSERT INTO plan_invoices (invoice_id, plan_id, paid_at, payment_intent)
             SELECT $1, $2, occurred_at, $3 FROM ledger_entries
             WHERE provider = 'stripe' AND provider_id = $1
             ON CONFLICT (invoice_id) DO NOTHING",
        )
        .bind(invoice_id)
        .bind(plan)
        .bind(payment_intent)
        .execute(&mut *conn)
        .await?
        .rows_affected()
            == 1;
        sqlx::query(
            "UPDATE plan_invoices SET payment_intent = $2 WHERE invoice_id = $1 AND payment_intent IS NULL",
        )
        .bind(invoice_id)
        .bind(payment_intent)
        .execute(&mut *conn)
        .await?;
    }
    Ok(Some(Applied::from_changed(new || remembered)))
}

/// Whether `status` counts as a live plan (for the goal and supporter status).
#[must_use]
pub fn is_live(status: &str) -> bool {
    matches!(status, "active" | "past_due" | "trialing")
}

/// The kind of the job that emails a failed renewal payment (payload `plan_id`,
/// `invoice_id`, `attempt`, `next_attempt`, `amount_minor`, `currency`).
pub const PAYMENT_FAILED_JOB: &str = "mail.payment_failed";

/// `invoice.payment_failed` for a subscription.
#[derive(Debug, Clone)]
pub struct InvoiceFailed {
    /// `in_…`.
    pub invoice_id: String,
    /// `parent.subscription_details.subscription`.
    pub subscription_id: String,
    /// `attempt_count`: this failure's attempt.
    pub attempt: i64,
    /// `next_payment_attempt` (unix seconds); `None` when Stripe will not try again.
    pub next_attempt: Option<i64>,
    /// `amount_due`.
    pub amount: Money,
}

/// A failed renewal: queues its email once per attempt, in the event's transaction.
/// `Unknown` when the plan is not known yet (the caller retries later).
///
/// # Errors
/// Storage errors.
pub async fn invoice_failed(
    conn: &mut PgConnection,
    fact: &InvoiceFailed,
) -> Result<Applied, RecurringError> {
    let plan: Option<uuid::Uuid> =
        sqlx::query_scalar("SELECT id FROM recurring_plans WHERE stripe_subscription_id = $1")
            .bind(&fact.subscription_id)
            .fetch_optional(&mut *conn)
            .await?;
    let Some(plan) = plan else {
        return Ok(Applied::Unknown);
    };
    let job = kopilka_queue::NewJob::new(
        PAYMENT_FAILED_JOB,
        serde_json::json!({
            "plan_id": plan,
            "invoice_id": fact.invoice_id,
            "attempt": fact.attempt,
            "next_attempt": fact.next_attempt,
            "amount_minor": fact.amount.minor(),
            "currency": fact.amount.currency().stripe_code(),
        }),
    )
    .attempts(kopilka_queue::PATIENT_ATTEMPTS)
    .dedup(format!(
        "mail:payment_failed:{}:{}",
        fact.invoice_id, fact.attempt
    ));
    let queued = kopilka_queue::enqueue(conn, &job).await?.is_some();
    Ok(Applied::from_changed(queued))
}

/// The kind of the job that emails a renewal payment waiting for 3-D Secure (payload
/// `plan_id`, `invoice_id`, `amount_minor`, `currency`).
pub const PAYMENT_ACTION_JOB: &str = "mail.payment_action_required";

/// `invoice.payment_action_required` for a plan's renewal (`billing_reason =
/// subscription_cycle`).
#[derive(Debug, Clone)]
pub struct InvoiceActionRequired {
    /// `in_…`.
    pub invoice_id: String,
    /// `parent.subscription_details.subscription`.
    pub subscription_id: String,
    /// `amount_due`.
    pub amount: Money,
}

/// A renewal whose bank asks the donor to authenticate: queues its email once per invoice,
/// in the event's transaction. `Unknown` when the plan is not known yet.
///
/// # Errors
/// Storage errors.
pub async fn invoice_action_required(
    conn: &mut PgConnection,
    fact: &InvoiceActionRequired,
) -> Result<Applied, RecurringError> {
    let plan: Option<uuid::Uuid> =
        sqlx::query_scalar("SELECT id FROM recurring_plans WHERE stripe_subscription_id = $1")
            .bind(&fact.subscription_id)
            .fetch_optional(&mut *conn)
            .await?;
    let Some(plan) = plan else {
        return Ok(Applied::Unknown);
    };
    let job = kopilka_queue::NewJob::new(
        PAYMENT_ACTION_JOB,
        serde_json::json!({
            "plan_id": plan,
            "invoice_id": fact.invoice_id,
            "amount_minor": fact.amount.minor(),
            "currency": fact.amount.currency().stripe_code(),
        }),
    )
    .attempts(kopilka_queue::PATIENT_ATTEMPTS)
    .dedup(format!("mail:payment_action_required:{}", fact.invoice_id));
    let queued = kopilka_queue::enqueue(conn, &job).await?.is_some();
    Ok(Applied::from_changed(queued))
}

/// The kind of the job that sends an annual plan's renewal notice (payload `plan_id`,
/// `renews_at` unix seconds).
pub const RENEWAL_NOTICE_JOB: &str = "mail.renewal_notice";

/// Queues the renewal notice of every live annual plan that renews within `until` and has
/// none for this period yet (`SKIP LOCKED`: safe with several workers); returns how many.
///
/// # Errors
/// Storage errors.
pub async fn queue_renewal_notices(
    conn: &mut PgConnection,
    now: OffsetDateTime,
    until: OffsetDateTime,
) -> Result<usize, RecurringError> {
    let due: Vec<(uuid::Uuid, OffsetDateTime)> = sqlx::query_as(
        "UPDATE recurring_plans SET renewal_notice_for = current_period_end WHERE id IN (
             SELECT id FROM recurring_plans
             WHERE interval = 'year' AND status IN ('active', 'trialing')
               AND NOT cancel_at_period_end
               AND current_period_end > $1 AND current_period_end <= $2
               AND renewal_notice_for IS DISTINCT FROM current_period_end
             FOR UPDATE SKIP LOCKED)
         RETURNING id, current_period_end",
    )
    .bind(now)
    .bind(until)
    .fetch_all(&mut *conn)
    .await?;
    for (plan, renews_at) in &due {
        let job = kopilka_queue::NewJob::new(
            RENEWAL_NOTICE_JOB,
            serde_json::json!({"plan_id": plan, "renews_at": renews_at.unix_timestamp()}),
        )
        .attempts(kopilka_queue::PATIENT_ATTEMPTS)
        .dedup(format!(
            "mail:renewal:{plan}:{}",
            renews_at.unix_timestamp()
        ));
        // Due when the notice period starts, for whichever worker.
        let job = kopilka_queue::NewJob {
            run_at: Some(*renews_at - (until - now)),
            ..job
        };
        kopilka_queue::enqueue(&mut *conn, &job).await?;
    }
    Ok(due.len())
}
