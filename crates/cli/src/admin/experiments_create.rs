//! `kopilka admin experiments create --file SPEC.json` (`-` reads stdin): an experiment as a
//! draft, after checking its spec against the offer (each mistake refused with its code,
//! nothing stored). Audited as `experiments.create`.

use std::io::Read as _;

use crate::output::Format;

/// Options.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The spec (JSON; see the README's "Ask experiments"), or `-` for stdin.
    #[arg(long)]
    file: String,
    /// Who runs the command, for the audit log (default: the OS user).
    #[arg(long, env = "KOPILKA_ADMIN_ACTOR")]
    actor: Option<String>,
    /// Output format.
    #[arg(long, value_enum, default_value_t)]
    format: Format,
}

pub async fn run(args: &Args) -> anyhow::Result<()> {
    let text = if args.file == "-" {
        let mut text = String::new();
        std::io::stdin().read_to_string(&mut text)?;
        text
    } else {
        std::fs::read_to_string(&args.file)
            .map_err(|e| anyhow::anyhow!("cannot read {}: {e}", args.file))?
    };
    let spec: kopilka_experiments::ExperimentSpec = serde_json::from_str(&text)
        .map_err(|e| anyhow::anyhow!("invalid_spec: the spec does not read: {e}"))?;
    let (settings, pool) = super::connect().await?;
    let created = kopilka_experiments::store::create(&pool, &settings.offer, &spec).await?;
    super::experiments_status::audit(&pool, args.actor.as_deref(), "experiments.create", &created)
        .await?;
    super::experiments_status::print(args.format, &created)
}
