use std::os::unix::fs::PermissionsExt;
use std::time::Duration;

use kopilka_test_support::ApiClient;
use kopilka_tests::{Running, kopilka};
use reqwest::StatusCode;
use sqlx::PgPool;

/// Reads `http://…` and `postgres://…` from dev's one line.
fn addresses(line: &str) -> (String, String) {
    let word = |prefix: &str| {
        line.split_whitespace()
            .find(|w| w.starts_with(prefix))
            .unwrap_or_else(|| panic!("no {prefix} in {line:?}"))
            .to_owned()
    };
    (word("http://"), word("postgres://"))
}

#[tokio::test]
async fn dev_runs_everything_and_keeps_its_data_across_restarts() {
    let folder = tempfile::tempdir().unwrap();
    // As root, the private cluster runs as `postgres`, who must reach the folder.
    std::fs::set_permissions(folder.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let data_dir = folder.path().join("pgdata");
    let start = || {
        let mut command = kopilka(&["dev", "--addr", "127.0.0.1:0", "--data-dir"]);
        command.arg(&data_dir);
        Running::start(command)
    };

    let mut dev = start();
    let line = dev.next_line(Duration::from_secs(90)).await;
    assert!(line.starts_with("kopilka dev: "), "{line}");
    let (api_url, postgres_url) = addresses(&line);
    let api = ApiClient::new(api_url);
    assert_eq!(api.healthz().await.status, StatusCode::OK);
    assert_eq!(api.readyz().await.status, StatusCode::OK);

    let pool = PgPool::connect(&postgres_url).await.unwrap();
    sqlx::raw_sql("CREATE TABLE survives (note text); INSERT INTO survives VALUES ('still here')")
        .execute(&pool)
        .await
        .unwrap();
    pool.close().await;
    assert!(dev.terminate(Duration::from_secs(60)).await.success());

    let mut dev = start();
    let line = dev.next_line(Duration::from_secs(90)).await;
    assert!(
        line.contains("0 migration(s) applied now"),
        "migrations ran once: {line}"
    );
    let (api_url, postgres_url) = addresses(&line);
    assert_eq!(
        ApiClient::new(api_url).readyz().await.status,
        StatusCode::OK
    );
    let pool = PgPool::connect(&postgres_url).await.unwrap();
    let note: String = sqlx::query_scalar("SELECT note FROM survives")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(note, "still here");
    pool.close().await;
    assert!(dev.terminate(Duration::from_secs(60)).await.success());
}
