//! Subscription billing as Stripe does it: `proration_behavior` and `payment_behavior` on an
//! interval switch, a card that needs 3-D Secure (`requires_action`), and dunning that ends
//! (`canceled` or `unpaid` after the last retry, with Stripe's events).

mod common;

use common::Sim;
use serde_json::{Value, json};

impl Sim {
    async fn post(&self, path: &str, form: &[(&str, &str)]) -> (u16, Value) {
        let response = self
            .http
            .post(self.url(path))
            .bearer_auth(self.spawned.simulator.secret_key())
            .form(form)
            .send()
            .await
            .unwrap();
        (response.status().as_u16(), response.json().await.unwrap())
    }

    async fn get(&self, path: &str) -> Value {
        self.http
            .get(self.url(path))
            .bearer_auth(self.spawned.simulator.secret_key())
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap()
    }

    async fn control(&self, path: &str, body: &Value) -> Value {
        let response = self
            .http
            .post(self.url(path))
            .json(body)
            .send()
            .await
            .unwrap();
        assert!(response.status().is_success(), "{path}");
        response.json().await.unwrap()
    }

    /// A paid monthly plan of `amount` cents; answers the subscription id.
    async fn monthly(&self, amount: i64) -> String {
        let amount = amount.to_string();
        let (status, session) = self
            .post(
                "/v1/checkout/sessions",
                &[
                    ("mode", "subscription"),
                    ("line_items[0][price_data][currency]", "usd"),
                    ("line_items[0][price_data][unit_amount]", &amount),
                    ("line_items[0][price_data][recurring][interval]", "month"),
                    ("line_items[0][price_data][product_data][name]", "Support"),
                    ("line_items[0][quantity]", "1"),
                    ("success_url", "https://news.example.org/thanks"),
                ],
            )
            .await;
        assert_eq!(status, 200, "{session}");
        let id = session["id"].as_str().unwrap();
        self.control(&format!("/_sim/checkout/{id}/pay"), &json!({}))
            .await;
        self.get(&format!("/v1/checkout/sessions/{id}")).await["subscription"]
            .as_str()
            .unwrap()
            .to_owned()
    }

    /// Switches `sub` to a new yearly price of `amount` (made first with `POST /v1/prices`,
    /// as a pending update requires `items[][price]`), with `extra` parameters.
    async fn switch_to_year(
        &self,
        sub: &str,
        amount: &str,
        extra: &[(&str, &str)],
    ) -> (u16, Value) {
        let current = self.get(&format!("/v1/subscriptions/{sub}")).await;
        let item = current["items"]["data"][0]["id"]
            .as_str()
            .unwrap()
            .to_owned();
        let product = current["items"]["data"][0]["price"]["product"]
            .as_str()
            .unwrap()
            .to_owned();
        let (status, price) = self
            .post(
                "/v1/prices",
                &[
                    ("currency", "usd"),
                    ("unit_amount", amount),
                    ("product", &product),
                    ("recurring[interval]", "year"),
                ],
            )
            .await;
        assert_eq!(status, 200, "{price}");
        let price = price["id"].as_str().unwrap().to_owned();
        let mut form = vec![("items[0][id]", item.as_str()), ("items[0][price]", &price)];
        form.extend_from_slice(extra);
        self.post(&format!("/v1/subscriptions/{sub}"), &form).await
    }

    async fn latest_invoice(&self, sub: &str) -> Value {
        let sub = self.get(&format!("/v1/subscriptions/{sub}")).await;
        self.get(&format!(
            "/v1/invoices/{}",
            sub["latest_invoice"].as_str().unwrap()
        ))
        .await
    }

    async fn events(&self, kind: &str) -> Vec<Value> {
        self.get(&format!("/v1/events?type={kind}&limit=100")).await["data"]
            .as_array()
            .unwrap()
            .clone()
    }

    async fn advance_days(&self, days: i64) {
        self.control("/_sim/clock/advance", &json!({"seconds": days * 86_400}))
            .await;
    }
}

