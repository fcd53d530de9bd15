//! What Stripe (and anyone pretending to be it) sends: forgeries, rotated secrets,
//! concurrent duplicates across processes, events in every order, a crash in between.

use futures_util::future::join_all;
use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::stack::{Stack, WEBHOOK_SECRET};

fn now() -> i64 {
    time::OffsetDateTime::now_utc().unix_timestamp()
}

fn event(id: &str, kind: &str, created: i64, object: &Value) -> String {
    json!({"id": id, "object": "event", "type": kind, "created": created, "livemode": false,
           "api_version": "2026-09-30.endive", "data": {"object": object}})
    .to_string()
}

/// A paid one-off checkout's completion for `contribution`.
fn paid_checkout(event_id: &str, contribution: uuid::Uuid, amount: i64) -> String {
    event(
        event_id,
        "checkout.session.completed",
        now(),
        &json!({"id": format!("cs_{event_id}"), "object": "checkout.session",
                "client_reference_id": contribution.to_string(), "payment_status": "paid",
                "payment_intent": format!("pi_{event_id}"), "amount_total": amount, "currency": "eur"}),
    )
}

async fn pending_contribution(stack: &Stack, amount: i64) -> uuid::Uuid {
    let id = uuid::Uuid::now_v7();
    sqlx::query("INSERT INTO contributions (id, interval, amount_minor, currency) VALUES ($1, 'once', $2, 'eur')")
        .bind(id)
        .bind(amount)
        .execute(&stack.pool)
        .await
        .expect("a pending contribution");
    id
}

pub async fn forged_tampered_unsigned_and_stale_deliveries_are_400_and_store_nothing() {
    let stack = Stack::options().start().await;
    let contribution = pending_contribution(&stack, 1500).await;
    let body = paid_checkout("evt_forged", contribution, 1500);
    let t = now();
    let tampered = body.replace("1500", "150000");
    let other_secret = kopilka_stripe::sign("whsec_someone_else", t, body.as_bytes());
    let good_for_body = kopilka_stripe::sign(WEBHOOK_SECRET, t, body.as_bytes());
    let cases: Vec<(&str, String, &str)> = vec![
        (
            "forged (another secret)",
            other_secret,
            "signature_mismatch",
        ),
        ("tampered body", good_for_body.clone(), "signature_mismatch"),
        (
            "stale t",
            kopilka_stripe::sign(WEBHOOK_SECRET, t - 301, body.as_bytes()),
            "signature_stale",
        ),
        (
            "future t",
            kopilka_stripe::sign(WEBHOOK_SECRET, t + 301, body.as_bytes()),
            "signature_stale",
        ),
        ("no v1", format!("t={t}"), "signature_malformed"),
        (
            "v0 only",
            good_for_body.replace("v1=", "v0="),
            "signature_malformed",
        ),
        ("garbage", "\u{202e}t=1,v1=zz".into(), "signature_malformed"),
        (
            "t twice",
            format!("t={t},{good_for_body}"),
            "signature_malformed",
        ),
    ];
    for (what, header, code) in cases {
        let sent = if what == "tampered body" {
            &tampered
        } else {
            &body
        };
        let answer = stack.deliver_signed(0, sent, &header).await;
        assert_eq!(answer.error_code(400), code, "{what}");
    }
    let unsigned = kopilka_test_support::send(
        stack
            .api()
            .request(reqwest::Method::POST, "/v1/webhooks/stripe")
            .header("content-type", "application/json")
            .body(body.clone()),
    )
    .await;
    assert_eq!(unsigned.error_code(400), "signature_missing");
    assert_eq!(
        stack.count("SELECT count(*) FROM provider_events").await,
        0,
        "nothing stored"
    );
    assert_eq!(
        stack
            .count("SELECT count(*) FROM jobs WHERE kind <> 'retention.sweep'")
            .await,
        0,
        "nothing queued"
    );
    // The genuine delivery still goes through afterwards.
    assert_eq!(stack.deliver(0, &body).await.status, StatusCode::OK);
    assert_eq!(stack.count("SELECT count(*) FROM provider_events").await, 1);
    stack.finish().await;
}

