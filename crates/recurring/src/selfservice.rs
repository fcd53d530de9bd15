//! A reader's changes to their plan, through Stripe's subscription update (never
//! cancel-and-recreate, which double-charges): a new amount, monthly ↔ annual, cancel now
//! or at the period's end, resume. Stripe's answer is stored at once as a subscription
//! fact; the webhook events that follow find it already applied.

use kopilka_domain::Money;
use kopilka_store::PgPool;
use kopilka_stripe::StripeClient;

use crate::RecurringError;
use crate::facts;
use crate::plan::{Plan, plan_by_id};

/// What the reader asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PlanChange {
    /// A new amount and/or interval (month or year), in the plan's currency.
    Amount {
        /// The new amount.
        amount: Money,
        /// The new interval.
        interval: kopilka_domain::Interval,
    },
    /// End at the period's end.
    CancelAtPeriodEnd,
    /// Take back a cancellation at period end.
    Resume,
    /// End now.
    CancelNow,
}

/// Applies `change` to plan `plan_id` through Stripe and stores Stripe's answer. `change_id`
/// names this change (the idempotency key: a retry does not change twice).
///
/// # Errors
/// [`RecurringError`]: unknown plan, a change that makes no sense, Stripe, storage.
pub async fn change_plan(
    pool: &PgPool,
    stripe: &StripeClient,
    plan_id: uuid::Uuid,
    change: PlanChange,
    change_id: &str,
) -> Result<Plan, RecurringError> {
    let mut conn = pool
        .acquire()
        .await
        .map_err(kopilka_store::StoreError::from)?;
    let plan = plan_by_id(&mut conn, plan_id)
        .await?
        .ok_or(RecurringError::NotFound)?;
    drop(conn);
    if matches!(plan.status.as_str(), "canceled" | "incomplete_expired") {
        return Err(RecurringError::Refused("this plan has ended".into()));
    }
    let sub = &plan.stripe_subscription_id;
    // Stripe's answer is stored under the subscription's lock, held from before the call
    // (see `facts::lock_subscription`).
    let mut tx = pool.begin().await?;
    facts::lock_subscription(&mut tx, sub).await?;
    let answer = match change {
        PlanChange::Amount { amount, interval } => {
            if amount.currency() != plan.amount.currency() {
                return Err(RecurringError::Refused(format!(
                    "the plan is in {}",
                    plan.amount.currency()
                )));
            }
            let current = stripe.retrieve_subscription(sub).await?;
            stripe
                .change_subscription(&current, change_id, amount, interval)
                .await?
        }
        PlanChange::CancelAtPeriodEnd => stripe.cancel_at_period_end(sub, change_id, true).await?,
        PlanChange::Resume => stripe.cancel_at_period_end(sub, change_id, false).await?,
        PlanChange::CancelNow => stripe.cancel_subscription_now(sub).await?,
    };
    let fact = facts::answered_state(
        &answer,
        Some(plan.contribution_id),
        time::OffsetDateTime::now_utc().unix_timestamp(),
    )?;
    facts::subscription_changed(&mut tx, &fact).await?;
    tx.commit().await.map_err(kopilka_store::StoreError::from)?;
    let mut conn = pool
        .acquire()
        .await
        .map_err(kopilka_store::StoreError::from)?;
    if answer.pending_update {
        // Stripe kept the plan as it was: the switch applies when its invoice is paid.
        tracing::info!(plan_id = %plan.id, "plan switch waits for its payment");
        return Err(RecurringError::PaymentIncomplete {
            url: answer.latest_invoice_url,
        });
    }
    tracing::info!(plan_id = %plan.id, change = ?std::mem::discriminant(&change), "plan changed");
    plan_by_id(&mut conn, plan_id)
        .await?
        .ok_or(RecurringError::NotFound)
}

/// A page on Stripe where the reader of plan `plan_id` updates the card it charges (e.g.
/// after a declined renewal); they come back to `return_url`.
///
/// # Errors
/// [`RecurringError`]: unknown plan, Stripe, storage.
pub async fn card_update_page(
    pool: &PgPool,
    stripe: &StripeClient,
    plan_id: uuid::Uuid,
    return_url: &str,
) -> Result<String, RecurringError> {
    let mut conn = pool
        .acquire()
        .await
        .map_err(kopilka_store::StoreError::from)?;
    let plan = plan_by_id(&mut conn, plan_id)
        .await?
        .ok_or(RecurringError::NotFound)?;
    drop(conn);
    let subscription = stripe
        .retrieve_subscription(&plan.stripe_subscription_id)
        .await?;
    let url = stripe
        .card_update_page(&subscription.customer, return_url)
        .await?;
    tracing::info!(plan_id = %plan.id, "card update page opened");
    Ok(url)
}

