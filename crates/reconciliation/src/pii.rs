//! Personal data arriving inside Stripe events. The inbox keeps none of it: the stored event
//! is an allowlisted projection ([`crate::projection`]), and the one personal fact Kopilka
//! uses — the address a donor typed at Stripe's checkout for a contribution of Kopilka's that
//! has no reader yet — becomes a reader id (the accounts crate holds the address).

use serde_json::Value;

/// The donor's address on a Checkout Session (`customer_details.email`, else its
/// `customer_email`). Only Checkout Sessions name a reader for Kopilka: any other object's
/// address (an invoice's `customer_email`, a charge's billing details) is never read.
#[must_use]
pub fn checkout_email(object: &Value) -> Option<&str> {
    if object["object"] != "checkout.session" {
        return None;
    }
    object["customer_details"]["email"]
        .as_str()
        .or_else(|| object["customer_email"].as_str())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn only_a_checkout_session_names_a_reader() {
        let session = json!({"object": "checkout.session", "customer_email": "b@example.org",
                             "customer_details": {"email": "a@example.org"}});
        assert_eq!(checkout_email(&session), Some("a@example.org"));
        let invoice = json!({"object": "invoice", "customer_email": "a@example.org"});
        assert_eq!(checkout_email(&invoice), None);
    }
}
