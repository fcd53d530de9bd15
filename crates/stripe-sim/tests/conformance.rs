//! Conformance: every object the simulator answers deserializes into async-stripe's own type
//! with async-stripe's own deserializer (miniserde), through every flow Kopilka uses.

use std::fmt::Debug;

mod common;

use common::Sim;
use serde_json::{Value, json};

impl Sim {
    async fn send(&self, request: reqwest::RequestBuilder) -> (u16, String) {
        let response = request
            .bearer_auth(self.spawned.simulator.secret_key())
            .send()
            .await
            .unwrap();
        (response.status().as_u16(), response.text().await.unwrap())
    }

    async fn get(&self, path: &str) -> String {
        let (status, body) = self.send(self.http.get(self.url(path))).await;
        assert_eq!(status, 200, "GET {path}: {body}");
        body
    }

    async fn post(&self, path: &str, form: &[(&str, &str)]) -> String {
        let (status, body) = self.send(self.http.post(self.url(path)).form(form)).await;
        assert_eq!(status, 200, "POST {path}: {body}");
        body
    }

    async fn control(&self, path: &str, body: Value) -> Value {
        let response = self
            .http
            .post(self.url(path))
            .json(&body)
            .send()
            .await
            .unwrap();
        assert!(response.status().is_success(), "{path}");
        response.json().await.unwrap()
    }
}

/// Deserializes `body` into `T` as async-stripe does, and returns it with its JSON.
fn stripe<T: miniserde::Deserialize + Debug>(body: &str) -> (T, Value) {
    let typed = miniserde::json::from_str::<T>(body).unwrap_or_else(|_| {
        panic!(
            "does not deserialize into {}: {body}",
            std::any::type_name::<T>()
        )
    });
    (typed, serde_json::from_str(body).unwrap())
}

fn id(json: &Value) -> String {
    json["id"].as_str().unwrap().to_owned()
}

