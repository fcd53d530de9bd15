//! The one client path to Stripe, over async-stripe. Built from settings (secret key, an
//! optional non-Stripe API base such as the simulator). Every create call carries an
//! idempotency key derived from Kopilka's own id, so a retry after a timeout never creates
//! a second session, refund or customer. Answers come back as Kopilka's own small types;
//! no other crate sees async-stripe's.

use std::collections::HashMap;
use std::str::FromStr;
use std::time::Duration;

use kopilka_domain::{Currency, Email, Interval, Money};
use secrecy::{ExposeSecret, SecretString};
use stripe::{IdempotencyKey, RequestStrategy, StripeRequest};
use stripe_billing::subscription as sub;
use stripe_checkout::checkout_session as cs;

/// A Stripe API client.
#[derive(Clone)]
pub struct StripeClient {
    inner: stripe::Client,
}

impl std::fmt::Debug for StripeClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("StripeClient")
    }
}

/// What went wrong talking to Stripe, with Stripe's own code kept. Stripe's free-text
/// message is never kept: a refusal can echo what was sent (an address, a name), and this
/// error is logged and mapped to answers. Every text here is Kopilka's own.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// Stripe answered with an error (4xx): the request was refused.
    #[error("Stripe refused the request ({status} {kind}{}{})", code.as_deref().map(|c| format!(" {c}")).unwrap_or_default(), param.as_deref().map(|p| format!(", parameter {p}")).unwrap_or_default())]
    Refused {
        /// The HTTP status.
        status: u16,
        /// Stripe's error type, e.g. `invalid_request_error`, `card_error`, `idempotency_error`.
        kind: String,
        /// Stripe's error code, e.g. `resource_missing`, `amount_too_small`.
        code: Option<String>,
        /// The name of the parameter at fault (a name from Stripe's API, never a value).
        param: Option<String>,
    },
    /// Stripe could not be reached, timed out or failed on its side (5xx): retry later
    /// with the same idempotency key.
    #[error("Stripe is unavailable: {0}")]
    Unavailable(String),
    /// Stripe's answer did not have the expected shape.
    #[error("unexpected answer from Stripe: {0}")]
    Unexpected(String),
    /// The client could not be built (bad key or base URL).
    #[error("Stripe client configuration: {0}")]
    Config(String),
}

impl ClientError {
    /// Stripe's error code, if Stripe refused the request.
    #[must_use]
    pub fn code(&self) -> Option<&str> {
        match self {
            Self::Refused { code, .. } => code.as_deref(),
            _ => None,
        }
    }
}

/// Only a name from Stripe's own vocabulary (`snake_case`, brackets, dots) passes; anything
/// else Stripe put in a code or parameter field is dropped.
fn vocabulary(word: Option<&str>) -> Option<String> {
    word.filter(|w| {
        !w.is_empty()
            && w.len() <= 100
            && w.bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'[' | b']'))
    })
    .map(str::to_owned)
}

impl From<stripe::StripeError> for ClientError {
    fn from(err: stripe::StripeError) -> Self {
        // Stripe's and the transport's texts are dropped here (see the type's docs); the
        // status, type, code and parameter name say what happened.
        match err {
            // 409 (a request with this key still running) and 429 (rate limit) pass; retry.
            stripe::StripeError::Stripe(api, status)
                if status < 500 && status != 409 && status != 429 =>
            {
                Self::Refused {
                    status,
                    kind: api.type_.as_str().to_owned(),
                    code: vocabulary(api.code.as_ref().map(stripe::ApiErrorsCode::as_str)),
                    param: vocabulary(api.param.as_deref()),
                }
            }
            stripe::StripeError::Stripe(_, status) => {
                Self::Unavailable(format!("Stripe answered {status}"))
            }
            stripe::StripeError::ClientError(_) => {
                Self::Unavailable("the request did not complete (network or TLS)".into())
            }
            stripe::StripeError::Timeout => Self::Unavailable("timed out".into()),
            stripe::StripeError::JSONDeserialize(_) => {
                Self::Unexpected("the answer did not parse".into())
            }
            // The builder's own words about our settings (never a request's data).
            stripe::StripeError::ConfigError(message) => Self::Config(message),
        }
    }
}

