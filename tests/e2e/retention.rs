//! The retention sweep as an operator sees it: `kopilka worker --once --as-of` runs the
//! day's sweep on the worker's clock and says what it deleted.

use kopilka_test_support::{TestDatabase, fresh_database};
use kopilka_tests::{kopilka, run};
use secrecy::ExposeSecret;
use time::format_description::well_known::Rfc3339;
use time::{Duration, OffsetDateTime};
use uuid::Uuid;

async fn worker_once(db: &TestDatabase, at: OffsetDateTime) -> String {
    let mut command = kopilka(&["worker", "--once", "--as-of", &at.format(&Rfc3339).unwrap()]);
    command
        .env("KOPILKA_ENV", "test")
        .env("DATABASE_URL", db.url.expose_secret());
    let out = run(command).await;
    assert!(out.status.success(), "{}", out.stderr);
    out.stdout
}

async fn count(db: &TestDatabase, sql: &str) -> i64 {
    sqlx::query_scalar(sqlx::AssertSqlSafe(sql.to_owned()))
        .fetch_one(&db.pool)
        .await
        .unwrap()
}

#[tokio::test]
async fn the_worker_sweeps_what_outlived_its_window_as_of_its_clock() {
    let db = fresh_database().await;
    let t0 = OffsetDateTime::now_utc();
    let (donor, lonely, reminded) = (Uuid::new_v4(), Uuid::new_v4(), Uuid::new_v4());
    sqlx::query(
        "INSERT INTO readers (id, email, verified_at) VALUES
             ($1, 'donor@example.org', now()), ($2, 'lonely@example.org', NULL),
             ($3, 'reminded@example.org', NULL);
         ",
    )
    .bind(donor)
    .bind(lonely)
    .bind(reminded)
    .execute(&db.pool)
    .await
    .unwrap();
    sqlx::query(
        "INSERT INTO contributions (id, interval, amount_minor, currency, reader_id, status)
         VALUES (gen_random_uuid(), 'once', 2500, 'usd', $1, 'paid')",
    )
    .bind(donor)
    .execute(&db.pool)
    .await
    .unwrap();
    sqlx::query(
        "INSERT INTO reminders (id, reader_id, remind_on) VALUES (gen_random_uuid(), $1, $2)",
    )
    .bind(reminded)
    .bind((t0 + Duration::days(300)).date())
    .execute(&db.pool)
    .await
    .unwrap();
    sqlx::query(
        "INSERT INTO sessions (id, reader_id, token_hash, proof, expires_at)
         VALUES (gen_random_uuid(), $1, '\\x01', 'password', $2)",
    )
    .bind(donor)
    .bind(t0)
    .execute(&db.pool)
    .await
    .unwrap();
    sqlx::query("INSERT INTO login_throttles (key, failures, blocked_until) VALUES ($1, 9, $2)")
        .bind(format!("ip:{}", "d".repeat(64)))
        .bind(t0 + Duration::minutes(15))
        .execute(&db.pool)
        .await
        .unwrap();

    // Within every window: the sweep runs and deletes nothing; the job count is unchanged.
    let early = worker_once(&db, t0 + Duration::hours(1)).await;
    assert!(early.contains(" 0 done, 0 to retry, 0 failed"), "{early}");
    assert!(
        early.contains("retention sweep: 0 sessions, 0 links, 0 throttles, 0 readers"),
        "{early}"
    );
    assert_eq!(count(&db, "SELECT count(*) FROM readers").await, 3);
    assert_eq!(count(&db, "SELECT count(*) FROM login_throttles").await, 1);

    // 40 days on: the ended session, the spent throttle and the unverified reader with
    // nothing linked are gone; the donor and the reader waiting for a reminder stay.
    let late = worker_once(&db, t0 + Duration::days(40)).await;
    assert!(
        late.contains("retention sweep: 1 sessions, 0 links, 1 throttles, 1 readers"),
        "{late}"
    );
    let left: Vec<Uuid> = sqlx::query_scalar("SELECT id FROM readers ORDER BY email")
        .fetch_all(&db.pool)
        .await
        .unwrap();
    assert_eq!(left, [donor, reminded]);
    assert_eq!(count(&db, "SELECT count(*) FROM sessions").await, 0);
    assert_eq!(count(&db, "SELECT count(*) FROM login_throttles").await, 0);

    // The same day again: the sweep ran already.
    let again = worker_once(&db, t0 + Duration::days(40)).await;
    assert!(!again.contains("retention sweep"), "{again}");
}
