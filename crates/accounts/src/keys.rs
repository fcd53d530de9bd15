//! Keyed MACs with the accounts secret. Every token Kopilka emails or sets in a cookie is
//! `payload` + `HMAC-SHA256(secret, purpose ‖ payload)`, base64url: nothing secret is
//! stored, a database copy alone cannot forge one, and each purpose has its own domain so a
//! token for one use never works for another.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

type HmacSha256 = Hmac<Sha256>;

/// The length of a MAC inside a token (the full SHA-256 output).
const MAC_LEN: usize = 32;

/// What a token is for; part of its MAC, so tokens never cross purposes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Purpose {
    /// An emailed sign-in, verification or "already registered" link.
    EmailLink,
    /// A reminder's one-click unsubscribe.
    Unsubscribe,
    /// A one-click plan action from an email.
    PlanAction,
    /// The anonymous reader's banner cookie.
    BannerCookie,
    /// The per-address throttle key (no address is stored).
    AddressKey,
    /// The record that a one-click plan link was used (keyed, so no token is stored).
    PlanLinkUse,
    /// The checkout-return cookie that tells the widget how a checkout ended.
    CheckoutReturn,
    /// The per-client-IP throttle key (no IP is stored).
    IpKey,
    /// The fingerprint of a checkout request's body, kept with its `Idempotency-Key` (the
    /// body may hold an address; a bare hash of it could be reversed by guessing).
    CheckoutRequest,
    /// A card's fingerprint, counted by the card-testing shield (Stripe's fingerprint is
    /// never stored).
    CardKey,
    /// A pass code (stored only as this keyed digest).
    PassCode,
    /// A pass holder's token (stored only as this keyed digest).
    PassHolder,
    /// The offer's first-party visitor cookie (a random id, for experiment assignment).
    Visitor,
}

impl Purpose {
    fn label(self) -> &'static [u8] {
        match self {
            Self::EmailLink => b"kopilka/email-link/v1\0",
            Self::Unsubscribe => b"kopilka/unsubscribe/v1\0",
            Self::PlanAction => b"kopilka/plan-action/v1\0",
            Self::BannerCookie => b"kopilka/banner/v1\0",
            Self::AddressKey => b"kopilka/address/v1\0",
            Self::PlanLinkUse => b"kopilka/plan-link-use/v1\0",
            Self::CheckoutReturn => b"kopilka/checkout-return/v1\0",
            Self::IpKey => b"kopilka/ip/v1\0",
            Self::CheckoutRequest => b"kopilka/checkout-request/v1\0",
            Self::CardKey => b"kopilka/card/v1\0",
            Self::PassCode => b"kopilka/pass-code/v1\0",
            Self::PassHolder => b"kopilka/pass-holder/v1\0",
            Self::Visitor => b"kopilka/visitor/v1\0",
        }
    }
}

/// The accounts secret, ready to sign and check tokens: kept as the HMAC's state with the
/// key already absorbed, so each MAC clones it instead of hashing the key's pads again
/// (a public write computes several; measured: about half of their SHA-256 work).
#[derive(Clone)]
pub struct Keys {
    keyed: HmacSha256,
}

impl std::fmt::Debug for Keys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Keys(<redacted>)")
    }
}

impl Keys {
    /// Keys from the configured secret.
    #[must_use]
    pub fn new(secret: &[u8]) -> Self {
        Self {
            keyed: HmacSha256::new_from_slice(secret)
                .unwrap_or_else(|_| unreachable!("HMAC takes a key of any length")),
        }
    }

    /// Keys from settings (the local-only secret in dev and test when none is set).
    #[must_use]
    pub fn from_settings(settings: &kopilka_config::AccountsSettings) -> Self {
        Self::new(settings.secret_bytes())
    }

    fn mac(&self, purpose: Purpose, payload: &[u8]) -> [u8; MAC_LEN] {
        let mut mac = self.keyed.clone();
        mac.update(purpose.label());
        mac.update(payload);
        mac.finalize().into_bytes().into()
    }

    /// A token carrying `payload` for `purpose`.
    #[must_use]
    pub fn sign(&self, purpose: Purpose, payload: &[u8]) -> String {
        let mut bytes = payload.to_vec();
        bytes.extend_from_slice(&self.mac(purpose, payload));
        URL_SAFE_NO_PAD.encode(bytes)
    }

