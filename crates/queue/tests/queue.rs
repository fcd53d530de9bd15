//! The job queue against a real Postgres: claims are exclusive across concurrent workers,
//! failures back off and end in the dead letter, enqueueing rides the caller's transaction.

use std::collections::HashSet;

use kopilka_queue::{NewJob, claim, complete, enqueue, fail, retry_failed};
use kopilka_test_support::fresh_database;
use serde_json::json;
use time::OffsetDateTime;

#[tokio::test]
async fn concurrent_workers_never_claim_one_job_twice() {
    let db = fresh_database().await;
    let mut conn = db.pool.acquire().await.unwrap();
    for n in 0..40 {
        enqueue(&mut conn, &NewJob::new("probe", json!({"n": n})))
            .await
            .unwrap();
    }
    drop(conn);
    let now = OffsetDateTime::now_utc();
    let workers = (0..4).map(|_| {
        let pool = db.pool.clone();
        tokio::spawn(async move {
            let mut mine = Vec::new();
            while let Some(job) = claim(&pool, now).await.unwrap() {
                mine.push(job.payload["n"].as_i64().unwrap());
                complete(&pool, &job).await.unwrap();
            }
            mine
        })
    });
    let mut all = Vec::new();
    for worker in workers {
        all.extend(worker.await.unwrap());
    }
    let unique: HashSet<i64> = all.iter().copied().collect();
    assert_eq!(all.len(), 40, "every job ran once");
    assert_eq!(unique.len(), 40);
}

#[tokio::test]
async fn a_job_that_fails_three_times_then_succeeds_is_done_and_one_that_keeps_failing_is_dead() {
    let db = fresh_database().await;
    let mut conn = db.pool.acquire().await.unwrap();
    enqueue(
        &mut conn,
        &NewJob {
            max_attempts: 5,
            ..NewJob::new("flaky", json!({}))
        },
    )
    .await
    .unwrap();
    let mut now = OffsetDateTime::now_utc();
    for attempt in 1..=3 {
        let job = claim(&db.pool, now).await.unwrap().expect("due");
        assert_eq!(job.attempt, attempt);
        assert!(
            fail(&db.pool, &job, "smtp 421", now).await.unwrap(),
            "retried"
        );
        assert!(
            claim(&db.pool, now).await.unwrap().is_none(),
            "not due again at once"
        );
        now += kopilka_queue::backoff(attempt) + time::Duration::SECOND;
    }
    let job = claim(&db.pool, now)
        .await
        .unwrap()
        .expect("due after backoff");
    complete(&db.pool, &job).await.unwrap();
    let status: String = sqlx::query_scalar("SELECT status FROM jobs")
        .fetch_one(&db.pool)
        .await
        .unwrap();
    assert_eq!(status, "done");

    enqueue(
        &mut conn,
        &NewJob {
            max_attempts: 2,
            ..NewJob::new("poison", json!({}))
        },
    )
    .await
    .unwrap();
    for _ in 0..2 {
        now += time::Duration::hours(2);
        let job = claim(&db.pool, now).await.unwrap().expect("due");
        fail(&db.pool, &job, "bad payload", now).await.unwrap();
    }
    let (status, error): (String, String) =
        sqlx::query_as("SELECT status, last_error FROM jobs WHERE kind = 'poison'")
            .fetch_one(&db.pool)
            .await
            .unwrap();
    assert_eq!((status.as_str(), error.as_str()), ("failed", "bad payload"));
    assert_eq!(retry_failed(&db.pool, Some("poison")).await.unwrap(), 1);
    assert!(
        claim(&db.pool, OffsetDateTime::now_utc() + time::Duration::SECOND)
            .await
            .unwrap()
            .is_some()
    );
}

#[tokio::test]
async fn a_job_exists_only_if_its_transaction_commits_and_a_dedup_key_enqueues_once() {
    let db = fresh_database().await;
    let mut tx = db.pool.begin().await.unwrap();
    enqueue(&mut tx, &NewJob::new("rolled_back", json!({})))
        .await
        .unwrap();
    tx.rollback().await.unwrap();
    let mut conn = db.pool.acquire().await.unwrap();
    let first = enqueue(
        &mut conn,
        &NewJob::new("once", json!({})).dedup("event:evt_1"),
    )
    .await
    .unwrap();
    let second = enqueue(
        &mut conn,
        &NewJob::new("once", json!({})).dedup("event:evt_1"),
    )
    .await
    .unwrap();
    assert!(first.is_some() && second.is_none());
    let kinds: Vec<String> = sqlx::query_scalar("SELECT kind FROM jobs")
        .fetch_all(&db.pool)
        .await
        .unwrap();
    assert_eq!(kinds, ["once"]);
}

