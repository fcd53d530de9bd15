//! `GET /v1/offer` and `POST /v1/checkout` against a real Postgres and the Stripe simulator.

use std::time::Duration;

use kopilka_store::PrivatePostgres;
use kopilka_test_support::{TestApp, eventually, send};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

async fn checkout(
    app: &TestApp,
    body: Value,
    key: Option<&str>,
) -> kopilka_test_support::ApiResponse {
    let mut request = app.api.request(Method::POST, "/v1/checkout").json(&body);
    if let Some(key) = key {
        request = request.header("idempotency-key", key);
    }
    send(request).await
}

async fn contributions(app: &TestApp) -> Vec<(uuid::Uuid, String, String, Option<String>)> {
    sqlx::query_as("SELECT id, interval, status, stripe_checkout_session_id FROM contributions ORDER BY created_at")
        .fetch_all(&app.pool)
        .await
        .unwrap()
}

#[tokio::test]
async fn the_offer_follows_currency_and_country() {
    let app = TestApp::spawn().await;
    let default = app.api.get("/v1/offer").await;
    assert_eq!(default.status, StatusCode::OK);
    let offer = default.json();
    assert_eq!(offer["currency"], "usd");
    assert_eq!(offer["default_interval"], "month");
    assert_eq!(
        offer["intervals"]["month"]["minimum_minor"], 200,
        "support us monthly from just $2"
    );
    assert_eq!(offer["goal"]["target_minor"], 1_000_000);
    assert_eq!(offer["goal"]["currency"], "usd");

    assert_eq!(
        app.api.get("/v1/offer?country=DE").await.json()["currency"],
        "eur"
    );
    assert_eq!(
        app.api.get("/v1/offer?country=de").await.json()["currency"],
        "eur"
    );
    assert_eq!(
        app.api.get("/v1/offer?country=BR").await.json()["currency"],
        "usd",
        "unmapped countries get the default"
    );
    let yen = app
        .api
        .get("/v1/offer?currency=JPY&country=DE")
        .await
        .json();
    assert_eq!(
        yen["currency"], "jpy",
        "an explicit currency wins over the country"
    );
    assert_eq!(
        yen["intervals"]["once"]["presets"],
        json!([1000, 3000, 5000])
    );

    assert_eq!(
        app.api.get("/v1/offer?currency=xyz").await.error_code(422),
        "unknown_currency"
    );
    assert_eq!(
        app.api.get("/v1/offer?currency=chf").await.error_code(422),
        "currency_not_offered"
    );
}

#[tokio::test]
async fn the_offer_answers_from_memory_while_postgres_is_down() {
    let cluster = tokio::task::spawn_blocking(PrivatePostgres::start_throwaway)
        .await
        .unwrap()
        .unwrap();
    let app = TestApp::spawn_on(cluster.url("postgres"), |_| {}).await;
    kopilka_store::migrate(&app.pool).await.unwrap();
    app.state.goal.nudge();
    let figure = eventually(
        "the goal to be computed",
        Duration::from_secs(20),
        || async { app.api.get("/v1/offer").await.json()["goal"]["current_minor"].as_i64() },
    )
    .await;
    assert_eq!(figure, 0);

    let cluster = tokio::task::spawn_blocking(move || {
        cluster.stop();
        cluster
    })
    .await
    .unwrap();
    assert_eq!(
        app.api.readyz().await.status,
        StatusCode::SERVICE_UNAVAILABLE,
        "Postgres is really down"
    );
    for _ in 0..20 {
        let offer = app.api.get("/v1/offer?country=GB").await;
        assert_eq!(offer.status, StatusCode::OK);
        assert_eq!(
            offer.json()["goal"]["current_minor"],
            0,
            "the cached figure"
        );
    }
    drop(app);
    tokio::task::spawn_blocking(move || drop(cluster))
        .await
        .unwrap();
}