pub async fn rotated_secrets_and_several_signatures_are_accepted() {
    let old = "whsec_faults_old_secret_being_rolled";
    let stack = Stack::options()
        .env(
            "KOPILKA__STRIPE__WEBHOOK_SECRET",
            &format!("{old},{WEBHOOK_SECRET}"),
        )
        .start()
        .await;
    let t = now();
    let v1 = |secret: &str, body: &str| {
        kopilka_stripe::sign(secret, t, body.as_bytes())
            .split_once(",v1=")
            .expect("t=…,v1=…")
            .1
            .to_owned()
    };
    let bodies: Vec<String> = (0..5)
        .map(|i| {
            event(
                &format!("evt_rotation_{i}"),
                "brand.new_type",
                t,
                &json!({"id": format!("x_{i}"), "object": "novelty"}),
            )
        })
        .collect();
    let junk = "5257a869e7ecebeda32affa62cdca3fa51cad7e77a0e56ff536d0ce8e108d8bd";
    let headers = [
        // Stripe during a roll: both secrets sign, the valid one first or last.
        format!("t={t},v1={},v1={junk}", v1(WEBHOOK_SECRET, &bodies[0])),
        format!("t={t},v1={junk},v1={}", v1(WEBHOOK_SECRET, &bodies[1])),
        // Only the old secret, or only the new one; and a v0 scheme beside them.
        format!("t={t},v1={}", v1(old, &bodies[2])),
        format!("t={t},v0={junk},v1={}", v1(WEBHOOK_SECRET, &bodies[3])),
        format!(
            "t={t},v1={},v1={}",
            v1(old, &bodies[4]),
            v1(WEBHOOK_SECRET, &bodies[4])
        ),
    ];
    for (body, header) in bodies.iter().zip(&headers) {
        let answer = stack.deliver_signed(0, body, header).await;
        assert_eq!(answer.status, StatusCode::OK, "{header}: {:?}", answer.body);
    }
    assert_eq!(stack.count("SELECT count(*) FROM provider_events").await, 5);
    // A secret that is neither is refused.
    let stranger = event(
        "evt_rotation_x",
        "brand.new_type",
        t,
        &json!({"id": "x_x", "object": "novelty"}),
    );
    let header = format!("t={t},v1={}", v1("whsec_not_configured", &stranger));
    assert_eq!(
        stack
            .deliver_signed(0, &stranger, &header)
            .await
            .error_code(400),
        "signature_mismatch"
    );
    let mut stack = stack;
    stack.watch([old]);
    stack.finish().await;
}

pub async fn one_event_five_times_at_once_across_two_servers_has_one_effect() {
    let mut stack = Stack::options()
        .servers(2)
        .worker_in_serve(true)
        .start()
        .await;
    let mut contributions = vec![];
    for round in 0..5 {
        let contribution = pending_contribution(&stack, 2000 + round).await;
        let body = paid_checkout(&format!("evt_dup_{round}"), contribution, 2000 + round);
        let answers = join_all((0..5).map(|i| stack.deliver(i % 2, &body))).await;
        for answer in &answers {
            assert_eq!(answer.status, StatusCode::OK, "{:?}", answer.body);
        }
        let duplicates = answers
            .iter()
            .filter(|a| a.json()["duplicate"] == true)
            .count();
        assert_eq!(
            duplicates, 4,
            "one delivery stored it, four saw a duplicate"
        );
        contributions.push(contribution);
    }
    stack.work_through(1).await;
    assert_eq!(stack.count("SELECT count(*) FROM provider_events").await, 5);
    assert_eq!(
        stack
            .count("SELECT count(*) FROM jobs WHERE kind = 'stripe_event'")
            .await,
        5,
        "one job per event"
    );
    assert_eq!(
        stack
            .count("SELECT count(*) FROM ledger_entries WHERE kind = 'payment'")
            .await,
        5,
        "one payment per event"
    );
    assert_eq!(
        stack
            .count("SELECT coalesce(sum(amount_minor), 0)::bigint FROM ledger_entries")
            .await,
        (0..5).map(|r| 2000 + r).sum::<i64>()
    );
    assert_eq!(
        stack
            .count("SELECT count(*) FROM contributions WHERE status = 'paid'")
            .await,
        5
    );
    stack.finish().await;
}

