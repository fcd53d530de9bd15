//! Money as Stripe really sends it (issue #18): plan payments under their payment intent
//! (from `invoice_payment.paid`; an invoice's `payments` are includable and absent from
//! webhooks), disputes that move money only when Stripe does (inquiries, won, lost, the
//! dispute fee), refunds that fail later, `$0` invoices, early fraud warnings, events from
//! another API version, and a reader's change racing the worker's re-read.

use std::time::Duration;

use kopilka_test_support::{TestApp, eventually, send};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

fn signed(app: &TestApp, body: &str) -> reqwest::RequestBuilder {
    let at = time::OffsetDateTime::now_utc().unix_timestamp();
    let signature =
        kopilka_stripe::sign(app.stripe.simulator.webhook_secret(), at, body.as_bytes());
    app.api
        .request(Method::POST, "/v1/webhooks/stripe")
        .header("content-type", "application/json")
        .header("stripe-signature", signature)
        .body(body.to_owned())
}

/// The ledger's rows of payment `pi` other than Stripe's fees (which [`ledger_becomes`]
/// checks), as `(kind, amount)`, in a stable order.
async fn rows_of(app: &TestApp, pi: &str) -> Vec<(String, i64)> {
    sqlx::query_as(
        "SELECT kind, amount_minor FROM ledger_entries WHERE payment_intent_id = $1
         AND kind <> 'fee' ORDER BY kind, amount_minor",
    )
    .bind(pi)
    .fetch_all(&app.pool)
    .await
    .unwrap()
}

/// Stripe's card processing fee in the simulator (2.9 % + 30 minor units; the currencies
/// these tests use all have two decimals).
fn card_fee(amount: i64) -> i64 {
    amount * 29 / 1000 + 30
}

/// Waits until payment `pi` has exactly `expected` rows, plus the fee row of each payment
/// (Stripe's card fee, recorded after the payment by the fee job).
async fn ledger_becomes(app: &TestApp, pi: &str, expected: &[(&str, i64)]) {
    let mut sorted: Vec<(String, i64)> = expected
        .iter()
        .map(|(kind, minor)| ((*kind).to_owned(), *minor))
        .collect();
    let card_fees: Vec<(String, i64)> = sorted
        .iter()
        .filter(|(kind, _)| kind == "payment")
        .map(|(_, minor)| ("fee".to_owned(), -card_fee(*minor)))
        .collect();
    sorted.extend(card_fees);
    sorted.sort();
    let pool = app.pool.clone();
    eventually(
        &format!("the ledger of {pi} becomes {sorted:?}"),
        Duration::from_secs(30),
        || {
            let pool = pool.clone();
            let sorted = sorted.clone();
            async move {
                let rows: Vec<(String, i64)> = sqlx::query_as(
                    "SELECT kind, amount_minor FROM ledger_entries WHERE payment_intent_id = $1
                     ORDER BY kind, amount_minor",
                )
                .bind(pi)
                .fetch_all(&pool)
                .await
                .ok()?;
                (rows == sorted).then_some(())
            }
        },
    )
    .await;
}

async fn contribution_status(app: &TestApp, contribution: &str) -> String {
    sqlx::query_scalar("SELECT status FROM contributions WHERE id = $1::uuid")
        .bind(contribution)
        .fetch_one(&app.pool)
        .await
        .unwrap()
}

async fn status_becomes(app: &TestApp, contribution: &str, expected: &str) {
    let pool = app.pool.clone();
    let contribution = contribution.to_owned();
    let expected = expected.to_owned();
    eventually(
        &format!("the contribution {expected}"),
        Duration::from_secs(30),
        || {
            let pool = pool.clone();
            let contribution = contribution.clone();
            let expected = expected.clone();
            async move {
                let status: String =
                    sqlx::query_scalar("SELECT status FROM contributions WHERE id = $1::uuid")
                        .bind(&contribution)
                        .fetch_one(&pool)
                        .await
                        .ok()?;
                (status == expected).then_some(())
            }
        },
    )
    .await;
}

async fn failed_events(app: &TestApp) -> Vec<(String, String, Option<String>)> {
    sqlx::query_as("SELECT id, type, last_error FROM provider_events WHERE status = 'failed'")
        .fetch_all(&app.pool)
        .await
        .unwrap()
}

/// The one-off gift's payment intent (once its checkout has named it).
async fn payment_intent_of(app: &TestApp, contribution: &str) -> String {
    let pool = app.pool.clone();
    let contribution = contribution.to_owned();
    eventually("the gift's payment intent", Duration::from_secs(30), || {
        let pool = pool.clone();
        let contribution = contribution.clone();
        async move {
            sqlx::query_scalar::<_, Option<String>>(
                "SELECT stripe_payment_intent_id FROM contributions WHERE id = $1::uuid",
            )
            .bind(&contribution)
            .fetch_one(&pool)
            .await
            .ok()
            .flatten()
        }
    })
    .await
}

/// Kopilka's totals equal the simulator's (Stripe's own count), fees included once the
/// fee jobs have run.
async fn totals_match(app: &TestApp) {
    let pool = app.pool.clone();
    let stripes = app.sim_get("/_sim/totals").await;
    let mut last = serde_json::Value::Null;
    let matched = eventually_or_last(&pool, &stripes["totals"], &mut last).await;
    assert!(
        matched,
        "Kopilka's totals {last} against Stripe's {}",
        stripes["totals"]
    );
}

