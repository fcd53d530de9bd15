//! `POST /v1/checkout`: validate against the offer, record a pending contribution, create
//! the Stripe Checkout Session, answer `{contribution_id, checkout_url}`. With an
//! `Idempotency-Key`, the same key and body answer the same and create nothing new; the
//! same key with another body is refused; a retry after Stripe was unavailable reuses the
//! contribution (and so Stripe's own idempotency key).

use kopilka_config::Settings;
use kopilka_domain::id::{ContributionId, ReaderId};
use kopilka_domain::{Currency, Email, Interval, Money};
use kopilka_store::PgPool;
use kopilka_stripe::{NewCheckout, StripeClient};
use kopilka_accounts::keys::{Keys, Purpose};
use serde::{Deserialize, Serialize};

use crate::{ContributionError, Refusal};

/// The request as the widget sends it, before validation.
#[derive(Debug, Clone, Deserialize, Serialize)]
pub struct CheckoutInput {
    /// `once`, `month` or `year`.
    pub interval: String,
    /// The amount in minor units.
    pub amount_minor: i64,
    /// ISO 4217, any case.
    pub currency: String,
    /// Prefills Stripe's page and links the contribution to the reader of this address
    /// (created, unverified, when new); the address itself is stored only with the reader.
    #[serde(default)]
    pub email: Option<String>,
    /// Where the reader returns; must be on the configured allowlist.
    #[serde(default)]
    pub return_url: Option<String>,
}

/// A checkout that passed validation.
#[derive(Debug, Clone)]
pub struct ValidCheckout {
    /// How often.
    pub interval: Interval,
    /// How much.
    pub amount: Money,
    /// For Stripe's page and the reader link.
    pub email: Option<Email>,
    /// Where the reader returns.
    pub return_url: url::Url,
}

/// The answer: 201 `{contribution_id, checkout_url}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CheckoutStarted {
    /// Kopilka's id for the contribution.
    pub contribution_id: ContributionId,
    /// Stripe's hosted page.
    pub checkout_url: String,
}

impl CheckoutInput {
    /// Checks the request against the offer.
    ///
    /// # Errors
    /// A [`Refusal`] with a precise code.
    pub fn validate(&self, settings: &Settings) -> Result<ValidCheckout, Refusal> {
        let interval: Interval =
            self.interval
                .parse()
                .map_err(|e: kopilka_domain::IntervalError| {
                    Refusal::new("invalid_interval", e.to_string())
                })?;
        let currency: Currency =
            self.currency
                .parse()
                .map_err(|e: kopilka_domain::CurrencyError| {
                    Refusal::new("unknown_currency", e.to_string())
                })?;
        let offer = settings.offer.currencies.get(&currency).ok_or_else(|| {
            Refusal::new(
                "currency_not_offered",
                format!("contributions in {currency} are not offered"),
            )
        })?;
        let limits = offer.interval(interval);
        let amount = Money::new(self.amount_minor, currency);
        if self.amount_minor < limits.minimum_minor {
            return Err(Refusal::new(
                "amount_below_minimum",
                format!(
                    "the minimum {interval} contribution is {}",
                    Money::new(limits.minimum_minor, currency)
                ),
            ));
        }
        if self.amount_minor > limits.maximum_minor {
            return Err(Refusal::new(
                "amount_above_maximum",
                format!(
                    "the maximum {interval} contribution is {}",
                    Money::new(limits.maximum_minor, currency)
                ),
            ));
        }
        let email = self
            .email
            .as_deref()
            .filter(|e| !e.trim().is_empty())
            .map(Email::parse)
            .transpose()
            .map_err(|e| Refusal::new("invalid_email", e.to_string()))?;
        let return_url = match &self.return_url {
            None => settings.public_url.clone(),
            Some(raw) => {
                allowed_return_url(raw, &settings.offer.return_origins, &settings.public_url)?
            }
        };
        Ok(ValidCheckout {
            interval,
            amount,
            email,
            return_url,
        })
    }