#[tokio::test]
async fn a_one_off_payment_refund_and_dispute_conform() {
    let sim = Sim::start().await;
    let (_, customer) = stripe::<stripe_shared::Customer>(
        &sim.post(
            "/v1/customers",
            &[
                ("email", "reader@example.org"),
                ("metadata[reader_id]", "r1"),
            ],
        )
        .await,
    );
    assert_eq!(customer["metadata"]["reader_id"], "r1");
    let (_, portal) = stripe::<stripe_billing::BillingPortalSession>(
        &sim.post(
            "/v1/billing_portal/sessions",
            &[
                ("customer", customer["id"].as_str().unwrap()),
                ("return_url", "https://news.example.org/account"),
                ("flow_data[type]", "payment_method_update"),
            ],
        )
        .await,
    );
    assert_eq!(portal["flow"]["type"], "payment_method_update");
    let page = sim
        .http
        .get(portal["url"].as_str().unwrap())
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(page.contains("https://news.example.org/account"), "{page}");
    let (status, missing) = sim
        .send(
            sim.http
                .post(sim.url("/v1/billing_portal/sessions"))
                .form(&[("customer", "cus_nobody")]),
        )
        .await;
    assert_eq!(status, 404, "{missing}");

    let body = sim
        .post(
            "/v1/checkout/sessions",
            &[
                ("mode", "payment"),
                ("line_items[0][price_data][currency]", "usd"),
                ("line_items[0][price_data][unit_amount]", "2500"),
                (
                    "line_items[0][price_data][product_data][name]",
                    "Contribution",
                ),
                ("line_items[0][quantity]", "1"),
                ("success_url", "https://news.example.org/thanks"),
                ("client_reference_id", "contribution-1"),
                ("metadata[contribution_id]", "contribution-1"),
                ("submit_type", "donate"),
            ],
        )
        .await;
    let (_, session) = stripe::<stripe_shared::CheckoutSession>(&body);
    assert_eq!(session["status"], "open");
    assert_eq!(session["amount_total"], 2500);
    assert!(
        session["url"]
            .as_str()
            .unwrap()
            .contains("/checkout/cs_test_")
    );

    sim.control(
        &format!("/_sim/checkout/{}/pay", id(&session)),
        json!({"email": "donor@example.org"}),
    )
    .await;
    let (_, session) = stripe::<stripe_shared::CheckoutSession>(
        &sim.get(&format!("/v1/checkout/sessions/{}", id(&session)))
            .await,
    );
    assert_eq!(
        (
            session["status"].as_str(),
            session["payment_status"].as_str()
        ),
        (Some("complete"), Some("paid"))
    );
    assert_eq!(session["customer_details"]["email"], "donor@example.org");

    let pi = session["payment_intent"].as_str().unwrap();
    let (_, intent) = stripe::<stripe_shared::PaymentIntent>(
        &sim.get(&format!("/v1/payment_intents/{pi}")).await,
    );
    assert_eq!(intent["status"], "succeeded");
    let charge_id = intent["latest_charge"].as_str().unwrap();
    let (_, charge) =
        stripe::<stripe_shared::Charge>(&sim.get(&format!("/v1/charges/{charge_id}")).await);
    let txn = charge["balance_transaction"].as_str().unwrap();
    let (_, bt) = stripe::<stripe_shared::BalanceTransaction>(
        &sim.get(&format!("/v1/balance_transactions/{txn}")).await,
    );
    assert_eq!(bt["net"], 2500 - (2500 * 29 / 1000 + 30));

    let (_, refund) = stripe::<stripe_shared::Refund>(
        &sim.post("/v1/refunds", &[("charge", charge_id), ("amount", "1000")])
            .await,
    );
    assert_eq!(refund["amount"], 1000);
    let (_, charge) =
        stripe::<stripe_shared::Charge>(&sim.get(&format!("/v1/charges/{charge_id}")).await);
    assert_eq!(
        (
            charge["amount_refunded"].as_i64(),
            charge["refunded"].as_bool()
        ),
        (Some(1000), Some(false))
    );

    // Pay, then dispute; closing the dispute loses it.
    let second = sim
        .post(
            "/v1/checkout/sessions",
            &[
                ("mode", "payment"),
                ("line_items[0][price_data][currency]", "jpy"),
                ("line_items[0][price_data][unit_amount]", "1000"),
                ("line_items[0][quantity]", "1"),
                ("success_url", "https://news.example.org/thanks"),
            ],
        )
        .await;
    let (_, second) = stripe::<stripe_shared::CheckoutSession>(&second);
    sim.control(
        &format!("/_sim/checkout/{}/pay-then-dispute", id(&second)),
        json!({}),
    )
    .await;
    let (disputes, _) =
        stripe::<stripe_types::List<stripe_shared::Dispute>>(&sim.get("/v1/disputes").await);
    assert_eq!(disputes.data.len(), 1);
    let dispute_id = disputes.data[0].id.to_string();
    let (_, closed) = stripe::<stripe_shared::Dispute>(
        &sim.post(&format!("/v1/disputes/{dispute_id}/close"), &[])
            .await,
    );
    assert_eq!(closed["status"], "lost");

    // A disputed charge cannot also be refunded (the dispute already took the money).
    let disputed_charge = closed["charge"].as_str().unwrap();
    let (status, body) = sim
        .send(
            sim.http
                .post(sim.url("/v1/refunds"))
                .form(&[("charge", disputed_charge)]),
        )
        .await;
    assert_eq!(status, 400);
    assert!(body.contains("charge_disputed"), "{body}");

    let totals = sim
        .http
        .get(sim.url("/_sim/totals"))
        .send()
        .await
        .unwrap()
        .json::<Value>()
        .await
        .unwrap();
    assert_eq!(
        totals,
        json!({"totals": [
            // ¥1000 at 3.6 % is ¥36, and the lost dispute's fee ¥1500.
            {"currency": "jpy", "gross_minor": 1000, "refunded_minor": 0, "net_minor": 0, "payments": 1,
             "disputed_minor": 1000, "fees_minor": 36 + 1500, "stripe_net_minor": -1536},
            // $25.00 at 2.9 % + 30¢ is 102 cents; a refund's fee is nothing.
            {"currency": "usd", "gross_minor": 2500, "refunded_minor": 1000, "net_minor": 1500, "payments": 1,
             "disputed_minor": 0, "fees_minor": 102, "stripe_net_minor": 1398},
        ]})
    );

    // Two days later the balance is paid out, one payout per currency, reconciled; the yen
    // balance is negative after the lost dispute and its fee, so it waits.
    sim.control("/_sim/clock/advance", json!({"seconds": 3 * 86_400}))
        .await;
    let (payouts, _) =
        stripe::<stripe_types::List<stripe_shared::Payout>>(&sim.get("/v1/payouts").await);
    assert_eq!(payouts.data.len(), 1);
    let usd = &payouts.data[0];
    assert_eq!(usd.currency.to_string(), "usd");
    let fee = 2500 * 29 / 1000 + 30;
    assert_eq!(
        usd.amount,
        2500 - fee - 1000,
        "the charge's net less the refund"
    );
    let (in_payout, _) = stripe::<stripe_types::List<stripe_shared::BalanceTransaction>>(
        &sim.get(&format!(
            "/v1/balance_transactions?payout={}&limit=100",
            usd.id
        ))
        .await,
    );
    let net: i64 = in_payout
        .data
        .iter()
        .filter(|t| t.type_.as_str() != "payout")
        .map(|t| t.net)
        .sum();
    assert_eq!(net, usd.amount, "a payout's transactions add up to it");
    assert_eq!(
        in_payout.data.len(),
        3,
        "the charge, the refund and the payout itself"
    );

    let (events, _) =
        stripe::<stripe_types::List<stripe_shared::Event>>(&sim.get("/v1/events?limit=100").await);
    let types: Vec<String> = events.data.iter().map(|e| e.type_.to_string()).collect();
    for expected in [
        "checkout.session.completed",
        "payment_intent.succeeded",
        "charge.succeeded",
        "refund.created",
        "charge.refunded",
        "charge.dispute.created",
        "charge.dispute.closed",
        "customer.created",
    ] {
        assert!(
            types.iter().any(|t| t == expected),
            "{expected} in {types:?}"
        );
    }
}