async fn eventually_or_last(
    pool: &sqlx::PgPool,
    stripes: &serde_json::Value,
    last: &mut serde_json::Value,
) -> bool {
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let mut conn = pool.acquire().await.unwrap();
        let ours = kopilka_contributions::ledger::totals(
            &mut conn,
            time::OffsetDateTime::UNIX_EPOCH,
            time::OffsetDateTime::now_utc() + time::Duration::days(400),
        )
        .await
        .unwrap();
        drop(conn);
        *last = serde_json::to_value(ours).unwrap();
        if last == stripes {
            return true;
        }
        if std::time::Instant::now() > deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn a_plan_payment_is_booked_under_its_payment_intent_so_its_refund_and_dispute_land() {
    let app = TestApp::spawn().await;
    app.deliver_webhooks_here(Some((1, true))).await;
    let started = app.give("plan-money@example.org", "month", 700).await;
    let contribution = started["contribution_id"].as_str().unwrap().to_owned();
    let sub: String = sqlx::query_scalar(
        "SELECT stripe_subscription_id FROM recurring_plans WHERE contribution_id = $1::uuid",
    )
    .bind(&contribution)
    .fetch_one(&app.pool)
    .await
    .unwrap();
    let subscription = app.sim_get(&format!("/v1/subscriptions/{sub}")).await;
    let invoice_id = subscription["latest_invoice"].as_str().unwrap().to_owned();
    // As Stripe renders it: no `payments` unless expanded.
    let invoice = app.sim_get(&format!("/v1/invoices/{invoice_id}")).await;
    assert_eq!(invoice.get("payments"), None, "{invoice}");
    let expanded = app
        .sim_get(&format!("/v1/invoices/{invoice_id}?expand[]=payments"))
        .await;
    let pi = expanded["payments"]["data"][0]["payment"]["payment_intent"]
        .as_str()
        .expect("the expanded invoice names its payment intent")
        .to_owned();
    let events = app
        .sim_get("/v1/events?type=invoice_payment.paid&limit=10")
        .await;
    assert_eq!(events["data"].as_array().unwrap().len(), 1, "{events}");
    let payment = &events["data"][0]["data"]["object"];
    let fixture: Value =
        serde_json::from_str(include_str!("fixtures/stripe-fixtures3.json")).unwrap();
    let keys = |v: &Value| {
        v.as_object()
            .unwrap()
            .keys()
            .cloned()
            .collect::<std::collections::BTreeSet<_>>()
    };
    assert_eq!(
        keys(payment),
        keys(&fixture["resources"]["invoice_payment"]),
        "an invoice_payment has exactly Stripe's fields"
    );
    // Every invoice event came without its payments.
    let invoice_events = app.sim_get("/v1/events?type=invoice.*&limit=100").await;
    for event in invoice_events["data"].as_array().unwrap() {
        assert_eq!(event["data"]["object"].get("payments"), None, "{event}");
    }

    ledger_becomes(&app, &pi, &[("payment", 700)]).await;
    let plan_row: Option<uuid::Uuid> = sqlx::query_scalar(
        "SELECT plan_id FROM ledger_entries WHERE provider_id = $1 AND kind = 'payment'",
    )
    .bind(&pi)
    .fetch_one(&app.pool)
    .await
    .unwrap();
    assert!(plan_row.is_some(), "the payment is the plan's");

    // A partial refund and then a chargeback of the rest, both naming the payment intent.
    let stripe = app.state.stripe.as_ref().unwrap();
    stripe.refund(&pi, "plan-refund", Some(200)).await.unwrap();
    let dispute = app
        .sim_control("/_sim/disputes", &json!({"payment_intent": pi}))
        .await;
    assert_eq!(dispute["status"], "needs_response");
    let fee = dispute["balance_transactions"][0]["fee"].as_i64().unwrap();
    assert_eq!(fee, 1500, "Stripe's dispute fee in USD");
    ledger_becomes(
        &app,
        &pi,
        &[
            ("payment", 700),
            ("refund", -200),
            ("dispute", -500),
            ("fee", -1500),
        ],
    )
    .await;
    let failed = failed_events(&app).await;
    assert!(failed.is_empty(), "{failed:?}");
    totals_match(&app).await;
    // Reconcile finds every plan charge in the ledger.
    let report = kopilka_reconciliation::drift::reconcile(&app.pool, stripe, 0, &|| {})
        .await
        .unwrap();
    assert!(
        report.drift.is_empty(),
        "no drift: {:?}",
        report
            .drift
            .iter()
            .map(|d| (d.kind, d.object.clone(), d.detail.clone()))
            .collect::<Vec<_>>()
    );
}

#[tokio::test]
async fn inquiries_move_nothing_won_disputes_come_back_with_the_fee_and_lost_ones_keep_it() {
    let app = TestApp::spawn().await;
    app.deliver_webhooks_here(Some((0, true))).await;
    let mut gifts = Vec::new();
    for n in 0..3 {
        let started = app
            .give(&format!("disputed-{n}@example.org"), "once", 1000)
            .await;
        let contribution = started["contribution_id"].as_str().unwrap().to_owned();
        let pi = payment_intent_of(&app, &contribution).await;
        ledger_becomes(&app, &pi, &[("payment", 1000)]).await;
        gifts.push((contribution, pi));
    }

    // An inquiry, closed: nothing moved, the gift stays paid.
    let (inquired, inquired_pi) = &gifts[0];
    let inquiry = app
        .sim_control(
            "/_sim/disputes",
            &json!({"payment_intent": inquired_pi, "kind": "inquiry"}),
        )
        .await;
    assert_eq!(inquiry["status"], "warning_needs_response");
    let closed = app
        .sim_control(
            &format!("/_sim/disputes/{}/close", inquiry["id"].as_str().unwrap()),
            &json!({"outcome": "lost"}),
        )
        .await;
    assert_eq!(closed["status"], "warning_closed");

    // A chargeback won: withdrawn with the fee, then reinstated with the fee given back.
    let (won, won_pi) = &gifts[1];
    let chargeback = app
        .sim_control("/_sim/disputes", &json!({"payment_intent": won_pi}))
        .await;
    ledger_becomes(
        &app,
        won_pi,
        &[("payment", 1000), ("dispute", -1000), ("fee", -1500)],
    )
    .await;
    status_becomes(&app, won, "disputed").await;
    app.sim_control(
        &format!(
            "/_sim/disputes/{}/close",
            chargeback["id"].as_str().unwrap()
        ),
        &json!({"outcome": "won"}),
    )
    .await;
    ledger_becomes(
        &app,
        won_pi,
        &[
            ("payment", 1000),
            ("dispute", -1000),
            ("dispute_reversal", 1000),
            ("fee", -1500),
            ("fee", 1500),
        ],
    )
    .await;
    status_becomes(&app, won, "paid").await;

    // A chargeback lost: the withdrawal and the fee stand.
    let (lost, lost_pi) = &gifts[2];
    let chargeback = app
        .sim_control("/_sim/disputes", &json!({"payment_intent": lost_pi}))
        .await;
    app.sim_control(
        &format!(
            "/_sim/disputes/{}/close",
            chargeback["id"].as_str().unwrap()
        ),
        &json!({"outcome": "lost"}),
    )
    .await;
    ledger_becomes(
        &app,
        lost_pi,
        &[("payment", 1000), ("dispute", -1000), ("fee", -1500)],
    )
    .await;
    status_becomes(&app, lost, "disputed").await;

    // The inquiry's events were all applied, and moved nothing.
    let pool = app.pool.clone();
    eventually("every event applied", Duration::from_secs(30), || {
        let pool = pool.clone();
        async move {
            let waiting: i64 = sqlx::query_scalar(
                "SELECT count(*) FROM provider_events WHERE status NOT IN ('processed', 'ignored')",
            )
            .fetch_one(&pool)
            .await
            .ok()?;
            (waiting == 0).then_some(())
        }
    })
    .await;
    assert_eq!(
        rows_of(&app, inquired_pi).await,
        vec![("payment".to_owned(), 1000)]
    );
    assert_eq!(contribution_status(&app, inquired).await, "paid");
    totals_match(&app).await;
}

#[tokio::test]
async fn a_dispute_fee_is_stripes_for_the_currency() {
    let app = TestApp::spawn().await;
    app.deliver_webhooks_here(Some((0, false))).await;
    let session = app.checkout_and("once", 1500, "gbp", "pay").await;
    let pi = session["payment_intent"].as_str().unwrap().to_owned();
    ledger_becomes(&app, &pi, &[("payment", 1500)]).await;
    app.sim_control("/_sim/disputes", &json!({"payment_intent": pi}))
        .await;
    ledger_becomes(
        &app,
        &pi,
        &[("payment", 1500), ("dispute", -1500), ("fee", -2000)],
    )
    .await;
}

#[tokio::test]
async fn a_refund_that_fails_later_is_reversed_and_the_gift_is_paid_again() {
    let app = TestApp::spawn().await;
    app.deliver_webhooks_here(Some((0, true))).await;
    let started = app.give("failed-refund@example.org", "once", 900).await;
    let contribution = started["contribution_id"].as_str().unwrap().to_owned();
    let pi = payment_intent_of(&app, &contribution).await;
    let stripe = app.state.stripe.as_ref().unwrap();
    let refund = stripe.refund(&pi, "to-fail", None).await.unwrap();
    ledger_becomes(&app, &pi, &[("payment", 900), ("refund", -900)]).await;
    status_becomes(&app, &contribution, "refunded").await;
    let failed = app
        .sim_control(&format!("/_sim/refunds/{}/fail", refund.id), &json!({}))
        .await;
    assert_eq!(failed["status"], "failed");
    ledger_becomes(
        &app,
        &pi,
        &[("payment", 900), ("refund", -900), ("refund_reversal", 900)],
    )
    .await;
    status_becomes(&app, &contribution, "paid").await;
    let failed = failed_events(&app).await;
    assert!(failed.is_empty(), "{failed:?}");
    totals_match(&app).await;
}

#[tokio::test]
async fn a_refund_failure_arriving_before_the_refund_ends_the_same() {
    let app = TestApp::spawn().await;
    app.deliver_webhooks_here(Some((0, false))).await;
    let started = app.give("early-failure@example.org", "once", 900).await;
    let contribution = started["contribution_id"].as_str().unwrap().to_owned();
    let pi = payment_intent_of(&app, &contribution).await;
    ledger_becomes(&app, &pi, &[("payment", 900)]).await;
    let refund = json!({"id": "re_early_failure", "object": "refund", "amount": 900, "currency": "usd",
                        "payment_intent": pi, "created": 1, "status": "failed"});
    let event = |id: &str, kind: &str, object: &Value| {
        json!({"id": id, "object": "event", "type": kind, "created": 2, "livemode": false,
               "api_version": kopilka_stripe::api_version(), "data": {"object": object}})
        .to_string()
    };
    let body = event("evt_refund_failed", "refund.failed", &refund);
    assert_eq!(send(signed(&app, &body)).await.status, StatusCode::OK);
    ledger_becomes(
        &app,
        &pi,
        &[("payment", 900), ("refund", -900), ("refund_reversal", 900)],
    )
    .await;
    let mut succeeded = refund.clone();
    succeeded["status"] = json!("succeeded");
    let body = event("evt_refund_created", "refund.created", &succeeded);
    assert_eq!(send(signed(&app, &body)).await.status, StatusCode::OK);
    let pool = app.pool.clone();
    eventually("the refund applied", Duration::from_secs(20), || {
        let pool = pool.clone();
        async move {
            let status: String = sqlx::query_scalar(
                "SELECT status FROM provider_events WHERE id = 'evt_refund_created'",
            )
            .fetch_one(&pool)
            .await
            .ok()?;
            (status == "processed").then_some(())
        }
    })
    .await;
    assert_eq!(
        rows_of(&app, &pi).await,
        vec![
            ("payment".to_owned(), 900),
            ("refund".to_owned(), -900),
            ("refund_reversal".to_owned(), 900)
        ]
    );
    assert_eq!(contribution_status(&app, &contribution).await, "paid");
}

#[tokio::test]
async fn a_zero_invoice_is_processed_without_a_ledger_row() {
    let app = TestApp::spawn().await;
    app.deliver_webhooks_here(Some((0, false))).await;
    let started = app.give("credited@example.org", "month", 700).await;
    let contribution = started["contribution_id"].as_str().unwrap().to_owned();
    let sub: String = sqlx::query_scalar(
        "SELECT stripe_subscription_id FROM recurring_plans WHERE contribution_id = $1::uuid",
    )
    .bind(&contribution)
    .fetch_one(&app.pool)
    .await
    .unwrap();
    // The first payment is booked (from its invoice_payment.paid) before the month passes.
    let pool = app.pool.clone();
    let first = sub.clone();
    eventually("the first payment booked", Duration::from_secs(30), || {
        let pool = pool.clone();
        let first = first.clone();
        async move {
            let booked: i64 = sqlx::query_scalar(
                "SELECT count(*) FROM ledger_entries l JOIN recurring_plans p ON p.id = l.plan_id
                 WHERE p.stripe_subscription_id = $1 AND l.kind = 'payment'",
            )
            .bind(&first)
            .fetch_one(&pool)
            .await
            .ok()?;
            (booked == 1).then_some(())
        }
    })
    .await;
    app.sim_control(&format!("/_sim/subscriptions/{sub}/credit"), &json!({}))
        .await;
    app.sim_control("/_sim/clock/advance", &json!({"seconds": 32 * 86_400}))
        .await;
    let invoices = app
        .sim_get(&format!("/v1/invoices?subscription={sub}&limit=10"))
        .await;
    let renewal = &invoices["data"][0];
    assert_eq!(
        (renewal["status"].as_str(), renewal["amount_paid"].as_i64()),
        (Some("paid"), Some(0)),
        "{renewal}"
    );
    let renewal_id = renewal["id"].as_str().unwrap().to_owned();
    let pool = app.pool.clone();
    eventually(
        "the $0 invoice.paid processed",
        Duration::from_secs(30),
        || {
            let pool = pool.clone();
            let renewal_id = renewal_id.clone();
            async move {
                let processed: i64 = sqlx::query_scalar(
                    "SELECT count(*) FROM provider_events WHERE object_id = $1 AND type = 'invoice.paid'
                     AND status = 'processed'",
                )
                .bind(&renewal_id)
                .fetch_one(&pool)
                .await
                .ok()?;
                (processed == 1).then_some(())
            }
        },
    )
    .await;
    let payments: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM ledger_entries l JOIN recurring_plans p ON p.id = l.plan_id
         WHERE p.stripe_subscription_id = $1 AND l.kind = 'payment'",
    )
    .bind(&sub)
    .fetch_one(&app.pool)
    .await
    .unwrap();
    assert_eq!(payments, 1, "the first payment only");
    let failed = failed_events(&app).await;
    assert!(failed.is_empty(), "{failed:?}");
}

