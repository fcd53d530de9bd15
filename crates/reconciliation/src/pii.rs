//! Personal data arriving inside Stripe events. The inbox keeps none of it: before an event
//! is stored, the reader's address is turned into a reader id (the accounts crate holds the
//! address) and every field that can hold an address, a name, a phone number or a postal
//! address is blanked. Applying events needs none of them.

use serde_json::Value;

/// Fields that hold personal data in any Stripe object.
const PERSONAL: &[&str] = &[
    "customer_details",
    "customer_email",
    "customer_name",
    "customer_phone",
    "customer_address",
    "customer_shipping",
    "receipt_email",
    "billing_details",
    "shipping",
    "shipping_details",
    "collected_information",
];

/// Further fields that are personal in a `customer` object (elsewhere `name` is a product's).
const PERSONAL_IN_CUSTOMER: &[&str] = &["email", "name", "phone", "address", "description"];

/// The reader's address an event names (a Checkout Session's `customer_details.email`, else
/// its `customer_email`).
#[must_use]
pub fn reader_email(payload: &Value) -> Option<String> {
    let object = &payload["data"]["object"];
    object["customer_details"]["email"]
        .as_str()
        .or_else(|| object["customer_email"].as_str())
        .map(str::to_owned)
}

/// Blanks every personal field of an event, at any depth, including the previous values of a
/// customer's fields in `data.previous_attributes`. Returns whether anything was blanked.
pub fn redact_event(event: &mut Value) -> bool {
    let customer = event["data"]["object"]["object"] == "customer";
    let mut changed = redact(event);
    if customer
        && let Some(previous) = event["data"]
            .get_mut("previous_attributes")
            .and_then(Value::as_object_mut)
    {
        for key in PERSONAL_IN_CUSTOMER {
            if let Some(field) = previous.get_mut(*key)
                && !field.is_null()
            {
                *field = Value::Null;
                changed = true;
            }
        }
    }
    changed
}

/// Blanks every personal field, at any depth. Returns whether anything was blanked.
pub fn redact(value: &mut Value) -> bool {
    match value {
        Value::Object(map) => {
            let is_customer = map.get("object").and_then(Value::as_str) == Some("customer");
            let mut changed = false;
            for (key, field) in map.iter_mut() {
                let personal = PERSONAL.contains(&key.as_str())
                    || (is_customer && PERSONAL_IN_CUSTOMER.contains(&key.as_str()));
                if personal {
                    if !field.is_null() {
                        *field = Value::Null;
                        changed = true;
                    }
                } else {
                    changed |= redact(field);
                }
            }
            changed
        }
        Value::Array(items) => items.iter_mut().fold(false, |acc, item| redact(item) | acc),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn addresses_names_and_phones_are_blanked_at_any_depth() {
        let mut event = json!({"data": {"object": {
            "object": "checkout.session", "id": "cs_1", "customer_email": "a@example.org",
            "customer_details": {"email": "a@example.org", "name": "A"},
            "line_items": {"data": [{"price": {"product": {"name": "Monthly contribution"}}}]},
            "payment_intent": {"object": "payment_intent", "receipt_email": "a@example.org",
                "latest_charge": {"billing_details": {"email": "a@example.org"}}},
            "customer": {"object": "customer", "id": "cus_1", "email": "a@example.org", "name": "A"}
        }}});
        assert_eq!(reader_email(&event).as_deref(), Some("a@example.org"));
        assert!(redact(&mut event));
        let text = event.to_string();
        assert!(!text.contains("a@example.org"), "{text}");
        assert!(!text.contains("\"A\""), "{text}");
        assert!(
            text.contains("Monthly contribution"),
            "a product's name is not personal"
        );
        assert_eq!(event["data"]["object"]["customer"]["id"], "cus_1");
        assert!(!redact(&mut event), "redacting twice changes nothing");
    }

    #[test]
    fn a_customers_previous_address_is_blanked_too() {
        let mut event = json!({"type": "customer.updated", "data": {
            "object": {"object": "customer", "id": "cus_1", "email": null},
            "previous_attributes": {"email": "a@example.org", "name": "A", "metadata": {}}
        }});
        assert!(redact_event(&mut event));
        assert!(!event.to_string().contains("a@example.org"), "{event}");
        assert_eq!(event["data"]["previous_attributes"]["metadata"], json!({}));
    }
}
