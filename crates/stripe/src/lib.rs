//! Kopilka's Stripe edge, the only crate that names async-stripe types.
//!
//! - [`webhook`]: signature verification written to Stripe's published scheme (every `v1`
//!   against every configured secret, so rotation never rejects a valid event), and signing
//!   for the simulator and tests.
//! - [`StripeClient`]: async-stripe underneath, idempotency keys from Kopilka's ids,
//!   answers as Kopilka's own types, errors with Stripe's code kept.
//! - [`event`]: the lenient event envelope: unknown event types and fields are kept, never
//!   rejected; `data.object` stays raw JSON for the owning crate to read.

mod client;
pub mod event;
mod lists;
pub mod webhook;

pub use client::{CheckoutSession, ClientError, NewCheckout, Refund, StripeClient, Subscription};
pub use event::{Event, EventError, api_version};
pub use lists::{
    BalanceRecord, ChargeRecord, DisputeState, MovementRecord, PaymentFee, PayoutRecord, Settlement,
};
pub use webhook::{SignatureError, WebhookError, WebhookVerifier, sign};