/// A monthly plan's five events, with ids unique to `n` (one plan per order tried).
fn plan_events(n: usize, contribution: uuid::Uuid, base: i64) -> Vec<String> {
    let sub_id = format!("sub_order_{n}");
    let sub = |status: &str, cancel: bool| {
        json!({"id": sub_id, "object": "subscription", "customer": format!("cus_{n}"), "status": status,
               "cancel_at_period_end": cancel, "metadata": {"contribution_id": contribution.to_string()},
               "items": {"data": [{"current_period_end": base + 30 * 86_400,
                   "price": {"unit_amount": 700, "currency": "eur", "recurring": {"interval": "month"}}}]}})
    };
    vec![
        event(
            &format!("evt_{n}_a"),
            "checkout.session.completed",
            base,
            &json!({"id": format!("cs_order_{n}"), "object": "checkout.session",
                    "client_reference_id": contribution.to_string(), "payment_status": "paid",
                    "subscription": sub_id, "customer": format!("cus_{n}"), "amount_total": 700, "currency": "eur"}),
        ),
        event(
            &format!("evt_{n}_b"),
            "customer.subscription.created",
            base,
            &sub("incomplete", false),
        ),
        event(
            &format!("evt_{n}_c"),
            "customer.subscription.updated",
            base + 1,
            &sub("active", false),
        ),
        event(
            &format!("evt_{n}_d"),
            "invoice.paid",
            base + 1,
            &json!({"id": format!("in_order_{n}"), "object": "invoice", "amount_paid": 700, "currency": "eur",
                    "parent": {"subscription_details": {"subscription": sub_id,
                        "metadata": {"contribution_id": contribution.to_string()}}},
                    "payments": {"data": [{"payment": {"payment_intent": format!("pi_order_{n}")}}]}}),
        ),
        event(
            &format!("evt_{n}_e"),
            "customer.subscription.updated",
            base + 50,
            &sub("active", true),
        ),
    ]
}

/// Every permutation of `0..n`, in lexicographic order.
fn permutations(n: usize) -> Vec<Vec<usize>> {
    let mut current: Vec<usize> = (0..n).collect();
    let mut all = vec![current.clone()];
    loop {
        let Some(i) = (0..n.saturating_sub(1))
            .rev()
            .find(|&i| current[i] < current[i + 1])
        else {
            return all;
        };
        let j = (i + 1..n)
            .rev()
            .find(|&j| current[j] > current[i])
            .expect("a larger one");
        current.swap(i, j);
        current[i + 1..].reverse();
        all.push(current.clone());
    }
}

pub async fn a_plans_events_in_every_order_end_in_the_same_state() {
    let mut stack = Stack::options().start().await;
    let base = now() - 1000;
    let orders = permutations(5);
    assert_eq!(orders.len(), 120);
    let mut plans = vec![];
    for (n, order) in orders.iter().enumerate() {
        let contribution = uuid::Uuid::now_v7();
        sqlx::query("INSERT INTO contributions (id, interval, amount_minor, currency) VALUES ($1, 'month', 700, 'eur')")
            .bind(contribution)
            .execute(&stack.pool)
            .await
            .expect("a pending contribution");
        let events = plan_events(n, contribution, base);
        // Each order is delivered in turn; the worker applies them in arrival order.
        for &index in order {
            let answer = stack.deliver(0, &events[index]).await;
            assert_eq!(answer.status, StatusCode::OK);
        }
        plans.push(contribution);
    }
    stack.work_through(120).await;
    for (n, (order, contribution)) in orders.iter().zip(&plans).enumerate() {
        let plan: Option<(String, bool, i64)> = sqlx::query_as(
            "SELECT status, cancel_at_period_end, amount_minor FROM recurring_plans WHERE stripe_subscription_id = $1",
        )
        .bind(format!("sub_order_{n}"))
        .fetch_optional(&stack.pool)
        .await
        .expect("reads the plan");
        let status: String = sqlx::query_scalar("SELECT status FROM contributions WHERE id = $1")
            .bind(contribution)
            .fetch_one(&stack.pool)
            .await
            .expect("reads the contribution");
        let ledger: (i64, i64) = sqlx::query_as(
            "SELECT count(*), coalesce(sum(amount_minor), 0)::bigint FROM ledger_entries WHERE payment_intent_id = $1",
        )
        .bind(format!("pi_order_{n}"))
        .fetch_one(&stack.pool)
        .await
        .expect("reads the ledger");
        assert_eq!(
            (plan, status, ledger),
            (
                Some(("active".to_owned(), true, 700)),
                "paid".to_owned(),
                (1, 700)
            ),
            "order {order:?} (a = checkout, b = created, c = active, d = invoice.paid, e = cancel at period end)"
        );
    }
    assert_eq!(
        stack
            .count(
                "SELECT count(*) FROM provider_events WHERE status NOT IN ('processed', 'ignored')"
            )
            .await,
        0,
        "every event applied"
    );
    stack.finish().await;
}

