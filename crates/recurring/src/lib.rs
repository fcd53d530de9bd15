//! Monthly and annual plans, mirroring Stripe subscriptions: the facts that create and move
//! them (subscription changed, invoice paid — each renewal a ledger row), the reader's
//! self-service changes through Stripe's subscription update (never cancel-and-recreate),
//! supporter status, and the monthly funding goal. Owns `recurring_plans` and `plan_invoices`.

mod error;
pub mod facts;
pub mod goal;
pub mod mrr;
mod plan;
pub mod privacy;
mod selfservice;
mod supporter;

pub use error::RecurringError;
pub use goal::{GoalCache, GoalFigure};
pub use plan::{Plan, list_plans, plan_by_id, plan_by_subscription, plans_of_reader};
pub use selfservice::{PlanChange, PlanLinkDone, card_update_page, change_plan, use_plan_link};
pub use supporter::{SupporterStatus, supporter_status};
