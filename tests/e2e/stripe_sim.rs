use std::time::Duration;

use kopilka_tests::{Running, free_port, kopilka};
use reqwest::StatusCode;

#[tokio::test]
async fn the_stripe_simulator_runs_standalone() {
    let port = free_port();
    let mut sim = Running::start(kopilka(&[
        "stripe-sim",
        "--addr",
        &format!("127.0.0.1:{port}"),
    ]));
    let line = sim.next_line(Duration::from_secs(30)).await;
    assert!(
        line.starts_with("kopilka stripe-sim: Stripe API on http://127.0.0.1:"),
        "{line}"
    );
    assert!(
        line.contains("KOPILKA__STRIPE__SECRET_KEY=sk_test_kopilka_simulator"),
        "{line}"
    );

    let http = reqwest::Client::new();
    let url = format!("http://127.0.0.1:{port}/v1/customers");
    let listed = http
        .get(&url)
        .bearer_auth("sk_test_kopilka_simulator")
        .send()
        .await
        .unwrap();
    assert_eq!(listed.status(), StatusCode::OK);
    let body: serde_json::Value = listed.json().await.unwrap();
    assert_eq!(body["object"], "list");
    let refused = http
        .get(&url)
        .bearer_auth("sk_test_other")
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), StatusCode::UNAUTHORIZED);

    assert!(sim.terminate(Duration::from_secs(15)).await.success());
}
