//! Supporter passes and pass codes on the crypto rail, end to end on the BTCPay simulator: a
//! pass for a reader who gave an address, renewed; codes bought anonymously and as gifts,
//! shown once, redeemed once on another device, revoked; every refusal.

use std::time::Duration;

use kopilka_test_support::{TestApp, eventually, send};
use reqwest::Method;
use serde_json::{Value, json};
use time::OffsetDateTime;

/// A crypto pass checkout; its answer.
async fn buy(app: &TestApp, body: Value) -> Value {
    let mut body = body;
    body["interval"] = json!("once");
    body["currency"] = json!("usd");
    body["rail"] = json!("crypto");
    let started = app.api.post_json("/v1/checkout", &body).await;
    assert_eq!(
        started.status.as_u16(),
        201,
        "{}",
        String::from_utf8_lossy(&started.body)
    );
    started.json()
}

fn invoice_of(answer: &Value) -> String {
    answer["checkout_url"]
        .as_str()
        .and_then(|url| url.rsplit('/').next())
        .unwrap()
        .to_owned()
}

/// Pays the answer's invoice and waits until the contribution is paid.
async fn pay(app: &TestApp, answer: &Value) {
    let invoice = invoice_of(answer);
    app.btcpay_control(&format!("/_sim/invoices/{invoice}/pay"), &json!({}))
        .await;
    let id = answer["contribution_id"].as_str().unwrap().to_owned();
    eventually("the pass paid", Duration::from_secs(20), || async {
        let status: String =
            sqlx::query_scalar("SELECT status FROM contributions WHERE id = $1::uuid")
                .bind(&id)
                .fetch_one(&app.pool)
                .await
                .unwrap();
        let pending: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM passes WHERE contribution_id = $1::uuid AND status = 'pending'",
        )
        .bind(&id)
        .fetch_one(&app.pool)
        .await
        .unwrap();
        (status == "paid" && pending == 0).then_some(())
    })
    .await;
}

/// `POST {path} {code}` from a fresh client (no cookies: another device).
async fn with_code(app: &TestApp, path: &str, code: &str) -> kopilka_test_support::ApiResponse {
    send(
        reqwest::Client::new()
            .post(format!("http://{}{path}", app.address))
            .json(&json!({"code": code})),
    )
    .await
}

#[tokio::test]
async fn a_pass_makes_its_buyer_a_supporter_until_it_ends_and_a_renewal_adds_on() {
    let app = TestApp::spawn().await;
    app.deliver_btcpay_webhooks_here().await;
    let email = "pass-holder@example.org";
    // A year at the monthly minimum ($2.00): $24.00.
    let first = buy(
        &app,
        json!({"amount_minor": 2_400, "pass_months": 12, "email": email}),
    )
    .await;
    assert!(first.get("pass_codes").is_none(), "{first}");
    pay(&app, &first).await;
    let renewal = buy(
        &app,
        json!({"amount_minor": 200, "pass_months": 1, "email": email}),
    )
    .await;
    pay(&app, &renewal).await;

    let passes: Vec<(i16, OffsetDateTime, OffsetDateTime)> = sqlx::query_as(
        "SELECT months, starts_at, ends_at FROM passes WHERE status = 'active' ORDER BY starts_at",
    )
    .fetch_all(&app.pool)
    .await
    .unwrap();
    assert_eq!(passes.len(), 2, "{passes:?}");
    assert_eq!(
        passes[1].1, passes[0].2,
        "the renewal starts when the year ends"
    );
    let year = passes[0].2 - passes[0].1;
    assert!((365..=366).contains(&year.whole_days()), "{year}");

    // Signed in on any device, the reader's token says so, until the renewal ends.
    let session = app.signed_in_by_link(email).await;
    let entitlements = send(
        app.api
            .request(Method::GET, "/v1/entitlements")
            .bearer_auth(&session),
    )
    .await
    .json();
    let claims = &entitlements["claims"];
    assert_eq!(claims["supporter"], true, "{entitlements}");
    assert_eq!(claims["tier"], "pass");
    assert_eq!(claims["paid_through"], passes[1].2.unix_timestamp());
}

