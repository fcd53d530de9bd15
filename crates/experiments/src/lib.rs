//! Ask experiments (issue #21): amounts, defaults and copy tested per audience. An
//! experiment is data: a spec (targeting, schedule, method, holdback and variants that
//! override parts of the ask), validated against the offer when it is created, and a
//! lifecycle (`draft` → `running` ⇄ `paused` → `stopped`). Owns `experiments` and
//! `experiment_counts`. Every change is announced on [`CHANNEL`] so each instance reloads
//! what it serves.
//!
//! - [`assign`]: a stable variant per first-party visitor id, the holdback first;
//! - [`live`]: what an instance serves from memory, with its in-memory counts, flushed in
//!   batches;
//! - [`report`] and [`stats`]: what each variant measured and its posterior first-year value
//!   per view;
//! - [`bandit`]: Thompson sampling's traffic shares, recomputed by the worker.

pub mod assign;
pub mod bandit;
mod error;
pub mod html;
pub mod live;
pub mod report;
pub mod spec;
pub mod stats;
pub mod store;

pub use assign::Assignment;
pub use error::ExperimentError;
pub use spec::{ExperimentSpec, Method, Refusal};
pub use store::{CHANNEL, ExperimentRow, Status};
