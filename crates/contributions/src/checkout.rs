//! `POST /v1/checkout`: validate against the offer, record a pending contribution, create
//! the Stripe Checkout Session, answer `{contribution_id, checkout_url}`. With an
//! `Idempotency-Key`, the same key and body answer the same and create nothing new; the
//! same key with another body is refused; a retry after Stripe was unavailable reuses the
//! contribution (and so Stripe's own idempotency key).
//!
//! Two rails: `card` (Stripe Checkout, the default) and `crypto` (a BTCPay Server invoice in
//! the contribution's fiat currency, one-off only). The crypto rail sends BTCPay Kopilka's
//! id and the amount; the reader's address only when they typed one, which on this rail
//! asks for an emailed receipt.

use kopilka_accounts::keys::{Keys, Purpose};
use kopilka_btcpay::{BtcpayClient, NewInvoice};
use kopilka_config::Settings;
use kopilka_domain::id::{ContributionId, ReaderId};
use kopilka_domain::{Currency, Email, Interval, Money};
use kopilka_store::PgPool;
use kopilka_stripe::{NewCheckout, StripeClient};
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
    /// Prefills Stripe's page (anonymous checkouts only; a signed-in reader's own address
    /// is used instead). Nothing is stored or sent to it until the payment completes: the
    /// address the payer gave on Stripe's page then names the reader.
    #[serde(default)]
    pub email: Option<String>,
    /// Where the reader returns; must be on the configured allowlist.
    #[serde(default)]
    pub return_url: Option<String>,
    /// `card` (the default) or `crypto`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rail: Option<String>,
    /// Crypto rail: buy supporter passes of this many months (one of `passes.months`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pass_months: Option<u8>,
    /// With `pass_months`: buy this many passes as codes to give away (1 to
    /// `passes.max_codes`). Without it the pass is the buyer's, or a code when the buyer
    /// gives no address and is not signed in.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pass_codes: Option<u8>,
    /// The ask experiment and variant the reader was served (resolved by the caller from its
    /// visitor cookie): recorded on a new contribution. Not part of the request's
    /// fingerprint, so a retry after the experiment stopped is still the same request.
    #[serde(skip)]
    pub experiment: Option<ExperimentTag>,
}

/// A contribution's attribution to an ask experiment's variant.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExperimentTag {
    /// The experiment's id.
    pub id: uuid::Uuid,
    /// Its name.
    pub name: String,
    /// The variant's key, `""` for the holdback.
    pub variant: String,
}

/// How the reader pays.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rail {
    /// By card (and the wallets Stripe Checkout offers), through Stripe.
    Card,
    /// In crypto, through the newsroom's BTCPay Server (one-off only).
    Crypto,
}

impl Rail {
    /// `card` or `crypto`.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Card => "card",
            Self::Crypto => "crypto",
        }
    }

    /// The provider that takes payments on this rail.
    #[must_use]
    pub fn provider(self) -> kopilka_domain::Provider {
        match self {
            Self::Card => kopilka_domain::Provider::Stripe,
            Self::Crypto => kopilka_domain::Provider::Btcpay,
        }
    }
}

/// The payment providers a checkout may use, as configured.
#[derive(Debug, Clone, Copy, Default)]
pub struct Providers<'a> {
    /// Stripe, for the card rail.
    pub stripe: Option<&'a StripeClient>,
    /// BTCPay Server, for the crypto rail.
    pub btcpay: Option<&'a BtcpayClient>,
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
    /// How the reader pays.
    pub rail: Rail,
    /// The passes it buys, if any (`as_codes` is settled when the buyer is known).
    pub pass: Option<crate::passes::PassOrder>,
    /// The experiment's variant it came from, if any.
    pub experiment: Option<ExperimentTag>,
}

/// The answer: 201 `{contribution_id, checkout_url}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CheckoutStarted {
    /// Kopilka's id for the contribution.
    pub contribution_id: ContributionId,
    /// The provider's hosted page.
    pub checkout_url: String,
    /// The pass codes bought, in the clear: shown once, here (stored only as keyed
    /// digests); they work once the payment settles.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pass_codes: Option<Vec<String>>,
}