/// The hosted page of plan `plan_id`'s open invoice, read live from Stripe (a bearer link,
/// never stored); [`RecurringError::NothingToPay`] once it is paid or voided.
///
/// # Errors
/// Stripe and storage errors.
pub async fn open_invoice_page(
    pool: &PgPool,
    stripe: &StripeClient,
    plan_id: uuid::Uuid,
) -> Result<String, RecurringError> {
    let mut conn = pool
        .acquire()
        .await
        .map_err(kopilka_store::StoreError::from)?;
    let plan = plan_by_id(&mut conn, plan_id)
        .await?
        .ok_or(RecurringError::NotFound)?;
    drop(conn);
    let url = stripe
        .open_invoice_page(&plan.stripe_subscription_id)
        .await?
        .ok_or(RecurringError::NothingToPay)?;
    tracing::info!(plan_id = %plan.id, "invoice page opened");
    Ok(url)
}

/// What a one-click plan link did.
#[derive(Debug, Clone)]
pub enum PlanLinkDone {
    /// The plan now ends at its period's end.
    Cancelled(Plan),
    /// Stripe's page where the reader updates the card.
    CardPage(String),
    /// Stripe's hosted page of the plan's open invoice, where the reader pays it or
    /// confirms it (3-D Secure).
    InvoicePage(String),
}

/// Uses an emailed one-click plan link (see `kopilka_accounts::plan_link`): refused when
/// forged or expired ([`RecurringError::LinkInvalid`]), when the plan has ended or its reader
/// was erased ([`RecurringError::LinkRevoked`]), and when it was used before
/// ([`RecurringError::LinkUsed`]); a link is used once, in one atomic insert. When Stripe
/// fails the use is taken back, so the reader can try again.
///
/// # Errors
/// [`RecurringError`]: the refusals above, Stripe, storage.
pub async fn use_plan_link(
    pool: &PgPool,
    stripe: &StripeClient,
    keys: &kopilka_accounts::Keys,
    token: &str,
    now: time::OffsetDateTime,
    return_url: &str,
) -> Result<PlanLinkDone, RecurringError> {
    use kopilka_accounts::plan_link::{self, PlanAction};

    let link = plan_link::verify(keys, token, now).ok_or(RecurringError::LinkInvalid)?;
    let mut conn = pool
        .acquire()
        .await
        .map_err(kopilka_store::StoreError::from)?;
    if !plan_is_live_with_reader(&mut conn, link.plan).await? {
        return Err(RecurringError::LinkRevoked);
    }
    if !plan_link::redeem(&mut conn, &link).await? {
        tracing::info!(plan_id = %link.plan, "a used plan link was refused");
        return Err(RecurringError::LinkUsed);
    }
    drop(conn);
    let done = match link.action {
        PlanAction::Cancel => {
            let change_id = format!(
                "plan-link-cancel-{}-{}",
                link.plan,
                link.expires_at.unix_timestamp()
            );
            change_plan(
                pool,
                stripe,
                link.plan,
                PlanChange::CancelAtPeriodEnd,
                &change_id,
            )
            .await
            .map(PlanLinkDone::Cancelled)
        }
        PlanAction::UpdateCard => card_update_page(pool, stripe, link.plan, return_url)
            .await
            .map(PlanLinkDone::CardPage),
        PlanAction::CompletePayment => open_invoice_page(pool, stripe, link.plan)
            .await
            .map(PlanLinkDone::InvoicePage),
    };
    if done.is_err() {
        let mut conn = pool
            .acquire()
            .await
            .map_err(kopilka_store::StoreError::from)?;
        plan_link::release(&mut conn, &link).await?;
    }
    done
}

/// Whether plan `plan_id` is still running and its contribution still has a reader (not
/// erased): only then does a link about it work.
async fn plan_is_live_with_reader(
    conn: &mut sqlx::PgConnection,
    plan_id: uuid::Uuid,
) -> Result<bool, RecurringError> {
    let Some(plan) = plan_by_id(conn, plan_id).await? else {
        return Ok(false);
    };
    if matches!(plan.status.as_str(), "canceled" | "incomplete_expired") {
        return Ok(false);
    }
    let reader: Option<uuid::Uuid> =
        sqlx::query_scalar("SELECT reader_id FROM contributions WHERE id = $1")
            .bind(plan.contribution_id.as_uuid())
            .fetch_optional(&mut *conn)
            .await?
            .flatten();
    let Some(reader) = reader else {
        return Ok(false);
    };
    let reader =
        kopilka_accounts::reader::by_id(conn, kopilka_domain::id::ReaderId::from_uuid(reader))
            .await?;
    Ok(reader.is_some_and(|r| r.email.is_some()))
}