type Result<T> = std::result::Result<T, ClientError>;

/// A checkout session as Kopilka needs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckoutSession {
    /// `cs_…`.
    pub id: String,
    /// Where to send the reader (absent once complete or expired).
    pub url: Option<String>,
    /// `open`, `complete` or `expired`.
    pub status: String,
    /// `paid`, `unpaid` or `no_payment_required`.
    pub payment_status: String,
    /// `cus_…`, once known.
    pub customer: Option<String>,
    /// `pi_…` in payment mode, once paid.
    pub payment_intent: Option<String>,
    /// `sub_…` in subscription mode, once paid.
    pub subscription: Option<String>,
    /// Our id, as sent.
    pub client_reference_id: Option<String>,
    /// The total, when Stripe reports one.
    pub amount_total: Option<i64>,
    /// When an open session expires (unix seconds).
    pub expires_at: i64,
}

/// A new hosted checkout for one contribution.
#[derive(Debug)]
pub struct NewCheckout<'a> {
    /// Kopilka's id for the contribution: the idempotency key, `client_reference_id` and
    /// `metadata[contribution_id]`.
    pub contribution_id: &'a str,
    /// Once (mode `payment`) or a plan (mode `subscription`, `recurring.interval`).
    pub interval: Interval,
    /// The reader's amount.
    pub amount: Money,
    /// The line item's name, e.g. "Monthly contribution to The Newsroom".
    pub product_name: &'a str,
    /// Where Stripe sends the reader after paying.
    pub success_url: &'a str,
    /// Where the reader goes on "back".
    pub cancel_url: Option<&'a str>,
    /// Prefills the address on Stripe's page.
    pub customer_email: Option<&'a Email>,
    /// When the session expires (unix seconds, 30 min to 24 h ahead); Stripe's default 24 h.
    pub expires_at: Option<i64>,
    /// The ask experiment and variant (`""` for the holdback) the reader came from:
    /// `metadata[experiment]` and `metadata[experiment_variant]`.
    pub experiment: Option<(&'a str, &'a str)>,
}

/// A recurring plan as Kopilka needs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Subscription {
    /// `sub_…`.
    pub id: String,
    /// `active`, `past_due`, `canceled`, `incomplete`, …
    pub status: String,
    /// `cus_…`.
    pub customer: String,
    /// The one item's id (`si_…`).
    pub item_id: String,
    /// The item's product (`prod_…`).
    pub product: String,
    /// The amount per interval.
    pub amount: Option<Money>,
    /// `month` or `year`.
    pub interval: Option<Interval>,
    /// The end of the current period (unix seconds).
    pub current_period_end: i64,
    /// Whether it ends at the period's end.
    pub cancel_at_period_end: bool,
    /// Its metadata (Kopilka's ids).
    pub metadata: HashMap<String, String>,
    /// Whether a change made with `payment_behavior=pending_if_incomplete` waits for its
    /// invoice to be paid (Stripe's `pending_update`): until then nothing changed.
    pub pending_update: bool,
    /// The latest invoice's hosted page, when the answer expanded it (`expand[]=latest_invoice`):
    /// where the donor pays or authenticates it. Read live, never stored.
    pub latest_invoice_url: Option<String>,
}

/// A refund as Kopilka needs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refund {
    /// `re_…`.
    pub id: String,
    /// How much.
    pub amount: i64,
    /// The currency, lowercase.
    pub currency: String,
    /// `succeeded`, `pending`, `failed`, …
    pub status: Option<String>,
    /// The refunded charge.
    pub charge: Option<String>,
}

fn idempotent(key: &str) -> Result<RequestStrategy> {
    IdempotencyKey::new(format!("kopilka-{key}"))
        .map(RequestStrategy::Idempotent)
        .map_err(|e| ClientError::Config(format!("idempotency key: {e}")))
}

fn currency_of(currency: Currency) -> Result<stripe_types::Currency> {
    stripe_types::Currency::from_str(&currency.stripe_code())
        .map_err(|_| ClientError::Config(format!("currency {currency} unknown to Stripe")))
}

fn id_of<T: stripe_types::Object>(expandable: &stripe_types::Expandable<T>) -> String
where
    T::Id: ToString,
{
    expandable.id().to_string()
}