impl CheckoutInput {
    /// Checks the request against the offer.
    ///
    /// # Errors
    /// A [`Refusal`] with a precise code.
    pub fn validate(&self, settings: &Settings) -> Result<ValidCheckout, Refusal> {
        let rail = match self.rail.as_deref() {
            None | Some("card") => Rail::Card,
            Some("crypto") => Rail::Crypto,
            Some(_) => {
                return Err(Refusal::new("invalid_rail", "rail must be card or crypto"));
            }
        };
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
        let pass = self.pass_order(settings, rail, interval)?;
        let (minimum, maximum, what) = match pass {
            // A pass costs at least its months of the monthly minimum, each.
            Some(order) => {
                let times = i64::from(order.months) * i64::from(order.count);
                (
                    offer.month.minimum_minor.saturating_mul(times),
                    offer.month.maximum_minor.saturating_mul(times),
                    format!("{} × {}-month pass", order.count, order.months),
                )
            }
            None => {
                let limits = offer.interval(interval);
                (
                    limits.minimum_minor,
                    limits.maximum_minor,
                    format!("{interval} contribution"),
                )
            }
        };
        let amount = Money::new(self.amount_minor, currency);
        if self.amount_minor < minimum {
            return Err(Refusal::new(
                "amount_below_minimum",
                format!("the minimum {what} is {}", Money::new(minimum, currency)),
            ));
        }
        if self.amount_minor > maximum {
            return Err(Refusal::new(
                "amount_above_maximum",
                format!("the maximum {what} is {}", Money::new(maximum, currency)),
            ));
        }
        // The offer's limits were checked against Stripe's rules at start-up; this catches
        // what they cannot: an amount that is not a multiple Stripe takes (ISK, UGX: whole
        // units; BHD, JOD, KWD, OMR, TND: last digit 0).
        if rail == Rail::Crypto && interval != Interval::Once {
            return Err(Refusal::new(
                "interval_not_on_rail",
                "crypto contributions are one-off: crypto has no payments that repeat by themselves",
            ));
        }
        if rail == Rail::Card {
            amount
                .check_chargeable()
                .map_err(|refusal| Refusal::new(refusal.code(), refusal.to_string()))?;
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
            rail,
            pass,
            experiment: self.experiment.clone(),
        })
    }

    /// The passes asked for, checked against `[passes]`.
    fn pass_order(
        &self,
        settings: &Settings,
        rail: Rail,
        interval: Interval,
    ) -> Result<Option<crate::passes::PassOrder>, Refusal> {
        let Some(months) = self.pass_months else {
            if self.pass_codes.is_some() {
                return Err(Refusal::new(
                    "invalid_pass_codes",
                    "pass_codes needs pass_months",
                ));
            }
            return Ok(None);
        };
        if rail != Rail::Crypto || interval != Interval::Once {
            return Err(Refusal::new(
                "pass_not_on_rail",
                "passes are bought once, on the crypto rail (card readers give monthly or annually)",
            ));
        }
        if !settings.passes.months.contains(&months) {
            return Err(Refusal::new(
                "invalid_pass_months",
                format!("a pass lasts one of {:?} months", settings.passes.months),
            ));
        }
        let max = settings.passes.max_codes;
        if let Some(count) = self.pass_codes
            && !(1..=max).contains(&count)
        {
            return Err(Refusal::new(
                "invalid_pass_codes",
                format!("from 1 to {max} pass codes at once"),
            ));
        }
        Ok(Some(crate::passes::PassOrder {
            months,
            count: self.pass_codes.unwrap_or(1),
            as_codes: self.pass_codes.is_some(),
        }))
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

/// How a checkout ended, as Stripe's return says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CheckoutOutcome {
    /// The reader paid (Stripe's `success_url`; the webhook confirms it).
    Success,
    /// The reader went back without paying (Stripe's `cancel_url`).
    Cancelled,
}

