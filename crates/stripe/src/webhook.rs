//! Webhook signatures, to Stripe's published scheme: the `Stripe-Signature` header is
//! `t=<unix seconds>,v1=<hex>[,v1=<hex>…]` (other schemes such as `v0` are ignored), and each
//! `v1` is HMAC-SHA256 over `"{t}.{raw body}"` keyed with an endpoint secret (`whsec_…`).
//!
//! Stricter than async-stripe 1.0's verifier where it matters: **any** `v1` may match **any**
//! configured secret (Stripe sends one `v1` per active secret while a secret is rolled, and
//! we may hold old and new secrets), comparison is constant-time, and the timestamp must be
//! within the tolerance in both directions.

use hmac::{Hmac, Mac};
use secrecy::{ExposeSecret, SecretString};
use sha2::Sha256;

use crate::event::{Event, EventError};

type HmacSha256 = Hmac<Sha256>;

/// Why a delivery was refused. Nothing of a refused body is parsed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SignatureError {
    /// No `Stripe-Signature` header.
    #[error("missing Stripe-Signature header")]
    MissingHeader,
    /// No webhook secret is configured, so nothing can verify (KOPILKA__STRIPE__WEBHOOK_SECRET).
    #[error("no webhook secret is configured")]
    NoSecret,
    /// The header is not `t=…,v1=…`.
    #[error("malformed Stripe-Signature header: {0}")]
    Malformed(&'static str),
    /// No `v1` matches any configured secret (forged, tampered or wrong secret).
    #[error("no signature matches")]
    NoMatch,
    /// The signed timestamp is further from now than the tolerance (a replay, or a clock
    /// far off); `skew_secs` is now minus `t`.
    #[error("signature timestamp outside the tolerance ({skew_secs} s from now)")]
    Stale {
        /// Now minus the signed timestamp: positive when old, negative when in the future.
        skew_secs: i64,
    },
}

/// Why a verified delivery was still refused.
#[derive(Debug, thiserror::Error)]
pub enum WebhookError {
    /// The signature did not verify.
    #[error(transparent)]
    Signature(#[from] SignatureError),
    /// The body verified but is not an event envelope.
    #[error(transparent)]
    Envelope(#[from] EventError),
}

/// Verifies deliveries against every configured endpoint secret.
#[derive(Clone)]
pub struct WebhookVerifier {
    secrets: Vec<SecretString>,
    tolerance_secs: i64,
}

impl std::fmt::Debug for WebhookVerifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WebhookVerifier")
            .field("secrets", &self.secrets.len())
            .field("tolerance_secs", &self.tolerance_secs)
            .finish()
    }
}

/// The parsed header: the timestamp (as sent: the MAC covers these exact digits) and every
/// `v1` signature that is well-formed hex.
#[derive(Debug)]
struct SignatureHeader<'a> {
    timestamp_text: &'a str,
    timestamp: i64,
    signatures: Vec<[u8; 32]>,
}

fn parse_header(header: &str) -> Result<SignatureHeader<'_>, SignatureError> {
    let mut timestamp = None;
    let mut signatures = Vec::new();
    // Empty items (a trailing comma) are skipped, as Stripe's libraries do.
    for item in header.split(',').map(str::trim).filter(|i| !i.is_empty()) {
        let Some((key, value)) = item.split_once('=') else {
            return Err(SignatureError::Malformed("expected key=value pairs"));
        };
        match key {
            "t" => {
                if timestamp.is_some() {
                    return Err(SignatureError::Malformed("more than one t"));
                }
                let digits = !value.is_empty() && value.bytes().all(|b| b.is_ascii_digit());
                let parsed = value
                    .parse::<i64>()
                    .ok()
                    .filter(|_| digits)
                    .ok_or(SignatureError::Malformed("t is not a unix timestamp"))?;
                timestamp = Some((value, parsed));
            }
            "v1" => {
                let mut signature = [0_u8; 32];
                // A v1 that is not 32 bytes of hex cannot match; skip it like any other scheme.
                if hex::decode_to_slice(value, &mut signature).is_ok() {
                    signatures.push(signature);
                }
            }
            _ => {}
        }
    }
    let (timestamp_text, timestamp) = timestamp.ok_or(SignatureError::Malformed("no t"))?;
    if signatures.is_empty() {
        return Err(SignatureError::Malformed("no v1 signature"));
    }
    Ok(SignatureHeader {
        timestamp_text,
        timestamp,
        signatures,
    })
}

fn mac(secret: &str, timestamp: &str, body: &[u8]) -> HmacSha256 {
    // HMAC takes keys of any length, so this cannot fail.
    let mut mac = HmacSha256::new_from_slice(secret.as_bytes()).unwrap_or_else(|_| unreachable!());
    mac.update(timestamp.as_bytes());
    mac.update(b".");
    mac.update(body);
    mac
}

impl WebhookVerifier {
    /// Stripe's libraries default to five minutes.
    pub const DEFAULT_TOLERANCE_SECS: i64 = 300;