#[tokio::test]
async fn an_event_in_another_api_version_is_refused_loudly() {
    let app = TestApp::spawn().await;
    let invoice = json!({"id": "in_old", "object": "invoice", "amount_paid": 700, "currency": "eur",
                         "subscription": "sub_old"});
    let body = json!({"id": "evt_old_version", "object": "event", "type": "invoice.paid",
                      "created": 1, "livemode": false, "api_version": "2024-06-20",
                      "data": {"object": invoice}})
    .to_string();
    assert_eq!(send(signed(&app, &body)).await.status, StatusCode::OK);
    let pool = app.pool.clone();
    eventually("the event failed", Duration::from_secs(20), || {
        let pool = pool.clone();
        async move {
            let failed = kopilka_reconciliation::inbox::list(&pool, Some("failed"))
                .await
                .ok()?;
            failed.into_iter().find(|e| e.id == "evt_old_version")
        }
    })
    .await;
    let failed = failed_events(&app).await;
    let error = failed[0].2.clone().unwrap_or_default();
    assert!(
        error.contains("2024-06-20") && error.contains(kopilka_stripe::api_version()),
        "{error}"
    );
    // The refusal is final: its job is in the dead letter after one attempt, not retried.
    let pool = app.pool.clone();
    let (attempts, job_error) = eventually("the job dead", Duration::from_secs(20), || {
        let pool = pool.clone();
        async move {
            sqlx::query_as::<_, (i32, Option<String>)>(
                "SELECT attempts, last_error FROM jobs WHERE kind = 'stripe_event'
                 AND payload->>'event_id' = 'evt_old_version' AND status = 'failed'",
            )
            .fetch_optional(&pool)
            .await
            .ok()
            .flatten()
        }
    })
    .await;
    assert_eq!(attempts, 1);
    let job_error = job_error.unwrap_or_default();
    assert!(
        job_error.contains("2024-06-20") && !job_error.starts_with("final"),
        "{job_error}"
    );
    tokio::time::sleep(Duration::from_secs(3)).await;
    let (status, attempts): (String, i32) = sqlx::query_as(
        "SELECT status, attempts FROM jobs WHERE payload->>'event_id' = 'evt_old_version'",
    )
    .fetch_one(&app.pool)
    .await
    .unwrap();
    assert_eq!((status.as_str(), attempts), ("failed", 1));
}

