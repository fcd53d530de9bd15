//! Kopilka's BTCPay Server edge, the only crate that knows BTCPay's Greenfield shapes.
//!
//! - [`BtcpayClient`]: the Greenfield API over HTTPS (hyper with rustls): create, get and
//!   list invoices of one store, and an invoice's payment methods (the crypto amount and
//!   rate). Requests and answers are small typed structs holding only what Kopilka needs:
//!   the reader's email goes to BTCPay only when a caller passes one.
//! - [`webhook`]: `BTCPay-Sig: sha256=<hex HMAC-SHA256(secret, raw body)>` checked in
//!   constant time against every configured secret (so a secret can be rolled), and
//!   signing for the simulator and tests.
//! - [`delivery`]: the lenient delivery envelope: unknown event types and fields are
//!   kept or ignored, never rejected; only allowlisted fields are read.

mod amount;
mod client;
pub mod delivery;
mod error;
pub mod webhook;

pub use amount::{fiat_amount, is_positive_decimal, parse_crypto_amount, parse_fiat_amount};
pub use client::{
    AdditionalStatus, BtcpayClient, Invoice, InvoiceQuery, InvoiceStatus, NewInvoice,
    PaymentMethod, PaymentRecord, PaymentStatus,
};
pub use delivery::{Delivery, DeliveryError, EventKind};
pub use error::{ClientError, ValidationError};
pub use webhook::{SignatureError, WebhookError, WebhookVerifier, sign};
