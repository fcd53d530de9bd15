//! Ask experiments (issue #21): amounts, defaults and copy tested per audience. An
//! experiment is data: a spec (targeting, schedule, method, holdback and variants that
//! override parts of the ask), validated against the offer when it is created, and a
//! lifecycle (`draft` → `running` ⇄ `paused` → `stopped`). Owns `experiments`. Every change
//! is announced on [`CHANNEL`] so each instance reloads what it serves.
//!
//! Assignment, counting and the bandit build on this (see the README's "Ask experiments").

pub mod assign;
mod error;
pub mod live;
pub mod spec;
pub mod store;

pub use assign::Assignment;
pub use error::ExperimentError;
pub use spec::{ExperimentSpec, Method, Refusal};
pub use store::{CHANNEL, ExperimentRow, Status};
