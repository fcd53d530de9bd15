//! Webhook signatures, to BTCPay's published scheme: the `BTCPay-Sig` header is
//! `sha256=<hex>`, the hex of HMAC-SHA256 over the raw body keyed with the webhook's secret
//! (its UTF-8 bytes). BTCPay signs no timestamp: a replayed delivery verifies, so receivers
//! deduplicate on the delivery's ids (see [`crate::delivery`]).
//!
//! Every configured secret is tried (a secret being rolled is held beside its successor);
//! each comparison is constant-time.

use hmac::{Hmac, Mac};
use secrecy::{ExposeSecret, SecretString};
use sha2::Sha256;
use subtle::ConstantTimeEq as _;

use crate::delivery::{Delivery, DeliveryError};

type HmacSha256 = Hmac<Sha256>;

/// The header BTCPay signs deliveries in.
pub const HEADER: &str = "BTCPay-Sig";

/// Why a delivery was refused. Nothing of a refused body is parsed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SignatureError {
    /// No `BTCPay-Sig` header.
    #[error("missing BTCPay-Sig header")]
    MissingHeader,
    /// No webhook secret is configured, so nothing can verify (KOPILKA__BTCPAY__WEBHOOK_SECRET).
    #[error("no BTCPay webhook secret is configured")]
    NoSecret,
    /// The header is not `sha256=` and 64 hex digits.
    #[error("malformed BTCPay-Sig header: {0}")]
    Malformed(&'static str),
    /// The signature matches no configured secret (forged, tampered or wrong secret).
    #[error("no signature matches")]
    NoMatch,
}

/// Why a verified delivery was still refused.
#[derive(Debug, thiserror::Error)]
pub enum WebhookError {
    /// The signature did not verify.
    #[error(transparent)]
    Signature(#[from] SignatureError),
    /// The body verified but is not a delivery envelope.
    #[error(transparent)]
    Envelope(#[from] DeliveryError),
}

/// Verifies deliveries against every configured webhook secret.
#[derive(Clone)]
pub struct WebhookVerifier {
    secrets: Vec<SecretString>,
}

impl std::fmt::Debug for WebhookVerifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WebhookVerifier")
            .field("secrets", &self.secrets.len())
            .finish()
    }
}

fn mac(secret: &str, body: &[u8]) -> [u8; 32] {
    // HMAC takes keys of any length, so this cannot fail.
    let mut mac = HmacSha256::new_from_slice(secret.as_bytes()).unwrap_or_else(|_| unreachable!());
    mac.update(body);
    mac.finalize().into_bytes().into()
}

/// The `BTCPay-Sig` value BTCPay would send for `body` signed with `secret`
/// (`sha256=<hex>`): for the simulator and tests.
#[must_use]
pub fn sign(secret: &str, body: &[u8]) -> String {
    format!("sha256={}", hex::encode(mac(secret, body)))
}

fn parse_header(header: &str) -> Result<[u8; 32], SignatureError> {
    let hex_digits = header
        .trim()
        .strip_prefix("sha256=")
        .ok_or(SignatureError::Malformed("expected sha256=<hex>"))?;
    let mut signature = [0_u8; 32];
    hex::decode_to_slice(hex_digits, &mut signature)
        .map_err(|_| SignatureError::Malformed("expected 64 hex digits"))?;
    Ok(signature)
}

impl WebhookVerifier {
    /// A verifier accepting a signature by any of `secrets`.
    #[must_use]
    pub fn new(secrets: Vec<SecretString>) -> Self {
        Self { secrets }
    }

    /// The verifier the settings describe (`KOPILKA__BTCPAY__WEBHOOK_SECRET`).
    #[must_use]
    pub fn from_settings(settings: &kopilka_config::BtcpaySettings) -> Self {
        Self::new(settings.webhook_secret.clone())
    }

    /// Checks `header` (the `BTCPay-Sig` value, if any) against the raw `body`.
    ///
    /// # Errors
    /// The first [`SignatureError`] that applies: no secret, missing, malformed, no match.
    pub fn verify(&self, header: Option<&str>, body: &[u8]) -> Result<(), SignatureError> {
        if self.secrets.is_empty() {
            return Err(SignatureError::NoSecret);
        }
        let signature = parse_header(header.ok_or(SignatureError::MissingHeader)?)?;
        // Every secret is tried, whichever matches, so the time taken says nothing of which.
        let matched = self
            .secrets
            .iter()
            .fold(subtle::Choice::from(0), |found, secret| {
                found | mac(secret.expose_secret(), body).ct_eq(&signature)
            });
        if bool::from(matched) {
            Ok(())
        } else {
            Err(SignatureError::NoMatch)
        }
    }