/// A plan payment's money events as Stripe sends them since the 2025 "basil" API: the
/// invoice without its payments, the payment (`invoice_payment.paid`, naming the payment
/// intent), a partial refund and a chargeback of the rest (with its dispute fee), ids unique
/// to `n`. Returns the setup events (checkout, active subscription) and the four.
fn plan_money_events(n: usize, contribution: uuid::Uuid, base: i64) -> (Vec<String>, Vec<String>) {
    let sub_id = format!("sub_money_{n}");
    let pi = format!("pi_money_{n}");
    let setup = vec![
        event(
            &format!("evt_money_{n}_checkout"),
            "checkout.session.completed",
            base,
            &json!({"id": format!("cs_money_{n}"), "object": "checkout.session",
                    "client_reference_id": contribution.to_string(), "payment_status": "paid",
                    "subscription": sub_id, "customer": format!("cus_money_{n}"), "amount_total": 700, "currency": "eur"}),
        ),
        event(
            &format!("evt_money_{n}_sub"),
            "customer.subscription.created",
            base,
            &json!({"id": sub_id, "object": "subscription", "customer": format!("cus_money_{n}"), "status": "active",
                    "cancel_at_period_end": false, "metadata": {"contribution_id": contribution.to_string()},
                    "items": {"data": [{"current_period_end": base + 30 * 86_400,
                        "price": {"unit_amount": 700, "currency": "eur", "recurring": {"interval": "month"}}}]}}),
        ),
    ];
    let money = vec![
        event(
            &format!("evt_money_{n}_a"),
            "invoice.paid",
            base + 1,
            &json!({"id": format!("in_money_{n}"), "object": "invoice", "amount_paid": 700, "currency": "eur",
                    "parent": {"type": "subscription_details", "subscription_details": {"subscription": sub_id,
                        "metadata": {"contribution_id": contribution.to_string()}}}}),
        ),
        event(
            &format!("evt_money_{n}_b"),
            "invoice_payment.paid",
            base + 1,
            &json!({"id": format!("inpay_money_{n}"), "object": "invoice_payment", "invoice": format!("in_money_{n}"),
                    "amount_paid": 700, "amount_requested": 700, "currency": "eur", "status": "paid",
                    "payment": {"type": "payment_intent", "payment_intent": pi}}),
        ),
        event(
            &format!("evt_money_{n}_c"),
            "refund.created",
            base + 10,
            &json!({"id": format!("re_money_{n}"), "object": "refund", "amount": 200, "currency": "eur",
                    "payment_intent": pi, "status": "succeeded", "created": base + 10}),
        ),
        event(
            &format!("evt_money_{n}_d"),
            "charge.dispute.funds_withdrawn",
            base + 20,
            &json!({"id": format!("dp_money_{n}"), "object": "dispute", "amount": 500, "currency": "eur",
                    "payment_intent": pi, "status": "needs_response",
                    "balance_transactions": [{"id": format!("txn_money_{n}"), "object": "balance_transaction",
                        "amount": -500, "fee": 2000, "net": -2500, "currency": "eur", "type": "adjustment",
                        "reporting_category": "dispute"}]}),
        ),
    ];
    (setup, money)
}

