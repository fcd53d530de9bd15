//! Receipts and failed-payment notices over real SMTP, from the simulator's payments
//! through the webhooks and the worker: a receipt after a one-off gift, after a plan's first
//! payment and after each renewal; a notice with a card-update link when a renewal is
//! declined.

use std::time::Duration;

use kopilka_test_support::{ReceivedEmail, SmtpSink, TestApp, eventually};
use secrecy::SecretString;
use serde_json::json;

/// The messages to `to`, once there are `n`.
async fn messages_to(sink: &SmtpSink, to: &str, n: usize) -> Vec<ReceivedEmail> {
    eventually(
        &format!("{n} emails to {to}"),
        Duration::from_secs(40),
        || async {
            let mine: Vec<_> = sink
                .messages()
                .into_iter()
                .filter(|m| m.to.contains(to))
                .collect();
            (mine.len() >= n).then_some(mine)
        },
    )
    .await
}

#[tokio::test]
async fn receipts_follow_each_payment_and_a_declined_renewal_asks_for_a_new_card() {
    let sink = SmtpSink::start().await;
    let url = sink.url();
    let app = TestApp::spawn_with(|s| s.smtp.url = Some(SecretString::from(url))).await;
    app.deliver_webhooks_here(Some((1, true))).await;

    // A one-off gift: one receipt (the duplicate deliveries change nothing).
    app.give("once@example.org", "once", 1500).await;
    let once = messages_to(&sink, "once@example.org", 1).await;
    assert!(once[0].subject.contains("15.00 USD"), "{}", once[0].subject);
    assert!(once[0].text.contains("one-off"), "{}", once[0].text);
    assert!(
        once[0]
            .text
            .contains(&app.settings.publisher.postal_address)
    );

    // A monthly plan: a receipt for the first payment, then one per renewal.
    app.give("monthly@example.org", "month", 500).await;
    let first = messages_to(&sink, "monthly@example.org", 1).await;
    assert!(first[0].text.contains("monthly"), "{}", first[0].text);
    assert!(
        !first[0].text.contains("(renewal)"),
        "the first payment is no renewal"
    );
    app.sim_control("/_sim/clock/advance", &json!({"seconds": 32 * 86_400}))
        .await;
    let renewed = messages_to(&sink, "monthly@example.org", 2).await;
    assert!(renewed[1].text.contains("(renewal)"), "{}", renewed[1].text);
    assert!(renewed[1].subject.contains("5.00 USD"));

    // The card is declined at the next renewal: a notice with a signed card-update link.
    let subscription: String =
        sqlx::query_scalar("SELECT stripe_subscription_id FROM recurring_plans")
            .fetch_one(&app.pool)
            .await
            .unwrap();
    app.sim_control(
        &format!("/_sim/subscriptions/{subscription}/card"),
        &json!({"outcome": "decline"}),
    )
    .await;
    app.sim_control("/_sim/clock/advance", &json!({"seconds": 32 * 86_400}))
        .await;
    let all = messages_to(&sink, "monthly@example.org", 3).await;
    let subjects: Vec<_> = all.iter().map(|m| m.subject.clone()).collect();
    let notice = all
        .iter()
        .find(|m| m.subject.contains("could not take"))
        .unwrap_or_else(|| panic!("no failed-payment notice in {subjects:?}"));
    let start = notice.text.find("/v1/plan-links/").expect("a card link");
    let link: String = notice.text[start..]
        .split_whitespace()
        .next()
        .unwrap()
        .to_owned();
    let page = app.api.get(&link).await;
    assert_eq!(page.status, reqwest::StatusCode::OK);

    // Nothing was sent twice, whatever the duplicate deliveries did.
    let pool = app.pool.clone();
    eventually("every job done", Duration::from_secs(30), || {
        let pool = pool.clone();
        async move {
            let open: i64 = sqlx::query_scalar("SELECT count(*) FROM jobs WHERE status <> 'done'")
                .fetch_one(&pool)
                .await
                .unwrap();
            (open == 0).then_some(())
        }
    })
    .await;
    let total = sink.messages().len();
    assert_eq!(total, 4, "one-off receipt, two plan receipts, one notice");
    let sends: i64 = sqlx::query_scalar("SELECT count(*) FROM email_sends WHERE status = 'sent'")
        .fetch_one(&app.pool)
        .await
        .unwrap();
    assert_eq!(sends, 4);
}

#[tokio::test]
async fn an_annual_plan_gets_one_renewal_notice_before_it_renews() {
    let sink = SmtpSink::start().await;
    let url = sink.url();
    let app = TestApp::spawn_with(|s| s.smtp.url = Some(SecretString::from(url))).await;
    app.deliver_webhooks_here(Some((0, false))).await;
    app.give("annual@example.org", "year", 5000).await;
    messages_to(&sink, "annual@example.org", 1).await;
    let renews_at: time::OffsetDateTime =
        sqlx::query_scalar("SELECT current_period_end FROM recurring_plans")
            .fetch_one(&app.pool)
            .await
            .unwrap();

    // A worker running 31 days before: nothing; 10 days before: the notice, once.
    let worker = kopilka_jobs::Worker::new(app.pool.clone(), &app.settings).unwrap();
    kopilka_jobs::run_due(&worker, renews_at - time::Duration::days(31))
        .await
        .unwrap();
    assert_eq!(sink.messages().len(), 1);
    for _ in 0..2 {
        kopilka_jobs::run_due(&worker, renews_at - time::Duration::days(10))
            .await
            .unwrap();
    }
    let all = messages_to(&sink, "annual@example.org", 2).await;
    assert_eq!(all.len(), 2, "one receipt, one notice");
    let notice = &all[1];
    assert!(notice.subject.contains("renews on"), "{}", notice.subject);
    assert!(notice.text.contains("50.00 USD"), "{}", notice.text);
    assert!(notice.text.contains("/v1/plan-links/"), "a cancel link");
}
