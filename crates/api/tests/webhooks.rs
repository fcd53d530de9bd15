//! `POST /v1/webhooks/stripe` and the worker that applies events: hand-signed events, and the
//! simulator delivering (duplicated, shuffled) to the app.

use std::time::Duration;

use kopilka_test_support::{TestApp, eventually, send};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

fn signed(app: &TestApp, body: &str, at: i64) -> reqwest::RequestBuilder {
    let signature =
        kopilka_stripe::sign(app.stripe.simulator.webhook_secret(), at, body.as_bytes());
    app.api
        .request(Method::POST, "/v1/webhooks/stripe")
        .header("content-type", "application/json")
        .header("stripe-signature", signature)
        .body(body.to_owned())
}

fn now() -> i64 {
    time::OffsetDateTime::now_utc().unix_timestamp()
}

fn event(id: &str, kind: &str, object: &Value) -> String {
    json!({"id": id, "object": "event", "type": kind, "created": now(), "livemode": false,
           "api_version": "2026-09-30.endive", "data": {"object": object}})
    .to_string()
}

async fn stored(app: &TestApp) -> i64 {
    sqlx::query_scalar("SELECT count(*) FROM provider_events")
        .fetch_one(&app.pool)
        .await
        .unwrap()
}

#[tokio::test]
async fn a_signed_event_is_stored_once_and_forgeries_are_refused() {
    let app = TestApp::spawn().await;
    let body = event(
        "evt_test_1",
        "brand.new_type",
        &json!({"id": "x_1", "object": "novelty"}),
    );
    let first = send(signed(&app, &body, now())).await;
    assert_eq!(first.status, StatusCode::OK);
    assert_eq!(first.json(), json!({"received": true, "duplicate": false}));
    let again = send(signed(&app, &body, now())).await;
    assert_eq!(again.json(), json!({"received": true, "duplicate": true}));
    assert_eq!(stored(&app).await, 1);

    let forged = body.replace("x_1", "x_2");
    let cases = [
        (
            app.api
                .request(Method::POST, "/v1/webhooks/stripe")
                .body(forged.clone()),
            "signature_missing",
        ),
        (
            signed(&app, &body, now()).body(forged.clone()),
            "signature_mismatch",
        ),
        (signed(&app, &forged, now() - 301), "signature_stale"),
        (signed(&app, &forged, now() + 301), "signature_stale"),
        (
            app.api
                .request(Method::POST, "/v1/webhooks/stripe")
                .header("stripe-signature", "nonsense")
                .body(forged.clone()),
            "signature_malformed",
        ),
    ];
    for (request, code) in cases {
        assert_eq!(send(request).await.error_code(400), code);
    }
    assert_eq!(stored(&app).await, 1, "nothing forged was stored");
    let ignored = eventually(
        "the unknown type to be marked ignored",
        Duration::from_secs(20),
        || async {
            let status: String =
                sqlx::query_scalar("SELECT status FROM provider_events WHERE id = 'evt_test_1'")
                    .fetch_one(&app.pool)
                    .await
                    .unwrap();
            (status == "ignored").then_some(status)
        },
    )
    .await;
    assert_eq!(ignored, "ignored");
}

#[tokio::test]
async fn five_identical_deliveries_at_once_store_one_event() {
    let app = TestApp::spawn().await;
    let body = event(
        "evt_concurrent",
        "customer.created",
        &json!({"id": "cus_1", "object": "customer"}),
    );
    let deliveries = (0..5).map(|_| send(signed(&app, &body, now())));
    let answers = futures_join(deliveries).await;
    assert!(answers.iter().all(|a| a.status == StatusCode::OK));
    assert_eq!(
        answers
            .iter()
            .filter(|a| a.json()["duplicate"] == false)
            .count(),
        1
    );
    assert_eq!(stored(&app).await, 1);
    let jobs: i64 = sqlx::query_scalar("SELECT count(*) FROM jobs WHERE kind <> 'retention.sweep'")
        .fetch_one(&app.pool)
        .await
        .unwrap();
    assert_eq!(jobs, 1);
}