    /// A stable fingerprint of the request, to recognise a replay of the same body: an
    /// HMAC under the accounts secret, because the body may hold an address and a bare hash
    /// of a body this small is reversed by guessing.
    fn fingerprint(&self, keys: &Keys) -> String {
        let canonical = serde_json::to_vec(self).unwrap_or_default();
        keys.digest(Purpose::CheckoutRequest, &canonical)
    }
}

fn allowed_return_url(
    raw: &str,
    origins: &[String],
    public_url: &url::Url,
) -> Result<url::Url, Refusal> {
    let refuse = || {
        Refusal::new(
            "return_url_not_allowed",
            "return_url must be on one of the newsroom's sites",
        )
    };
    let url: url::Url = raw.parse().map_err(|_| refuse())?;
    let origin = url.origin().ascii_serialization();
    let allowed = origins.contains(&origin) || origin == public_url.origin().ascii_serialization();
    if allowed && matches!(url.scheme(), "https" | "http") {
        Ok(url)
    } else {
        Err(refuse())
    }
}

/// `base` with the checkout's outcome in its query, for Stripe's success and cancel URLs.
fn with_outcome(base: &url::Url, contribution: ContributionId, outcome: &str) -> String {
    let mut url = base.clone();
    url.query_pairs_mut()
        .append_pair("checkout", outcome)
        .append_pair("contribution_id", &contribution.to_string());
    // Stripe fills in {CHECKOUT_SESSION_ID}; the braces must stay unescaped.
    let mut text = url.to_string();
    if outcome == "success" {
        text.push_str("&session_id={CHECKOUT_SESSION_ID}");
    }
    text
}