    /// A verifier accepting a signature by any of `secrets`, with `tolerance_secs` of clock
    /// skew either way.
    #[must_use]
    pub fn new(secrets: Vec<SecretString>, tolerance_secs: i64) -> Self {
        Self {
            secrets,
            tolerance_secs,
        }
    }

    /// The verifier the settings describe (`KOPILKA__STRIPE__WEBHOOK_SECRET`, tolerance).
    #[must_use]
    pub fn from_settings(settings: &kopilka_config::StripeSettings) -> Self {
        Self::new(
            settings.webhook_secret.clone(),
            i64::from(settings.webhook_tolerance_secs),
        )
    }

    /// Checks `header` (the `Stripe-Signature` value, if any) against the raw `body` at
    /// `now` (unix seconds).
    ///
    /// # Errors
    /// The first [`SignatureError`] that applies: missing, malformed, no match, stale.
    pub fn verify(
        &self,
        header: Option<&str>,
        body: &[u8],
        now: i64,
    ) -> Result<(), SignatureError> {
        if self.secrets.is_empty() {
            return Err(SignatureError::NoSecret);
        }
        let header = header.ok_or(SignatureError::MissingHeader)?;
        let parsed = parse_header(header)?;
        let matched = self.secrets.iter().any(|secret| {
            let expected = mac(secret.expose_secret(), parsed.timestamp_text, body);
            parsed
                .signatures
                .iter()
                // verify_slice compares in constant time.
                .any(|signature| expected.clone().verify_slice(signature).is_ok())
        });
        if !matched {
            return Err(SignatureError::NoMatch);
        }
        let skew_secs = now.saturating_sub(parsed.timestamp);
        if skew_secs.unsigned_abs() > self.tolerance_secs.unsigned_abs() {
            return Err(SignatureError::Stale { skew_secs });
        }
        Ok(())
    }

    /// [`Self::verify`], then the lenient envelope of the verified body.
    ///
    /// # Errors
    /// [`WebhookError`]: the signature, or a body that is not an event.
    pub fn verify_event(
        &self,
        header: Option<&str>,
        body: &[u8],
        now: i64,
    ) -> Result<Event, WebhookError> {
        self.verify(header, body, now)?;
        Ok(Event::parse(body)?)
    }
}

