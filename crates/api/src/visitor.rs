//! The first-party visitor cookie `__Host-kopilka_visitor`: the only thing ask experiments
//! know about a reader. Signed (accounts secret, its own purpose), HttpOnly, a year. It holds
//! a random id (16 bytes), the day its view was last counted, and the experiment variant it
//! was last served (so a returning visitor keeps their variant while a bandit's shares move,
//! and checkout attributes a gift to what the reader saw, the holdback included). Nothing
//! about the reader goes in: no address, IP or fingerprint.

use axum::http::{HeaderMap, HeaderValue};
use kopilka_accounts::keys::Purpose;
use time::OffsetDateTime;

use crate::AppState;
use crate::identity::Jar;

/// The cookie's name.
pub(crate) const VISITOR_COOKIE: &str = "__Host-kopilka_visitor";

/// How long a visitor id lasts.
const VISITOR_DAYS: i64 = 365;

/// The payload: id, counted day, then optionally experiment id and slot.
const BASE_LEN: usize = 20;
const FULL_LEN: usize = BASE_LEN + 16 + 1;

/// What the cookie says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Visitor {
    /// The random id.
    pub id: [u8; 16],
    /// Days since the Unix epoch of the last counted view (0: never).
    pub counted_day: u32,
    /// The experiment and slot (0 the holdback, `1 + i` variant `i`) last served.
    pub served: Option<(uuid::Uuid, u8)>,
}

/// Days since the Unix epoch of `now`.
pub(crate) fn day_of(now: OffsetDateTime) -> u32 {
    u32::try_from(now.unix_timestamp().div_euclid(86_400)).unwrap_or(0)
}

impl Visitor {
    /// A new visitor: a fresh random id (from the thread's CSPRNG, not a system call per
    /// view), never counted, never served.
    pub fn new() -> Self {
        Self {
            id: rand::random::<[u8; 16]>(),
            counted_day: 0,
            served: None,
        }
    }

    /// The cookie the request carries, if valid (a forged or unreadable one is none).
    pub fn from_request(state: &AppState, headers: &HeaderMap) -> Option<Self> {
        Self::from_jar(state, &Jar::parse(headers))
    }

    /// The cookie among a request's parsed cookies, if valid.
    pub fn from_jar(state: &AppState, jar: &Jar<'_>) -> Option<Self> {
        let bytes = state.accounts.keys.open(Purpose::Visitor, jar.visitor?)?;
        let mut id = [0_u8; 16];
        id.copy_from_slice(bytes.get(..16)?);
        let (counted_day, served) = match bytes.len() {
            // The first version held the id only.
            16 => (0, None),
            BASE_LEN => (u32::from_be_bytes(bytes[16..20].try_into().ok()?), None),
            FULL_LEN => (
                u32::from_be_bytes(bytes[16..20].try_into().ok()?),
                Some((uuid::Uuid::from_slice(&bytes[20..36]).ok()?, bytes[36])),
            ),
            _ => return None,
        };
        Some(Self {
            id,
            counted_day,
            served,
        })
    }

    /// The id as the assignment hashes it (hex).
    pub fn key(&self) -> String {
        const HEX: &[u8; 16] = b"0123456789abcdef";
        let mut hex = String::with_capacity(32);
        for b in self.id {
            hex.push(char::from(HEX[usize::from(b >> 4)]));
            hex.push(char::from(HEX[usize::from(b & 0xf)]));
        }
        hex
    }

    /// The `Set-Cookie` for this state.
    pub fn cookie(&self, state: &AppState) -> HeaderValue {
        let mut bytes = Vec::with_capacity(FULL_LEN);
        bytes.extend_from_slice(&self.id);
        bytes.extend_from_slice(&self.counted_day.to_be_bytes());
        if let Some((experiment, slot)) = self.served {
            bytes.extend_from_slice(experiment.as_bytes());
            bytes.push(slot);
        }
        let value = state.accounts.keys.sign(Purpose::Visitor, &bytes);
        // Max-Age, not Expires: no date to format on every new visitor's view.
        HeaderValue::try_from(format!(
            "{VISITOR_COOKIE}={value}; Path=/; Max-Age={}; Secure; HttpOnly; SameSite=Lax",
            VISITOR_DAYS * 86_400
        ))
        .unwrap_or_else(|_| HeaderValue::from_static(""))
    }
}

/// The slot of an assignment (0 the holdback, `1 + i` variant `i`).
pub(crate) fn slot_of(assignment: kopilka_experiments::Assignment) -> u8 {
    match assignment {
        kopilka_experiments::Assignment::Holdback => 0,
        kopilka_experiments::Assignment::Variant(index) => {
            u8::try_from(index + 1).unwrap_or(u8::MAX)
        }
    }
}

/// The assignment of a slot, if the experiment has it.
pub(crate) fn assignment_of(
    experiment: &kopilka_experiments::live::LiveExperiment,
    slot: u8,
) -> Option<kopilka_experiments::Assignment> {
    match slot {
        0 => Some(kopilka_experiments::Assignment::Holdback),
        n => {
            let index = usize::from(n) - 1;
            (index < experiment.spec.variants.len())
                .then_some(kopilka_experiments::Assignment::Variant(index))
        }
    }
}
