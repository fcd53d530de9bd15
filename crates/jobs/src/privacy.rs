//! A reader's GDPR export and erasure across every crate, the one use-case behind
//! `DELETE /v1/me`, `GET /v1/me/export` and `kopilka admin reader export|erase`. It lives
//! here because only this layer may call Stripe and touch every table: accounts,
//! contributions, plans, stored events and email sends.
//!
//! Erasure ends everything, then forgets. First, at Stripe: each open checkout session of
//! the reader is expired, each live plan is cancelled at once (not at the period's end) and
//! each of their customers is deleted. If Stripe fails, the erasure fails (nothing is
//! forgotten yet) and a retry is safe: what Stripe already ended counts as ended. Then, in
//! one transaction: the ledger keeps every contribution with no reader (`reader_id` NULL,
//! `reader_erased_at`), stored events lose their reader, the customers and subscriptions are
//! remembered as erased (no later event links or creates a reader for them), checkout
//! fingerprints, email sends, sessions, links, credentials, reminders, banner state, the
//! address's throttle and the reader row go, and the supporter tokens are revoked.

use kopilka_accounts::Keys;
use kopilka_domain::id::ReaderId;
use kopilka_store::PgPool;
use kopilka_stripe::{ClientError, StripeClient};
use serde::Serialize;
use sqlx::PgConnection;
use time::OffsetDateTime;

pub use crate::sends::SendExport;

/// Why an erasure or export did not happen.
#[derive(Debug, thiserror::Error)]
pub enum PrivacyError {
    /// No such reader (or already erased).
    #[error("no such reader")]
    NotFound,
    /// The reader has objects at Stripe but no Stripe client is configured: nothing was
    /// forgotten.
    #[error("Stripe is not configured, so the reader's plans cannot be ended")]
    NoStripe,
    /// Stripe refused or could not be reached: nothing was forgotten; retry.
    #[error("Stripe could not end the reader's plans and customers; nothing was erased, retry")]
    Stripe(#[source] ClientError),
    /// Storage or another crate's error.
    #[error("{0}")]
    Storage(String),
}

impl From<kopilka_accounts::AccountError> for PrivacyError {
    fn from(err: kopilka_accounts::AccountError) -> Self {
        match err {
            kopilka_accounts::AccountError::NotFound => Self::NotFound,
            other => Self::Storage(other.to_string()),
        }
    }
}

impl From<kopilka_recurring::RecurringError> for PrivacyError {
    fn from(err: kopilka_recurring::RecurringError) -> Self {
        match err {
            kopilka_recurring::RecurringError::Account(
                kopilka_accounts::AccountError::NotFound,
            ) => Self::NotFound,
            other => Self::Storage(other.to_string()),
        }
    }
}

macro_rules! storage_from {
    ($($error:ty),*) => {$(
        impl From<$error> for PrivacyError {
            fn from(err: $error) -> Self {
                Self::Storage(err.to_string())
            }
        }
    )*};
}
storage_from!(
    kopilka_contributions::ContributionError,
    kopilka_reconciliation::ReconciliationError,
    kopilka_store::StoreError,
    sqlx::Error
);

/// What Stripe still holds after an erasure, and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Retained {
    /// The kind of Stripe object (`charge`, `invoice`, `checkout.session`).
    pub object: &'static str,
    /// What it keeps, why, and how to minimise it.
    pub why: &'static str,
}

/// What an erasure did (the answer of `DELETE /v1/me` and of `admin reader erase`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Erasure {
    /// Always `true`: the reader is gone.
    pub erased: bool,
    /// Live plans now cancelled at Stripe.
    pub plans_cancelled: usize,
    /// Stripe customers now deleted.
    pub customers_deleted: usize,
    /// Open checkout sessions now expired.
    pub checkouts_expired: usize,
    /// What Stripe still holds and why.
    pub stripe_retains: Vec<Retained>,
}

