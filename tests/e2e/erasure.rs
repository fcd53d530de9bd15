//! Erasure ends everything, then forgets (issue #17, item 3): a reader with a live monthly
//! plan erases; two periods later no renewal reached the ledger, the simulator shows the
//! plan cancelled and the customer deleted, no copy of the address is in a `pg_dump`, the
//! supporter token is refused, and later signed events about the erased customer create no
//! reader.

use std::time::Duration;

use kopilka_test_support::{TestApp, eventually, pg_dump, send};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

async fn count(app: &TestApp, query: &str) -> i64 {
    sqlx::query_scalar(sqlx::AssertSqlSafe(query.to_owned()))
        .fetch_one(&app.pool)
        .await
        .unwrap()
}

/// Waits until every stored event is applied (or ignored).
async fn settled(app: &TestApp, what: &str) {
    eventually(what, Duration::from_secs(30), || async {
        let waiting = count(
            app,
            "SELECT count(*) FROM provider_events WHERE status NOT IN ('processed', 'ignored')",
        )
        .await;
        (waiting == 0).then_some(())
    })
    .await;
}

/// Moves the simulator's clock just past the end of `sub`'s current period.
async fn past_period_end(app: &TestApp, sub: &str) {
    let subscription = app.sim_get(&format!("/v1/subscriptions/{sub}")).await;
    let end = subscription["items"]["data"][0]["current_period_end"]
        .as_i64()
        .unwrap();
    let now = app.sim_get("/_sim/clock").await["now"].as_i64().unwrap();
    app.sim_control(
        "/_sim/clock/advance",
        &json!({"seconds": (end - now + 1).max(0)}),
    )
    .await;
}

/// Delivers `event` to the app signed with its webhook secret, as Stripe would.
async fn deliver(app: &TestApp, event: &Value) -> StatusCode {
    let body = event.to_string();
    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    let signature =
        kopilka_stripe::webhook::sign(app.stripe.simulator.webhook_secret(), now, body.as_bytes());
    send(
        app.api
            .request(Method::POST, "/v1/webhooks/stripe")
            .header("stripe-signature", signature)
            .header("content-type", "application/json")
            .body(body),
    )
    .await
    .status
}

fn event(id: &str, kind: &str, object: &Value) -> Value {
    json!({
        "id": id, "object": "event", "type": kind, "api_version": kopilka_stripe::api_version(),
        "created": time::OffsetDateTime::now_utc().unix_timestamp(), "livemode": false,
        "pending_webhooks": 1, "request": {"id": null, "idempotency_key": null},
        "data": {"object": object}
    })
}