/// Runs the deliveries concurrently.
async fn futures_join<F: std::future::Future>(futures: impl Iterator<Item = F>) -> Vec<F::Output> {
    futures_util::future::join_all(futures).await
}

#[tokio::test]
async fn events_larger_than_the_json_limit_are_accepted_here() {
    let app = TestApp::spawn().await;
    let padding = "x".repeat(200 * 1024);
    let body = event(
        "evt_large",
        "invoice.finalized",
        &json!({"id": "in_1", "object": "invoice", "description": padding}),
    );
    assert!(body.len() > app.settings.server.body_limit_bytes);
    assert_eq!(
        send(signed(&app, &body, now())).await.status,
        StatusCode::OK
    );
    let too_large = app
        .api
        .post_raw(
            "/v1/checkout",
            "application/json",
            vec![b' '; app.settings.server.body_limit_bytes + 1],
        )
        .await;
    assert_eq!(
        too_large.error_code(413),
        "payload_too_large",
        "other routes keep the small limit"
    );
}

async fn ledger_sum(app: &TestApp) -> (i64, i64) {
    sqlx::query_as("SELECT count(*) FILTER (WHERE kind = 'payment'), coalesce(sum(amount_minor) FILTER (WHERE kind <> 'fee'), 0)::bigint FROM ledger_entries")
        .fetch_one(&app.pool)
        .await
        .unwrap()
}

async fn pending_events(app: &TestApp) -> i64 {
    sqlx::query_scalar(
        "SELECT count(*) FROM provider_events WHERE status NOT IN ('processed', 'ignored')",
    )
    .fetch_one(&app.pool)
    .await
    .unwrap()
}

#[tokio::test]
async fn the_simulators_deliveries_duplicated_and_shuffled_end_in_the_right_ledger() {
    let app = TestApp::spawn().await;
    app.deliver_webhooks_here(Some((2, true))).await;
    app.checkout_and("once", 2500, "usd", "pay").await;
    app.checkout_and("month", 500, "usd", "pay").await;
    eventually(
        "both payments in the ledger",
        Duration::from_secs(30),
        || async {
            (ledger_sum(&app).await == (2, 3000) && pending_events(&app).await == 0).then_some(())
        },
    )
    .await;
    let statuses: Vec<String> = sqlx::query_scalar("SELECT status FROM contributions")
        .fetch_all(&app.pool)
        .await
        .unwrap();
    assert_eq!(statuses, ["paid", "paid"]);
    let plan: (String, i64) = sqlx::query_as("SELECT status, amount_minor FROM recurring_plans")
        .fetch_one(&app.pool)
        .await
        .unwrap();
    assert_eq!(plan, ("active".to_owned(), 500));

    // A month passes: one renewal, one more ledger row.
    app.sim_control("/_sim/clock/advance", &json!({"seconds": 32 * 86_400}))
        .await;
    eventually(
        "the renewal in the ledger",
        Duration::from_secs(30),
        || async {
            (ledger_sum(&app).await == (3, 3500) && pending_events(&app).await == 0).then_some(())
        },
    )
    .await;

    // The ledger agrees with Stripe's own totals to the cent, each event stored once.
    let totals = app.sim_get("/_sim/totals").await;
    assert_eq!(
        (
            totals["totals"][0]["gross_minor"].as_i64(),
            totals["totals"][0]["payments"].as_i64()
        ),
        (Some(3500), Some(3))
    );
    // Deliveries keep arriving a little longer (three copies each, shuffled): wait until
    // every emitted event is stored; never more rows than events.
    let emitted = app.sim_get("/v1/events?limit=100").await["data"]
        .as_array()
        .unwrap()
        .len();
    eventually(
        "every emitted event stored",
        Duration::from_secs(30),
        || async {
            let stored: i64 = sqlx::query_scalar("SELECT count(*) FROM provider_events")
                .fetch_one(&app.pool)
                .await
                .unwrap();
            let stored = usize::try_from(stored).unwrap();
            assert!(
                stored <= emitted,
                "each event stored once despite three copies"
            );
            (stored == emitted).then_some(())
        },
    )
    .await;
}

