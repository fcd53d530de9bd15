//! Contributions: the checkout that starts one (one-off or the first payment of a plan), the
//! immutable payments ledger, and the facts from Stripe that move a contribution along
//! (paid, failed, abandoned, refunded, disputed). Owns `contributions`,
//! `checkout_requests`, `ledger_entries` and `ledger_payment_aliases` (see [`alias`]). No
//! PII: readers are referenced by id.
//!
//! Every fact function is idempotent (unique Stripe ids, `ON CONFLICT DO NOTHING`) and
//! order-proof (a stale fact never moves a contribution backwards).

pub mod alias;
mod checkout;
pub mod crypto;
mod error;
pub mod facts;
pub mod history;
pub mod ledger;
pub mod passes;
pub mod privacy;
pub mod shield;

pub use checkout::{
    CheckoutInput, CheckoutOutcome, CheckoutReturn, CheckoutStarted, ExperimentTag, Providers,
    Rail, ValidCheckout, forget_old_requests, open_outcome_cookie, open_return, outcome_cookie,
    start_checkout,
};
pub use error::{ContributionError, Refusal};
