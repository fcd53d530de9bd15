//! `kopilka admin experiments show NAME`: one experiment whole, its spec included:
//! `{"id","name","status","spec","created_at","started_at","stopped_at"}`.

use crate::output::{self, Format};

/// Options.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The experiment's name.
    name: String,
    /// Output format.
    #[arg(long, value_enum, default_value_t)]
    format: Format,
}

pub async fn run(args: &Args) -> anyhow::Result<()> {
    let (_settings, pool) = super::connect().await?;
    let row = kopilka_experiments::store::show(&pool, &args.name).await?;
    if args.format == Format::Json {
        output::line(&serde_json::to_string(&row)?);
        return Ok(());
    }
    let rows: Vec<Vec<String>> = row
        .spec
        .variants
        .iter()
        .map(|v| {
            vec![
                row.name.clone(),
                row.status.as_str().to_owned(),
                v.key.clone(),
                v.control.to_string(),
                v.weight.to_string(),
                serde_json::to_string(v).unwrap_or_default(),
            ]
        })
        .collect();
    output::rows(
        args.format,
        &[
            "experiment",
            "status",
            "variant",
            "control",
            "weight",
            "overrides",
        ],
        &rows,
    );
    Ok(())
}