impl From<stripe_shared::CheckoutSession> for CheckoutSession {
    fn from(s: stripe_shared::CheckoutSession) -> Self {
        Self {
            id: s.id.to_string(),
            url: s.url,
            status: s.status.map(|v| v.as_str().to_owned()).unwrap_or_default(),
            payment_status: s.payment_status.as_str().to_owned(),
            customer: s.customer.as_ref().map(id_of),
            payment_intent: s.payment_intent.as_ref().map(id_of),
            subscription: s.subscription.as_ref().map(id_of),
            client_reference_id: s.client_reference_id,
            amount_total: s.amount_total,
            expires_at: s.expires_at,
        }
    }
}

impl From<stripe_shared::Subscription> for Subscription {
    fn from(s: stripe_shared::Subscription) -> Self {
        let item = s.items.data.first();
        let price = item.map(|i| &i.price);
        let amount = price.and_then(|p| {
            let currency = p.currency.to_string().parse::<Currency>().ok()?;
            Some(Money::new(p.unit_amount?, currency))
        });
        let interval = price
            .and_then(|p| p.recurring.as_ref())
            .and_then(|r| r.interval.as_str().parse::<Interval>().ok());
        Self {
            id: s.id.to_string(),
            status: s.status.as_str().to_owned(),
            customer: id_of(&s.customer),
            item_id: item.map(|i| i.id.to_string()).unwrap_or_default(),
            product: price.map(|p| id_of(&p.product)).unwrap_or_default(),
            amount,
            interval,
            current_period_end: item.map_or(0, |i| i.current_period_end),
            cancel_at_period_end: s.cancel_at_period_end,
            metadata: s.metadata,
            pending_update: s.pending_update.is_some(),
            latest_invoice_url: match &s.latest_invoice {
                Some(stripe_types::Expandable::Object(invoice)) => {
                    invoice.hosted_invoice_url.clone()
                }
                _ => None,
            },
        }
    }
}

impl From<stripe_shared::Refund> for Refund {
    fn from(r: stripe_shared::Refund) -> Self {
        Self {
            id: r.id.to_string(),
            amount: r.amount,
            currency: r.currency.to_string(),
            status: r.status,
            charge: r.charge.as_ref().map(id_of),
        }
    }
}

impl StripeClient {
    /// Stripe's own API.
    pub const STRIPE_API_BASE: &'static str = "https://api.stripe.com/";

    /// A client with `secret_key` against `api_base` (Stripe's when `None`).
    ///
    /// # Errors
    /// [`ClientError::Config`] when the key or URL cannot be used.
    pub fn new(secret_key: &SecretString, api_base: Option<&url::Url>) -> Result<Self> {
        Self::with_timeout(secret_key, api_base, Self::DEFAULT_TIMEOUT)
    }

    /// How long a call may take by default (`stripe.timeout_secs`).
    pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(20);

    /// A client whose calls give up after `timeout` ([`ClientError::Unavailable`]).
    ///
    /// # Errors
    /// [`ClientError::Config`] when the key or URL cannot be used.
    pub fn with_timeout(
        secret_key: &SecretString,
        api_base: Option<&url::Url>,
        timeout: Duration,
    ) -> Result<Self> {
        let mut base =
            api_base.map_or_else(|| Self::STRIPE_API_BASE.to_owned(), url::Url::to_string);
        if !base.ends_with('/') {
            base.push('/');
        }
        let inner = stripe::ClientBuilder::new(secret_key.expose_secret())
            .url(base)
            .timeout(timeout)
            .app_info("Kopilka", Some(env!("CARGO_PKG_VERSION").to_owned()), None)
            .build()?;
        Ok(Self { inner })
    }

    pub(crate) fn inner(&self) -> &stripe::Client {
        &self.inner
    }

    /// The client the settings describe; `None` when no secret key is configured.
    ///
    /// # Errors
    /// [`ClientError::Config`] when the key or URL cannot be used.
    pub fn from_settings(settings: &kopilka_config::StripeSettings) -> Result<Option<Self>> {
        settings
            .secret_key
            .as_ref()
            .map(|key| {
                Self::with_timeout(
                    key,
                    settings.api_base.as_ref(),
                    Duration::from_secs(u64::from(settings.timeout_secs)),
                )
            })
            .transpose()
    }

