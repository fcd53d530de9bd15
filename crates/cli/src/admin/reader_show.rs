//! `kopilka admin reader show` (address on stdin or `--email-file`).

use super::reader::{Target, audit};
use crate::output::{self, Format};

/// Options.
#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(flatten)]
    target: Target,
    /// Output format.
    #[arg(long, value_enum, default_value_t)]
    format: Format,
}

pub async fn run(args: &Args) -> anyhow::Result<()> {
    let (_, pool) = super::connect().await?;
    let id = args.target.reader(&pool, "reader.show").await?;
    let mut tx = pool.begin().await?;
    let export = kopilka_recurring::privacy::export(&mut tx, id).await?;
    audit(
        &mut tx,
        &args.target,
        "reader.show",
        id,
        serde_json::json!({}),
    )
    .await?;
    tx.commit().await?;
    let pending = export
        .account
        .reminders
        .iter()
        .filter(|r| r.status == "pending")
        .count();
    let summary = serde_json::json!({
        "id": id,
        "verified": export.account.verified_at.is_some(),
        "has_password": export.account.has_password,
        "locale": export.account.locale,
        "contributions": export.contributions.len(),
        "plans": export.plans.len(),
        "pending_reminders": pending,
        "sessions": export.account.sessions.len(),
    });
    if args.format == Format::Json {
        output::line(&summary.to_string());
        return Ok(());
    }
    let header = [
        "id",
        "verified",
        "has_password",
        "locale",
        "contributions",
        "plans",
        "pending_reminders",
        "sessions",
    ];
    let row: Vec<String> = header
        .iter()
        .map(|key| match &summary[*key] {
            serde_json::Value::String(s) => s.clone(),
            other => other.to_string(),
        })
        .collect();
    output::rows(args.format, &header, &[row]);
    Ok(())
}
