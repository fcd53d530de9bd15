//! Logs never carry an address, a password or a token. Every log line of a whole reader
//! journey (at debug level, all crates) is captured and searched.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use kopilka_test_support::{TestApp, eventually, send};
use reqwest::{Method, StatusCode};
use serde_json::json;

/// Every line written by the subscriber.
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for Captured {
    type Writer = Self;

    fn make_writer(&'a self) -> Self::Writer {
        self.clone()
    }
}

#[tokio::test]
async fn a_whole_reader_journey_logs_no_address_password_or_token() {
    let captured = Captured::default();
    tracing_subscriber::fmt()
        .with_env_filter("debug")
        .with_writer(captured.clone())
        .with_ansi(false)
        .init();

    let app = TestApp::spawn().await;
    app.deliver_webhooks_here(Some((1, true))).await;
    let email = "secret-reader@example.org";
    let password = "hunter2-hunter2-hunter2";
    let mut secrets: Vec<String> = vec![email.into(), password.into(), "secret-reader".into()];

    // Give with the address, sign up, sign in right and wrong, use links.
    let started = app
        .api
        .post_json(
            "/v1/checkout",
            &json!({"interval": "month", "amount_minor": 500, "currency": "usd", "email": email}),
        )
        .await;
    let session = started.json()["checkout_url"]
        .as_str()
        .unwrap()
        .rsplit('/')
        .next()
        .unwrap()
        .to_owned();
    app.sim_control(&format!("/_sim/checkout/{session}/pay"), &json!({}))
        .await;
    app.api
        .post_json(
            "/v1/reminders",
            &json!({"email": email, "remind_on": (time::OffsetDateTime::now_utc().date() + time::Duration::days(9)).to_string()}),
        )
        .await;
    app.api
        .post_json(
            "/v1/accounts",
            &json!({"email": email, "password": password}),
        )
        .await;
    let wrong = app
        .api
        .post_json(
            "/v1/sessions",
            &json!({"email": email, "password": "not-it-at-all"}),
        )
        .await;
    assert_eq!(wrong.status, StatusCode::UNAUTHORIZED);
    let link = app.link_token(email, 1).await;
    secrets.push(link.clone());
    let by_link = app
        .api
        .post_json(
            "/v1/sessions/magic-link/consume",
            &json!({"token": link, "password": password}),
        )
        .await;
    let token = by_link.json()["token"].as_str().unwrap().to_owned();
    let right = app
        .api
        .post_json(
            "/v1/sessions",
            &json!({"email": email, "password": password}),
        )
        .await;
    secrets.push(right.json()["token"].as_str().unwrap().to_owned());
    secrets.push(token.clone());
    let reminder: uuid::Uuid = sqlx::query_scalar("SELECT id FROM reminders")
        .fetch_one(&app.pool)
        .await
        .unwrap();
    let unsubscribe = app
        .state
        .accounts
        .unsubscribe_token(kopilka_domain::id::ReminderId::from_uuid(reminder));
    secrets.push(unsubscribe.clone());
    app.api
        .post_raw(
            &format!("/v1/reminders/unsubscribe?token={unsubscribe}"),
            "text/plain",
            Vec::new(),
        )
        .await;
    let pool = app.pool.clone();
    eventually("the plan applied", Duration::from_secs(20), || {
        let pool = pool.clone();
        async move {
            let n: i64 = sqlx::query_scalar("SELECT count(*) FROM recurring_plans")
                .fetch_one(&pool)
                .await
                .unwrap_or(0);
            (n == 1).then_some(())
        }
    })
    .await;
    for path in ["/v1/me", "/v1/me/contributions", "/v1/me/export"] {
        let seen = send(app.api.request(Method::GET, path).bearer_auth(&token)).await;
        assert_eq!(seen.status, StatusCode::OK);
    }
    let erased = send(
        app.api
            .request(Method::DELETE, "/v1/me")
            .bearer_auth(&token),
    )
    .await;
    assert_eq!(erased.status, StatusCode::OK);
    // Wait for the erasure's Stripe job, so its logs are in too.
    let pool = app.pool.clone();
    eventually(
        "the Stripe customer cleared",
        Duration::from_secs(20),
        || {
            let pool = pool.clone();
            async move {
                let waiting: i64 =
                    sqlx::query_scalar("SELECT count(*) FROM jobs WHERE status <> 'done'")
                        .fetch_one(&pool)
                        .await
                        .ok()?;
                (waiting == 0).then_some(())
            }
        },
    )
    .await;

    let logs = String::from_utf8_lossy(&captured.0.lock().unwrap()).into_owned();
    assert!(
        logs.contains("session begun")
            && logs.contains("reader erased")
            && logs.contains("event applied"),
        "the journey was logged at all"
    );
    for secret in &secrets {
        let hit = logs.lines().find(|line| line.contains(secret.as_str()));
        assert!(
            hit.is_none(),
            "a log line carries a secret: {}",
            hit.unwrap_or_default()
        );
    }
    assert!(!logs.contains("@example.org"), "no address at all");
}
