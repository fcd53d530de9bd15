//! Reminder emails over real SMTP (aiosmtpd on loopback): each sent once however many
//! workers run, none lost when the server is down, a 550 suppresses only its address, and
//! no reminder reaches a reader who gave or unsubscribed.

use std::collections::HashSet;

use kopilka_accounts::Accounts;
use kopilka_domain::Email;
use kopilka_jobs::{Worker, run_due};
use kopilka_test_support::{SmtpSink, TestDatabase, fresh_database, test_settings};
use secrecy::SecretString;
use time::{Duration, OffsetDateTime};

/// A worker sending through `sink`; each has its own connection pool to the server.
fn worker(db: &TestDatabase, sink: &SmtpSink) -> Worker {
    let mut settings = test_settings();
    settings.smtp.url = Some(SecretString::from(sink.url()));
    Worker::new(db.pool.clone(), &settings).expect("a worker")
}

/// Reminders for `count` addresses `r<i>@example.org`, due in two days.
async fn remind(db: &TestDatabase, count: usize) -> (Accounts, OffsetDateTime) {
    let accounts = Accounts::from_settings(&test_settings().accounts);
    let now = OffsetDateTime::now_utc();
    let on = (now + Duration::days(2)).date();
    let mut conn = db.pool.acquire().await.unwrap();
    for i in 0..count {
        let email = Email::parse(&format!("r{i}@example.org")).unwrap();
        accounts
            .remind_me(&mut conn, &email, on, now.date())
            .await
            .unwrap();
    }
    (accounts, now + Duration::days(2))
}

async fn count(db: &TestDatabase, sql: &'static str) -> i64 {
    sqlx::query_scalar(sql).fetch_one(&db.pool).await.unwrap()
}

#[tokio::test]
async fn a_thousand_due_reminders_and_two_workers_give_a_thousand_emails_once() {
    let db = fresh_database().await;
    let sink = SmtpSink::start().await;
    let (_, due_at) = remind(&db, 1000).await;
    let (one, two) = (worker(&db, &sink), worker(&db, &sink));
    let (a, b) = tokio::join!(run_due(&one, due_at), run_due(&two, due_at));
    let (a, b) = (a.unwrap(), b.unwrap());
    assert_eq!(a.done + b.done, 1000, "{a:?} {b:?}");
    assert!(
        a.done > 0 && b.done > 0,
        "both workers took a share: {a:?} {b:?}"
    );

    let messages = sink.messages();
    assert_eq!(messages.len(), 1000);
    let recipients: HashSet<_> = messages.iter().map(|m| m.to.clone()).collect();
    assert_eq!(recipients.len(), 1000, "nobody got two");
    let first = &messages[0];
    let header = |name: &str| {
        first
            .headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map_or_else(|| panic!("no {name}"), |(_, v)| v.clone())
    };
    assert!(header("List-Unsubscribe").contains("/v1/reminders/unsubscribe?token="));
    assert_eq!(
        header("List-Unsubscribe-Post"),
        "List-Unsubscribe=One-Click"
    );
    assert!(header("Message-ID").contains("reminder-"));
    assert_eq!(
        count(&db, "SELECT count(*) FROM reminders WHERE status = 'sent'").await,
        1000
    );
    assert_eq!(
        count(
            &db,
            "SELECT count(*) FROM email_sends WHERE status = 'sent'"
        )
        .await,
        1000
    );

    // The same run again: nothing more.
    let (a, b) = tokio::join!(run_due(&one, due_at), run_due(&two, due_at));
    assert_eq!(a.unwrap().done + b.unwrap().done, 0);
    assert_eq!(sink.messages().len(), 1000);
}

