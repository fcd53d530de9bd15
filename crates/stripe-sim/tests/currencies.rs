//! The simulator holds amounts to Stripe's per-currency rules, answers as Stripe does
//! (`invalid_request_error`, `amount_too_small`, `param`), and takes its key by HTTP Basic
//! as Stripe's curl examples send it. The last test checks Kopilka's table against the
//! simulator's own transcription: every minimum Kopilka accepts, Stripe (simulated) takes.

use kopilka_stripe_sim::{SimOptions, Spawned, spawn};
use serde_json::Value;

async fn sim() -> Spawned {
    spawn("127.0.0.1:0".parse().unwrap(), SimOptions::default())
        .await
        .unwrap()
}

async fn create_session(sim: &Spawned, currency: &str, amount: i64) -> (u16, Value) {
    let response = reqwest::Client::new()
        .post(format!("http://{}/v1/checkout/sessions", sim.addr))
        .bearer_auth(sim.simulator.secret_key())
        .form(&[
            ("mode", "payment"),
            ("line_items[0][price_data][currency]", currency),
            (
                "line_items[0][price_data][unit_amount]",
                &amount.to_string(),
            ),
            ("line_items[0][price_data][product_data][name]", "Gift"),
            ("success_url", "https://news.example.org/thanks"),
        ])
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap())
}

#[tokio::test]
async fn amounts_stripe_refuses_are_refused_in_stripes_shape() {
    let sim = sim().await;
    let (status, body) = create_session(&sim, "usd", 49).await;
    assert_eq!(status, 400, "{body}");
    assert_eq!(body["error"]["type"], "invalid_request_error");
    assert_eq!(body["error"]["code"], "amount_too_small");
    assert_eq!(
        body["error"]["param"],
        "line_items[0][price_data][unit_amount]"
    );
    // KRW: the equivalent of US$0.50, not 50 won.
    let (status, body) = create_session(&sim, "krw", 50).await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (400, Some("amount_too_small"))
    );
    // ISK and UGX: two decimals, whole units only; three-decimal: last digit 0.
    for (currency, amount) in [
        ("isk", 10_050),
        ("ugx", 500_001),
        ("kwd", 2_005),
        ("bhd", 1_001),
    ] {
        let (status, body) = create_session(&sim, currency, amount).await;
        assert_eq!(status, 400, "{currency}: {body}");
        assert_eq!(body["error"]["type"], "invalid_request_error", "{body}");
        assert_eq!(
            body["error"]["param"], "line_items[0][price_data][unit_amount]",
            "{body}"
        );
    }
    let (status, body) = create_session(&sim, "rub", 100_000).await;
    assert_eq!(status, 400, "{body}");
    assert_eq!(
        body["error"]["param"],
        "line_items[0][price_data][currency]"
    );
    let (status, body) = create_session(&sim, "usd", 100_000_000).await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (400, Some("amount_too_large"))
    );
    for (currency, amount) in [("isk", 10_000), ("kwd", 2_000), ("mga", 3_000), ("usd", 50)] {
        let (status, body) = create_session(&sim, currency, amount).await;
        assert_eq!(status, 200, "{currency}: {body}");
    }
}

#[tokio::test]
async fn the_key_works_as_the_basic_auth_user_like_stripes_curl_examples() {
    let sim = sim().await;
    let http = reqwest::Client::new();
    let url = format!("http://{}/v1/checkout/sessions", sim.addr);
    let basic = http
        .get(&url)
        .basic_auth(sim.simulator.secret_key(), Some(""))
        .send()
        .await
        .unwrap();
    assert_eq!(basic.status(), 200);
    let wrong = http
        .get(&url)
        .basic_auth("sk_test_wrong", Some(""))
        .send()
        .await
        .unwrap();
    assert_eq!(wrong.status(), 401);
    let none = http.get(&url).send().await.unwrap();
    assert_eq!(none.status(), 401);
}

#[tokio::test]
async fn every_minimum_kopilka_accepts_is_one_stripe_accepts() {
    let sim = sim().await;
    for currency in kopilka_domain::stripe_currencies() {
        let rules = currency.charge_rules().unwrap();
        let (status, body) =
            create_session(&sim, &currency.stripe_code(), rules.minimum_minor).await;
        assert_eq!(status, 200, "{currency} {}: {body}", rules.minimum_minor);
    }
}
