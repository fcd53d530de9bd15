//! The crypto rail, end to end on the BTCPay simulator: `POST /v1/checkout` with
//! `"rail": "crypto"` creates a BTCPay invoice for the contribution; the reader pays (or pays
//! partly, late, too much, or the invoice is marked invalid) on the simulator's page; its
//! signed deliveries reach the inbox, and the worker applies the invoice as BTCPay says it
//! stands: a ledger row in fiat only for money that settled, the crypto amount and rate
//! beside it, a flag for the operator where a person must decide.

use std::time::Duration;

use kopilka_test_support::{TestApp, eventually};
use serde_json::{Value, json};
use time::OffsetDateTime;

/// Starts a crypto checkout of `amount_minor` USD (with `email`, if any); returns the
/// contribution and its invoice.
async fn crypto_checkout(
    app: &TestApp,
    amount_minor: i64,
    email: Option<&str>,
) -> (String, String) {
    let mut body = json!({"interval": "once", "amount_minor": amount_minor, "currency": "usd",
                          "rail": "crypto"});
    if let Some(email) = email {
        body["email"] = json!(email);
    }
    let started = app.api.post_json("/v1/checkout", &body).await;
    assert_eq!(
        started.status.as_u16(),
        201,
        "{}",
        String::from_utf8_lossy(&started.body)
    );
    let answer = started.json();
    let url = answer["checkout_url"].as_str().expect("a checkout URL");
    let base = app.btcpay.simulator.base_url();
    assert!(url.starts_with(&format!("{base}/i/")), "{url}");
    let invoice = url.rsplit('/').next().expect("an invoice id").to_owned();
    let contribution = answer["contribution_id"].as_str().unwrap().to_owned();
    (contribution, invoice)
}

/// Does `action` on the invoice, as the simulator's page buttons do.
async fn act(app: &TestApp, invoice: &str, action: &str) {
    app.btcpay_control(&format!("/_sim/invoices/{invoice}/{action}"), &json!({}))
        .await;
}

/// Waits until every BTCPay delivery the simulator made was stored and processed, and
/// every processing job is done.
async fn all_applied(app: &TestApp) {
    eventually(
        "every BTCPay delivery applied",
        Duration::from_secs(20),
        || async {
            // Events, not deliveries: a redelivery carries its first delivery's id.
            let sent: std::collections::HashSet<String> = app
                .btcpay
                .simulator
                .delivery_bodies()
                .iter()
                .filter_map(|body| {
                    let body: Value = serde_json::from_slice(body).ok()?;
                    let id = body["originalDeliveryId"]
                        .as_str()
                        .or(body["deliveryId"].as_str());
                    id.map(str::to_owned)
                })
                .collect();
            let sent = sent.len();
            let (stored, waiting): (i64, i64) = sqlx::query_as(
                "SELECT count(*), count(*) FILTER (WHERE status NOT IN ('processed', 'ignored'))
                 FROM provider_events WHERE provider = 'btcpay'",
            )
            .fetch_one(&app.pool)
            .await
            .unwrap();
            let jobs: i64 = sqlx::query_scalar(
                "SELECT count(*) FROM jobs WHERE kind IN ('btcpay_event', 'mail.receipt')
                                              AND status <> 'done'",
            )
            .fetch_one(&app.pool)
            .await
            .unwrap();
            (sent > 0 && usize::try_from(stored).unwrap() == sent && waiting == 0 && jobs == 0)
                .then_some(())
        },
    )
    .await;
}

/// What the contribution says: status, attention, paid_minor, crypto currency, amount,
/// exponent, rate, and whether it has a reader.
type Row = (
    String,
    Option<String>,
    Option<i64>,
    Option<String>,
    Option<i64>,
    Option<i16>,
    Option<String>,
    bool,
);

async fn contribution(app: &TestApp, id: &str) -> Row {
    sqlx::query_as(
        "SELECT status, attention, paid_minor, crypto_currency, crypto_amount_minor,
                crypto_exponent, crypto_rate::text, reader_id IS NOT NULL
         FROM contributions WHERE id = $1::uuid",
    )
    .bind(id)
    .fetch_one(&app.pool)
    .await
    .unwrap()
}

/// The ledger rows of the invoice: (kind, provider_id, amount_minor, currency).
async fn ledger(app: &TestApp, invoice: &str) -> Vec<(String, String, i64, String)> {
    sqlx::query_as(
        "SELECT kind, provider_id, amount_minor, currency FROM ledger_entries
         WHERE provider = 'btcpay' AND provider_id LIKE $1 || '%' ORDER BY occurred_at, kind",
    )
    .bind(invoice)
    .fetch_all(&app.pool)
    .await
    .unwrap()
}