#[tokio::test]
async fn a_failed_switch_payment_queues_no_renewal_notice_but_a_failed_renewal_does() {
    let app = TestApp::spawn().await;
    app.deliver_webhooks_here(Some((0, false))).await;
    app.give("switcher@example.org", "month", 500).await;
    let sub: String = sqlx::query_scalar("SELECT stripe_subscription_id FROM recurring_plans")
        .fetch_one(&app.pool)
        .await
        .unwrap();
    for (event, invoice, reason) in [
        ("evt_switch_failed", "in_switch", "subscription_update"),
        ("evt_renewal_failed", "in_renewal", "subscription_cycle"),
    ] {
        let object = json!({"id": invoice, "object": "invoice", "billing_reason": reason,
                            "attempt_count": 1, "next_payment_attempt": null,
                            "amount_due": 500, "currency": "usd", "status": "open",
                            "parent": {"subscription_details": {"subscription": sub}}});
        let body = json!({"id": event, "object": "event", "type": "invoice.payment_failed",
                          "created": 5, "livemode": false, "api_version": kopilka_stripe::api_version(),
                          "data": {"object": object}})
        .to_string();
        assert_eq!(send(signed(&app, &body)).await.status, StatusCode::OK);
    }
    let pool = app.pool.clone();
    eventually("both events applied", Duration::from_secs(20), || {
        let pool = pool.clone();
        async move {
            let done: i64 = sqlx::query_scalar(
                "SELECT count(*) FROM provider_events WHERE id IN ('evt_switch_failed', 'evt_renewal_failed')
                 AND status IN ('processed', 'ignored')",
            )
            .fetch_one(&pool)
            .await
            .ok()?;
            (done == 2).then_some(())
        }
    })
    .await;
    let notices: Vec<String> = sqlx::query_scalar(
        "SELECT payload->>'invoice_id' FROM jobs WHERE kind = 'mail.payment_failed'",
    )
    .fetch_all(&app.pool)
    .await
    .unwrap();
    assert_eq!(notices, vec!["in_renewal".to_owned()]);
    let failed = failed_events(&app).await;
    assert!(failed.is_empty(), "{failed:?}");
}