    /// Creates the hosted checkout for a contribution (idempotent on its id).
    ///
    /// # Errors
    /// [`ClientError`], with Stripe's code for refusals (e.g. `amount_too_small`).
    pub async fn create_checkout_session(&self, new: &NewCheckout<'_>) -> Result<CheckoutSession> {
        let currency = currency_of(new.amount.currency())?;
        let mut price = cs::CreateCheckoutSessionLineItemsPriceData::new(currency);
        price.unit_amount = Some(new.amount.minor());
        let mut product = cs::ProductData::new(new.product_name);
        product.metadata = None;
        price.product_data = Some(product);
        let mut metadata: HashMap<String, String> =
            [("contribution_id".to_owned(), new.contribution_id.to_owned())].into();
        if let Some((experiment, variant)) = new.experiment {
            metadata.insert("experiment".to_owned(), experiment.to_owned());
            metadata.insert("experiment_variant".to_owned(), variant.to_owned());
        }
        let mode = match new.interval {
            Interval::Once => stripe_shared::CheckoutSessionMode::Payment,
            Interval::Month | Interval::Year => {
                let interval = if new.interval == Interval::Month {
                    cs::CreateCheckoutSessionLineItemsPriceDataRecurringInterval::Month
                } else {
                    cs::CreateCheckoutSessionLineItemsPriceDataRecurringInterval::Year
                };
                price.recurring = Some(cs::CreateCheckoutSessionLineItemsPriceDataRecurring::new(
                    interval,
                ));
                stripe_shared::CheckoutSessionMode::Subscription
            }
        };
        let mut item = cs::CreateCheckoutSessionLineItems::new();
        item.price_data = Some(price);
        item.quantity = Some(1);
        let mut request = cs::CreateCheckoutSession::new()
            .mode(mode)
            .line_items(vec![item])
            .success_url(new.success_url)
            .client_reference_id(new.contribution_id)
            .metadata(metadata.clone());
        if new.interval == Interval::Once {
            // The session's metadata stays on the session; the payment intent (and so its
            // charge, refunds and disputes) gets its own copy only through payment_intent_data.
            let mut intent = cs::CreateCheckoutSessionPaymentIntentData::new();
            intent.metadata = Some(metadata.clone());
            request = request
                .submit_type(stripe_shared::CheckoutSessionSubmitType::Donate)
                .payment_intent_data(intent);
        } else {
            let mut data = cs::CreateCheckoutSessionSubscriptionData::new();
            data.metadata = Some(metadata);
            request = request.subscription_data(data);
        }
        if let Some(cancel) = new.cancel_url {
            request = request.cancel_url(cancel);
        }
        if let Some(email) = new.customer_email {
            request = request.customer_email(email.expose());
        }
        if let Some(at) = new.expires_at {
            request = request.expires_at(at);
        }
        let session = request
            .customize()
            .request_strategy(idempotent(&format!("checkout-{}", new.contribution_id))?)
            .send(&self.inner)
            .await?;
        Ok(session.into())
    }

    /// Reads a checkout session.
    ///
    /// # Errors
    /// [`ClientError`]; `resource_missing` for an unknown id.
    pub async fn retrieve_checkout_session(&self, id: &str) -> Result<CheckoutSession> {
        Ok(cs::RetrieveCheckoutSession::new(id)
            .send(&self.inner)
            .await?
            .into())
    }

    /// Expires an open checkout session (the reader abandoned it).
    ///
    /// # Errors
    /// [`ClientError`]; Stripe refuses sessions that are not open.
    pub async fn expire_checkout_session(&self, id: &str) -> Result<CheckoutSession> {
        Ok(cs::ExpireCheckoutSession::new(id)
            .customize()
            .request_strategy(idempotent(&format!("expire-{id}"))?)
            .send(&self.inner)
            .await?
            .into())
    }