/// The body of the invoice-creating request the simulator received.
fn invoice_request(app: &TestApp) -> Value {
    let request = app
        .btcpay
        .simulator
        .requests()
        .into_iter()
        .rfind(|r| r.method == "POST" && r.path.ends_with("/invoices"))
        .expect("an invoice was created");
    serde_json::from_slice(&request.body).unwrap()
}

#[tokio::test]
async fn an_anonymous_crypto_gift_is_booked_in_fiat_with_the_crypto_beside_and_btcpay_learns_no_one()
 {
    let app = TestApp::spawn().await;
    app.deliver_btcpay_webhooks_here().await;
    let (id, invoice) = crypto_checkout(&app, 1_000, None).await;

    // BTCPay is told Kopilka's id, the fiat amount and where to send the reader back.
    let sent = invoice_request(&app);
    assert_eq!(sent["amount"], "10.00");
    assert_eq!(sent["currency"], "USD");
    assert_eq!(sent["metadata"], json!({"orderId": id}));
    let back = sent["checkout"]["redirectURL"].as_str().unwrap();
    assert!(
        back.starts_with(&format!(
            "{}v1/checkout/return?ref=",
            app.settings.public_url
        )),
        "{back}"
    );
    assert!(
        !back.contains(&id),
        "the return names no contribution: {back}"
    );
    let (status, ..) = contribution(&app, &id).await;
    assert_eq!(status, "pending");

    act(&app, &invoice, "pay").await;
    all_applied(&app).await;

    assert_eq!(
        ledger(&app, &invoice).await,
        [("payment".into(), invoice.clone(), 1_000, "usd".into())]
    );
    // $10.00 at the simulator's $60,000.00 per bitcoin: 16,667 satoshis.
    assert_eq!(
        contribution(&app, &id).await,
        (
            "paid".into(),
            None,
            Some(1_000),
            Some("BTC".into()),
            Some(16_667),
            Some(8),
            Some("60000.00".into()),
            false
        )
    );
    // No address, no reader, no email.
    assert!(app.emails().is_empty(), "{:?}", app.emails());

    // Every delivery again, redelivered by BTCPay: nothing more is booked.
    let deliveries: Value = reqwest::get(format!(
        "{}/_sim/deliveries",
        app.btcpay.simulator.base_url()
    ))
    .await
    .unwrap()
    .json()
    .await
    .unwrap();
    let deliveries = deliveries.as_array().expect("the deliveries");
    assert_eq!(deliveries.len(), 5, "{deliveries:?}");
    for delivery in deliveries {
        if let Some(delivery_id) = delivery["id"].as_str() {
            app.btcpay_control(
                &format!("/_sim/deliveries/{delivery_id}/redeliver"),
                &json!({}),
            )
            .await;
        }
    }
    all_applied(&app).await;
    assert_eq!(ledger(&app, &invoice).await.len(), 1);

    // The redirect BTCPay sends the reader to is Kopilka's own return route.
    let path = back
        .split_once("/v1/")
        .map(|(_, rest)| format!("/v1/{rest}"))
        .unwrap();
    let returned = app.api.get(&path).await;
    assert_eq!(returned.status.as_u16(), 303);
}

#[tokio::test]
async fn a_crypto_gift_with_an_address_names_its_reader_and_gets_a_receipt() {
    let app = TestApp::spawn().await;
    app.deliver_btcpay_webhooks_here().await;
    let (id, invoice) = crypto_checkout(&app, 2_500, Some("giver@example.org")).await;
    // The address goes to BTCPay only because the reader asked for an emailed receipt.
    assert_eq!(
        invoice_request(&app)["metadata"],
        json!({"orderId": id, "buyerEmail": "giver@example.org"})
    );
    // Nothing is stored or sent to a typed address before the money settles.
    let readers: i64 = sqlx::query_scalar("SELECT count(*) FROM readers")
        .fetch_one(&app.pool)
        .await
        .unwrap();
    assert_eq!(readers, 0);

    act(&app, &invoice, "pay").await;
    all_applied(&app).await;
    let (status, .., named) = contribution(&app, &id).await;
    assert_eq!((status.as_str(), named), ("paid", true));
    let receipt = eventually("the receipt", Duration::from_secs(20), || async {
        app.emails()
            .iter()
            .map(|raw| kopilka_test_support::ReceivedEmail::parse(raw))
            .find(|m| m.to == "giver@example.org" && m.subject.contains("receipt"))
    })
    .await;
    assert!(receipt.subject.contains("25.00 USD"), "{}", receipt.subject);
    assert!(
        receipt.text.contains(&invoice),
        "the reference: {}",
        receipt.text
    );

    // The year-end statement counts the crypto gift in its fiat amount.
    let now = OffsetDateTime::now_utc();
    let queued = kopilka_jobs::queue_statements(
        &app.pool,
        now - time::Duration::days(1),
        now + time::Duration::days(1),
    )
    .await
    .unwrap();
    assert_eq!(queued, 1);
    let statement = eventually("the statement", Duration::from_secs(20), || async {
        app.emails()
            .iter()
            .map(|raw| kopilka_test_support::ReceivedEmail::parse(raw))
            .find(|m| m.to == "giver@example.org" && !m.subject.contains("receipt"))
    })
    .await;
    assert!(statement.text.contains("25.00 USD"), "{}", statement.text);
}

