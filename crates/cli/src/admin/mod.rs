//! `kopilka admin …`: one file per command. Every command takes `--format table|json|csv`;
//! json is one document on stdout.

mod abuse;
mod abuse_block;
mod abuse_status;
mod abuse_unblock;
mod config;
mod events_list;
mod events_replay;
mod experiments_create;
mod experiments_list;
mod experiments_report;
mod experiments_show;
mod experiments_status;
mod keys_rotate;
mod reader;
mod reader_erase;
mod reader_export;
mod reader_show;
mod reconcile;
mod recurring_list;
mod report_attention;
mod report_fraud_warnings;
mod report_goal;
mod report_mrr;
mod report_payouts;
mod report_totals;
mod statements_send;

use crate::output::Format;

/// Administration commands.
#[derive(Debug, clap::Subcommand)]
pub enum Command {
    /// Print the effective configuration (every layer applied), secrets redacted.
    Config {
        /// Output format.
        #[arg(long, value_enum, default_value_t)]
        format: Format,
    },
    /// Reports from the ledger and plans.
    #[command(subcommand)]
    Report(Report),
    /// Recurring plans.
    #[command(subcommand)]
    Recurring(Recurring),
    /// Stored Stripe events.
    #[command(subcommand)]
    Events(Events),
    /// Find (and with --apply, repair) drift between Stripe and Kopilka.
    Reconcile(reconcile::Args),
    /// The supporter token's signing keys.
    #[command(subcommand)]
    Keys(Keys),
    /// One reader, by address: show, export (GDPR) or erase. Every use is audited.
    #[command(subcommand)]
    Reader(Reader),
    /// Year-end statements of what each reader gave.
    #[command(subcommand)]
    Statements(Statements),
    /// The card-testing shield: show it, block and unblock clients and addresses, hold or
    /// end the under-attack state. Every use is audited.
    #[command(subcommand)]
    Abuse(Abuse),
    /// Ask experiments: create one from a spec, list, show, start, pause, stop, report.
    /// Changes are audited.
    #[command(subcommand)]
    Experiments(Experiments),
}

/// `admin experiments …`.
#[derive(Debug, clap::Subcommand)]
pub enum Experiments {
    /// Create a draft from a spec file (checked against the offer; nothing invalid stored).
    Create(experiments_create::Args),
    /// Every experiment.
    List(experiments_list::Args),
    /// One experiment, its spec included.
    Show(experiments_show::Args),
    /// Start (or resume) serving it.
    Start(experiments_status::Args),
    /// Stop serving it for now.
    Pause(experiments_status::Args),
    /// End it for good.
    Stop(experiments_status::Args),
    /// What it measured per variant: views, clicks, checkouts, payments, revenue, first-year
    /// value per 1 000 views with its credible interval, the probability to beat the
    /// control, the bandit's shares (`--format html` draws it).
    Report(experiments_report::Args),
}

/// `admin abuse …`.
#[derive(Debug, clap::Subcommand)]
pub enum Abuse {
    /// Whether checkout is under attack, why, and every block in force.
    Status(abuse_status::Args),
    /// Refuse checkout to a client or address for a while, or hold the under-attack state.
    Block(abuse_block::Args),
    /// Lift a block, or declare the attack over.
    Unblock(abuse_unblock::Args),
}

/// `admin statements …`.
#[derive(Debug, clap::Subcommand)]
pub enum Statements {
    /// Queue a statement for every reader who gave in the (fiscal) year; the worker sends
    /// them, once each.
    Send(statements_send::Args),
}

/// `admin keys …`.
#[derive(Debug, clap::Subcommand)]
pub enum Keys {
    /// Add a new signing key; the previous one keeps verifying, older ones retire after the
    /// grace period (`paywall.rotation_grace_hours`).
    Rotate(keys_rotate::Args),
}

/// `admin reader …`.
#[derive(Debug, clap::Subcommand)]
pub enum Reader {
    /// The reader's id, status and counts (no PII beyond what was typed).
    Show(reader_show::Args),
    /// Everything held about the reader, as JSON.
    Export(reader_export::Args),
    /// Erase the reader's PII (the ledger stays; Stripe's customer is cleared by a job).
    Erase(reader_erase::Args),
}

/// `admin report …`.
#[derive(Debug, clap::Subcommand)]
pub enum Report {
    /// Gross, refunded, net and count of payments per currency, from the ledger.
    Totals(report_totals::Args),
    /// The monthly funding goal's progress, computed now.
    Goal(report_goal::Args),
    /// Monthly recurring revenue and churn per month, from the ledger.
    Mrr(report_mrr::Args),
    /// Each payout, its balance transactions and our ledger rows; what does not add up.
    Payouts(report_payouts::Args),
    /// Every early fraud warning Stripe sent, with its contribution and what is left of it.
    FraudWarnings(report_fraud_warnings::Args),
    /// Payments that ended where a person must decide (crypto paid partly, late, too much…).
    Attention(report_attention::Args),
}

