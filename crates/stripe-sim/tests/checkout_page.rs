//! The hosted checkout page: what a reader (or a browser test) sees at a session's `url`.

use kopilka_stripe_sim::{SimOptions, spawn};
use serde_json::Value;

#[tokio::test]
async fn the_page_shows_the_gift_and_its_buttons_pay_decline_and_redirect() {
    let sim = spawn("127.0.0.1:0".parse().unwrap(), SimOptions::default())
        .await
        .unwrap();
    let http = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let session: Value = http
        .post(format!("http://{}/v1/checkout/sessions", sim.addr))
        .bearer_auth(sim.simulator.secret_key())
        .form(&[
            ("mode", "subscription"),
            ("line_items[0][price_data][currency]", "usd"),
            ("line_items[0][price_data][unit_amount]", "1500"),
            ("line_items[0][price_data][recurring][interval]", "month"),
            (
                "line_items[0][price_data][product_data][name]",
                "Monthly <support>",
            ),
            (
                "success_url",
                "https://news.example.org/thanks?session={CHECKOUT_SESSION_ID}",
            ),
        ])
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let id = session["id"].as_str().unwrap();
    let url = session["url"].as_str().unwrap();

    let page = http.get(url).send().await.unwrap().text().await.unwrap();
    assert!(page.contains("15.00 USD every month"), "{page}");
    assert!(
        page.contains("Monthly &lt;support&gt;"),
        "reader-facing text is escaped: {page}"
    );
    for button in [
        "Pay</button>",
        "Decline card</button>",
        "Pay, then dispute</button>",
    ] {
        assert!(page.contains(button), "{button} in {page}");
    }

    let declined = http
        .post(format!("{url}/decline"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(declined.contains("Your card was declined."), "{declined}");
    let still_open: Value = http
        .get(format!("http://{}/v1/checkout/sessions/{id}", sim.addr))
        .bearer_auth(sim.simulator.secret_key())
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(still_open["status"], "open");

    let paid = http
        .post(format!("{url}/pay"))
        .form(&[("email", "page@example.org")])
        .send()
        .await
        .unwrap();
    assert_eq!(paid.status().as_u16(), 303);
    assert_eq!(
        paid.headers()["location"].to_str().unwrap(),
        format!("https://news.example.org/thanks?session={id}")
    );
    let done = http.get(url).send().await.unwrap().text().await.unwrap();
    assert!(done.contains("complete"), "{done}");
}