#[tokio::test]
async fn checkouts_start_once_monthly_and_annual_in_usd_and_yen() {
    let app = TestApp::spawn().await;
    for (interval, amount, currency, mode) in [
        ("once", 2500, "usd", "payment"),
        ("month", 500, "usd", "subscription"),
        ("year", 5000, "usd", "subscription"),
        ("once", 3000, "jpy", "payment"),
        ("month", 500, "JPY", "subscription"),
    ] {
        let response = checkout(&app, json!({"interval": interval, "amount_minor": amount, "currency": currency, "email": "reader@example.org"}), None).await;
        assert_eq!(
            response.status,
            StatusCode::CREATED,
            "{interval} {currency}: {}",
            String::from_utf8_lossy(&response.body)
        );
        let body = response.json();
        let contribution = body["contribution_id"].as_str().unwrap().to_owned();
        let url = body["checkout_url"].as_str().unwrap();
        let session_id = url.rsplit('/').next().unwrap();
        let session = app
            .sim_get(&format!("/v1/checkout/sessions/{session_id}"))
            .await;
        assert_eq!(session["mode"], mode);
        assert_eq!(session["amount_total"], amount);
        assert_eq!(session["currency"], currency.to_lowercase());
        assert_eq!(session["client_reference_id"], contribution.as_str());
        assert_eq!(
            session["metadata"]["contribution_id"],
            contribution.as_str()
        );
        assert_eq!(session["customer_email"], "reader@example.org");
        // Stripe sends the reader back through Kopilka's return route, whose signed
        // reference names the contribution; no id is spelled out for the page to see.
        let success = session["success_url"].as_str().unwrap();
        assert!(
            success.contains("/v1/checkout/return?ref=") && !success.contains(&contribution),
            "{success}"
        );
    }
    let rows = contributions(&app).await;
    assert_eq!(rows.len(), 5);
    assert!(
        rows.iter()
            .all(|(_, _, status, session)| status == "pending" && session.is_some())
    );
}

#[tokio::test]
async fn an_idempotency_key_makes_retries_safe_and_refuses_another_body() {
    let app = TestApp::spawn().await;
    let body = json!({"interval": "month", "amount_minor": 700, "currency": "eur"});
    let first = checkout(&app, body.clone(), Some("widget-7f3a")).await;
    let again = checkout(&app, body.clone(), Some("widget-7f3a")).await;
    assert_eq!(first.status, StatusCode::CREATED);
    assert_eq!(again.status, StatusCode::CREATED);
    assert_eq!(first.json(), again.json(), "the same answer");
    assert_eq!(
        contributions(&app).await.len(),
        1,
        "nothing new was created"
    );

    let other = checkout(
        &app,
        json!({"interval": "month", "amount_minor": 900, "currency": "eur"}),
        Some("widget-7f3a"),
    )
    .await;
    assert_eq!(other.error_code(409), "idempotency_key_reused");
    assert_eq!(contributions(&app).await.len(), 1);

    let bad_key = checkout(&app, body, Some("has spaces")).await;
    assert_eq!(bad_key.error_code(400), "invalid_idempotency_key");
}

