use std::os::unix::fs::PermissionsExt;
use std::time::Duration;

use kopilka_test_support::ApiClient;
use kopilka_tests::{Running, kopilka};
use reqwest::StatusCode;
use sqlx::PgPool;

/// Reads `http://…` and `postgres://…` from dev's one line; the password, masked there, is
/// in the data folder.
fn addresses(line: &str, data_dir: &std::path::Path) -> (String, String) {
    let word = |prefix: &str| {
        line.split_whitespace()
            .find(|w| w.starts_with(prefix))
            .unwrap_or_else(|| panic!("no {prefix} in {line:?}"))
            .to_owned()
    };
    let masked = word("postgres://");
    assert!(
        masked.contains(":***@"),
        "the password is not printed: {line}"
    );
    let password = std::fs::read_to_string(data_dir.join("kopilka.password")).unwrap();
    (word("http://"), masked.replace("***", password.trim()))
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
    let (api_url, postgres_url) = addresses(&line, &data_dir);
    let api = ApiClient::new(api_url);
    assert_eq!(api.healthz().await.status, StatusCode::OK);
    assert_eq!(api.readyz().await.status, StatusCode::OK);

    // No Stripe key is set, so dev runs the simulator and says where.
    let simulator = line
        .split("Stripe simulator on ")
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .unwrap_or_else(|| panic!("no simulator in {line:?}"));
    let customers = reqwest::Client::new()
        .get(format!("{simulator}/v1/customers"))
        .bearer_auth("sk_test_kopilka_simulator")
        .send()
        .await
        .unwrap();
    assert_eq!(customers.status(), StatusCode::OK);

    // Nor a BTCPay Server: dev runs its simulator, whose store webhook delivers here.
    let btcpay = line
        .split("BTCPay simulator on ")
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .unwrap_or_else(|| panic!("no BTCPay simulator in {line:?}"));
    let defaults = kopilka_btcpay_sim::SimOptions::default();
    let invoice: serde_json::Value = reqwest::Client::new()
        .post(format!(
            "{btcpay}/api/v1/stores/{}/invoices",
            defaults.store_id
        ))
        .header("authorization", format!("token {}", defaults.api_key))
        .json(&serde_json::json!({"amount": "3.00", "currency": "EUR"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let invoice = invoice["id"].as_str().expect("an invoice").to_owned();
    let pool = PgPool::connect(&postgres_url).await.unwrap();
    kopilka_test_support::eventually(
        "the simulator's InvoiceCreated stored and processed",
        Duration::from_secs(30),
        || async {
            let status: Option<String> = sqlx::query_scalar(
                "SELECT status FROM provider_events
                 WHERE provider = 'btcpay' AND type = 'InvoiceCreated' AND object_id = $1",
            )
            .bind(&invoice)
            .fetch_optional(&pool)
            .await
            .unwrap();
            (status.as_deref() == Some("ignored")).then_some(())
        },
    )
    .await;

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
    let (api_url, postgres_url) = addresses(&line, &data_dir);
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

#[tokio::test]
async fn the_private_postgres_dies_with_a_killed_dev() {
    let folder = tempfile::tempdir().unwrap();
    std::fs::set_permissions(folder.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let data_dir = folder.path().join("pgdata");
    let mut command = kopilka(&["dev", "--addr", "127.0.0.1:0", "--data-dir"]);
    command.arg(&data_dir);
    let mut dev = Running::start(command);
    let line = dev.next_line(Duration::from_secs(90)).await;
    let (_, postgres_url) = addresses(&line, &data_dir);
    let port: u16 = postgres_url
        .rsplit(':')
        .next()
        .and_then(|rest| rest.split('/').next())
        .and_then(|p| p.parse().ok())
        .expect("a port in the Postgres URL");
    assert!(
        tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .is_ok()
    );

    dev.kill().await;
    kopilka_test_support::eventually(
        "Postgres to stop after its owner was killed",
        Duration::from_secs(30),
        || async {
            tokio::net::TcpStream::connect(("127.0.0.1", port))
                .await
                .is_err()
                .then_some(())
        },
    )
    .await;
}

#[tokio::test]
async fn without_postgres_binaries_dev_says_what_to_install() {
    let folder = tempfile::tempdir().unwrap();
    let mut command = kopilka(&["dev", "--addr", "127.0.0.1:0", "--data-dir"]);
    command
        .arg(folder.path().join("pgdata"))
        .env("KOPILKA_PG_BIN", folder.path());
    let out = kopilka_tests::run(command).await;
    assert!(!out.status.success());
    assert!(
        out.stderr.contains("apt-get install postgresql"),
        "{}",
        out.stderr
    );
    assert!(
        out.stdout.is_empty(),
        "nothing claims to run: {}",
        out.stdout
    );
}