#[tokio::test]
async fn partial_late_over_and_invalid_payments_each_end_in_a_defined_state() {
    let app = TestApp::spawn().await;
    app.deliver_btcpay_webhooks_here().await;

    // Paid half, then expired: abandoned, nothing booked, the operator told.
    let (partial, partial_invoice) = crypto_checkout(&app, 1_000, None).await;
    act(&app, &partial_invoice, "pay-partly").await;
    act(&app, &partial_invoice, "expire").await;
    // Paid after expiry: abandoned until the operator marks it settled in BTCPay.
    let (late, late_invoice) = crypto_checkout(&app, 1_000, None).await;
    act(&app, &late_invoice, "pay-late").await;
    // Paid a tenth more: the amount asked is booked, the rest is the operator's to refund.
    let (over, over_invoice) = crypto_checkout(&app, 1_000, None).await;
    act(&app, &over_invoice, "overpay").await;
    // Marked invalid before any payment: failed.
    let (invalid, invalid_invoice) = crypto_checkout(&app, 1_000, None).await;
    act(&app, &invalid_invoice, "invalid").await;
    // Settled, then marked invalid: the payment is reversed.
    let (reversed, reversed_invoice) = crypto_checkout(&app, 1_000, None).await;
    act(&app, &reversed_invoice, "pay").await;
    all_applied(&app).await;
    act(&app, &reversed_invoice, "invalid").await;
    all_applied(&app).await;

    let (status, attention, paid, crypto, ..) = contribution(&app, &partial).await;
    assert_eq!(
        (status.as_str(), attention.as_deref(), crypto),
        ("abandoned", Some("partial_payment"), None)
    );
    assert!((1..1_000).contains(&paid.unwrap()), "{paid:?}");
    assert!(ledger(&app, &partial_invoice).await.is_empty());

    let (status, attention, ..) = contribution(&app, &late).await;
    assert_eq!(
        (status.as_str(), attention.as_deref()),
        ("abandoned", Some("late_payment"))
    );
    assert!(ledger(&app, &late_invoice).await.is_empty());

    let (status, attention, paid, crypto, sats, ..) = contribution(&app, &over).await;
    assert_eq!(
        (status.as_str(), attention.as_deref(), crypto.as_deref()),
        ("paid", Some("overpayment"), Some("BTC"))
    );
    assert!(paid.unwrap() > 1_000, "{paid:?}");
    assert!(sats.unwrap() > 16_667, "{sats:?}");
    assert_eq!(
        ledger(&app, &over_invoice).await,
        [("payment".into(), over_invoice.clone(), 1_000, "usd".into())]
    );

    let (status, attention, ..) = contribution(&app, &invalid).await;
    assert_eq!((status.as_str(), attention), ("failed", None));
    assert!(ledger(&app, &invalid_invoice).await.is_empty());

    let (_, attention, ..) = contribution(&app, &reversed).await;
    assert_eq!(attention.as_deref(), Some("invalid_after_settlement"));
    assert_eq!(
        ledger(&app, &reversed_invoice).await,
        [
            (
                "payment".into(),
                reversed_invoice.clone(),
                1_000,
                "usd".into()
            ),
            (
                "reversal".into(),
                format!("{reversed_invoice}:invalid"),
                -1_000,
                "usd".into()
            )
        ]
    );

    // The operator marks the late invoice settled in BTCPay: now it is booked.
    app.btcpay_mark(&late_invoice, "Settled").await;
    all_applied(&app).await;
    let (status, ..) = contribution(&app, &late).await;
    assert_eq!(status, "paid");
    assert_eq!(
        ledger(&app, &late_invoice).await,
        [("payment".into(), late_invoice.clone(), 1_000, "usd".into())]
    );
}

