//! The accounts crate against a real Postgres: rehash on login, due reminders and their
//! single sending, concurrent requests for one new address.

use kopilka_accounts::{Accounts, Password, reminder};
use kopilka_domain::Email;
use kopilka_test_support::{fresh_database, test_settings};
use time::OffsetDateTime;

fn accounts_with_memory(memory_kib: u32) -> Accounts {
    let mut settings = test_settings().accounts;
    settings.argon2.memory_kib = memory_kib;
    Accounts::from_settings(&settings)
}

#[tokio::test]
async fn a_password_stored_with_an_old_cost_is_rehashed_at_login() {
    let db = fresh_database().await;
    let email = Email::parse("old-hash@example.org").unwrap();
    let old = accounts_with_memory(8_192);
    let now = OffsetDateTime::now_utc();
    old.sign_up(
        &db.pool,
        &kopilka_accounts::SignUp {
            email: email.clone(),
            password: Password::parse("correct horse battery").unwrap(),
            name: None,
            locale: kopilka_domain::Locale::Ru,
        },
        now,
    )
    .await
    .unwrap();
    let stored = || async {
        sqlx::query_scalar::<_, String>("SELECT password_hash FROM credentials")
            .fetch_one(&db.pool)
            .await
            .unwrap()
    };
    assert!(stored().await.contains("m=8192"));
    // Confirmed, as the verification link used with the password does.
    sqlx::query("UPDATE credentials SET confirmed_at = now()")
        .execute(&db.pool)
        .await
        .unwrap();

    let today = accounts_with_memory(19_456);
    today
        .sign_in_with_password(&db.pool, &email, "correct horse battery", None, now)
        .await
        .unwrap();
    assert!(
        stored().await.contains("m=19456,t=2,p=1"),
        "rehashed with today's cost"
    );
    today
        .sign_in_with_password(&db.pool, &email, "correct horse battery", None, now)
        .await
        .expect("the new hash verifies");
}

#[tokio::test]
async fn due_reminders_are_listed_once_and_sent_once() {
    let db = fresh_database().await;
    let accounts = accounts_with_memory(8_192);
    let today = OffsetDateTime::now_utc().date();
    let mut conn = db.pool.acquire().await.unwrap();
    let soon = accounts
        .remind_me(
            &mut conn,
            &Email::parse("soon@example.org").unwrap(),
            today + time::Duration::days(2),
            today,
        )
        .await
        .unwrap();
    accounts
        .remind_me(
            &mut conn,
            &Email::parse("later@example.org").unwrap(),
            today + time::Duration::days(30),
            today,
        )
        .await
        .unwrap();
    let bounced = Email::parse("bounced@example.org").unwrap();
    accounts
        .remind_me(&mut conn, &bounced, today + time::Duration::days(2), today)
        .await
        .unwrap();
    let bounced_reader = kopilka_accounts::reader::find(&mut conn, &bounced)
        .await
        .unwrap()
        .unwrap();
    kopilka_accounts::reader::suppress_mail(&mut conn, bounced_reader, OffsetDateTime::now_utc())
        .await
        .unwrap();

    assert!(
        reminder::due(&mut conn, today + time::Duration::days(1), 10)
            .await
            .unwrap()
            .is_empty()
    );
    let due = reminder::due(&mut conn, today + time::Duration::days(3), 10)
        .await
        .unwrap();
    assert_eq!(
        due.iter().map(|d| d.id).collect::<Vec<_>>(),
        [soon],
        "the bounced address is left out"
    );
    assert!(
        reminder::sent(&mut conn, soon, OffsetDateTime::now_utc())
            .await
            .unwrap()
    );
    assert!(
        !reminder::sent(&mut conn, soon, OffsetDateTime::now_utc())
            .await
            .unwrap(),
        "sent once"
    );
    assert!(
        reminder::due(&mut conn, today + time::Duration::days(3), 10)
            .await
            .unwrap()
            .is_empty()
    );
}

#[tokio::test]
async fn concurrent_requests_for_a_new_address_make_one_reader_and_one_reminder() {
    let db = fresh_database().await;
    let accounts = accounts_with_memory(8_192);
    let today = OffsetDateTime::now_utc().date();
    let email = Email::parse("racing@example.org").unwrap();
    let tasks: Vec<_> = (0..8_i64)
        .map(|i| {
            let (pool, accounts, email) = (db.pool.clone(), accounts.clone(), email.clone());
            tokio::spawn(async move {
                let mut conn = pool.acquire().await.unwrap();
                accounts
                    .remind_me(
                        &mut conn,
                        &email,
                        today + time::Duration::days(3 + i),
                        today,
                    )
                    .await
            })
        })
        .collect();
    for task in tasks {
        task.await.unwrap().unwrap();
    }
    let (readers, reminders): (i64, i64) = sqlx::query_as(
        "SELECT (SELECT count(*) FROM readers), (SELECT count(*) FROM reminders WHERE status = 'pending')",
    )
    .fetch_one(&db.pool)
    .await
    .unwrap();
    assert_eq!((readers, reminders), (1, 1));
}
