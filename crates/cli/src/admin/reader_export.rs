//! `kopilka admin reader export EMAIL`: everything held about the reader, one JSON document
//! (GDPR access and portability).

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
    let mut tx = pool.begin().await?;
    let id = args.target.reader(&mut tx).await?;
    let export = kopilka_recurring::privacy::export(&mut tx, id).await?;
    audit(
        &mut tx,
        &args.target,
        "reader.export",
        id,
        serde_json::json!({}),
    )
    .await?;
    tx.commit().await?;
    output::line(&serde_json::to_string(&export)?);
    Ok(())
}
