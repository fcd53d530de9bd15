//! Bounded fuzzing of the parsers that meet untrusted bytes, with `proptest` (cargo-fuzz
//! needs nightly): random inputs and mutations of valid ones, each target for
//! `KOPILKA_FUZZ_SECS` seconds (default 3), with the properties that matter beyond "no
//! panic": only a genuine signature verifies, only a genuine meter cookie counts, amounts
//! survive a round trip exactly.

use std::time::{Duration, Instant};

use kopilka_domain::{Currency, Money};
use kopilka_paywall::Meter;
use kopilka_stripe::{Event, WebhookVerifier};
use libtest_mimic::Failed;
use proptest::prelude::*;
use proptest::test_runner::{Config, TestCaseError, TestRunner};
use secrecy::SecretString;

const SECRET: &str = "whsec_fuzzing_secret";
const NOW: i64 = 1_764_417_600;
const BODY: &[u8] = br#"{"id":"evt_1","object":"event","type":"charge.succeeded","created":1764417600,"livemode":false,"data":{"object":{"id":"ch_1","object":"charge"}}}"#;

fn budget() -> Duration {
    let secs = std::env::var("KOPILKA_FUZZ_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(3.0_f64);
    Duration::from_secs_f64(secs)
}

/// Runs `test` on values of `strategy` in batches of 256 fresh random cases until the budget
/// is spent; a failure is shrunk and reported.
fn fuzz<S>(
    name: &str,
    strategy: S,
    test: impl Fn(S::Value) -> Result<(), TestCaseError>,
) -> Result<(), Failed>
where
    S: Strategy,
    S::Value: std::fmt::Debug,
{
    let deadline = Instant::now() + budget();
    let mut cases = 0_u64;
    loop {
        let mut runner = TestRunner::new(Config {
            cases: 256,
            failure_persistence: None,
            ..Config::default()
        });
        runner
            .run(&strategy, &test)
            .map_err(|err| Failed::from(format!("{name}: {err}")))?;
        cases += 256;
        if Instant::now() >= deadline {
            break;
        }
    }
    println!("fuzz {name}: {cases} cases");
    Ok(())
}

/// A mutation of `valid`: one byte replaced, inserted or removed, or a slice repeated.
fn mutated(valid: Vec<u8>) -> impl Strategy<Value = Vec<u8>> {
    let len = valid.len();
    (0..4_u8, 0..=len, 0..=len, any::<u8>()).prop_map(move |(op, at, to, byte)| {
        let mut bytes = valid.clone();
        let at = at.min(bytes.len().saturating_sub(1));
        match op {
            0 if !bytes.is_empty() => bytes[at] = byte,
            1 => bytes.insert(at, byte),
            2 if !bytes.is_empty() => {
                bytes.remove(at);
            }
            _ => {
                let (from, to) = (at.min(to), at.max(to));
                let slice = bytes[from..to.min(bytes.len())].to_vec();
                bytes.splice(to.min(bytes.len())..to.min(bytes.len()), slice);
            }
        }
        bytes
    })
}

pub fn signature_header() -> Result<(), Failed> {
    let verifier = WebhookVerifier::new(
        vec![SecretString::from(SECRET.to_owned())],
        WebhookVerifier::DEFAULT_TOLERANCE_SECS,
    );
    let genuine = kopilka_stripe::sign(SECRET, NOW, BODY);
    let genuine_v1 = genuine.split_once(",v1=").expect("t=…,v1=…").1.to_owned();
    let extra_item = ("[a-suw-z][a-z0-9]{0,4}", "[a-zA-Z0-9_=.]{0,24}")
        .prop_map(|(key, value)| format!("{key}={value}"));
    let strategy = prop_oneof![
        "\\PC{0,300}".prop_map(String::into_bytes),
        mutated(genuine.clone().into_bytes()),
        // The genuine items among others, in any order.
        (
            prop::collection::vec(extra_item, 0..6),
            any::<prop::sample::Index>(),
            any::<prop::sample::Index>()
        )
            .prop_map({
                let genuine_v1 = genuine_v1.clone();
                move |(mut items, t_at, v1_at)| {
                    items.insert(t_at.index(items.len() + 1), format!("t={NOW}"));
                    items.insert(v1_at.index(items.len() + 1), format!("v1={genuine_v1}"));
                    items.join(",").into_bytes()
                }
            }),
    ];
    fuzz("signature header", strategy, |bytes| {
        let header = String::from_utf8_lossy(&bytes);
        let verdict = verifier.verify(Some(&header), BODY, NOW);
        let items: Vec<&str> = header.split(',').map(str::trim).collect();
        // Hex is read in either case: the same bytes.
        let genuine_items = items.contains(&format!("t={NOW}").as_str())
            && items.iter().any(|i| {
                i.strip_prefix("v1=")
                    .is_some_and(|hex| hex.eq_ignore_ascii_case(&genuine_v1))
            });
        if verdict.is_ok() {
            prop_assert!(
                genuine_items,
                "verified without the genuine items: {header}"
            );
        }
        // Well-formed: every item is key=value and there is exactly one t.
        let only_extra = items
            .iter()
            .filter(|i| !i.is_empty())
            .all(|i| i.contains('='))
            && items.iter().filter(|i| i.starts_with("t=")).count() == 1;
        if genuine_items && only_extra {
            prop_assert!(
                verdict.is_ok(),
                "the genuine items among others must verify: {header} {verdict:?}"
            );
        }
        // Any other body never verifies with the same header.
        let other_body = verifier.verify(Some(&header), b"{}", NOW);
        prop_assert!(other_body.is_err(), "verified another body: {}", header);
        Ok(())
    })
}

fn json_value() -> impl Strategy<Value = serde_json::Value> {
    let leaf = prop_oneof![
        Just(serde_json::Value::Null),
        any::<bool>().prop_map(serde_json::Value::from),
        any::<i64>().prop_map(serde_json::Value::from),
        any::<f64>().prop_map(serde_json::Value::from),
        "\\PC{0,20}".prop_map(serde_json::Value::from),
    ];
    leaf.prop_recursive(6, 64, 8, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..8).prop_map(serde_json::Value::from),
            prop::collection::btree_map(
                prop_oneof![
                    Just("id".to_owned()),
                    Just("type".to_owned()),
                    Just("created".to_owned()),
                    Just("data".to_owned()),
                    Just("object".to_owned()),
                    "[a-z_]{1,12}"
                ],
                inner,
                0..8
            )
            .prop_map(|map| serde_json::Value::Object(map.into_iter().collect())),
        ]
    })
}