impl CheckoutOutcome {
    /// `success` or `cancelled`.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Success => "success",
            Self::Cancelled => "cancelled",
        }
    }

    fn byte(self) -> u8 {
        match self {
            Self::Success => b's',
            Self::Cancelled => b'c',
        }
    }

    fn from_byte(b: u8) -> Option<Self> {
        match b {
            b's' => Some(Self::Success),
            b'c' => Some(Self::Cancelled),
            _ => None,
        }
    }
}

/// A genuine return from Stripe's page, opened.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckoutReturn {
    /// The contribution the checkout was for.
    pub contribution: ContributionId,
    /// How it ended.
    pub outcome: CheckoutOutcome,
    /// The newsroom's page to send the reader back to (checked against the allowlist when
    /// the checkout started and again now), with no id of ours or Stripe's in it.
    pub to: url::Url,
}

const RETURN_TAG: u8 = b'r';
const COOKIE_TAG: u8 = b'k';

/// Kopilka's own return route for Stripe's success and cancel URLs:
/// `{public_url}/v1/checkout/return?ref=…`, the reference signed with the accounts secret
/// and naming the contribution, the outcome and the page. Stripe's page sends the reader
/// there, never straight to the newsroom's page, so the page's URL holds no Stripe or
/// contribution id (third-party scripts on the page read URLs).
fn return_route(
    settings: &Settings,
    keys: &kopilka_accounts::Keys,
    contribution: ContributionId,
    page: &url::Url,
    outcome: CheckoutOutcome,
) -> String {
    let mut payload = vec![RETURN_TAG, outcome.byte()];
    payload.extend_from_slice(contribution.as_uuid().as_bytes());
    payload.extend_from_slice(page.as_str().as_bytes());
    let reference = keys.sign(kopilka_accounts::keys::Purpose::CheckoutReturn, &payload);
    let mut url = settings
        .public_url
        .join("v1/checkout/return")
        .unwrap_or_else(|_| settings.public_url.clone());
    url.query_pairs_mut().append_pair("ref", &reference);
    url.into()
}

/// The return a genuine reference names, when its page is still on the allowlist; `None`
/// for anything forged, malformed or no longer allowed (so the route redirects nowhere it
/// was not configured to).
#[must_use]
pub fn open_return(
    settings: &Settings,
    keys: &kopilka_accounts::Keys,
    reference: &str,
) -> Option<CheckoutReturn> {
    let payload = keys.open(kopilka_accounts::keys::Purpose::CheckoutReturn, reference)?;
    let (&tag, rest) = payload.split_first()?;
    let (&outcome, rest) = rest.split_first()?;
    if tag != RETURN_TAG || rest.len() < 16 {
        return None;
    }
    let (id, page) = rest.split_at(16);
    let contribution = ContributionId::from_uuid(uuid::Uuid::from_slice(id).ok()?);
    let page = std::str::from_utf8(page).ok()?;
    let to = allowed_return_url(page, &settings.offer.return_origins, &settings.public_url).ok()?;
    Some(CheckoutReturn {
        contribution,
        outcome: CheckoutOutcome::from_byte(outcome)?,
        to,
    })
}

/// The value of the short-lived outcome cookie for `back`, valid until `expires_at`.
#[must_use]
pub fn outcome_cookie(
    keys: &kopilka_accounts::Keys,
    back: &CheckoutReturn,
    expires_at: time::OffsetDateTime,
) -> String {
    let mut payload = vec![COOKIE_TAG, back.outcome.byte()];
    payload.extend_from_slice(back.contribution.as_uuid().as_bytes());
    payload.extend_from_slice(&expires_at.unix_timestamp().to_be_bytes());
    keys.sign(kopilka_accounts::keys::Purpose::CheckoutReturn, &payload)
}

/// The contribution and outcome of a genuine, unexpired outcome cookie.
#[must_use]
pub fn open_outcome_cookie(
    keys: &kopilka_accounts::Keys,
    value: &str,
    now: time::OffsetDateTime,
) -> Option<(ContributionId, CheckoutOutcome)> {
    let payload = keys.open(kopilka_accounts::keys::Purpose::CheckoutReturn, value)?;
    if payload.len() != 2 + 16 + 8 || payload[0] != COOKIE_TAG {
        return None;
    }
    let outcome = CheckoutOutcome::from_byte(payload[1])?;
    let contribution = ContributionId::from_uuid(uuid::Uuid::from_slice(&payload[2..18]).ok()?);
    let expires = i64::from_be_bytes(payload[18..].try_into().ok()?);
    (now.unix_timestamp() < expires).then_some((contribution, outcome))
}

