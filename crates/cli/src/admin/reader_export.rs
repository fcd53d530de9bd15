//! `kopilka admin reader export` (address on stdin or `--email-file`): everything held
//! about the reader, one JSON document (GDPR access and portability), including the stored
//! Stripe events linked to them and every email send.

use super::reader::{Target, audit};
use crate::output;

/// Options.
#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(flatten)]
    target: Target,
}

pub async fn run(args: &Args) -> anyhow::Result<()> {
    let (_, pool) = super::connect().await?;
    let id = args.target.reader(&pool, "reader.export").await?;
    let mut tx = pool.begin().await?;
    let export = kopilka_jobs::privacy::export_reader(&mut tx, id).await?;
    audit(
        &mut tx,
        &args.target,
        "reader.export",
        id,
        serde_json::json!({"stripe_events": export.stripe_events.len(),
            "email_sends": export.email_sends.len()}),
    )
    .await?;
    tx.commit().await?;
    output::line(&serde_json::to_string(&export)?);
    Ok(())
}