const CHARGE_RETAINED: Retained = Retained {
    object: "charge",
    why: "Each one-off payment's charge, payment intent and Checkout Session keep the \
          billing details given at checkout (email, name, card brand, last four digits, \
          country) as Stripe's financial record; deleting the customer does not remove them. \
          Minimise: collect no billing address, phone or name at Checkout (Kopilka asks for \
          none), and redact them with a Stripe redaction job (Dashboard or API, \
          docs.stripe.com/privacy/redaction; payments become redactable after 90 days).",
};

const INVOICE_RETAINED: Retained = Retained {
    object: "invoice",
    why: "Invoices of cancelled plans keep the customer's email and name as they were when \
          each invoice was finalised, and their charges keep billing details, as Stripe's \
          financial record. Minimise: keep invoice emails and the customer portal's \
          invoice history off unless needed, and redact them with a Stripe redaction job \
          rooted at the (deleted) customer (docs.stripe.com/privacy/redaction).",
};

const SESSION_RETAINED: Retained = Retained {
    object: "checkout.session",
    why: "An expired or completed Checkout Session keeps the email typed into it \
          (customer_details). Minimise: redact it with a Stripe redaction job \
          (docs.stripe.com/privacy/redaction).",
};

/// What is at Stripe for `reader`, to end before anything is forgotten.
struct AtStripe {
    plans: Vec<String>,
    customers: Vec<String>,
    checkouts: Vec<String>,
    subscriptions: Vec<String>,
    one_off_payments: i64,
}

async fn at_stripe(conn: &mut PgConnection, reader: ReaderId) -> Result<AtStripe, PrivacyError> {
    // Fails with NotFound for an unknown (or already erased) reader.
    kopilka_accounts::reader::by_id(&mut *conn, reader)
        .await?
        .ok_or(PrivacyError::NotFound)?;
    let trail = kopilka_contributions::privacy::stripe_trail(&mut *conn, reader).await?;
    let plans: Vec<String> = kopilka_recurring::privacy::plans_to_end(&mut *conn, reader)
        .await?
        .into_iter()
        .map(|p| p.stripe_subscription_id)
        .collect();
    let mut customers = trail.customers;
    customers.extend(kopilka_recurring::privacy::plan_customers(&mut *conn, reader).await?);
    customers.sort();
    customers.dedup();
    Ok(AtStripe {
        plans,
        customers,
        checkouts: trail.open_checkouts,
        subscriptions: trail.subscriptions,
        one_off_payments: trail.one_off_payments,
    })
}

/// Stripe refused because the object is no longer there or no longer open: ended already.
fn already_ended(err: &ClientError) -> bool {
    matches!(err, ClientError::Refused { status: 400 | 404, kind, .. } if kind == "invalid_request_error")
}