/// Under attack (`factor` > 1), the minimum of the currency and interval multiplied.
fn raised_minimum(
    settings: &Settings,
    valid: &ValidCheckout,
    factor: u32,
) -> Result<(), ContributionError> {
    if factor <= 1 {
        return Ok(());
    }
    let currency = valid.amount.currency();
    let Some(offer) = settings.offer.currencies.get(&currency) else {
        return Ok(());
    };
    let minimum = offer
        .interval(valid.interval)
        .minimum_minor
        .saturating_mul(i64::from(factor));
    if valid.amount.minor() < minimum {
        return Err(ContributionError::Refused(Refusal::new(
            "amount_below_minimum",
            format!(
                "the minimum {} contribution is {} for now",
                valid.interval,
                Money::new(minimum, currency)
            ),
        )));
    }
    Ok(())
}

/// Seconds from now until `until` (at least 1).
fn retry_after(until: time::OffsetDateTime) -> u64 {
    u64::try_from((until - time::OffsetDateTime::now_utc()).whole_seconds())
        .unwrap_or(1)
        .max(1)
}

/// Starts a checkout (see the module docs). `signed_in` is the reader of the session that
/// asks, if any: the contribution is theirs, whatever address was typed. `attribution`
/// names the client for the card-testing shield and, under attack, raises the minimum.
///
/// # Errors
/// [`ContributionError`]: refused values, a blocked address, key reuse, Stripe unavailable
/// or refusing, storage.
pub async fn start_checkout(
    pool: &PgPool,
    providers: Providers<'_>,
    settings: &Settings,
    input: &CheckoutInput,
    idempotency_key: Option<&str>,
    signed_in: Option<ReaderId>,
    attribution: &crate::shield::Attribution,
) -> Result<(u16, serde_json::Value), ContributionError> {
    let mut valid = input
        .validate(settings)
        .map_err(ContributionError::Refused)?;
    raised_minimum(settings, &valid, attribution.minimum_factor)?;
    let provider = match valid.rail {
        Rail::Card => Provider::Stripe(providers.stripe.ok_or(ContributionError::NoStripe)?),
        Rail::Crypto => Provider::Btcpay(providers.btcpay.ok_or_else(|| {
            ContributionError::Refused(Refusal::new(
                "rail_not_offered",
                "crypto contributions are not offered",
            ))
        })?),
    };
    // The crypto rail sends BTCPay the address only when an anonymous reader typed one
    // (asking for an emailed receipt); a signed-in reader's gift is theirs already.
    let buyer_email = match (valid.rail, signed_in) {
        (Rail::Crypto, None) => valid.email.clone(),
        _ => None,
    };
    let digest = input.fingerprint(&Keys::from_settings(&settings.accounts));

    // Record the contribution (and the key's claim on it) before calling Stripe.
    let mut tx = pool.begin().await?;
    // A signed-in reader's checkout is theirs, whatever address was typed: Stripe's page is
    // prefilled with their own. An anonymous checkout names no reader until it completes:
    // the address the payer gave on Stripe's page (prefilled with the typed one) names the
    // reader then, so a typed address alone creates nothing and is sent nothing.
    let reader = match signed_in {
        Some(reader) => {
            valid.email = kopilka_accounts::reader::by_id(&mut tx, reader)
                .await?
                .and_then(|r| r.email);
            Some(reader)
        }
        None => None,
    };
    // The card-testing shield: an address blocked for failed payments starts nothing.
    let keys = Keys::from_settings(&settings.accounts);
    let address_key = valid
        .email
        .as_ref()
        .map(|email| crate::shield::address_key(&keys, email));
    if let Some(key) = &address_key
        && let Some(until) =
            crate::shield::blocked_until(&mut tx, crate::shield::BlockKind::Address, key).await?
    {
        return Err(ContributionError::Blocked {
            retry_after_secs: retry_after(until),
        });
    }
    let mut contribution = ContributionId::new();
    let codes: Vec<String>;
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
            Some((_, id, Some(status), Some(mut body))) => {
                // Codes are never stored in the clear: a replay before the payment gets new
                // ones (the first answer may never have arrived), after it none.
                let codes =
                    crate::passes::reissue(&mut tx, &keys, ContributionId::from_uuid(id)).await?;
                tx.commit().await.map_err(kopilka_store::StoreError::from)?;
                if let Some(codes) = codes {
                    body["pass_codes"] = serde_json::json!(codes);
                }
                return Ok((u16::try_from(status).unwrap_or(201), body));
            }
            // A retry after Stripe was unavailable: same contribution, same Stripe key.
            Some((_, id, _, _)) => {
                contribution = ContributionId::from_uuid(id);
                codes = crate::passes::reissue(&mut tx, &keys, contribution)
                    .await?
                    .unwrap_or_default();
            }
            None => {
                insert_contribution(&mut tx, contribution, &valid, reader).await?;
                codes = create_passes(&mut tx, &keys, contribution, &valid, reader).await?;
                crate::shield::attribute(
                    &mut tx,
                    contribution,
                    attribution.client_key.as_deref(),
                    address_key.as_deref(),
                )
                .await?;
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
        codes = create_passes(&mut tx, &keys, contribution, &valid, reader).await?;
        crate::shield::attribute(
            &mut tx,
            contribution,
            attribution.client_key.as_deref(),
            address_key.as_deref(),
        )
        .await?;
    }
    tx.commit().await.map_err(kopilka_store::StoreError::from)?;

    let id = contribution.to_string();
    let product_name = match valid.interval {
        Interval::Once => "Contribution",
        Interval::Month => "Monthly contribution",
        Interval::Year => "Annual contribution",
    };
    let success_url = return_route(
        settings,
        &keys,
        contribution,
        &valid.return_url,
        CheckoutOutcome::Success,
    );
    let cancel_url = return_route(
        settings,
        &keys,
        contribution,
        &valid.return_url,
        CheckoutOutcome::Cancelled,
    );
    let started = match provider {
        Provider::Stripe(stripe) => stripe
            .create_checkout_session(&NewCheckout {
                contribution_id: &id,
                interval: valid.interval,
                amount: valid.amount,
                product_name,
                success_url: &success_url,
                cancel_url: Some(&cancel_url),
                customer_email: valid.email.as_ref(),
                expires_at: None,
                experiment: valid
                    .experiment
                    .as_ref()
                    .map(|tag| (tag.name.as_str(), tag.variant.as_str())),
            })
            .await
            .map(|session| Started {
                url: session.url.clone().unwrap_or_default(),
                update: "UPDATE contributions SET stripe_checkout_session_id = $2 WHERE id = $1",
                id: session.id,
            })
            .map_err(ContributionError::from),
        Provider::Btcpay(btcpay) => btcpay
            .create_invoice(&NewInvoice {
                order_id: &id,
                amount: valid.amount,
                buyer_email: buyer_email.as_ref(),
                redirect_url: Some(&success_url),
                expiration_minutes: Some(settings.btcpay.invoice_expiration_minutes),
                redirect_automatically: None,
            })
            .await
            .map(|invoice| Started {
                url: invoice.checkout_link,
                update: "UPDATE contributions SET btcpay_invoice_id = $2 WHERE id = $1",
                id: invoice.id,
            })
            .map_err(ContributionError::from),
    };
    let session = match started {
        Ok(session) => session,
        Err(err) => {
            tracing::warn!(contribution_id = %id, rail = valid.rail.as_str(), error = %err, "checkout not created at the provider");
            if err.refused_for_good() {
                // Stripe refused for good (an amount its rules refuse, e.g. below the
                // minimum of a currency the account converts): nothing was created there,
                // so nothing stays here, and a retry with the same key asks again.
                forget_refused(pool, contribution, idempotency_key).await?;
            }
            return Err(err);
        }
    };
    let checkout_url = session.url.clone();
    let body = serde_json::to_value(CheckoutStarted {
        contribution_id: contribution,
        checkout_url,
        pass_codes: None,
    })
    .unwrap_or_default();

    let mut tx = pool.begin().await?;
    sqlx::query(session.update)
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
    tracing::info!(contribution_id = %id, interval = %valid.interval, currency = %valid.amount.currency(), rail = valid.rail.as_str(), "checkout started");
    // The codes go in this answer only, never in the one stored for the key.
    let mut body = body;
    if !codes.is_empty() {
        body["pass_codes"] = serde_json::json!(codes);
    }
    Ok((201, body))
}

