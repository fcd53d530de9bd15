//! Which variant a reader sees: a keyed hash of a first-party random id (the offer's signed
//! visitor cookie, or the supporter token's `sub`) under the experiment's own seed. The same
//! reader always gets the same variant of an experiment, on every instance; nothing about
//! the reader (address, IP, fingerprint) goes in; experiments are independent of each other
//! (each has its own seed).

use hmac::{Hmac, Mac};
use sha2::Sha256;

use crate::spec::{ExperimentSpec, Targeting};

/// Where a reader falls in one experiment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Assignment {
    /// In the holdback: no ask at all.
    Holdback,
    /// The variant at this index of the spec's `variants`.
    Variant(usize),
}

/// An experiment's keyed hash, made once from its seed (and its label): each view then
/// costs the hash of its visitor id only.
#[derive(Clone)]
pub struct Keyed(Hmac<Sha256>);

impl std::fmt::Debug for Keyed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Keyed(..)")
    }
}

impl Keyed {
    /// The keyed hash of `seed`.
    #[must_use]
    pub fn new(seed: &[u8]) -> Self {
        let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(seed).expect("HMAC takes any key");
        mac.update(b"kopilka/experiment-assignment/v1\0");
        Self(mac)
    }
}

/// The two independent draws for `visitor` under `seed`: the holdback's and the variant's.
fn draws(seed: &[u8], visitor: &str) -> (u64, u64) {
    draws_keyed(&Keyed::new(seed), visitor)
}

/// [`draws`] with the experiment's keyed hash made beforehand.
fn draws_keyed(keyed: &Keyed, visitor: &str) -> (u64, u64) {
    let mut mac = keyed.0.clone();
    mac.update(visitor.as_bytes());
    let digest = mac.finalize().into_bytes();
    let word = |at: usize| {
        let mut bytes = [0_u8; 8];
        bytes.copy_from_slice(&digest[at..at + 8]);
        u64::from_be_bytes(bytes)
    };
    (word(0), word(8))
}

/// The fixed split: holdback first (`holdback_percent` of readers), then the variants in
/// proportion to their weights.
#[must_use]
pub fn by_weight(seed: &[u8], visitor: &str, spec: &ExperimentSpec) -> Assignment {
    let (holdback, pick) = draws(seed, visitor);
    weighted(holdback, pick, spec)
}

/// The fixed split of two draws.
fn weighted(holdback: u64, pick: u64, spec: &ExperimentSpec) -> Assignment {
    if holdback % 10_000 < u64::from(spec.holdback_percent) * 100 {
        return Assignment::Holdback;
    }
    let total: u64 = spec.variants.iter().map(|v| u64::from(v.weight)).sum();
    let mut point = pick % total.max(1);
    for (index, variant) in spec.variants.iter().enumerate() {
        let weight = u64::from(variant.weight);
        if point < weight {
            return Assignment::Variant(index);
        }
        point -= weight;
    }
    Assignment::Variant(0)
}

/// Where `visitor` falls: the holdback first (never moved by the bandit), then the bandit's
/// `shares` (basis points per variant, summing to 10 000) when given, else the weights.
#[must_use]
pub fn assign(
    seed: &[u8],
    visitor: &str,
    spec: &ExperimentSpec,
    shares: Option<&[u32]>,
) -> Assignment {
    assign_keyed(&Keyed::new(seed), visitor, spec, shares)
}

/// [`assign`] with the experiment's keyed hash made beforehand (what the offer uses).
#[must_use]
pub fn assign_keyed(
    keyed: &Keyed,
    visitor: &str,
    spec: &ExperimentSpec,
    shares: Option<&[u32]>,
) -> Assignment {
    let (holdback, pick) = draws_keyed(keyed, visitor);
    let Some(shares) = shares.filter(|s| s.len() == spec.variants.len()) else {
        return weighted(holdback, pick, spec);
    };
    if holdback % 10_000 < u64::from(spec.holdback_percent) * 100 {
        return Assignment::Holdback;
    }
    let total: u64 = shares.iter().map(|&s| u64::from(s)).sum();
    let mut point = pick % total.max(1);
    for (index, &share) in shares.iter().enumerate() {
        let share = u64::from(share);
        if point < share {
            return Assignment::Variant(index);
        }
        point -= share;
    }
    Assignment::Variant(0)
}

impl Targeting {
    /// Whether a view of `currency` from `country` on page `path` in `locale` is targeted
    /// (an empty list, or no path pattern, matches all).
    #[must_use]
    pub fn matches(
        &self,
        currency: kopilka_domain::Currency,
        country: Option<&str>,
        path: Option<&str>,
        locale: kopilka_domain::Locale,
    ) -> bool {
        let country_ok = self.countries.is_empty()
            || country.is_some_and(|c| self.countries.iter().any(|t| t.eq_ignore_ascii_case(c)));
        let path_ok = match &self.path {
            None => true,
            Some(pattern) => path.is_some_and(|p| glob(pattern, p)),
        };
        (self.currencies.is_empty() || self.currencies.contains(&currency))
            && (self.locales.is_empty() || self.locales.contains(&locale))
            && country_ok
            && path_ok
    }
}

