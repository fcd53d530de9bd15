//! Erasure under faults: Stripe failing or slow while a reader erases (nothing is forgotten
//! until Stripe has ended everything; the retry finishes, whatever Stripe did before we
//! stopped listening); the supporter token refused by every server at once; the late
//! events about the erased customer create no reader.

use std::time::Duration;

use kopilka_test_support::{ApiResponse, eventually, send};
use reqwest::{Method, StatusCode};
use serde_json::json;

use crate::stack::Stack;

const PASSWORD: &str = "erasure under fire passphrase";

async fn erase(stack: &Stack, session: &str) -> ApiResponse {
    send(
        stack
            .api()
            .request(Method::DELETE, "/v1/me")
            .bearer_auth(session),
    )
    .await
}

async fn offer(stack: &Stack, server: usize, token: &str) -> ApiResponse {
    send(
        stack.apis[server]
            .request(Method::GET, "/v1/offer")
            .bearer_auth(token),
    )
    .await
}

pub async fn stripe_failing_or_slow_during_erasure_forgets_nothing_and_the_retry_ends_it_all() {
    let mut stack = Stack::options()
        .servers(2)
        .worker_in_serve(true)
        .env("KOPILKA__STRIPE__TIMEOUT_SECS", "2")
        .start()
        .await;
    let email = "erase-under-fire@example.org";
    stack.watch([email, PASSWORD, "erase-under-fire"]);
    stack.deliver_webhooks_to(0).await;
    let started = stack
        .api()
        .post_json(
            "/v1/checkout",
            &json!({"interval": "month", "amount_minor": 900, "currency": "usd", "email": email}),
        )
        .await;
    assert_eq!(started.status, StatusCode::CREATED);
    let session_id = started.json()["checkout_url"]
        .as_str()
        .expect("a URL")
        .rsplit('/')
        .next()
        .expect("an id")
        .to_owned();
    stack
        .sim_control(&format!("/_sim/checkout/{session_id}/pay"), &json!({}))
        .await;
    let pool = stack.pool.clone();
    eventually("the plan applied", Duration::from_secs(30), || async {
        let plans: i64 =
            sqlx::query_scalar("SELECT count(*) FROM recurring_plans WHERE status = 'active'")
                .fetch_one(&pool)
                .await
                .ok()?;
        (plans == 1).then_some(())
    })
    .await;
    let (sub, customer): (String, String) =
        sqlx::query_as("SELECT stripe_subscription_id, stripe_customer_id FROM recurring_plans")
            .fetch_one(&stack.pool)
            .await
            .expect("the plan");
    // The receipt is the first email to the address; the sign-up link the first with a token.
    eventually("the receipt sent", Duration::from_secs(30), || async {
        stack
            .smtp
            .messages()
            .iter()
            .any(|m| m.to.eq_ignore_ascii_case(email))
            .then_some(())
    })
    .await;
    let (_, session) = stack.sign_up_confirmed(email, PASSWORD, 1).await;
    stack.watch([session.as_str()]);
    let issued = send(
        stack
            .api()
            .request(Method::GET, "/v1/entitlements")
            .bearer_auth(&session),
    )
    .await;
    assert_eq!(issued.json()["claims"]["supporter"], true);
    let token = issued.json()["token"].as_str().expect("a token").to_owned();
    stack.watch([token.as_str()]);
    assert_eq!(offer(&stack, 1, &token).await.json()["supporter"], true);
    // The events of what happens at Stripe wait, so the database cannot learn of it early.
    stack
        .sim_control("/_sim/delivery", &json!({"webhook_url": ""}))
        .await;

    // Stripe answers 500: a clear 503, nothing forgotten, nothing ended.
    stack
        .sim_control("/_sim/faults", &json!({"count": 5, "status": 500}))
        .await;
    let failed = erase(&stack, &session).await;
    assert_eq!(failed.error_code(503), "payment_provider_unavailable");
    stack
        .sim_control("/_sim/faults", &json!({"count": 0}))
        .await;
    let unchanged = "SELECT count(*) FROM readers r JOIN contributions c ON c.reader_id = r.id
                     WHERE r.email IS NOT NULL";
    assert_eq!(stack.count(unchanged).await, 1, "nothing was forgotten");
    assert_eq!(
        stack.sim_get(&format!("/v1/subscriptions/{sub}")).await["status"],
        "active"
    );
    let me = send(
        stack
            .api()
            .request(Method::GET, "/v1/me")
            .bearer_auth(&session),
    )
    .await;
    assert_eq!(
        me.status,
        StatusCode::OK,
        "the reader can still sign in and retry"
    );

    // Stripe slow past our timeout: it cancelled the plan, we never heard; still 503.
    stack
        .sim_control("/_sim/faults", &json!({"count": 1, "delay_ms": 5000}))
        .await;
    let slow = erase(&stack, &session).await;
    assert_eq!(slow.error_code(503), "payment_provider_unavailable");
    assert_eq!(stack.count(unchanged).await, 1, "nothing was forgotten");
    assert_eq!(
        stack.sim_get(&format!("/v1/subscriptions/{sub}")).await["status"],
        "canceled",
        "Stripe did cancel"
    );

    // The retry ends the rest and forgets; the plan Stripe already ended counts as ended.
    let done = erase(&stack, &session).await;
    assert_eq!(done.status, StatusCode::OK, "{:?}", done.body);
    let done = done.json();
    assert_eq!(
        (&done["plans_cancelled"], &done["customers_deleted"]),
        (&json!(1), &json!(1)),
        "{done}"
    );
    assert_eq!(
        stack.sim_get(&format!("/v1/customers/{customer}")).await["deleted"],
        true
    );
    assert_eq!(stack.count("SELECT count(*) FROM readers").await, 0);
    // The other server refuses the token at once (it heard through Postgres).
    eventually(
        "server 1 refuses the token",
        Duration::from_secs(5),
        || async {
            (offer(&stack, 1, &token).await.status == StatusCode::UNAUTHORIZED).then_some(())
        },
    )
    .await;
    assert_eq!(
        offer(&stack, 0, &token).await.error_code(401),
        "invalid_token"
    );

    // Stripe's events about the erased customer (its plan's end, its deletion with the
    // address in it) arrive late, signed, at the other server: no reader comes back.
    let events = stack.sim_get("/v1/events?limit=100").await;
    let late: Vec<String> = events["data"]
        .as_array()
        .expect("events")
        .iter()
        .filter(|e| {
            matches!(
                e["type"].as_str(),
                Some("customer.deleted" | "customer.subscription.deleted")
            )
        })
        .map(ToString::to_string)
        .collect();
    assert_eq!(late.len(), 2, "{events}");
    assert!(
        late.iter().any(|e| e.contains(email)),
        "Stripe's event carries the address"
    );
    for event in &late {
        assert!(stack.deliver(1, event).await.status.is_success());
    }
    let pool = stack.pool.clone();
    eventually(
        "the late events applied",
        Duration::from_secs(30),
        || async {
            let applied: i64 = sqlx::query_scalar(
                "SELECT count(*) FROM provider_events
             WHERE type IN ('customer.deleted', 'customer.subscription.deleted')
               AND status IN ('processed', 'ignored')",
            )
            .fetch_one(&pool)
            .await
            .ok()?;
            (applied == 2).then_some(())
        },
    )
    .await;
    assert_eq!(stack.count("SELECT count(*) FROM readers").await, 0);
    assert_eq!(
        stack
            .count("SELECT count(*) FROM recurring_plans WHERE status = 'canceled'")
            .await,
        1
    );
    stack.finish().await;
}