#[tokio::test]
async fn proration_behavior_decides_the_credit_of_an_interval_switch() {
    let sim = Sim::start().await;
    let none = sim.monthly(1000).await;
    let (status, body) = sim
        .switch_to_year(&none, "12000", &[("proration_behavior", "none")])
        .await;
    assert_eq!(status, 200, "{body}");
    let invoice = sim.latest_invoice(&none).await;
    assert_eq!(invoice["billing_reason"], "subscription_update");
    assert_eq!(
        invoice["amount_due"], 12000,
        "no credit: the month is forfeited"
    );

    let prorated = sim.monthly(1000).await;
    let (status, body) = sim.switch_to_year(&prorated, "12000", &[]).await;
    assert_eq!(status, 200, "{body}");
    let invoice = sim.latest_invoice(&prorated).await;
    assert_eq!(
        invoice["amount_due"], 11000,
        "create_prorations (the default) credits the month"
    );
    assert_eq!(invoice["status"], "paid");
    let lines: Vec<(i64, bool)> = invoice["lines"]["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| {
            (
                l["amount"].as_i64().unwrap(),
                l["parent"]["subscription_item_details"]["proration"] == true,
            )
        })
        .collect();
    assert_eq!(
        lines,
        vec![(-1000, true), (12000, false)],
        "a proration line and the new price"
    );
    let sub = sim.get(&format!("/v1/subscriptions/{prorated}")).await;
    assert_eq!(
        sub["items"]["data"][0]["price"]["recurring"]["interval"],
        "year"
    );
    // Below Stripe's minimum charge: nothing is charged, the amount is carried over.
    let small = sim.monthly(1000).await;
    let (status, body) = sim.switch_to_year(&small, "1030", &[]).await;
    assert_eq!(status, 200, "{body}");
    let invoice = sim.latest_invoice(&small).await;
    assert_eq!(
        (
            invoice["amount_due"].as_i64(),
            invoice["amount_paid"].as_i64(),
            invoice["status"].as_str()
        ),
        (Some(30), Some(0), Some("paid"))
    );
    let customer = sim
        .get(&format!(
            "/v1/customers/{}",
            invoice["customer"].as_str().unwrap()
        ))
        .await;
    assert_eq!(customer["balance"], 30, "carried to the next invoice");

    let (status, body) = sim
        .switch_to_year(&prorated, "12000", &[("proration_behavior", "sometimes")])
        .await;
    assert_eq!(
        (status, body["error"]["param"].as_str()),
        (400, Some("proration_behavior"))
    );
}

#[tokio::test]
async fn a_card_needing_3d_secure_leaves_a_pending_update_and_requires_action() {
    let sim = Sim::start().await;
    let sub = sim.monthly(1000).await;
    sim.control(
        &format!("/_sim/subscriptions/{sub}/card"),
        &json!({"outcome": "require_action"}),
    )
    .await;
    let (status, body) = sim
        .switch_to_year(
            &sub,
            "12000",
            &[
                ("proration_behavior", "always_invoice"),
                ("payment_behavior", "pending_if_incomplete"),
                ("expand[]", "latest_invoice"),
            ],
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        body["items"]["data"][0]["price"]["recurring"]["interval"],
        "month"
    );
    assert!(body["pending_update"]["expires_at"].is_i64(), "{body}");
    // A pending update takes items[][price], not price_data, as at Stripe.
    let item = body["items"]["data"][0]["id"].as_str().unwrap().to_owned();
    let (status, refused) = sim
        .post(
            &format!("/v1/subscriptions/{sub}"),
            &[
                ("items[0][id]", &item),
                ("items[0][price_data][currency]", "usd"),
                ("items[0][price_data][unit_amount]", "24000"),
                ("items[0][price_data][recurring][interval]", "year"),
                ("payment_behavior", "pending_if_incomplete"),
            ],
        )
        .await;
    assert_eq!(
        (status, refused["error"]["param"].as_str()),
        (400, Some("items[0][price_data]"))
    );
    // Exactly the keys of Stripe's example `pending_update`.
    let example: Value = serde_json::from_str(include_str!("../fixtures/objects.json")).unwrap();
    let keys = |v: &Value| {
        let mut keys: Vec<String> = v.as_object().unwrap().keys().cloned().collect();
        keys.sort();
        keys
    };
    assert_eq!(
        keys(&body["pending_update"]),
        keys(&example["subscription"]["pending_update"])
    );
    assert_eq!(body["latest_invoice"]["status"], "open", "expanded");
    assert!(body["latest_invoice"]["hosted_invoice_url"].is_string());
    let intents = sim.get("/v1/payment_intents?limit=100").await;
    let waiting: Vec<&Value> = intents["data"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|pi| pi["status"] == "requires_action")
        .collect();
    assert_eq!(waiting.len(), 1, "{intents}");
    assert_eq!(waiting[0]["amount"], 11000);
    assert_eq!(sim.events("invoice.payment_action_required").await.len(), 1);
    assert_eq!(sim.events("payment_intent.requires_action").await.len(), 1);

    // Nobody completes it: after 23 hours the invoice is voided, the change dropped.
    sim.control("/_sim/clock/advance", &json!({"seconds": 24 * 3600}))
        .await;
    let expired = sim.get(&format!("/v1/subscriptions/{sub}")).await;
    assert!(expired["pending_update"].is_null(), "{expired}");
    assert_eq!(
        expired["items"]["data"][0]["price"]["recurring"]["interval"],
        "month"
    );
    assert_eq!(sim.latest_invoice(&sub).await["status"], "void");
    assert_eq!(sim.events("invoice.voided").await.len(), 1);

    // error_if_incomplete refuses outright and changes nothing.
    sim.control(
        &format!("/_sim/subscriptions/{sub}/card"),
        &json!({"outcome": "decline"}),
    )
    .await;
    let (status, body) = sim
        .switch_to_year(
            &sub,
            "24000",
            &[("payment_behavior", "error_if_incomplete")],
        )
        .await;
    assert_eq!(
        (status, body["error"]["type"].as_str()),
        (402, Some("card_error"))
    );
}

