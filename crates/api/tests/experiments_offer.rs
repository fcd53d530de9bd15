//! A running ask experiment in the offer: every instance serves it from memory, assigns each
//! visitor (a signed first-party cookie, nothing else) to the same variant every time, and
//! keeps the holdback's share free of asks.

use std::time::Duration;

use kopilka_experiments::{ExperimentSpec, Status, store};
use kopilka_test_support::{TestApp, eventually, send};
use reqwest::Method;
use serde_json::{Value, json};

fn spec() -> ExperimentSpec {
    serde_json::from_value(json!({
        "name": "amounts-q1", "holdback_percent": 30,
        "targeting": {"currencies": ["usd"]},
        "variants": [
            {"key": "control", "control": true},
            {"key": "higher", "presets": {"usd": {"once": [1500, 3000, 6000]}}}
        ]
    }))
    .unwrap()
}

/// The offer, with `cookie` if any; its body and the visitor cookie it sets, if any.
async fn offer(app: &TestApp, query: &str, cookie: Option<&str>) -> (Value, Option<String>) {
    let mut request = app.api.request(Method::GET, &format!("/v1/offer?{query}"));
    if let Some(cookie) = cookie {
        request = request.header("cookie", cookie);
    }
    let answer = send(request).await;
    let visitor = answer
        .headers
        .get_all("set-cookie")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find(|v| v.starts_with("__Host-kopilka_visitor="))
        .and_then(|v| v.split(';').next())
        .map(str::to_owned);
    (answer.json(), visitor)
}

#[tokio::test]
async fn a_visitor_keeps_their_variant_the_holdback_sees_no_ask_and_targeting_holds() {
    let app = TestApp::spawn().await;
    let (before, cookie) = offer(&app, "currency=usd", None).await;
    assert!(before.get("experiment").is_none(), "{before}");
    assert!(cookie.is_none(), "no experiment, no visitor cookie");

    store::create(&app.pool, &app.settings.offer, &spec())
        .await
        .unwrap();
    store::transition(
        &app.pool,
        &app.settings.offer,
        "amounts-q1",
        Status::Running,
    )
    .await
    .unwrap();
    eventually("the experiment served", Duration::from_secs(10), || async {
        let (body, _) = offer(&app, "currency=usd", None).await;
        body.get("experiment").map(|_| ())
    })
    .await;

    // Many visitors: each is assigned; about 30 % see no ask.
    let (mut holdback, mut variants) = (0, std::collections::BTreeMap::new());
    for _ in 0..200 {
        let (body, cookie) = offer(&app, "currency=usd", None).await;
        let cookie = cookie.expect("a visitor cookie for a new visitor");
        assert_eq!(body["experiment"]["name"], "amounts-q1");
        match body["experiment"]["variant"].as_str() {
            None => {
                holdback += 1;
                assert_eq!(
                    (&body["show"], &body["reason"]),
                    (&json!(false), &json!("holdback"))
                );
            }
            Some(variant) => {
                *variants.entry(variant.to_owned()).or_insert(0) += 1;
                assert_eq!(body["show"], true);
                // The same visitor, again and again: the same variant, no new cookie.
                for _ in 0..3 {
                    let (again, set) = offer(&app, "currency=usd", Some(&cookie)).await;
                    assert_eq!(again["experiment"]["variant"], variant);
                    assert!(set.is_none());
                }
            }
        }
    }
    assert!(
        (30..=90).contains(&holdback),
        "{holdback} of 200 in the holdback"
    );
    assert_eq!(variants.len(), 2, "{variants:?}");
    // A forged visitor cookie is a new visitor.
    let (_, fresh) = offer(&app, "currency=usd", Some("__Host-kopilka_visitor=forged")).await;
    assert!(fresh.is_some());
    // Outside the targeting: no experiment.
    let (euro, _) = offer(&app, "currency=eur", None).await;
    assert!(euro.get("experiment").is_none(), "{euro}");

    // Paused: every view is back to the plain ask.
    store::transition(&app.pool, &app.settings.offer, "amounts-q1", Status::Paused)
        .await
        .unwrap();
    eventually(
        "the experiment withdrawn",
        Duration::from_secs(10),
        || async {
            let (body, _) = offer(&app, "currency=usd", None).await;
            body.get("experiment").is_none().then_some(())
        },
    )
    .await;
}