/// Runs the worker as if `days` days passed, one day at a time.
async fn work_through(app: &TestApp, days: i64) {
    let start = time::OffsetDateTime::now_utc();
    let worker = kopilka_jobs::Worker::new(app.pool.clone(), &app.settings).unwrap();
    for day in 0..=days {
        kopilka_jobs::run_due(&worker, start + time::Duration::days(day))
            .await
            .unwrap();
    }
}

async fn event_status(app: &TestApp, id: &str) -> String {
    sqlx::query_scalar("SELECT status FROM provider_events WHERE id = $1")
        .bind(id)
        .fetch_one(&app.pool)
        .await
        .unwrap()
}

#[tokio::test]
async fn an_event_waiting_for_its_object_is_retried_then_dead_lettered_and_replayed_after_the_fix()
{
    let app = TestApp::spawn().await;
    // A refund of a payment the ledger does not have yet (created, as refunds are, after
    // the payment it refunds).
    let refund = event(
        "evt_refund_early",
        "refund.created",
        &json!({"id": "re_early", "object": "refund", "amount": 500, "currency": "usd", "status": "succeeded",
                "payment_intent": "pi_later", "created": now() + 60}),
    );
    assert_eq!(
        send(signed(&app, &refund, now())).await.status,
        StatusCode::OK
    );
    work_through(&app, 5).await;
    let attempts: i32 =
        sqlx::query_scalar("SELECT attempts FROM jobs WHERE kind <> 'retention.sweep'")
            .fetch_one(&app.pool)
            .await
            .unwrap();
    assert!(attempts >= 3, "retried while waiting ({attempts} attempts)");
    assert_eq!(event_status(&app, "evt_refund_early").await, "pending");
    // The app's own worker may hold the job's lease at the moment a simulated day runs:
    // keep simulating until the attempts have run out.
    eventually(
        "the dead letter, after the attempts ran out",
        Duration::from_secs(30),
        || async {
            work_through(&app, 30).await;
            (event_status(&app, "evt_refund_early").await == "failed").then_some(())
        },
    )
    .await;

    // The fix: the payment it refunds arrives (a one-off checkout completed).
    let contribution = uuid::Uuid::now_v7();
    sqlx::query("INSERT INTO contributions (id, interval, amount_minor, currency) VALUES ($1, 'once', 500, 'usd')")
        .bind(contribution)
        .execute(&app.pool)
        .await
        .unwrap();
    let completed = event(
        "evt_paid",
        "checkout.session.completed",
        &json!({"id": "cs_1", "object": "checkout.session", "client_reference_id": contribution.to_string(),
                "payment_status": "paid", "payment_intent": "pi_later", "amount_total": 500, "currency": "usd"}),
    );
    assert_eq!(
        send(signed(&app, &completed, now())).await.status,
        StatusCode::OK
    );
    eventually("the payment applied", Duration::from_secs(20), || async {
        (event_status(&app, "evt_paid").await == "processed").then_some(())
    })
    .await;

    assert_eq!(
        kopilka_reconciliation::apply_event(&app.pool, None, "evt_refund_early", false)
            .await
            .unwrap(),
        kopilka_reconciliation::Outcome::Processed
    );
    assert_eq!(event_status(&app, "evt_refund_early").await, "processed");
    let status: String = sqlx::query_scalar("SELECT status FROM contributions WHERE id = $1")
        .bind(contribution)
        .fetch_one(&app.pool)
        .await
        .unwrap();
    assert_eq!(status, "refunded");
    assert_eq!(ledger_sum(&app).await, (1, 0));
}

