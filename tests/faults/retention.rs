//! Retention and keyed fingerprints against the real binaries: throttled sign-ins behind a
//! proxy header, a stranger's sign-up that is never confirmed, a checkout with an address;
//! no client IP reaches the database in any form, and `worker --once --as-of` a month and a
//! half on leaves no spent row and no reader with nothing linked, while the donor stays.

use reqwest::{Method, StatusCode};
use serde_json::json;
use time::format_description::well_known::Rfc3339;
use time::{Duration, OffsetDateTime};

use crate::stack::Stack;

const IP: &str = "203.0.113.177";
const STRANGER: &str = "sweep-stranger@example.org";
const DONOR: &str = "sweep-donor@example.org";

pub async fn a_month_and_a_half_on_no_ip_no_spent_row_and_no_unlinked_reader_remain() {
    let mut stack = Stack::options()
        .env("KOPILKA__SERVER__CLIENT_IP_HEADER", "x-forwarded-for")
        .env("KOPILKA__ACCOUNTS__FREE_FAILURES_PER_IP", "2")
        // The paid gift's receipt is an email send: unlinked after 30 days here.
        .env("KOPILKA__RETENTION__EMAIL_SEND_DAYS", "30")
        .start()
        .await;
    stack.watch([IP, STRANGER, DONOR]);

    // Wrong passwords from one IP until it is throttled.
    let mut statuses = vec![];
    for n in 0..4 {
        let answer = kopilka_test_support::send(
            stack
                .api()
                .request(Method::POST, "/v1/sessions")
                .header("x-forwarded-for", format!("198.51.100.9, {IP}"))
                .json(
                    &json!({"email": format!("guess-{n}@example.org"), "password": "wrong guess"}),
                ),
        )
        .await;
        statuses.push(answer.status);
    }
    assert_eq!(
        statuses.last(),
        Some(&StatusCode::TOO_MANY_REQUESTS),
        "{statuses:?}"
    );
    // A stranger's sign-up, never confirmed; a one-off gift with an address.
    let up = stack
        .api()
        .post_json(
            "/v1/accounts",
            &json!({"email": STRANGER, "password": "never confirmed pass"}),
        )
        .await;
    assert_eq!(up.status, StatusCode::ACCEPTED);
    let gift = kopilka_test_support::send(
        stack
            .api()
            .request(Method::POST, "/v1/checkout")
            .header("idempotency-key", "sweep-gift-1")
            .json(&json!({"interval": "once", "amount_minor": 700, "currency": "usd", "email": DONOR})),
    )
    .await;
    assert_eq!(gift.status, StatusCode::CREATED, "{:?}", gift.body);
    // Paid on Stripe's page: the address given there names the donor (a typed address
    // alone names nobody).
    stack.deliver_webhooks_to(0).await;
    let session_id = gift.json()["checkout_url"]
        .as_str()
        .expect("a URL")
        .rsplit('/')
        .next()
        .expect("an id")
        .to_owned();
    stack
        .sim_control(&format!("/_sim/checkout/{session_id}/pay"), &json!({}))
        .await;
    // The worker applies the delivered events (each round runs what has arrived).
    let mut named = 0;
    for _ in 0..60 {
        stack.work_through(1).await;
        named = stack
            .count("SELECT count(*) FROM contributions WHERE reader_id IS NOT NULL AND status = 'paid'")
            .await;
        if named == 1 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(250)).await;
    }
    assert_eq!(named, 1, "the donor is named by the paid gift");
    stack.work_through(1).await;

    // Today: the throttle counts, by keys that name nothing.
    assert!(stack.count("SELECT count(*) FROM login_throttles").await >= 1);
    assert_eq!(
        stack
            .count(
                "SELECT count(*) FROM login_throttles WHERE key !~ '^(address|ip):[0-9a-f]{64}$'"
            )
            .await,
        0
    );
    assert_eq!(
        stack.count("SELECT count(*) FROM checkout_requests").await,
        1
    );
    let dump = stack.pg_dump();
    assert!(!dump.contains(IP), "the client IP is in the database");
    assert!(
        dump.contains(STRANGER),
        "the stranger's reader exists until its window"
    );

    // A month and a half on, the worker's daily sweep.
    let later = (OffsetDateTime::now_utc() + Duration::days(45))
        .format(&Rfc3339)
        .expect("formats");
    let out = stack.run(&["worker", "--once", "--as-of", &later]).await;
    assert!(out.status.success(), "{}", out.stderr);
    assert!(out.stdout.contains("retention sweep: "), "{}", out.stdout);

    for (table, left) in [
        ("login_throttles", 0),
        ("checkout_requests", 0),
        ("email_links", 0),
        ("sessions", 0),
        ("email_sends WHERE reader_id IS NOT NULL", 0),
    ] {
        assert_eq!(
            stack.count(&format!("SELECT count(*) FROM {table}")).await,
            left,
            "{table}"
        );
    }
    let dump = stack.pg_dump();
    assert!(!dump.contains(STRANGER), "the unconfirmed stranger is gone");
    assert!(
        dump.contains(DONOR),
        "the donor's reader stays with the gift"
    );
    assert_eq!(
        stack
            .count("SELECT count(*) FROM contributions WHERE reader_id IS NOT NULL")
            .await,
        1
    );
    stack.finish().await;
}