#[tokio::test]
async fn gift_codes_are_shown_once_stored_as_digests_and_each_redeems_once_on_any_device() {
    let app = TestApp::spawn().await;
    app.deliver_btcpay_webhooks_here().await;
    // Five years to give away: 5 × 12 × $2.00.
    let bought = buy(
        &app,
        json!({"amount_minor": 12_000, "pass_months": 12, "pass_codes": 5}),
    )
    .await;
    let codes: Vec<String> = bought["pass_codes"]
        .as_array()
        .expect("the codes, once")
        .iter()
        .map(|c| c.as_str().unwrap().to_owned())
        .collect();
    assert_eq!(codes.len(), 5);
    // Only keyed digests are stored: no code appears anywhere in the passes or the stored
    // checkout answers.
    let stored: String =
        sqlx::query_scalar("SELECT coalesce(string_agg(p::text, ' '), '') FROM passes p")
            .fetch_one(&app.pool)
            .await
            .unwrap();
    for code in &codes {
        let random = code.replace('-', "");
        assert!(!stored.contains(&random[2..]), "{code} stored in {stored}");
    }

    // Before the payment settles a code does nothing.
    let early = with_code(&app, "/v1/passes/redeem", &codes[0]).await;
    assert_eq!(early.error_code(409), "code_not_yet_paid");
    pay(&app, &bought).await;

    // Redeemed on another device: the supporter token, for the pass, not for anyone.
    let redeemed = with_code(&app, "/v1/passes/redeem", &codes[0]).await;
    assert_eq!(redeemed.status.as_u16(), 200, "{:?}", redeemed.json());
    let answer = redeemed.json();
    assert_eq!(answer["claims"]["supporter"], true);
    assert_eq!(answer["claims"]["tier"], "pass");
    assert!(
        answer["claims"]["sub"]
            .as_str()
            .unwrap()
            .starts_with("pass_")
    );
    let text = answer.to_string();
    assert!(
        !text.contains(bought["contribution_id"].as_str().unwrap()),
        "the redemption names the buyer's contribution: {text}"
    );
    let holder = answer["holder_token"]
        .as_str()
        .expect("a holder token")
        .to_owned();
    let cookies: Vec<&str> = redeemed
        .headers
        .get_all("set-cookie")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .collect();
    assert!(
        cookies
            .iter()
            .any(|c| c.starts_with("__Host-kopilka_pass=")),
        "{cookies:?}"
    );
    let paid_through = answer["claims"]["paid_through"].as_i64().unwrap();
    let days = (paid_through - OffsetDateTime::now_utc().unix_timestamp()) / 86_400;
    assert!((364..=366).contains(&days), "{days}");

    // Once only.
    let again = with_code(&app, "/v1/passes/redeem", &codes[0]).await;
    assert_eq!(again.error_code(409), "code_already_redeemed");
    // The holder renews their token with the holder token alone.
    let renewed = send(
        reqwest::Client::new()
            .get(format!("http://{}/v1/passes/entitlements", app.address))
            .bearer_auth(&holder),
    )
    .await;
    assert_eq!(renewed.status.as_u16(), 200);
    assert_eq!(renewed.json()["claims"]["paid_through"], paid_through);
    let stranger = send(
        reqwest::Client::new()
            .get(format!("http://{}/v1/passes/entitlements", app.address))
            .bearer_auth("not-a-holder"),
    )
    .await;
    assert_eq!(stranger.error_code(401), "invalid_pass");

    // The buyer revokes a code they fear was seen: it is dead.
    let revoked = with_code(&app, "/v1/passes/revoke", &codes[1]).await;
    assert_eq!(revoked.status.as_u16(), 200);
    let dead = with_code(&app, "/v1/passes/redeem", &codes[1]).await;
    assert_eq!(dead.error_code(410), "code_revoked");
    // A redeemed code cannot be revoked from under its holder.
    let late = with_code(&app, "/v1/passes/revoke", &codes[0]).await;
    assert_eq!(late.error_code(409), "code_already_redeemed");
    // Typed sloppily, a code still works.
    let sloppy = codes[2].to_lowercase().replace('-', " ");
    let typed = with_code(&app, "/v1/passes/redeem", &sloppy).await;
    assert_eq!(typed.status.as_u16(), 200);
    let wrong = with_code(
        &app,
        "/v1/passes/redeem",
        "KP-00000-00000-00000-00000-00000",
    )
    .await;
    assert_eq!(wrong.error_code(422), "unknown_code");
}

#[tokio::test]
async fn a_pass_bought_without_an_address_is_a_code_and_an_expired_invoice_voids_it() {
    let app = TestApp::spawn().await;
    app.deliver_btcpay_webhooks_here().await;
    let bought = buy(&app, json!({"amount_minor": 200, "pass_months": 1})).await;
    let codes = bought["pass_codes"].as_array().expect("a code");
    assert_eq!(codes.len(), 1);
    let code = codes[0].as_str().unwrap().to_owned();
    let invoice = invoice_of(&bought);
    app.btcpay_control(&format!("/_sim/invoices/{invoice}/expire"), &json!({}))
        .await;
    eventually("the pass voided", Duration::from_secs(20), || async {
        let status: String = sqlx::query_scalar("SELECT status FROM passes")
            .fetch_one(&app.pool)
            .await
            .unwrap();
        (status == "void").then_some(())
    })
    .await;
    let dead = with_code(&app, "/v1/passes/redeem", &code).await;
    assert_eq!(dead.error_code(410), "code_revoked");
}