/// A monthly plan whose renewal declines, on a simulator set to `attempts` retries in a
/// week and `then` after the last; answers the simulator and the subscription.
async fn failing_plan(then: &str) -> (Sim, String) {
    let sim = Sim::start().await;
    sim.control(
        "/_sim/dunning",
        &json!({"attempts": 4, "window_days": 7, "then": then}),
    )
    .await;
    let sub = sim.monthly(1000).await;
    sim.control(
        &format!("/_sim/subscriptions/{sub}/card"),
        &json!({"outcome": "decline"}),
    )
    .await;
    // The renewal fails: past_due, and a retry is scheduled.
    sim.advance_days(31).await;
    let object = sim.get(&format!("/v1/subscriptions/{sub}")).await;
    assert_eq!(object["status"], "past_due");
    let invoice = sim.latest_invoice(&sub).await;
    assert_eq!(invoice["attempt_count"], 1);
    assert!(invoice["next_payment_attempt"].is_i64(), "{invoice}");
    // The week of retries runs out.
    sim.advance_days(8).await;
    let invoice = sim.latest_invoice(&sub).await;
    assert_eq!(invoice["attempt_count"], 4, "four attempts in all");
    assert!(invoice["next_payment_attempt"].is_null(), "retries ended");
    (sim, sub)
}

#[tokio::test]
async fn dunning_ends_in_cancellation_after_the_last_retry() {
    let (sim, sub) = failing_plan("canceled").await;
    let object = sim.get(&format!("/v1/subscriptions/{sub}")).await;
    assert_eq!(object["status"], "canceled");
    assert_eq!(object["cancellation_details"]["reason"], "payment_failed");
    let deleted = sim.events("customer.subscription.deleted").await;
    assert!(
        deleted
            .iter()
            .any(|e| e["data"]["object"]["id"] == sub.as_str())
    );
    assert_eq!(
        sim.events("invoice.payment_failed").await.len(),
        4,
        "one event per attempt"
    );
}

#[tokio::test]
async fn dunning_ends_in_unpaid_when_the_account_says_so() {
    let (sim, sub) = failing_plan("unpaid").await;
    let object = sim.get(&format!("/v1/subscriptions/{sub}")).await;
    assert_eq!(object["status"], "unpaid", "{object}");
    let updated = sim.events("customer.subscription.updated").await;
    assert!(
        updated
            .iter()
            .any(|e| e["data"]["object"]["id"] == sub.as_str()
                && e["data"]["object"]["status"] == "unpaid"
                && e["data"]["previous_attributes"]["status"] == "past_due")
    );
    // An unpaid plan is not renewed or retried any more.
    sim.advance_days(40).await;
    assert_eq!(
        sim.get(&format!("/v1/subscriptions/{sub}")).await["status"],
        "unpaid"
    );
}
