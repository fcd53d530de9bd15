//! The daily retention sweep, driven by the worker's clock: each kind of row stays until
//! its window in `[retention]` has passed and is gone after; readers with anything linked
//! are never deleted; a sweep cut off half-way leaves whole rows and its retry finishes.

use kopilka_jobs::{RETENTION_SWEEP, RunSummary, Worker, run_due};
use kopilka_test_support::{TestDatabase, fresh_database, test_settings};
use time::{Duration, OffsetDateTime};
use uuid::Uuid;

fn worker(db: &TestDatabase, mail: &tempfile::TempDir) -> Worker {
    let mut settings = test_settings();
    settings.smtp.file_dir = mail.path().to_owned();
    Worker::new(db.pool.clone(), &settings).expect("a worker")
}

async fn count(db: &TestDatabase, sql: &str) -> i64 {
    sqlx::query_scalar(sqlx::AssertSqlSafe(sql.to_owned()))
        .fetch_one(&db.pool)
        .await
        .unwrap()
}

async fn exec(db: &TestDatabase, sql: &str, binds: &[OffsetDateTime]) {
    let mut query = sqlx::query(sqlx::AssertSqlSafe(sql.to_owned()));
    for bind in binds {
        query = query.bind(*bind);
    }
    query.execute(&db.pool).await.unwrap();
}

async fn reader(db: &TestDatabase, email: &str, verified: Option<OffsetDateTime>) -> Uuid {
    let id = Uuid::new_v4();
    sqlx::query("INSERT INTO readers (id, email, verified_at) VALUES ($1, $2, $3)")
        .bind(id)
        .bind(email)
        .bind(verified)
        .execute(&db.pool)
        .await
        .unwrap();
    id
}

async fn contribution(db: &TestDatabase, reader: Uuid) -> Uuid {
    let id = Uuid::new_v4();
    sqlx::query(
        "INSERT INTO contributions (id, interval, amount_minor, currency, reader_id, status)
         VALUES ($1, 'once', 2500, 'usd', $2, 'paid')",
    )
    .bind(id)
    .bind(reader)
    .execute(&db.pool)
    .await
    .unwrap();
    id
}

/// One worker run as of `at`, which must run the day's sweep.
async fn sweep_at(worker: &Worker, at: OffsetDateTime) -> RunSummary {
    let run = run_due(worker, at).await.expect("the worker runs");
    assert_eq!((run.sweeps, run.retrying, run.failed), (1, 0, 0), "{run:?}");
    run
}