/// `*` matches any run of characters (none included); everything else matches itself.
fn glob(pattern: &str, text: &str) -> bool {
    let mut parts = pattern.split('*');
    let first = parts.next().unwrap_or_default();
    let Some(mut rest) = text.strip_prefix(first) else {
        return false;
    };
    let parts: Vec<&str> = parts.collect();
    let Some((last, middle)) = parts.split_last() else {
        return rest.is_empty();
    };
    for part in middle {
        match rest.find(part) {
            Some(at) => rest = &rest[at + part.len()..],
            None => return false,
        }
    }
    rest.ends_with(last)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(holdback: u8, weights: &[u32]) -> ExperimentSpec {
        let variants: Vec<serde_json::Value> = weights
            .iter()
            .enumerate()
            .map(|(i, w)| serde_json::json!({"key": format!("v{i}"), "control": i == 0, "weight": w}))
            .collect();
        serde_json::from_value(serde_json::json!({
            "name": "x", "holdback_percent": holdback, "variants": variants
        }))
        .unwrap()
    }

    #[test]
    fn a_reader_keeps_their_variant_and_shares_follow_the_weights() {
        let seed = [7_u8; 16];
        let spec = spec(5, &[1, 1, 2]);
        let mut counts = [0_u32; 4];
        for n in 0..20_000 {
            let visitor = format!("visitor-{n}");
            let first = by_weight(&seed, &visitor, &spec);
            assert_eq!(first, by_weight(&seed, &visitor, &spec), "stable");
            match first {
                Assignment::Holdback => counts[3] += 1,
                Assignment::Variant(i) => counts[i] += 1,
            }
        }
        let share = |n: u32| f64::from(n) / 20_000.0;
        assert!((share(counts[3]) - 0.05).abs() < 0.01, "{counts:?}");
        assert!((share(counts[0]) - 0.95 / 4.0).abs() < 0.02, "{counts:?}");
        assert!((share(counts[2]) - 0.95 / 2.0).abs() < 0.02, "{counts:?}");
        // The offer's path (a keyed hash made once) assigns exactly as the seed does, and a
        // bandit's shares move only the variants, never the holdback.
        let keyed = Keyed::new(&seed);
        for n in 0..2_000 {
            let visitor = format!("visitor-{n}");
            let plain = by_weight(&seed, &visitor, &spec);
            assert_eq!(assign_keyed(&keyed, &visitor, &spec, None), plain);
            assert_eq!(assign(&seed, &visitor, &spec, None), plain);
            let shared = assign_keyed(&keyed, &visitor, &spec, Some(&[0, 10_000, 0]));
            if plain == Assignment::Holdback {
                assert_eq!(shared, Assignment::Holdback);
            } else {
                assert_eq!(shared, Assignment::Variant(1));
            }
        }
        // Another experiment's seed assigns independently.
        let other = [8_u8; 16];
        let moved = (0..1_000)
            .filter(|n| {
                let visitor = format!("visitor-{n}");
                by_weight(&seed, &visitor, &spec) != by_weight(&other, &visitor, &spec)
            })
            .count();
        assert!(moved > 300, "{moved}");
    }

    #[test]
    fn targeting_matches_each_listed_dimension() {
        let targeting = Targeting {
            currencies: vec!["usd".parse().unwrap()],
            countries: vec!["US".into()],
            path: Some("/politics/*".into()),
            locales: vec![kopilka_domain::Locale::En],
        };
        let usd = "usd".parse().unwrap();
        let en = kopilka_domain::Locale::En;
        assert!(targeting.matches(usd, Some("us"), Some("/politics/2027/budget"), en));
        assert!(!targeting.matches(usd, Some("DE"), Some("/politics/x"), en));
        assert!(!targeting.matches(usd, Some("US"), Some("/sport/x"), en));
        assert!(!targeting.matches(usd, None, Some("/politics/x"), en));
        assert!(!targeting.matches("eur".parse().unwrap(), Some("US"), Some("/politics/x"), en));
        assert!(!targeting.matches(
            usd,
            Some("US"),
            Some("/politics/x"),
            kopilka_domain::Locale::Ru
        ));
        assert!(Targeting::default().matches(usd, None, None, en));
        assert!(
            glob("/a/*/c", "/a/b/c") && glob("*", "") && !glob("/a*", "/b") && glob("/a", "/a")
        );
    }
}