    /// Creates a customer for a reader (idempotent on the reader's id); the email is sent to
    /// Stripe and nowhere else.
    ///
    /// # Errors
    /// [`ClientError`].
    pub async fn create_customer(&self, reader_id: &str, email: &Email) -> Result<String> {
        let customer = stripe_core::customer::CreateCustomer::new()
            .email(email.expose())
            .metadata([("reader_id".to_owned(), reader_id.to_owned())])
            .customize()
            .request_strategy(idempotent(&format!("customer-{reader_id}"))?)
            .send(&self.inner)
            .await?;
        Ok(customer.id.to_string())
    }

    /// Clears a customer's personal fields (email, name, phone, description) when its reader
    /// is erased. Idempotent: clearing twice leaves the same customer.
    ///
    /// # Errors
    /// [`ClientError`].
    pub async fn clear_customer(&self, id: &str) -> Result<()> {
        stripe_core::customer::UpdateCustomer::new(id)
            .email("")
            .name("")
            .phone("")
            .description("")
            .customize()
            .request_strategy(idempotent(&format!("erase-{id}"))?)
            .send(&self.inner)
            .await?;
        Ok(())
    }

    /// Deletes a customer for good (Stripe's `DELETE /v1/customers/{id}`): Stripe cancels
    /// its remaining subscriptions at once and it can no longer be charged. Returns `false`
    /// when Stripe no longer knows it (already deleted, so a retry is safe).
    ///
    /// # Errors
    /// [`ClientError`] other than `resource_missing`.
    pub async fn delete_customer(&self, id: &str) -> Result<bool> {
        match stripe_core::customer::DeleteCustomer::new(id)
            .send(&self.inner)
            .await
        {
            Ok(_) => Ok(true),
            Err(err) => match ClientError::from(err) {
                missing if missing.code() == Some("resource_missing") => Ok(false),
                other => Err(other),
            },
        }
    }

    /// A page on Stripe where the reader of `customer` updates their card (a Billing Portal
    /// session opened on its payment-method flow); the reader comes back to `return_url`.
    ///
    /// # Errors
    /// [`ClientError`].
    pub async fn card_update_page(&self, customer: &str, return_url: &str) -> Result<String> {
        use stripe_billing::billing_portal_session as portal;
        let session = portal::CreateBillingPortalSession::new()
            .customer(customer)
            .return_url(return_url)
            .flow_data(portal::CreateBillingPortalSessionFlowData::new(
                portal::CreateBillingPortalSessionFlowDataType::PaymentMethodUpdate,
            ))
            .send(&self.inner)
            .await?;
        Ok(session.url)
    }

    /// Reads a subscription.
    ///
    /// # Errors
    /// [`ClientError`].
    pub async fn retrieve_subscription(&self, id: &str) -> Result<Subscription> {
        Ok(sub::RetrieveSubscription::new(id)
            .send(&self.inner)
            .await?
            .into())
    }

    /// A new amount or interval for a plan, without proration: an amount change applies from
    /// the next renewal; an interval change starts a new period now (Stripe's rule).
    /// `change_id` is Kopilka's id for this change (the idempotency key).
    ///
    /// # Errors
    /// [`ClientError`].
    pub async fn change_subscription(
        &self,
        current: &Subscription,
        change_id: &str,
        amount: Money,
        interval: Interval,
    ) -> Result<Subscription> {
        let recurring = match interval {
            Interval::Month => sub::UpdateSubscriptionItemsPriceDataRecurringInterval::Month,
            Interval::Year => sub::UpdateSubscriptionItemsPriceDataRecurringInterval::Year,
            Interval::Once => {
                return Err(ClientError::Config("a plan cannot become one-off".into()));
            }
        };
        let mut price = sub::UpdateSubscriptionItemsPriceData::new(
            currency_of(amount.currency())?,
            current.product.clone(),
            sub::UpdateSubscriptionItemsPriceDataRecurring::new(recurring),
        );
        price.unit_amount = Some(amount.minor());
        let mut item = sub::UpdateSubscriptionItems::new();
        item.id = Some(current.item_id.clone());
        let same_interval = current.interval == Some(interval);
        if same_interval {
            item.price_data = Some(price);
        } else {
            // A pending update takes `items[][price]` only (not `price_data`): Stripe's
            // pending updates reference lists the attributes it supports.
            item.price = Some(
                self.create_price(&current.product, amount, interval, change_id)
                    .await?,
            );
        }
        let mut update = sub::UpdateSubscription::new(current.id.as_str()).items(vec![item]);
        update = if same_interval {
            // Same interval, new amount: from the next renewal, no charge now.
            update.proration_behavior(sub::UpdateSubscriptionProrationBehavior::None)
        } else {
            // Monthly ↔ annual: Stripe resets the billing anchor and bills the new price at
            // once. `always_invoice` credits the unused time of the period paid for on that
            // invoice (what is left over goes to the customer's balance and pays the next
            // invoices); `pending_if_incomplete` applies the switch only once that invoice is
            // paid, so a declined or 3-D Secure payment leaves the plan as it was, with the
            // invoice's hosted page to complete it.
            update
                .proration_behavior(sub::UpdateSubscriptionProrationBehavior::AlwaysInvoice)
                .payment_behavior(sub::UpdateSubscriptionPaymentBehavior::PendingIfIncomplete)
                .expand(vec!["latest_invoice".to_owned()])
        };
        let updated = update
            .customize()
            .request_strategy(idempotent(&format!("plan-change-{change_id}"))?)
            .send(&self.inner)
            .await?;
        Ok(updated.into())
    }