    /// The payload of a token made by [`Self::sign`] for `purpose`, or `None` when it is
    /// malformed or forged. The comparison takes the same time however much matches.
    #[must_use]
    pub fn open(&self, purpose: Purpose, token: &str) -> Option<Vec<u8>> {
        if token.len() > 4096 {
            return None;
        }
        let bytes = URL_SAFE_NO_PAD.decode(token.trim()).ok()?;
        let split = bytes.len().checked_sub(MAC_LEN)?;
        let (payload, mac) = bytes.split_at(split);
        let expected = self.mac(purpose, payload);
        bool::from(expected.ct_eq(mac)).then(|| payload.to_vec())
    }

    /// A stable keyed digest of `value` (hex), e.g. to throttle an address without storing it.
    #[must_use]
    pub fn digest(&self, purpose: Purpose, value: &[u8]) -> String {
        hex_lower(&self.mac(purpose, value))
    }
}

/// SHA-256 of a token, as stored in place of the token.
#[must_use]
pub fn token_hash(token: &str) -> Vec<u8> {
    Sha256::digest(token.as_bytes()).to_vec()
}

/// `n` random bytes from the operating system.
///
/// # Panics
/// When the operating system has no randomness to give (nothing sensible can go on).
#[must_use]
pub fn random_bytes<const N: usize>() -> [u8; N] {
    let mut bytes = [0_u8; N];
    getrandom::fill(&mut bytes).expect("the operating system's random source");
    bytes
}

/// A random 256-bit token, base64url.
#[must_use]
pub fn random_token() -> String {
    URL_SAFE_NO_PAD.encode(random_bytes::<32>())
}

fn hex_lower(bytes: &[u8]) -> String {
    use std::fmt::Write as _;
    bytes
        .iter()
        .fold(String::with_capacity(bytes.len() * 2), |mut s, b| {
            let _ = write!(s, "{b:02x}");
            s
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// Digests stay what every stored key was made with (computed apart, with Python's
    /// `hmac`): keeping the keyed state instead of the secret changes no byte, for a short
    /// key and for one longer than SHA-256's block (which HMAC hashes first).
    #[test]
    fn digests_are_hmac_sha256_of_label_and_value() {
        assert_eq!(
            Keys::new(b"0123456789abcdef0123456789abcdef")
                .digest(Purpose::AddressKey, b"reader@example.org"),
            "f7ef3189699acbab3b13c74b4e633d94c8c7cf776a8ba6744a95466152865666"
        );
        let keys = Keys::new(&[b'k'; 100]);
        // Twice: a MAC must not change the state the next one starts from.
        for _ in 0..2 {
            assert_eq!(
                keys.digest(Purpose::AddressKey, b"reader@example.org"),
                "007decdb43cf1ec58d9bc7631c48d52b959da8ea690bb06de8bf7bf8804b008e"
            );
        }
    }

    #[test]
    fn a_token_opens_only_for_its_purpose_and_key() {
        let keys = Keys::new(b"0123456789abcdef0123456789abcdef");
        let token = keys.sign(Purpose::Unsubscribe, b"reminder");
        assert_eq!(
            keys.open(Purpose::Unsubscribe, &token).as_deref(),
            Some(&b"reminder"[..])
        );
        assert_eq!(keys.open(Purpose::EmailLink, &token), None);
        let other = Keys::new(b"another secret of thirty-two bytes!");
        assert_eq!(other.open(Purpose::Unsubscribe, &token), None);
    }

    proptest! {
        #[test]
        fn a_changed_token_never_opens(payload in proptest::collection::vec(any::<u8>(), 0..64), flip in 0_usize..96) {
            let keys = Keys::new(b"0123456789abcdef0123456789abcdef");
            let token = keys.sign(Purpose::PlanAction, &payload);
            let mut raw = URL_SAFE_NO_PAD.decode(&token).unwrap();
            let at = flip % raw.len();
            raw[at] ^= 0x01;
            let tampered = URL_SAFE_NO_PAD.encode(raw);
            prop_assert_eq!(keys.open(Purpose::PlanAction, &tampered), None);
        }

        #[test]
        fn garbage_never_opens(token in ".{0,200}") {
            let keys = Keys::new(b"0123456789abcdef0123456789abcdef");
            prop_assert_eq!(keys.open(Purpose::BannerCookie, &token), None);
        }
    }
}