/// Erases `reader` (see the module docs). `token_lifetime` is how long a supporter token
/// lives (`paywall.token_hours`): the revocation lasts that long.
///
/// # Errors
/// [`PrivacyError::NotFound`] for an unknown reader; [`PrivacyError::NoStripe`] or
/// [`PrivacyError::Stripe`] when Stripe could not end everything (nothing was forgotten);
/// storage errors.
pub async fn erase_reader(
    pool: &PgPool,
    stripe: Option<&StripeClient>,
    keys: &Keys,
    reader: ReaderId,
    now: OffsetDateTime,
    token_lifetime: time::Duration,
) -> Result<Erasure, PrivacyError> {
    let mut conn = pool
        .acquire()
        .await
        .map_err(kopilka_store::StoreError::from)?;
    let mut found = at_stripe(&mut conn, reader).await?;
    drop(conn);

    // 1. End everything at Stripe: no new payment can start, no plan charges again, and no
    // customer can be charged.
    let needs_stripe =
        !(found.plans.is_empty() && found.customers.is_empty() && found.checkouts.is_empty());
    let stripe = match (needs_stripe, stripe) {
        (false, _) => None,
        (true, Some(stripe)) => Some(stripe),
        (true, None) => return Err(PrivacyError::NoStripe),
    };
    let mut checkouts_expired = 0;
    if let Some(stripe) = stripe {
        for session in &found.checkouts {
            match stripe.expire_checkout_session(session).await {
                Ok(_) => checkouts_expired += 1,
                Err(err) if already_ended(&err) => {
                    // Paid meanwhile: its plan and customer end below like the others.
                    let paid = stripe
                        .retrieve_checkout_session(session)
                        .await
                        .map_err(PrivacyError::Stripe)?;
                    found.plans.extend(paid.subscription.clone());
                    found.subscriptions.extend(paid.subscription);
                    found.customers.extend(paid.customer);
                }
                Err(err) => return Err(PrivacyError::Stripe(err)),
            }
        }
        found.plans.sort();
        found.plans.dedup();
        found.customers.sort();
        found.customers.dedup();
        for plan in &found.plans {
            match stripe.cancel_subscription_now(plan).await {
                Ok(_) => {}
                Err(err) if already_ended(&err) => {}
                Err(err) => return Err(PrivacyError::Stripe(err)),
            }
        }
        for customer in &found.customers {
            // `false`: Stripe no longer knows it (deleted by an earlier attempt).
            stripe
                .delete_customer(customer)
                .await
                .map_err(PrivacyError::Stripe)?;
        }
    }

    // 2. Forget, in one transaction.
    let mut tx = pool
        .begin()
        .await
        .map_err(kopilka_store::StoreError::from)?;
    let email = kopilka_accounts::privacy::lock_for_erasure(&mut tx, reader).await?;
    let mut stripe_ids = found.customers.clone();
    stripe_ids.extend(found.subscriptions.iter().cloned());
    stripe_ids.extend(found.plans.iter().cloned());
    kopilka_reconciliation::privacy::forget_reader(&mut tx, reader, &stripe_ids, now).await?;
    kopilka_contributions::privacy::unlink_reader(&mut tx, reader, now).await?;
    crate::sends::forget_reader(&mut tx, reader).await?;
    kopilka_accounts::privacy::forget(
        &mut tx,
        keys,
        reader,
        email.as_ref(),
        now,
        now + token_lifetime,
    )
    .await?;
    tx.commit().await.map_err(kopilka_store::StoreError::from)?;

    let mut stripe_retains = Vec::new();
    if found.one_off_payments > 0 {
        stripe_retains.push(CHARGE_RETAINED);
    }
    if !found.subscriptions.is_empty() {
        stripe_retains.push(INVOICE_RETAINED);
    }
    if checkouts_expired > 0 {
        stripe_retains.push(SESSION_RETAINED);
    }
    Ok(Erasure {
        erased: true,
        plans_cancelled: found.plans.len(),
        customers_deleted: found.customers.len(),
        checkouts_expired,
        stripe_retains,
    })
}

/// Everything Kopilka holds about a reader (GDPR access and portability).
#[derive(Debug, Clone, Serialize)]
pub struct ReaderExport {
    /// The account, contributions and plans.
    #[serde(flatten)]
    pub held: kopilka_recurring::privacy::ReaderExport,
    /// The stored Stripe events linked to them or about their Stripe objects (what Kopilka
    /// kept of each: its projection).
    pub stripe_events: Vec<kopilka_reconciliation::privacy::EventExport>,
    /// Every email sent (or to be sent) to them.
    pub email_sends: Vec<SendExport>,
    /// The supporter passes they hold or bought (a bought code's holder is not said).
    pub passes: Vec<kopilka_contributions::passes::PassExport>,
}

/// The export of `reader`: every row linked to them.
///
/// # Errors
/// [`PrivacyError::NotFound`]; storage errors.
pub async fn export_reader(
    conn: &mut PgConnection,
    reader: ReaderId,
) -> Result<ReaderExport, PrivacyError> {
    let held = kopilka_recurring::privacy::export(&mut *conn, reader).await?;
    let stripe_ids = kopilka_contributions::privacy::stripe_ids_of(&mut *conn, reader).await?;
    let stripe_events =
        kopilka_reconciliation::privacy::events_of(&mut *conn, reader, &stripe_ids).await?;
    let passes = kopilka_contributions::passes::of_reader(&mut *conn, reader).await?;
    let email_sends = crate::sends::of_reader(conn, reader).await?;
    Ok(ReaderExport {
        held,
        stripe_events,
        email_sends,
        passes,
    })
}
