//! `kopilka admin abuse status`: the card-testing shield — whether checkout is under attack
//! and why, the failures counted towards it, and every block in force (by keyed HMAC: no
//! IP or address is stored). Audited as `abuse.status`.

use crate::output::{self, Format};

/// Options.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Who runs the command, for the audit log (default: the OS user).
    #[arg(long, env = "KOPILKA_ADMIN_ACTOR")]
    actor: Option<String>,
    /// Output format.
    #[arg(long, value_enum, default_value_t)]
    format: Format,
}

pub async fn run(args: &Args) -> anyhow::Result<()> {
    let (settings, pool) = super::connect().await?;
    let status = kopilka_contributions::shield::status(&pool, &settings.abuse).await?;
    let mut conn = pool.acquire().await?;
    kopilka_accounts::audit::record(
        &mut conn,
        &super::reader::actor_name(args.actor.as_deref()),
        "abuse.status",
        None,
        &serde_json::json!({"under_attack": status.under_attack, "blocks": status.blocks.len()}),
    )
    .await?;
    if args.format == Format::Json {
        output::line(&serde_json::to_string(&status)?);
        return Ok(());
    }
    let when = |at: Option<time::OffsetDateTime>| {
        at.and_then(|at| {
            at.format(&time::format_description::well_known::Rfc3339)
                .ok()
        })
        .unwrap_or_default()
    };
    output::rows(
        args.format,
        &[
            "under_attack",
            "why",
            "failures",
            "attack_failures",
            "window_secs",
            "forced_until",
            "calm_since",
            "challenge",
        ],
        &[vec![
            status.under_attack.to_string(),
            status.why.to_owned(),
            status.failures.to_string(),
            status.attack_failures.to_string(),
            status.window_secs.to_string(),
            when(status.forced_until),
            when(status.calm_since),
            status.challenge.unwrap_or("none").to_owned(),
        ]],
    );
    if !status.blocks.is_empty() {
        let rows: Vec<Vec<String>> = status
            .blocks
            .iter()
            .map(|b| {
                vec![
                    format!("{}:{}", b.kind.as_str(), b.key),
                    b.reason.clone(),
                    b.failures.to_string(),
                    when(Some(b.until)),
                ]
            })
            .collect();
        output::rows(
            args.format,
            &["block", "reason", "failures", "until"],
            &rows,
        );
    }
    Ok(())
}
