//! The client against the Stripe simulator: every operation Kopilka uses, through
//! async-stripe's request builders and deserializers.

use kopilka_domain::{Email, Interval, Money};
use kopilka_stripe::{ClientError, NewCheckout, StripeClient};
use kopilka_stripe_sim::{SimOptions, Spawned, spawn};
use secrecy::SecretString;
use serde_json::json;

async fn simulator() -> (Spawned, StripeClient) {
    let sim = spawn("127.0.0.1:0".parse().unwrap(), SimOptions::default())
        .await
        .unwrap();
    let base: url::Url = format!("http://{}", sim.addr).parse().unwrap();
    let client = StripeClient::new(
        &SecretString::from(sim.simulator.secret_key().to_owned()),
        Some(&base),
    )
    .unwrap();
    (sim, client)
}

async fn pay(sim: &Spawned, session: &str) {
    let response = reqwest::Client::new()
        .post(format!("http://{}/_sim/checkout/{session}/pay", sim.addr))
        .json(&json!({}))
        .send()
        .await
        .unwrap();
    assert!(response.status().is_success());
}

fn money(minor: i64, currency: &str) -> Money {
    Money::new(minor, currency.parse().unwrap())
}

fn checkout<'a>(
    id: &'a str,
    interval: Interval,
    amount: Money,
    email: Option<&'a Email>,
) -> NewCheckout<'a> {
    NewCheckout {
        contribution_id: id,
        interval,
        amount,
        product_name: "Contribution to The Newsroom",
        success_url: "https://news.example.org/thanks?session={CHECKOUT_SESSION_ID}",
        cancel_url: Some("https://news.example.org/support"),
        customer_email: email,
        expires_at: None,
        experiment: None,
    }
}

#[tokio::test]
async fn a_one_off_checkout_is_created_once_paid_and_refunded() {
    let (sim, client) = simulator().await;
    let email = Email::parse("reader@example.org").unwrap();
    let new = checkout(
        "0193a5a0-one-off",
        Interval::Once,
        money(2500, "usd"),
        Some(&email),
    );
    let session = client.create_checkout_session(&new).await.unwrap();
    assert_eq!(session.status, "open");
    assert_eq!(
        session.client_reference_id.as_deref(),
        Some("0193a5a0-one-off")
    );
    assert_eq!(session.amount_total, Some(2500));
    assert!(
        session
            .url
            .as_deref()
            .is_some_and(|u| u.contains(&session.id))
    );

    // The same contribution again: the idempotency key returns the same session.
    let again = client.create_checkout_session(&new).await.unwrap();
    assert_eq!(again.id, session.id);

    pay(&sim, &session.id).await;
    let paid = client.retrieve_checkout_session(&session.id).await.unwrap();
    assert_eq!(
        (paid.status.as_str(), paid.payment_status.as_str()),
        ("complete", "paid")
    );
    let payment_intent = paid.payment_intent.expect("a payment intent once paid");

    let partial = client
        .refund(&payment_intent, "refund-1", Some(1000))
        .await
        .unwrap();
    assert_eq!((partial.amount, partial.currency.as_str()), (1000, "usd"));
    let replay = client
        .refund(&payment_intent, "refund-1", Some(1000))
        .await
        .unwrap();
    assert_eq!(replay.id, partial.id, "a retried refund is the same refund");
    let rest = client
        .refund(&payment_intent, "refund-2", None)
        .await
        .unwrap();
    assert_eq!(rest.amount, 1500);
    let too_much = client
        .refund(&payment_intent, "refund-3", Some(1))
        .await
        .unwrap_err();
    assert_eq!(
        too_much.code(),
        Some("charge_already_refunded"),
        "{too_much}"
    );
}

#[tokio::test]
async fn stripe_errors_keep_their_code() {
    let (_sim, client) = simulator().await;
    let tiny = checkout("tiny", Interval::Once, money(10, "usd"), None);
    let err = client.create_checkout_session(&tiny).await.unwrap_err();
    assert!(
        matches!(&err, ClientError::Refused { status: 400, .. }),
        "{err:?}"
    );
    assert_eq!(err.code(), Some("amount_too_small"));

    let missing = client
        .retrieve_checkout_session("cs_test_nope")
        .await
        .unwrap_err();
    assert_eq!(missing.code(), Some("resource_missing"));

    let bad_key = StripeClient::new(
        &SecretString::from("sk_test_wrong".to_owned()),
        Some(&format!("http://{}", _sim.addr).parse().unwrap()),
    )
    .unwrap();
    let refused = bad_key
        .retrieve_checkout_session("cs_test_x")
        .await
        .unwrap_err();
    assert!(
        matches!(refused, ClientError::Refused { status: 401, .. }),
        "{refused:?}"
    );

    let nobody = StripeClient::new(
        &SecretString::from("sk_test_x".to_owned()),
        Some(&"http://127.0.0.1:9".parse().unwrap()),
    )
    .unwrap();
    let down = nobody
        .retrieve_checkout_session("cs_test_x")
        .await
        .unwrap_err();
    assert!(matches!(down, ClientError::Unavailable(_)), "{down:?}");
}

#[tokio::test]
async fn an_open_checkout_can_be_expired() {
    let (_sim, client) = simulator().await;
    let session = client
        .create_checkout_session(&checkout(
            "to-expire",
            Interval::Once,
            money(500, "eur"),
            None,
        ))
        .await
        .unwrap();
    let expired = client.expire_checkout_session(&session.id).await.unwrap();
    assert_eq!(expired.status, "expired");
    assert!(expired.url.is_none());
}

