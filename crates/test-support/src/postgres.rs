//! Postgres for tests: one server per test binary, one fresh database per test.

use std::sync::OnceLock;
use std::time::{SystemTime, UNIX_EPOCH};

use kopilka_store::PrivatePostgres;
use secrecy::{ExposeSecret, SecretString};
use sqlx::{Connection, PgConnection, PgPool};
use tokio::sync::OnceCell;

/// The test binary's Postgres: `DATABASE_URL`'s server, or a private throwaway cluster.
enum Server {
    External(url::Url),
    Private(PrivatePostgres),
}

fn server() -> &'static Server {
    static SERVER: OnceLock<Server> = OnceLock::new();
    SERVER.get_or_init(|| match std::env::var("DATABASE_URL") {
        Ok(url) => Server::External(url.parse().expect("DATABASE_URL is a URL")),
        Err(_) => {
            Server::Private(PrivatePostgres::start_throwaway().unwrap_or_else(|err| {
                panic!("cannot start a private Postgres for the tests: {err}")
            }))
        }
    })
}

/// The URL of `database` on the test binary's server.
#[must_use]
pub fn server_url(database: &str) -> SecretString {
    match server() {
        Server::Private(cluster) => cluster.url(database),
        Server::External(base) => {
            let mut url = base.clone();
            url.set_path(database);
            SecretString::from(url.to_string())
        }
    }
}

/// A database of its own for one test, migrated, with a pool on it.
pub struct TestDatabase {
    /// Its name.
    pub name: String,
    /// Its URL (for `DATABASE_URL` when running the binary).
    pub url: SecretString,
    /// A pool on it, for assertions.
    pub pool: PgPool,
}

/// Databases made by tests are named `kt_<unix seconds>_<random>`; on a shared server the
/// next run drops those older than this.
const STALE_AFTER_SECS: u64 = 6 * 3600;

/// A fresh, migrated database, copied from a template migrated once per test binary.
///
/// # Panics
/// When Postgres cannot be reached: a test cannot run without it.
pub async fn fresh_database() -> TestDatabase {
    let template = template().await;
    let name = format!("kt_{}_{}", unix_now(), uuid::Uuid::new_v4().simple());
    let created = kopilka_store::create_database(&server_url("postgres"), &name, Some(template))
        .await
        .expect("create a test database");
    assert!(created, "test database names are unique");
    let url = server_url(&name);
    let pool = PgPool::connect(url.expose_secret())
        .await
        .expect("connect to the test database");
    TestDatabase { name, url, pool }
}

/// Creates and migrates the template once per test binary and returns its name. Only a
/// name crosses test runtimes; no connection outlives the initialisation.
async fn template() -> &'static str {
    static TEMPLATE: OnceCell<String> = OnceCell::const_new();
    TEMPLATE
        .get_or_init(|| async {
            let admin = server_url("postgres");
            if matches!(server(), Server::External(_)) {
                drop_stale_databases(&admin).await;
            }
            let name = format!(
                "kt_{}_template_{}",
                unix_now(),
                uuid::Uuid::new_v4().simple()
            );
            kopilka_store::create_database(&admin, &name, None)
                .await
                .expect("create the template database");
            let mut conn = PgConnection::connect(server_url(&name).expose_secret())
                .await
                .expect("connect to the template database");
            kopilka_store::MIGRATOR
                .run(&mut conn)
                .await
                .expect("migrations apply to an empty database");
            conn.close().await.expect("close the template connection");
            name
        })
        .await
}

async fn drop_stale_databases(admin: &SecretString) {
    let Ok(mut conn) = PgConnection::connect(admin.expose_secret()).await else {
        return;
    };
    let names: Vec<String> =
        sqlx::query_scalar("SELECT datname FROM pg_database WHERE datname LIKE 'kt\\_%'")
            .fetch_all(&mut conn)
            .await
            .unwrap_or_default();
    let now = unix_now();
    for name in names {
        let created = name
            .split('_')
            .nth(1)
            .and_then(|s| s.parse::<u64>().ok())
            .unwrap_or(now);
        if now.saturating_sub(created) > STALE_AFTER_SECS {
            let statement = format!("DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)");
            let _ = sqlx::raw_sql(sqlx::AssertSqlSafe(statement))
                .execute(&mut conn)
                .await;
        }
    }
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// The whole database at `url` as `pg_dump` writes it (schema and every row, as text): what
/// a leaked backup would hold, for tests that look for personal data in it.
///
/// # Panics
/// When `pg_dump` cannot be found or fails.
#[must_use]
pub fn pg_dump(url: &SecretString) -> String {
    let bin = kopilka_store::private_postgres::find_bin_dir().expect("the PostgreSQL programs");
    let output = std::process::Command::new(bin.join("pg_dump"))
        .arg("--no-owner")
        .arg(format!("--dbname={}", url.expose_secret()))
        .output()
        .expect("pg_dump runs");
    assert!(
        output.status.success(),
        "pg_dump failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout).expect("a text dump")
}