#[tokio::test]
async fn passes_are_refused_off_the_crypto_rail_and_out_of_bounds_and_guessing_is_throttled() {
    let app = TestApp::spawn().await;
    for (body, code) in [
        (
            json!({"interval": "once", "amount_minor": 2_400, "currency": "usd", "pass_months": 12}),
            "pass_not_on_rail",
        ),
        (
            json!({"interval": "once", "amount_minor": 2_400, "currency": "usd", "rail": "crypto", "pass_months": 7}),
            "invalid_pass_months",
        ),
        (
            json!({"interval": "once", "amount_minor": 2_400, "currency": "usd", "rail": "crypto", "pass_months": 12, "pass_codes": 0}),
            "invalid_pass_codes",
        ),
        (
            json!({"interval": "once", "amount_minor": 200_000, "currency": "usd", "rail": "crypto", "pass_months": 1, "pass_codes": 21}),
            "invalid_pass_codes",
        ),
        (
            json!({"interval": "once", "amount_minor": 2_399, "currency": "usd", "rail": "crypto", "pass_months": 12}),
            "amount_below_minimum",
        ),
        (
            json!({"interval": "once", "amount_minor": 2_400, "currency": "usd", "rail": "crypto", "pass_codes": 2}),
            "invalid_pass_codes",
        ),
    ] {
        let refused = app.api.post_json("/v1/checkout", &body).await;
        assert_eq!(refused.error_code(422), code, "{body}");
    }
    let stored: i64 = sqlx::query_scalar("SELECT count(*) FROM contributions")
        .fetch_one(&app.pool)
        .await
        .unwrap();
    assert_eq!(stored, 0);

    // Guessing codes backs off like guessing passwords.
    let mut throttled = None;
    for attempt in 0..12 {
        let guess = app
            .api
            .post_json(
                "/v1/passes/redeem",
                &json!({"code": format!("KP-{attempt:05}-00000-00000-00000-00000")}),
            )
            .await;
        if guess.status.as_u16() == 429 {
            throttled = Some((attempt, guess));
            break;
        }
        assert_eq!(guess.error_code(422), "unknown_code");
    }
    let (attempt, guess) = throttled.expect("guessing is throttled");
    assert!(attempt >= 5, "the first five are free: {attempt}");
    assert_eq!(guess.error_code(429), "too_many_attempts");
    assert!(guess.headers.contains_key("retry-after"));
}

#[tokio::test]
async fn a_retried_checkout_gets_fresh_codes_until_it_is_paid_and_never_the_same_twice() {
    let app = TestApp::spawn().await;
    app.deliver_btcpay_webhooks_here().await;
    let body = json!({"interval": "once", "amount_minor": 400, "currency": "usd",
                      "rail": "crypto", "pass_months": 1, "pass_codes": 2});
    let post = || {
        send(
            app.api
                .request(Method::POST, "/v1/checkout")
                .header("idempotency-key", "passes-retry-1")
                .json(&body),
        )
    };
    let first = post().await.json();
    let retried = post().await.json();
    assert_eq!(first["contribution_id"], retried["contribution_id"]);
    let (old, new) = (&first["pass_codes"], &retried["pass_codes"]);
    assert_eq!(new.as_array().map(Vec::len), Some(2), "{retried}");
    assert_ne!(old, new, "codes are never shown twice");
    pay(&app, &first).await;
    // The first answer's codes died with the retry; the retry's work.
    let dead = with_code(&app, "/v1/passes/redeem", old[0].as_str().unwrap()).await;
    assert_eq!(dead.error_code(422), "unknown_code");
    let live = with_code(&app, "/v1/passes/redeem", new[0].as_str().unwrap()).await;
    assert_eq!(live.status.as_u16(), 200);
    // Once paid, a replay shows no codes at all.
    let after = post().await.json();
    assert!(after.get("pass_codes").is_none(), "{after}");
    assert_eq!(after["contribution_id"], first["contribution_id"]);
}