#[tokio::test]
async fn with_the_mail_server_down_nothing_is_lost_and_nothing_doubled() {
    let db = fresh_database().await;
    let mut sink = SmtpSink::start().await;
    let (_, due_at) = remind(&db, 20).await;
    let worker = worker(&db, &sink);

    // Down: every job fails for now and waits for its retry.
    sink.stop().await;
    let down = run_due(&worker, due_at).await.unwrap();
    assert_eq!((down.done, down.retrying), (0, 20), "{down:?}");
    // Up but answering 421: still waiting.
    sink.resume().await;
    sink.fail_transiently(true);
    let busy = run_due(&worker, due_at + Duration::minutes(1))
        .await
        .unwrap();
    assert_eq!((busy.done, busy.retrying), (0, 20), "{busy:?}");
    assert_eq!(
        count(
            &db,
            "SELECT count(*) FROM reminders WHERE status = 'pending'"
        )
        .await,
        20
    );
    // Back: every reminder delivered, once.
    sink.fail_transiently(false);
    let back = run_due(&worker, due_at + Duration::hours(1)).await.unwrap();
    assert_eq!(back.done, 20, "{back:?}");
    let recipients: HashSet<_> = sink.messages().iter().map(|m| m.to.clone()).collect();
    assert_eq!((sink.messages().len(), recipients.len()), (20, 20));
    let again = run_due(&worker, due_at + Duration::days(1)).await.unwrap();
    assert_eq!(again.done, 0);
    assert_eq!(sink.messages().len(), 20);
}

#[tokio::test]
async fn a_550_fails_and_suppresses_that_address_only() {
    let db = fresh_database().await;
    let sink = SmtpSink::start().await;
    sink.reject("r3@example.org");
    let (accounts, due_at) = remind(&db, 6).await;
    let worker = worker(&db, &sink);
    let run = run_due(&worker, due_at).await.unwrap();
    assert_eq!((run.done, run.retrying, run.failed), (6, 0, 0), "{run:?}");
    let delivered: HashSet<_> = sink.messages().iter().map(|m| m.to.clone()).collect();
    assert_eq!(delivered.len(), 5);
    assert!(!delivered.iter().any(|to| to.contains("r3@")));
    let (status, error): (String, String) =
        sqlx::query_as("SELECT status, last_error FROM email_sends WHERE status <> 'sent'")
            .fetch_one(&db.pool)
            .await
            .unwrap();
    assert_eq!(
        (status.as_str(), error.as_str()),
        ("failed", "smtp reply 550")
    );
    assert_eq!(
        count(
            &db,
            "SELECT count(*) FROM readers WHERE mail_suppressed_at IS NOT NULL"
        )
        .await,
        1
    );
    assert_eq!(
        count(
            &db,
            "SELECT count(*) FROM reminders WHERE status = 'suppressed' AND reason = 'mail_suppressed'"
        )
        .await,
        1,
        "the refused one is not counted as sent"
    );
    assert_eq!(
        count(&db, "SELECT count(*) FROM reminders WHERE status = 'sent'").await,
        5
    );
    // A later reminder for the suppressed address is never sent.
    let mut conn = db.pool.acquire().await.unwrap();
    let now = OffsetDateTime::now_utc();
    accounts
        .remind_me(
            &mut conn,
            &Email::parse("r3@example.org").unwrap(),
            (now + Duration::days(5)).date(),
            now.date(),
        )
        .await
        .unwrap();
    drop(conn);
    run_due(&worker, now + Duration::days(5)).await.unwrap();
    assert_eq!(sink.messages().len(), 5);
}

#[tokio::test]
async fn no_reminder_for_a_reader_who_gave_or_unsubscribed() {
    let db = fresh_database().await;
    let sink = SmtpSink::start().await;
    let (accounts, due_at) = remind(&db, 3).await;
    let mut conn = db.pool.acquire().await.unwrap();
    // r0 gave after asking; r1 unsubscribed with the link of a reminder's email.
    let r0: uuid::Uuid =
        sqlx::query_scalar("SELECT id FROM readers WHERE email = 'r0@example.org'")
            .fetch_one(&mut *conn)
            .await
            .unwrap();
    kopilka_accounts::reminder::reader_gave(
        &mut conn,
        kopilka_domain::id::ReaderId::from_uuid(r0),
        OffsetDateTime::now_utc() + Duration::seconds(1),
    )
    .await
    .unwrap();
    let r1: uuid::Uuid = sqlx::query_scalar(
        "SELECT m.id FROM reminders m JOIN readers r ON r.id = m.reader_id WHERE r.email = 'r1@example.org'",
    )
    .fetch_one(&mut *conn)
    .await
    .unwrap();
    let token = accounts.unsubscribe_token(kopilka_domain::id::ReminderId::from_uuid(r1));
    kopilka_accounts::reminder::unsubscribe(&mut conn, &accounts.keys, &token)
        .await
        .unwrap();
    drop(conn);

    run_due(&worker(&db, &sink), due_at).await.unwrap();
    let delivered: Vec<_> = sink.messages().iter().map(|m| m.to.clone()).collect();
    assert_eq!(delivered.len(), 1, "{delivered:?}");
    assert!(delivered[0].contains("r2@example.org"));
}

