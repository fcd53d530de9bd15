//! The Greenfield client: one store's invoices over HTTPS (hyper-util's client with rustls,
//! webpki roots), `Authorization: token <api key>`, a timeout on every call. Requests carry
//! only what Kopilka decides to send; answers are read into small structs holding only
//! the fields Kopilka needs (everything else BTCPay sends is ignored).

use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt as _, Full};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use kopilka_domain::{Currency, Email, Money, MoneyError};
use secrecy::{ExposeSecret as _, SecretString};
use serde::{Deserialize, Serialize};
use url::Url;

use crate::ClientError;

/// The most an answer may be (a page of invoices is a few hundred KiB at most).
const MAX_ANSWER: usize = 8 * 1024 * 1024;

type Result<T> = std::result::Result<T, ClientError>;

/// A Greenfield API client for one store.
#[derive(Clone)]
pub struct BtcpayClient {
    base: Url,
    store_id: String,
    api_key: SecretString,
    timeout: Duration,
    http: Client<HttpsConnector<HttpConnector>, Full<Bytes>>,
}

impl std::fmt::Debug for BtcpayClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BtcpayClient")
            .field("base", &self.base.as_str())
            .field("store_id", &self.store_id)
            .finish_non_exhaustive()
    }
}

/// An invoice's state (`InvoiceStatus`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
pub enum InvoiceStatus {
    /// Waiting for payment (a partial payment keeps it here).
    New,
    /// Paid in full, waiting for confirmations.
    Processing,
    /// Not paid in full in time.
    Expired,
    /// Marked invalid, or its payments did not confirm in time.
    Invalid,
    /// Paid and confirmed.
    Settled,
    /// A status this client does not know.
    #[serde(other)]
    Unknown,
}

impl InvoiceStatus {
    /// BTCPay's name for it.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::New => "New",
            Self::Processing => "Processing",
            Self::Expired => "Expired",
            Self::Invalid => "Invalid",
            Self::Settled => "Settled",
            Self::Unknown => "Unknown",
        }
    }
}

/// Why an invoice is in its status (`InvoiceAdditionalStatus`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
pub enum AdditionalStatus {
    /// Nothing out of the ordinary.
    None,
    /// Paid after it expired.
    PaidLate,
    /// Expired with less than the amount paid.
    PaidPartial,
    /// Marked settled or invalid by hand (or through the API).
    Marked,
    /// Its payments did not confirm in time.
    Invalid,
    /// Received more than the amount.
    PaidOver,
    /// A value this client does not know.
    #[serde(other)]
    Unknown,
}

/// An invoice as Kopilka needs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Invoice {
    /// BTCPay's invoice id.
    pub id: String,
    /// The store it belongs to.
    pub store_id: String,
    /// Its status.
    pub status: InvoiceStatus,
    /// Why it is in that status.
    pub additional_status: AdditionalStatus,
    /// The amount asked, in [`Self::currency`].
    pub amount: Money,
    /// What the buyer paid, in [`Self::currency`] (BTCPay's conversion at the invoice's rate).
    pub paid_amount: Money,
    /// The invoice's (fiat) currency.
    pub currency: Currency,
    /// The hosted invoice page, where the reader pays.
    pub checkout_link: String,
    /// When it was created (unix seconds).
    pub created_time: i64,
    /// When it expires (unix seconds).
    pub expiration_time: i64,
    /// Kopilka's id, as sent in `metadata.orderId`.
    pub order_id: Option<String>,
    /// `metadata.buyerEmail`, when it is an address: Kopilka sends one only when the reader
    /// asked for an emailed receipt, and reads it back only to name the reader of a
    /// settled invoice (never stored from here otherwise).
    pub buyer_email: Option<Email>,
}