#[tokio::test]
async fn refused_checkouts_say_why_and_create_nothing() {
    let app = TestApp::spawn_with(|settings| {
        settings.offer.return_origins = vec!["https://news.example.org".into()];
    })
    .await;
    for (body, code) in [
        (
            json!({"interval": "month", "amount_minor": 199, "currency": "usd"}),
            "amount_below_minimum",
        ),
        (
            json!({"interval": "once", "amount_minor": 1_000_001, "currency": "usd"}),
            "amount_above_maximum",
        ),
        (
            json!({"interval": "once", "amount_minor": 0, "currency": "usd"}),
            "amount_below_minimum",
        ),
        (
            json!({"interval": "once", "amount_minor": -500, "currency": "usd"}),
            "amount_below_minimum",
        ),
        (
            json!({"interval": "once", "amount_minor": 500, "currency": "zzz"}),
            "unknown_currency",
        ),
        (
            json!({"interval": "once", "amount_minor": 500, "currency": "chf"}),
            "currency_not_offered",
        ),
        (
            json!({"interval": "weekly", "amount_minor": 500, "currency": "usd"}),
            "invalid_interval",
        ),
        (
            json!({"interval": "once", "amount_minor": 500, "currency": "usd", "email": "not-an-address"}),
            "invalid_email",
        ),
        (
            json!({"interval": "once", "amount_minor": 500, "currency": "usd", "return_url": "https://evil.example.com/x"}),
            "return_url_not_allowed",
        ),
        (
            json!({"interval": "once", "amount_minor": 500, "currency": "usd", "return_url": "javascript:alert(1)"}),
            "return_url_not_allowed",
        ),
    ] {
        let response = checkout(&app, body.clone(), None).await;
        assert_eq!(response.error_code(422), code, "{body}");
    }
    let typed_wrong = checkout(
        &app,
        json!({"interval": "once", "amount_minor": 12.5, "currency": "usd"}),
        None,
    )
    .await;
    assert_eq!(typed_wrong.error_code(422), "invalid_body");
    let huge = checkout(&app, json!({"interval": "once", "amount_minor": 9_223_372_036_854_775_807_i64, "currency": "usd"}), None).await;
    assert_eq!(huge.error_code(422), "amount_above_maximum");
    assert!(contributions(&app).await.is_empty(), "nothing was created");

    let allowed = checkout(&app, json!({"interval": "once", "amount_minor": 500, "currency": "usd", "return_url": "https://news.example.org/story/42"}), None).await;
    assert_eq!(allowed.status, StatusCode::CREATED);
}

#[tokio::test]
async fn stripe_unavailable_is_a_503_and_a_retry_with_the_key_reuses_the_contribution() {
    let app = TestApp::spawn_with(|settings| {
        settings.stripe.api_base = Some("http://127.0.0.1:9".parse().unwrap());
    })
    .await;
    let body = json!({"interval": "once", "amount_minor": 1500, "currency": "usd"});
    let first = checkout(&app, body.clone(), Some("retry-me")).await;
    assert_eq!(first.error_code(503), "payment_provider_unavailable");
    assert!(first.headers.get("retry-after").is_some());
    let second = checkout(&app, body, Some("retry-me")).await;
    assert_eq!(second.error_code(503), "payment_provider_unavailable");
    let rows = contributions(&app).await;
    assert_eq!(rows.len(), 1, "the retry reused the pending contribution");
    assert_eq!(rows[0].2, "pending");
    assert!(rows[0].3.is_none(), "no session was created");
}

#[tokio::test]
async fn the_goal_refreshes_when_a_payment_lands() {
    // A schedule of an hour: only the payment's notification can refresh the figure in time.
    let app = TestApp::spawn_with(|settings| settings.offer.goal.refresh_secs = 3600).await;
    eventually("the first figure", Duration::from_secs(20), || async {
        app.api.get("/v1/offer").await.json()["goal"]["current_minor"].as_i64()
    })
    .await;
    let http = reqwest::Client::new();
    http.post(format!("{}/_sim/delivery", app.stripe.simulator.base_url()))
        .json(&json!({"webhook_url": format!("http://{}/v1/webhooks/stripe", app.address)}))
        .send()
        .await
        .unwrap();
    let started = checkout(
        &app,
        json!({"interval": "once", "amount_minor": 4200, "currency": "usd"}),
        None,
    )
    .await;
    let session = started.json()["checkout_url"]
        .as_str()
        .unwrap()
        .rsplit('/')
        .next()
        .unwrap()
        .to_owned();
    http.post(format!(
        "{}/_sim/checkout/{session}/pay",
        app.stripe.simulator.base_url()
    ))
    .json(&json!({}))
    .send()
    .await
    .unwrap();
    let figure = eventually(
        "the goal to include the gift",
        Duration::from_secs(20),
        || async {
            app.api.get("/v1/offer").await.json()["goal"]["current_minor"]
                .as_i64()
                .filter(|f| *f > 0)
        },
    )
    .await;
    assert_eq!(figure, 4200);
}