#[tokio::test]
async fn a_pass_counts_in_the_goal_and_mrr_an_nth_a_month_and_a_gift_in_full() {
    let app = TestApp::spawn().await;
    app.deliver_btcpay_webhooks_here().await;
    // A year for $24.00 counts $2.00 a month; a one-off $10.00 crypto gift counts in full.
    let year = buy(
        &app,
        json!({"amount_minor": 2_400, "pass_months": 12, "email": "goal@example.org"}),
    )
    .await;
    pay(&app, &year).await;
    let gift = buy(&app, json!({"amount_minor": 1_000})).await;
    pay(&app, &gift).await;
    let now = OffsetDateTime::now_utc();
    let mut conn = app.pool.acquire().await.unwrap();
    let figure = kopilka_recurring::goal::compute(&mut conn, &app.settings.offer, now)
        .await
        .unwrap();
    assert_eq!(figure.current_minor, 200 + 1_000, "{figure:?}");
    let months = kopilka_recurring::mrr::mrr_by_month(
        &mut conn,
        &app.settings.offer,
        now - time::Duration::days(31),
        now,
    )
    .await
    .unwrap();
    let this = months.last().unwrap();
    assert_eq!(
        (this.mrr_minor, this.plans, this.pass_mrr_minor, this.passes),
        (0, 0, 200, 1),
        "{months:?}"
    );
    assert_eq!(months[0].passes, 0, "not before it was bought: {months:?}");
}

#[tokio::test]
async fn a_holder_with_an_address_is_told_before_the_pass_ends_once_and_not_after_renewing() {
    let app = TestApp::spawn().await;
    app.deliver_btcpay_webhooks_here().await;
    let email = "ending@example.org";
    let month = buy(
        &app,
        json!({"amount_minor": 200, "pass_months": 1, "email": email}),
    )
    .await;
    pay(&app, &month).await;
    let ends_at: OffsetDateTime = sqlx::query_scalar("SELECT ends_at FROM passes")
        .fetch_one(&app.pool)
        .await
        .unwrap();
    let notices = || {
        app.emails()
            .iter()
            .map(|raw| kopilka_test_support::ReceivedEmail::parse(raw))
            .filter(|m| m.to == email && m.subject.contains("pass") && m.subject.contains("ends"))
            .count()
    };
    // A worker whose clock is three days before the end sends the notice, once.
    let worker = kopilka_jobs::Worker::new(app.pool.clone(), &app.settings).unwrap();
    let three_days_before = ends_at - time::Duration::days(3);
    kopilka_jobs::run_due(&worker, three_days_before)
        .await
        .unwrap();
    kopilka_jobs::run_due(&worker, three_days_before)
        .await
        .unwrap();
    assert_eq!(notices(), 1);
    let notice = app
        .emails()
        .iter()
        .map(|raw| kopilka_test_support::ReceivedEmail::parse(raw))
        .find(|m| m.to == email && m.subject.contains("ends"))
        .unwrap();
    assert!(
        notice.subject.contains(&ends_at.date().to_string()),
        "{}",
        notice.subject
    );

    // Renewed: the next notice waits for the new end.
    let renewal = buy(
        &app,
        json!({"amount_minor": 200, "pass_months": 1, "email": email}),
    )
    .await;
    pay(&app, &renewal).await;
    kopilka_jobs::run_due(&worker, three_days_before + time::Duration::days(1))
        .await
        .unwrap();
    assert_eq!(notices(), 1, "nothing new before the renewal's end nears");
}

#[tokio::test]
async fn a_pass_holders_export_shows_the_pass_and_erasure_unties_it() {
    let app = TestApp::spawn().await;
    app.deliver_btcpay_webhooks_here().await;
    let email = "export-pass@example.org";
    let bought = buy(
        &app,
        json!({"amount_minor": 600, "pass_months": 3, "email": email}),
    )
    .await;
    pay(&app, &bought).await;
    let session = app.signed_in_by_link(email).await;
    let export = send(
        app.api
            .request(Method::GET, "/v1/me/export")
            .bearer_auth(&session),
    )
    .await
    .json();
    let passes = export["passes"].as_array().expect("the passes");
    assert_eq!(passes.len(), 1, "{export}");
    assert_eq!(
        (
            &passes[0]["months"],
            &passes[0]["status"],
            &passes[0]["held"],
            &passes[0]["code"]
        ),
        (&json!(3), &json!("active"), &json!(true), &json!(false))
    );
    let erased = send(
        app.api
            .request(Method::DELETE, "/v1/me")
            .bearer_auth(&session),
    )
    .await;
    assert_eq!(erased.status.as_u16(), 200);
    let holders: i64 =
        sqlx::query_scalar("SELECT count(*) FROM passes WHERE reader_id IS NOT NULL")
            .fetch_one(&app.pool)
            .await
            .unwrap();
    assert_eq!(holders, 0, "the pass is tied to no one after erasure");
}

