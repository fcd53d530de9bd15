//! Email through the binary: `kopilka worker --once --as-of T` sends what is due at T (time
//! travel for reminders), and `kopilka admin statements send` queues one year-end
//! statement per reader who gave, once — delivered over real SMTP.

use std::time::Duration;

use kopilka_test_support::{SmtpSink, TestApp, eventually, fresh_database};
use kopilka_tests::{kopilka, run};
use secrecy::{ExposeSecret, SecretString};
use serde_json::{Value, json};

#[tokio::test]
async fn worker_once_as_of_sends_a_reminder_on_its_day_and_statements_go_once() {
    tokio::task::spawn_blocking(kopilka_tests::kopilka_binary)
        .await
        .expect("the binary builds");
    let sink = SmtpSink::start().await;
    let db = fresh_database().await;
    let url = db.url.expose_secret().to_owned();
    let smtp = sink.url();
    let app = TestApp::spawn_on(db.url.clone(), |s| {
        s.smtp.url = Some(SecretString::from(smtp.clone()));
    })
    .await;
    let binary = |args: &[&str]| {
        let mut command = kopilka(args);
        command
            .env("KOPILKA_ENV", "test")
            .env("DATABASE_URL", &url)
            .env("KOPILKA__SMTP__URL", sink.url());
        command
    };

    // A reminder three days ahead: nothing today; `--as-of` its day sends it.
    let on = (time::OffsetDateTime::now_utc() + time::Duration::days(3)).date();
    let asked = app
        .api
        .post_json(
            "/v1/reminders",
            &json!({"email": "later@example.org", "remind_on": on.to_string()}),
        )
        .await;
    assert_eq!(asked.status.as_u16(), 202);
    let today = run(binary(&["worker", "--once"])).await;
    assert!(today.status.success(), "{}", today.stderr);
    assert!(sink.messages().is_empty(), "not due today");
    let day = format!("{on}T09:00:00Z");
    let then = run(binary(&["worker", "--once", "--as-of", &day])).await;
    assert!(then.status.success(), "{}", then.stderr);
    assert!(then.stdout.contains("1 done"), "{}", then.stdout);
    let delivered = sink.messages();
    assert_eq!(delivered.len(), 1);
    assert!(delivered[0].to.contains("later@example.org"));

    // Two readers give; the statements of this year go to each once.
    app.deliver_webhooks_here(Some((0, false))).await;
    app.give("first@example.org", "once", 1000).await;
    app.give("second@example.org", "once", 2500).await;
    let year = time::OffsetDateTime::now_utc().year().to_string();
    let statements = |args: &'static [&'static str]| {
        let mut command =
            binary(&[&["admin", "statements", "send", "--year", &year], args].concat());
        command.env_remove("KOPILKA__SMTP__URL");
        command
    };
    let queued = run(statements(&["--format", "json"])).await;
    assert!(queued.status.success(), "{}", queued.stderr);
    let answer: Value = serde_json::from_str(&queued.stdout).unwrap();
    assert_eq!(answer["queued"], 2, "{answer}");
    assert_eq!(answer["from"], format!("{year}-01-01"));
    let again: Value =
        serde_json::from_str(&run(statements(&["--format", "json"])).await.stdout).unwrap();
    assert_eq!(again["queued"], 0, "a second run queues nothing new");

    let worker = run(binary(&["worker", "--once"])).await;
    assert!(worker.status.success(), "{}", worker.stderr);
    let statements_to = |to: &str| {
        sink.messages()
            .into_iter()
            .filter(|m| m.to.contains(to) && m.subject.contains("contributions to"))
            .collect::<Vec<_>>()
    };
    eventually("both statements", Duration::from_secs(30), || async {
        (statements_to("first@").len() == 1 && statements_to("second@").len() == 1).then_some(())
    })
    .await;
    assert!(statements_to("second@")[0].text.contains("25.00 USD"));

    // A fiscal year that has not started yet has no gifts.
    let future: Value = serde_json::from_str(
        &run(statements(&["--fiscal-start", "12-31", "--format", "json"]))
            .await
            .stdout,
    )
    .unwrap();
    assert!(future["queued"].as_u64().unwrap() <= 2);
    let bad = run(statements(&["--fiscal-start", "02-30"])).await;
    assert!(!bad.status.success(), "no such day");
}