/// Adds `currency` to the offer with `presets` (minor units) for every interval, from
/// Stripe's minimum to its maximum.
fn offer_currency(settings: &mut kopilka_config::Settings, currency: &str, presets: &[i64]) {
    let currency: kopilka_domain::Currency = currency.parse().unwrap();
    let rules = currency.charge_rules().unwrap();
    let interval = kopilka_config::IntervalOffer {
        presets: presets.to_vec(),
        default_minor: presets[0],
        minimum_minor: rules.minimum_minor,
        maximum_minor: rules.maximum_minor,
    };
    settings.offer.currencies.insert(
        currency,
        kopilka_config::CurrencyOffer {
            default_interval: kopilka_domain::Interval::Once,
            once: interval.clone(),
            month: interval.clone(),
            year: interval,
        },
    );
    settings
        .offer
        .rates
        .insert(currency, "0.01".parse().unwrap());
}

#[tokio::test]
async fn amounts_stripe_would_refuse_are_422_before_stripe() {
    let app = TestApp::spawn_with(|settings| {
        offer_currency(settings, "isk", &[50_000]);
        offer_currency(settings, "ugx", &[500_000]);
        offer_currency(settings, "kwd", &[2_000]);
        offer_currency(settings, "krw", &[5_000]);
    })
    .await;
    for (body, code) in [
        // ISK and UGX: two decimals at Stripe, whole units only.
        (
            json!({"interval": "once", "amount_minor": 50_050, "currency": "isk"}),
            "amount_not_a_valid_multiple",
        ),
        (
            json!({"interval": "once", "amount_minor": 9_900, "currency": "isk"}),
            "amount_below_minimum",
        ),
        (
            json!({"interval": "month", "amount_minor": 500_001, "currency": "ugx"}),
            "amount_not_a_valid_multiple",
        ),
        // Three decimals, last digit 0.
        (
            json!({"interval": "year", "amount_minor": 2_005, "currency": "kwd"}),
            "amount_not_a_valid_multiple",
        ),
        (
            json!({"interval": "once", "amount_minor": 190, "currency": "kwd"}),
            "amount_below_minimum",
        ),
        // KRW: about US$0.50, not 50 won.
        (
            json!({"interval": "once", "amount_minor": 50, "currency": "krw"}),
            "amount_below_minimum",
        ),
        (
            json!({"interval": "once", "amount_minor": 100_000_000, "currency": "krw"}),
            "amount_above_maximum",
        ),
        // A currency Stripe does not charge in cannot be offered (a start-up error).
        (
            json!({"interval": "once", "amount_minor": 50_000, "currency": "rub"}),
            "currency_not_offered",
        ),
    ] {
        let response = checkout(&app, body.clone(), None).await;
        assert_eq!(response.error_code(422), code, "{body}");
    }
    assert!(contributions(&app).await.is_empty(), "nothing was created");
    let sessions = app.sim_get("/v1/checkout/sessions").await;
    assert_eq!(sessions["data"], json!([]), "nothing reached Stripe");

    // The offer speaks Stripe's exponents, and the same amounts in range go through.
    let isk = app.api.get("/v1/offer?currency=isk").await.json();
    assert_eq!(isk["exponent"], 2, "{isk}");
    let allowed = checkout(
        &app,
        json!({"interval": "once", "amount_minor": 50_000, "currency": "isk"}),
        None,
    )
    .await;
    assert_eq!(allowed.status, StatusCode::CREATED);
    let allowed = checkout(
        &app,
        json!({"interval": "once", "amount_minor": 2_010, "currency": "kwd"}),
        None,
    )
    .await;
    assert_eq!(allowed.status, StatusCode::CREATED);
}