    /// [`Self::verify`], then the lenient envelope of the verified body.
    ///
    /// # Errors
    /// [`WebhookError`]: the signature, or a body that is not a delivery.
    pub fn verify_delivery(
        &self,
        header: Option<&str>,
        body: &[u8],
    ) -> Result<Delivery, WebhookError> {
        self.verify(header, body)?;
        Ok(Delivery::parse(body)?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const BODY: &[u8] = br#"{"deliveryId":"d1","webhookId":"w1","originalDeliveryId":"d1","isRedelivery":false,"type":"InvoiceSettled","timestamp":1700000000,"storeId":"s1","invoiceId":"i1","metadata":{"orderId":"c1"},"manuallyMarked":false,"overPaid":false}"#;

    fn verifier(secrets: &[&str]) -> WebhookVerifier {
        WebhookVerifier::new(secrets.iter().map(|s| SecretString::from(*s)).collect())
    }

    #[test]
    fn a_good_signature_verifies() {
        let header = sign("secret-one", BODY);
        assert_eq!(
            verifier(&["secret-one"]).verify(Some(&header), BODY),
            Ok(())
        );
    }

    #[test]
    fn the_published_example_shape_is_what_sign_writes() {
        let header = sign("k", b"");
        assert!(header.starts_with("sha256="));
        assert_eq!(header.len(), "sha256=".len() + 64);
        // RFC 4231-style known answer: HMAC-SHA256("key", "The quick brown fox jumps over the lazy dog").
        assert_eq!(
            sign("key", b"The quick brown fox jumps over the lazy dog"),
            "sha256=f7bc83f430538424b13298e6aa6fb143ef4d59a14946175997479dbc2d1a3cd8"
        );
    }

    #[test]
    fn a_tampered_body_is_refused() {
        let header = sign("secret-one", BODY);
        let mut tampered = BODY.to_vec();
        tampered[20] ^= 1;
        assert_eq!(
            verifier(&["secret-one"]).verify(Some(&header), &tampered),
            Err(SignatureError::NoMatch)
        );
    }

    #[test]
    fn a_wrong_secret_is_refused() {
        let header = sign("someone-else", BODY);
        assert_eq!(
            verifier(&["secret-one"]).verify(Some(&header), BODY),
            Err(SignatureError::NoMatch)
        );
    }

    #[test]
    fn either_secret_verifies_while_rolling() {
        let both = verifier(&["old-secret", "new-secret"]);
        assert_eq!(both.verify(Some(&sign("old-secret", BODY)), BODY), Ok(()));
        assert_eq!(both.verify(Some(&sign("new-secret", BODY)), BODY), Ok(()));
        assert_eq!(
            both.verify(Some(&sign("retired-secret", BODY)), BODY),
            Err(SignatureError::NoMatch)
        );
    }

    #[test]
    fn malformed_headers_are_refused() {
        let v = verifier(&["secret-one"]);
        let good = sign("secret-one", BODY);
        let hex_part = good.trim_start_matches("sha256=");
        assert_eq!(v.verify(None, BODY), Err(SignatureError::MissingHeader));
        for bad in [
            "",
            hex_part,
            &format!("sha1={hex_part}"),
            &format!("sha256={}", &hex_part[..62]),
            &format!("sha256={hex_part}00"),
            &format!("sha256={}zz", &hex_part[..62]),
            "sha256=",
        ] {
            assert!(
                matches!(v.verify(Some(bad), BODY), Err(SignatureError::Malformed(_))),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn uppercase_hex_verifies() {
        let header = sign("secret-one", BODY);
        let upper = format!("sha256={}", header["sha256=".len()..].to_uppercase());
        assert_eq!(verifier(&["secret-one"]).verify(Some(&upper), BODY), Ok(()));
    }

    #[test]
    fn nothing_verifies_without_a_secret() {
        let header = sign("secret-one", BODY);
        assert_eq!(
            verifier(&[]).verify(Some(&header), BODY),
            Err(SignatureError::NoSecret)
        );
    }

    #[test]
    fn a_verified_body_yields_its_envelope() {
        let header = sign("secret-one", BODY);
        let delivery = verifier(&["secret-one"])
            .verify_delivery(Some(&header), BODY)
            .unwrap();
        assert_eq!(delivery.invoice_id.as_deref(), Some("i1"));
        assert_eq!(delivery.order_id.as_deref(), Some("c1"));
    }
}
