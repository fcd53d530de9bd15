//! `admin reconcile`: page through Stripe (charges, refunds, disputes, subscriptions and
//! events since a day), compare with the ledger, the plans and the inbox, and report each
//! difference. `--apply` first stores and applies every event Stripe has that the inbox
//! lacks — the same path webhooks take — so what a lost delivery left out is repaired.
//! Streams all the way: memory stays flat (the set of payments seen lives in a temporary
//! table).

use futures_util::StreamExt;
use kopilka_store::PgPool;
use kopilka_stripe::{Event, StripeClient};
use serde::Serialize;
use sqlx::PgConnection;

use crate::ReconciliationError;

/// One difference between Stripe and Kopilka.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Drift {
    /// `stripe` or `btcpay`: whose object it is.
    pub provider: &'static str,
    /// `missing_in_ledger`, `amount_mismatch`, `status_mismatch`, `unknown_to_stripe`,
    /// `undelivered_event`, `currency_mismatch`, `missing_fee`, `refund_failure_not_booked`,
    /// `dispute_outcome_mismatch`, `interval_mismatch`, `period_mismatch`,
    /// `cancel_mismatch`, `plan_payment_keyed_by_invoice` or `inquiry_booked_as_dispute`
    /// (see the README's table of drift kinds and [`crate::upgrade`]).
    pub kind: &'static str,
    /// The provider's id concerned (a Stripe object, a BTCPay invoice).
    pub object: String,
    /// What differs.
    pub detail: String,
}

/// `{"checked": N, "drift": [...]}`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Report {
    /// Stripe objects compared.
    pub checked: u64,
    /// Every difference found.
    pub drift: Vec<Drift>,
}

async fn in_inbox(conn: &mut PgConnection, id: &str) -> Result<bool, ReconciliationError> {
    Ok(sqlx::query_scalar(
        "SELECT EXISTS (SELECT 1 FROM provider_events WHERE provider = 'stripe' AND id = $1)",
    )
    .bind(id)
    .fetch_one(conn)
    .await?)
}

async fn ledger_currency(
    conn: &mut PgConnection,
    stripe_id: &str,
) -> Result<Option<String>, ReconciliationError> {
    Ok(sqlx::query_scalar(
        "SELECT currency FROM ledger_entries WHERE provider = 'stripe' AND provider_id = $1",
    )
    .bind(stripe_id)
    .fetch_optional(conn)
    .await?)
}

/// The key of payment intent `pi`'s payment row (its alias's row when it has one).
async fn payment_key(conn: &mut PgConnection, pi: &str) -> Result<String, ReconciliationError> {
    Ok(sqlx::query_scalar("SELECT kopilka_payment_key($1)")
        .bind(pi)
        .fetch_one(conn)
        .await?)
}

async fn seen(conn: &mut PgConnection, stripe_id: &str) -> Result<(), ReconciliationError> {
    sqlx::query("INSERT INTO reconcile_seen VALUES ($1) ON CONFLICT DO NOTHING")
        .bind(stripe_id)
        .execute(conn)
        .await?;
    Ok(())
}

async fn ledger_amount(
    conn: &mut PgConnection,
    stripe_id: &str,
) -> Result<Option<i64>, ReconciliationError> {
    Ok(sqlx::query_scalar(
        "SELECT amount_minor FROM ledger_entries WHERE provider = 'stripe' AND provider_id = $1",
    )
    .bind(stripe_id)
    .fetch_optional(conn)
    .await?)
}

/// A plan as reconcile compares it: status, amount, interval, currency, the period's end
/// (unix seconds) and whether it cancels at the period's end.
type PlanRow = (String, i64, String, String, Option<i64>, bool);

