use std::collections::HashMap;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use ed25519_dalek::pkcs8::EncodePrivateKey as _;
use ed25519_dalek::{Signature, SigningKey, VerifyingKey};
use hmac::{Hmac, Mac};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde::{Deserialize, Serialize};
use sha2::Sha256;

/// A signing key's id and life, as stored (the key itself is derived, never stored).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyRecord {
    /// The `kid`.
    pub kid: String,
    /// When it was added (Unix seconds); the newest live key signs.
    pub created_at: i64,
    /// From when it no longer verifies (Unix seconds); `None`: live.
    pub retires_at: Option<i64>,
}

/// What a supporter token says.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SupporterClaims {
    /// An opaque id of the reader (never the address).
    pub sub: String,
    /// Whether the reader counts as a supporter now.
    pub supporter: bool,
    /// `once`, `month` or `year`: how they support (absent when not a supporter).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tier: Option<String>,
    /// The same as `tier` (for readers of the token that expect the word).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interval: Option<String>,
    /// Until when they are paid up (Unix seconds).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub paid_through: Option<i64>,
    /// Until when asks stay hidden (closed or snoozed banner, Unix seconds).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hide_asks_until: Option<i64>,
    /// The issuer (the public URL).
    pub iss: String,
    /// The audience (the newsroom's site).
    pub aud: String,
    /// Issued at.
    pub iat: i64,
    /// Expires at.
    pub exp: i64,
}

/// Why a token was refused. Every variant is a 401 to the caller.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    /// Not a JWT, or a header Kopilka does not sign with (another `alg`, no `kid`).
    #[error("malformed supporter token")]
    Malformed,
    /// The `kid` is not a live key.
    #[error("unknown signing key")]
    UnknownKey,
    /// Expired, wrong audience or issuer, or a bad signature.
    #[error("invalid supporter token: {0}")]
    Invalid(String),
    /// No live key to sign with.
    #[error("no live signing key")]
    NoKey,
}

/// How many verified tokens are remembered (a supporter's repeat views skip the signature).
const CACHE_CAPACITY: usize = 100_000;

/// The live keys: the newest signs, every live one verifies and is published. Verified
/// tokens are remembered (keyed by their SHA-256, bounded, each until its `exp`), so a
/// supporter's repeat views skip the signature check; a new keyring starts with no memory.
pub struct Keyring {
    cache: quick_cache::sync::Cache<[u8; 32], SupporterClaims>,
    signer: Option<(String, EncodingKey)>,
    /// Public keys by `kid`, decompressed once (a verify is then the signature only).
    verifiers: HashMap<String, VerifyingKey>,
    jwks: serde_json::Value,
    issuer: String,
    audience: String,
}

impl std::fmt::Debug for Keyring {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Keyring")
            .field("signer", &self.signer.as_ref().map(|(kid, _)| kid))
            .field("verifiers", &self.verifiers.keys().collect::<Vec<_>>())
            .finish_non_exhaustive()
    }
}

type HmacSha256 = Hmac<Sha256>;

/// The Ed25519 seed of key `kid`: HMAC-SHA256(secret, label ‖ kid).
fn seed(secret: &[u8], kid: &str) -> [u8; 32] {
    let mut mac = HmacSha256::new_from_slice(secret)
        .unwrap_or_else(|_| unreachable!("HMAC takes a key of any length"));
    mac.update(b"kopilka/supporter-token-key/v1\0");
    mac.update(kid.as_bytes());
    mac.finalize().into_bytes().into()
}

impl Keyring {
    /// The keyring of `records` live at `now` (Unix seconds), derived from `secret`, issuing
    /// for `issuer` to `audience`.
    #[must_use]
    pub fn new(
        secret: &[u8],
        records: &[KeyRecord],
        now: i64,
        issuer: &str,
        audience: &str,
    ) -> Self {
        let mut live: Vec<&KeyRecord> = records
            .iter()
            .filter(|r| r.retires_at.is_none_or(|at| at > now))
            .collect();
        // Stable: records given oldest first keep their order within one second.
        live.sort_by_key(|r| r.created_at);
        let mut verifiers = HashMap::new();
        let mut keys = Vec::new();
        let mut signer = None;
        for record in &live {
            let signing = SigningKey::from_bytes(&seed(secret, &record.kid));
            let x = URL_SAFE_NO_PAD.encode(signing.verifying_key().as_bytes());
            verifiers.insert(record.kid.clone(), signing.verifying_key());
            keys.push(serde_json::json!({
                "kty": "OKP", "crv": "Ed25519", "x": x, "kid": record.kid,
                "alg": "EdDSA", "use": "sig",
            }));
            // The newest live key that has not started retiring signs.
            if record.retires_at.is_none()
                && let Ok(der) = signing.to_pkcs8_der()
            {
                signer = Some((record.kid.clone(), EncodingKey::from_ed_der(der.as_bytes())));
            }
        }
        Self {
            cache: quick_cache::sync::Cache::new(CACHE_CAPACITY),
            signer,
            verifiers,
            jwks: serde_json::json!({"keys": keys}),
            issuer: issuer.to_owned(),
            audience: audience.to_owned(),
        }
    }