/// Creates and starts `spec` (as JSON), then waits until the app serves it.
async fn run_experiment(app: &TestApp, spec: Value) {
    let spec: ExperimentSpec = serde_json::from_value(spec).unwrap();
    store::create(&app.pool, &app.settings.offer, &spec)
        .await
        .unwrap();
    store::transition(&app.pool, &app.settings.offer, &spec.name, Status::Running)
        .await
        .unwrap();
    let name = spec.name.clone();
    eventually("the experiment served", Duration::from_secs(10), || async {
        let (body, _) = offer(app, "currency=usd", None).await;
        (body["experiment"]["name"] == name.as_str()).then_some(())
    })
    .await;
}

/// A visitor (cookie) assigned to `variant` of the running experiment, and the offer it got.
async fn visitor_in(app: &TestApp, query: &str, variant: &str) -> (String, Value) {
    for _ in 0..200 {
        let (body, cookie) = offer(app, query, None).await;
        if body["experiment"]["variant"] == variant {
            return (cookie.expect("a visitor cookie"), body);
        }
    }
    panic!("no visitor in {variant} after 200 tries");
}

#[tokio::test]
async fn a_variant_changes_the_ask_and_the_gift_is_attributed_to_it_in_the_ledger_and_at_stripe() {
    let app = TestApp::spawn_with(|s| s.experiments.flush_secs = 3_600).await;
    run_experiment(
        &app,
        json!({
            "name": "words-and-amounts",
            "targeting": {"currencies": ["usd"]},
            "variants": [
                {"key": "control", "control": true},
                {"key": "bold", "presets": {"usd": {"once": [1500, 3000, 6000]}},
                 "default_interval": "month", "intervals": ["once", "month"], "goal_line": false,
                 "copy": {"en": {"headline": "Keep us independent", "body": "Readers fund every story."},
                          "ru": {"headline": "Сохраните нас независимыми", "body": "Читатели оплачивают каждый текст."}}}
            ]
        }),
    )
    .await;
    let base = app.settings.offer.currencies[&"usd".parse().unwrap()].clone();

    // The control: the offer as configured.
    let (control_cookie, control) = visitor_in(&app, "currency=usd", "control").await;
    assert_eq!(
        control["intervals"]["once"]["presets"],
        json!(base.once.presets)
    );
    assert_eq!(control["show_intervals"], json!(["once", "month", "year"]));
    assert_eq!(control["show_goal"], true);
    assert!(control.get("copy").is_none(), "{control}");

    // The variant: its presets (the default, not among them, is their middle one), its
    // intervals, its default interval, no goal line, its words in the reader's language.
    let (bold_cookie, bold) = visitor_in(&app, "currency=usd&lang=ru", "bold").await;
    assert_eq!(
        bold["intervals"]["once"]["presets"],
        json!([1500, 3000, 6000])
    );
    assert_eq!(bold["intervals"]["once"]["default_minor"], 3000);
    assert_eq!(
        bold["intervals"]["once"]["minimum_minor"],
        base.once.minimum_minor
    );
    assert_eq!(
        bold["intervals"]["month"]["presets"],
        json!(base.month.presets)
    );
    assert_eq!(bold["show_intervals"], json!(["once", "month"]));
    assert_eq!(bold["default_interval"], "month");
    assert_eq!(bold["show_goal"], false);
    assert_eq!(bold["copy"]["headline"], "Сохраните нас независимыми");
    let (english, _) = offer(&app, "currency=usd&lang=en", Some(&bold_cookie)).await;
    assert_eq!(english["copy"]["headline"], "Keep us independent");
    assert_eq!(english["experiment"]["variant"], "bold");

    // Another instance on the same database assigns the same visitor the same variant.
    let other = TestApp::spawn_on(app.db.as_ref().unwrap().url.clone(), |_| {}).await;
    eventually(
        "the other instance serves it",
        Duration::from_secs(10),
        || async {
            let (body, _) = offer(&other, "currency=usd", Some(&bold_cookie)).await;
            (body["experiment"]["variant"] == "bold").then_some(())
        },
    )
    .await;
    for _ in 0..5 {
        let (body, _) = offer(&other, "currency=usd", Some(&control_cookie)).await;
        assert_eq!(body["experiment"]["variant"], "control");
    }

    // The widget passes the served experiment to checkout: recorded on the contribution and
    // in Stripe's metadata.
    let started = app
        .api
        .post_json(
            "/v1/checkout",
            &json!({"interval": "once", "amount_minor": 3000, "currency": "usd",
                    "experiment": bold["experiment"]}),
        )
        .await;
    assert_eq!(
        started.status,
        201,
        "{}",
        String::from_utf8_lossy(&started.body)
    );
    let contribution = started.json()["contribution_id"]
        .as_str()
        .unwrap()
        .to_owned();
    let (experiment, variant): (String, String) = sqlx::query_as(
        "SELECT e.name, c.experiment_variant FROM contributions c
         JOIN experiments e ON e.id = c.experiment_id WHERE c.id = $1::uuid",
    )
    .bind(&contribution)
    .fetch_one(&app.pool)
    .await
    .unwrap();
    assert_eq!(
        (experiment.as_str(), variant.as_str()),
        ("words-and-amounts", "bold")
    );
    let url = started.json()["checkout_url"].as_str().unwrap().to_owned();
    let session = app
        .sim_get(&format!(
            "/v1/checkout/sessions/{}",
            url.rsplit('/').next().unwrap()
        ))
        .await;
    assert_eq!(session["metadata"]["experiment"], "words-and-amounts");
    assert_eq!(session["metadata"]["experiment_variant"], "bold");
    assert_eq!(
        session["metadata"]["contribution_id"],
        contribution.as_str()
    );

    // Not running (or never was): nothing recorded, and the gift still goes through. A name
    // no experiment could have is refused.
    for (served, expected) in [
        (json!({"name": "no-such", "variant": "bold"}), 201),
        (json!({"name": "words-and-amounts", "variant": "nope"}), 201),
        (json!({"name": "x".repeat(64), "variant": "bold"}), 422),
    ] {
        let answer = app
            .api
            .post_json(
                "/v1/checkout",
                &json!({"interval": "once", "amount_minor": 3000, "currency": "usd", "experiment": served}),
            )
            .await;
        assert_eq!(answer.status.as_u16(), expected, "{served}");
        if expected == 201 {
            let tagged: Option<uuid::Uuid> =
                sqlx::query_scalar("SELECT experiment_id FROM contributions WHERE id = $1::uuid")
                    .bind(answer.json()["contribution_id"].as_str().unwrap())
                    .fetch_one(&app.pool)
                    .await
                    .unwrap();
            assert!(tagged.is_none(), "{served}");
        } else {
            assert_eq!(answer.error_code(422), "invalid_experiment");
        }
    }

    // Views and clicks were counted in memory: one statement adds them up.
    let views_before: i64 =
        sqlx::query_scalar("SELECT coalesce(sum(views), 0)::bigint FROM experiment_counts")
            .fetch_one(&app.pool)
            .await
            .unwrap();
    assert_eq!(views_before, 0, "nothing flushed before the flush");
    let today = time::OffsetDateTime::now_utc().date();
    let rows = app.state.experiments.flush(&app.pool, today).await.unwrap();
    assert!(rows >= 2, "{rows}");
    let counted: Vec<(String, i64, i64)> =
        sqlx::query_as("SELECT variant, views, clicks FROM experiment_counts ORDER BY variant")
            .fetch_all(&app.pool)
            .await
            .unwrap();
    let bold_row = counted.iter().find(|r| r.0 == "bold").unwrap();
    assert!(bold_row.1 >= 2, "{counted:?}");
    assert_eq!(bold_row.2, 1, "one click attributed to bold: {counted:?}");
    assert!(counted.iter().find(|r| r.0 == "control").unwrap().1 >= 1);
    // A second flush with nothing new writes nothing; the other instance's counts add up.
    assert_eq!(
        app.state.experiments.flush(&app.pool, today).await.unwrap(),
        0
    );
    let other_views: u64 = 5;
    other
        .state
        .experiments
        .flush(&other.pool, today)
        .await
        .unwrap();
    let control_views: i64 =
        sqlx::query_scalar("SELECT views FROM experiment_counts WHERE variant = 'control'")
            .fetch_one(&app.pool)
            .await
            .unwrap();
    assert!(
        control_views > i64::try_from(other_views).unwrap(),
        "{control_views}"
    );
}