pub async fn a_plan_payments_refund_and_dispute_land_in_every_order() {
    let mut stack = Stack::options().start().await;
    let base = now() - 1000;
    let orders = permutations(4);
    assert_eq!(orders.len(), 24);
    let mut plans = vec![];
    for (n, order) in orders.iter().enumerate() {
        let contribution = uuid::Uuid::now_v7();
        sqlx::query("INSERT INTO contributions (id, interval, amount_minor, currency) VALUES ($1, 'month', 700, 'eur')")
            .bind(contribution)
            .execute(&stack.pool)
            .await
            .expect("a pending contribution");
        let (setup, money) = plan_money_events(n, contribution, base);
        // The money events first, in this order, then what they wait for.
        for &index in order {
            assert_eq!(stack.deliver(0, &money[index]).await.status, StatusCode::OK);
        }
        for body in &setup {
            assert_eq!(stack.deliver(0, body).await.status, StatusCode::OK);
        }
        plans.push(contribution);
    }
    stack.work_through(120).await;
    for (n, (order, contribution)) in orders.iter().zip(&plans).enumerate() {
        let rows: Vec<(String, String, i64)> = sqlx::query_as(
            "SELECT kind, provider_id, amount_minor FROM ledger_entries WHERE payment_intent_id = $1
             ORDER BY kind",
        )
        .bind(format!("pi_money_{n}"))
        .fetch_all(&stack.pool)
        .await
        .expect("reads the ledger");
        let status: String = sqlx::query_scalar("SELECT status FROM contributions WHERE id = $1")
            .bind(contribution)
            .fetch_one(&stack.pool)
            .await
            .expect("reads the contribution");
        assert_eq!(
            (rows, status),
            (
                vec![
                    ("dispute".to_owned(), format!("dp_money_{n}"), -500),
                    ("fee".to_owned(), format!("txn_money_{n}"), -2000),
                    ("payment".to_owned(), format!("pi_money_{n}"), 700),
                    ("refund".to_owned(), format!("re_money_{n}"), -200),
                ],
                "disputed".to_owned()
            ),
            "order {order:?} (0 = invoice.paid, 1 = invoice_payment.paid, 2 = refund, 3 = funds withdrawn)"
        );
    }
    assert_eq!(
        stack
            .count(
                "SELECT count(*) FROM provider_events WHERE status NOT IN ('processed', 'ignored')"
            )
            .await,
        0,
        "every event applied"
    );
    stack.finish().await;
}

pub async fn an_event_stored_before_sigkill_is_applied_once_after_restart() {
    // No worker in serve: the event waits, durable, when the server dies.
    let mut stack = Stack::options().start().await;
    let contribution = pending_contribution(&stack, 1200).await;
    let body = paid_checkout("evt_before_crash", contribution, 1200);
    assert_eq!(stack.deliver(0, &body).await.status, StatusCode::OK);
    stack.kill_server(0).await;
    assert_eq!(
        stack.count("SELECT count(*) FROM ledger_entries").await,
        0,
        "not applied before the crash"
    );
    // A new server comes up; Stripe's retry of the same event is a duplicate, not a second
    // effect; a worker applies it.
    let index = stack.start_server().await;
    let retried = stack.deliver(index, &body).await;
    assert_eq!(retried.json()["duplicate"], true);
    stack.work_through(1).await;
    stack.work_through(1).await;
    let status: String = sqlx::query_scalar("SELECT status FROM contributions WHERE id = $1")
        .bind(contribution)
        .fetch_one(&stack.pool)
        .await
        .expect("reads");
    assert_eq!(status, "paid");
    assert_eq!(
        stack
            .count("SELECT count(*) FROM ledger_entries WHERE kind = 'payment'")
            .await,
        1,
        "applied once"
    );
    stack.finish().await;
}

