//! Stripe behaviours the simulator lacked: inquiries under review and escalated to a
//! chargeback, early fraud warnings, and free trials with their `$0` first invoice.

mod common;

use common::Sim;
use serde_json::{Value, json};

impl Sim {
    async fn get(&self, path: &str) -> Value {
        let response = self
            .http
            .get(self.url(path))
            .bearer_auth(self.spawned.simulator.secret_key())
            .send()
            .await
            .unwrap();
        assert_eq!(response.status().as_u16(), 200, "GET {path}");
        response.json().await.unwrap()
    }

    async fn post(&self, path: &str, form: &[(&str, &str)]) -> Value {
        let response = self
            .http
            .post(self.url(path))
            .bearer_auth(self.spawned.simulator.secret_key())
            .form(form)
            .send()
            .await
            .unwrap();
        let status = response.status().as_u16();
        let body: Value = response.json().await.unwrap();
        assert_eq!(status, 200, "POST {path}: {body}");
        body
    }

    /// A control call: its status and answer.
    async fn control(&self, path: &str, body: Value) -> (u16, Value) {
        let response = self
            .http
            .post(self.url(path))
            .json(&body)
            .send()
            .await
            .unwrap();
        (
            response.status().as_u16(),
            response.json().await.unwrap_or(Value::Null),
        )
    }

    async fn ok(&self, path: &str, body: Value) -> Value {
        let (status, answer) = self.control(path, body).await;
        assert_eq!(status, 200, "{path}: {answer}");
        answer
    }

    /// A paid one-off payment of `amount` USD cents; its payment intent.
    async fn paid_once(&self, amount: &str) -> String {
        let session = self
            .post(
                "/v1/checkout/sessions",
                &[
                    ("mode", "payment"),
                    ("line_items[0][price_data][currency]", "usd"),
                    ("line_items[0][price_data][unit_amount]", amount),
                    ("line_items[0][quantity]", "1"),
                    ("success_url", "https://news.example.org/thanks"),
                ],
            )
            .await;
        let id = session["id"].as_str().unwrap();
        self.ok(&format!("/_sim/checkout/{id}/pay"), json!({}))
            .await;
        self.get(&format!("/v1/checkout/sessions/{id}")).await["payment_intent"]
            .as_str()
            .unwrap()
            .to_owned()
    }

    /// The events about object `id`, oldest first: (type, previous attributes).
    async fn events_about(&self, id: &str) -> Vec<(String, Value)> {
        let list = self.get("/v1/events?limit=100").await;
        let mut events: Vec<(String, Value)> = list["data"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|e| e["data"]["object"]["id"] == id)
            .map(|e| {
                (
                    e["type"].as_str().unwrap().to_owned(),
                    e["data"]["previous_attributes"].clone(),
                )
            })
            .collect();
        events.reverse();
        events
    }
}

fn types(events: &[(String, Value)]) -> Vec<&str> {
    events.iter().map(|(t, _)| t.as_str()).collect()
}

#[tokio::test]
async fn an_inquiry_goes_under_review_and_closes_without_moving_money() {
    let sim = Sim::start().await;
    let pi = sim.paid_once("1000").await;
    let inquiry = sim
        .ok(
            "/_sim/disputes",
            json!({"payment_intent": pi, "kind": "inquiry"}),
        )
        .await;
    let id = inquiry["id"].as_str().unwrap();
    let reviewed = sim
        .ok(&format!("/_sim/disputes/{id}/review"), json!({}))
        .await;
    assert_eq!(reviewed["status"], "warning_under_review");
    assert_eq!(reviewed["evidence_details"]["has_evidence"], true);
    assert_eq!(reviewed["evidence_details"]["submission_count"], 1);
    // Under review, it cannot be reviewed again.
    let (status, _) = sim
        .control(&format!("/_sim/disputes/{id}/review"), json!({}))
        .await;
    assert_eq!(status, 400);
    let closed = sim
        .ok(
            &format!("/_sim/disputes/{id}/close"),
            json!({"outcome": "won"}),
        )
        .await;
    assert_eq!(closed["status"], "warning_closed");
    assert_eq!(closed["balance_transactions"], json!([]));
    let events = sim.events_about(id).await;
    assert_eq!(
        types(&events),
        [
            "charge.dispute.created",
            "charge.dispute.updated",
            "charge.dispute.closed"
        ]
    );
    assert_eq!(events[1].1["status"], "warning_needs_response");
    assert_eq!(events[2].1["status"], "warning_under_review");
    // An escalation of a closed inquiry is refused.
    let (status, _) = sim
        .control(&format!("/_sim/disputes/{id}/escalate"), json!({}))
        .await;
    assert_eq!(status, 400);
}