#[tokio::test]
async fn each_window_deletes_only_what_is_past_it_and_keeps_readers_with_anything_linked() {
    let db = fresh_database().await;
    let mail = tempfile::tempdir().unwrap();
    let worker = worker(&db, &mail);
    let t0 = OffsetDateTime::now_utc();

    // Readers: verified with a gift; unverified with nothing; unverified with a reminder;
    // unverified with a gift (most donors never sign in); unverified named by a stored event.
    let verified = reader(&db, "verified@example.org", Some(t0)).await;
    let lonely = reader(&db, "lonely@example.org", None).await;
    let reminded = reader(&db, "reminded@example.org", None).await;
    let donor = reader(&db, "donor@example.org", None).await;
    let evented = reader(&db, "evented@example.org", None).await;
    contribution(&db, verified).await;
    let gift = contribution(&db, donor).await;
    sqlx::query("INSERT INTO reminders (id, reader_id, remind_on) VALUES ($1, $2, $3)")
        .bind(Uuid::new_v4())
        .bind(reminded)
        .bind((t0 + Duration::days(300)).date())
        .execute(&db.pool)
        .await
        .unwrap();
    sqlx::query(
        "INSERT INTO provider_events (id, type, created, livemode, payload, reader_id)
         VALUES ('evt_1', 'customer.updated', 1, false, '{}', $1)",
    )
    .bind(evented)
    .execute(&db.pool)
    .await
    .unwrap();
    // The lonely reader's own rows go with it.
    sqlx::query(
        "INSERT INTO credentials (reader_id, password_hash, set_at) VALUES ($1, 'x', now())",
    )
    .bind(lonely)
    .execute(&db.pool)
    .await
    .unwrap();

    // Sessions: one expired now, one revoked now, one live for 60 days.
    exec(
        &db,
        &format!(
            "INSERT INTO sessions (id, reader_id, token_hash, proof, expires_at, revoked_at) VALUES
             (gen_random_uuid(), '{verified}', '\\x01', 'password', $1, NULL),
             (gen_random_uuid(), '{verified}', '\\x02', 'password', $2, $1),
             (gen_random_uuid(), '{verified}', '\\x03', 'mailbox', $2, NULL)"
        ),
        &[t0, t0 + Duration::days(60)],
    )
    .await;
    // Links: one used now, one expiring now, one live for a day.
    exec(
        &db,
        &format!(
            "INSERT INTO email_links (id, reader_id, purpose, token_hash, expires_at, used_at) VALUES
             (gen_random_uuid(), '{verified}', 'sign_in', '\\x11', $2, $1),
             (gen_random_uuid(), '{verified}', 'sign_in', '\\x12', $1, NULL),
             (gen_random_uuid(), '{verified}', 'verify', '\\x13', $2, NULL)"
        ),
        &[t0, t0 + Duration::days(1)],
    )
    .await;
    // Throttles: one blocked for another hour, one counting without a block.
    exec(
        &db,
        &format!(
            "INSERT INTO login_throttles (key, failures, blocked_until) VALUES
             ('ip:{}', 40, $1), ('address:{}', 2, NULL)",
            "a".repeat(64),
            "b".repeat(64)
        ),
        &[t0 + Duration::hours(1)],
    )
    .await;
    // Email sends: a sent one with its reader and an error text; a pending one.
    exec(
        &db,
        &format!(
            "INSERT INTO email_sends (logical_id, kind, reader_id, status, last_error) VALUES
             ('receipt-ch_1', 'mail.receipt', '{verified}', 'sent', '250 ok'),
             ('receipt-ch_2', 'mail.receipt', '{verified}', 'pending', NULL)"
        ),
        &[],
    )
    .await;
    // Jobs: one done, one failed (the dead letter stays), one queued for later.
    exec(
        &db,
        "INSERT INTO jobs (id, kind, payload, status, run_at) VALUES
         (gen_random_uuid(), 'mail.receipt', '{}', 'done', now()),
         (gen_random_uuid(), 'mail.receipt', '{}', 'failed', now()),
         (gen_random_uuid(), 'mail.receipt', '{}', 'queued', now() + interval '1000 days')",
        &[],
    )
    .await;
    // A checkout's idempotency fingerprint.
    sqlx::query(
        "INSERT INTO checkout_requests (idempotency_key, request_hash, contribution_id)
         VALUES ('key-1', 'hmac', $1)",
    )
    .bind(gift)
    .execute(&db.pool)
    .await
    .unwrap();

    // A used one-click plan link that expires in three days.
    exec(
        &db,
        "INSERT INTO plan_link_uses (use_key, link_expires_at) VALUES ('use-1', $1)",
        &[t0 + Duration::days(3)],
    )
    .await;

    let readers = "SELECT count(*) FROM readers";
    let sessions = "SELECT count(*) FROM sessions";
    let links = "SELECT count(*) FROM email_links";
    let throttles = "SELECT count(*) FROM login_throttles";
    let linked_sends = "SELECT count(*) FROM email_sends WHERE reader_id IS NOT NULL";
    let other_jobs = "SELECT count(*) FROM jobs WHERE kind <> 'retention.sweep'";
    let requests = "SELECT count(*) FROM checkout_requests";

    // Two hours on: every row is inside its window.
    let first = sweep_at(&worker, t0 + Duration::hours(2)).await;
    assert_eq!(first.swept, kopilka_jobs::Swept::default(), "{first:?}");
    assert_eq!(count(&db, readers).await, 5);
    assert_eq!(count(&db, sessions).await, 3);
    assert_eq!(count(&db, links).await, 3);
    assert_eq!(count(&db, throttles).await, 2);
    assert_eq!(count(&db, requests).await, 1);
    // A second run the same day sweeps no more.
    let again = run_due(&worker, t0 + Duration::hours(2)).await.unwrap();
    assert_eq!(again.sweeps, 0, "{again:?}");

    // A day and three hours on: the spent throttles (24 h after the backoff) and the
    // checkout fingerprint (24 h) are gone; sessions and links wait a week.
    let second = sweep_at(&worker, t0 + Duration::hours(27)).await;
    assert_eq!(
        (second.swept.throttles, second.swept.checkout_requests),
        (2, 1)
    );
    assert_eq!(count(&db, throttles).await, 0);
    assert_eq!(count(&db, requests).await, 0);
    assert_eq!(
        count(
            &db,
            &format!("SELECT count(*) FROM contributions WHERE id = '{gift}'")
        )
        .await,
        1,
        "the contribution stays"
    );
    assert_eq!(count(&db, sessions).await, 3);
    assert_eq!(count(&db, links).await, 3);

    // Seven days and a bit after they ended: the expired and revoked sessions, the used
    // and expired links (and, a day later, the one that expired unused).
    let third = sweep_at(&worker, t0 + Duration::days(7) + Duration::hours(1)).await;
    assert_eq!(
        (third.swept.sessions, third.swept.links),
        (2, 2),
        "{third:?}"
    );
    assert_eq!(
        third.swept.plan_link_uses, 1,
        "the plan link expired on day 3"
    );
    assert_eq!(count(&db, "SELECT count(*) FROM plan_link_uses").await, 0);
    assert_eq!(count(&db, sessions).await, 1, "the live session stays");
    assert_eq!(count(&db, links).await, 1);
    let fourth = sweep_at(&worker, t0 + Duration::days(8) + Duration::hours(1)).await;
    assert_eq!(fourth.swept.links, 1);

    // Finished jobs after 14 days; the dead letter and the queued job stay.
    assert_eq!(count(&db, other_jobs).await, 3);
    let fifth = sweep_at(&worker, t0 + Duration::days(15)).await;
    assert!(fifth.swept.jobs >= 1, "{fifth:?}");
    assert_eq!(count(&db, other_jobs).await, 2);
    assert_eq!(
        count(&db, "SELECT count(*) FROM jobs WHERE status = 'failed'").await,
        1
    );

    // 30 days after they appeared, only the unverified reader with nothing linked goes,
    // with its credentials.
    let sixth = sweep_at(&worker, t0 + Duration::days(29)).await;
    assert_eq!(sixth.swept.readers, 0, "not before its window");
    let seventh = sweep_at(&worker, t0 + Duration::days(31)).await;
    assert_eq!(seventh.swept.readers, 1, "{seventh:?}");
    let left: Vec<Uuid> = sqlx::query_scalar("SELECT id FROM readers ORDER BY email")
        .fetch_all(&db.pool)
        .await
        .unwrap();
    // In the order of their addresses.
    let kept = vec![donor, evented, reminded, verified];
    assert_eq!(left, kept, "every reader with something linked stays");
    assert_eq!(count(&db, "SELECT count(*) FROM credentials").await, 0);

    // 90 days on, the send keeps its logical id and status and forgets reader and error.
    assert_eq!(count(&db, linked_sends).await, 2);
    let eighth = sweep_at(&worker, t0 + Duration::days(91)).await;
    assert_eq!(eighth.swept.email_sends, 1, "{eighth:?}");
    let sends: Vec<(String, String, Option<Uuid>, Option<String>)> = sqlx::query_as(
        "SELECT logical_id, status, reader_id, last_error FROM email_sends ORDER BY logical_id",
    )
    .fetch_all(&db.pool)
    .await
    .unwrap();
    assert_eq!(
        sends,
        [
            ("receipt-ch_1".into(), "sent".into(), None, None),
            (
                "receipt-ch_2".into(),
                "pending".into(),
                Some(verified),
                None
            ),
        ]
    );
    // The live session is gone a week after it expired (day 67).
    assert_eq!(count(&db, sessions).await, 0);
    assert_eq!(count(&db, readers).await, 4, "still every linked reader");
}

