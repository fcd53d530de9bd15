use kopilka_test_support::fresh_database;
use kopilka_tests::{kopilka, run};
use secrecy::ExposeSecret;

#[tokio::test]
async fn help_is_the_map_of_every_command() {
    let out = run(kopilka(&["--help"])).await;
    assert!(out.status.success());
    for command in [
        "serve",
        "worker",
        "migrate",
        "dev",
        "stripe-sim",
        "btcpay-sim",
        "admin",
    ] {
        assert!(
            out.stdout.contains(command),
            "--help mentions {command}: {}",
            out.stdout
        );
    }
    let admin = run(kopilka(&["admin", "--help"])).await;
    assert!(
        admin.status.success() && admin.stdout.contains("config"),
        "{}",
        admin.stdout
    );
}

#[tokio::test]
async fn migrate_twice_is_a_no_op_the_second_time() {
    let db = fresh_database().await;
    sqlx::raw_sql("DROP SCHEMA public CASCADE; CREATE SCHEMA public;")
        .execute(&db.pool)
        .await
        .unwrap();
    let migrate = || {
        let mut command = kopilka(&["migrate"]);
        command
            .env("KOPILKA_ENV", "test")
            .env("DATABASE_URL", db.url.expose_secret());
        run(command)
    };

    let first = migrate().await;
    assert!(first.status.success(), "{}", first.stderr);
    assert!(
        first.stdout.contains("applied") && first.stdout.contains("bootstrap"),
        "{}",
        first.stdout
    );

    let second = migrate().await;
    assert!(second.status.success(), "{}", second.stderr);
    assert!(
        second.stdout.contains("nothing applied"),
        "{}",
        second.stdout
    );

    let versions: i64 = sqlx::query_scalar("SELECT count(*) FROM _sqlx_migrations")
        .fetch_one(&db.pool)
        .await
        .unwrap();
    assert_eq!(
        usize::try_from(versions).unwrap(),
        kopilka_store::MIGRATOR.iter().count()
    );
}

#[tokio::test]
async fn commands_needing_a_database_say_how_to_get_one() {
    // Production is the default environment: the database is required there.
    let mut production = kopilka(&["migrate"]);
    production.env("KOPILKA__PUBLIC_URL", "https://support.example.org");
    let out = run(production).await;
    assert!(!out.status.success());
    assert!(
        out.stderr.contains("DATABASE_URL is required"),
        "{}",
        out.stderr
    );

    let mut dev_env = kopilka(&["migrate"]);
    dev_env.env("KOPILKA_ENV", "dev");
    let out = run(dev_env).await;
    assert!(!out.status.success());
    assert!(out.stderr.contains("kopilka dev"), "{}", out.stderr);
}

#[tokio::test]
async fn nonsense_configuration_is_refused_with_one_line() {
    let mut command = kopilka(&["serve"]);
    command
        .env("KOPILKA_ENV", "production")
        .env("DATABASE_URL", "postgres://kopilka@127.0.0.1:1/kopilka")
        .env("KOPILKA__PUBLIC_URL", "http://support.example.org");
    let out = run(command).await;
    assert!(!out.status.success());
    let lines: Vec<&str> = out.stderr.lines().collect();
    assert_eq!(lines.len(), 1, "one line: {}", out.stderr);
    assert!(
        lines[0].contains("public_url") && lines[0].contains("https"),
        "{}",
        lines[0]
    );

    let mut command = kopilka(&["serve"]);
    command.env("KOPILKA_ENV", "staging");
    let out = run(command).await;
    assert!(!out.status.success());
    assert!(out.stderr.contains("KOPILKA_ENV"), "{}", out.stderr);
}

#[tokio::test]
async fn admin_config_shows_every_layer_and_hides_secrets() {
    let mut command = kopilka(&["admin", "config", "--format", "json"]);
    command
        .env("KOPILKA_ENV", "production")
        .env(
            "DATABASE_URL",
            "postgres://kopilka:hunter2@db.internal/kopilka",
        )
        .env("KOPILKA__PUBLIC_URL", "https://support.example.org")
        .env("KOPILKA__STRIPE__SECRET_KEY", "sk_live_sesame")
        .env("KOPILKA__STRIPE__WEBHOOK_SECRET", "whsec_a,whsec_b")
        .env(
            "KOPILKA__ACCOUNTS__SECRET",
            "an-accounts-sesame-of-32-bytes-or-more",
        )
        .env(
            "KOPILKA__SMTP__URL",
            "smtps://mailer:sesame@smtp.example.org",
        )
        .env(
            "KOPILKA__PAYWALL__SIGNING_SECRET",
            "a-paywall-sesame-of-32-bytes-or-more!!",
        )
        .env(
            "KOPILKA__SERVER__CORS_ALLOWED_ORIGINS",
            "https://news.example.org,https://www.news.example.org",
        );
    let out = run(command).await;
    assert!(out.status.success(), "{}", out.stderr);
    let config: serde_json::Value = serde_json::from_str(&out.stdout).expect("one JSON document");
    assert_eq!(config["env"], "production");
    assert_eq!(config["public_url"], "https://support.example.org/");
    assert_eq!(
        config["log"]["format"], "json",
        "from config/production.toml"
    );
    assert_eq!(
        config["server"]["cors_allowed_origins"][1],
        "https://www.news.example.org"
    );
    assert_eq!(config["database"]["url"], "<redacted>");
    assert_eq!(config["stripe"]["secret_key"], "<redacted>");
    assert_eq!(config["accounts"]["secret"], "<redacted>");
    assert_eq!(
        config["stripe"]["webhook_secret"],
        serde_json::json!(["<redacted>", "<redacted>"])
    );
    for secret in ["hunter2", "sesame", "whsec_a"] {
        assert!(
            !out.stdout.contains(secret) && !out.stderr.contains(secret),
            "{secret} leaked"
        );
    }

    let mut csv = kopilka(&["admin", "config", "--format", "csv"]);
    csv.env("KOPILKA_ENV", "dev");
    let out = run(csv).await;
    assert!(out.status.success(), "{}", out.stderr);
    assert!(out.stdout.starts_with("key,value\n"), "{}", out.stdout);
    assert!(
        out.stdout.contains("server.addr,127.0.0.1:8080"),
        "{}",
        out.stdout
    );
}

#[tokio::test]
async fn the_worker_runs_what_is_due_once_and_says_so() {
    let db = fresh_database().await;
    let mut command = kopilka(&["worker", "--once", "--as-of", "2026-12-01T09:00:00Z"]);
    command
        .env("KOPILKA_ENV", "test")
        .env("DATABASE_URL", db.url.expose_secret());
    let out = run(command).await;
    assert!(out.status.success(), "{}", out.stderr);
    assert!(
        out.stdout.contains("2026-12-01T09:00:00Z") && out.stdout.contains("0 done"),
        "{}",
        out.stdout
    );

    let bad = run(kopilka(&["worker", "--once", "--as-of", "tomorrow"])).await;
    assert!(!bad.status.success());
    assert!(bad.stderr.contains("RFC 3339"), "{}", bad.stderr);
}