/// Stores and applies every event since `since` that the inbox lacks; returns how many.
/// `refund_on_fraud_warning` is `stripe.refund_on_early_fraud_warning`.
///
/// # Errors
/// Stripe or storage errors.
pub async fn fetch_missing_events(
    pool: &PgPool,
    stripe: &StripeClient,
    since: i64,
    on_item: &(dyn Fn() + Sync),
    refund_on_fraud_warning: bool,
) -> Result<u64, ReconciliationError> {
    let mut conn = pool
        .acquire()
        .await
        .map_err(kopilka_store::StoreError::from)?;
    let mut missing = Vec::new();
    let mut events = stripe.events_since(since);
    while let Some(item) = events.next().await {
        let (id, _) = item?;
        on_item();
        if !in_inbox(&mut conn, &id).await? {
            missing.push(id);
        }
    }
    // Oldest first, as Stripe would have delivered them.
    missing.reverse();
    let mut stored = 0;
    for id in &missing {
        let raw = stripe.raw_event(id).await?;
        let event = Event::parse(raw.as_bytes())
            .map_err(|e| ReconciliationError::Malformed(e.to_string()))?;
        if crate::inbox::receive(pool, &event, None).await? {
            stored += 1;
        }
    }
    for id in &missing {
        // Waiting events stay queued for the worker.
        match crate::apply_event(pool, Some(stripe), id, refund_on_fraud_warning).await {
            Ok(_) | Err(ReconciliationError::NotYet(_)) => {}
            Err(err) => return Err(err),
        }
    }
    Ok(stored)
}

