//! `kopilka admin abuse unblock (--ip IP | --address | --email-file F | --key KIND:KEY |
//! --under-attack)`: lift a block (failures before now no longer count against that client
//! or address), or declare the attack over (the operator's hold ends and failures before
//! now no longer count towards the threshold; blocks stay until lifted). Audited.

use super::abuse::{Resolved, Subject};
use crate::output::{self, Format};

/// Options.
#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(flatten)]
    subject: Subject,
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
    let (subject, was_blocked) = match args.subject.resolve(&settings)? {
        Resolved::UnderAttack => {
            let before = kopilka_contributions::shield::status(&pool, &settings.abuse).await?;
            kopilka_contributions::shield::calm(&pool, &actor).await?;
            ("under_attack".to_owned(), before.under_attack)
        }
        Resolved::Key(kind, key) => {
            let was = kopilka_contributions::shield::unblock(&pool, &actor, kind, &key).await?;
            (format!("{}:{key}", kind.as_str()), was)
        }
    };
    if args.format == Format::Json {
        output::line(
            &serde_json::json!({"unblocked": subject, "was_blocked": was_blocked}).to_string(),
        );
    } else {
        output::rows(
            args.format,
            &["unblocked", "was_blocked"],
            &[vec![subject, was_blocked.to_string()]],
        );
    }
    Ok(())
}