/// A simulated run of `days` days of `views` views each: every view a new visitor; a view of
/// variant `v` converts on every `every[v]`-th view of that variant (the simulator's checkout
/// then pays; every third conversion of a variant is a monthly plan). Counts are flushed per simulated day
/// and the bandit recomputed after each. Returns the final report.
async fn simulate(
    app: &TestApp,
    name: &str,
    days: i64,
    views: usize,
    every: &[(&str, usize)],
) -> kopilka_experiments::report::Report {
    let mut seen: std::collections::BTreeMap<String, usize> = std::collections::BTreeMap::new();
    let start = time::OffsetDateTime::now_utc().date() - time::Duration::days(days);
    for day in 0..days {
        let mut paying = Vec::new();
        for _ in 0..views {
            let (body, _) = offer(app, "currency=usd", None).await;
            let Some(variant) = body["experiment"]["variant"].as_str() else {
                continue;
            };
            let count = seen.entry(variant.to_owned()).or_default();
            *count += 1;
            let rate = every.iter().find(|(v, _)| *v == variant).unwrap().1;
            if !(*count).is_multiple_of(rate) {
                continue;
            }
            // Each variant's own third conversion is a plan: equal variants, equal values.
            let interval = if (*count / rate).is_multiple_of(3) {
                "month"
            } else {
                "once"
            };
            let started = app
                .api
                .post_json(
                    "/v1/checkout",
                    &json!({"interval": interval, "amount_minor": 1000, "currency": "usd",
                            "experiment": body["experiment"]}),
                )
                .await;
            assert_eq!(
                started.status,
                201,
                "{}",
                String::from_utf8_lossy(&started.body)
            );
            let url = started.json()["checkout_url"].as_str().unwrap().to_owned();
            app.sim_control(
                &format!("/_sim/checkout/{}/pay", url.rsplit('/').next().unwrap()),
                &json!({}),
            )
            .await;
            paying.push(
                started.json()["contribution_id"]
                    .as_str()
                    .unwrap()
                    .to_owned(),
            );
        }
        let pool = app.pool.clone();
        eventually(
            "the day's payments applied",
            Duration::from_secs(60),
            || {
                let (pool, paying) = (pool.clone(), paying.clone());
                async move {
                    let paid: i64 = sqlx::query_scalar(
                        "SELECT count(*) FROM contributions c WHERE c.id::text = ANY($1)
                       AND EXISTS (SELECT 1 FROM ledger_entries l
                                   WHERE l.contribution_id = c.id AND l.kind = 'payment')",
                    )
                    .bind(&paying)
                    .fetch_one(&pool)
                    .await
                    .unwrap();
                    (usize::try_from(paid).unwrap() == paying.len()).then_some(())
                }
            },
        )
        .await;
        app.state
            .experiments
            .flush(&app.pool, start + time::Duration::days(day))
            .await
            .unwrap();
        kopilka_experiments::bandit::update_all(
            &app.pool,
            &app.settings.offer,
            &app.settings.experiments,
        )
        .await
        .unwrap();
        app.state.experiments.reload(&app.pool).await.unwrap();
    }
    kopilka_experiments::report::report(
        &app.pool,
        &app.settings.offer,
        &app.settings.experiments,
        name,
    )
    .await
    .unwrap()
}