#[tokio::test]
async fn monthly_and_annual_plans_conform_and_renew_on_the_clock() {
    let sim = Sim::start().await;
    let mut subscriptions = Vec::new();
    for (interval, amount) in [("month", "500"), ("year", "6000")] {
        let body = sim
            .post(
                "/v1/checkout/sessions",
                &[
                    ("mode", "subscription"),
                    ("line_items[0][price_data][currency]", "eur"),
                    ("line_items[0][price_data][unit_amount]", amount),
                    ("line_items[0][price_data][recurring][interval]", interval),
                    (
                        "line_items[0][price_data][product_data][name]",
                        "Membership",
                    ),
                    ("line_items[0][quantity]", "1"),
                    ("success_url", "https://news.example.org/thanks"),
                    ("subscription_data[metadata][contribution_id]", "c-1"),
                ],
            )
            .await;
        let (_, session) = stripe::<stripe_shared::CheckoutSession>(&body);
        sim.control(&format!("/_sim/checkout/{}/pay", id(&session)), json!({}))
            .await;
        let (_, session) = stripe::<stripe_shared::CheckoutSession>(
            &sim.get(&format!("/v1/checkout/sessions/{}", id(&session)))
                .await,
        );
        let sub = session["subscription"].as_str().unwrap().to_owned();
        let (_, subscription) = stripe::<stripe_shared::Subscription>(
            &sim.get(&format!("/v1/subscriptions/{sub}")).await,
        );
        assert_eq!(subscription["status"], "active");
        assert_eq!(subscription["metadata"]["contribution_id"], "c-1");
        assert_eq!(
            subscription["items"]["data"][0]["price"]["recurring"]["interval"],
            interval
        );
        let invoice = subscription["latest_invoice"].as_str().unwrap();
        let (_, invoice) =
            stripe::<stripe_shared::Invoice>(&sim.get(&format!("/v1/invoices/{invoice}")).await);
        assert_eq!(
            (
                invoice["status"].as_str(),
                invoice["billing_reason"].as_str()
            ),
            (Some("paid"), Some("subscription_create"))
        );
        assert_eq!(
            invoice["parent"]["subscription_details"]["subscription"],
            sub.as_str()
        );
        let price = subscription["items"]["data"][0]["price"]["id"]
            .as_str()
            .unwrap();
        let _ = stripe::<stripe_shared::Price>(&sim.get(&format!("/v1/prices/{price}")).await);
        subscriptions.push(sub);
    }

    // Thirteen monthly periods, moving the clock to just past each period's end (whatever
    // the calendar): the monthly plan renews 13 times, the annual one once.
    for _ in 0..13 {
        let (_, monthly) = stripe::<stripe_shared::Subscription>(
            &sim.get(&format!("/v1/subscriptions/{}", subscriptions[0]))
                .await,
        );
        let end = monthly["items"]["data"][0]["current_period_end"]
            .as_i64()
            .unwrap();
        let now = sim
            .http
            .get(sim.url("/_sim/clock"))
            .send()
            .await
            .unwrap()
            .json::<Value>()
            .await
            .unwrap()["now"]
            .as_i64()
            .unwrap();
        sim.control(
            "/_sim/clock/advance",
            json!({"seconds": (end - now + 1).max(0)}),
        )
        .await;
    }
    for (sub, renewals) in subscriptions.iter().zip([13, 1]) {
        let (invoices, _) = stripe::<stripe_types::List<stripe_shared::Invoice>>(
            &sim.get(&format!("/v1/invoices?subscription={sub}&limit=100"))
                .await,
        );
        let cycles = invoices
            .data
            .iter()
            .filter(|i| {
                i.billing_reason
                    .as_ref()
                    .is_some_and(|r| r.as_str() == "subscription_cycle")
            })
            .count();
        assert_eq!(cycles, renewals, "{sub}");
    }

    // A card set to decline makes the next renewal fail and the plan past_due.
    let monthly = &subscriptions[0];
    sim.control(
        &format!("/_sim/subscriptions/{monthly}/card"),
        json!({"outcome": "decline"}),
    )
    .await;
    sim.control("/_sim/clock/advance", json!({"seconds": 32 * 86_400}))
        .await;
    let (_, subscription) = stripe::<stripe_shared::Subscription>(
        &sim.get(&format!("/v1/subscriptions/{monthly}")).await,
    );
    assert_eq!(subscription["status"], "past_due");

    // Change the amount, then cancel.
    let body = sim
        .post(
            &format!("/v1/subscriptions/{monthly}"),
            &[
                ("items[0][price_data][currency]", "eur"),
                ("items[0][price_data][unit_amount]", "900"),
                (
                    "items[0][price_data][product]",
                    subscription["items"]["data"][0]["price"]["product"]
                        .as_str()
                        .unwrap(),
                ),
                ("items[0][price_data][recurring][interval]", "month"),
                ("proration_behavior", "none"),
            ],
        )
        .await;
    let (_, updated) = stripe::<stripe_shared::Subscription>(&body);
    assert_eq!(updated["items"]["data"][0]["price"]["unit_amount"], 900);
    let (status, body) = sim
        .send(
            sim.http
                .delete(sim.url(&format!("/v1/subscriptions/{monthly}"))),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let (_, canceled) = stripe::<stripe_shared::Subscription>(&body);
    assert_eq!(canceled["status"], "canceled");

    let (events, _) = stripe::<stripe_types::List<stripe_shared::Event>>(
        &sim.get("/v1/events?type=invoice.*&limit=100").await,
    );
    assert!(
        events
            .data
            .iter()
            .all(|e| e.type_.to_string().starts_with("invoice."))
    );
    let paid = events
        .data
        .iter()
        .filter(|e| e.type_.to_string() == "invoice.paid")
        .count();
    assert_eq!(
        paid,
        2 + 13 + 1,
        "two first invoices and fourteen renewals were paid"
    );
    let failed = events
        .data
        .iter()
        .filter(|e| e.type_.to_string() == "invoice.payment_failed")
        .count();
    assert_eq!(failed, 1);
}

#[tokio::test]
async fn errors_idempotency_and_pagination_follow_stripe() {
    let sim = Sim::start().await;
    let (status, body) = sim
        .send(sim.http.get(sim.url("/v1/customers/cus_nope")))
        .await;
    assert_eq!(status, 404);
    let error: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(error["error"]["code"], "resource_missing");
    assert!(
        miniserde::json::from_str::<stripe_shared::ApiErrors>(&error["error"].to_string()).is_ok(),
        "{body}"
    );

    let unauthorized = sim
        .http
        .get(sim.url("/v1/customers"))
        .bearer_auth("sk_test_wrong")
        .send()
        .await
        .unwrap();
    assert_eq!(unauthorized.status(), 401);

    let (status, body) = sim
        .send(sim.http.post(sim.url("/v1/checkout/sessions")).form(&[
            ("mode", "payment"),
            ("line_items[0][price_data][currency]", "usd"),
            ("line_items[0][price_data][unit_amount]", "10"),
            ("success_url", "https://news.example.org/thanks"),
        ]))
        .await;
    assert_eq!(status, 400);
    assert!(body.contains("amount_too_small"), "{body}");

    let create = |email: &'static str| {
        sim.http
            .post(sim.url("/v1/customers"))
            .header("idempotency-key", "kopilka-test-1")
            .form(&[("email", email)])
    };
    let (first_status, first) = sim.send(create("a@example.org")).await;
    let (again_status, again) = sim.send(create("a@example.org")).await;
    assert_eq!((first_status, again_status), (200, 200));
    assert_eq!(
        first, again,
        "the same key and body replays the first answer"
    );
    let (other_status, other) = sim.send(create("b@example.org")).await;
    assert_eq!(other_status, 400);
    assert!(other.contains("idempotency_error"), "{other}");

    for n in 0..5 {
        sim.post("/v1/customers", &[("email", &format!("p{n}@example.org"))])
            .await;
    }
    let emails = |list: &stripe_types::List<stripe_shared::Customer>| -> Vec<String> {
        list.data
            .iter()
            .map(|c| c.email.clone().unwrap_or_default())
            .collect()
    };
    let (page1, _) = stripe::<stripe_types::List<stripe_shared::Customer>>(
        &sim.get("/v1/customers?limit=4").await,
    );
    assert!(page1.has_more);
    assert_eq!(
        emails(&page1),
        [
            "p4@example.org",
            "p3@example.org",
            "p2@example.org",
            "p1@example.org"
        ],
        "newest first"
    );
    let last = page1.data.last().unwrap().id.to_string();
    let (page2, _) = stripe::<stripe_types::List<stripe_shared::Customer>>(
        &sim.get(&format!("/v1/customers?limit=4&starting_after={last}"))
            .await,
    );
    assert!(!page2.has_more);
    assert_eq!(
        emails(&page2),
        ["p0@example.org", "a@example.org"],
        "the rest, none twice"
    );
    let first = page2.data[0].id.to_string();
    let (back, _) = stripe::<stripe_types::List<stripe_shared::Customer>>(
        &sim.get(&format!("/v1/customers?limit=2&ending_before={first}"))
            .await,
    );
    assert_eq!(
        emails(&back),
        ["p2@example.org", "p1@example.org"],
        "the page just before, newest first"
    );
    assert!(back.has_more);
}

