//! The store against a real Postgres: migrations, transactions, the schema's triggers, and
//! the private cluster stopping and starting.

use std::time::Duration;

use futures_util::FutureExt as _;
use kopilka_store::{PrivatePostgres, StoreError, create_database, migrate, ping, transaction};
use kopilka_test_support::{fresh_database, server_url};
use secrecy::ExposeSecret;
use sqlx::PgPool;

async fn empty_database() -> PgPool {
    // Named like every test database (kt_<unix seconds>_…) so a shared server's sweep of
    // stale ones leaves it alone.
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap();
    let name = format!("kt_{}_empty_{}", now.as_secs(), now.as_nanos());
    assert!(
        create_database(&server_url("postgres"), &name, None)
            .await
            .unwrap()
    );
    PgPool::connect(server_url(&name).expose_secret())
        .await
        .unwrap()
}

#[tokio::test]
async fn migrating_twice_applies_once() {
    let pool = empty_database().await;
    let first = migrate(&pool).await.unwrap();
    assert_eq!(first.applied.len(), first.known);
    assert!(first.applied.iter().any(|m| m.description == "bootstrap"));
    let second = migrate(&pool).await.unwrap();
    assert!(second.applied.is_empty());
    let rows: i64 = sqlx::query_scalar("SELECT count(*) FROM _sqlx_migrations")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(usize::try_from(rows).unwrap(), first.known);
}

#[tokio::test]
async fn a_transaction_commits_on_ok_and_rolls_back_on_err() {
    let db = fresh_database().await;
    sqlx::query("CREATE TABLE note (body text NOT NULL)")
        .execute(&db.pool)
        .await
        .unwrap();

    transaction(&db.pool, |conn| {
        async move {
            sqlx::query("INSERT INTO note VALUES ('kept')")
                .execute(&mut *conn)
                .await?;
            Ok::<_, StoreError>(())
        }
        .boxed()
    })
    .await
    .unwrap();

    let failed: Result<(), StoreError> = transaction(&db.pool, |conn| {
        async move {
            sqlx::query("INSERT INTO note VALUES ('lost')")
                .execute(&mut *conn)
                .await?;
            // The second statement fails, so the first must not land either.
            sqlx::query("INSERT INTO note VALUES (NULL)")
                .execute(&mut *conn)
                .await?;
            Ok(())
        }
        .boxed()
    })
    .await;
    assert!(matches!(failed, Err(StoreError::Database(_))));

    let bodies: Vec<String> = sqlx::query_scalar("SELECT body FROM note")
        .fetch_all(&db.pool)
        .await
        .unwrap();
    assert_eq!(bodies, ["kept"]);
}

#[tokio::test]
async fn updated_at_follows_real_changes_only() {
    let db = fresh_database().await;
    sqlx::raw_sql(
        "CREATE TABLE plan_note (id int PRIMARY KEY, body text, \
           updated_at timestamptz NOT NULL DEFAULT '2000-01-01');
         SELECT kopilka_manage_updated_at('plan_note');
         INSERT INTO plan_note (id, body) VALUES (1, 'a');",
    )
    .execute(&db.pool)
    .await
    .unwrap();
    let updated_at = || async {
        sqlx::query_scalar::<_, time::OffsetDateTime>(
            "SELECT updated_at FROM plan_note WHERE id = 1",
        )
        .fetch_one(&db.pool)
        .await
        .unwrap()
    };
    let initial = updated_at().await;

    sqlx::query("UPDATE plan_note SET body = 'a' WHERE id = 1")
        .execute(&db.pool)
        .await
        .unwrap();
    assert_eq!(
        updated_at().await,
        initial,
        "a no-op update keeps updated_at"
    );

    sqlx::query("UPDATE plan_note SET body = 'b' WHERE id = 1")
        .execute(&db.pool)
        .await
        .unwrap();
    assert!(updated_at().await > initial, "a change moves updated_at");
}

#[tokio::test]
async fn append_only_tables_refuse_updates_and_deletes() {
    let db = fresh_database().await;
    sqlx::raw_sql(
        "CREATE TABLE ledger_probe (id int PRIMARY KEY, amount_minor bigint NOT NULL);
         SELECT kopilka_make_append_only('ledger_probe');
         INSERT INTO ledger_probe VALUES (1, 500);",
    )
    .execute(&db.pool)
    .await
    .unwrap();
    for statement in [
        "UPDATE ledger_probe SET amount_minor = 1 WHERE id = 1",
        "DELETE FROM ledger_probe WHERE id = 1",
    ] {
        let err = sqlx::query(statement).execute(&db.pool).await.unwrap_err();
        assert!(err.to_string().contains("immutable"), "{statement}: {err}");
    }
    let amount: i64 = sqlx::query_scalar("SELECT amount_minor FROM ledger_probe WHERE id = 1")
        .fetch_one(&db.pool)
        .await
        .unwrap();
    assert_eq!(amount, 500);
}