/// Stripe's minimum depends on the currency the account settles in: without a GBP bank
/// account, pounds are converted to dollars and £0.30 (about $0.40) is below $0.50. The
/// table's GBP minimum cannot know that; Stripe's refusal is the reader's 422, and nothing
/// stays: no contribution, and the same Idempotency-Key asks again.
#[tokio::test]
async fn an_amount_stripe_refuses_for_a_converted_currency_is_a_422_that_keeps_nothing() {
    let app = TestApp::spawn_with(|settings| {
        let gbp = "gbp".parse().unwrap();
        let offer = settings.offer.currencies.get_mut(&gbp).unwrap();
        offer.once.minimum_minor = 30;
    })
    .await;
    let account = app
        .sim_control("/_sim/account", &json!({"bank_account_currencies": []}))
        .await;
    assert_eq!(account["bank_account_currencies"], json!(["usd"]));
    let body = json!({"interval": "once", "amount_minor": 30, "currency": "gbp"});
    for _ in 0..2 {
        let refused = checkout(&app, body.clone(), Some("widget-gbp-30")).await;
        assert_eq!(
            refused.error_code(422),
            "amount_below_stripe_minimum",
            "{}",
            String::from_utf8_lossy(&refused.body)
        );
        assert_eq!(contributions(&app).await, vec![]);
    }
    // Above what converts to $0.50, the same currency goes through.
    let accepted = checkout(
        &app,
        json!({"interval": "once", "amount_minor": 40, "currency": "gbp"}),
        Some("widget-gbp-40"),
    )
    .await;
    assert_eq!(accepted.status, StatusCode::CREATED);
    assert_eq!(contributions(&app).await.len(), 1);
}

/// Issue #19: checkouts count per client and per typed address; over either, 429
/// `rate_limited` with `Retry-After` and no contribution, while another client still pays.
#[tokio::test]
async fn checkouts_are_limited_per_client_and_per_address() {
    let app = TestApp::spawn_with(|settings| {
        settings.server.client_ip_header = Some("x-forwarded-for".into());
        settings.server.trusted_proxies = vec!["127.0.0.1/32".parse().unwrap()];
        settings.limits.checkout = kopilka_config::RouteLimit {
            per_client: 2,
            per_address: 2,
            global: 100,
            window_secs: 600,
        };
    })
    .await;
    let from = |ip: &'static str, email: Option<&'static str>| {
        let app = &app;
        async move {
            let mut body = json!({"interval": "once", "amount_minor": 1000, "currency": "usd"});
            if let Some(email) = email {
                body["email"] = json!(email);
            }
            send(
                app.api
                    .request(Method::POST, "/v1/checkout")
                    .header("x-forwarded-for", ip)
                    .json(&body),
            )
            .await
        }
    };
    assert_eq!(from("198.51.100.1", None).await.status, StatusCode::CREATED);
    assert_eq!(from("198.51.100.1", None).await.status, StatusCode::CREATED);
    let refused = from("198.51.100.1", None).await;
    assert_eq!(refused.error_code(429), "rate_limited");
    assert!(refused.headers.contains_key("retry-after"));
    assert_eq!(contributions(&app).await.len(), 2, "nothing was created");
    // A spent client is refused before its body is read: even a body that is not JSON
    // hears 429, not 400 (a flood's refusals cost no parsing). Another client's malformed
    // body is still 400.
    let unread = |ip: &'static str| {
        send(
            app.api
                .request(Method::POST, "/v1/checkout")
                .header("x-forwarded-for", ip)
                .header("content-type", "application/json")
                .body("{\"interval\": \"once\", unterminated"),
        )
    };
    assert_eq!(unread("198.51.100.1").await.error_code(429), "rate_limited");
    assert_eq!(
        unread("198.51.100.9").await.error_code(400),
        "malformed_json"
    );
    // One address from many clients.
    let addressed = "card-tester@example.org";
    assert_eq!(
        from("198.51.100.2", Some(addressed)).await.status,
        StatusCode::CREATED
    );
    assert_eq!(
        from("198.51.100.3", Some(addressed)).await.status,
        StatusCode::CREATED
    );
    assert_eq!(
        from("198.51.100.4", Some(addressed)).await.error_code(429),
        "rate_limited"
    );
    assert_eq!(from("198.51.100.5", None).await.status, StatusCode::CREATED);
    assert_eq!(contributions(&app).await.len(), 5);
}