#[tokio::test]
async fn seeded_payments_conform_and_page_through_every_charge_once() {
    let sim = Sim::start().await;
    let seeded = sim
        .control(
            "/_sim/seed/payments",
            json!({"count": 250, "amount": 1500, "currency": "usd"}),
        )
        .await;
    let seeded: Vec<String> = seeded["payment_intents"]
        .as_array()
        .unwrap()
        .iter()
        .map(|id| id.as_str().unwrap().to_owned())
        .collect();
    assert_eq!(seeded.len(), 250);
    let (intent, _) = stripe::<stripe_shared::PaymentIntent>(
        &sim.get(&format!("/v1/payment_intents/{}", seeded[0])).await,
    );
    assert_eq!(intent.amount, 1500);

    // Newest first, 100 a page, each charge once, pointing at its seeded intent.
    let mut listed = Vec::new();
    let mut after: Option<String> = None;
    loop {
        let path = match &after {
            None => "/v1/charges?limit=100".to_owned(),
            Some(last) => format!("/v1/charges?limit=100&starting_after={last}"),
        };
        let (page, json) =
            stripe::<stripe_types::List<stripe_shared::Charge>>(&sim.get(&path).await);
        assert!(page.data.iter().all(|c| c.paid && c.amount == 1500));
        listed.extend(
            json["data"]
                .as_array()
                .unwrap()
                .iter()
                .map(|c| c["payment_intent"].as_str().unwrap().to_owned()),
        );
        after = json["data"]
            .as_array()
            .unwrap()
            .last()
            .map(|c| c["id"].as_str().unwrap().to_owned());
        if !page.has_more {
            break;
        }
    }
    let mut newest_first = seeded.clone();
    newest_first.reverse();
    assert_eq!(listed, newest_first, "every charge once, newest first");

    // A cursor that is not a charge is Stripe's 404; a seed too large is refused.
    let (status, _) = sim
        .send(
            sim.http
                .get(sim.url("/v1/charges?starting_after=ch_unknown")),
        )
        .await;
    assert_eq!(status, 404);
    let too_many = sim
        .http
        .post(sim.url("/_sim/seed/payments"))
        .json(&json!({"count": 200_001, "amount": 1500, "currency": "usd"}))
        .send()
        .await
        .unwrap();
    assert_eq!(too_many.status(), 400);
}

