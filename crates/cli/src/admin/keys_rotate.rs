//! `kopilka admin keys rotate`: a new supporter-token signing key. Every instance picks it up
//! within a minute; tokens signed with the previous key keep verifying.

use crate::output::{self, Format};

/// Options.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Who rotates, for the audit log (default: the OS user).
    #[arg(long, env = "KOPILKA_ADMIN_ACTOR")]
    actor: Option<String>,
    /// Output format.
    #[arg(long, value_enum, default_value_t)]
    format: Format,
}

pub async fn run(args: &Args) -> anyhow::Result<()> {
    let (settings, pool) = super::connect().await?;
    let now = time::OffsetDateTime::now_utc();
    let grace = time::Duration::hours(i64::from(settings.paywall.rotation_grace_hours));
    let mut tx = pool.begin().await?;
    kopilka_accounts::signing_key::ensure_one(&mut tx, now).await?;
    let rotation = kopilka_accounts::signing_key::rotate(&mut tx, now, grace).await?;
    let who = args
        .actor
        .clone()
        .or_else(|| std::env::var("USER").ok())
        .unwrap_or_else(|| "unknown".into());
    kopilka_accounts::audit::record(
        &mut tx,
        &format!("admin:{who}"),
        "keys.rotate",
        None,
        &serde_json::json!({"signing_kid": rotation.signing, "retiring": rotation.retiring}),
    )
    .await?;
    tx.commit().await?;
    let retires_at = rotation
        .retires_at
        .format(&time::format_description::well_known::Rfc3339)?;
    if args.format == Format::Json {
        output::line(
            &serde_json::json!({
                "signing_kid": rotation.signing,
                "retiring": rotation.retiring,
                "retires_at": retires_at,
            })
            .to_string(),
        );
    } else {
        output::rows(
            args.format,
            &["signing_kid", "retiring", "retires_at"],
            &[vec![
                rotation.signing,
                rotation.retiring.join(" "),
                retires_at,
            ]],
        );
    }
    Ok(())
}
