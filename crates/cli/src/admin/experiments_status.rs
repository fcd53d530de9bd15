//! `kopilka admin experiments start|pause|stop NAME`: an experiment's lifecycle (draft →
//! running ⇄ paused → stopped, stopped for good). Starting checks the spec against today's
//! offer again. Audited as `experiments.start`, `.pause`, `.stop`.

use kopilka_experiments::{ExperimentRow, Status};

use crate::output::{self, Format};

/// Options.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The experiment's name.
    name: String,
    /// Who runs the command, for the audit log (default: the OS user).
    #[arg(long, env = "KOPILKA_ADMIN_ACTOR")]
    actor: Option<String>,
    /// Output format.
    #[arg(long, value_enum, default_value_t)]
    format: Format,
}

pub async fn run(args: &Args, next: Status) -> anyhow::Result<()> {
    let (settings, pool) = super::connect().await?;
    let changed =
        kopilka_experiments::store::transition(&pool, &settings.offer, &args.name, next).await?;
    let action = match next {
        Status::Running => "experiments.start",
        Status::Paused => "experiments.pause",
        _ => "experiments.stop",
    };
    audit(&pool, args.actor.as_deref(), action, &changed).await?;
    print(args.format, &changed)
}

pub(super) async fn audit(
    pool: &kopilka_store::PgPool,
    actor: Option<&str>,
    action: &str,
    row: &ExperimentRow,
) -> anyhow::Result<()> {
    let mut conn = pool.acquire().await?;
    kopilka_accounts::audit::record(
        &mut conn,
        &super::reader::actor_name(actor),
        action,
        None,
        &serde_json::json!({"experiment": row.name, "status": row.status}),
    )
    .await?;
    Ok(())
}

/// `{"id","name","status","method","variants"}`.
pub(super) fn print(format: Format, row: &ExperimentRow) -> anyhow::Result<()> {
    let variants: Vec<&str> = row.spec.variants.iter().map(|v| v.key.as_str()).collect();
    if format == Format::Json {
        output::line(
            &serde_json::json!({"id": row.id, "name": row.name, "status": row.status,
                                "method": row.spec.method, "variants": variants})
            .to_string(),
        );
        return Ok(());
    }
    output::rows(
        format,
        &["name", "status", "method", "variants"],
        &[vec![
            row.name.clone(),
            row.status.as_str().to_owned(),
            row.spec.method.as_str().to_owned(),
            variants.join(" "),
        ]],
    );
    Ok(())
}