    /// `GET /.well-known/jwks.json`: every live public key.
    #[must_use]
    pub fn jwks(&self) -> &serde_json::Value {
        &self.jwks
    }

    /// The `kid` that signs now.
    #[must_use]
    pub fn signing_kid(&self) -> Option<&str> {
        self.signer.as_ref().map(|(kid, _)| kid.as_str())
    }

    /// The issuer tokens carry.
    #[must_use]
    pub fn issuer(&self) -> &str {
        &self.issuer
    }

    /// The audience tokens carry.
    #[must_use]
    pub fn audience(&self) -> &str {
        &self.audience
    }

    /// Signs `claims` with the newest live key.
    ///
    /// # Errors
    /// [`TokenError::NoKey`] when no key is live.
    pub fn sign(&self, claims: &SupporterClaims) -> Result<String, TokenError> {
        let (kid, key) = self.signer.as_ref().ok_or(TokenError::NoKey)?;
        let mut header = Header::new(Algorithm::EdDSA);
        header.kid = Some(kid.clone());
        jsonwebtoken::encode(&header, claims, key).map_err(|e| TokenError::Invalid(e.to_string()))
    }

    /// Verifies `token` at `now` (Unix seconds): EdDSA only, a live `kid`, a good signature,
    /// `exp` in the future, and this keyring's `iss` and `aud`. Headers that point elsewhere
    /// for keys (`jku`, `x5u`, `jwk`) are ignored: only the keyring's keys count.
    ///
    /// # Errors
    /// [`TokenError`].
    pub fn verify(&self, token: &str, now: i64) -> Result<SupporterClaims, TokenError> {
        use sha2::Digest as _;
        let digest: [u8; 32] = Sha256::digest(token.as_bytes()).into();
        if let Some(claims) = self.cache.get(&digest) {
            if claims.exp > now {
                return Ok(claims);
            }
            self.cache.remove(&digest);
            return Err(TokenError::Invalid("expired".into()));
        }
        let claims = self.verify_signature(token, now)?;
        self.cache.insert(digest, claims.clone());
        Ok(claims)
    }

    /// Whether this keyring publishes the same keys as `other` (a reload that changed
    /// nothing keeps the remembered tokens).
    #[must_use]
    pub fn same_keys(&self, other: &Self) -> bool {
        self.jwks == other.jwks && self.signing_kid() == other.signing_kid()
    }

    /// The JWS compact check, by hand so the public key stays decompressed and the claims
    /// are parsed once: exactly three parts, a header naming `EdDSA` and a live `kid`, a
    /// strict Ed25519 signature over `header.payload`, then `iss`, `aud` and `exp`.
    fn verify_signature(&self, token: &str, now: i64) -> Result<SupporterClaims, TokenError> {
        /// The header fields that matter; any others (`typ`, `jku`, `jwk`…) are ignored.
        #[derive(Deserialize)]
        struct Jose<'a> {
            #[serde(borrow)]
            alg: std::borrow::Cow<'a, str>,
            kid: Option<String>,
        }
        let (signed, signature) = token.rsplit_once('.').ok_or(TokenError::Malformed)?;
        let (header, payload) = signed.split_once('.').ok_or(TokenError::Malformed)?;
        if payload.contains('.') {
            return Err(TokenError::Malformed);
        }
        let header = URL_SAFE_NO_PAD
            .decode(header)
            .map_err(|_| TokenError::Malformed)?;
        let header: Jose<'_> =
            serde_json::from_slice(&header).map_err(|_| TokenError::Malformed)?;
        if header.alg != "EdDSA" {
            return Err(TokenError::Malformed);
        }
        let kid = header.kid.ok_or(TokenError::Malformed)?;
        let key = self.verifiers.get(&kid).ok_or(TokenError::UnknownKey)?;
        let signature = URL_SAFE_NO_PAD
            .decode(signature)
            .ok()
            .and_then(|bytes| Signature::from_slice(&bytes).ok())
            .ok_or(TokenError::Malformed)?;
        key.verify_strict(signed.as_bytes(), &signature)
            .map_err(|_| TokenError::Invalid("bad signature".into()))?;
        let payload = URL_SAFE_NO_PAD
            .decode(payload)
            .map_err(|_| TokenError::Malformed)?;
        let claims: SupporterClaims = serde_json::from_slice(&payload)
            .map_err(|_| TokenError::Invalid("a required claim is missing".into()))?;
        if claims.iss != self.issuer {
            return Err(TokenError::Invalid("wrong issuer".into()));
        }
        if claims.aud != self.audience {
            return Err(TokenError::Invalid("wrong audience".into()));
        }
        if claims.exp <= now {
            return Err(TokenError::Invalid("expired".into()));
        }
        Ok(claims)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &[u8] = b"a-paywall-secret-of-thirty-two-bytes!";
    const NOW: i64 = 1_800_000_000;