/// Compares Stripe since `since` (unix seconds) with Kopilka; `on_item` ticks once per
/// Stripe object read (for a progress bar).
///
/// # Errors
/// Stripe or storage errors.
pub async fn reconcile(
    pool: &PgPool,
    stripe: &StripeClient,
    since: i64,
    on_item: &(dyn Fn() + Sync),
) -> Result<Report, ReconciliationError> {
    let mut conn = pool
        .acquire()
        .await
        .map_err(kopilka_store::StoreError::from)?;
    let mut report = Report::default();
    // Rows a Kopilka before #18 booked wrong: reported as their own kinds (and repaired by
    // `--apply`), so the passes below do not report them again.
    let legacy = crate::upgrade::findings(&mut conn, stripe, on_item).await?;
    let mut legacy_objects = std::collections::HashSet::new();
    for finding in legacy {
        legacy_objects.insert(finding.drift.object.clone());
        if let Some(crate::upgrade::Repair::AliasPayment {
            payment_intents, ..
        }) = &finding.repair
        {
            legacy_objects.extend(payment_intents.iter().cloned());
        }
        report.drift.push(finding.drift);
    }
    let mut drift = |kind, object: &str, detail: String| {
        report.drift.push(Drift {
            provider: "stripe",
            kind,
            object: object.to_owned(),
            detail,
        });
    };
    sqlx::query("CREATE TEMPORARY TABLE IF NOT EXISTS reconcile_seen (stripe_id text PRIMARY KEY) ON COMMIT PRESERVE ROWS")
        .execute(&mut *conn)
        .await?;
    sqlx::query("TRUNCATE reconcile_seen")
        .execute(&mut *conn)
        .await?;
    let mut checked = 0_u64;

    let mut charges = stripe.charges_since(since);
    while let Some(charge) = charges.next().await {
        let charge = charge?;
        checked += 1;
        on_item();
        let (true, Some(pi)) = (charge.paid, charge.payment_intent.as_deref()) else {
            continue;
        };
        seen(&mut conn, pi).await?;
        let key = payment_key(&mut conn, pi).await?;
        let booked = ledger_amount(&mut conn, &key).await?;
        if booked.is_none() && legacy_objects.contains(pi) {
            // Booked under its invoice: reported as `plan_payment_keyed_by_invoice`.
            continue;
        }
        if booked.is_some()
            && let Some(currency) = ledger_currency(&mut conn, &key).await?
            && currency != charge.currency
        {
            drift(
                "currency_mismatch",
                pi,
                format!(
                    "Stripe charged in {}, the ledger has {currency}",
                    charge.currency
                ),
            );
        }
        // Stripe's fee on the charge is a ledger row keyed by its balance transaction.
        if booked.is_some()
            && let Some(txn) = charge.balance_transaction.as_deref()
            && ledger_amount(&mut conn, txn).await?.is_none()
        {
            drift(
                "missing_fee",
                pi,
                format!(
                    "the fee of charge {} ({txn}) is not in the ledger",
                    charge.id
                ),
            );
        }
        match booked {
            None => drift(
                "missing_in_ledger",
                pi,
                format!(
                    "charge {} of {} {} is not in the ledger",
                    charge.id, charge.amount, charge.currency
                ),
            ),
            Some(amount) if amount != charge.amount => drift(
                "amount_mismatch",
                pi,
                format!("Stripe charged {}, the ledger has {amount}", charge.amount),
            ),
            Some(_) => {}
        }
    }
    let mut refunds = stripe.refunds_since(since);
    while let Some(refund) = refunds.next().await {
        let refund = refund?;
        checked += 1;
        on_item();
        seen(&mut conn, &refund.id).await?;
        if refund.status == "failed" {
            // Booked once it succeeded, it must be reversed now that it failed.
            if ledger_amount(&mut conn, &refund.id).await?.is_some()
                && ledger_amount(&mut conn, &format!("{}:failed", refund.id))
                    .await?
                    .is_none()
            {
                drift(
                    "refund_failure_not_booked",
                    &refund.id,
                    format!(
                        "the refund of {} {} failed at Stripe; the ledger still counts it",
                        refund.amount, refund.currency
                    ),
                );
            }
            continue;
        }
        if refund.status != "succeeded" {
            continue;
        }
        match ledger_amount(&mut conn, &refund.id).await? {
            None => drift(
                "missing_in_ledger",
                &refund.id,
                format!(
                    "refund of {} {} is not in the ledger",
                    refund.amount, refund.currency
                ),
            ),
            Some(amount) if -amount != refund.amount => drift(
                "amount_mismatch",
                &refund.id,
                format!(
                    "Stripe refunded {}, the ledger has {}",
                    refund.amount, -amount
                ),
            ),
            Some(_) => {}
        }
    }
    let mut disputes = stripe.disputes_since(since);
    while let Some(dispute) = disputes.next().await {
        let dispute = dispute?;
        checked += 1;
        on_item();
        seen(&mut conn, &dispute.id).await?;
        // An inquiry escalated to a chargeback after its booking was reversed withdraws
        // under `dp_…:withdrawn`.
        seen(&mut conn, &format!("{}:withdrawn", dispute.id)).await?;
        if legacy_objects.contains(&dispute.id) {
            // Reported as `inquiry_booked_as_dispute`.
            continue;
        }
        // An inquiry (`warning_*`) moves no money, so the ledger has no row of it — or a
        // row a Kopilka before #18 booked and `dp_…:inquiry` gave back.
        let inquiry = dispute.status.starts_with("warning_");
        let reversed = ledger_amount(
            &mut conn,
            &kopilka_contributions::alias::inquiry_key(&dispute.id),
        )
        .await?
        .is_some();
        let booked = ledger_amount(&mut conn, &dispute.id)
            .await?
            .filter(|_| !(inquiry && reversed));
        match booked {
            None if !inquiry => drift(
                "missing_in_ledger",
                &dispute.id,
                format!(
                    "dispute of {} {} is not in the ledger",
                    dispute.amount, dispute.currency
                ),
            ),
            Some(amount) if -amount != dispute.amount => drift(
                "amount_mismatch",
                &dispute.id,
                format!(
                    "Stripe's dispute is of {}, the ledger withdrew {}",
                    dispute.amount, -amount
                ),
            ),
            Some(_) if inquiry => drift(
                "dispute_outcome_mismatch",
                &dispute.id,
                format!(
                    "Stripe says {} (an inquiry moves nothing), the ledger withdrew funds",
                    dispute.status
                ),
            ),
            _ => {}
        }
        if dispute.status == "lost"
            && ledger_amount(&mut conn, &format!("{}:reinstated", dispute.id))
                .await?
                .is_some()
        {
            drift(
                "dispute_outcome_mismatch",
                &dispute.id,
                "Stripe says lost, the ledger reinstated the funds".into(),
            );
        }
        // A Kopilka before #18 keyed a won dispute's reinstatement `dp_…:won`.
        if dispute.status == "won"
            && ledger_amount(&mut conn, &format!("{}:reinstated", dispute.id))
                .await?
                .is_none()
            && ledger_amount(&mut conn, &format!("{}:won", dispute.id))
                .await?
                .is_none()
        {
            drift(
                "missing_in_ledger",
                &dispute.id,
                "the won dispute's reinstatement is not in the ledger".into(),
            );
        }
    }
    let mut subscriptions = stripe.all_subscriptions();
    while let Some(sub) = subscriptions.next().await {
        let sub = sub?;
        checked += 1;
        on_item();
        let plan: Option<PlanRow> = sqlx::query_as(
            "SELECT status, amount_minor, interval, currency,
                    extract(epoch FROM current_period_end)::bigint, cancel_at_period_end
             FROM recurring_plans WHERE stripe_subscription_id = $1",
        )
        .bind(&sub.id)
        .fetch_optional(&mut *conn)
        .await?;
        match plan {
            None if sub.metadata.contains_key("contribution_id") => drift(
                "missing_in_ledger",
                &sub.id,
                format!("{} plan unknown to Kopilka", sub.status),
            ),
            Some((status, _, _, _, _, _)) if status != sub.status => drift(
                "status_mismatch",
                &sub.id,
                format!("Stripe says {}, Kopilka {status}", sub.status),
            ),
            Some((_, amount, interval, currency, period_end, cancel)) => {
                if Some(amount) != sub.amount.map(kopilka_domain::Money::minor) {
                    drift(
                        "amount_mismatch",
                        &sub.id,
                        format!(
                            "Stripe {:?}, Kopilka {amount}",
                            sub.amount.map(kopilka_domain::Money::minor)
                        ),
                    );
                }
                let stripes_currency = sub.amount.map(|m| m.currency().stripe_code());
                if stripes_currency.as_deref().is_some_and(|c| c != currency) {
                    drift(
                        "currency_mismatch",
                        &sub.id,
                        format!("Stripe bills in {stripes_currency:?}, the plan is in {currency}"),
                    );
                }
                let stripes_interval = sub.interval.map(|i| i.as_str().to_owned());
                if stripes_interval.as_deref().is_some_and(|i| i != interval) {
                    drift(
                        "interval_mismatch",
                        &sub.id,
                        format!(
                            "Stripe bills every {stripes_interval:?}, the plan every {interval}"
                        ),
                    );
                }
                if sub.status != "canceled"
                    && period_end.is_some_and(|end| end != sub.current_period_end)
                {
                    drift(
                        "period_mismatch",
                        &sub.id,
                        format!(
                            "Stripe's period ends at {}, the plan's at {period_end:?}",
                            sub.current_period_end
                        ),
                    );
                }
                if cancel != sub.cancel_at_period_end {
                    drift(
                        "cancel_mismatch",
                        &sub.id,
                        format!(
                            "Stripe's cancel_at_period_end is {}, the plan's {cancel}",
                            sub.cancel_at_period_end
                        ),
                    );
                }
            }
            _ => {}
        }
    }
    let mut events = stripe.events_since(since);
    while let Some(event) = events.next().await {
        let (id, kind) = event?;
        checked += 1;
        on_item();
        if !in_inbox(&mut conn, &id).await? {
            drift(
                "undelivered_event",
                &id,
                format!("{kind} never reached the inbox"),
            );
        }
    }
    let unknown: Vec<(String, i64)> = sqlx::query_as(
        "SELECT provider_id, amount_minor FROM ledger_entries
         WHERE provider = 'stripe' AND kind = 'payment' AND occurred_at >= to_timestamp($1)
           AND provider_id LIKE 'pi\\_%'
           AND provider_id NOT IN (SELECT stripe_id FROM reconcile_seen) ORDER BY occurred_at",
    )
    .bind(since)
    .fetch_all(&mut *conn)
    .await?;
    for (id, amount) in unknown {
        drift(
            "unknown_to_stripe",
            &id,
            format!("the ledger has a payment of {amount} Stripe does not list"),
        );
    }
    // Refunds and disputes the ledger has and Stripe does not list.
    let unknown: Vec<(String, String, i64)> = sqlx::query_as(
        "SELECT provider_id, kind, amount_minor FROM ledger_entries
         WHERE provider = 'stripe' AND kind IN ('refund', 'dispute') AND occurred_at >= to_timestamp($1)
           AND provider_id NOT IN (SELECT stripe_id FROM reconcile_seen) ORDER BY occurred_at",
    )
    .bind(since)
    .fetch_all(&mut *conn)
    .await?;
    for (id, kind, amount) in unknown {
        drift(
            "unknown_to_stripe",
            &id,
            format!(
                "the ledger has a {kind} of {} Stripe does not list",
                -amount
            ),
        );
    }
    sqlx::query("DROP TABLE IF EXISTS reconcile_seen")
        .execute(&mut *conn)
        .await?;
    report.checked = checked;
    Ok(report)
}
