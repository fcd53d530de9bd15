//! Kopilka's domain: the newtypes every other crate speaks in, parsed at the edge so that
//! nothing deeper ever sees an unchecked amount, currency, interval or address.
//!
//! No I/O lives here. Amounts are integer minor units (as Stripe counts them) with an ISO 4217
//! currency ([`Money`]); Stripe's per-currency rules are one table ([`ChargeRules`]); the reader's address is PII and never prints ([`Email`]); ids are typed
//! so a contribution id cannot be passed where a reader id is expected ([`id`]); time
//! comes from an injected [`Clock`]; which payment provider a fact came from is a
//! [`Provider`].

mod charge_rules;
pub mod client;
mod clock;
mod currency;
mod email;
pub mod id;
mod interval;
mod locale;
mod money;
mod provider;
mod rate;
mod status;

pub use charge_rules::{ChargeRefusal, ChargeRules, stripe_currencies};
pub use clock::{Clock, FixedClock, SystemClock};
pub use currency::{Currency, CurrencyError};
pub use email::{Email, EmailError};
pub use interval::{Interval, IntervalError};
pub use locale::{Locale, LocaleError};
pub use money::{Money, MoneyError};
pub use provider::{Provider, ProviderError};
pub use rate::{Rate, RateError};
pub use status::{ContributionStatus, StatusError};