    fn record(kid: &str, created_at: i64, retires_at: Option<i64>) -> KeyRecord {
        KeyRecord {
            kid: kid.into(),
            created_at,
            retires_at,
        }
    }

    fn keyring(records: &[KeyRecord]) -> Keyring {
        Keyring::new(
            SECRET,
            records,
            NOW,
            "https://support.example.org",
            "https://news.example.org",
        )
    }

    fn claims(exp: i64) -> SupporterClaims {
        SupporterClaims {
            sub: "r_opaque".into(),
            supporter: true,
            tier: Some("month".into()),
            interval: Some("month".into()),
            paid_through: Some(NOW + 86_400 * 30),
            hide_asks_until: None,
            iss: "https://support.example.org".into(),
            aud: "https://news.example.org".into(),
            iat: NOW,
            exp,
        }
    }

    fn b64(value: &serde_json::Value) -> String {
        URL_SAFE_NO_PAD.encode(value.to_string())
    }

    #[test]
    fn a_valid_token_verifies_and_names_its_key() {
        let ring = keyring(&[record("k1", 1, None)]);
        let token = ring.sign(&claims(NOW + 3600)).unwrap();
        assert_eq!(ring.verify(&token, NOW).unwrap(), claims(NOW + 3600));
        let header = jsonwebtoken::decode_header(&token).unwrap();
        assert_eq!(
            (header.alg, header.kid.as_deref()),
            (Algorithm::EdDSA, Some("k1"))
        );
        assert_eq!(ring.jwks()["keys"][0]["crv"], "Ed25519");
    }

    #[test]
    fn expired_and_misaddressed_tokens_are_refused() {
        let ring = keyring(&[record("k1", 1, None)]);
        let expired = ring.sign(&claims(NOW - 1)).unwrap();
        assert!(matches!(
            ring.verify(&expired, NOW),
            Err(TokenError::Invalid(_))
        ));
        let mut wrong_aud = claims(NOW + 60);
        wrong_aud.aud = "https://elsewhere.example".into();
        let token = ring.sign(&wrong_aud).unwrap();
        assert_eq!(
            ring.verify(&token, NOW),
            Err(TokenError::Invalid("wrong audience".into()))
        );
        let mut wrong_iss = claims(NOW + 60);
        wrong_iss.iss = "https://impostor.example".into();
        let token = ring.sign(&wrong_iss).unwrap();
        assert_eq!(
            ring.verify(&token, NOW),
            Err(TokenError::Invalid("wrong issuer".into()))
        );
    }

    #[test]
    fn alg_none_and_hs256_with_the_public_key_are_refused() {
        let ring = keyring(&[record("k1", 1, None)]);
        let body = serde_json::to_value(claims(NOW + 60)).unwrap();
        let none = format!(
            "{}.{}.",
            b64(&serde_json::json!({"alg": "none", "kid": "k1", "typ": "JWT"})),
            b64(&body)
        );
        assert_eq!(ring.verify(&none, NOW), Err(TokenError::Malformed));
        // Algorithm confusion: HS256 keyed with the published public key.
        let public = URL_SAFE_NO_PAD
            .decode(ring.jwks()["keys"][0]["x"].as_str().unwrap())
            .unwrap();
        let mut header = Header::new(Algorithm::HS256);
        header.kid = Some("k1".into());
        let forged = jsonwebtoken::encode(
            &header,
            &claims(NOW + 60),
            &EncodingKey::from_secret(&public),
        )
        .unwrap();
        assert_eq!(ring.verify(&forged, NOW), Err(TokenError::Malformed));
        // A token carrying its own key (jwk header) is judged by the keyring's key only.
        let stranger = keyring(&[record("k1", 1, None)]);
        let other = Keyring::new(
            b"another secret entirely, 32 bytes+",
            &[record("k1", 1, None)],
            NOW,
            "https://support.example.org",
            "https://news.example.org",
        );
        let token = other.sign(&claims(NOW + 60)).unwrap();
        assert!(
            matches!(stranger.verify(&token, NOW), Err(TokenError::Invalid(_))),
            "a look-alike key with the same kid fails the signature"
        );
    }