/// How an invoice is created for one contribution.
#[derive(Debug, Clone)]
pub struct NewInvoice<'a> {
    /// Kopilka's contribution id: `metadata.orderId`.
    pub order_id: &'a str,
    /// The reader's amount, in the store's fiat currency.
    pub amount: Money,
    /// The reader's address: sent as `metadata.buyerEmail` only when given, which a caller
    /// does only when the reader asked for an emailed receipt.
    pub buyer_email: Option<&'a Email>,
    /// Where BTCPay sends the reader back (`checkout.redirectURL`).
    pub redirect_url: Option<&'a str>,
    /// Minutes until the invoice expires (`checkout.expirationMinutes`); the store's
    /// setting when unset.
    pub expiration_minutes: Option<u32>,
    /// Send the reader back without a click once paid (`checkout.redirectAutomatically`).
    pub redirect_automatically: Option<bool>,
}

/// Filters of `GET /api/v1/stores/{storeId}/invoices`.
#[derive(Debug, Clone, Default)]
pub struct InvoiceQuery {
    /// Only invoices with one of these `metadata.orderId`s.
    pub order_ids: Vec<String>,
    /// Only invoices in one of these statuses.
    pub statuses: Vec<InvoiceStatus>,
    /// Created at or after (unix seconds).
    pub start_date: Option<i64>,
    /// Created at or before (unix seconds).
    pub end_date: Option<i64>,
    /// Records to skip (paging).
    pub skip: Option<u32>,
    /// Records to return (paging).
    pub take: Option<u32>,
}

/// How a payment stands (`PaymentStatus`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
pub enum PaymentStatus {
    /// Double-spent or otherwise void.
    Invalid,
    /// Seen, not yet confirmed enough.
    Processing,
    /// Confirmed.
    Settled,
    /// A value this client does not know.
    #[serde(other)]
    Unknown,
}

/// One payment to an invoice, in the payment method's currency (`Payment`).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PaymentRecord {
    /// BTCPay's payment id (for on-chain, the transaction id and output).
    pub id: String,
    /// When it was recorded (unix seconds).
    #[serde(default)]
    pub received_date: Option<i64>,
    /// Its value, a decimal in the payment method's currency (e.g. BTC).
    pub value: String,
    /// The network fee, a decimal in the payment method's currency.
    #[serde(default)]
    pub fee: Option<String>,
    /// How it stands.
    pub status: PaymentStatus,
}

/// An invoice's payment method (`InvoicePaymentMethodDataModel`): the crypto side.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PaymentMethod {
    /// `BTC-CHAIN`, `BTC-LN`, …
    pub payment_method_id: String,
    /// The crypto currency, e.g. `BTC`.
    pub currency: String,
    /// Fiat per one unit of [`Self::currency`], a decimal.
    pub rate: String,
    /// The invoice's amount in this currency, a decimal.
    pub amount: String,
    /// What was paid through this method, a decimal in this currency.
    pub payment_method_paid: String,
    /// What is still due, a decimal in this currency (negative when overpaid).
    pub due: String,
    /// The payments received.
    #[serde(default)]
    pub payments: Vec<PaymentRecord>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct CreateInvoiceBody<'a> {
    amount: String,
    currency: &'static str,
    metadata: MetadataBody<'a>,
    checkout: CheckoutBody<'a>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct MetadataBody<'a> {
    order_id: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    buyer_email: Option<&'a str>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct CheckoutBody<'a> {
    #[serde(rename = "redirectURL", skip_serializing_if = "Option::is_none")]
    redirect_url: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    expiration_minutes: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    redirect_automatically: Option<bool>,
}

/// `InvoiceData` as read: only the allowlisted fields.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct InvoiceAnswer {
    id: String,
    store_id: String,
    status: InvoiceStatus,
    #[serde(default = "no_additional_status")]
    additional_status: AdditionalStatus,
    amount: String,
    #[serde(default)]
    paid_amount: Option<String>,
    currency: String,
    #[serde(default)]
    checkout_link: String,
    created_time: i64,
    expiration_time: i64,
    #[serde(default)]
    metadata: Option<MetadataAnswer>,
}

