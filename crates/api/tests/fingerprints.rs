//! Keyed fingerprints only (issue 17, item 4): throttle keys for addresses and client IPs
//! and a checkout's idempotency fingerprint are HMACs under the accounts secret, and no
//! client IP reaches the database in any form — checked over a `pg_dump` of it.

use kopilka_accounts::keys::{Keys, Purpose};
use kopilka_contributions::CheckoutInput;
use kopilka_test_support::{TestApp, send};
use reqwest::{Method, StatusCode};
use secrecy::ExposeSecret;
use serde_json::json;
use sha2::Digest as _;

/// The whole database as `pg_dump` writes it (schema and data).
fn pg_dump(app: &TestApp) -> String {
    let db = app.db.as_ref().expect("a database of its own");
    let out = std::process::Command::new("pg_dump")
        .arg("--no-owner")
        .arg(format!("--dbname={}", db.url.expose_secret()))
        .output()
        .expect("pg_dump runs");
    assert!(
        out.status.success(),
        "pg_dump: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("a UTF-8 dump")
}

async fn sign_in_from(app: &TestApp, ip: &str, email: &str, password: &str) -> StatusCode {
    let request = app
        .api
        .request(Method::POST, "/v1/sessions")
        .header("x-forwarded-for", format!("198.51.100.1, {ip}"))
        .json(&json!({"email": email, "password": password}));
    send(request).await.status
}

#[tokio::test]
async fn no_client_ip_reaches_the_database_in_any_form() {
    let app = TestApp::spawn_with(|s| {
        s.server.client_ip_header = Some("x-forwarded-for".into());
        s.server.trusted_proxies = vec!["127.0.0.1/32".parse().unwrap()];
        s.accounts.free_failures_per_ip = 2;
        // Long enough that the block outlasts the test.
        s.accounts.backoff_base_secs = 300;
    })
    .await;
    let v4 = "203.0.113.77";
    let v6 = "2001:db8:77:1::5";
    for (n, ip) in [v4, v4, v4, v4, v6, v6, v6].into_iter().enumerate() {
        let status = sign_in_from(&app, ip, &format!("guess-{n}@example.org"), "wrong").await;
        assert!(
            [StatusCode::UNAUTHORIZED, StatusCode::TOO_MANY_REQUESTS].contains(&status),
            "{status}"
        );
    }
    // The IPs were throttled (so counted), by keys that are HMACs.
    assert_eq!(
        sign_in_from(&app, v4, "someone-else@example.org", "wrong").await,
        StatusCode::TOO_MANY_REQUESTS,
        "the IP's counter works"
    );
    let keys: Vec<String> = sqlx::query_scalar("SELECT key FROM login_throttles ORDER BY key")
        .fetch_all(&app.pool)
        .await
        .unwrap();
    let shape = regex_lite(&keys);
    assert!(shape, "{keys:?}");
    let accounts = Keys::from_settings(&app.settings.accounts);
    let expected = format!("ip:{}", accounts.digest(Purpose::IpKey, v4.as_bytes()));
    assert!(keys.contains(&expected), "{keys:?}");

    let dump = pg_dump(&app);
    for needle in [v4, "203.0.113", v6, "2001:db8:77", "2001:db8"] {
        assert!(!dump.contains(needle), "{needle} is in the database");
    }
    assert!(
        !dump.contains("198.51.100.1"),
        "nor the proxy's hop before it"
    );
}

/// Every key is `address:` or `ip:` and 64 lowercase hex digits.
fn regex_lite(keys: &[String]) -> bool {
    !keys.is_empty()
        && keys.iter().all(|key| {
            let mac = key
                .strip_prefix("address:")
                .or_else(|| key.strip_prefix("ip:"));
            mac.is_some_and(|m| {
                m.len() == 64
                    && m.bytes()
                        .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
            })
        })
}

#[tokio::test]
async fn a_checkouts_fingerprint_is_keyed_not_a_bare_hash_of_the_address() {
    let app = TestApp::spawn().await;
    let email = "fingerprinted@example.org";
    let body = json!({"interval": "once", "amount_minor": 2500, "currency": "usd", "email": email});
    let answer = send(
        app.api
            .request(Method::POST, "/v1/checkout")
            .header("idempotency-key", "widget-fp-1")
            .json(&body),
    )
    .await;
    assert_eq!(answer.status, StatusCode::CREATED);
    let stored: String = sqlx::query_scalar(
        "SELECT request_hash FROM checkout_requests WHERE idempotency_key = 'widget-fp-1'",
    )
    .fetch_one(&app.pool)
    .await
    .unwrap();

    // What an attacker with the dump and a list of addresses would compute: a bare
    // SHA-256 of the canonical body.
    let input: CheckoutInput = serde_json::from_value(body.clone()).unwrap();
    let canonical = serde_json::to_vec(&input).unwrap();
    let bare: String = sha2::Sha256::digest(&canonical)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    assert_ne!(stored, bare, "not a bare hash");
    let keys = Keys::from_settings(&app.settings.accounts);
    assert_eq!(
        stored,
        keys.digest(Purpose::CheckoutRequest, &canonical),
        "an HMAC under the accounts secret"
    );

    // Still recognises the retry, and refuses another body under the same key.
    let again = send(
        app.api
            .request(Method::POST, "/v1/checkout")
            .header("idempotency-key", "widget-fp-1")
            .json(&body),
    )
    .await;
    assert_eq!(again.status, StatusCode::CREATED);
    assert_eq!(again.json(), answer.json());
    let other = send(
        app.api
            .request(Method::POST, "/v1/checkout")
            .header("idempotency-key", "widget-fp-1")
            .json(&json!({"interval": "once", "amount_minor": 2600, "currency": "usd", "email": email})),
    )
    .await;
    assert_eq!(other.error_code(409), "idempotency_key_reused");
}

#[tokio::test]
async fn the_migration_deletes_plain_throttle_keys_and_bare_checkout_hashes() {
    let app = TestApp::spawn().await;
    let hmac = format!("ip:{}", "c".repeat(64));
    sqlx::query(
        "INSERT INTO login_throttles (key, failures) VALUES
         ('ip:203.0.113.9', 3), ('ip:2001:db8:1:2::/64', 3), ($1, 3)",
    )
    .bind(&hmac)
    .execute(&app.pool)
    .await
    .unwrap();
    let contribution = uuid::Uuid::new_v4();
    sqlx::query(
        "INSERT INTO contributions (id, interval, amount_minor, currency) VALUES ($1, 'once', 100, 'usd');
         ",
    )
    .bind(contribution)
    .execute(&app.pool)
    .await
    .unwrap();
    sqlx::query(
        "INSERT INTO checkout_requests (idempotency_key, request_hash, contribution_id)
         VALUES ('old', 'bare-sha256', $1)",
    )
    .bind(contribution)
    .execute(&app.pool)
    .await
    .unwrap();
    // The migration's statements, as deployed (they are safe to run again).
    sqlx::raw_sql(include_str!(
        "../../../migrations/20261203100300_keyed_fingerprints.sql"
    ))
    .execute(&app.pool)
    .await
    .unwrap();
    let keys: Vec<String> = sqlx::query_scalar("SELECT key FROM login_throttles")
        .fetch_all(&app.pool)
        .await
        .unwrap();
    assert_eq!(keys, [hmac]);
    let requests: i64 = sqlx::query_scalar("SELECT count(*) FROM checkout_requests")
        .fetch_one(&app.pool)
        .await
        .unwrap();
    assert_eq!(requests, 0);
    let contributions: i64 = sqlx::query_scalar("SELECT count(*) FROM contributions")
        .fetch_one(&app.pool)
        .await
        .unwrap();
    assert_eq!(contributions, 1, "the contribution stays");
}
