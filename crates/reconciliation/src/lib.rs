//! Stripe webhook reconciliation: the inbox (every verified event stored once, with its
//! processing job, in one transaction, before it is acknowledged) and the application of
//! each event to the owning crate's facts — idempotent, order-proof, and with no Stripe call.
//! Owns `provider_events`, the inbox every provider's events are stored in (each row names
//! its provider; the events applied here are Stripe's).

mod apply;
pub mod drift;
mod error;
pub mod fraud;
pub mod inbox;
pub mod payouts;
pub mod pii;
pub mod privacy;
pub mod projection;
pub mod upgrade;

pub use apply::{Outcome, apply_event};
pub use error::ReconciliationError;

/// The job kind that applies one stored event; its payload is `{"event_id": "evt_…"}`.
pub const APPLY_EVENT: &str = "stripe_event";