#[tokio::test]
async fn an_early_fraud_warning_is_stored_reported_and_refunds_when_configured() {
    for refund in [false, true] {
        let app = TestApp::spawn_with(|s| s.stripe.refund_on_early_fraud_warning = refund).await;
        app.deliver_webhooks_here(Some((0, false))).await;
        let started = app.give("warned@example.org", "once", 800).await;
        let contribution = started["contribution_id"].as_str().unwrap().to_owned();
        let pi = payment_intent_of(&app, &contribution).await;
        ledger_becomes(&app, &pi, &[("payment", 800)]).await;
        let charge = app.sim_get(&format!("/v1/payment_intents/{pi}")).await["latest_charge"]
            .as_str()
            .unwrap()
            .to_owned();
        let warning = json!({"id": "issfr_1", "object": "radar.early_fraud_warning", "actionable": true,
                             "charge": charge, "payment_intent": pi, "created": 5, "fraud_type": "made_with_stolen_card",
                             "livemode": false});
        let body = json!({"id": "evt_efw", "object": "event", "type": "radar.early_fraud_warning.created",
                          "created": 5, "livemode": false, "api_version": kopilka_stripe::api_version(),
                          "data": {"object": warning}})
        .to_string();
        assert_eq!(send(signed(&app, &body)).await.status, StatusCode::OK);
        let pool = app.pool.clone();
        let listed = eventually("the warning stored", Duration::from_secs(20), || {
            let pool = pool.clone();
            async move {
                let processed: i64 = sqlx::query_scalar(
                    "SELECT count(*) FROM provider_events WHERE id = 'evt_efw' AND status = 'processed'",
                )
                .fetch_one(&pool)
                .await
                .ok()?;
                if processed == 0 {
                    return None;
                }
                kopilka_reconciliation::fraud::warnings(&pool).await.ok()
            }
        })
        .await;
        assert_eq!(listed.len(), 1);
        assert_eq!(listed[0].id, "issfr_1");
        assert_eq!(listed[0].payment_intent.as_deref(), Some(pi.as_str()));
        assert_eq!(
            listed[0].contribution_id.map(|c| c.to_string()),
            Some(contribution.clone())
        );
        // The refund job is queued (in the event's transaction) only when configured.
        let queued: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM jobs WHERE kind = 'refund.early_fraud_warning'
             AND payload->>'warning_id' = 'issfr_1'",
        )
        .fetch_one(&app.pool)
        .await
        .unwrap();
        assert_eq!(
            queued,
            i64::from(refund),
            "refund_on_early_fraud_warning = {refund}"
        );
        if refund {
            ledger_becomes(&app, &pi, &[("payment", 800), ("refund", -800)]).await;
            status_becomes(&app, &contribution, "refunded").await;
        } else {
            assert_eq!(rows_of(&app, &pi).await, vec![("payment".to_owned(), 800)]);
            assert_eq!(contribution_status(&app, &contribution).await, "paid");
        }
    }
}

