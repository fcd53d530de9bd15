//! `audit_log` is append-only: by triggers (which bind owners and superusers too) and by
//! privileges (the role that ran the migrations, usually the application's and the table's
//! owner, holds no UPDATE, DELETE or TRUNCATE on it).

use std::str::FromStr as _;

use kopilka_test_support::{fresh_database, server_url};
use secrecy::ExposeSecret as _;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};

const TAMPERING: [&str; 3] = [
    "UPDATE audit_log SET actor = 'someone-else'",
    "DELETE FROM audit_log",
    "TRUNCATE audit_log",
];

#[tokio::test]
async fn no_role_can_update_delete_or_truncate_the_audit_log() {
    let db = fresh_database().await;
    let mut conn = db.pool.acquire().await.unwrap();
    kopilka_accounts::audit::record(
        &mut conn,
        "admin:test",
        "reader.show",
        None,
        &serde_json::json!({"found": false}),
    )
    .await
    .unwrap();
    // Even a superuser (what the tests connect as) is stopped by the triggers.
    for tamper in TAMPERING {
        let refused = sqlx::query(tamper).execute(&mut *conn).await;
        assert!(refused.is_err(), "{tamper}");
    }

    // The application's role, owner of a database it migrated itself: no privilege at all.
    let suffix = uuid::Uuid::new_v4().simple().to_string();
    let role = format!("kt_app_{suffix}");
    let database = format!("kt_owned_{suffix}");
    // The private cluster asks every role but its superuser for a password.
    let password = format!("pw{suffix}");
    let admin = sqlx::PgPool::connect(server_url("postgres").expose_secret())
        .await
        .unwrap();
    sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
        "CREATE ROLE {role} LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE PASSWORD '{password}'"
    )))
    .execute(&admin)
    .await
    .unwrap();
    sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
        "CREATE DATABASE {database} OWNER {role}"
    )))
    .execute(&admin)
    .await
    .unwrap();
    let options = PgConnectOptions::from_str(server_url(&database).expose_secret())
        .unwrap()
        .username(&role)
        .password(&password);
    let app = PgPoolOptions::new()
        .max_connections(1)
        .connect_with(options)
        .await
        .unwrap();
    kopilka_store::migrate(&app).await.unwrap();
    let owner: String =
        sqlx::query_scalar("SELECT tableowner::text FROM pg_tables WHERE tablename = 'audit_log'")
            .fetch_one(&app)
            .await
            .unwrap();
    assert_eq!(owner, role, "the application's role owns the table");
    let mut conn = app.acquire().await.unwrap();
    kopilka_accounts::audit::record(
        &mut conn,
        "admin:test",
        "reader.show",
        None,
        &serde_json::json!({}),
    )
    .await
    .expect("appending works");
    for privilege in ["UPDATE", "DELETE", "TRUNCATE"] {
        let held: bool = sqlx::query_scalar("SELECT has_table_privilege('audit_log', $1)")
            .bind(privilege)
            .fetch_one(&mut *conn)
            .await
            .unwrap();
        assert!(!held, "the application's role holds {privilege}");
    }
    for tamper in TAMPERING {
        let refused = sqlx::query(tamper).execute(&mut *conn).await.unwrap_err();
        let code = refused
            .as_database_error()
            .and_then(sqlx::error::DatabaseError::code)
            .unwrap_or_default()
            .into_owned();
        assert_eq!(code, "42501", "{tamper}: permission denied, got {refused}");
    }
    drop(conn);
    app.close().await;
    for cleanup in [
        format!("DROP DATABASE IF EXISTS {database} WITH (FORCE)"),
        format!("DROP ROLE IF EXISTS {role}"),
    ] {
        let _ = sqlx::raw_sql(sqlx::AssertSqlSafe(cleanup))
            .execute(&admin)
            .await;
    }
}