    #[test]
    fn tampered_truncated_and_extended_tokens_are_refused() {
        let ring = keyring(&[record("k1", 1, None)]);
        let token = ring.sign(&claims(NOW + 60)).unwrap();
        let parts: Vec<&str> = token.split('.').collect();
        let mut richer = claims(NOW + 60);
        richer.paid_through = Some(NOW + 86_400 * 365);
        let tampered = format!(
            "{}.{}.{}",
            parts[0],
            b64(&serde_json::to_value(richer).unwrap()),
            parts[2]
        );
        assert_eq!(
            ring.verify(&tampered, NOW),
            Err(TokenError::Invalid("bad signature".into()))
        );
        let short_signature = format!("{}.{}.{}", parts[0], parts[1], &parts[2][..40]);
        assert_eq!(
            ring.verify(&short_signature, NOW),
            Err(TokenError::Malformed)
        );
        assert_eq!(
            ring.verify(&format!("{token}.x"), NOW),
            Err(TokenError::Malformed)
        );
        assert_eq!(ring.verify(parts[0], NOW), Err(TokenError::Malformed));
        assert_eq!(ring.verify("", NOW), Err(TokenError::Malformed));
    }

    #[test]
    fn an_unknown_kid_is_refused() {
        let old = keyring(&[record("k0", 1, None)]);
        let token = old.sign(&claims(NOW + 60)).unwrap();
        let ring = keyring(&[record("k1", 1, None)]);
        assert_eq!(ring.verify(&token, NOW), Err(TokenError::UnknownKey));
    }

    #[test]
    fn a_rotated_key_verifies_during_its_grace_and_not_after() {
        let before = keyring(&[record("k1", 1, None)]);
        let token = before.sign(&claims(NOW + 7200)).unwrap();
        // Rotation: k2 is added, k1 retires in an hour.
        let rotated = [record("k1", 1, Some(NOW + 3600)), record("k2", 2, None)];
        let during = keyring(&rotated);
        assert_eq!(during.signing_kid(), Some("k2"));
        assert!(
            during.verify(&token, NOW).is_ok(),
            "the old key still verifies in its grace"
        );
        assert_eq!(
            during.jwks()["keys"].as_array().unwrap().len(),
            2,
            "both published"
        );
        let after = Keyring::new(
            SECRET,
            &rotated,
            NOW + 3601,
            "https://support.example.org",
            "https://news.example.org",
        );
        assert_eq!(
            after.verify(&token, NOW + 3601),
            Err(TokenError::UnknownKey)
        );
        assert_eq!(after.jwks()["keys"].as_array().unwrap().len(), 1);
        let fresh = during.sign(&claims(NOW + 60)).unwrap();
        assert!(after.verify(&fresh, NOW + 30).is_ok());
    }

    #[test]
    fn a_remembered_token_still_expires_and_a_new_keyring_forgets() {
        let ring = keyring(&[record("k1", 1, None)]);
        let token = ring.sign(&claims(NOW + 60)).unwrap();
        assert!(ring.verify(&token, NOW).is_ok());
        assert!(ring.verify(&token, NOW + 1).is_ok(), "from memory");
        assert!(
            ring.verify(&token, NOW + 60).is_err(),
            "remembered tokens expire too"
        );
        let tampered = format!("{token}A");
        assert!(
            ring.verify(&tampered, NOW).is_err(),
            "another string is checked afresh"
        );
        let rotated = keyring(&[record("k1", 1, Some(NOW)), record("k2", 2, None)]);
        assert!(!rotated.same_keys(&ring));
        assert_eq!(rotated.verify(&token, NOW), Err(TokenError::UnknownKey));
    }

    #[test]
    fn keys_are_derived_the_same_everywhere() {
        let a = keyring(&[record("k1", 1, None)]);
        let b = keyring(&[record("k1", 1, None)]);
        assert_eq!(
            a.jwks(),
            b.jwks(),
            "every instance derives the same key pair"
        );
        let token = a.sign(&claims(NOW + 60)).unwrap();
        assert!(b.verify(&token, NOW).is_ok());
    }
}