    /// A recurring price of `amount` per `interval` for `product`; answers its id. The
    /// idempotency key derives from `change_id`, so a retried change makes one price.
    async fn create_price(
        &self,
        product: &str,
        amount: Money,
        interval: Interval,
        change_id: &str,
    ) -> Result<String> {
        use stripe_client_core::{RequestBuilder, StripeMethod};

        #[derive(serde::Serialize)]
        struct Recurring<'a> {
            interval: &'a str,
        }
        #[derive(serde::Serialize)]
        struct NewPrice<'a> {
            currency: String,
            unit_amount: i64,
            product: &'a str,
            recurring: Recurring<'a>,
        }
        let interval = match interval {
            Interval::Month => "month",
            Interval::Year => "year",
            Interval::Once => {
                return Err(ClientError::Config("a plan cannot become one-off".into()));
            }
        };
        let price: stripe_shared::Price = RequestBuilder::new(StripeMethod::Post, "/prices")
            .form(&NewPrice {
                currency: amount.currency().stripe_code(),
                unit_amount: amount.minor(),
                product,
                recurring: Recurring { interval },
            })
            .customize()
            .request_strategy(idempotent(&format!("plan-price-{change_id}"))?)
            .send(&self.inner)
            .await?;
        Ok(price.id.to_string())
    }

    /// Ends a plan at the end of its period (`true`) or takes that back (`false`).
    ///
    /// # Errors
    /// [`ClientError`].
    pub async fn cancel_at_period_end(
        &self,
        id: &str,
        change_id: &str,
        cancel: bool,
    ) -> Result<Subscription> {
        Ok(sub::UpdateSubscription::new(id)
            .cancel_at_period_end(cancel)
            .customize()
            .request_strategy(idempotent(&format!("plan-cancel-{change_id}"))?)
            .send(&self.inner)
            .await?
            .into())
    }

    /// Ends a plan now.
    ///
    /// # Errors
    /// [`ClientError`].
    pub async fn cancel_subscription_now(&self, id: &str) -> Result<Subscription> {
        Ok(sub::CancelSubscription::new(id)
            .send(&self.inner)
            .await?
            .into())
    }

    /// Refunds `amount` (all that is left when `None`) of a payment intent's charge;
    /// `refund_id` is Kopilka's id for the refund (the idempotency key).
    ///
    /// # Errors
    /// [`ClientError`]; e.g. `charge_already_refunded`.
    pub async fn refund(
        &self,
        payment_intent: &str,
        refund_id: &str,
        amount: Option<i64>,
    ) -> Result<Refund> {
        let mut request = stripe_core::refund::CreateRefund::new()
            .payment_intent(payment_intent)
            .metadata([("refund_id".to_owned(), refund_id.to_owned())]);
        if let Some(amount) = amount {
            request = request.amount(amount);
        }
        Ok(request
            .customize()
            .request_strategy(idempotent(&format!("refund-{refund_id}"))?)
            .send(&self.inner)
            .await?
            .into())
    }
}