#[tokio::test]
async fn a_re_read_and_a_readers_resume_in_the_same_second_end_in_stripes_state() {
    let app = TestApp::spawn().await;
    app.deliver_webhooks_here(Some((0, false))).await;
    app.give("race@example.org", "month", 500).await;
    let (plan, sub): (uuid::Uuid, String) =
        sqlx::query_as("SELECT id, stripe_subscription_id FROM recurring_plans")
            .fetch_one(&app.pool)
            .await
            .unwrap();
    // From here on the test applies events itself, in the order it chooses.
    app.deliver_webhooks_here(None).await;
    let stripe = app.state.stripe.clone().unwrap();
    for round in 0..3 {
        let cancelled = kopilka_recurring::change_plan(
            &app.pool,
            &stripe,
            plan,
            kopilka_recurring::PlanChange::CancelAtPeriodEnd,
            &format!("race-cancel-{round}"),
        )
        .await
        .unwrap();
        assert!(cancelled.cancel_at_period_end);
        let watermark: i64 = sqlx::query_scalar("SELECT stripe_watermark FROM recurring_plans")
            .fetch_one(&app.pool)
            .await
            .unwrap();
        // The cancel's own event, stamped in the same second as our answer: the worker
        // re-reads the subscription. Stored without a job, so only this test applies it.
        let object = app.sim_get(&format!("/v1/subscriptions/{sub}")).await;
        let event_id = format!("evt_race_{round}");
        sqlx::query(
            "INSERT INTO provider_events (id, type, created, livemode, api_version, object_id, payload, projection_version)
             VALUES ($1, 'customer.subscription.updated', $2, false, $3, $4, $5, $6)",
        )
        .bind(&event_id)
        .bind(watermark)
        .bind(kopilka_stripe::api_version())
        .bind(&sub)
        .bind(kopilka_reconciliation::projection::project(
            "customer.subscription.updated",
            &object,
        ))
        .bind(kopilka_reconciliation::projection::VERSION)
        .execute(&app.pool)
        .await
        .unwrap();
        // The re-read's answer (read now: cancel at period end) is held a while by Stripe.
        app.sim_control("/_sim/faults", &json!({"count": 1, "delay_ms": 1500}))
            .await;
        let applying = {
            let pool = app.pool.clone();
            let stripe = stripe.clone();
            let event_id = event_id.clone();
            tokio::spawn(async move {
                kopilka_reconciliation::apply_event(&pool, Some(&stripe), &event_id, false).await
            })
        };
        let base = app.stripe.simulator.base_url();
        eventually(
            "the re-read reached Stripe",
            Duration::from_secs(20),
            || {
                let base = base.clone();
                async move {
                    let faults: Value = reqwest::get(format!("{base}/_sim/faults"))
                        .await
                        .ok()?
                        .json()
                        .await
                        .ok()?;
                    (faults["remaining"] == 0).then_some(())
                }
            },
        )
        .await;
        // Meanwhile the reader resumes.
        kopilka_recurring::change_plan(
            &app.pool,
            &stripe,
            plan,
            kopilka_recurring::PlanChange::Resume,
            &format!("race-resume-{round}"),
        )
        .await
        .unwrap();
        applying.await.unwrap().unwrap();
        let at_stripe = app.sim_get(&format!("/v1/subscriptions/{sub}")).await;
        assert_eq!(at_stripe["cancel_at_period_end"], false);
        let stored: bool = sqlx::query_scalar("SELECT cancel_at_period_end FROM recurring_plans")
            .fetch_one(&app.pool)
            .await
            .unwrap();
        assert!(!stored, "round {round}: the plan reads back Stripe's state");
    }
}