/// A database written by an earlier Kopilka (whole Stripe bodies in `stripe_events`) and
/// another product's objects on the same Stripe account: after `kopilka migrate` and the
/// worker, no stored event holds an address, a name or an IP, and no reader was made.
pub async fn an_upgraded_database_and_another_products_objects_keep_no_personal_data() {
    let mut stack = Stack::options().start().await;
    let personal = [
        "old-donor@example.org",
        "Marina Old-Donor",
        "198.51.100.23",
        "Ulitsa Lenina 1",
        "buyer-of-another-product@example.org",
        "Shop Customer",
    ];
    stack.watch(personal);
    let contribution = pending_contribution(&stack, 900).await;
    // As an earlier Kopilka stored them: the whole event, projection version 0.
    let whole = [
        event(
            "evt_old_dispute",
            "charge.dispute.created",
            now() - 100,
            &json!({"id": "dp_old", "object": "dispute", "amount": 900, "currency": "eur",
                    "charge": "ch_old", "payment_intent": "pi_old", "status": "needs_response",
                    "reason": "fraudulent", "created": now() - 100,
                    "evidence": {"customer_email_address": personal[0], "customer_name": personal[1],
                                 "customer_purchase_ip": personal[2], "billing_address": personal[3]}}),
        ),
        event(
            "evt_old_checkout",
            "checkout.session.completed",
            now() - 100,
            &json!({"id": "cs_old", "object": "checkout.session", "client_reference_id": contribution.to_string(),
                    "payment_status": "paid", "payment_intent": "pi_old", "amount_total": 900, "currency": "eur",
                    "customer_details": {"email": personal[0], "name": personal[1],
                                         "address": {"line1": personal[3]}}}),
        ),
    ];
    for body in &whole {
        let value: Value = serde_json::from_str(body).expect("json");
        sqlx::query(
            "INSERT INTO provider_events (id, type, created, livemode, api_version, payload, projection_version)
             VALUES ($1, $2, $3, false, $4, $5, 0)",
        )
        .bind(value["id"].as_str())
        .bind(value["type"].as_str())
        .bind(value["created"].as_i64())
        .bind(value["api_version"].as_str())
        .bind(&value)
        .execute(&stack.pool)
        .await
        .expect("an old row");
    }
    let migrated = stack.run(&["migrate"]).await;
    assert!(migrated.status.success(), "migrate: {}", migrated.stderr);

    // Another product's checkout and invoice on the same Stripe account.
    let foreign = [
        event(
            "evt_shop_checkout",
            "checkout.session.completed",
            now(),
            &json!({"id": "cs_shop", "object": "checkout.session", "client_reference_id": "order-1234",
                    "payment_status": "paid", "payment_intent": "pi_shop", "amount_total": 4200, "currency": "eur",
                    "customer_details": {"email": personal[4], "name": personal[5]}}),
        ),
        event(
            "evt_shop_invoice",
            "invoice.paid",
            now(),
            &json!({"id": "in_shop", "object": "invoice", "amount_paid": 4200, "currency": "eur",
                    "customer_email": personal[4], "customer_name": personal[5],
                    "parent": {"subscription_details": {"subscription": "sub_shop", "metadata": {"order": "1234"}}},
                    "payments": {"data": [{"payment": {"payment_intent": "pi_shop_2"}}]}}),
        ),
    ];
    for body in &foreign {
        assert_eq!(stack.deliver(0, body).await.status, StatusCode::OK);
    }
    stack.work_through(5).await;
    // Replay works from the projection alone.
    let replayed = stack
        .run(&["admin", "events", "replay", "--id", "evt_old_checkout"])
        .await;
    assert!(replayed.status.success(), "replay: {}", replayed.stderr);

    let stored: Vec<(String, String, String)> =
        sqlx::query_as("SELECT id, status, payload::text FROM provider_events ORDER BY id")
            .fetch_all(&stack.pool)
            .await
            .expect("events");
    assert_eq!(stored.len(), 4);
    for (id, status, payload) in &stored {
        for value in personal {
            assert!(!payload.contains(value), "{id} still holds {value:?}");
        }
        if id.starts_with("evt_shop") {
            assert_eq!(status, "ignored", "{id} is another product's");
        }
    }
    assert_eq!(
        stack
            .count("SELECT count(*) FROM provider_events WHERE projection_version = 0")
            .await,
        0
    );
    assert_eq!(
        stack.count("SELECT count(*) FROM readers").await,
        0,
        "another product's buyer became a reader"
    );
    assert_eq!(
        stack
            .count("SELECT count(*) FROM contributions WHERE status = 'paid'")
            .await,
        1,
        "the old checkout is applied from its projection"
    );
    stack.finish().await;
}