#[tokio::test]
async fn a_plan_is_changed_and_cancelled_through_the_client() {
    let (sim, client) = simulator().await;
    let session = client
        .create_checkout_session(&checkout(
            "monthly-1",
            Interval::Month,
            money(500, "gbp"),
            None,
        ))
        .await
        .unwrap();
    pay(&sim, &session.id).await;
    let sub_id = client
        .retrieve_checkout_session(&session.id)
        .await
        .unwrap()
        .subscription
        .expect("a subscription");

    let plan = client.retrieve_subscription(&sub_id).await.unwrap();
    assert_eq!(plan.status, "active");
    assert_eq!(plan.amount, Some(money(500, "gbp")));
    assert_eq!(plan.interval, Some(Interval::Month));
    assert_eq!(
        plan.metadata.get("contribution_id").map(String::as_str),
        Some("monthly-1")
    );

    let raised = client
        .change_subscription(&plan, "change-1", money(900, "gbp"), Interval::Month)
        .await
        .unwrap();
    assert_eq!(raised.amount, Some(money(900, "gbp")));
    assert_eq!(
        raised.current_period_end, plan.current_period_end,
        "an amount change keeps the period"
    );

    let annual = client
        .change_subscription(&raised, "change-2", money(9000, "gbp"), Interval::Year)
        .await
        .unwrap();
    assert_eq!(annual.interval, Some(Interval::Year));
    assert!(
        annual.current_period_end > plan.current_period_end + 300 * 86_400,
        "an interval switch starts a year now"
    );

    let ending = client
        .cancel_at_period_end(&sub_id, "cancel-1", true)
        .await
        .unwrap();
    assert!(ending.cancel_at_period_end);
    assert_eq!(ending.status, "active");
    let resumed = client
        .cancel_at_period_end(&sub_id, "cancel-2", false)
        .await
        .unwrap();
    assert!(!resumed.cancel_at_period_end);

    let ended = client.cancel_subscription_now(&sub_id).await.unwrap();
    assert_eq!(ended.status, "canceled");
}

#[tokio::test]
async fn a_customer_is_created_once_per_reader() {
    let (_sim, client) = simulator().await;
    let email = Email::parse("member@example.org").unwrap();
    let first = client.create_customer("reader-1", &email).await.unwrap();
    let again = client.create_customer("reader-1", &email).await.unwrap();
    assert!(first.starts_with("cus_"));
    assert_eq!(first, again);
}

#[tokio::test]
async fn an_erased_readers_customer_loses_its_personal_fields() {
    let (sim, client) = simulator().await;
    let email = Email::parse("member@example.org").unwrap();
    let customer = client.create_customer("reader-2", &email).await.unwrap();
    client.clear_customer(&customer).await.unwrap();
    client.clear_customer(&customer).await.unwrap();
    let stored: serde_json::Value = reqwest::Client::new()
        .get(format!(
            "{}/v1/customers/{customer}",
            sim.simulator.base_url()
        ))
        .bearer_auth(sim.simulator.secret_key())
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(stored["email"], serde_json::Value::Null, "{stored}");
    assert_eq!(stored["name"], serde_json::Value::Null);
    assert!(!stored.to_string().contains("member@example.org"));
    let missing = client.clear_customer("cus_nobody").await.unwrap_err();
    assert!(
        missing.to_string().contains("resource_missing") || missing.to_string().contains("No such"),
        "{missing}"
    );
}

/// A Stripe that refuses every request (`status`) with a message echoing an address, as
/// real Stripe does ("Invalid email address: …").
async fn echoing_stripe(status: u16) -> (StripeClient, tokio::task::JoinHandle<()>) {
    use axum::http::StatusCode;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let app = axum::Router::new().fallback(move || async move {
        (
            StatusCode::from_u16(status).unwrap(),
            axum::Json(json!({"error": {
                "type": "invalid_request_error",
                "code": "email_invalid",
                "param": "customer_email",
                "message": "Invalid email address: echoed-donor@example.org (Echoed Name)",
            }})),
        )
    });
    let server = tokio::spawn(async move {
        axum::serve(listener, app).await.unwrap();
    });
    let client = StripeClient::new(
        &SecretString::from("sk_test_x".to_owned()),
        Some(&format!("http://{addr}").parse().unwrap()),
    )
    .unwrap();
    (client, server)
}

#[tokio::test]
async fn stripe_refusal_text_never_reaches_our_errors() {
    for status in [400, 402, 500, 503] {
        let (client, server) = echoing_stripe(status).await;
        let err = client
            .retrieve_checkout_session("cs_test_x")
            .await
            .unwrap_err();
        for text in [err.to_string(), format!("{err:?}")] {
            assert!(
                !text.contains("echoed-donor") && !text.contains("Echoed Name"),
                "{status}: {text}"
            );
        }
        if status < 500 {
            assert_eq!(err.code(), Some("email_invalid"), "{err}");
            assert!(err.to_string().contains("customer_email"), "{err}");
        }
        server.abort();
    }
}

#[tokio::test]
async fn an_erased_readers_customer_is_deleted_once_and_a_retry_is_safe() {
    let (sim, client) = simulator().await;
    let email = Email::parse("member@example.org").unwrap();
    let customer = client.create_customer("reader-3", &email).await.unwrap();
    assert!(client.delete_customer(&customer).await.unwrap());
    assert!(!client.delete_customer(&customer).await.unwrap());
    let stored: serde_json::Value = reqwest::Client::new()
        .get(format!(
            "{}/v1/customers/{customer}",
            sim.simulator.base_url()
        ))
        .bearer_auth(sim.simulator.secret_key())
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        stored,
        serde_json::json!({"id": customer, "object": "customer", "deleted": true})
    );
}