/// The `Stripe-Signature` header value Stripe would send for `body` at `timestamp` with
/// `secret`; for the simulator's deliveries and for tests.
#[must_use]
pub fn sign(secret: &str, timestamp: i64, body: &[u8]) -> String {
    let signature = mac(secret, &timestamp.to_string(), body)
        .finalize()
        .into_bytes();
    format!("t={timestamp},v1={}", hex::encode(signature))
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    const NOW: i64 = 1_764_417_600;
    const BODY: &[u8] = br#"{"id":"evt_1","object":"event","type":"charge.succeeded","created":1764417600,"livemode":false,"data":{"object":{"id":"ch_1"}}}"#;

    fn verifier(secrets: &[&str]) -> WebhookVerifier {
        WebhookVerifier::new(
            secrets
                .iter()
                .map(|s| SecretString::from((*s).to_owned()))
                .collect(),
            WebhookVerifier::DEFAULT_TOLERANCE_SECS,
        )
    }

    /// The HMAC of a known input, computed independently with Python's hmac module:
    /// `hmac.new(b"whsec_test", b"1764417600.hello", sha256).hexdigest()`.
    #[test]
    fn the_signature_matches_an_independent_hmac() {
        assert_eq!(
            sign("whsec_test", NOW, b"hello"),
            "t=1764417600,v1=3945b78feb9fa73014982a54fe03ccbfc1063932c3d105b2e94c8dd3c6af179a"
        );
    }

    #[test]
    fn a_valid_signature_verifies() {
        let header = sign("whsec_test", NOW, BODY);
        assert_eq!(
            verifier(&["whsec_test"]).verify(Some(&header), BODY, NOW),
            Ok(())
        );
    }

    #[test]
    fn stripes_delivery_format_with_a_test_mode_v0_passes() {
        // Test-mode deliveries carry a v0 beside v1; only v1 counts.
        let header = sign("whsec_test", NOW, BODY);
        let with_v0 =
            format!("{header},v0=6ffbb59b2300aae63f272406069a9788598b792a944a07aba816edb039989a39");
        let verifier = verifier(&["whsec_test"]);
        let event = verifier.verify_event(Some(&with_v0), BODY, NOW).unwrap();
        assert_eq!(
            (event.id.as_str(), event.event_type.as_str()),
            ("evt_1", "charge.succeeded")
        );
        assert_eq!(event.object_id.as_deref(), Some("ch_1"));
    }

    #[test]
    fn the_wrong_secret_does_not_match() {
        let header = sign("whsec_other", NOW, BODY);
        assert_eq!(
            verifier(&["whsec_test"]).verify(Some(&header), BODY, NOW),
            Err(SignatureError::NoMatch)
        );
    }

    #[test]
    fn a_tampered_body_does_not_match() {
        let header = sign("whsec_test", NOW, BODY);
        let tampered = String::from_utf8_lossy(BODY).replace("ch_1", "ch_2");
        assert_eq!(
            verifier(&["whsec_test"]).verify(Some(&header), tampered.as_bytes(), NOW),
            Err(SignatureError::NoMatch)
        );
    }

    #[test]
    fn empty_items_are_skipped_and_no_secret_is_its_own_error() {
        let header = format!("{},", sign("whsec_test", NOW, BODY));
        assert_eq!(
            verifier(&["whsec_test"]).verify(Some(&header), BODY, NOW),
            Ok(())
        );
        assert_eq!(
            verifier(&[]).verify(Some(&header), BODY, NOW),
            Err(SignatureError::NoSecret)
        );
    }

    #[test]
    fn a_missing_header_is_its_own_error() {
        assert_eq!(
            verifier(&["whsec_test"]).verify(None, BODY, NOW),
            Err(SignatureError::MissingHeader)
        );
    }

    #[test]
    fn malformed_headers_are_named() {
        let v = verifier(&["whsec_test"]);
        for (header, why) in [
            ("", "no t"),
            ("garbage", "expected key=value pairs"),
            ("v1=abc", "no t"),
            ("t=abc,v1=00", "t is not a unix timestamp"),
            ("t=1,t=2,v1=00", "more than one t"),
            ("t=1764417600", "no v1 signature"),
            ("t=1764417600,v0=deadbeef", "no v1 signature"),
            ("t=1764417600,v1=zz", "no v1 signature"),
            ("t=+1764417600,v1=00", "t is not a unix timestamp"),
            ("t=-1,v1=00", "t is not a unix timestamp"),
        ] {
            assert_eq!(
                v.verify(Some(header), BODY, NOW),
                Err(SignatureError::Malformed(why)),
                "{header:?}"
            );
        }
    }

    #[test]
    fn timestamps_outside_the_tolerance_are_stale_both_ways() {
        let v = verifier(&["whsec_test"]);
        let old = sign("whsec_test", NOW - 301, BODY);
        assert_eq!(
            v.verify(Some(&old), BODY, NOW),
            Err(SignatureError::Stale { skew_secs: 301 })
        );
        let future = sign("whsec_test", NOW + 301, BODY);
        assert_eq!(
            v.verify(Some(&future), BODY, NOW),
            Err(SignatureError::Stale { skew_secs: -301 })
        );
        let edge = sign("whsec_test", NOW - 300, BODY);
        assert_eq!(v.verify(Some(&edge), BODY, NOW), Ok(()));
    }

    #[test]
    fn during_rotation_any_v1_may_match_wherever_it_stands() {
        let v = verifier(&["whsec_new"]);
        let good = sign("whsec_new", NOW, BODY);
        let stale = sign("whsec_old", NOW, BODY);
        let good_v1 = &good[good.find("v1=").unwrap()..];
        let stale_v1 = &stale[stale.find("v1=").unwrap()..];
        let good_first = format!("t={NOW},{good_v1},{stale_v1}");
        let good_last = format!("t={NOW},{stale_v1},{good_v1}");
        assert_eq!(v.verify(Some(&good_first), BODY, NOW), Ok(()));
        assert_eq!(v.verify(Some(&good_last), BODY, NOW), Ok(()));
    }

    #[test]
    fn any_of_several_configured_secrets_may_match() {
        let v = verifier(&["whsec_old", "whsec_new"]);
        for secret in ["whsec_old", "whsec_new"] {
            let header = sign(secret, NOW, BODY);
            assert_eq!(v.verify(Some(&header), BODY, NOW), Ok(()), "{secret}");
        }
        assert_eq!(
            v.verify(Some(&sign("whsec_third", NOW, BODY)), BODY, NOW),
            Err(SignatureError::NoMatch)
        );
    }

    #[test]
    fn a_forged_event_is_never_parsed() {
        // Not even valid JSON: if it were parsed, the error would be an envelope error.
        let header = sign("whsec_forger", NOW, b"not json");
        let err = verifier(&["whsec_test"])
            .verify_event(Some(&header), b"not json", NOW)
            .unwrap_err();
        assert!(
            matches!(err, WebhookError::Signature(SignatureError::NoMatch)),
            "{err:?}"
        );
    }

    proptest! {
        #[test]
        fn what_we_sign_we_verify(body in prop::collection::vec(any::<u8>(), 0..512), secret in "whsec_[a-zA-Z0-9]{1,40}", t in 0_i64..4_000_000_000) {
            let header = sign(&secret, t, &body);
            prop_assert_eq!(verifier(&[&secret]).verify(Some(&header), &body, t), Ok(()));
        }

        #[test]
        fn any_change_to_the_body_is_caught(body in prop::collection::vec(any::<u8>(), 1..256), index in any::<prop::sample::Index>(), flip in 1_u8..=255) {
            let header = sign("whsec_test", NOW, &body);
            let mut changed = body.clone();
            let i = index.index(changed.len());
            changed[i] ^= flip;
            prop_assert_eq!(verifier(&["whsec_test"]).verify(Some(&header), &changed, NOW), Err(SignatureError::NoMatch));
        }

        #[test]
        fn arbitrary_headers_never_panic(header in "\\PC{0,200}") {
            let _ = verifier(&["whsec_test"]).verify(Some(&header), BODY, NOW);
        }
    }
}
