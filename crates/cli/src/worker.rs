//! `kopilka worker`: runs background jobs. No job kind exists yet: the queue and its jobs
//! come with the webhook-reconciliation issue, so this says so instead of pretending.

use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use crate::output;

/// Options of `kopilka worker`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Run every job that is due, then exit.
    #[arg(long)]
    once: bool,
    /// With --once: treat this instant (RFC 3339) as now.
    #[arg(long, value_parser = parse_rfc3339, requires = "once")]
    as_of: Option<OffsetDateTime>,
}

fn parse_rfc3339(text: &str) -> Result<OffsetDateTime, String> {
    OffsetDateTime::parse(text, &Rfc3339)
        .map_err(|e| format!("expected RFC 3339 (2026-11-29T12:00:00Z): {e}"))
}

pub fn run(args: &Args) -> anyhow::Result<()> {
    let when = match args.as_of {
        Some(at) => at.format(&Rfc3339)?,
        None => "now".to_owned(),
    };
    let mode = if args.once {
        "run the jobs due"
    } else {
        "run jobs as they fall due"
    };
    output::line(&format!(
        "kopilka worker: would {mode} (as of {when}), but no job kinds exist yet; nothing to do"
    ));
    Ok(())
}
