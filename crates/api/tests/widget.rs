//! The widget's script as a site loads it (small, cacheable, revalidated), CORS for the
//! newsroom's own sites only, and the offer's hint that a signed-in reader's token needs
//! renewing. The widget in a real browser: `tests/e2e/widget.rs`.

use kopilka_test_support::{TestApp, send};
use reqwest::{Method, StatusCode};

#[tokio::test]
async fn the_widget_is_small_cacheable_and_revalidated() {
    let app = TestApp::spawn().await;
    let plain = app.api.get("/widget.js").await;
    assert_eq!(plain.status, StatusCode::OK);
    assert_eq!(
        plain.headers["content-type"],
        "text/javascript; charset=utf-8"
    );
    assert_eq!(plain.headers["cache-control"], "public, max-age=300");
    assert_eq!(plain.headers["x-content-type-options"], "nosniff");
    assert_eq!(plain.body, kopilka_api::WIDGET_JS.as_bytes());

    // Under 15 KiB as a browser fetches it (reqwest here does not decompress).
    let gzipped = send(
        app.api
            .request(Method::GET, "/widget.js")
            .header("accept-encoding", "gzip"),
    )
    .await;
    assert_eq!(gzipped.headers["content-encoding"], "gzip");
    assert!(
        gzipped.body.len() < 15 * 1024,
        "{} bytes gzipped",
        gzipped.body.len()
    );

    let etag = plain.headers["etag"].to_str().unwrap().to_owned();
    assert!(etag.starts_with('"') && etag.len() > 10, "{etag}");
    let again = send(
        app.api
            .request(Method::GET, "/widget.js")
            .header("if-none-match", &etag),
    )
    .await;
    assert_eq!(again.status, StatusCode::NOT_MODIFIED);
    assert!(again.body.is_empty());
    let stale = send(
        app.api
            .request(Method::GET, "/widget.js")
            .header("if-none-match", "\"another\""),
    )
    .await;
    assert_eq!(stale.status, StatusCode::OK);
}

#[tokio::test]
async fn cors_answers_only_the_newsrooms_sites() {
    let site = "https://news.example.org";
    let app = TestApp::spawn_with(|s| s.server.cors_allowed_origins = vec![site.into()]).await;
    let preflight = |origin: &'static str| {
        send(
            app.api
                .request(Method::OPTIONS, "/v1/checkout")
                .header("origin", origin)
                .header("access-control-request-method", "POST")
                .header(
                    "access-control-request-headers",
                    "content-type,idempotency-key",
                ),
        )
    };
    let allowed = preflight(site).await;
    assert_eq!(allowed.headers["access-control-allow-origin"], site);
    assert_eq!(allowed.headers["access-control-allow-credentials"], "true");
    let refused = preflight("https://evil.example.com").await;
    assert!(
        refused.headers.get("access-control-allow-origin").is_none(),
        "{:?}",
        refused.headers
    );
    // The same for a simple GET of the offer.
    let offer = send(
        app.api
            .request(Method::GET, "/v1/offer")
            .header("origin", "https://evil.example.com"),
    )
    .await;
    assert_eq!(offer.status, StatusCode::OK);
    assert!(offer.headers.get("access-control-allow-origin").is_none());
}

#[tokio::test]
async fn the_offer_asks_for_a_token_only_when_a_session_has_none() {
    let app = TestApp::spawn().await;
    let anonymous = app.api.get("/v1/offer").await;
    assert_eq!(anonymous.json()["renew"], false);
    assert_eq!(anonymous.headers["cache-control"], "private, no-store");
    assert_eq!(anonymous.json()["exponent"], 2);
    assert_eq!(anonymous.json()["meter_mode"], "asks_only");
    let yen = app.api.get("/v1/offer?currency=jpy").await.json();
    assert_eq!(
        (yen["currency"].as_str(), yen["exponent"].as_u64()),
        (Some("jpy"), Some(0))
    );

    // Only the cookie's presence counts: checking it would take a query per view.
    let with_session = send(
        app.api
            .request(Method::GET, "/v1/offer")
            .header("cookie", "__Host-kopilka_session=anything"),
    )
    .await
    .json();
    assert_eq!(with_session["renew"], true);

    // Signed in with a link, the reader fetches a token; with it the hint goes away.
    let email = "renew@example.org";
    app.api
        .post_json("/v1/reminders", &serde_json::json!({"email": email, "remind_on": (time::OffsetDateTime::now_utc() + time::Duration::days(3)).date().to_string()}))
        .await;
    app.api
        .post_json(
            "/v1/sessions/magic-link",
            &serde_json::json!({"email": email}),
        )
        .await;
    let link = app.link_token(email, 1).await;
    let session = app
        .api
        .post_json(
            "/v1/sessions/magic-link/consume",
            &serde_json::json!({"token": link}),
        )
        .await
        .json()["token"]
        .as_str()
        .unwrap()
        .to_owned();
    let token = send(
        app.api
            .request(Method::GET, "/v1/entitlements")
            .bearer_auth(&session),
    )
    .await
    .json()["token"]
        .as_str()
        .unwrap()
        .to_owned();
    let cookies = format!("__Host-kopilka_session={session}; __Host-kopilka_supporter={token}");
    let renewed = send(
        app.api
            .request(Method::GET, "/v1/offer")
            .header("cookie", cookies),
    )
    .await
    .json();
    assert_eq!(renewed["renew"], false);
    assert_eq!(renewed["supporter"], false);
}

#[tokio::test]
async fn the_served_widget_tells_the_page_nothing_it_need_not() {
    let app = TestApp::spawn().await;
    let served = String::from_utf8(app.api.get("/widget.js").await.body).unwrap();
    // The supporter event carries no claims: one shape, `{supporter: true}`.
    let events: Vec<&str> = served
        .lines()
        .filter(|l| l.contains("new CustomEvent(\"kopilka:supporter\""))
        .collect();
    assert_eq!(events.len(), 1, "{events:?}");
    assert!(
        events[0].contains("{ detail: { supporter: true } }"),
        "{}",
        events[0]
    );
    assert!(
        !served.contains("supporter(answer.body.claims)") && !served.contains("supporter(offer)"),
        "no claims or offer handed to the page"
    );
    // The outcome of a checkout comes from Kopilka, not from the page's URL.
    assert!(served.contains("\"/v1/checkout/outcome\""));
    assert!(
        !served.contains("searchParams.get(\"checkout\")")
            && !served.contains(".get(\"checkout\")")
    );
}