#[tokio::test]
async fn two_states_of_one_second_end_in_stripes_whatever_their_order() {
    let app = TestApp::spawn().await;
    app.deliver_webhooks_here(Some((0, false))).await;
    let mut plans = Vec::new();
    for n in 0..2 {
        app.give(&format!("same-second-{n}@example.org"), "month", 500)
            .await;
    }
    let rows: Vec<(String, i64)> = sqlx::query_as(
        "SELECT stripe_subscription_id, stripe_watermark FROM recurring_plans ORDER BY created_at",
    )
    .fetch_all(&app.pool)
    .await
    .unwrap();
    // From here on, events arrive only as this test sends them.
    app.deliver_webhooks_here(None).await;
    for (sub, watermark) in rows {
        // Cancelled in the Dashboard and resumed and cancelled again within one second:
        // Stripe ends cancelling at period end.
        let base = app.stripe.simulator.base_url();
        let key = app.stripe.simulator.secret_key().to_owned();
        let cancel = |flag: bool| {
            let sub = sub.clone();
            let base = base.clone();
            let key = key.clone();
            async move {
                reqwest::Client::new()
                    .post(format!("{base}/v1/subscriptions/{sub}"))
                    .bearer_auth(key)
                    .form(&[("cancel_at_period_end", flag.to_string())])
                    .send()
                    .await
                    .unwrap()
                    .json::<Value>()
                    .await
                    .unwrap()
            }
        };
        let resumed = cancel(false).await;
        let cancelled = cancel(true).await;
        plans.push((sub, watermark, resumed, cancelled));
    }
    // The first plan hears the cancel, then the resume; the second the other way round.
    for (n, (sub, watermark, resumed, cancelled)) in plans.iter().enumerate() {
        let second = watermark + 100;
        let mut order = vec![("resume", resumed), ("cancel", cancelled)];
        if n == 0 {
            order.reverse();
        }
        for (name, object) in order {
            let body = json!({"id": format!("evt_{name}_{n}"), "object": "event",
                              "type": "customer.subscription.updated", "created": second,
                              "livemode": false, "api_version": kopilka_stripe::api_version(),
                              "data": {"object": object}})
            .to_string();
            assert_eq!(send(signed(&app, &body)).await.status, StatusCode::OK);
            let pool = app.pool.clone();
            let id = format!("evt_{name}_{n}");
            eventually("the event applied", Duration::from_secs(20), || {
                let pool = pool.clone();
                let id = id.clone();
                async move {
                    let status: String =
                        sqlx::query_scalar("SELECT status FROM provider_events WHERE id = $1")
                            .bind(&id)
                            .fetch_one(&pool)
                            .await
                            .ok()?;
                    (status == "processed").then_some(())
                }
            })
            .await;
        }
        let stored: bool = sqlx::query_scalar(
            "SELECT cancel_at_period_end FROM recurring_plans WHERE stripe_subscription_id = $1",
        )
        .bind(sub)
        .fetch_one(&app.pool)
        .await
        .unwrap();
        assert!(stored, "plan {n}: Stripe's state (cancel at period end)");
    }
}

#[tokio::test]
async fn a_dispute_won_before_the_upgrade_is_not_reinstated_twice() {
    let app = TestApp::spawn().await;
    app.deliver_webhooks_here(Some((0, false))).await;
    let started = app.give("legacy-dispute@example.org", "once", 1000).await;
    let contribution = started["contribution_id"].as_str().unwrap().to_owned();
    let pi = payment_intent_of(&app, &contribution).await;
    ledger_becomes(&app, &pi, &[("payment", 1000)]).await;
    // As an earlier Kopilka booked a won dispute: the withdrawal and `dp_…:won`.
    for (kind, key, minor) in [
        ("dispute", "dp_legacy", -1000),
        ("dispute_reversal", "dp_legacy:won", 1000),
    ] {
        sqlx::query(
            "INSERT INTO ledger_entries (id, kind, provider_id, payment_intent_id, contribution_id, amount_minor, currency, occurred_at)
             VALUES ($1, $2, $3, $4, $5::uuid, $6, 'usd', now())",
        )
        .bind(uuid::Uuid::now_v7())
        .bind(kind)
        .bind(key)
        .bind(&pi)
        .bind(&contribution)
        .bind(minor)
        .execute(&app.pool)
        .await
        .unwrap();
    }
    let dispute = json!({"id": "dp_legacy", "object": "dispute", "amount": 1000, "currency": "usd",
        "payment_intent": pi, "status": "won", "balance_transactions": [
            {"id": "txn_legacy_out", "object": "balance_transaction", "amount": -1000, "fee": 1500, "currency": "usd"},
            {"id": "txn_legacy_back", "object": "balance_transaction", "amount": 1000, "fee": -1500, "currency": "usd"}]});
    let body = json!({"id": "evt_legacy_reinstated", "object": "event", "type": "charge.dispute.funds_reinstated",
        "created": 5, "livemode": false, "api_version": kopilka_stripe::api_version(),
        "data": {"object": dispute}})
    .to_string();
    assert_eq!(send(signed(&app, &body)).await.status, StatusCode::OK);
    ledger_becomes(
        &app,
        &pi,
        &[
            ("payment", 1000),
            ("dispute", -1000),
            ("dispute_reversal", 1000),
            ("fee", -1500),
            ("fee", 1500),
        ],
    )
    .await;
}

