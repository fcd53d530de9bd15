//! `kopilka admin experiments report NAME [--format table|json|csv|html] [--out FILE]`: per
//! variant views, clicks, checkouts, payments, conversion, revenue, first-year value per
//! 1 000 views with its 95 % credible interval, the probability to beat the control and the
//! current traffic share; the holdback; how payments are valued. `html` writes one
//! self-contained page with the same figures as charts (to `--out`, else stdout).

use crate::output::{self, Format};

/// How to print the report.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum ReportFormat {
    /// Aligned columns for people.
    #[default]
    Table,
    /// One JSON document.
    Json,
    /// Comma-separated values with a header row.
    Csv,
    /// A self-contained page with charts.
    Html,
}

/// Options.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The experiment's name.
    name: String,
    /// Output format.
    #[arg(long, value_enum, default_value_t)]
    format: ReportFormat,
    /// Write the output to this file instead of stdout.
    #[arg(long)]
    out: Option<std::path::PathBuf>,
}

pub async fn run(args: &Args) -> anyhow::Result<()> {
    let (settings, pool) = super::connect().await?;
    let report = kopilka_experiments::report::report(
        &pool,
        &settings.offer,
        &settings.experiments,
        &args.name,
    )
    .await?;
    let text = match args.format {
        ReportFormat::Json => Some(serde_json::to_string(&report)?),
        ReportFormat::Html => Some(kopilka_experiments::html::page(&report)),
        ReportFormat::Table | ReportFormat::Csv => None,
    };
    if let Some(text) = text {
        match &args.out {
            Some(path) => {
                std::fs::write(path, text)
                    .map_err(|e| anyhow::anyhow!("cannot write {}: {e}", path.display()))?;
                output::line(&serde_json::json!({"written": path}).to_string());
            }
            None => output::line(&text),
        }
        return Ok(());
    }
    let rows: Vec<Vec<String>> = report
        .variants
        .iter()
        .map(|v| {
            vec![
                v.key.clone(),
                v.control.to_string(),
                v.views.to_string(),
                v.clicks.to_string(),
                v.checkouts.to_string(),
                v.payments.to_string(),
                v.conversion_rate.clone(),
                v.revenue_minor.to_string(),
                v.value_per_1000_minor.to_string(),
                v.value_per_1000_low_minor.to_string(),
                v.value_per_1000_high_minor.to_string(),
                v.probability_to_beat_control
                    .map(|p| format!("{p:.4}"))
                    .unwrap_or_default(),
                v.share_bp.to_string(),
            ]
        })
        .collect();
    let format = if args.format == ReportFormat::Csv {
        Format::Csv
    } else {
        Format::Table
    };
    output::rows(
        format,
        &[
            "variant",
            "control",
            "views",
            "clicks",
            "checkouts",
            "payments",
            "conversion",
            "revenue_minor",
            "value_per_1000_minor",
            "low_minor",
            "high_minor",
            "p_beat_control",
            "share_bp",
        ],
        &rows,
    );
    Ok(())
}
