//! `kopilka admin experiments list`: every experiment, newest first:
//! `{"experiments":[{"name","status","method","priority","variants","created_at"}]}`.

use crate::output::{self, Format};

/// Options.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Output format.
    #[arg(long, value_enum, default_value_t)]
    format: Format,
}

pub async fn run(args: &Args) -> anyhow::Result<()> {
    let (_settings, pool) = super::connect().await?;
    let rows = kopilka_experiments::store::list(&pool).await?;
    let when = |at: time::OffsetDateTime| {
        at.format(&time::format_description::well_known::Rfc3339)
            .unwrap_or_default()
    };
    if args.format == Format::Json {
        let listed: Vec<serde_json::Value> = rows
            .iter()
            .map(|r| {
                serde_json::json!({"name": r.name, "status": r.status, "method": r.spec.method,
                                   "priority": r.spec.priority, "variants": r.spec.variants.len(),
                                   "created_at": when(r.created_at)})
            })
            .collect();
        output::line(&serde_json::json!({ "experiments": listed }).to_string());
        return Ok(());
    }
    let table: Vec<Vec<String>> = rows
        .iter()
        .map(|r| {
            vec![
                r.name.clone(),
                r.status.as_str().to_owned(),
                r.spec.method.as_str().to_owned(),
                r.spec.priority.to_string(),
                r.spec.variants.len().to_string(),
                when(r.created_at),
            ]
        })
        .collect();
    output::rows(
        args.format,
        &[
            "name",
            "status",
            "method",
            "priority",
            "variants",
            "created_at",
        ],
        &table,
    );
    Ok(())
}
