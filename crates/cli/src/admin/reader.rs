//! What the `admin reader …` commands share: finding the reader of an address, and the
//! audit record every one of them leaves (who ran it, what, on which reader id — never the
//! address).

use anyhow::Context as _;
use kopilka_domain::id::ReaderId;
use kopilka_store::PgConnection;

/// The reader and the operator named on the command line.
#[derive(Debug, clap::Args)]
pub struct Target {
    /// The reader's address.
    pub email: String,
    /// Who runs the command, for the audit log (default: the OS user).
    #[arg(long, env = "KOPILKA_ADMIN_ACTOR")]
    pub actor: Option<String>,
}

impl Target {
    /// `admin:<actor>`.
    pub fn actor(&self) -> String {
        let who = self
            .actor
            .clone()
            .or_else(|| std::env::var("USER").ok())
            .or_else(|| std::env::var("LOGNAME").ok())
            .unwrap_or_else(|| "unknown".into());
        format!("admin:{who}")
    }

    /// The reader of the address; an error when there is none.
    pub async fn reader(&self, conn: &mut PgConnection) -> anyhow::Result<ReaderId> {
        let email =
            kopilka_domain::Email::parse(&self.email).map_err(|e| anyhow::anyhow!("{e}"))?;
        kopilka_accounts::reader::find(conn, &email)
            .await?
            .context("no reader has this address")
    }
}

/// Writes the audit record of `action` on `reader`.
pub async fn audit(
    conn: &mut PgConnection,
    target: &Target,
    action: &str,
    reader: ReaderId,
    detail: serde_json::Value,
) -> anyhow::Result<()> {
    kopilka_accounts::audit::record(conn, &target.actor(), action, Some(reader), &detail).await?;
    Ok(())
}
