//! `kopilka admin abuse block (--ip IP | --address | --email-file F | --key KIND:KEY |
//! --under-attack) [--for DURATION]`: refuse checkout to a client or an address for a
//! while (default `abuse.block_secs`), or hold checkout under attack (challenge and raised
//! minimum) for a while. Audited.

use super::abuse::{Resolved, Subject, parse_duration};
use crate::output::{self, Format};

/// Options.
#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(flatten)]
    subject: Subject,
    /// How long: 90s, 30m, 6h, 2d (default: `abuse.block_secs`; for --under-attack, the
    /// shield's window).
    #[arg(long = "for", value_name = "DURATION", value_parser = parse_duration)]
    duration: Option<i64>,
    /// Who runs the command, for the audit log (default: the OS user).
    #[arg(long, env = "KOPILKA_ADMIN_ACTOR")]
    actor: Option<String>,
    /// Output format.
    #[arg(long, value_enum, default_value_t)]
    format: Format,
}

pub async fn run(args: &Args) -> anyhow::Result<()> {
    let (settings, pool) = super::connect().await?;
    let actor = super::reader::actor_name(args.actor.as_deref());
    let (subject, secs) = match args.subject.resolve(&settings)? {
        Resolved::UnderAttack => {
            let secs = args
                .duration
                .unwrap_or_else(|| i64::from(settings.abuse.window_secs));
            kopilka_contributions::shield::force_attack(&pool, &actor, secs).await?;
            ("under_attack".to_owned(), secs)
        }
        Resolved::Key(kind, key) => {
            let secs = args
                .duration
                .unwrap_or_else(|| i64::from(settings.abuse.block_secs));
            kopilka_contributions::shield::block(&pool, &actor, kind, &key, secs).await?;
            (format!("{}:{key}", kind.as_str()), secs)
        }
    };
    let until = time::OffsetDateTime::now_utc() + time::Duration::seconds(secs);
    let until = until.format(&time::format_description::well_known::Rfc3339)?;
    if args.format == Format::Json {
        output::line(
            &serde_json::json!({"blocked": subject, "secs": secs, "until": until}).to_string(),
        );
    } else {
        output::rows(
            args.format,
            &["blocked", "secs", "until"],
            &[vec![subject, secs.to_string(), until]],
        );
    }
    Ok(())
}