#[tokio::test]
async fn a_subscriptions_events_in_any_order_end_in_the_same_state() {
    // The events of one plan: the checkout, the subscription created (incomplete) and
    // updated (active), the first invoice paid, then cancelled at period end.
    let contribution = uuid::Uuid::now_v7();
    let base = now() - 1000;
    let sub = |status: &str, cancel: bool| {
        json!({"id": "sub_1", "object": "subscription", "customer": "cus_1", "status": status,
               "cancel_at_period_end": cancel, "metadata": {"contribution_id": contribution.to_string()},
               "items": {"data": [{"current_period_end": base + 30 * 86_400,
                   "price": {"unit_amount": 700, "currency": "eur", "recurring": {"interval": "month"}}}]}})
    };
    let events: Vec<(String, i64, &str, Value)> = vec![
        (
            "evt_a".into(),
            base,
            "checkout.session.completed",
            json!({"id": "cs_1", "object": "checkout.session", "client_reference_id": contribution.to_string(), "payment_status": "paid", "subscription": "sub_1", "customer": "cus_1", "amount_total": 700, "currency": "eur"}),
        ),
        (
            "evt_b".into(),
            base,
            "customer.subscription.created",
            sub("incomplete", false),
        ),
        (
            "evt_c".into(),
            base,
            "customer.subscription.updated",
            sub("active", false),
        ),
        (
            "evt_d".into(),
            base + 1,
            "invoice.paid",
            json!({"id": "in_1", "object": "invoice", "amount_paid": 700, "currency": "eur", "parent": {"subscription_details": {"subscription": "sub_1", "metadata": {"contribution_id": contribution.to_string()}}}}),
        ),
        (
            "evt_e".into(),
            base + 50,
            "customer.subscription.updated",
            sub("active", true),
        ),
        (
            "evt_f".into(),
            base + 1,
            "invoice_payment.paid",
            json!({"id": "inpay_1", "object": "invoice_payment", "invoice": "in_1", "amount_paid": 700,
                   "currency": "eur", "status": "paid", "payment": {"type": "payment_intent", "payment_intent": "pi_1"}}),
        ),
    ];
    let orders: [[usize; 6]; 5] = [
        [0, 1, 2, 3, 4, 5],
        [5, 4, 3, 2, 1, 0],
        [3, 2, 5, 4, 0, 1],
        [2, 4, 1, 3, 0, 5],
        [5, 0, 3, 1, 2, 4],
    ];
    let mut finals = Vec::new();
    for order in orders {
        let app = TestApp::spawn().await;
        sqlx::query("INSERT INTO contributions (id, interval, amount_minor, currency) VALUES ($1, 'month', 700, 'eur')")
            .bind(contribution)
            .execute(&app.pool)
            .await
            .unwrap();
        for index in order {
            let (id, created, kind, object) = &events[index];
            let body = json!({"id": id, "object": "event", "type": kind, "created": created, "livemode": false,
                              "api_version": kopilka_stripe::api_version(), "data": {"object": object}}).to_string();
            assert_eq!(
                send(signed(&app, &body, now())).await.status,
                StatusCode::OK
            );
        }
        work_through(&app, 3).await;
        let plan: (String, bool, i64) = sqlx::query_as(
            "SELECT status, cancel_at_period_end, amount_minor FROM recurring_plans",
        )
        .fetch_one(&app.pool)
        .await
        .unwrap();
        let contribution_status: String = sqlx::query_scalar("SELECT status FROM contributions")
            .fetch_one(&app.pool)
            .await
            .unwrap();
        finals.push((plan, contribution_status, ledger_sum(&app).await));
    }
    let expected = (
        ("active".to_owned(), true, 700),
        "paid".to_owned(),
        (1, 700),
    );
    for (order, state) in orders.iter().zip(&finals) {
        assert_eq!(state, &expected, "order {order:?}");
    }
}