#[tokio::test]
async fn a_late_payment_the_operator_accepts_brings_its_codes_back() {
    let app = TestApp::spawn().await;
    app.deliver_btcpay_webhooks_here().await;
    let bought = buy(&app, json!({"amount_minor": 200, "pass_months": 1})).await;
    let code = bought["pass_codes"][0].as_str().unwrap().to_owned();
    let invoice = invoice_of(&bought);
    app.btcpay_control(&format!("/_sim/invoices/{invoice}/pay-late"), &json!({}))
        .await;
    eventually("the pass voided", Duration::from_secs(20), || async {
        let status: String = sqlx::query_scalar("SELECT status FROM passes")
            .fetch_one(&app.pool)
            .await
            .unwrap();
        (status == "void").then_some(())
    })
    .await;
    assert_eq!(
        with_code(&app, "/v1/passes/redeem", &code)
            .await
            .error_code(410),
        "code_revoked"
    );
    // The operator accepts the late payment: the code works.
    app.btcpay_mark(&invoice, "Settled").await;
    eventually("the pass paid", Duration::from_secs(20), || async {
        let status: String = sqlx::query_scalar("SELECT status FROM passes")
            .fetch_one(&app.pool)
            .await
            .unwrap();
        (status == "active").then_some(())
    })
    .await;
    let redeemed = with_code(&app, "/v1/passes/redeem", &code).await;
    assert_eq!(redeemed.status.as_u16(), 200);
}

#[tokio::test]
async fn a_pass_checkout_btcpay_refuses_leaves_nothing_and_paid_codes_are_never_reissued() {
    let app = TestApp::spawn().await;
    app.deliver_btcpay_webhooks_here().await;
    // BTCPay refuses the invoice: a clear 502, no contribution, no pass.
    app.btcpay_control("/_sim/faults", &json!({"count": 1, "status": 400}))
        .await;
    let refused = app
        .api
        .post_json(
            "/v1/checkout",
            &json!({"interval": "once", "amount_minor": 400, "currency": "usd",
                    "rail": "crypto", "pass_months": 1, "pass_codes": 2}),
        )
        .await;
    assert_eq!(refused.error_code(502), "payment_provider_error");
    for table in ["contributions", "passes"] {
        let rows: i64 =
            sqlx::query_scalar(sqlx::AssertSqlSafe(format!("SELECT count(*) FROM {table}")))
                .fetch_one(&app.pool)
                .await
                .unwrap();
        assert_eq!(rows, 0, "{table}");
    }

    // Paid (not yet confirmed) before a retry of the same key: the codes stay as they were.
    let body = json!({"interval": "once", "amount_minor": 200, "currency": "usd",
                      "rail": "crypto", "pass_months": 1, "pass_codes": 1});
    let post = || {
        send(
            app.api
                .request(Method::POST, "/v1/checkout")
                .header("idempotency-key", "paid-before-retry")
                .json(&body),
        )
    };
    let first = post().await.json();
    let code = first["pass_codes"][0].as_str().unwrap().to_owned();
    let invoice = invoice_of(&first);
    app.btcpay_control(
        &format!("/_sim/invoices/{invoice}/pay-unconfirmed"),
        &json!({}),
    )
    .await;
    eventually("the payment seen", Duration::from_secs(20), || async {
        let paid: Option<i64> = sqlx::query_scalar("SELECT paid_minor FROM contributions")
            .fetch_one(&app.pool)
            .await
            .unwrap();
        paid.map(|_| ())
    })
    .await;
    let retried = post().await.json();
    assert!(retried.get("pass_codes").is_none(), "{retried}");
    app.btcpay_control(&format!("/_sim/invoices/{invoice}/confirm"), &json!({}))
        .await;
    pay_settled(&app, &first).await;
    let redeemed = with_code(&app, "/v1/passes/redeem", &code).await;
    assert_eq!(redeemed.status.as_u16(), 200, "the first code still works");
}

/// Waits until the answer's contribution is paid and its passes are no longer pending.
async fn pay_settled(app: &TestApp, answer: &Value) {
    let id = answer["contribution_id"].as_str().unwrap().to_owned();
    eventually("settled", Duration::from_secs(20), || async {
        let status: String =
            sqlx::query_scalar("SELECT status FROM contributions WHERE id = $1::uuid")
                .bind(&id)
                .fetch_one(&app.pool)
                .await
                .unwrap();
        (status == "paid").then_some(())
    })
    .await;
}
