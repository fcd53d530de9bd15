use std::time::Duration;

use kopilka_test_support::{TestApp, eventually, fresh_database};
use kopilka_tests::{kopilka, run};
use reqwest::StatusCode;
use secrecy::ExposeSecret;
use serde_json::{Value, json};

async fn admin(url: &str, args: &[&str]) -> String {
    let mut command = kopilka(&[&["admin"], args].concat());
    command.env("KOPILKA_ENV", "test").env("DATABASE_URL", url);
    let out = run(command).await;
    assert!(out.status.success(), "admin {args:?}: {}", out.stderr);
    out.stdout
}

#[tokio::test]
async fn admin_reports_agree_with_stripe_after_real_deliveries() {
    let db = fresh_database().await;
    let url = db.url.expose_secret().to_owned();
    let app = TestApp::spawn_on(db.url.clone(), |_| {}).await;
    let sim = app.stripe.simulator.base_url();
    let http = reqwest::Client::new();
    http.post(format!("{sim}/_sim/delivery"))
        .json(&json!({"webhook_url": format!("http://{}/v1/webhooks/stripe", app.address), "duplicates": 1}))
        .send()
        .await
        .unwrap();
    for (interval, amount) in [("once", 2500), ("month", 500)] {
        let started = app
            .api
            .post_json(
                "/v1/checkout",
                &json!({"interval": interval, "amount_minor": amount, "currency": "usd"}),
            )
            .await;
        assert_eq!(started.status, StatusCode::CREATED);
        let session = started.json()["checkout_url"]
            .as_str()
            .unwrap()
            .rsplit('/')
            .next()
            .unwrap()
            .to_owned();
        http.post(format!("{sim}/_sim/checkout/{session}/pay"))
            .json(&json!({}))
            .send()
            .await
            .unwrap();
    }
    eventually("both payments applied", Duration::from_secs(30), || async {
        let pending: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM stripe_events WHERE status NOT IN ('processed', 'ignored')",
        )
        .fetch_one(&db.pool)
        .await
        .unwrap();
        let payments: i64 = sqlx::query_scalar("SELECT count(*) FROM ledger_entries")
            .fetch_one(&db.pool)
            .await
            .unwrap();
        (pending == 0 && payments == 2).then_some(())
    })
    .await;

    let ours: Value =
        serde_json::from_str(&admin(&url, &["report", "totals", "--format", "json"]).await)
            .unwrap();
    let stripes: Value = reqwest::get(format!("{sim}/_sim/totals"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(ours, stripes, "the ledger agrees with Stripe to the cent");
    let csv = admin(&url, &["report", "totals", "--format", "csv"]).await;
    assert!(
        csv.starts_with(
            "currency,gross_minor,refunded_minor,net_minor,payments\nusd,3000,0,3000,2"
        ),
        "{csv}"
    );

    let plans: Value =
        serde_json::from_str(&admin(&url, &["recurring", "list", "--format", "json"]).await)
            .unwrap();
    assert_eq!(plans.as_array().unwrap().len(), 1);
    assert_eq!(plans[0]["status"], "active");
    assert_eq!(
        (
            plans[0]["interval"].as_str(),
            plans[0]["amount_minor"].as_i64(),
            plans[0]["currency"].as_str()
        ),
        (Some("month"), Some(500), Some("usd"))
    );
    assert!(
        plans[0]["stripe_subscription_id"]
            .as_str()
            .unwrap()
            .starts_with("sub_")
    );

    let mrr: Value =
        serde_json::from_str(&admin(&url, &["report", "mrr", "--format", "json"]).await).unwrap();
    let this_month = mrr["months"].as_array().unwrap().last().unwrap().clone();
    assert_eq!(
        (
            this_month["mrr_minor"].as_i64(),
            this_month["plans"].as_i64()
        ),
        (Some(500), Some(1)),
        "{mrr}"
    );
    assert_eq!(mrr["currency"], "usd");

    let goal: Value =
        serde_json::from_str(&admin(&url, &["report", "goal", "--format", "json"]).await).unwrap();
    assert_eq!(
        goal,
        json!({"currency": "usd", "target_minor": 1_000_000, "current_minor": 3000})
    );

    let events: Value =
        serde_json::from_str(&admin(&url, &["events", "list", "--format", "json"]).await).unwrap();
    let events = events.as_array().unwrap();
    assert!(events.len() > 10);
    assert!(
        events
            .iter()
            .all(|e| e["status"] == "processed" || e["status"] == "ignored"),
        "{events:?}"
    );
    let failed: Value = serde_json::from_str(
        &admin(
            &url,
            &["events", "list", "--status", "failed", "--format", "json"],
        )
        .await,
    )
    .unwrap();
    assert_eq!(failed, json!([]));

    let some = events[0]["id"].as_str().unwrap();
    let replayed: Value = serde_json::from_str(
        &admin(
            &url,
            &["events", "replay", "--id", some, "--format", "json"],
        )
        .await,
    )
    .unwrap();
    assert_eq!(replayed["failed"], 0);
    let by_type: Value = serde_json::from_str(
        &admin(
            &url,
            &[
                "events",
                "replay",
                "--type",
                "checkout.*",
                "--since",
                "2020-01-01",
                "--format",
                "json",
            ],
        )
        .await,
    )
    .unwrap();
    assert_eq!(by_type["failed"], 0);
    assert_eq!(
        by_type["replayed"].as_array().unwrap().len(),
        2,
        "the two checkouts: {by_type}"
    );

    // A failed event (as the dead letter leaves it) is completed by `replay --failed`.
    sqlx::query(
        "UPDATE stripe_events SET status = 'failed', last_error = 'was waiting' WHERE id = $1",
    )
    .bind(some)
    .execute(&db.pool)
    .await
    .unwrap();
    let failed_now: Value = serde_json::from_str(
        &admin(
            &url,
            &["events", "list", "--status", "failed", "--format", "json"],
        )
        .await,
    )
    .unwrap();
    assert_eq!(failed_now.as_array().unwrap().len(), 1);
    let completed: Value = serde_json::from_str(
        &admin(&url, &["events", "replay", "--failed", "--format", "json"]).await,
    )
    .unwrap();
    assert_eq!(
        (
            completed["failed"].as_i64(),
            completed["replayed"].as_array().unwrap().len()
        ),
        (Some(0), 1),
        "{completed}"
    );
    let failed_after: Value = serde_json::from_str(
        &admin(
            &url,
            &["events", "list", "--status", "failed", "--format", "json"],
        )
        .await,
    )
    .unwrap();
    assert_eq!(failed_after, json!([]));

    let again: Value =
        serde_json::from_str(&admin(&url, &["report", "totals", "--format", "json"]).await)
            .unwrap();
    assert_eq!(again, stripes, "replaying changes nothing");
}

#[tokio::test]
async fn reconcile_finds_what_deliveries_missed_and_apply_repairs_it() {
    let db = fresh_database().await;
    let url = db.url.expose_secret().to_owned();
    let app = TestApp::spawn_on(db.url.clone(), |_| {}).await;
    let sim = app.stripe.simulator.base_url();
    let http = reqwest::Client::new();
    let deliver = |to: String| {
        let http = http.clone();
        let sim = sim.clone();
        async move {
            http.post(format!("{sim}/_sim/delivery"))
                .json(&json!({"webhook_url": to}))
                .send()
                .await
                .unwrap();
        }
    };
    let reconcile = |extra: &'static [&'static str]| {
        let url = url.clone();
        let sim = sim.clone();
        let key = app.stripe.simulator.secret_key().to_owned();
        async move {
            let mut command = kopilka(
                &[
                    &[
                        "admin",
                        "reconcile",
                        "--since",
                        "2020-01-01",
                        "--format",
                        "json",
                    ],
                    extra,
                ]
                .concat(),
            );
            command
                .env("KOPILKA_ENV", "test")
                .env("DATABASE_URL", &url)
                .env("KOPILKA__STRIPE__SECRET_KEY", key)
                .env("KOPILKA__STRIPE__API_BASE", &sim);
            let out = run(command).await;
            assert!(out.status.success(), "{}", out.stderr);
            serde_json::from_str::<Value>(&out.stdout).unwrap()
        }
    };
    let pay = |interval: &'static str, amount: i64| {
        let app = &app;
        let http = http.clone();
        let sim = sim.clone();
        async move {
            let started = app
                .api
                .post_json(
                    "/v1/checkout",
                    &json!({"interval": interval, "amount_minor": amount, "currency": "usd"}),
                )
                .await;
            let session = started.json()["checkout_url"]
                .as_str()
                .unwrap()
                .rsplit('/')
                .next()
                .unwrap()
                .to_owned();
            http.post(format!("{sim}/_sim/checkout/{session}/pay"))
                .json(&json!({}))
                .send()
                .await
                .unwrap();
            session
        }
    };
    let settled = || async {
        eventually("the inbox to settle", Duration::from_secs(30), || async {
            let pending: i64 = sqlx::query_scalar(
                "SELECT count(*) FROM stripe_events WHERE status NOT IN ('processed', 'ignored')",
            )
            .fetch_one(&db.pool)
            .await
            .unwrap();
            (pending == 0).then_some(())
        })
        .await;
    };

    deliver(format!("http://{}/v1/webhooks/stripe", app.address)).await;
    pay("month", 500).await;
    eventually("the plan's payment", Duration::from_secs(30), || async {
        let payments: i64 = sqlx::query_scalar("SELECT count(*) FROM ledger_entries")
            .fetch_one(&db.pool)
            .await
            .unwrap();
        (payments == 1).then_some(())
    })
    .await;
    settled().await;
    let clean = reconcile(&[]).await;
    assert_eq!(
        clean["drift"],
        json!([]),
        "a clean month reports nothing: {clean}"
    );
    assert!(clean["checked"].as_i64().unwrap() > 5);

    // Deliveries stop: a gift is paid and the plan renews, and Kopilka hears nothing.
    deliver(String::new()).await;
    pay("once", 2500).await;
    http.post(format!("{sim}/_sim/clock/advance"))
        .json(&json!({"seconds": 32 * 86_400}))
        .send()
        .await
        .unwrap();
    let drifted = reconcile(&[]).await;
    let kinds: Vec<&str> = drifted["drift"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["kind"].as_str().unwrap())
        .collect();
    assert!(
        kinds.iter().filter(|k| **k == "missing_in_ledger").count() >= 2,
        "{drifted}"
    );
    assert!(kinds.contains(&"undelivered_event"), "{drifted}");

    let repaired = reconcile(&["--apply"]).await;
    settled().await;
    let again = reconcile(&[]).await;
    assert_eq!(again["drift"], json!([]), "after --apply: {repaired}");
    let ours: Value =
        serde_json::from_str(&admin(&url, &["report", "totals", "--format", "json"]).await)
            .unwrap();
    let stripes: Value = reqwest::get(format!("{sim}/_sim/totals"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(ours, stripes);
}

#[tokio::test]
async fn a_simulated_month_with_duplicates_and_shuffling_matches_stripe_to_the_cent() {
    let db = fresh_database().await;
    let url = db.url.expose_secret().to_owned();
    let app = TestApp::spawn_on(db.url.clone(), |_| {}).await;
    let sim = app.stripe.simulator.base_url();
    let key = app.stripe.simulator.secret_key().to_owned();
    let http = reqwest::Client::new();
    http.post(format!("{sim}/_sim/delivery"))
        .json(&json!({"webhook_url": format!("http://{}/v1/webhooks/stripe", app.address), "duplicates": 2, "shuffle": true}))
        .send()
        .await
        .unwrap();
    let checkout =
        |interval: &'static str, amount: i64, currency: &'static str, action: &'static str| {
            let (app, http, sim) = (&app, http.clone(), sim.clone());
            async move {
                let started = app
                .api
                .post_json(
                    "/v1/checkout",
                    &json!({"interval": interval, "amount_minor": amount, "currency": currency}),
                )
                .await;
                assert_eq!(started.status, StatusCode::CREATED);
                let session = started.json()["checkout_url"]
                    .as_str()
                    .unwrap()
                    .rsplit('/')
                    .next()
                    .unwrap()
                    .to_owned();
                http.post(format!("{sim}/_sim/checkout/{session}/{action}"))
                    .json(&json!({}))
                    .send()
                    .await
                    .unwrap();
                let session: Value = http
                    .get(format!("{sim}/v1/checkout/sessions/{session}"))
                    .bearer_auth(app.stripe.simulator.secret_key())
                    .send()
                    .await
                    .unwrap()
                    .json()
                    .await
                    .unwrap();
                session
            }
        };

    let refunded = checkout("once", 5000, "usd", "pay").await;
    checkout("once", 3000, "jpy", "pay-then-dispute").await;
    checkout("once", 1000, "usd", "decline").await;
    checkout("month", 700, "eur", "pay").await;
    let declining = checkout("month", 500, "usd", "pay").await;
    checkout("year", 6000, "usd", "pay").await;

    // Two partial refunds of one gift, through the client (idempotent on our ids).
    let stripe = app.state.stripe.as_ref().unwrap();
    let pi = refunded["payment_intent"].as_str().unwrap();
    stripe
        .refund(pi, "month-refund-1", Some(1000))
        .await
        .unwrap();
    stripe
        .refund(pi, "month-refund-2", Some(1500))
        .await
        .unwrap();
    // The dispute is lost.
    let disputes: Value = http
        .get(format!("{sim}/v1/disputes"))
        .bearer_auth(&key)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let dispute = disputes["data"][0]["id"].as_str().unwrap();
    http.post(format!("{sim}/v1/disputes/{dispute}/close"))
        .bearer_auth(&key)
        .send()
        .await
        .unwrap();
    // One plan's card starts declining; a month passes.
    let sub = declining["subscription"].as_str().unwrap();
    http.post(format!("{sim}/_sim/subscriptions/{sub}/card"))
        .json(&json!({"outcome": "decline"}))
        .send()
        .await
        .unwrap();
    http.post(format!("{sim}/_sim/clock/advance"))
        .json(&json!({"seconds": 32 * 86_400}))
        .send()
        .await
        .unwrap();

    let stripes: Value = reqwest::get(format!("{sim}/_sim/totals"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    eventually(
        "the ledger to match Stripe",
        Duration::from_secs(60),
        || async {
            let pending: i64 = sqlx::query_scalar(
                "SELECT count(*) FROM stripe_events WHERE status NOT IN ('processed', 'ignored')",
            )
            .fetch_one(&db.pool)
            .await
            .unwrap();
            let ours: Value =
                serde_json::from_str(&admin(&url, &["report", "totals", "--format", "json"]).await)
                    .unwrap();
            (pending == 0 && ours == stripes).then_some(())
        },
    )
    .await;

    let plans: Value =
        serde_json::from_str(&admin(&url, &["recurring", "list", "--format", "json"]).await)
            .unwrap();
    let past_due = plans
        .as_array()
        .unwrap()
        .iter()
        .filter(|p| p["status"] == "past_due")
        .count();
    assert_eq!(past_due, 1, "{plans}");
    let mut command = kopilka(&[
        "admin",
        "reconcile",
        "--since",
        "2020-01-01",
        "--format",
        "json",
    ]);
    command
        .env("KOPILKA_ENV", "test")
        .env("DATABASE_URL", &url)
        .env("KOPILKA__STRIPE__SECRET_KEY", &key)
        .env("KOPILKA__STRIPE__API_BASE", &sim);
    let out = run(command).await;
    assert!(out.status.success(), "{}", out.stderr);
    let report: Value = serde_json::from_str(&out.stdout).unwrap();
    assert_eq!(report["drift"], json!([]), "{report}");

    let mut command = kopilka(&[
        "admin",
        "report",
        "payouts",
        "--since",
        "2020-01-01",
        "--format",
        "json",
    ]);
    command
        .env("KOPILKA_ENV", "test")
        .env("DATABASE_URL", &url)
        .env("KOPILKA__STRIPE__SECRET_KEY", &key)
        .env("KOPILKA__STRIPE__API_BASE", &sim);
    let out = run(command).await;
    assert!(out.status.success(), "{}", out.stderr);
    let payouts: Value = serde_json::from_str(&out.stdout).unwrap();
    let payouts = payouts["payouts"].as_array().unwrap();
    assert!(!payouts.is_empty(), "the month's balance was paid out");
    for payout in payouts {
        assert_eq!(payout["problems"], json!([]), "{payout}");
        assert_eq!(payout["in_ledger"], payout["transactions"], "{payout}");
    }
}

#[tokio::test]
async fn reconcile_reports_each_kind_of_injected_drift() {
    let db = fresh_database().await;
    let url = db.url.expose_secret().to_owned();
    let app = TestApp::spawn_on(db.url.clone(), |_| {}).await;
    let sim = app.stripe.simulator.base_url();
    let key = app.stripe.simulator.secret_key().to_owned();
    let http = reqwest::Client::new();
    let pay = |interval: &'static str| {
        let (app, http, sim) = (&app, http.clone(), sim.clone());
        async move {
            let started = app
                .api
                .post_json(
                    "/v1/checkout",
                    &json!({"interval": interval, "amount_minor": 900, "currency": "usd"}),
                )
                .await;
            let session = started.json()["checkout_url"]
                .as_str()
                .unwrap()
                .rsplit('/')
                .next()
                .unwrap()
                .to_owned();
            http.post(format!("{sim}/_sim/checkout/{session}/pay"))
                .json(&json!({}))
                .send()
                .await
                .unwrap();
            let session: Value = http
                .get(format!("{sim}/v1/checkout/sessions/{session}"))
                .bearer_auth(app.stripe.simulator.secret_key())
                .send()
                .await
                .unwrap()
                .json()
                .await
                .unwrap();
            session
        }
    };
    // Deliveries on: a monthly plan lands cleanly.
    http.post(format!("{sim}/_sim/delivery"))
        .json(&json!({"webhook_url": format!("http://{}/v1/webhooks/stripe", app.address)}))
        .send()
        .await
        .unwrap();
    let plan = pay("month").await;
    eventually("the plan to land", Duration::from_secs(30), || async {
        let plans: i64 =
            sqlx::query_scalar("SELECT count(*) FROM recurring_plans WHERE status = 'active'")
                .fetch_one(&db.pool)
                .await
                .unwrap();
        let pending: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM stripe_events WHERE status NOT IN ('processed', 'ignored')",
        )
        .fetch_one(&db.pool)
        .await
        .unwrap();
        (plans == 1 && pending == 0).then_some(())
    })
    .await;
    // Deliveries off: a gift Kopilka never hears of.
    http.post(format!("{sim}/_sim/delivery"))
        .json(&json!({"webhook_url": ""}))
        .send()
        .await
        .unwrap();
    let missed = pay("once").await;
    // Injected: a second unheard gift recorded with the wrong amount, a plan status that
    // differs from Stripe's, and a payment Stripe never saw.
    let wrong = pay("once").await;
    let contribution = uuid::Uuid::now_v7();
    sqlx::query("INSERT INTO contributions (id, interval, amount_minor, currency) VALUES ($1, 'once', 900, 'usd')").bind(contribution).execute(&db.pool).await.unwrap();
    for (stripe_id, amount) in [
        (
            wrong["payment_intent"].as_str().unwrap().to_owned(),
            901_i64,
        ),
        ("pi_nobody_knows".to_owned(), 900),
    ] {
        sqlx::query("INSERT INTO ledger_entries (id, kind, stripe_id, payment_intent_id, contribution_id, amount_minor, currency, occurred_at) VALUES ($1, 'payment', $2, $2, $3, $4, 'usd', now())")
            .bind(uuid::Uuid::now_v7())
            .bind(&stripe_id)
            .bind(contribution)
            .bind(amount)
            .execute(&db.pool)
            .await
            .unwrap();
    }
    sqlx::query("UPDATE recurring_plans SET status = 'canceled' WHERE stripe_subscription_id = $1")
        .bind(plan["subscription"].as_str().unwrap())
        .execute(&db.pool)
        .await
        .unwrap();

    let mut command = kopilka(&[
        "admin",
        "reconcile",
        "--since",
        "2020-01-01",
        "--format",
        "json",
    ]);
    command
        .env("KOPILKA_ENV", "test")
        .env("DATABASE_URL", &url)
        .env("KOPILKA__STRIPE__SECRET_KEY", &key)
        .env("KOPILKA__STRIPE__API_BASE", &sim);
    let out = run(command).await;
    assert!(out.status.success(), "{}", out.stderr);
    let report: Value = serde_json::from_str(&out.stdout).unwrap();
    let found: Vec<(String, String)> = report["drift"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| {
            (
                d["kind"].as_str().unwrap().to_owned(),
                d["object"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    let has = |kind: &str, object: &str| found.iter().any(|(k, o)| k == kind && o == object);
    assert!(
        has(
            "missing_in_ledger",
            missed["payment_intent"].as_str().unwrap()
        ),
        "{report}"
    );
    assert!(
        has("amount_mismatch", wrong["payment_intent"].as_str().unwrap()),
        "{report}"
    );
    assert!(
        has("status_mismatch", plan["subscription"].as_str().unwrap()),
        "{report}"
    );
    assert!(has("unknown_to_stripe", "pi_nobody_knows"), "{report}");
    assert!(
        found.iter().any(|(k, _)| k == "undelivered_event"),
        "{report}"
    );
}