#[tokio::test]
async fn with_postgres_down_a_delivery_gets_503_so_stripe_retries() {
    let cluster = tokio::task::spawn_blocking(kopilka_store::PrivatePostgres::start_throwaway)
        .await
        .unwrap()
        .unwrap();
    let app = TestApp::spawn_on(cluster.url("postgres"), |_| {}).await;
    kopilka_store::migrate(&app.pool).await.unwrap();
    let cluster = tokio::task::spawn_blocking(move || {
        cluster.stop();
        cluster
    })
    .await
    .unwrap();
    let body = event(
        "evt_while_down",
        "customer.created",
        &json!({"id": "cus_down", "object": "customer"}),
    );
    let refused = send(signed(&app, &body, now())).await;
    assert_eq!(refused.error_code(503), "service_unavailable");

    let cluster = tokio::task::spawn_blocking(move || {
        cluster.start().unwrap();
        cluster
    })
    .await
    .unwrap();
    let retried = eventually("Postgres to come back", Duration::from_secs(30), || async {
        let answer = send(signed(&app, &body, now())).await;
        (answer.status == StatusCode::OK).then_some(answer)
    })
    .await;
    assert_eq!(
        retried.json()["duplicate"],
        false,
        "nothing was stored while it was down"
    );
    drop(app);
    tokio::task::spawn_blocking(move || drop(cluster))
        .await
        .unwrap();
}

#[tokio::test]
async fn a_same_second_event_after_our_own_change_re_reads_the_subscription() {
    let app = TestApp::spawn().await;
    app.deliver_webhooks_here(Some((0, false))).await;
    app.give("same-second@example.org", "month", 500).await;
    let (plan, sub): (uuid::Uuid, String) =
        sqlx::query_as("SELECT id, stripe_subscription_id FROM recurring_plans")
            .fetch_one(&app.pool)
            .await
            .unwrap();
    // From here on, events arrive only as this test sends them.
    app.deliver_webhooks_here(None).await;
    let stripe = app.state.stripe.as_ref().unwrap();
    let changed = kopilka_recurring::change_plan(
        &app.pool,
        stripe,
        plan,
        kopilka_recurring::PlanChange::CancelAtPeriodEnd,
        "same-second-cancel",
    )
    .await
    .unwrap();
    assert!(changed.cancel_at_period_end);
    let watermark: i64 = sqlx::query_scalar("SELECT stripe_watermark FROM recurring_plans")
        .fetch_one(&app.pool)
        .await
        .unwrap();
    // A snapshot from before our change, then the subscription ended at Stripe by someone
    // else (the dashboard) — all reported within the same second as our own change.
    let mut stale = app.sim_get(&format!("/v1/subscriptions/{sub}")).await;
    stale["cancel_at_period_end"] = json!(false);
    let ended = reqwest::Client::new()
        .delete(format!(
            "{}/v1/subscriptions/{sub}",
            app.stripe.simulator.base_url()
        ))
        .bearer_auth(app.stripe.simulator.secret_key())
        .send()
        .await
        .unwrap();
    assert!(ended.status().is_success());
    let body =
        json!({"id": "evt_same_second", "object": "event", "type": "customer.subscription.updated",
        "created": watermark, "livemode": false, "api_version": kopilka_stripe::api_version(),
        "data": {"object": stale}})
        .to_string();
    assert_eq!(
        send(signed(&app, &body, now())).await.status,
        StatusCode::OK
    );
    let pool = app.pool.clone();
    let status = eventually("the event applied", Duration::from_secs(20), || {
        let pool = pool.clone();
        async move {
            let (event, plan): (String, String) = sqlx::query_as(
                "SELECT e.status, p.status FROM provider_events e, recurring_plans p WHERE e.id = 'evt_same_second'",
            )
            .fetch_one(&pool)
            .await
            .ok()?;
            (event == "processed").then_some(plan)
        }
    })
    .await;
    // Neither the stale snapshot nor our own answer: Stripe's state, re-read.
    assert_eq!(status, "canceled");
}

/// Fields whose fixture values stay as they are, so events route as Stripe's would: each is
/// one of Stripe's fixed values, never a person's.
const ROUTING: &[&str] = &[
    "object",
    "currency",
    "status",
    "payment_status",
    "mode",
    "interval",
    "type",
    "usage_type",
    "collection_method",
    "billing_reason",
];

