//! A smoke test against an independent fake: `localstripe` (PyPI), installed on first use
//! into a virtualenv under the target folder. It checks what it can serve: the client
//! creating a customer through async-stripe, and localstripe's own signed webhook delivery
//! verified by Kopilka's verifier — Stripe's signing scheme as someone else implemented it.

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::State;
use axum::http::HeaderMap;
use axum::routing::post;
use kopilka_domain::Email;
use kopilka_stripe::{StripeClient, WebhookVerifier};
use secrecy::SecretString;

const LOCALSTRIPE: &str = "localstripe==1.15.10";

/// The localstripe executable: `KOPILKA_LOCALSTRIPE` (the test script installs it), else
/// installed here into `<target>/tmp/localstripe-venv` on first use.
fn localstripe() -> PathBuf {
    if let Some(installed) = std::env::var_os("KOPILKA_LOCALSTRIPE").map(PathBuf::from) {
        assert!(
            installed.is_file(),
            "KOPILKA_LOCALSTRIPE={} is not a file",
            installed.display()
        );
        return installed;
    }
    let venv = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("localstripe-venv");
    let binary = venv.join("bin/localstripe");
    if !binary.is_file() {
        let made = Command::new("python3")
            .arg("-m")
            .arg("venv")
            .arg(&venv)
            .status();
        assert!(
            made.is_ok_and(|s| s.success()),
            "python3 -m venv failed: install python3 with venv"
        );
        let pip = Command::new(venv.join("bin/pip"))
            .args([
                "install",
                "--quiet",
                "--disable-pip-version-check",
                LOCALSTRIPE,
            ])
            .status();
        assert!(
            pip.is_ok_and(|s| s.success()),
            "pip install {LOCALSTRIPE} failed"
        );
    }
    binary
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

type Deliveries = Arc<Mutex<Vec<(Option<String>, Vec<u8>)>>>;

async fn receive(
    State(deliveries): State<Deliveries>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> &'static str {
    let signature = headers
        .get("stripe-signature")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    deliveries.lock().unwrap().push((signature, body.to_vec()));
    "ok"
}

#[tokio::test]
async fn localstripe_serves_a_customer_and_its_signed_webhook_verifies() {
    let binary = tokio::task::spawn_blocking(localstripe).await.unwrap();
    let port = free_port();
    let _server = tokio::process::Command::new(binary)
        .args(["--port", &port.to_string()])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("localstripe starts");
    let base = format!("http://127.0.0.1:{port}");
    let http = reqwest::Client::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    while http
        .get(format!("{base}/v1/customers"))
        .basic_auth("sk_test_smoke", Some(""))
        .send()
        .await
        .is_err()
    {
        assert!(Instant::now() < deadline, "localstripe did not start");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    let deliveries: Deliveries = Arc::default();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let hook = format!("http://{}/hook", listener.local_addr().unwrap());
    let app = axum::Router::new()
        .route("/hook", post(receive))
        .with_state(Arc::clone(&deliveries));
    tokio::spawn(async move { axum::serve(listener, app).await });
    let secret = "whsec_localstripe_smoke";
    let configured = http
        .post(format!("{base}/_config/webhooks/kopilka"))
        .form(&[("url", hook.as_str()), ("secret", secret)])
        .send()
        .await
        .unwrap();
    assert!(configured.status().is_success());

    let client = StripeClient::new(
        &SecretString::from("sk_test_smoke".to_owned()),
        Some(&base.parse().unwrap()),
    )
    .unwrap();
    let customer = client
        .create_customer("reader-smoke", &Email::parse("smoke@example.org").unwrap())
        .await
        .expect("localstripe's customer deserializes into async-stripe's");
    assert!(customer.starts_with("cus_"), "{customer}");

    let deadline = Instant::now() + Duration::from_secs(20);
    let (signature, body) = loop {
        let first = deliveries.lock().unwrap().first().cloned();
        if let Some(delivery) = first {
            break delivery;
        }
        assert!(Instant::now() < deadline, "no webhook from localstripe");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    let verifier = WebhookVerifier::new(vec![SecretString::from(secret.to_owned())], 300);
    let event = verifier
        .verify_event(signature.as_deref(), &body, now)
        .expect("localstripe's signature verifies");
    assert_eq!(event.event_type, "customer.created");
    assert_eq!(event.object_id.as_deref(), Some(customer.as_str()));
    let other = WebhookVerifier::new(vec![SecretString::from("whsec_other".to_owned())], 300);
    assert!(other.verify(signature.as_deref(), &body, now).is_err());
}