#[tokio::test]
async fn over_a_simulated_month_the_bandit_favours_the_variant_that_truly_raises_more() {
    let app = TestApp::spawn_with(|s| {
        s.experiments.flush_secs = 3_600;
        s.experiments.min_views_per_variant = 100;
        s.experiments.floor_percent = 5;
    })
    .await;
    app.deliver_webhooks_here(Some((0, false))).await;
    run_experiment(
        &app,
        json!({
            "name": "bandit-month", "method": "bandit", "holdback_percent": 5,
            "targeting": {"currencies": ["usd"]},
            "variants": [
                {"key": "control", "control": true},
                {"key": "better", "copy": {"en": {"headline": "Fund the next story", "body": "It is yours."},
                                           "ru": {"headline": "Оплатите следующий текст", "body": "Он ваш."}}}
            ]
        }),
    )
    .await;
    // Before the minimum sample: the weights (half each).
    let report = simulate(
        &app,
        "bandit-month",
        30,
        60,
        &[("control", 40), ("better", 10)],
    )
    .await;
    let control = &report.variants[0];
    let better = &report.variants[1];
    assert_eq!(
        (control.key.as_str(), better.key.as_str()),
        ("control", "better")
    );
    assert!(better.payments > control.payments, "{report:#?}");
    assert!(
        better.share_bp > 7_000,
        "the bandit favours it: {report:#?}"
    );
    assert!(control.share_bp >= 500, "the floor holds: {report:#?}");
    assert!(
        better.views > control.views,
        "traffic moved to the better variant: {report:#?}"
    );
    assert!(
        better.probability_to_beat_control.unwrap() > 0.95,
        "{report:#?}"
    );
    assert_eq!(report.winner.as_deref(), Some("better"));
    assert!(better.value_per_1000_low_minor < better.value_per_1000_minor);
    assert!(better.value_per_1000_minor < better.value_per_1000_high_minor);
    // Monthly plans are worth more than their first payment; the holdback saw no ask.
    assert!(
        better.first_year_value_minor > better.revenue_minor,
        "{report:#?}"
    );
    let holdback = report.holdback.as_ref().unwrap();
    assert!(
        holdback.views > 0 && holdback.checkouts == 0,
        "{holdback:?}"
    );
    // The views were counted per simulated day: one row per day and variant at most.
    let days: i64 = sqlx::query_scalar("SELECT count(DISTINCT day) FROM experiment_counts")
        .fetch_one(&app.pool)
        .await
        .unwrap();
    assert_eq!(days, 30);
}

#[tokio::test]
async fn an_a_a_test_claims_no_winner() {
    let app = TestApp::spawn_with(|s| s.experiments.flush_secs = 3_600).await;
    app.deliver_webhooks_here(Some((0, false))).await;
    run_experiment(
        &app,
        json!({
            "name": "a-a", "targeting": {"currencies": ["usd"]},
            "variants": [{"key": "a", "control": true}, {"key": "b"}]
        }),
    )
    .await;
    let report = simulate(&app, "a-a", 10, 100, &[("a", 20), ("b", 20)]).await;
    let beat = report.variants[1].probability_to_beat_control.unwrap();
    assert!((0.05..=0.95).contains(&beat), "{report:#?}");
    assert_eq!(report.winner, None);
    assert_eq!(
        report.variants[0].share_bp, 5_000,
        "a split never moves: {report:#?}"
    );
    assert!(
        report.variants.iter().all(|v| v.payments >= 20),
        "{report:#?}"
    );
}
