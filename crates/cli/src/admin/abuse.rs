//! What the `admin abuse …` commands share: what they act on — a client by IP (counted as
//! its IPv6 /64), an address (from stdin or `--email-file`, never the command line), a key
//! as `admin abuse status` lists it, or the under-attack state itself — and durations.

use std::net::IpAddr;
use std::path::PathBuf;

use kopilka_contributions::shield::BlockKind;

/// The block's target: exactly one of these.
#[derive(Debug, clap::Args)]
#[group(required = true, multiple = false)]
pub struct Subject {
    /// A client by IP (IPv6 counts per /64, as the shield counts it).
    #[arg(long, value_name = "IP")]
    pub ip: Option<IpAddr>,
    /// An address, read from stdin (or `--email-file`).
    #[arg(long)]
    pub address: bool,
    /// An address, read from the first line of this file.
    #[arg(long, value_name = "PATH")]
    pub email_file: Option<PathBuf>,
    /// A key as `admin abuse status` lists it: `client:<hex>` or `address:<hex>`.
    #[arg(long, value_name = "KIND:KEY")]
    pub key: Option<String>,
    /// The under-attack state of checkout itself.
    #[arg(long)]
    pub under_attack: bool,
}

/// What a [`Subject`] names.
pub enum Resolved {
    /// One client's or address's key.
    Key(BlockKind, String),
    /// The under-attack state.
    UnderAttack,
}

impl Subject {
    /// The keyed HMAC (or the state) the subject names.
    pub fn resolve(&self, settings: &kopilka_config::Settings) -> anyhow::Result<Resolved> {
        let keys = kopilka_accounts::Keys::from_settings(&settings.accounts);
        if self.under_attack {
            return Ok(Resolved::UnderAttack);
        }
        if let Some(ip) = self.ip {
            return Ok(Resolved::Key(
                BlockKind::Client,
                kopilka_contributions::shield::client_key(&keys, ip),
            ));
        }
        if let Some(key) = &self.key {
            let (kind, hex) = key
                .split_once(':')
                .ok_or_else(|| anyhow::anyhow!("--key takes client:<hex> or address:<hex>"))?;
            let kind = match kind {
                "client" => BlockKind::Client,
                "address" => BlockKind::Address,
                _ => anyhow::bail!("--key takes client:<hex> or address:<hex>"),
            };
            if hex.len() != 64 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
                anyhow::bail!("the key is 64 hex digits, as `admin abuse status` lists it");
            }
            return Ok(Resolved::Key(kind, hex.to_ascii_lowercase()));
        }
        let target = super::reader::Target {
            refused_email: None,
            email_file: self.email_file.clone(),
            actor: None,
        };
        let email = target.email()?;
        Ok(Resolved::Key(
            BlockKind::Address,
            kopilka_contributions::shield::address_key(&keys, &email),
        ))
    }
}

/// `90`, `90s`, `30m`, `6h` or `2d`, in seconds (at least 1, at most 30 days).
pub fn parse_duration(text: &str) -> Result<i64, String> {
    let text = text.trim();
    let (number, unit) = match text.char_indices().last() {
        Some((i, c)) if c.is_ascii_alphabetic() => (&text[..i], c),
        _ => (text, 's'),
    };
    let n: i64 = number
        .parse()
        .map_err(|_| format!("expected a duration such as 90s, 30m, 6h or 2d, got {text:?}"))?;
    let secs = match unit {
        's' => Some(n),
        'm' => n.checked_mul(60),
        'h' => n.checked_mul(3_600),
        'd' => n.checked_mul(86_400),
        _ => None,
    }
    .ok_or_else(|| format!("expected a duration such as 90s, 30m, 6h or 2d, got {text:?}"))?;
    if !(1..=2_592_000).contains(&secs) {
        return Err("a duration must be 1 second to 30 days".into());
    }
    Ok(secs)
}

#[cfg(test)]
mod tests {
    use super::parse_duration;

    #[test]
    fn durations_read_as_people_write_them() {
        assert_eq!(parse_duration("90"), Ok(90));
        assert_eq!(parse_duration("90s"), Ok(90));
        assert_eq!(parse_duration("30m"), Ok(1_800));
        assert_eq!(parse_duration("6h"), Ok(21_600));
        assert_eq!(parse_duration("2d"), Ok(172_800));
        assert!(parse_duration("0").is_err());
        assert!(parse_duration("31d").is_err());
        assert!(parse_duration("5w").is_err());
        assert!(parse_duration("h").is_err());
    }
}
