//! Lists that may come from a TOML array or from one comma-separated environment variable
//! (`KOPILKA__SERVER__CORS_ALLOWED_ORIGINS=https://a.org,https://b.org`).

use serde::{Deserialize, Deserializer};

#[derive(Deserialize)]
#[serde(untagged)]
enum StringOrList {
    One(String),
    Many(Vec<String>),
}

/// Deserialises a list of strings from an array or a comma-separated string; blanks dropped.
pub(crate) fn comma_separated<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
    let items = match StringOrList::deserialize(d)? {
        StringOrList::One(joined) => joined.split(',').map(str::to_owned).collect(),
        StringOrList::Many(items) => items,
    };
    Ok(items
        .into_iter()
        .map(|item| item.trim().to_owned())
        .filter(|item| !item.is_empty())
        .collect())
}

/// Like [`comma_separated`], for secrets: the values go straight into `SecretString`.
pub(crate) fn comma_separated_secrets<'de, D: Deserializer<'de>>(
    d: D,
) -> Result<Vec<secrecy::SecretString>, D::Error> {
    Ok(comma_separated(d)?
        .into_iter()
        .map(secrecy::SecretString::from)
        .collect())
}

/// Like [`comma_separated`], for CIDRs (`10.0.0.0/8`, `2001:db8::/32`); a bare address is
/// its own /32 or /128.
pub(crate) fn comma_separated_nets<'de, D: Deserializer<'de>>(
    d: D,
) -> Result<Vec<ipnet::IpNet>, D::Error> {
    comma_separated(d)?
        .into_iter()
        .map(|item| {
            item.parse::<ipnet::IpNet>()
                .or_else(|_| item.parse::<std::net::IpAddr>().map(ipnet::IpNet::from))
                .map(|net| net.trunc())
                .map_err(|_| {
                    serde::de::Error::custom(format!(
                        "server.trusted_proxies: {item:?} is not a CIDR such as 10.0.0.0/8 or 2001:db8::/32"
                    ))
                })
        })
        .collect()
}

/// Writes CIDRs as their text (`kopilka admin config`).
pub(crate) fn nets_as_text<S: serde::Serializer>(
    nets: &[ipnet::IpNet],
    s: S,
) -> Result<S::Ok, S::Error> {
    s.collect_seq(nets.iter().map(ToString::to_string))
}

#[derive(Deserialize)]
#[serde(untagged)]
enum NumberOrText {
    Number(u64),
    Text(String),
}

#[derive(Deserialize)]
#[serde(untagged)]
enum NumbersOrList {
    One(NumberOrText),
    Many(Vec<NumberOrText>),
}

/// Deserialises small numbers from an array (`[1, 3, 12]`), one number, or a comma-separated
/// string (`KOPILKA__PASSES__MONTHS=1,3,12`).
pub(crate) fn comma_separated_u8<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
    let items = match NumbersOrList::deserialize(d)? {
        NumbersOrList::One(one) => vec![one],
        NumbersOrList::Many(many) => many,
    };
    let mut numbers = Vec::new();
    for item in items {
        let texts: Vec<String> = match item {
            NumberOrText::Number(n) => vec![n.to_string()],
            NumberOrText::Text(text) => text.split(',').map(str::to_owned).collect(),
        };
        for text in texts.iter().map(|t| t.trim()).filter(|t| !t.is_empty()) {
            numbers.push(text.parse().map_err(|_| {
                serde::de::Error::custom(format!("{text:?} is not a number from 0 to 255"))
            })?);
        }
    }
    Ok(numbers)
}
