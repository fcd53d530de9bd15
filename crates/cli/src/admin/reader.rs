//! What the `admin reader …` commands share: reading the address (from stdin or
//! `--email-file`, never from the command line, where shell history and `/proc/PID/cmdline`
//! would keep it), finding its reader, and the audit record every one of them leaves (who
//! ran it, what, on which reader id — never the address), also when nobody is found.

use std::io::BufRead as _;
use std::path::PathBuf;

use kopilka_domain::id::ReaderId;
use kopilka_store::PgConnection;

/// The reader (by address, read from stdin or a file) and the operator.
#[derive(Debug, clap::Args)]
pub struct Target {
    /// Refused: an address typed on the command line stays in shell history and in
    /// `/proc/PID/cmdline`. Pipe it on stdin or pass `--email-file`.
    #[arg(hide = true, value_name = "EMAIL")]
    pub refused_email: Option<String>,
    /// Read the address from this file (its first line) instead of stdin.
    #[arg(long, value_name = "PATH")]
    pub email_file: Option<PathBuf>,
    /// Who runs the command, for the audit log (default: the OS user).
    #[arg(long, env = "KOPILKA_ADMIN_ACTOR")]
    pub actor: Option<String>,
}

/// `admin:<actor>` for the audit log: `--actor`/`KOPILKA_ADMIN_ACTOR`, else the OS user.
pub fn actor_name(explicit: Option<&str>) -> String {
    let who = explicit
        .map(str::to_owned)
        .or_else(|| std::env::var("KOPILKA_ADMIN_ACTOR").ok())
        .or_else(|| std::env::var("USER").ok())
        .or_else(|| std::env::var("LOGNAME").ok())
        .unwrap_or_else(|| "unknown".into());
    format!("admin:{who}")
}

impl Target {
    /// `admin:<actor>`.
    pub fn actor(&self) -> String {
        actor_name(self.actor.as_deref())
    }

    /// The address, from `--email-file` or one line of stdin; an error (that never repeats
    /// it) for an address on the command line or one that does not parse.
    pub fn email(&self) -> anyhow::Result<kopilka_domain::Email> {
        if self.refused_email.is_some() {
            anyhow::bail!(
                "the address is no longer taken on the command line (shell history and \
                 /proc/PID/cmdline would keep it): pipe it on stdin \
                 (`printf '%s\\n' \"$EMAIL\" | kopilka admin reader show`) or pass \
                 --email-file PATH"
            );
        }
        let mut line = String::new();
        match &self.email_file {
            Some(path) => {
                let file = std::fs::File::open(path)
                    .map_err(|e| anyhow::anyhow!("cannot read --email-file: {e}"))?;
                std::io::BufReader::new(file).read_line(&mut line)?;
            }
            None => {
                std::io::stdin().lock().read_line(&mut line)?;
            }
        }
        let text = line.trim();
        if text.is_empty() {
            anyhow::bail!("no address given: pipe one line on stdin or pass --email-file PATH");
        }
        kopilka_domain::Email::parse(text)
            .map_err(|_| anyhow::anyhow!("the address given is not a valid email address"))
    }

    /// The reader of the address. A lookup that finds nobody is audited (`found: false`, no
    /// address) and committed before the error.
    pub async fn reader(
        &self,
        pool: &kopilka_store::PgPool,
        action: &str,
    ) -> anyhow::Result<ReaderId> {
        let email = self.email()?;
        let mut conn = pool.acquire().await?;
        if let Some(id) = kopilka_accounts::reader::find(&mut conn, &email).await? {
            return Ok(id);
        }
        kopilka_accounts::audit::record(
            &mut conn,
            &self.actor(),
            action,
            None,
            &serde_json::json!({"found": false}),
        )
        .await?;
        anyhow::bail!("no reader has this address")
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