/// The passes of a checkout that buys some: as codes when asked, or when nobody could hold
/// the pass (an anonymous buyer who gave no address).
async fn create_passes(
    conn: &mut sqlx::PgConnection,
    keys: &Keys,
    contribution: ContributionId,
    valid: &ValidCheckout,
    reader: Option<ReaderId>,
) -> Result<Vec<String>, ContributionError> {
    let Some(mut order) = valid.pass else {
        return Ok(Vec::new());
    };
    order.as_codes |= reader.is_none() && valid.email.is_none();
    crate::passes::create(conn, keys, contribution, order, reader).await
}

/// The provider a checkout goes to.
enum Provider<'a> {
    Stripe(&'a StripeClient),
    Btcpay(&'a BtcpayClient),
}

/// What the provider started: its page and its id, and how the contribution records it.
struct Started {
    url: String,
    update: &'static str,
    id: String,
}

/// Removes the contribution (and its idempotency claim) of a checkout Stripe refused.
async fn forget_refused(
    pool: &PgPool,
    contribution: ContributionId,
    idempotency_key: Option<&str>,
) -> Result<(), ContributionError> {
    let mut tx = pool.begin().await?;
    // Its passes go with it (codes never worked: nothing was paid).
    sqlx::query(
        "DELETE FROM passes WHERE contribution_id IN (
             SELECT id FROM contributions
             WHERE id = $1 AND stripe_checkout_session_id IS NULL AND btcpay_invoice_id IS NULL)",
    )
    .bind(contribution.as_uuid())
    .execute(&mut *tx)
    .await?;
    if let Some(key) = idempotency_key {
        sqlx::query("DELETE FROM checkout_requests WHERE idempotency_key = $1")
            .bind(key)
            .execute(&mut *tx)
            .await?;
    }
    sqlx::query(
        "DELETE FROM contributions
         WHERE id = $1 AND stripe_checkout_session_id IS NULL AND btcpay_invoice_id IS NULL",
    )
    .bind(contribution.as_uuid())
    .execute(&mut *tx)
    .await?;
    tx.commit().await.map_err(kopilka_store::StoreError::from)?;
    Ok(())
}

async fn insert_contribution(
    conn: &mut sqlx::PgConnection,
    id: ContributionId,
    valid: &ValidCheckout,
    reader: Option<ReaderId>,
) -> Result<(), ContributionError> {
    sqlx::query(
        "INSERT INTO contributions
             (id, provider, interval, amount_minor, currency, reader_id, pass_months,
              experiment_id, experiment_variant)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
    )
    .bind(id.as_uuid())
    .bind(valid.rail.provider().as_str())
    .bind(valid.interval.as_str())
    .bind(valid.amount.minor())
    .bind(valid.amount.currency().stripe_code())
    .bind(reader.map(ReaderId::as_uuid))
    .bind(valid.pass.map(|order| i16::from(order.months)))
    .bind(valid.experiment.as_ref().map(|tag| tag.id))
    .bind(valid.experiment.as_ref().map(|tag| tag.variant.as_str()))
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
    Ok(kopilka_store::retention::batch(
        conn,
        "DELETE FROM checkout_requests WHERE idempotency_key IN (
             SELECT idempotency_key FROM checkout_requests WHERE created_at < $1 LIMIT $2)",
        before,
        limit,
    )
    .await?)
}
