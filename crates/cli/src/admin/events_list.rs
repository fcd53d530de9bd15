//! `kopilka admin events list [--status pending|processed|ignored|failed]`: every provider's
//! stored events, each naming its provider.

use crate::output::{self, Format};

/// Which events.
#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum Status {
    /// Not applied yet (or waiting for another event).
    Pending,
    /// Applied.
    Processed,
    /// Stored, not acted on.
    Ignored,
    /// Could not be applied; see `events replay --failed`.
    Failed,
}

/// Options.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Only events with this status.
    #[arg(long, value_enum)]
    status: Option<Status>,
    /// Output format.
    #[arg(long, value_enum, default_value_t)]
    format: Format,
}

pub async fn run(args: &Args) -> anyhow::Result<()> {
    let (_, pool) = super::connect().await?;
    let status = args.status.map(|s| match s {
        Status::Pending => "pending",
        Status::Processed => "processed",
        Status::Ignored => "ignored",
        Status::Failed => "failed",
    });
    let events = kopilka_reconciliation::inbox::list(&pool, status).await?;
    super::audit_command(
        &pool,
        "events.list",
        serde_json::json!({"events": events.len()}),
    )
    .await?;
    if args.format == Format::Json {
        let document: Vec<serde_json::Value> = events
            .iter()
            .map(|e| {
                serde_json::json!({"id": e.id, "type": e.event_type, "status": e.status,
                                   "provider": e.provider})
            })
            .collect();
        output::line(&serde_json::Value::Array(document).to_string());
        return Ok(());
    }
    let rows: Vec<Vec<String>> = events
        .iter()
        .map(|e| {
            vec![
                e.id.clone(),
                e.event_type.clone(),
                e.status.clone(),
                e.last_error.clone().unwrap_or_default(),
                e.provider.to_string(),
            ]
        })
        .collect();
    output::rows(
        args.format,
        &["id", "type", "status", "last_error", "provider"],
        &rows,
    );
    Ok(())
}