#[tokio::test]
async fn deleting_a_customer_cancels_its_plans_and_answers_as_stripe_does() {
    let sim = Sim::start().await;
    let body = sim
        .post(
            "/v1/checkout/sessions",
            &[
                ("mode", "subscription"),
                ("line_items[0][price_data][currency]", "eur"),
                ("line_items[0][price_data][unit_amount]", "500"),
                ("line_items[0][price_data][recurring][interval]", "month"),
                (
                    "line_items[0][price_data][product_data][name]",
                    "Membership",
                ),
                ("line_items[0][quantity]", "1"),
                ("success_url", "https://news.example.org/thanks"),
                ("customer_email", "erase-me@example.org"),
            ],
        )
        .await;
    let (_, session) = stripe::<stripe_shared::CheckoutSession>(&body);
    sim.control(&format!("/_sim/checkout/{}/pay", id(&session)), json!({}))
        .await;
    let session: Value = serde_json::from_str(
        &sim.get(&format!("/v1/checkout/sessions/{}", id(&session)))
            .await,
    )
    .unwrap();
    let customer = session["customer"].as_str().unwrap().to_owned();
    let sub = session["subscription"].as_str().unwrap().to_owned();

    let (status, body) = sim
        .send(
            sim.http
                .delete(sim.url(&format!("/v1/customers/{customer}"))),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let (_, deleted) = stripe::<stripe_shared::DeletedCustomer>(&body);
    assert_eq!(
        deleted,
        json!({"id": customer, "object": "customer", "deleted": true})
    );
    // A retrieve answers the stub; every other use, and a second delete, is "No such".
    assert_eq!(
        serde_json::from_str::<Value>(&sim.get(&format!("/v1/customers/{customer}")).await)
            .unwrap(),
        deleted
    );
    let (status, body) = sim
        .send(
            sim.http
                .delete(sim.url(&format!("/v1/customers/{customer}"))),
        )
        .await;
    assert_eq!(status, 404, "{body}");
    let error: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(error["error"]["code"], "resource_missing");
    assert_eq!(
        error["error"]["message"],
        format!("No such customer: '{customer}'")
    );
    let (status, _) = sim
        .send(
            sim.http
                .post(sim.url(&format!("/v1/customers/{customer}")))
                .form(&[("email", "again@example.org")]),
        )
        .await;
    assert_eq!(status, 404);
    let listed: Value = serde_json::from_str(&sim.get("/v1/customers").await).unwrap();
    assert!(
        listed["data"]
            .as_array()
            .unwrap()
            .iter()
            .all(|c| c["id"] != customer.as_str()),
        "{listed}"
    );
    // Its plan ended with it, announced as Stripe does.
    let (_, subscription) =
        stripe::<stripe_shared::Subscription>(&sim.get(&format!("/v1/subscriptions/{sub}")).await);
    assert_eq!(subscription["status"], "canceled");
    let events: Value = serde_json::from_str(&sim.get("/v1/events?limit=100").await).unwrap();
    let types: Vec<&str> = events["data"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|e| e["type"].as_str())
        .collect();
    assert!(
        types.contains(&"customer.subscription.deleted"),
        "{types:?}"
    );
    assert!(types.contains(&"customer.deleted"), "{types:?}");
}

/// The events of `type` so far, oldest first.
async fn events_of(sim: &Sim, kind: &str) -> Vec<Value> {
    let (_, list) = stripe::<stripe_types::List<stripe_shared::Event>>(
        &sim.get(&format!("/v1/events?type={kind}&limit=100")).await,
    );
    let mut events = list["data"].as_array().unwrap().clone();
    events.reverse();
    events
}

/// A paid one-off card payment of `amount` USD cents; its payment intent.
async fn paid_once(sim: &Sim, amount: &str) -> String {
    let session = sim
        .post(
            "/v1/checkout/sessions",
            &[
                ("mode", "payment"),
                ("line_items[0][price_data][currency]", "usd"),
                ("line_items[0][price_data][unit_amount]", amount),
                ("line_items[0][price_data][product_data][name]", "Gift"),
                ("line_items[0][quantity]", "1"),
                ("success_url", "https://news.example.org/thanks"),
            ],
        )
        .await;
    let session: Value = serde_json::from_str(&session).unwrap();
    sim.control(&format!("/_sim/checkout/{}/pay", id(&session)), json!({}))
        .await;
    let session: Value = serde_json::from_str(
        &sim.get(&format!("/v1/checkout/sessions/{}", id(&session)))
            .await,
    )
    .unwrap();
    session["payment_intent"].as_str().unwrap().to_owned()
}

#[tokio::test]
async fn inquiries_won_and_lost_disputes_and_failed_refunds_move_money_as_stripe_does() {
    let sim = Sim::start().await;

    // An inquiry moves nothing and closes `warning_closed`.
    let pi = paid_once(&sim, "1000").await;
    let inquiry = sim
        .control(
            "/_sim/disputes",
            json!({"payment_intent": pi, "kind": "inquiry"}),
        )
        .await;
    let (_, inquiry) =
        stripe::<stripe_shared::Dispute>(&sim.get(&format!("/v1/disputes/{}", id(&inquiry))).await);
    assert_eq!(inquiry["status"], "warning_needs_response");
    assert_eq!(inquiry["balance_transactions"], json!([]));
    sim.control(
        &format!("/_sim/disputes/{}/close", id(&inquiry)),
        json!({"outcome": "lost"}),
    )
    .await;
    let (_, inquiry) =
        stripe::<stripe_shared::Dispute>(&sim.get(&format!("/v1/disputes/{}", id(&inquiry))).await);
    assert_eq!(inquiry["status"], "warning_closed");

    // A chargeback withdraws the amount and Stripe's fee; won, both come back.
    let pi = paid_once(&sim, "2000").await;
    let chargeback = sim
        .control("/_sim/disputes", json!({"payment_intent": pi}))
        .await;
    assert_eq!(chargeback["status"], "needs_response");
    let withdrawal = &chargeback["balance_transactions"][0];
    assert_eq!(
        (
            withdrawal["amount"].as_i64(),
            withdrawal["fee"].as_i64(),
            withdrawal["net"].as_i64()
        ),
        (Some(-2000), Some(1500), Some(-3500))
    );
    sim.control(
        &format!("/_sim/disputes/{}/close", id(&chargeback)),
        json!({"outcome": "won"}),
    )
    .await;
    let (_, won) = stripe::<stripe_shared::Dispute>(
        &sim.get(&format!("/v1/disputes/{}", id(&chargeback))).await,
    );
    assert_eq!(won["status"], "won");
    let reinstatement = &won["balance_transactions"][1];
    assert_eq!(
        (
            reinstatement["amount"].as_i64(),
            reinstatement["fee"].as_i64()
        ),
        (Some(2000), Some(-1500))
    );
    let kinds: Vec<String> = events_of(&sim, "charge.dispute.*")
        .await
        .iter()
        .filter(|e| e["data"]["object"]["id"] == won["id"])
        .map(|e| e["type"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(
        kinds,
        [
            "charge.dispute.created",
            "charge.dispute.funds_withdrawn",
            "charge.dispute.closed",
            "charge.dispute.funds_reinstated"
        ]
    );

    // A refund that fails later.
    let pi = paid_once(&sim, "900").await;
    let (_, refund) = stripe::<stripe_shared::Refund>(
        &sim.post("/v1/refunds", &[("payment_intent", pi.as_str())])
            .await,
    );
    sim.control(&format!("/_sim/refunds/{}/fail", id(&refund)), json!({}))
        .await;
    let (_, failed) =
        stripe::<stripe_shared::Refund>(&sim.get(&format!("/v1/refunds/{}", id(&refund))).await);
    assert_eq!(failed["status"], "failed");
    assert!(failed["failure_balance_transaction"].is_string());
    let refund_events: Vec<String> = events_of(&sim, "refund.*")
        .await
        .iter()
        .filter(|e| e["data"]["object"]["id"] == refund["id"])
        .map(|e| e["type"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(
        refund_events,
        ["refund.created", "refund.updated", "refund.failed"]
    );

    // Stripe's count: the won dispute and the failed refund moved nothing in the end.
    let totals: Value = serde_json::from_str(&sim.get("/_sim/totals").await).unwrap();
    assert_eq!(
        totals["totals"],
        // Card fees 59 + 88 + 56 (2.9 % + 30¢ each); the won dispute's fee came back.
        json!([{"currency": "usd", "gross_minor": 3900, "refunded_minor": 0, "net_minor": 3900, "payments": 3,
                "disputed_minor": 0, "fees_minor": 59 + 88 + 56, "stripe_net_minor": 3900 - 203}])
    );
}

#[tokio::test]
async fn an_invoice_names_its_payments_only_when_expanded_and_each_is_an_invoice_payment() {
    let sim = Sim::start().await;
    let session = sim
        .post(
            "/v1/checkout/sessions",
            &[
                ("mode", "subscription"),
                ("line_items[0][price_data][currency]", "eur"),
                ("line_items[0][price_data][unit_amount]", "700"),
                ("line_items[0][price_data][recurring][interval]", "month"),
                ("line_items[0][price_data][product_data][name]", "Monthly"),
                ("line_items[0][quantity]", "1"),
                ("success_url", "https://news.example.org/thanks"),
            ],
        )
        .await;
    let session: Value = serde_json::from_str(&session).unwrap();
    sim.control(&format!("/_sim/checkout/{}/pay", id(&session)), json!({}))
        .await;
    let session: Value = serde_json::from_str(
        &sim.get(&format!("/v1/checkout/sessions/{}", id(&session)))
            .await,
    )
    .unwrap();
    let invoice_id = session["invoice"].as_str().unwrap();
    let (_, invoice) =
        stripe::<stripe_shared::Invoice>(&sim.get(&format!("/v1/invoices/{invoice_id}")).await);
    assert_eq!(
        invoice.get("payments"),
        None,
        "includable: absent unless expanded"
    );
    let (typed, expanded) = stripe::<stripe_shared::Invoice>(
        &sim.get(&format!("/v1/invoices/{invoice_id}?expand[]=payments"))
            .await,
    );
    assert_eq!(typed.payments.map(|p| p.data.len()), Some(1));
    let pi = expanded["payments"]["data"][0]["payment"]["payment_intent"]
        .as_str()
        .unwrap()
        .to_owned();
    for event in events_of(&sim, "invoice.*").await {
        assert_eq!(event["data"]["object"].get("payments"), None, "{event}");
    }
    let paid = events_of(&sim, "invoice_payment.paid").await;
    assert_eq!(paid.len(), 1);
    let object = &paid[0]["data"]["object"];
    let (_, _) = stripe::<stripe_shared::InvoicePayment>(&object.to_string());
    assert_eq!(object["payment"]["payment_intent"], pi.as_str());
    assert_eq!(object["invoice"], invoice_id);
    let fixture: Value = serde_json::from_str(include_str!("../fixtures/objects.json")).unwrap();
    let keys = |v: &Value| {
        v.as_object()
            .unwrap()
            .keys()
            .cloned()
            .collect::<std::collections::BTreeSet<_>>()
    };
    assert_eq!(keys(object), keys(&fixture["invoice_payment"]));

    // An invoice paid from the credit balance: $0, no payment.
    let sub = session["subscription"].as_str().unwrap();
    sim.control(&format!("/_sim/subscriptions/{sub}/credit"), json!({}))
        .await;
    sim.control("/_sim/clock/advance", json!({"seconds": 32 * 86_400}))
        .await;
    let (_, subscription) =
        stripe::<stripe_shared::Subscription>(&sim.get(&format!("/v1/subscriptions/{sub}")).await);
    let renewal = subscription["latest_invoice"].as_str().unwrap();
    let (_, renewal) = stripe::<stripe_shared::Invoice>(
        &sim.get(&format!("/v1/invoices/{renewal}?expand[]=payments"))
            .await,
    );
    assert_eq!(
        (
            renewal["status"].as_str(),
            renewal["amount_paid"].as_i64(),
            renewal["total"].as_i64()
        ),
        (Some("paid"), Some(0), Some(700))
    );
    assert_eq!(renewal["payments"]["data"], json!([]));
    assert_eq!(events_of(&sim, "invoice_payment.paid").await.len(), 1);
}