#[tokio::test]
async fn a_private_cluster_stops_and_starts_on_the_same_port() {
    let cluster = tokio::task::spawn_blocking(PrivatePostgres::start_throwaway)
        .await
        .unwrap()
        .unwrap();
    let data_dir = cluster.data_dir().to_owned();
    let settings = kopilka_test_support::test_settings();
    let pool = kopilka_store::connect(&settings.database, &cluster.url("postgres")).unwrap();
    ping(&pool).await.unwrap();

    let cluster = tokio::task::spawn_blocking(move || {
        cluster.stop();
        cluster
    })
    .await
    .unwrap();
    let down = ping(&pool).await.unwrap_err();
    assert!(down.is_unavailable(), "{down:?}");

    let port = cluster.port();
    let cluster = tokio::task::spawn_blocking(move || {
        cluster.start().unwrap();
        cluster
    })
    .await
    .unwrap();
    assert_eq!(cluster.port(), port);
    ping(&pool).await.unwrap();

    pool.close().await;
    tokio::task::spawn_blocking(move || drop(cluster))
        .await
        .unwrap();
    assert!(!data_dir.exists(), "a throwaway cluster removes its folder");
}

#[tokio::test]
async fn a_persistent_cluster_keeps_its_data() {
    let parent = tempfile::tempdir().unwrap();
    // The server may run as another user (as root: postgres), who must reach the folder.
    std::fs::set_permissions(
        parent.path(),
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .unwrap();
    let data_dir = parent.path().join("pgdata");

    let start = |dir: std::path::PathBuf| async move {
        tokio::task::spawn_blocking(move || PrivatePostgres::start_persistent(&dir).unwrap())
            .await
            .unwrap()
    };
    let cluster = start(data_dir.clone()).await;
    let pool = PgPool::connect(cluster.url("postgres").expose_secret())
        .await
        .unwrap();
    sqlx::raw_sql("CREATE TABLE kept (v int); INSERT INTO kept VALUES (42)")
        .execute(&pool)
        .await
        .unwrap();
    pool.close().await;
    tokio::task::spawn_blocking(move || drop(cluster))
        .await
        .unwrap();
    assert!(
        data_dir.join("PG_VERSION").exists(),
        "a persistent cluster keeps its folder"
    );

    let cluster = start(data_dir.clone()).await;
    let pool = PgPool::connect(cluster.url("postgres").expose_secret())
        .await
        .unwrap();
    let values: Vec<i32> = sqlx::query_scalar("SELECT v FROM kept")
        .fetch_all(&pool)
        .await
        .unwrap();
    assert_eq!(values, [42]);
    pool.close().await;
    tokio::time::timeout(
        Duration::from_secs(60),
        tokio::task::spawn_blocking(move || drop(cluster)),
    )
    .await
    .unwrap()
    .unwrap();
}

/// Two instances share one budget through Postgres: each admits from memory, and after a
/// flush each sees the other's hits; a failed flush keeps its counts for the next one.
#[tokio::test]
async fn two_instances_share_a_budget_through_postgres() {
    use kopilka_store::limits::{Budget, Limiter, Refusal};
    let db = fresh_database().await;
    let budget = Budget {
        limit: 4,
        window_secs: 3_600,
    };
    let now = 7_200;
    let (a, b) = (Limiter::new(1_000), Limiter::new(1_000));
    for _ in 0..2 {
        a.admit(&[("global:test", budget)], now).unwrap();
    }
    b.admit(&[("global:test", budget)], now).unwrap();
    a.flush(&db.pool, now).await.unwrap();
    b.flush(&db.pool, now).await.unwrap();
    // b now knows of a's two: one more is the fourth, then both refuse once a has read back.
    b.admit(&[("global:test", budget)], now).unwrap();
    assert!(matches!(
        b.admit(&[("global:test", budget)], now),
        Err(Refusal::Over { .. })
    ));
    b.flush(&db.pool, now).await.unwrap();
    // a last read 2: it admits one more before its next flush (the documented overshoot:
    // what one instance admits in one interval), then knows of all five and refuses.
    a.admit(&[("global:test", budget)], now).unwrap();
    a.flush(&db.pool, now).await.unwrap();
    assert!(matches!(
        a.admit(&[("global:test", budget)], now),
        Err(Refusal::Over { .. })
    ));
    let hits: i64 = sqlx::query_scalar("SELECT hits FROM rate_limits WHERE key = 'global:test'")
        .fetch_one(&db.pool)
        .await
        .unwrap();
    assert_eq!(hits, 5);
    // A flush that fails keeps its counts: they land with the next one.
    let c = Limiter::new(1_000);
    c.admit(&[("client:x", budget)], now).unwrap();
    let closed = sqlx::PgPool::connect_lazy("postgres://nobody@127.0.0.1:1/none").unwrap();
    assert!(c.flush(&closed, now).await.is_err());
    c.flush(&db.pool, now).await.unwrap();
    let hits: i64 = sqlx::query_scalar("SELECT hits FROM rate_limits WHERE key = 'client:x'")
        .fetch_one(&db.pool)
        .await
        .unwrap();
    assert_eq!(hits, 1);
    // Ended windows are deleted.
    assert_eq!(
        kopilka_store::limits::forget_ended(&db.pool, now + 3_600 + 61)
            .await
            .unwrap(),
        2
    );
}