#[tokio::test]
async fn a_sweep_cut_off_half_way_leaves_whole_rows_and_its_retry_finishes() {
    let db = fresh_database().await;
    let mail = tempfile::tempdir().unwrap();
    let worker = worker(&db, &mail);
    let t0 = OffsetDateTime::now_utc();
    let someone = reader(&db, "someone@example.org", Some(t0)).await;
    exec(
        &db,
        &format!(
            "INSERT INTO sessions (id, reader_id, token_hash, proof, expires_at) VALUES
             (gen_random_uuid(), '{someone}', '\\x01', 'password', $1);
             "
        ),
        &[t0],
    )
    .await;
    exec(
        &db,
        &format!(
            "INSERT INTO email_links (id, reader_id, purpose, token_hash, expires_at) VALUES
             (gen_random_uuid(), '{someone}', 'sign_in', '\\x11', $1)"
        ),
        &[t0],
    )
    .await;
    let lonely = reader(&db, "lonely@example.org", None).await;
    sqlx::query(
        "INSERT INTO credentials (reader_id, password_hash, set_at) VALUES ($1, 'x', now())",
    )
    .bind(lonely)
    .execute(&db.pool)
    .await
    .unwrap();
    // The database refuses to delete links (a lock timeout, a fault, a bug).
    sqlx::raw_sql(
        "CREATE FUNCTION refuse() RETURNS trigger LANGUAGE plpgsql AS
             $$ BEGIN RAISE EXCEPTION 'refused'; END $$;
         CREATE TRIGGER refuse BEFORE DELETE ON email_links FOR EACH ROW EXECUTE FUNCTION refuse();",
    )
    .execute(&db.pool)
    .await
    .unwrap();

    let at = t0 + Duration::days(40);
    let cut = run_due(&worker, at).await.unwrap();
    assert_eq!((cut.sweeps, cut.retrying), (0, 1), "{cut:?}");
    // What went before the fault is gone for good; everything else is whole.
    assert_eq!(
        count(&db, "SELECT count(*) FROM sessions").await,
        0,
        "the sessions step committed"
    );
    assert_eq!(count(&db, "SELECT count(*) FROM email_links").await, 1);
    assert_eq!(count(&db, "SELECT count(*) FROM readers").await, 2);
    assert_eq!(count(&db, "SELECT count(*) FROM credentials").await, 1);
    let error: String =
        sqlx::query_scalar("SELECT last_error FROM jobs WHERE kind = $1 AND status = 'queued'")
            .bind(RETENTION_SWEEP)
            .fetch_one(&db.pool)
            .await
            .unwrap();
    assert!(error.starts_with("links:"), "{error}");

    // The fault clears; the retry (due after its backoff) finishes the day's sweep.
    sqlx::raw_sql("DROP TRIGGER refuse ON email_links")
        .execute(&db.pool)
        .await
        .unwrap();
    let retry = run_due(&worker, at + Duration::minutes(5)).await.unwrap();
    assert_eq!(retry.sweeps, 1, "{retry:?}");
    assert_eq!(
        (retry.swept.links, retry.swept.readers),
        (1, 1),
        "{retry:?}"
    );
    assert_eq!(count(&db, "SELECT count(*) FROM credentials").await, 0);
    assert_eq!(count(&db, "SELECT count(*) FROM readers").await, 1);
}