/// `admin recurring …`.
#[derive(Debug, clap::Subcommand)]
pub enum Recurring {
    /// Every plan.
    List(recurring_list::Args),
}

/// `admin events …`.
#[derive(Debug, clap::Subcommand)]
pub enum Events {
    /// Stored events, optionally by status.
    List(events_list::Args),
    /// Apply stored events again (one by id, or every failed one).
    Replay(events_replay::Args),
}

pub async fn run(command: Command) -> anyhow::Result<()> {
    match command {
        Command::Config { format } => config::run(format),
        Command::Report(Report::Totals(args)) => report_totals::run(&args).await,
        Command::Report(Report::Goal(args)) => report_goal::run(&args).await,
        Command::Report(Report::Mrr(args)) => report_mrr::run(&args).await,
        Command::Report(Report::Payouts(args)) => report_payouts::run(&args).await,
        Command::Report(Report::FraudWarnings(args)) => report_fraud_warnings::run(&args).await,
        Command::Report(Report::Attention(args)) => report_attention::run(&args).await,
        Command::Recurring(Recurring::List(args)) => recurring_list::run(&args).await,
        Command::Events(Events::List(args)) => events_list::run(&args).await,
        Command::Events(Events::Replay(args)) => events_replay::run(&args).await,
        Command::Reconcile(args) => reconcile::run(&args).await,
        Command::Keys(Keys::Rotate(args)) => keys_rotate::run(&args).await,
        Command::Reader(Reader::Show(args)) => reader_show::run(&args).await,
        Command::Reader(Reader::Export(args)) => reader_export::run(&args).await,
        Command::Reader(Reader::Erase(args)) => reader_erase::run(&args).await,
        Command::Statements(Statements::Send(args)) => statements_send::run(&args).await,
        Command::Abuse(Abuse::Status(args)) => abuse_status::run(&args).await,
        Command::Experiments(Experiments::Create(args)) => experiments_create::run(&args).await,
        Command::Experiments(Experiments::List(args)) => experiments_list::run(&args).await,
        Command::Experiments(Experiments::Show(args)) => experiments_show::run(&args).await,
        Command::Experiments(Experiments::Report(args)) => experiments_report::run(&args).await,
        Command::Experiments(Experiments::Start(args)) => {
            experiments_status::run(&args, kopilka_experiments::Status::Running).await
        }
        Command::Experiments(Experiments::Pause(args)) => {
            experiments_status::run(&args, kopilka_experiments::Status::Paused).await
        }
        Command::Experiments(Experiments::Stop(args)) => {
            experiments_status::run(&args, kopilka_experiments::Status::Stopped).await
        }
        Command::Abuse(Abuse::Block(args)) => abuse_block::run(&args).await,
        Command::Abuse(Abuse::Unblock(args)) => abuse_unblock::run(&args).await,
    }
}

/// Settings, logs and the pool, as every database-backed admin command needs.
async fn connect() -> anyhow::Result<(kopilka_config::Settings, kopilka_store::PgPool)> {
    let settings = kopilka_config::load()?;
    crate::logging::init(&settings.log);
    let pool = crate::database::pool(&settings)?;
    kopilka_store::ping(&pool).await?;
    Ok((settings, pool))
}

/// Records in the audit log that the operator (`KOPILKA_ADMIN_ACTOR`, else the OS user) ran
/// `action`, a command that reads or changes donor data; `detail` holds counts and ids only.
async fn audit_command(
    pool: &kopilka_store::PgPool,
    action: &str,
    detail: serde_json::Value,
) -> anyhow::Result<()> {
    let mut conn = pool.acquire().await?;
    kopilka_accounts::audit::record(&mut conn, &reader::actor_name(None), action, None, &detail)
        .await?;
    Ok(())
}

/// A day (`2026-11-01`, midnight UTC) or an instant (RFC 3339).
pub fn parse_when(text: &str) -> Result<time::OffsetDateTime, String> {
    use time::format_description::well_known::Rfc3339;
    if let Ok(at) = time::OffsetDateTime::parse(text, &Rfc3339) {
        return Ok(at);
    }
    let format = time::macros::format_description!("[year]-[month]-[day]");
    time::Date::parse(text, &format)
        .map(|date| date.midnight().assume_utc())
        .map_err(|_| {
            format!(
                "expected a day (2026-11-01) or an instant (2026-11-01T00:00:00Z), got {text:?}"
            )
        })
}