#[tokio::test]
async fn crypto_is_one_off_and_only_where_a_store_is_configured() {
    let app = TestApp::spawn().await;
    for (body, code) in [
        (
            json!({"interval": "month", "amount_minor": 1_000, "currency": "usd", "rail": "crypto"}),
            "interval_not_on_rail",
        ),
        (
            json!({"interval": "once", "amount_minor": 1_000, "currency": "usd", "rail": "cash"}),
            "invalid_rail",
        ),
    ] {
        let refused = app.api.post_json("/v1/checkout", &body).await;
        assert_eq!(refused.error_code(422), code);
    }
    let off = TestApp::spawn_with(|settings| {
        settings.btcpay.url = None;
        settings.btcpay.store_id = None;
        settings.btcpay.api_key = None;
    })
    .await;
    let refused = off
        .api
        .post_json(
            "/v1/checkout",
            &json!({"interval": "once", "amount_minor": 1_000, "currency": "usd", "rail": "crypto"}),
        )
        .await;
    assert_eq!(refused.error_code(422), "rail_not_offered");
    for app in [&app, &off] {
        let stored: i64 = sqlx::query_scalar("SELECT count(*) FROM contributions")
            .fetch_one(&app.pool)
            .await
            .unwrap();
        assert_eq!(stored, 0);
    }
    // The card rail is still the default.
    let card = off
        .api
        .post_json(
            "/v1/checkout",
            &json!({"interval": "once", "amount_minor": 1_000, "currency": "usd"}),
        )
        .await;
    assert_eq!(card.status.as_u16(), 201);
}

#[tokio::test]
async fn reconcile_finds_a_settled_invoice_whose_deliveries_were_lost_and_apply_books_it() {
    // No webhook registered: BTCPay's deliveries never arrive.
    let app = TestApp::spawn().await;
    let (id, invoice) = crypto_checkout(&app, 1_500, None).await;
    act(&app, &invoice, "pay").await;
    let (stranger, stranger_invoice) = crypto_checkout(&app, 700, None).await;
    act(&app, &stranger_invoice, "expire").await;
    let btcpay = app.state.btcpay.clone().expect("BTCPay configured");
    let since = OffsetDateTime::now_utc().unix_timestamp() - 3_600;
    let report = kopilka_reconciliation::btcpay_drift::reconcile_btcpay(
        &app.pool,
        &btcpay,
        since,
        false,
        365,
        &|| {},
    )
    .await
    .unwrap();
    assert_eq!(report.checked, 2);
    let found: Vec<(&str, &str, &str)> = report
        .drift
        .iter()
        .map(|d| (d.provider, d.kind, d.object.as_str()))
        .collect();
    assert_eq!(found, [("btcpay", "missing_in_ledger", invoice.as_str())]);

    let repaired = kopilka_reconciliation::btcpay_drift::reconcile_btcpay(
        &app.pool,
        &btcpay,
        since,
        true,
        365,
        &|| {},
    )
    .await
    .unwrap();
    assert!(repaired.drift.is_empty(), "{:?}", repaired.drift);
    assert_eq!(
        ledger(&app, &invoice).await,
        [("payment".into(), invoice.clone(), 1_500, "usd".into())]
    );
    let (status, ..) = contribution(&app, &id).await;
    assert_eq!(status, "paid");
    let (status, ..) = contribution(&app, &stranger).await;
    assert_eq!(status, "abandoned");
}

#[tokio::test]
async fn the_offer_names_each_readers_rails_and_the_pass_terms_with_no_query() {
    let app = TestApp::spawn_with(|settings| {
        settings.rails.crypto_countries = vec!["RU".into(), "BY".into()];
        settings.rails.card_off_countries = vec!["RU".into()];
        // A discount on a year; the other lengths at their monthly default.
        settings
            .passes
            .presets
            .insert("usd".parse().unwrap(), vec![500, 1_500, 5_000]);
    })
    .await;
    let offer = |query: &'static str| {
        let app = &app;
        async move { app.api.get(&format!("/v1/offer?{query}")).await.json() }
    };
    let everyone = offer("currency=usd").await;
    assert_eq!(everyone["rails"], json!(["card", "crypto"]));
    // A pass of N months: N times the monthly terms ($5 default, $2 minimum, $1000 maximum),
    // but for the year's configured price.
    assert_eq!(
        everyone["passes"],
        json!([
            {"months": 1, "default_minor": 500, "minimum_minor": 200, "maximum_minor": 100_000},
            {"months": 3, "default_minor": 1_500, "minimum_minor": 600, "maximum_minor": 300_000},
            {"months": 12, "default_minor": 5_000, "minimum_minor": 2_400, "maximum_minor": 1_200_000}
        ])
    );
    assert_eq!(
        offer("currency=usd&country=by").await["rails"],
        json!(["crypto", "card"])
    );
    assert_eq!(
        offer("currency=usd&country=RU").await["rails"],
        json!(["crypto"])
    );

    let card_only = TestApp::spawn_with(|settings| {
        settings.btcpay.url = None;
        settings.btcpay.store_id = None;
        settings.btcpay.api_key = None;
    })
    .await;
    let offer = card_only
        .api
        .get("/v1/offer?currency=usd&country=RU")
        .await
        .json();
    assert_eq!(
        (&offer["rails"], &offer["passes"]),
        (&json!(["card"]), &Value::Null)
    );
}
