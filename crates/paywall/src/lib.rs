//! The paywall's stateless parts, answered from memory and signatures on every page view:
//!
//! - the **supporter token**: an EdDSA (Ed25519) JWT with `sub` (an opaque reader id),
//!   `supporter`, `tier`/`interval`, `paid_through`, `hide_asks_until`, `iss`, `aud`, `iat`,
//!   `exp` and a `kid`; [`Keyring`] signs it, verifies it (algorithm pinned, `exp`/`aud`/`iss`
//!   required, unknown `kid` refused) and publishes the JWKS a site or CDN verifies with;
//! - the **meter**: free articles per calendar month in a signed cookie (tampering starts
//!   it afresh, never unlimited).
//!
//! Key material is never stored: each key's Ed25519 seed is derived from the configured
//! secret and the key's id, so the database holds only which ids exist and when they retire.

mod decision;
mod keyring;
mod meter;

pub use decision::{Decision, decide};
pub use keyring::{KeyRecord, Keyring, SupporterClaims, TokenError};
pub use meter::{Meter, MeterMode, MeterView};
