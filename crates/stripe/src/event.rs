//! The lenient event envelope. Stripe adds event types and fields over time and renders
//! `data.object` in the endpoint's API version; Kopilka must store every verified event and
//! never refuse one for a shape it does not know. So only the envelope is parsed here —
//! `id`, `type`, `created`, `livemode`, `api_version`, `data.object` (kept as raw JSON) and
//! `data.previous_attributes` — and everything else is left alone.

use serde::Deserialize;
use serde_json::value::RawValue;

/// The API version Kopilka speaks: the one async-stripe (`=1.0.0-rc.10`) pins and sends
/// with every call. Events rendered in another version have other shapes (before the
/// 2025 "basil" API an invoice had no `parent`, after it no `payment_intent`), so the
/// applier refuses them loudly rather than misread them; the webhook endpoint must be
/// pinned to this version.
#[must_use]
pub fn api_version() -> &'static str {
    static PINNED: stripe_shared::ApiVersion = stripe_shared::version::VERSION;
    PINNED.as_str()
}

/// A verified Stripe event, as much as Kopilka needs to route and order it.
#[derive(Debug, Clone)]
pub struct Event {
    /// `evt_…`, unique per event; the inbox's key.
    pub id: String,
    /// e.g. `checkout.session.completed`; unknown types are kept as they are.
    pub event_type: String,
    /// When Stripe created the event (unix seconds).
    pub created: i64,
    /// Whether it came from live mode.
    pub livemode: bool,
    /// The API version `data.object` was rendered in.
    pub api_version: Option<String>,
    /// `data.object`, byte for byte.
    pub object: Box<RawValue>,
    /// `data.object.id`, when the object has one.
    pub object_id: Option<String>,
    /// `data.object.object`, e.g. `checkout.session`.
    pub object_kind: Option<String>,
    /// `data.previous_attributes` on `*.updated` events.
    pub previous_attributes: Option<Box<RawValue>>,
}

/// Why a body is not an event envelope.
#[derive(Debug, thiserror::Error)]
pub enum EventError {
    /// Not JSON, or a required envelope field is missing or of the wrong type.
    #[error("not a Stripe event: {0}")]
    Invalid(String),
}

/// serde's own message can quote the value it refused (an address in a mistyped field); the
/// error says only what kind of failure it was and where.
fn invalid_json(err: &serde_json::Error) -> EventError {
    let kind = match err.classify() {
        serde_json::error::Category::Io => "unreadable",
        serde_json::error::Category::Syntax => "not JSON",
        serde_json::error::Category::Data => "a field is missing or of the wrong type",
        serde_json::error::Category::Eof => "truncated",
    };
    EventError::Invalid(format!(
        "{kind} (line {}, column {})",
        err.line(),
        err.column()
    ))
}

#[derive(Deserialize)]
struct Envelope {
    id: String,
    #[serde(rename = "type")]
    event_type: String,
    created: i64,
    #[serde(default)]
    livemode: bool,
    #[serde(default)]
    api_version: Option<String>,
    data: Data,
}

#[derive(Deserialize)]
struct Data {
    object: Box<RawValue>,
    #[serde(default)]
    previous_attributes: Option<Box<RawValue>>,
}

/// The two fields of `data.object` used for routing; the rest is not looked at.
#[derive(Deserialize)]
struct ObjectHead {
    #[serde(default)]
    id: Option<String>,
    #[serde(default)]
    object: Option<String>,
}