/// Fields a projection keeps by design whose planted marker may therefore be stored: Stripe's
/// ids (the ledger's keys) and Stripe's fixed reasons. Never free text, an address, a name,
/// an IP, a URL or card details.
const KEPT_BY_DESIGN: &[&str] = &[
    "id",
    "customer",
    "payment_intent",
    "subscription",
    "invoice",
    "charge",
    "latest_charge",
    "latest_invoice",
    "fraud_type",
    "balance_transaction",
    "failure_balance_transaction",
    "product",
    "source",
    "reason",
    "failure_reason",
    "cancellation_reason",
    "feedback",
    "reporting_category",
    "behavior",
];

const MARKER_IP: &str = "203.0.113.77";

/// Plants a unique marker in every string or null leaf of `value` (an address-shaped one in
/// address fields, one IP in IP fields), but for [`ROUTING`] fields; records each marker's
/// field name.
fn plant(value: &mut Value, key: &str, markers: &mut Vec<(String, String)>) {
    match value {
        Value::Object(map) => {
            for (field, inner) in map.iter_mut() {
                plant(inner, field, markers);
            }
        }
        Value::Array(items) => {
            for item in items.iter_mut() {
                plant(item, key, markers);
            }
        }
        Value::String(_) | Value::Null if !ROUTING.contains(&key) => {
            if key == "ip" || key.ends_with("_ip") || key.contains("ip_address") {
                *value = Value::String(MARKER_IP.to_owned());
                return;
            }
            let marker = format!("MKR{:06}", markers.len());
            markers.push((marker.clone(), key.to_owned()));
            *value = Value::String(if key == "email" || key.ends_with("_email") {
                format!("{}@example.org", marker.to_lowercase())
            } else {
                marker
            });
        }
        _ => {}
    }
}

/// The object kind `data.object` has for each event type Kopilka handles.
fn kind_of(event_type: &str) -> &'static str {
    match event_type {
        t if t.starts_with("checkout.session.") => "checkout.session",
        t if t.starts_with("payment_intent.") => "payment_intent",
        "refund.created" | "refund.updated" | "charge.refund.updated" | "refund.failed" => "refund",
        "invoice_payment.paid" => "invoice_payment",
        t if t.starts_with("radar.early_fraud_warning.") => "radar.early_fraud_warning",
        "charge.refunded" => "charge",
        t if t.starts_with("charge.dispute.") => "dispute",
        t if t.starts_with("customer.subscription.") => "subscription",
        t if t.starts_with("invoice.") => "invoice",
        other => panic!("a handled type the test does not know: {other}"),
    }
}

/// Each table's rows in a `pg_dump`, by table name.
fn dumped_tables(dump: &str) -> Vec<(String, String)> {
    let mut tables = Vec::new();
    let mut lines = dump.lines();
    while let Some(line) = lines.next() {
        if let Some(rest) = line.strip_prefix("COPY public.") {
            let table = rest
                .split_whitespace()
                .next()
                .unwrap_or_default()
                .to_owned();
            let rows: Vec<&str> = lines.by_ref().take_while(|l| *l != "\\.").collect();
            tables.push((table, rows.join("\n")));
        }
    }
    tables
}

fn markers_in(text: &str) -> Vec<String> {
    let mut found = Vec::new();
    let upper = text.to_uppercase();
    let mut rest = upper.as_str();
    while let Some(at) = rest.find("MKR") {
        let digits: String = rest[at + 3..].chars().take(6).collect();
        if digits.len() == 6 && digits.chars().all(|c| c.is_ascii_digit()) {
            found.push(format!("MKR{digits}"));
        }
        rest = &rest[at + 3..];
    }
    found
}