/// Starts a checkout (see the module docs). `signed_in` is the reader of the session that
/// asks, if any: the contribution is theirs unless the body names another address.
///
/// # Errors
/// [`ContributionError`]: refused values, key reuse, Stripe unavailable or refusing, storage.
pub async fn start_checkout(
    pool: &PgPool,
    stripe: Option<&StripeClient>,
    settings: &Settings,
    input: &CheckoutInput,
    idempotency_key: Option<&str>,
    signed_in: Option<ReaderId>,
) -> Result<(u16, serde_json::Value), ContributionError> {
    let mut valid = input
        .validate(settings)
        .map_err(ContributionError::Refused)?;
    let stripe = stripe.ok_or(ContributionError::NoStripe)?;
    let digest = input.fingerprint(&Keys::from_settings(&settings.accounts));

    // Record the contribution (and the key's claim on it) before calling Stripe.
    let mut tx = pool.begin().await?;
    let reader = match (&valid.email, signed_in) {
        (Some(email), _) => Some(kopilka_accounts::reader::find_or_create(&mut tx, email).await?),
        (None, Some(reader)) => {
            valid.email = kopilka_accounts::reader::by_id(&mut tx, reader)
                .await?
                .and_then(|r| r.email);
            Some(reader)
        }
        (None, None) => None,
    };
    let mut contribution = ContributionId::new();
    if let Some(key) = idempotency_key {
        let earlier: Option<(String, uuid::Uuid, Option<i16>, Option<serde_json::Value>)> =
            sqlx::query_as(
                "SELECT request_hash, contribution_id, response_status, response_body
             FROM checkout_requests WHERE idempotency_key = $1 FOR UPDATE",
            )
            .bind(key)
            .fetch_optional(&mut *tx)
            .await?;
        match earlier {
            Some((hash, _, _, _)) if hash != digest => return Err(ContributionError::KeyReused),
            Some((_, _, Some(status), Some(body))) => {
                return Ok((u16::try_from(status).unwrap_or(201), body));
            }
            // A retry after Stripe was unavailable: same contribution, same Stripe key.
            Some((_, id, _, _)) => contribution = ContributionId::from_uuid(id),
            None => {
                insert_contribution(&mut tx, contribution, &valid, reader).await?;
                let claimed = sqlx::query(
                    "INSERT INTO checkout_requests (idempotency_key, request_hash, contribution_id)
                     VALUES ($1, $2, $3) ON CONFLICT DO NOTHING",
                )
                .bind(key)
                .bind(&digest)
                .bind(contribution.as_uuid())
                .execute(&mut *tx)
                .await?;
                if claimed.rows_affected() == 0 {
                    return Err(ContributionError::InProgress);
                }
            }
        }
    } else {
        insert_contribution(&mut tx, contribution, &valid, reader).await?;
    }
    tx.commit().await.map_err(kopilka_store::StoreError::from)?;

    let id = contribution.to_string();
    let product_name = match valid.interval {
        Interval::Once => "Contribution",
        Interval::Month => "Monthly contribution",
        Interval::Year => "Annual contribution",
    };
    let success_url = with_outcome(&valid.return_url, contribution, "success");
    let cancel_url = with_outcome(&valid.return_url, contribution, "cancelled");
    let session = stripe
        .create_checkout_session(&NewCheckout {
            contribution_id: &id,
            interval: valid.interval,
            amount: valid.amount,
            product_name,
            success_url: &success_url,
            cancel_url: Some(&cancel_url),
            customer_email: valid.email.as_ref(),
            expires_at: None,
        })
        .await
        .inspect_err(|err| tracing::warn!(contribution_id = %id, error = %err, "checkout session not created"))?;
    let checkout_url = session.url.clone().unwrap_or_default();
    let body = serde_json::to_value(CheckoutStarted {
        contribution_id: contribution,
        checkout_url,
    })
    .unwrap_or_default();

    let mut tx = pool.begin().await?;
    sqlx::query("UPDATE contributions SET stripe_checkout_session_id = $2 WHERE id = $1")
        .bind(contribution.as_uuid())
        .bind(&session.id)
        .execute(&mut *tx)
        .await?;
    if let Some(key) = idempotency_key {
        sqlx::query("UPDATE checkout_requests SET response_status = 201, response_body = $2 WHERE idempotency_key = $1")
            .bind(key)
            .bind(&body)
            .execute(&mut *tx)
            .await?;
    }
    tx.commit().await.map_err(kopilka_store::StoreError::from)?;
    tracing::info!(contribution_id = %id, interval = %valid.interval, currency = %valid.amount.currency(), "checkout started");
    Ok((201, body))
}

async fn insert_contribution(
    conn: &mut sqlx::PgConnection,
    id: ContributionId,
    valid: &ValidCheckout,
    reader: Option<ReaderId>,
) -> Result<(), ContributionError> {
    sqlx::query(
        "INSERT INTO contributions (id, interval, amount_minor, currency, reader_id)
         VALUES ($1, $2, $3, $4, $5)",
    )
    .bind(id.as_uuid())
    .bind(valid.interval.as_str())
    .bind(valid.amount.minor())
    .bind(valid.amount.currency().stripe_code())
    .bind(reader.map(ReaderId::as_uuid))
    .execute(conn)
    .await?;
    Ok(())
}

/// Deletes up to `limit` checkout requests (an `Idempotency-Key` with the keyed
/// fingerprint of its body and the answer given) made before `before`; returns how many.
/// The contributions stay. Run by the daily retention sweep
/// (`retention.checkout_request_hours`); a retry after that starts a new checkout.
///
/// # Errors
/// Storage errors.
pub async fn forget_old_requests(
    conn: &mut sqlx::PgConnection,
    before: time::OffsetDateTime,
    limit: i64,
) -> Result<u64, ContributionError> {
    let done = sqlx::query(
        "DELETE FROM checkout_requests WHERE idempotency_key IN (
             SELECT idempotency_key FROM checkout_requests WHERE created_at < $1 LIMIT $2)",
    )
    .bind(before)
    .bind(limit)
    .execute(conn)
    .await?;
    Ok(done.rows_affected())
}
