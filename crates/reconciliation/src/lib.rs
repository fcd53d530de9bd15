//! Stripe webhook reconciliation: the inbox (every verified event stored once, with its
//! processing job, in one transaction, before it is acknowledged) and the application of
//! each event to the owning crate's facts — idempotent, order-proof, and with no Stripe call.
//! Owns `provider_events`, the inbox every provider's events are stored in (each row names
//! its provider): Stripe's events ([`inbox::receive`]) and BTCPay Server's deliveries
//! ([`inbox::receive_btcpay`]). Stripe's events are applied from their objects, with no
//! Stripe call; a BTCPay delivery about one of Kopilka's invoices is applied by reading the
//! invoice as it stands from BTCPay (deliveries name no amounts; [`apply_btcpay_event`]).

mod apply;
pub mod btcpay_drift;
pub mod drift;
mod error;
pub mod fraud;
pub mod inbox;
pub mod payouts;
pub mod pii;
pub mod privacy;
pub mod projection;
pub mod upgrade;

pub use apply::{Outcome, apply_btcpay_event, apply_event};
pub use error::ReconciliationError;

/// The job kind that applies one stored event; its payload is `{"event_id": "evt_…"}`.
pub const APPLY_EVENT: &str = "stripe_event";
/// The job kind that processes one stored BTCPay delivery; its payload is
/// `{"event_id": "<originalDeliveryId>"}`.
pub const APPLY_BTCPAY_EVENT: &str = "btcpay_event";