/// Issue #19: admitted public writes in flight are bounded. With one place and a checkout
/// holding it (Stripe answering slowly), a second public write is 503 `busy` with
/// `Retry-After`, counted against no budget and creating nothing; once the first is answered,
/// writes are taken again.
#[tokio::test]
async fn public_writes_in_flight_are_bounded_and_the_next_is_busy() {
    let app = TestApp::spawn_with(|settings| {
        settings.limits.writes_in_flight = 1;
        settings.limits.reminder.per_client = 1;
    })
    .await;
    // This client's one reminder of the window, before the house is full.
    let remind_on = (time::OffsetDateTime::now_utc().date() + time::Duration::days(30)).to_string();
    let first = send(
        app.api
            .request(Method::POST, "/v1/reminders")
            .json(&json!({"email": "first@example.org", "remind_on": remind_on})),
    )
    .await;
    assert!(first.status.is_success(), "{}", first.status);
    app.sim_control("/_sim/faults", &json!({"count": 1, "delay_ms": 1500}))
        .await;
    let slow = {
        let api = app.api.clone();
        tokio::spawn(async move {
            send(
                api.request(Method::POST, "/v1/checkout")
                    .json(&json!({"interval": "once", "amount_minor": 1000, "currency": "usd"})),
            )
            .await
        })
    };
    // The slow checkout holds the place once its contribution exists.
    eventually(
        "the slow checkout in flight",
        Duration::from_secs(10),
        || async { (!contributions(&app).await.is_empty()).then_some(()) },
    )
    .await;
    let busy = checkout(
        &app,
        json!({"interval": "once", "amount_minor": 1000, "currency": "usd"}),
        None,
    )
    .await;
    assert_eq!(busy.error_code(503), "busy");
    assert!(busy.headers.contains_key("retry-after"));
    let link = send(
        app.api
            .request(Method::POST, "/v1/sessions/magic-link")
            .json(&json!({"email": "busy@example.org"})),
    )
    .await;
    assert_eq!(
        link.error_code(503),
        "busy",
        "every public write shares the bound"
    );
    // A request over its budget hears so whether or not the house is full: 429 until its
    // window turns, not "come back in a second".
    let reminder = send(
        app.api
            .request(Method::POST, "/v1/reminders")
            .json(&json!({"email": "busy@example.org", "remind_on": remind_on})),
    )
    .await;
    assert_eq!(reminder.error_code(429), "rate_limited");
    assert_eq!(slow.await.unwrap().status, StatusCode::CREATED);
    assert_eq!(
        contributions(&app).await.len(),
        1,
        "the busy one created nothing"
    );
    let after = checkout(
        &app,
        json!({"interval": "once", "amount_minor": 1000, "currency": "usd"}),
        None,
    )
    .await;
    assert_eq!(after.status, StatusCode::CREATED);
}

/// Issue #19: a flood cannot spend a window's budget in its first second: besides its
/// window, a route admits at most `global × burst_factor / window_secs` a second from
/// everyone (here 2), then 429 `rate_limited` with `Retry-After`.
#[tokio::test]
async fn a_routes_budget_is_spread_over_its_window() {
    let app = TestApp::spawn_with(|settings| {
        settings.limits.burst_factor = 1;
        settings.limits.checkout = kopilka_config::RouteLimit {
            per_client: 1000,
            per_address: 1000,
            global: 1200,
            window_secs: 600,
        };
    })
    .await;
    let now = || {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs()
    };
    let mut admitted_in: std::collections::HashMap<u64, u32> = std::collections::HashMap::new();
    let mut refused = 0;
    let started = std::time::Instant::now();
    while started.elapsed() < Duration::from_secs(3) {
        let before = now();
        let answer = checkout(
            &app,
            json!({"interval": "once", "amount_minor": 1000, "currency": "usd"}),
            None,
        )
        .await;
        let after = now();
        if answer.status == StatusCode::TOO_MANY_REQUESTS {
            assert_eq!(answer.error_code(429), "rate_limited");
            assert_eq!(answer.headers["retry-after"], "1");
            refused += 1;
        } else {
            assert_eq!(answer.status, StatusCode::CREATED);
            if before == after {
                *admitted_in.entry(before).or_default() += 1;
            }
        }
    }
    assert!(refused > 0, "the burst budget never refused");
    for (second, admitted) in admitted_in {
        assert!(admitted <= 2, "{admitted} admitted in second {second}");
    }
}