#[tokio::test]
async fn erasing_a_monthly_supporter_stops_the_plan_at_stripe_and_forgets_the_address() {
    let app = TestApp::spawn().await;
    app.deliver_webhooks_here(Some((0, false))).await;
    let email = "erasure-proof-donor@example.org";
    let started = app.give(email, "month", 700).await;
    let contribution = started["contribution_id"].as_str().unwrap().to_owned();
    let (sub, customer): (String, String) = sqlx::query_as(
        "SELECT stripe_subscription_id, stripe_customer_id FROM recurring_plans
         WHERE contribution_id = $1::uuid",
    )
    .bind(&contribution)
    .fetch_one(&app.pool)
    .await
    .unwrap();
    let session = app.signed_in_by_link(email).await;
    let supporter = send(
        app.api
            .request(Method::GET, "/v1/entitlements")
            .bearer_auth(&session),
    )
    .await
    .json();
    assert_eq!(supporter["claims"]["supporter"], true);
    let supporter_token = supporter["token"].as_str().unwrap().to_owned();
    let offer = |token: String| {
        send(
            app.api
                .request(Method::GET, "/v1/offer?currency=usd")
                .bearer_auth(token),
        )
    };
    assert_eq!(
        offer(supporter_token.clone()).await.json()["supporter"],
        true
    );
    let payments = "SELECT count(*) FROM ledger_entries WHERE kind = 'payment'";
    // The plan's payment is booked when `invoice_payment.paid` arrives, which may follow
    // the plan's other events.
    eventually(
        "the plan's first payment booked",
        Duration::from_secs(30),
        || async { (count(&app, payments).await == 1).then_some(()) },
    )
    .await;
    let paid_before = count(&app, payments).await;

    // The export holds every row linked to the reader, stored events and email sends too
    // (once the worker has sent the gift's receipt: wait for that state, not a time).
    eventually("the receipt sent", Duration::from_secs(30), || async {
        (count(&app, "SELECT count(*) FROM email_sends").await >= 1).then_some(())
    })
    .await;
    let export = send(
        app.api
            .request(Method::GET, "/v1/me/export")
            .bearer_auth(&session),
    )
    .await
    .json();
    assert!(
        !export["stripe_events"].as_array().unwrap().is_empty(),
        "{export}"
    );
    assert!(
        export["stripe_events"][0]["id"]
            .as_str()
            .unwrap()
            .starts_with("evt_")
    );
    assert!(
        !export["email_sends"].as_array().unwrap().is_empty(),
        "{export}"
    );

    let erased = send(
        app.api
            .request(Method::DELETE, "/v1/me")
            .bearer_auth(&session),
    )
    .await;
    assert_eq!(erased.status, StatusCode::OK);
    let erased = erased.json();
    assert_eq!(erased["erased"], true);
    assert_eq!(erased["plans_cancelled"], 1, "{erased}");
    assert_eq!(erased["customers_deleted"], 1, "{erased}");
    assert_eq!(erased["checkouts_expired"], 0, "{erased}");
    assert!(
        erased["stripe_retains"]
            .as_array()
            .unwrap()
            .iter()
            .any(|r| r["object"] == "invoice" && r["why"].as_str().is_some_and(|w| !w.is_empty())),
        "{erased}"
    );

    // The supporter token is refused by Kopilka itself at once.
    assert_eq!(
        offer(supporter_token).await.error_code(401),
        "invalid_token"
    );

    // Two periods on: no renewal, no payment.
    past_period_end(&app, &sub).await;
    past_period_end(&app, &sub).await;
    settled(&app, "the cancellation's events applied").await;
    assert_eq!(
        count(&app, payments).await,
        paid_before,
        "no renewal after erasure"
    );
    let at_stripe = app.sim_get(&format!("/v1/subscriptions/{sub}")).await;
    assert_eq!(at_stripe["status"], "canceled", "{at_stripe}");
    let invoices = app
        .sim_get(&format!("/v1/invoices?subscription={sub}&limit=100"))
        .await;
    assert_eq!(
        invoices["data"].as_array().unwrap().len(),
        1,
        "Stripe invoiced nothing after erasure: {invoices}"
    );
    let at_stripe = app.sim_get(&format!("/v1/customers/{customer}")).await;
    assert_eq!(
        at_stripe,
        json!({"id": customer, "object": "customer", "deleted": true})
    );
    assert_eq!(
        count(
            &app,
            "SELECT count(*) FROM contributions WHERE reader_id IS NULL AND reader_erased_at IS NOT NULL"
        )
        .await,
        1,
        "the ledger keeps the contribution, with no reader"
    );

    // Later events about the erased customer and plan, carrying the address, create no
    // reader: an invoice and a replayed completed Checkout Session.
    let invoice = event(
        "evt_after_erasure_invoice",
        "invoice.paid",
        &json!({"object": "invoice", "id": "in_after_erasure", "customer": customer,
            "customer_email": email, "customer_name": "Erased Donor",
            "status": "paid", "amount_paid": 700, "currency": "usd",
            "parent": {"type": "subscription_details",
                "subscription_details": {"subscription": sub, "metadata": {"contribution_id": contribution}}}}),
    );
    let replayed = event(
        "evt_after_erasure_session",
        "checkout.session.completed",
        &json!({"object": "checkout.session", "id": "cs_after_erasure", "mode": "subscription",
            "status": "complete", "payment_status": "paid", "customer": customer,
            "subscription": sub, "client_reference_id": contribution,
            "customer_details": {"email": email, "name": "Erased Donor"},
            "amount_total": 700, "currency": "usd", "metadata": {"contribution_id": contribution}}),
    );
    assert!(deliver(&app, &invoice).await.is_success());
    assert!(deliver(&app, &replayed).await.is_success());
    settled(&app, "the late events applied").await;
    assert_eq!(count(&app, "SELECT count(*) FROM readers").await, 0);
    assert_eq!(
        count(
            &app,
            "SELECT count(*) FROM provider_events WHERE reader_id IS NOT NULL"
        )
        .await,
        0
    );

    let dump = pg_dump(&app.db.as_ref().expect("its own database").url);
    for needle in [email, "erasure-proof-donor", "Erased Donor"] {
        assert!(!dump.contains(needle), "{needle} is in pg_dump");
    }
}
