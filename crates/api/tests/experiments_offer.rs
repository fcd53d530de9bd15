//! A running ask experiment in the offer: every instance serves it from memory, assigns each
//! visitor (a signed first-party cookie, nothing else) to the same variant every time, and
//! keeps the holdback's share free of asks.

use std::time::Duration;

use kopilka_experiments::{ExperimentSpec, Status, store};
use kopilka_test_support::{TestApp, eventually, send};
use reqwest::Method;
use serde_json::{Value, json};

fn spec() -> ExperimentSpec {
    serde_json::from_value(json!({
        "name": "amounts-q1", "holdback_percent": 30,
        "targeting": {"currencies": ["usd"]},
        "variants": [
            {"key": "control", "control": true},
            {"key": "higher", "presets": {"usd": {"once": [1500, 3000, 6000]}}}
        ]
    }))
    .unwrap()
}

/// The offer, with `cookie` if any; its body and the visitor cookie it sets, if any.
async fn offer(app: &TestApp, query: &str, cookie: Option<&str>) -> (Value, Option<String>) {
    let mut request = app.api.request(Method::GET, &format!("/v1/offer?{query}"));
    if let Some(cookie) = cookie {
        request = request.header("cookie", cookie);
    }
    let answer = send(request).await;
    let visitor = answer
        .headers
        .get_all("set-cookie")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find(|v| v.starts_with("__Host-kopilka_visitor="))
        .and_then(|v| v.split(';').next())
        .map(str::to_owned);
    (answer.json(), visitor)
}

#[tokio::test]
async fn a_visitor_keeps_their_variant_the_holdback_sees_no_ask_and_targeting_holds() {
    let app = TestApp::spawn().await;
    let (before, cookie) = offer(&app, "currency=usd", None).await;
    assert!(before.get("experiment").is_none(), "{before}");
    assert!(cookie.is_none(), "no experiment, no visitor cookie");

    store::create(&app.pool, &app.settings.offer, &spec())
        .await
        .unwrap();
    store::transition(
        &app.pool,
        &app.settings.offer,
        "amounts-q1",
        Status::Running,
    )
    .await
    .unwrap();
    eventually("the experiment served", Duration::from_secs(10), || async {
        let (body, _) = offer(&app, "currency=usd", None).await;
        body.get("experiment").map(|_| ())
    })
    .await;

    // Many visitors: each is assigned; about 30 % see no ask.
    let (mut holdback, mut variants) = (0, std::collections::BTreeMap::new());
    for _ in 0..200 {
        let (body, cookie) = offer(&app, "currency=usd", None).await;
        let cookie = cookie.expect("a visitor cookie for a new visitor");
        assert_eq!(body["experiment"]["name"], "amounts-q1");
        match body["experiment"]["variant"].as_str() {
            None => {
                holdback += 1;
                assert_eq!(
                    (&body["show"], &body["reason"]),
                    (&json!(false), &json!("holdback"))
                );
            }
            Some(variant) => {
                *variants.entry(variant.to_owned()).or_insert(0) += 1;
                assert_eq!(body["show"], true);
                // The same visitor, again and again: the same variant, no new cookie.
                for _ in 0..3 {
                    let (again, set) = offer(&app, "currency=usd", Some(&cookie)).await;
                    assert_eq!(again["experiment"]["variant"], variant);
                    assert!(set.is_none());
                }
            }
        }
    }
    assert!(
        (30..=90).contains(&holdback),
        "{holdback} of 200 in the holdback"
    );
    assert_eq!(variants.len(), 2, "{variants:?}");
    // A forged visitor cookie is a new visitor.
    let (_, fresh) = offer(&app, "currency=usd", Some("__Host-kopilka_visitor=forged")).await;
    assert!(fresh.is_some());
    // Outside the targeting: no experiment.
    let (euro, _) = offer(&app, "currency=eur", None).await;
    assert!(euro.get("experiment").is_none(), "{euro}");

    // Paused: every view is back to the plain ask.
    store::transition(&app.pool, &app.settings.offer, "amounts-q1", Status::Paused)
        .await
        .unwrap();
    eventually(
        "the experiment withdrawn",
        Duration::from_secs(10),
        || async {
            let (body, _) = offer(&app, "currency=usd", None).await;
            body.get("experiment").is_none().then_some(())
        },
    )
    .await;
}