#[tokio::test]
async fn a_reminder_that_became_due_before_it_moved_is_not_sent_early() {
    let db = fresh_database().await;
    let mut sink = SmtpSink::start().await;
    let (accounts, due_at) = remind(&db, 1).await;
    let worker = worker(&db, &sink);
    // Queued on its day, but the mail server is down; the reader moves it meanwhile.
    sink.stop().await;
    assert_eq!(run_due(&worker, due_at).await.unwrap().retrying, 1);
    sink.resume().await;
    let now = OffsetDateTime::now_utc();
    accounts
        .remind_me(
            &mut db.pool.acquire().await.unwrap(),
            &Email::parse("r0@example.org").unwrap(),
            (now + Duration::days(9)).date(),
            now.date(),
        )
        .await
        .unwrap();
    run_due(&worker, due_at + Duration::hours(1)).await.unwrap();
    assert_eq!(sink.messages().len(), 0, "not on the old date");
    run_due(&worker, now + Duration::days(9)).await.unwrap();
    assert_eq!(sink.messages().len(), 1);
}

#[tokio::test]
async fn the_mail_server_stopping_in_the_middle_of_a_run_loses_nothing() {
    let db = fresh_database().await;
    let mut sink = SmtpSink::start().await;
    let (_, due_at) = remind(&db, 200).await;
    let worker = worker(&db, &sink);
    let running = tokio::spawn({
        let worker = worker.clone();
        async move { run_due(&worker, due_at).await }
    });
    kopilka_test_support::eventually(
        "the first deliveries",
        std::time::Duration::from_secs(30),
        || async { (sink.messages().len() >= 20).then_some(()) },
    )
    .await;
    sink.stop().await;
    let first = running.await.unwrap().unwrap();
    assert!(
        first.retrying > 0,
        "the stop interrupted the run: {first:?}"
    );

    sink.resume().await;
    let second = run_due(&worker, due_at + Duration::hours(2)).await.unwrap();
    assert_eq!(first.done + second.done, 200, "{first:?} {second:?}");
    let messages = sink.messages();
    let recipients: HashSet<_> = messages.iter().map(|m| m.to.clone()).collect();
    assert_eq!((messages.len(), recipients.len()), (200, 200));
    assert_eq!(
        count(&db, "SELECT count(*) FROM reminders WHERE status = 'sent'").await,
        200
    );
}

#[tokio::test]
async fn a_reminder_more_than_a_week_late_is_not_sent() {
    let db = fresh_database().await;
    let sink = SmtpSink::start().await;
    let (_, due_at) = remind(&db, 2).await;
    // The workers were away for eight days.
    run_due(&worker(&db, &sink), due_at + Duration::days(8))
        .await
        .unwrap();
    assert!(sink.messages().is_empty());
    assert_eq!(
        count(
            &db,
            "SELECT count(*) FROM email_sends WHERE status = 'skipped'"
        )
        .await,
        2
    );
    // Up to a week late is still worth a reminder (catching up with --as-of).
    let other = fresh_database().await;
    let (_, due_at) = remind(&other, 1).await;
    run_due(&worker(&other, &sink), due_at + Duration::days(6))
        .await
        .unwrap();
    assert_eq!(sink.messages().len(), 1);
}