pub fn event_envelope() -> Result<(), Failed> {
    let strategy = prop_oneof![
        prop::collection::vec(any::<u8>(), 0..600),
        mutated(BODY.to_vec()),
        json_value().prop_map(|v| v.to_string().into_bytes()),
        json_value().prop_map(|object| {
            serde_json::json!({"id": "evt_x", "type": "x.y", "created": 1, "data": {"object": object}})
                .to_string()
                .into_bytes()
        }),
    ];
    fuzz("event envelope", strategy, |bytes| {
        if let Ok(event) = Event::parse(&bytes) {
            prop_assert!(!event.id.is_empty() && !event.event_type.is_empty());
            let object: serde_json::Value = serde_json::from_str(event.object.get())
                .map_err(|e| TestCaseError::fail(format!("data.object kept as JSON: {e}")))?;
            prop_assert!(object.is_object(), "data.object is an object");
            prop_assert_eq!(
                event.object_id.as_deref(),
                object.get("id").and_then(|v| v.as_str())
            );
        }
        Ok(())
    })
}

fn currency() -> impl Strategy<Value = Currency> {
    prop::sample::select(vec![
        "usd", "eur", "gbp", "jpy", "krw", "bhd", "kwd", "chf", "sek", "isk",
    ])
    .prop_map(|code| code.parse::<Currency>().expect("a known currency"))
}

pub fn money() -> Result<(), Failed> {
    let strategy = prop_oneof![
        (any::<i64>(), currency()).prop_map(|(minor, c)| (Money::new(minor, c).format_major(), c)),
        ("[-+ 0-9.,e_]{0,24}", currency()),
        ("\\PC{0,24}", currency()),
        ("-?[0-9]{1,20}(\\.[0-9]{0,5})?", currency()),
    ];
    fuzz("money", strategy, |(text, currency)| {
        // Currency codes from anywhere never panic either.
        let _ = text.parse::<Currency>();
        match Money::parse_major(&text, currency) {
            Ok(money) => {
                prop_assert_eq!(money.currency(), currency);
                let decimals = text.split_once('.').map_or(0, |(_, f)| f.len());
                prop_assert!(decimals <= currency.exponent() as usize, "{text}");
                let again = Money::parse_major(&money.format_major(), currency)
                    .map_err(|e| TestCaseError::fail(format!("{text}: {e}")))?;
                prop_assert_eq!(again, money, "round trip of {}", text);
            }
            Err(_) => {
                // Refused text is never a plain amount with the right decimals that fits.
                let plain = text.strip_prefix('-').unwrap_or(&text);
                let (whole, fraction) = plain.split_once('.').unwrap_or((plain, ""));
                let well_formed = !whole.is_empty()
                    && whole.bytes().all(|b| b.is_ascii_digit())
                    && fraction.bytes().all(|b| b.is_ascii_digit())
                    && u32::try_from(fraction.len()).is_ok_and(|n| n <= currency.exponent())
                    && (!plain.contains('.') || !fraction.is_empty())
                    && whole.len() + fraction.len() < 16;
                prop_assert!(!well_formed, "refused a fine amount: {text}");
            }
        }
        Ok(())
    })
}

pub fn meter_cookie() -> Result<(), Failed> {
    let secret = b"fuzzing meter secret, thirty-two bytes or more";
    let now = time::OffsetDateTime::from_unix_timestamp(NOW).expect("a time");
    let fresh = Meter::from_cookie(secret, None, now);
    let genuine = Meter {
        month: fresh.month,
        views: 3,
    };
    let cookie = genuine.to_cookie(secret);
    let strategy = prop_oneof![
        "\\PC{0,200}".prop_map(String::into_bytes),
        "[A-Za-z0-9_-]{0,120}".prop_map(String::into_bytes),
        mutated(cookie.clone().into_bytes()),
    ];
    fuzz("meter cookie", strategy, |bytes| {
        let text = String::from_utf8_lossy(&bytes);
        let read = Meter::from_cookie(secret, Some(&text), now);
        if text.trim() == cookie {
            prop_assert_eq!(read, genuine);
        } else {
            // Anything but the genuine cookie is a fresh meter: no free articles gained, no
            // views smuggled in.
            prop_assert_eq!(read, fresh, "{}", text);
        }
        // Signed with another secret, nothing counts either.
        prop_assert_eq!(
            Meter::from_cookie(b"another secret", Some(&text), now),
            fresh
        );
        Ok(())
    })
}