impl Event {
    /// Parses the envelope of `body`. Total over any input: never panics, whatever the bytes.
    ///
    /// # Errors
    /// [`EventError::Invalid`] when the body is not JSON, misses `id`, `type`, `created` or
    /// `data.object`, or `data.object` is not a JSON object.
    pub fn parse(body: &[u8]) -> Result<Self, EventError> {
        let envelope: Envelope = serde_json::from_slice(body).map_err(|e| invalid_json(&e))?;
        if envelope.id.is_empty() || envelope.event_type.is_empty() {
            return Err(EventError::Invalid("empty id or type".into()));
        }
        // serde would also read a struct from a JSON array; only an object is an object.
        let head: ObjectHead = Some(envelope.data.object.get())
            .filter(|raw| raw.trim_start().starts_with('{'))
            .and_then(|raw| serde_json::from_str(raw).ok())
            .ok_or_else(|| EventError::Invalid("data.object is not an object".into()))?;
        Ok(Self {
            id: envelope.id,
            event_type: envelope.event_type,
            created: envelope.created,
            livemode: envelope.livemode,
            api_version: envelope.api_version,
            object: envelope.data.object,
            object_id: head.id,
            object_kind: head.object,
            previous_attributes: envelope
                .data
                .previous_attributes
                .filter(|raw| raw.get() != "null"),
        })
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_pinned_api_version_is_the_simulators() {
        assert_eq!(super::api_version(), "2026-09-30.endive");
    }

    use proptest::prelude::*;

    use super::*;

    #[test]
    fn a_refused_body_is_not_quoted_in_the_error() {
        for body in [
            r#"{"id":"evt_1","type":"x","created":"quoted-donor@example.org","data":{"object":{}}}"#,
            r#"{"id":["quoted-donor@example.org"],"type":"x","created":1,"data":{"object":{}}}"#,
            r#"{"id":"evt_1","type":"x","created":1,"data":{"object":{}}"quoted-donor@example.org"#,
        ] {
            let err = Event::parse(body.as_bytes()).unwrap_err();
            for text in [err.to_string(), format!("{err:?}")] {
                assert!(!text.contains("quoted-donor"), "{text}");
            }
        }
    }

    #[test]
    fn stripes_own_example_event_parses() {
        // Stripe's published example event (openapi/fixtures3.json, "event"; MIT, Stripe, Inc.).
        let body = include_str!("../tests/fixtures/event.json");
        let event = Event::parse(body.as_bytes()).unwrap();
        assert_eq!(event.id, "evt_1Pgc76B7WZ01zgkWwyRHS12y");
        assert_eq!(event.event_type, "plan.created");
        assert_eq!(event.created, 1_234_567_890);
        assert!(!event.livemode);
        assert_eq!(event.api_version, None);
        assert_eq!(
            event.object_id.as_deref(),
            Some("price_1PgafmB7WZ01zgkW6dKueIc5")
        );
        assert_eq!(event.object_kind.as_deref(), Some("plan"));
        assert!(event.previous_attributes.is_none());
    }

    #[test]
    fn unknown_types_and_fields_are_kept_and_the_object_is_byte_exact() {
        let body = br#"{"id":"evt_9","type":"brand_new.event","created":5,"livemode":true,"api_version":"2099-01-01.future","surprise":[1,2],"data":{"object":{"id":"x_1","object":"novelty","n": 1.50},"previous_attributes":{"n":1}}}"#;
        let event = Event::parse(body).unwrap();
        assert_eq!(event.event_type, "brand_new.event");
        assert!(event.livemode);
        assert_eq!(event.api_version.as_deref(), Some("2099-01-01.future"));
        assert_eq!(
            event.object.get(),
            r#"{"id":"x_1","object":"novelty","n": 1.50}"#
        );
        assert_eq!(event.previous_attributes.unwrap().get(), r#"{"n":1}"#);
    }

    #[test]
    fn bodies_without_an_envelope_are_refused() {
        for body in [
            &b"not json"[..],
            br#"{"type":"x","created":1,"data":{"object":{}}}"#,
            br#"{"id":"evt_1","created":1,"data":{"object":{}}}"#,
            br#"{"id":"evt_1","type":"x","data":{"object":{}}}"#,
            br#"{"id":"evt_1","type":"x","created":1}"#,
            br#"{"id":"evt_1","type":"x","created":1,"data":{"object":[1]}}"#,
            // serde reads a struct from an array too; the fault suite's fuzzing found these.
            br#"{"id":"evt_1","type":"x","created":1,"data":{"object":[]}}"#,
            br#"{"id":"evt_1","type":"x","created":1,"data":{"object":["ch_1","charge"]}}"#,
            br#"{"id":"","type":"x","created":1,"data":{"object":{}}}"#,
            br#"{"id":"evt_1","type":"x","created":"yesterday","data":{"object":{}}}"#,
        ] {
            assert!(
                Event::parse(body).is_err(),
                "{}",
                String::from_utf8_lossy(body)
            );
        }
    }

    proptest! {
        #[test]
        fn arbitrary_bytes_never_panic(body in prop::collection::vec(any::<u8>(), 0..512)) {
            let _ = Event::parse(&body);
        }

        #[test]
        fn envelopes_round_trip(id in "evt_[A-Za-z0-9]{1,24}", kind in "[a-z_]{1,12}\\.[a-z_]{1,12}", created in 0_i64..4_000_000_000, livemode in any::<bool>(), object_id in "[a-z]{2,4}_[A-Za-z0-9]{1,24}") {
            let body = serde_json::json!({
                "id": id, "object": "event", "type": kind, "created": created, "livemode": livemode,
                "api_version": "2026-07-29.dahlia", "pending_webhooks": 1,
                "data": {"object": {"id": object_id, "object": "thing"}}
            });
            let event = Event::parse(body.to_string().as_bytes()).unwrap();
            prop_assert_eq!(event.id, id);
            prop_assert_eq!(event.event_type, kind);
            prop_assert_eq!(event.created, created);
            prop_assert_eq!(event.livemode, livemode);
            prop_assert_eq!(event.object_id, Some(object_id));
        }
    }
}