#[tokio::test]
async fn a_pg_dump_holds_nothing_of_stripes_objects_but_ids_and_the_readers_address() {
    let app = TestApp::spawn().await;
    let fixtures: Value =
        serde_json::from_str(include_str!("fixtures/stripe-fixtures3.json")).unwrap();
    let resources = fixtures["resources"].as_object().unwrap();
    // A contribution of Kopilka's, made without an address: the completed session's address
    // names its reader (the one place an address may land, in `readers`).
    let started = app
        .api
        .post_json(
            "/v1/checkout",
            &json!({"interval": "once", "amount_minor": 500, "currency": "usd"}),
        )
        .await;
    assert_eq!(started.status, StatusCode::CREATED);
    let contribution = started.json()["contribution_id"]
        .as_str()
        .unwrap()
        .to_owned();

    let mut deliveries = Vec::new();
    for kind in kopilka_reconciliation::projection::handled_event_types() {
        deliveries.push((kind.to_owned(), resources[kind_of(kind)].clone()));
    }
    for (name, object) in resources {
        // Every other object Stripe can send, under a type Kopilka does not handle.
        deliveries.push((format!("{name}.updated"), object.clone()));
    }
    let mut markers = Vec::new();
    let mut sent = 0;
    for (n, (kind, mut object)) in deliveries.into_iter().enumerate() {
        let mut previous = object.clone();
        plant(&mut object, "", &mut markers);
        plant(&mut previous, "", &mut markers);
        if kind.starts_with("checkout.session.") {
            object["client_reference_id"] = json!(contribution);
            object["amount_total"] = json!(500);
            object["currency"] = json!("usd");
            object["payment_status"] = json!("paid");
        }
        // Another product's metadata key beside Kopilka's own.
        let note = format!("MKR{:06}", markers.len());
        markers.push((note.clone(), "note".to_owned()));
        object["metadata"] = json!({"contribution_id": contribution, "note": note});
        let mut request = json!({"id": null, "idempotency_key": null});
        plant(&mut request, "request", &mut markers);
        let body = json!({"id": format!("evt_dump_{n}"), "object": "event", "type": kind,
            "created": now(), "livemode": false, "api_version": "2026-09-30.endive",
            "request": request, "pending_webhooks": 1,
            "data": {"object": object, "previous_attributes": previous}})
        .to_string();
        assert_eq!(
            send(signed(&app, &body, now())).await.status,
            StatusCode::OK,
            "{kind}"
        );
        sent += 1;
    }
    assert!(markers.len() > 3_000, "markers planted: {}", markers.len());
    eventually(
        "every event applied once",
        Duration::from_secs(60),
        || async {
            let waiting: i64 =
                sqlx::query_scalar("SELECT count(*) FROM provider_events WHERE attempts = 0")
                    .fetch_one(&app.pool)
                    .await
                    .unwrap();
            (waiting == 0).then_some(())
        },
    )
    .await;
    assert_eq!(stored(&app).await, sent);

    let dump = kopilka_test_support::pg_dump(&app.db.as_ref().unwrap().url);
    assert!(!dump.contains(MARKER_IP), "an IP address was stored");
    let field_of: std::collections::HashMap<&str, &str> = markers
        .iter()
        .map(|(marker, field)| (marker.as_str(), field.as_str()))
        .collect();
    let mut in_readers = 0;
    let mut kept = std::collections::BTreeSet::new();
    for (table, rows) in dumped_tables(&dump) {
        for marker in markers_in(&rows) {
            let field = field_of[marker.as_str()];
            if table == "readers" {
                in_readers += 1;
                continue;
            }
            assert!(
                KEPT_BY_DESIGN.contains(&field),
                "{marker} of field `{field}` was stored in {table}"
            );
            kept.insert(field);
        }
    }
    assert!(
        in_readers >= 1,
        "the completed session's address names a reader"
    );
    assert!(kept.contains("id"), "ids are kept: {kept:?}");
    let rows: Vec<(String, Value)> = sqlx::query_as("SELECT type, payload FROM provider_events")
        .fetch_all(&app.pool)
        .await
        .unwrap();
    for (kind, payload) in rows {
        if !kopilka_reconciliation::projection::is_handled(&kind) {
            assert_eq!(payload, json!({}), "{kind} keeps its envelope only");
        }
    }
}