fn no_additional_status() -> AdditionalStatus {
    AdditionalStatus::None
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct MetadataAnswer {
    #[serde(default)]
    order_id: Option<String>,
    #[serde(default)]
    buyer_email: Option<serde_json::Value>,
}

impl TryFrom<InvoiceAnswer> for Invoice {
    type Error = ClientError;

    fn try_from(answer: InvoiceAnswer) -> Result<Self> {
        let currency: Currency = answer
            .currency
            .parse()
            .map_err(|_| ClientError::Unexpected("an invoice's currency is not ISO 4217".into()))?;
        let money = |text: &str| -> std::result::Result<Money, MoneyError> {
            crate::parse_fiat_amount(text, currency)
        };
        let bad_amount = |_| ClientError::Unexpected("an invoice's amount is not a decimal".into());
        Ok(Self {
            amount: money(&answer.amount).map_err(bad_amount)?,
            paid_amount: answer
                .paid_amount
                .as_deref()
                .map_or(Ok(Money::zero(currency)), money)
                .map_err(bad_amount)?,
            currency,
            id: answer.id,
            store_id: answer.store_id,
            status: answer.status,
            additional_status: answer.additional_status,
            checkout_link: answer.checkout_link,
            created_time: answer.created_time,
            expiration_time: answer.expiration_time,
            buyer_email: answer
                .metadata
                .as_ref()
                .and_then(|m| m.buyer_email.as_ref())
                .and_then(serde_json::Value::as_str)
                .and_then(|raw| Email::parse(raw).ok()),
            order_id: answer.metadata.and_then(|m| m.order_id),
        })
    }
}

impl BtcpayClient {
    /// A client of the store `store_id` on the BTCPay Server at `base` (e.g.
    /// `https://btcpay.example.org/`), each call bounded by `timeout`.
    #[must_use]
    pub fn new(base: Url, store_id: String, api_key: SecretString, timeout: Duration) -> Self {
        let connector = hyper_rustls::HttpsConnectorBuilder::new()
            .with_webpki_roots()
            .https_or_http()
            .enable_http1()
            .build();
        Self {
            base,
            store_id,
            api_key,
            timeout,
            http: Client::builder(TokioExecutor::new()).build(connector),
        }
    }

    /// The client the settings describe, or `None` while the rail is off (no URL, store
    /// or API key).
    #[must_use]
    pub fn from_settings(settings: &kopilka_config::BtcpaySettings) -> Option<Self> {
        let (url, store_id, api_key) = settings.connection()?;
        Some(Self::new(
            url.clone(),
            store_id.to_owned(),
            api_key.clone(),
            Duration::from_secs(u64::from(settings.timeout_secs)),
        ))
    }

    /// The store this client speaks for.
    #[must_use]
    pub fn store_id(&self) -> &str {
        &self.store_id
    }

    /// `POST /api/v1/stores/{storeId}/invoices`: an invoice for one contribution, in its
    /// fiat currency.
    ///
    /// # Errors
    /// [`ClientError::Config`] for an amount that is not positive; otherwise BTCPay's
    /// refusal, unavailability or an unexpected answer.
    pub async fn create_invoice(&self, new: &NewInvoice<'_>) -> Result<Invoice> {
        if !new.amount.is_positive() {
            return Err(ClientError::Config(
                "an invoice's amount must be positive".into(),
            ));
        }
        let body = CreateInvoiceBody {
            amount: crate::fiat_amount(new.amount),
            currency: new.amount.currency().iso_code(),
            metadata: MetadataBody {
                order_id: new.order_id,
                buyer_email: new.buyer_email.map(Email::expose),
            },
            checkout: CheckoutBody {
                redirect_url: new.redirect_url,
                expiration_minutes: new.expiration_minutes,
                redirect_automatically: new.redirect_automatically,
            },
        };
        let body = serde_json::to_vec(&body)
            .map_err(|_| ClientError::Config("the invoice did not serialise".into()))?;
        let url = self.url(&["api", "v1", "stores", &self.store_id, "invoices"], &[])?;
        let answer: InvoiceAnswer = self.call(http::Method::POST, url, Some(body)).await?;
        answer.try_into()
    }

    /// `GET /api/v1/invoices/{invoiceId}`.
    ///
    /// # Errors
    /// BTCPay's refusal (`404` for an unknown invoice), unavailability or an unexpected
    /// answer.
    pub async fn invoice(&self, invoice_id: &str) -> Result<Invoice> {
        let url = self.url(&["api", "v1", "invoices", invoice_id], &[])?;
        let answer: InvoiceAnswer = self.call(http::Method::GET, url, None).await?;
        answer.try_into()
    }

    /// `GET /api/v1/stores/{storeId}/invoices` with `query`'s filters, newest first as
    /// BTCPay lists them.
    ///
    /// # Errors
    /// BTCPay's refusal, unavailability or an unexpected answer.
    pub async fn invoices(&self, query: &InvoiceQuery) -> Result<Vec<Invoice>> {
        let mut pairs: Vec<(&str, String)> = Vec::new();
        pairs.extend(query.order_ids.iter().map(|id| ("orderId", id.clone())));
        pairs.extend(
            query
                .statuses
                .iter()
                .map(|status| ("status", status.as_str().to_owned())),
        );
        pairs.extend(query.start_date.map(|d| ("startDate", d.to_string())));
        pairs.extend(query.end_date.map(|d| ("endDate", d.to_string())));
        pairs.extend(query.skip.map(|n| ("skip", n.to_string())));
        pairs.extend(query.take.map(|n| ("take", n.to_string())));
        let url = self.url(&["api", "v1", "stores", &self.store_id, "invoices"], &pairs)?;
        let answers: Vec<InvoiceAnswer> = self.call(http::Method::GET, url, None).await?;
        answers.into_iter().map(Invoice::try_from).collect()
    }

    /// `GET /api/v1/invoices/{invoiceId}/payment-methods`: the crypto amounts, rates and
    /// payments of an invoice.
    ///
    /// # Errors
    /// BTCPay's refusal, unavailability or an unexpected answer.
    pub async fn payment_methods(&self, invoice_id: &str) -> Result<Vec<PaymentMethod>> {
        let url = self.url(
            &["api", "v1", "invoices", invoice_id, "payment-methods"],
            &[],
        )?;
        self.call(http::Method::GET, url, None).await
    }

    fn url(&self, segments: &[&str], query: &[(&str, String)]) -> Result<Url> {
        let mut url = self.base.clone();
        {
            let mut path = url
                .path_segments_mut()
                .map_err(|()| ClientError::Config("the BTCPay URL cannot be a base".into()))?;
            path.pop_if_empty();
            path.extend(segments);
        }
        if !query.is_empty() {
            url.query_pairs_mut().extend_pairs(query);
        }
        Ok(url)
    }

    async fn call<T: serde::de::DeserializeOwned>(
        &self,
        method: http::Method,
        url: Url,
        body: Option<Vec<u8>>,
    ) -> Result<T> {
        let mut request = http::Request::builder()
            .method(method)
            .uri(url.as_str())
            .header(
                http::header::AUTHORIZATION,
                format!("token {}", self.api_key.expose_secret()),
            )
            .header(http::header::ACCEPT, "application/json");
        if body.is_some() {
            request = request.header(http::header::CONTENT_TYPE, "application/json");
        }
        let request = request
            .body(Full::new(Bytes::from(body.unwrap_or_default())))
            .map_err(|_| ClientError::Config("the request could not be formed".into()))?;
        let (status, bytes) = tokio::time::timeout(self.timeout, async {
            let response = self.http.request(request).await.map_err(|_| {
                ClientError::Unavailable("the request did not complete (network or TLS)".into())
            })?;
            let status = response.status().as_u16();
            let limited = http_body_util::Limited::new(response.into_body(), MAX_ANSWER);
            let bytes = limited
                .collect()
                .await
                .map_err(|_| ClientError::Unavailable("the answer did not arrive whole".into()))?
                .to_bytes();
            Ok::<_, ClientError>((status, bytes))
        })
        .await
        .map_err(|_| ClientError::Unavailable("timed out".into()))??;
        if !(200..300).contains(&status) {
            return Err(ClientError::from_answer(status, &bytes));
        }
        serde_json::from_slice(&bytes)
            .map_err(|_| ClientError::Unexpected("the answer did not parse".into()))
    }
}