#[tokio::test]
async fn a_renewal_that_needs_3ds_emails_a_one_click_link_to_its_invoice_page_once() {
    let app = TestApp::spawn().await;
    app.deliver_webhooks_here(Some((0, false))).await;
    let email = "secure@example.org";
    app.give(email, "month", 500).await;
    let sub: String = sqlx::query_scalar("SELECT stripe_subscription_id FROM recurring_plans")
        .fetch_one(&app.pool)
        .await
        .unwrap();
    app.sim_control(
        &format!("/_sim/subscriptions/{sub}/card"),
        &json!({"outcome": "require_action"}),
    )
    .await;
    app.sim_control("/_sim/clock/advance", &json!({"seconds": 32 * 86_400}))
        .await;
    let is_notice = |m: &kopilka_test_support::ReceivedEmail| {
        m.to.eq_ignore_ascii_case(email) && m.subject.contains("confirm")
    };
    let notice = eventually("the 3-D Secure notice", Duration::from_secs(30), || async {
        app.emails()
            .iter()
            .map(|raw| kopilka_test_support::ReceivedEmail::parse(raw))
            .find(|m| is_notice(m))
    })
    .await;
    let sub_now = app.sim_get(&format!("/v1/subscriptions/{sub}")).await;
    let invoice = app
        .sim_get(&format!(
            "/v1/invoices/{}",
            sub_now["latest_invoice"].as_str().unwrap()
        ))
        .await;
    assert_eq!(
        (
            invoice["billing_reason"].as_str(),
            invoice["status"].as_str()
        ),
        (Some("subscription_cycle"), Some("open")),
        "{invoice}"
    );
    let hosted = invoice["hosted_invoice_url"].as_str().unwrap().to_owned();
    // The email carries Kopilka's signed link, never Stripe's bearer page.
    assert!(
        !notice.text.contains(&hosted) && !notice.html.contains(&hosted),
        "{}",
        notice.text
    );
    let start = notice.text.find("/v1/plan-links/").expect("a plan link") + "/v1/plan-links/".len();
    let token: String = notice.text[start..]
        .chars()
        .take_while(|c| !c.is_whitespace())
        .collect();
    let opened = send(
        app.api
            .request(Method::POST, &format!("/v1/plan-links/{token}")),
    )
    .await;
    assert_eq!(
        opened.status,
        StatusCode::OK,
        "{}",
        String::from_utf8_lossy(&opened.body)
    );
    assert_eq!(opened.json()["url"].as_str(), Some(hosted.as_str()));
    // Single use.
    let again = send(
        app.api
            .request(Method::POST, &format!("/v1/plan-links/{token}")),
    )
    .await;
    assert_eq!(again.error_code(410), "link_used");
    // Once paid, a fresh link has nothing to open.
    let paid = reqwest::Client::new()
        .post(format!("{hosted}/pay"))
        .send()
        .await
        .unwrap();
    assert!(paid.status().is_success());
    let plan: uuid::Uuid = sqlx::query_scalar("SELECT id FROM recurring_plans")
        .fetch_one(&app.pool)
        .await
        .unwrap();
    let fresh = kopilka_accounts::plan_link::token(
        &app.state.accounts.keys,
        plan,
        kopilka_accounts::plan_link::PlanAction::CompletePayment,
        // Not the emailed link's expiry (that one is used).
        time::OffsetDateTime::now_utc() + time::Duration::days(3),
    );
    let nothing = send(
        app.api
            .request(Method::POST, &format!("/v1/plan-links/{fresh}")),
    )
    .await;
    assert_eq!(nothing.error_code(410), "nothing_to_pay");
    // Once per invoice: the event applied again queues nothing more.
    let event: String = sqlx::query_scalar(
        "SELECT id FROM provider_events WHERE type = 'invoice.payment_action_required'",
    )
    .fetch_one(&app.pool)
    .await
    .unwrap();
    sqlx::query("UPDATE provider_events SET status = 'pending' WHERE id = $1")
        .bind(&event)
        .execute(&app.pool)
        .await
        .unwrap();
    kopilka_reconciliation::apply_event(&app.pool, None, &event, false)
        .await
        .unwrap();
    let jobs: i64 =
        sqlx::query_scalar("SELECT count(*) FROM jobs WHERE kind = 'mail.payment_action_required'")
            .fetch_one(&app.pool)
            .await
            .unwrap();
    assert_eq!(jobs, 1);
    tokio::time::sleep(Duration::from_secs(2)).await;
    let notices = app
        .emails()
        .iter()
        .map(|raw| kopilka_test_support::ReceivedEmail::parse(raw))
        .filter(|m| is_notice(m))
        .count();
    assert_eq!(notices, 1);
    let failed = failed_events(&app).await;
    assert!(failed.is_empty(), "{failed:?}");
}