#[tokio::test]
async fn a_worker_that_died_mid_job_leaves_it_to_another_after_the_lease() {
    let db = fresh_database().await;
    let mut conn = db.pool.acquire().await.unwrap();
    enqueue(&mut conn, &NewJob::new("long", json!({})))
        .await
        .unwrap();
    let now = OffsetDateTime::now_utc();
    let first = claim(&db.pool, now).await.unwrap().expect("claimed");
    assert!(
        claim(&db.pool, now).await.unwrap().is_none(),
        "held while the lease runs"
    );
    let later = now + kopilka_queue::LEASE + time::Duration::SECOND;
    let again = claim(&db.pool, later).await.unwrap().expect("taken over");
    assert_eq!((again.id, again.attempt), (first.id, 2));
}

/// A listener on the queue's channel, as a worker has.
async fn listening(pool: &sqlx::PgPool) -> sqlx::postgres::PgListener {
    let mut listener = sqlx::postgres::PgListener::connect_with(pool)
        .await
        .unwrap();
    listener.listen(kopilka_queue::CHANNEL).await.unwrap();
    listener
}

/// The next notification, within five seconds.
async fn next_note(listener: &mut sqlx::postgres::PgListener) -> sqlx::postgres::PgNotification {
    tokio::time::timeout(std::time::Duration::from_secs(5), listener.recv())
        .await
        .expect("a notification in time")
        .unwrap()
}

#[tokio::test]
async fn enqueueing_notifies_listening_workers() {
    let db = fresh_database().await;
    let mut listener = listening(&db.pool).await;
    let mut conn = db.pool.acquire().await.unwrap();
    enqueue(&mut conn, &NewJob::new("wake", json!({})))
        .await
        .unwrap();
    assert_eq!(next_note(&mut listener).await.payload(), "wake");
}

#[tokio::test]
async fn a_quiet_job_sends_no_notify_and_wakeups_send_one_after_the_commit() {
    let db = fresh_database().await;
    let mut listener = listening(&db.pool).await;
    let mut conn = db.pool.acquire().await.unwrap();
    for n in 0..3 {
        enqueue(&mut conn, &NewJob::new("hot", json!({"n": n})).quiet())
            .await
            .unwrap();
    }
    let silent = tokio::time::timeout(std::time::Duration::from_millis(500), listener.recv()).await;
    assert!(silent.is_err(), "a quiet job notifies nobody");

    let wakeups = kopilka_queue::Wakeups::new(db.pool.clone());
    wakeups.wake();
    assert_eq!(next_note(&mut listener).await.payload(), "wake");
    // Three jobs due, claimable as usual.
    let now = OffsetDateTime::now_utc();
    for _ in 0..3 {
        assert!(claim(&db.pool, now).await.unwrap().is_some());
    }
}

#[tokio::test]
async fn completing_a_job_its_handler_completed_writes_nothing() {
    let db = fresh_database().await;
    let mut conn = db.pool.acquire().await.unwrap();
    enqueue(&mut conn, &NewJob::new("once", json!({})))
        .await
        .unwrap();
    let job = claim(&db.pool, OffsetDateTime::now_utc())
        .await
        .unwrap()
        .unwrap();
    kopilka_queue::complete_in(&mut conn, &job).await.unwrap();
    let version = || async {
        sqlx::query_scalar::<_, String>("SELECT xmin::text FROM jobs WHERE id = $1")
            .bind(job.id.as_uuid())
            .fetch_one(&db.pool)
            .await
            .unwrap()
    };
    let before = version().await;
    complete(&db.pool, &job).await.unwrap();
    assert_eq!(version().await, before, "no second row version");
    let status: String = sqlx::query_scalar("SELECT status FROM jobs WHERE id = $1")
        .bind(job.id.as_uuid())
        .fetch_one(&db.pool)
        .await
        .unwrap();
    assert_eq!(status, "done");
}
