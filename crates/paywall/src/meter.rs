use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use sha2::Sha256;
use subtle::ConstantTimeEq as _;

/// How the paywall treats a reader past the free articles.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MeterMode {
    /// Never a wall: the banner asks, that is all.
    AsksOnly,
    /// A wall the reader can dismiss.
    Metered,
    /// A wall that stays until they support.
    Hard,
}

/// The meter: articles read this calendar month, in a signed cookie.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Meter {
    /// The month counted, `YYYYMM`.
    pub month: u32,
    /// Articles read in it.
    pub views: u32,
}

/// What one article view decides.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct MeterView {
    /// Free articles left this month after this one.
    pub remaining: u32,
    /// `none`, `dismissible` or `hard`.
    pub wall: &'static str,
}

type HmacSha256 = Hmac<Sha256>;

fn month_of(now: time::OffsetDateTime) -> u32 {
    u32::try_from(now.year()).unwrap_or(0) * 100 + u32::from(u8::from(now.month()))
}

fn mac(secret: &[u8], payload: &[u8]) -> [u8; 32] {
    let mut mac = HmacSha256::new_from_slice(secret)
        .unwrap_or_else(|_| unreachable!("HMAC takes a key of any length"));
    mac.update(b"kopilka/meter/v1\0");
    mac.update(payload);
    mac.finalize().into_bytes().into()
}

impl Meter {
    /// The meter in `cookie`, or a fresh one for this month when it is absent, forged,
    /// tampered with or from an earlier month. Tampering never yields more free articles
    /// than a fresh meter.
    #[must_use]
    pub fn from_cookie(secret: &[u8], cookie: Option<&str>, now: time::OffsetDateTime) -> Self {
        let fresh = Self {
            month: month_of(now),
            views: 0,
        };
        let Some(bytes) = cookie.and_then(|c| URL_SAFE_NO_PAD.decode(c.trim()).ok()) else {
            return fresh;
        };
        let Some(split) = bytes.len().checked_sub(32) else {
            return fresh;
        };
        let (payload, tag) = bytes.split_at(split);
        if !bool::from(mac(secret, payload).ct_eq(tag)) {
            return fresh;
        }
        match serde_json::from_slice::<Self>(payload) {
            Ok(meter) if meter.month == fresh.month => meter,
            _ => fresh,
        }
    }

    /// The cookie value: this meter, signed.
    #[must_use]
    pub fn to_cookie(&self, secret: &[u8]) -> String {
        let mut bytes = serde_json::to_vec(self).unwrap_or_default();
        let tag = mac(secret, &bytes);
        bytes.extend_from_slice(&tag);
        URL_SAFE_NO_PAD.encode(bytes)
    }

    /// Counts one article view under `mode` with `free` articles a month, and says what it
    /// decides. The returned meter goes back in the cookie.
    #[must_use]
    pub fn view(self, mode: MeterMode, free: u32) -> (Self, MeterView) {
        let next = Self {
            views: self.views.saturating_add(1),
            ..self
        };
        (next, next.peek(mode, free))
    }

    /// What the views counted so far decide, without counting another.
    #[must_use]
    pub fn peek(self, mode: MeterMode, free: u32) -> MeterView {
        let over = self.views > free;
        let wall = match (mode, over) {
            (_, false) | (MeterMode::AsksOnly, true) => "none",
            (MeterMode::Metered, true) => "dismissible",
            (MeterMode::Hard, true) => "hard",
        };
        MeterView {
            remaining: free.saturating_sub(self.views),
            wall,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::datetime;

    const SECRET: &[u8] = b"a-meter-secret-of-thirty-two-bytes!!";

    #[test]
    fn views_count_down_to_a_wall() {
        let now = datetime!(2026-11-29 12:00 UTC);
        let mut meter = Meter::from_cookie(SECRET, None, now);
        let mut seen = Vec::new();
        for _ in 0..4 {
            let (next, view) = meter.view(MeterMode::Metered, 3);
            seen.push((view.remaining, view.wall));
            meter = Meter::from_cookie(SECRET, Some(&next.to_cookie(SECRET)), now);
        }
        assert_eq!(
            seen,
            [(2, "none"), (1, "none"), (0, "none"), (0, "dismissible")]
        );
        assert_eq!(meter.view(MeterMode::Hard, 3).1.wall, "hard");
        assert_eq!(meter.view(MeterMode::AsksOnly, 3).1.wall, "none");
    }

    #[test]
    fn a_tampered_cookie_starts_afresh_never_unlimited() {
        let now = datetime!(2026-11-29 12:00 UTC);
        let used = Meter {
            month: 202_611,
            views: 9,
        };
        let cookie = used.to_cookie(SECRET);
        assert_eq!(Meter::from_cookie(SECRET, Some(&cookie), now), used);
        // Rewriting the payload to fewer views without the key fails the MAC.
        let mut bytes = URL_SAFE_NO_PAD.decode(&cookie).unwrap();
        let forged_payload = serde_json::to_vec(&Meter {
            month: 202_611,
            views: 0,
        })
        .unwrap();
        let tag = bytes.split_off(bytes.len() - 32);
        let mut forged = forged_payload.clone();
        forged.extend_from_slice(&tag);
        let forged = URL_SAFE_NO_PAD.encode(forged);
        assert_eq!(
            Meter::from_cookie(SECRET, Some(&forged), now).views,
            0,
            "fresh, counted from zero"
        );
        // A forged meter cannot grant more than a fresh one: views never go negative.
        assert_eq!(
            Meter::from_cookie(SECRET, Some("garbage"), now),
            Meter {
                month: 202_611,
                views: 0
            }
        );
        assert_eq!(
            Meter::from_cookie(b"another key of thirty-two bytes!!!!", Some(&cookie), now).views,
            0
        );
    }

    #[test]
    fn a_new_month_starts_a_new_count() {
        let november = datetime!(2026-11-30 23:59 UTC);
        let december = datetime!(2026-12-01 00:00 UTC);
        let used = Meter::from_cookie(SECRET, None, november)
            .view(MeterMode::Hard, 3)
            .0;
        assert_eq!(
            used,
            Meter {
                month: 202_611,
                views: 1
            }
        );
        let cookie = used.to_cookie(SECRET);
        assert_eq!(
            Meter::from_cookie(SECRET, Some(&cookie), december),
            Meter {
                month: 202_612,
                views: 0
            }
        );
        assert_eq!(Meter::from_cookie(SECRET, Some(&cookie), november).views, 1);
    }
}