#[tokio::test]
async fn an_inquiry_escalated_to_a_chargeback_withdraws_then_a_win_reinstates() {
    let sim = Sim::start().await;
    let pi = sim.paid_once("2000").await;
    let inquiry = sim
        .ok(
            "/_sim/disputes",
            json!({"payment_intent": pi, "kind": "inquiry"}),
        )
        .await;
    let id = inquiry["id"].as_str().unwrap();
    assert_eq!(inquiry["balance_transactions"], json!([]));
    sim.ok(&format!("/_sim/disputes/{id}/review"), json!({}))
        .await;
    let escalated = sim
        .ok(&format!("/_sim/disputes/{id}/escalate"), json!({}))
        .await;
    assert_eq!(escalated["id"], id, "the same dispute");
    assert_eq!(escalated["status"], "needs_response");
    assert_eq!(escalated["is_charge_refundable"], false);
    assert_eq!(
        escalated["payment_method_details"]["card"]["case_type"],
        "chargeback"
    );
    let withdrawal = &escalated["balance_transactions"][0];
    assert_eq!(
        (withdrawal["amount"].as_i64(), withdrawal["fee"].as_i64()),
        (Some(-2000), Some(1500))
    );
    // A chargeback under review, then won: the funds and the fee come back.
    let reviewed = sim
        .ok(&format!("/_sim/disputes/{id}/review"), json!({}))
        .await;
    assert_eq!(reviewed["status"], "under_review");
    let won = sim
        .ok(
            &format!("/_sim/disputes/{id}/close"),
            json!({"outcome": "won"}),
        )
        .await;
    assert_eq!(won["status"], "won");
    let net: i64 = won["balance_transactions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["net"].as_i64().unwrap())
        .sum();
    assert_eq!(net, 0);
    let events = sim.events_about(id).await;
    assert_eq!(
        types(&events),
        [
            "charge.dispute.created",
            "charge.dispute.updated",
            "charge.dispute.updated",
            "charge.dispute.funds_withdrawn",
            "charge.dispute.updated",
            "charge.dispute.closed",
            "charge.dispute.funds_reinstated",
        ]
    );
    assert_eq!(events[2].1["status"], "warning_under_review");
    assert_eq!(events[5].1["status"], "under_review");
    // The escalated inquiry is disputed money now, in Stripe's totals.
    let totals = sim.get("/_sim/totals").await;
    assert_eq!(totals["totals"][0]["net_minor"], 2000, "won back");
}

#[tokio::test]
async fn an_early_fraud_warning_is_sent_for_a_charge() {
    let sim = Sim::start().await;
    let pi = sim.paid_once("1500").await;
    let charge = sim.get(&format!("/v1/payment_intents/{pi}")).await["latest_charge"]
        .as_str()
        .unwrap()
        .to_owned();
    let warning = sim
        .ok("/_sim/early_fraud_warnings", json!({"payment_intent": pi}))
        .await;
    assert_eq!(warning["object"], "radar.early_fraud_warning");
    assert_eq!(warning["charge"], charge.as_str());
    assert_eq!(warning["fraud_type"], "made_with_stolen_card");
    assert_eq!(warning["actionable"], true);
    let id = warning["id"].as_str().unwrap();
    assert!(id.starts_with("issfr_"), "{id}");
    assert_eq!(
        sim.get(&format!("/v1/radar/early_fraud_warnings/{id}"))
            .await,
        warning
    );
    let events = sim.events_about(id).await;
    assert_eq!(types(&events), ["radar.early_fraud_warning.created"]);
    // Once refunded, a new warning is not actionable.
    sim.post("/v1/refunds", &[("payment_intent", pi.as_str())])
        .await;
    let late = sim
        .ok(
            "/_sim/early_fraud_warnings",
            json!({"charge": charge, "fraud_type": "unauthorized_use_of_card"}),
        )
        .await;
    assert_eq!(late["actionable"], false);
    let (status, _) = sim
        .control(
            "/_sim/early_fraud_warnings",
            json!({"charge": charge, "fraud_type": "bad"}),
        )
        .await;
    assert_eq!(status, 400);
    let (status, _) = sim
        .control("/_sim/early_fraud_warnings", json!({"charge": "ch_none"}))
        .await;
    assert_eq!(status, 404);
}

#[tokio::test]
async fn a_trial_starts_with_a_paid_zero_invoice_and_charges_at_its_end() {
    let sim = Sim::start().await;
    let session = sim
        .post(
            "/v1/checkout/sessions",
            &[
                ("mode", "subscription"),
                ("line_items[0][price_data][currency]", "usd"),
                ("line_items[0][price_data][unit_amount]", "800"),
                ("line_items[0][price_data][recurring][interval]", "month"),
                ("line_items[0][price_data][product_data][name]", "Member"),
                ("line_items[0][quantity]", "1"),
                ("subscription_data[trial_period_days]", "14"),
                ("success_url", "https://news.example.org/thanks"),
            ],
        )
        .await;
    let id = session["id"].as_str().unwrap();
    sim.ok(&format!("/_sim/checkout/{id}/pay"), json!({})).await;
    let session = sim.get(&format!("/v1/checkout/sessions/{id}")).await;
    assert_eq!(session["status"], "complete");
    assert_eq!(session["payment_status"], "no_payment_required");
    assert_eq!(session["payment_intent"], Value::Null);
    let sub = session["subscription"].as_str().unwrap();
    let subscription = sim.get(&format!("/v1/subscriptions/{sub}")).await;
    assert_eq!(subscription["status"], "trialing");
    let start = subscription["trial_start"].as_i64().unwrap();
    let end = subscription["trial_end"].as_i64().unwrap();
    assert_eq!(end - start, 14 * 86_400);
    assert_eq!(subscription["items"]["data"][0]["current_period_end"], end);

    let first = sim
        .get(&format!(
            "/v1/invoices/{}?expand[]=payments",
            session["invoice"].as_str().unwrap()
        ))
        .await;
    assert_eq!(
        (
            first["billing_reason"].as_str(),
            first["status"].as_str(),
            first["total"].as_i64(),
            first["amount_paid"].as_i64()
        ),
        (Some("subscription_create"), Some("paid"), Some(0), Some(0))
    );
    assert_eq!(first["payments"]["data"], json!([]), "no payment");
    assert_eq!(sim.get("/v1/charges").await["data"], json!([]));
    let created: Vec<Value> = sim
        .get("/v1/events?type=customer.subscription.created")
        .await["data"]
        .as_array()
        .unwrap()
        .clone();
    assert_eq!(created[0]["data"]["object"]["status"], "trialing");

    // At the trial's end the price is charged and the subscription becomes active.
    let now = sim.get("/_sim/clock").await["now"].as_i64().unwrap();
    sim.ok("/_sim/clock/advance", json!({"seconds": end - now + 1}))
        .await;
    let subscription = sim.get(&format!("/v1/subscriptions/{sub}")).await;
    assert_eq!(subscription["status"], "active");
    let renewal = sim
        .get(&format!(
            "/v1/invoices/{}",
            subscription["latest_invoice"].as_str().unwrap()
        ))
        .await;
    assert_eq!(
        (
            renewal["billing_reason"].as_str(),
            renewal["status"].as_str(),
            renewal["amount_paid"].as_i64(),
            renewal["period_start"].as_i64()
        ),
        (
            Some("subscription_cycle"),
            Some("paid"),
            Some(800),
            Some(end)
        )
    );
    let charges = sim.get("/v1/charges").await;
    assert_eq!(charges["data"].as_array().unwrap().len(), 1);

    // A trial is only for subscriptions.
    let response = sim
        .http
        .post(sim.url("/v1/checkout/sessions"))
        .bearer_auth(sim.spawned.simulator.secret_key())
        .form(&[
            ("mode", "payment"),
            ("line_items[0][price_data][currency]", "usd"),
            ("line_items[0][price_data][unit_amount]", "800"),
            ("line_items[0][quantity]", "1"),
            ("subscription_data[trial_period_days]", "14"),
            ("success_url", "https://news.example.org/thanks"),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 400);
}

#[tokio::test]
async fn a_full_refund_resolves_an_inquiry_with_no_money_withdrawn() {
    let sim = Sim::start().await;
    let pi = sim.paid_once("4000").await;
    let inquiry = sim
        .ok(
            "/_sim/disputes",
            json!({"payment_intent": pi, "kind": "inquiry"}),
        )
        .await;
    let id = inquiry["id"].as_str().unwrap();
    assert_eq!(inquiry["is_charge_refundable"], true);
    // Stripe: the payment under an inquiry can still be refunded; a full refund resolves it.
    let refund = sim
        .post("/v1/refunds", &[("payment_intent", pi.as_str())])
        .await;
    assert_eq!(refund["status"], "succeeded");
    assert_eq!(refund["amount"], 4000);
    let dispute = sim.get(&format!("/v1/disputes/{id}")).await;
    assert_eq!(dispute["status"], "warning_closed");
    assert_eq!(dispute["balance_transactions"], json!([]), "no money moved");
    assert_eq!(
        types(&sim.events_about(id).await),
        ["charge.dispute.created", "charge.dispute.closed"]
    );
}
