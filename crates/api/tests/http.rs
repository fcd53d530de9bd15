//! The API's edge, against the real router and a real Postgres: health, the error envelope
//! whichever layer answers, limits, CORS, request ids, metrics and the OpenAPI document.

use std::time::Duration;

use axum::Router;
use axum::routing::{get, post};
use kopilka_api::{ApiJson, with_layers};
use kopilka_store::PrivatePostgres;
use kopilka_test_support::{ApiClient, TestApp, eventually, send, test_settings};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

#[tokio::test]
async fn health_and_readiness_answer_ok() {
    let app = TestApp::spawn().await;
    let health = app.api.healthz().await;
    assert_eq!(health.status, StatusCode::OK);
    assert_eq!(health.json(), json!({"status": "ok"}));
    let ready = app.api.readyz().await;
    assert_eq!(ready.status, StatusCode::OK);
    assert_eq!(ready.json(), json!({"status": "ok"}));
}

#[tokio::test]
async fn an_unknown_route_is_a_404_envelope() {
    let app = TestApp::spawn().await;
    assert_eq!(
        app.api.get("/v1/nothing-here").await.error_code(404),
        "not_found"
    );
}

#[tokio::test]
async fn the_benchmark_baseline_route_exists_only_when_configured_and_behind_every_layer() {
    let plain = TestApp::spawn().await;
    assert_eq!(
        plain.api.get("/_baseline").await.error_code(404),
        "not_found"
    );

    let app = TestApp::spawn_with(|settings| {
        settings.server.baseline_route = true;
        settings.server.metrics_token = Some(METRICS_TOKEN.to_owned().into());
    })
    .await;
    let baseline = app.api.get("/_baseline").await;
    assert_eq!(baseline.status, StatusCode::OK);
    assert_eq!(baseline.json()["reason"], "baseline");
    assert!(
        baseline.headers.contains_key("x-request-id"),
        "the request-id layer ran"
    );
    let metrics = String::from_utf8(
        send(
            app.api
                .request(Method::GET, "/metrics")
                .bearer_auth(METRICS_TOKEN),
        )
        .await
        .body,
    )
    .unwrap();
    assert!(
        metrics
            .lines()
            .any(|l| l.starts_with("http_requests_total{") && l.contains("route=\"/_baseline\"")),
        "the metrics layer ran: {metrics}"
    );
}

#[tokio::test]
async fn a_wrong_method_is_a_405_envelope_with_allow() {
    let app = TestApp::spawn().await;
    let response = app.api.post_json("/healthz", &json!({})).await;
    assert_eq!(response.error_code(405), "method_not_allowed");
    let allow = response.headers.get("allow").expect("an Allow header");
    assert!(allow.to_str().unwrap().contains("GET"));
}

#[tokio::test]
async fn an_oversized_body_is_a_413_envelope_and_the_server_keeps_serving() {
    let app = TestApp::spawn().await;
    let limit = app.settings.server.body_limit_bytes;
    let json_route = app
        .api
        .post_raw("/v1/checkout", "application/json", vec![b' '; limit + 1])
        .await;
    assert_eq!(json_route.error_code(413), "payload_too_large");
    // Past the largest limit (webhooks'), every route refuses before reading the body.
    let anywhere = app
        .api
        .post_raw(
            "/v1/anything",
            "application/json",
            vec![b' '; app.settings.server.webhook_body_limit_bytes + 1],
        )
        .await;
    assert_eq!(anywhere.error_code(413), "payload_too_large");
    assert_eq!(app.api.healthz().await.status, StatusCode::OK);
}

#[tokio::test]
async fn every_response_carries_a_request_id_and_keeps_a_given_one() {
    let app = TestApp::spawn().await;
    let fresh = app.api.healthz().await;
    let id = fresh.headers.get("x-request-id").expect("a request id");
    assert_eq!(id.to_str().unwrap().len(), 36, "a UUID");
    let given = send(
        app.api
            .request(Method::GET, "/healthz")
            .header("x-request-id", "abc-1234-def"),
    )
    .await;
    assert_eq!(given.headers.get("x-request-id").unwrap(), "abc-1234-def");
}

#[tokio::test]
async fn credentialed_cors_answers_only_the_widgets_routes_from_the_configured_origins() {
    let site = "https://news.example.org";
    let app = TestApp::spawn_with(|settings| {
        settings.server.cors_allowed_origins = vec![site.into()];
    })
    .await;
    let preflight = |path: &str, method: &str, origin: &str| {
        send(
            app.api
                .request(Method::OPTIONS, path)
                .header("origin", origin)
                .header("access-control-request-method", method)
                .header("access-control-request-headers", "content-type"),
        )
    };
    // What the widget calls (grep `call(` in widget.js), PUT included.
    for (path, method) in [
        ("/v1/offer", "GET"),
        ("/v1/banner", "GET"),
        ("/v1/banner", "PUT"),
        ("/v1/checkout", "POST"),
        ("/v1/checkout/outcome", "GET"),
        ("/v1/reminders", "POST"),
        ("/v1/sessions/magic-link", "POST"),
        ("/v1/entitlements", "GET"),
        ("/v1/passes/redeem", "POST"),
        ("/v1/passes/entitlements", "GET"),
    ] {
        let allowed = preflight(path, method, site).await;
        assert_eq!(
            allowed
                .headers
                .get("access-control-allow-origin")
                .map(|v| v.to_str().unwrap()),
            Some(site),
            "{method} {path}"
        );
        assert_eq!(allowed.headers["access-control-allow-credentials"], "true");
        let methods = allowed.headers["access-control-allow-methods"]
            .to_str()
            .unwrap();
        assert!(methods.contains(method), "{method} {path}: {methods}");
        let refused = preflight(path, method, "https://evil.example.com").await;
        assert!(
            refused.headers.get("access-control-allow-origin").is_none(),
            "{path}"
        );
    }
    // A reader's own data and the plan routes are same-origin only: no CORS header at all,
    // not even to the newsroom's site.
    for (path, method) in [
        ("/v1/me", "GET"),
        ("/v1/me", "DELETE"),
        ("/v1/me/export", "GET"),
        ("/v1/me/contributions", "GET"),
        (
            "/v1/me/recurring/00000000-0000-0000-0000-000000000000/cancel",
            "POST",
        ),
        ("/v1/plan-links/abc", "POST"),
        ("/v1/sessions", "POST"),
        ("/v1/sessions/magic-link/consume", "POST"),
        ("/v1/passes/revoke", "POST"),
        ("/healthz", "GET"),
    ] {
        let answer = preflight(path, method, site).await;
        assert!(!answer.status.is_success(), "{path}: {}", answer.status);
        let cors: Vec<_> = answer
            .headers
            .keys()
            .filter(|name| name.as_str().starts_with("access-control-"))
            .collect();
        assert!(cors.is_empty(), "{method} {path}: {cors:?}");
        let read = send(app.api.request(Method::GET, path).header("origin", site)).await;
        assert!(
            read.headers.get("access-control-allow-origin").is_none(),
            "{path}"
        );
    }

    // An error answered by a layer keeps its CORS headers, so the widget can read it.
    let not_allowed = send(
        app.api
            .request(Method::POST, "/v1/offer")
            .header("origin", site),
    )
    .await;
    assert_eq!(not_allowed.error_code(405), "method_not_allowed");
    assert_eq!(
        not_allowed
            .headers
            .get("access-control-allow-origin")
            .unwrap(),
        site
    );
}

/// Wrong passwords for fresh addresses, each "from" a different forwarded address: how
/// many are refused 429 shows which address the per-client throttle counted.
async fn throttled_guesses(app: &TestApp, forwarded: &[&str]) -> usize {
    let mut refused = 0;
    for (n, ip) in forwarded.iter().enumerate() {
        let answer = send(
            app.api
                .request(Method::POST, "/v1/sessions")
                .header("x-forwarded-for", *ip)
                .json(&json!({"email": format!("guess-{n}@example.org"), "password": "wrong password"})),
        )
        .await;
        assert!(
            [StatusCode::UNAUTHORIZED, StatusCode::TOO_MANY_REQUESTS].contains(&answer.status),
            "{}",
            answer.status
        );
        refused += usize::from(answer.status == StatusCode::TOO_MANY_REQUESTS);
    }
    refused
}

#[tokio::test]
async fn a_forwarded_address_counts_only_from_a_trusted_proxy_and_ipv6_per_slash_64() {
    let fresh: Vec<String> = (1..=6).map(|n| format!("203.0.113.{n}")).collect();
    let fresh: Vec<&str> = fresh.iter().map(String::as_str).collect();
    let limits = |s: &mut kopilka_config::Settings| {
        s.server.client_ip_header = Some("x-forwarded-for".into());
        s.accounts.free_failures_per_ip = 2;
        s.accounts.backoff_base_secs = 300;
    };
    // The test client connects from 127.0.0.1, which is no trusted proxy here: its
    // X-Forwarded-For is the client's own invention, so every guess counts against it.
    let untrusted = TestApp::spawn_with(|s| {
        limits(s);
        s.server.trusted_proxies = vec!["192.0.2.0/24".parse().unwrap()];
    })
    .await;
    assert!(
        throttled_guesses(&untrusted, &fresh).await >= 3,
        "a forged header must not give each guess a fresh address"
    );

    // Behind a trusted proxy (loopback here), each forwarded address counts by itself...
    let proxied = TestApp::spawn_with(|s| {
        limits(s);
        s.server.trusted_proxies = vec!["127.0.0.0/8".parse().unwrap()];
    })
    .await;
    assert_eq!(throttled_guesses(&proxied, &fresh).await, 0);
    // ...the right-most untrusted entry, not what the client wrote on the left...
    let forged: Vec<String> = (1..=6)
        .map(|n| format!("198.51.100.{n}, 203.0.113.200, 127.0.0.1"))
        .collect();
    let forged: Vec<&str> = forged.iter().map(String::as_str).collect();
    assert!(throttled_guesses(&proxied, &forged).await >= 3);
    // ...and an IPv6 client as its /64: fresh interface ids are one client.
    let v6: Vec<String> = (1..=6).map(|n| format!("2001:db8:7:7::{n:x}")).collect();
    let v6: Vec<&str> = v6.iter().map(String::as_str).collect();
    assert!(throttled_guesses(&proxied, &v6).await >= 3);
    let other_nets: Vec<String> = (1..=6).map(|n| format!("2001:db8:8:{n:x}::1")).collect();
    let other_nets: Vec<&str> = other_nets.iter().map(String::as_str).collect();
    assert_eq!(throttled_guesses(&proxied, &other_nets).await, 0);
}

const METRICS_TOKEN: &str = "metrics-token-for-tests-0123456789";

#[tokio::test]
async fn metrics_are_not_public_only_on_the_admin_listener_or_to_the_bearer() {
    // No token configured: the public API has no /metrics at all.
    let plain = TestApp::spawn().await;
    assert_eq!(plain.api.get("/metrics").await.error_code(404), "not_found");
    assert_eq!(
        send(
            plain
                .api
                .request(Method::GET, "/metrics")
                .bearer_auth(METRICS_TOKEN)
        )
        .await
        .error_code(404),
        "not_found"
    );

    // With a token: 404 (as if absent) without it or with another, 200 with it.
    let app = TestApp::spawn_with(|settings| {
        settings.server.metrics_token = Some(METRICS_TOKEN.to_owned().into());
    })
    .await;
    assert_eq!(app.api.readyz().await.status, StatusCode::OK);
    assert_eq!(app.api.get("/metrics").await.error_code(404), "not_found");
    for wrong in [
        "",
        "metrics-token-for-tests-012345678",
        "metrics-token-for-tests-0123456789x",
    ] {
        let refused = send(
            app.api
                .request(Method::GET, "/metrics")
                .header("authorization", format!("Bearer {wrong}")),
        )
        .await;
        assert_eq!(refused.error_code(404), "not_found", "{wrong:?}");
    }
    let metrics = send(
        app.api
            .request(Method::GET, "/metrics")
            .bearer_auth(METRICS_TOKEN),
    )
    .await;
    assert_eq!(metrics.status, StatusCode::OK);
    let text = String::from_utf8(metrics.body).unwrap();
    assert!(
        text.lines().any(|l| l.starts_with("http_requests_total{")
            && l.contains("route=\"/readyz\"")
            && l.contains("status=\"200\"")),
        "{text}"
    );

    // The admin listener serves them to anyone who can reach it (keep it private), and
    // nothing of the public API.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let admin = listener.local_addr().unwrap();
    let server = tokio::spawn(kopilka_api::serve_admin(listener));
    let on_admin = reqwest::get(format!("http://{admin}/metrics"))
        .await
        .unwrap();
    assert_eq!(on_admin.status(), StatusCode::OK);
    assert!(
        on_admin
            .text()
            .await
            .unwrap()
            .contains("http_requests_total")
    );
    let offer = reqwest::get(format!("http://{admin}/v1/offer"))
        .await
        .unwrap();
    assert_eq!(offer.status(), StatusCode::NOT_FOUND);
    server.abort();
}

#[tokio::test]
async fn a_client_request_id_is_kept_only_when_it_is_a_plain_hex_id() {
    let app = TestApp::spawn().await;
    for (sent, kept) in [
        ("0f8fad5b-d9cb-469f-a165-70867728950e", true),
        ("a1b2c3d4e5f60718", true),
        ("reader@example.org", false),
        ("eyJhbGciOiJFZERTQSJ9.token", false),
        ("short", false),
        ("deadbeef injected", false),
    ] {
        let answer = send(
            app.api
                .request(Method::GET, "/healthz")
                .header("x-request-id", sent),
        )
        .await;
        let echoed = answer
            .headers
            .get("x-request-id")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned();
        assert_eq!(echoed == sent, kept, "{sent:?} → {echoed:?}");
        assert!(!echoed.is_empty(), "an id is always set");
    }
}

#[tokio::test]
async fn the_openapi_document_is_valid_and_covers_every_route() {
    let app = TestApp::spawn().await;
    let served = app.api.get("/openapi.json").await;
    assert_eq!(served.status, StatusCode::OK);
    let document: Value = served.json();
    assert_eq!(
        document,
        serde_json::to_value(kopilka_api::openapi()).unwrap()
    );

    let spec = oas3::from_json(String::from_utf8(served.body).unwrap())
        .expect("a valid OpenAPI 3.1 document");
    assert!(spec.openapi.starts_with("3.1"));
    let paths = spec.paths.expect("paths");
    for route in ["/healthz", "/readyz"] {
        let item = paths
            .get(route)
            .unwrap_or_else(|| panic!("{route} is documented"));
        let operation = item.get.as_ref().expect("a GET operation");
        let responses = operation.responses.as_ref().expect("responses");
        assert!(
            responses.keys().any(|code| code.starts_with('2')),
            "{route} documents success"
        );
    }
    // Every $ref points at a schema that exists.
    let schemas = document["components"]["schemas"].as_object().unwrap();
    let text = document.to_string();
    for reference in text.split("\"$ref\":\"#/components/schemas/").skip(1) {
        let name = reference.split('"').next().unwrap();
        assert!(schemas.contains_key(name), "dangling $ref to {name}");
    }
}

#[tokio::test]
async fn readiness_goes_503_while_postgres_is_down_and_recovers_by_itself() {
    let cluster = tokio::task::spawn_blocking(PrivatePostgres::start_throwaway)
        .await
        .unwrap()
        .unwrap();
    let app = TestApp::spawn_on(cluster.url("postgres"), |_| {}).await;
    assert_eq!(app.api.readyz().await.status, StatusCode::OK);

    let cluster = tokio::task::spawn_blocking(move || {
        cluster.stop();
        cluster
    })
    .await
    .unwrap();
    let down = app.api.readyz().await;
    assert_eq!(down.error_code(503), "service_unavailable");
    assert!(down.headers.get("retry-after").is_some());
    assert_eq!(
        app.api.healthz().await.status,
        StatusCode::OK,
        "liveness does not depend on Postgres"
    );

    let cluster = tokio::task::spawn_blocking(move || {
        cluster.start().unwrap();
        cluster
    })
    .await
    .unwrap();
    eventually("readiness to recover", Duration::from_secs(30), || async {
        (app.api.readyz().await.status == StatusCode::OK).then_some(())
    })
    .await;
    drop(app);
    tokio::task::spawn_blocking(move || drop(cluster))
        .await
        .unwrap();
}

async fn panicking_handler() -> &'static str {
    panic!("a bug in a handler")
}

#[tokio::test]
async fn large_answers_are_compressed_when_the_client_accepts_it() {
    let app = TestApp::spawn().await;
    let response = send(
        app.api
            .request(Method::GET, "/openapi.json")
            .header("accept-encoding", "gzip"),
    )
    .await;
    assert_eq!(response.status, StatusCode::OK);
    assert_eq!(response.headers.get("content-encoding").unwrap(), "gzip");
}

#[tokio::test]
async fn in_flight_requests_finish_when_shutdown_begins() {
    let (began, mut has_begun) = tokio::sync::mpsc::channel::<()>(1);
    let routes = Router::new().route(
        "/work",
        get(move || async move {
            let _ = began.send(()).await;
            tokio::time::sleep(Duration::from_millis(500)).await;
            "finished"
        }),
    );
    let app = with_layers(routes, &test_settings());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let api = ApiClient::new(format!("http://{}", listener.local_addr().unwrap()));
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(kopilka_api::serve(
        listener,
        app,
        async {
            let _ = stopped.await;
        },
        Duration::from_secs(10),
    ));
    let in_flight = tokio::spawn(async move { api.get("/work").await });
    // Shut down only once the request is being handled.
    has_begun.recv().await.unwrap();
    stop.send(()).unwrap();
    let response = in_flight.await.unwrap();
    assert_eq!(response.status, StatusCode::OK);
    assert_eq!(response.body, b"finished");
    server.await.unwrap().unwrap();
}

/// A probe route under the API's own layers, for what no shipped route exercises yet
/// (JSON bodies, panics, slow handlers). Later routes use the same extractor and stack.
async fn probe_server(request_timeout_secs: u64) -> ApiClient {
    #[derive(serde::Deserialize, serde::Serialize)]
    struct Pledge {
        amount_minor: i64,
        currency: kopilka_domain::Currency,
    }
    let mut settings = test_settings();
    settings.server.request_timeout_secs = request_timeout_secs;
    let routes = Router::new()
        .route(
            "/probe",
            post(|ApiJson(p): ApiJson<Pledge>| async move { ApiJson(p) }),
        )
        .route("/panic", get(panicking_handler))
        .route(
            "/slow",
            get(|| async {
                tokio::time::sleep(Duration::from_secs(30)).await;
                "late"
            }),
        );
    let app = with_layers(routes, &settings);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    tokio::spawn(kopilka_api::serve(
        listener,
        app,
        std::future::pending(),
        Duration::from_secs(1),
    ));
    ApiClient::new(format!("http://{address}"))
}

#[tokio::test]
async fn json_bodies_are_parsed_at_the_edge_with_envelope_errors() {
    let api = probe_server(10).await;
    let ok = api
        .post_json("/probe", &json!({"amount_minor": 500, "currency": "JPY"}))
        .await;
    assert_eq!(ok.status, StatusCode::OK);
    assert_eq!(ok.json(), json!({"amount_minor": 500, "currency": "jpy"}));

    let malformed = api
        .post_raw(
            "/probe",
            "application/json",
            b"{\"amount_minor\": 5".to_vec(),
        )
        .await;
    assert_eq!(malformed.error_code(400), "malformed_json");
    let invalid_utf8 = api
        .post_raw("/probe", "application/json", vec![b'"', 0xff, 0xfe, b'"'])
        .await;
    assert_eq!(invalid_utf8.error_code(400), "malformed_json");
    // Deep nesting neither overflows the stack nor slips through.
    let deep = format!("{{\"x\": {}{}}}", "[".repeat(10_000), "]".repeat(10_000));
    let deep = api
        .post_raw("/probe", "application/json", deep.into_bytes())
        .await;
    assert_eq!(deep.error_code(422), "invalid_body");

    let wrong_type = api
        .post_json("/probe", &json!({"amount_minor": "5", "currency": "usd"}))
        .await;
    assert_eq!(wrong_type.error_code(422), "invalid_body");
    let unknown_currency = api
        .post_json("/probe", &json!({"amount_minor": 5, "currency": "zzz"}))
        .await;
    assert_eq!(unknown_currency.error_code(422), "invalid_body");
    let float = api
        .post_json("/probe", &json!({"amount_minor": 5.5, "currency": "usd"}))
        .await;
    assert_eq!(float.error_code(422), "invalid_body");

    let not_json = api.post_raw("/probe", "text/plain", b"{}".to_vec()).await;
    assert_eq!(not_json.error_code(415), "unsupported_media_type");
}

#[tokio::test]
async fn a_panicking_handler_is_a_500_envelope_and_the_server_keeps_serving() {
    let api = probe_server(10).await;
    let response = api.get("/panic").await;
    assert_eq!(response.error_code(500), "internal_error");
    let body = String::from_utf8_lossy(&response.body);
    assert!(
        !body.contains("a bug in a handler"),
        "internals are not sent: {body}"
    );
    let again = api
        .post_json("/probe", &json!({"amount_minor": 1, "currency": "usd"}))
        .await;
    assert_eq!(again.status, StatusCode::OK);
}

#[tokio::test]
async fn a_slow_request_times_out_with_a_503_envelope() {
    let api = probe_server(1).await;
    assert_eq!(
        api.get("/slow").await.error_code(503),
        "service_unavailable"
    );
}

#[tokio::test]
async fn the_demo_page_is_served_only_under_dev() {
    let dev = TestApp::spawn_with(|settings| settings.env = kopilka_config::Environment::Dev).await;
    let page = dev.api.get("/").await;
    assert_eq!(page.status, StatusCode::OK);
    let html = String::from_utf8(page.body).unwrap();
    assert!(
        html.contains(r##"<script src="/widget.js" data-target="#support" async>"##),
        "the demo article embeds the widget: {html}"
    );
    assert_page_policy(&page.headers, &html, "the demo page");
    let policy = page.headers["content-security-policy"].to_str().unwrap();
    assert!(
        policy.contains("script-src 'self'"),
        "it loads /widget.js: {policy}"
    );
    let russian = dev.api.get("/?lang=ru").await;
    assert!(String::from_utf8_lossy(&russian.body).contains(r#"<html lang="ru">"#));
    assert_page_policy(
        &russian.headers,
        &String::from_utf8_lossy(&russian.body),
        "the demo page in Russian",
    );

    let test = TestApp::spawn().await;
    assert_eq!(test.api.get("/").await.error_code(404), "not_found");
}

/// What no path parameter, query token or body field may turn into a 5xx: Unicode spaces
/// (leading, inside, alone), NUL, traversal (encoded and raw), emoji, invalid UTF-8
/// percent-encodings (a lone continuation byte, an overlong slash, a surrogate, a truncated
/// sequence), broken escapes, header injection, markup, numbers and UUIDs that are not
/// there, very long input, and nothing at all.
const NASTY: &[&str] = &[
    "",
    "%E2%80%83%E2%80%83AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA",
    "%C2%A0token%C2%A0",
    "%E3%80%80",
    "%E2%80%8B",
    "%20",
    "%00",
    "abc%00def",
    "..%2F..%2Fetc%2Fpasswd",
    "../../etc/passwd",
    "..",
    "%2e%2e",
    "%F0%9F%92%B8%F0%9F%92%B8",
    "%FF%FE",
    "%80",
    "%C0%AF",
    "%ED%A0%80",
    "%E2%82",
    "%",
    "%zz",
    "%0d%0aSet-Cookie:%20x=y",
    "%3Cscript%3Ealert(1)%3C%2Fscript%3E",
    "'%20OR%201=1--",
    "-1",
    "99999999999999999999999999",
    "00000000-0000-0000-0000-000000000000",
    "ffffffff-ffff-ffff-ffff-ffffffffffff",
    "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA",
    "%E2%80%AE%E2%80%AE",
    "\u{2003}\u{3000}raw-unicode-spaces",
    "LONG",
];

/// A [`NASTY`] input, as it goes on the request line (`LONG` stands for 6 000 characters).
fn on_the_wire(nasty: &str) -> String {
    if nasty == "LONG" {
        "A".repeat(6000)
    } else {
        nasty.to_owned()
    }
}

/// A [`NASTY`] input as the string a JSON body carries (invalid UTF-8 replaced).
fn as_text(nasty: &str) -> String {
    let wire = on_the_wire(nasty);
    let mut bytes = Vec::new();
    let raw = wire.as_bytes();
    let mut i = 0;
    while i < raw.len() {
        let hex = raw
            .get(i + 1..i + 3)
            .and_then(|h| std::str::from_utf8(h).ok())
            .and_then(|h| u8::from_str_radix(h, 16).ok());
        match (raw[i], hex) {
            (b'%', Some(byte)) => {
                bytes.push(byte);
                i += 3;
            }
            (byte, _) => {
                bytes.push(byte);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&bytes).into_owned()
}

/// One request over a plain socket, so the target goes out exactly as written (an HTTP
/// client would normalise `..` and re-encode the rest): the status and the body.
async fn raw_request(
    address: std::net::SocketAddr,
    method: &str,
    target: &str,
    bearer: &str,
) -> (u16, Vec<u8>) {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let mut stream = tokio::net::TcpStream::connect(address)
        .await
        .expect("the app accepts");
    let request = format!(
        "{method} {target} HTTP/1.1\r\nHost: {address}\r\nAuthorization: Bearer {bearer}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
    );
    stream
        .write_all(request.as_bytes())
        .await
        .expect("the request is sent");
    let mut answer = Vec::new();
    stream
        .read_to_end(&mut answer)
        .await
        .expect("the answer is read");
    let split = answer
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("an HTTP answer");
    let head = String::from_utf8_lossy(&answer[..split]).to_ascii_lowercase();
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .expect("a status");
    let mut body = answer[split + 4..].to_vec();
    if head.contains("transfer-encoding: chunked") {
        let mut plain = Vec::new();
        let mut rest = &body[..];
        while let Some(end) = rest.windows(2).position(|w| w == b"\r\n") {
            let size = usize::from_str_radix(std::str::from_utf8(&rest[..end]).unwrap().trim(), 16)
                .unwrap();
            if size == 0 {
                break;
            }
            plain.extend_from_slice(&rest[end + 2..end + 2 + size]);
            rest = &rest[end + 2 + size + 2..];
        }
        body = plain;
    }
    (status, body)
}

/// Whether `body` is the error envelope.
fn is_envelope(body: &[u8]) -> bool {
    serde_json::from_slice::<Value>(body)
        .is_ok_and(|v| v["error"]["code"].is_string() && v["error"]["message"].is_string())
}

/// A placeholder for a required body field of `schema`'s type.
fn placeholder(schema: &Value) -> Value {
    match schema["type"].as_str() {
        Some("integer" | "number") => json!(1000),
        Some("boolean") => json!(false),
        Some("array") => json!([]),
        Some("object") => json!({}),
        _ => json!("x"),
    }
}

#[tokio::test]
async fn no_path_parameter_query_token_or_body_field_produces_a_5xx() {
    let app = TestApp::spawn().await;
    fuzz_every_parameter(&app, true).await;
    // Without payments configured too: a forged link is still a 4xx, not "not configured"
    // (a genuine link is then 502 `payment_provider_not_configured`: the server's state,
    // not the input, so genuine tokens are left out here).
    let unpaid = TestApp::spawn_with(|s| s.stripe.secret_key = None).await;
    assert!(unpaid.state.stripe.is_none());
    fuzz_every_parameter(&unpaid, false).await;
}

/// Sends every parameter of every documented route each of [`NASTY`] (and, with
/// `around_genuine`, each around a genuine signed token), signed in.
async fn fuzz_every_parameter(app: &TestApp, around_genuine: bool) {
    // A signed-in reader, so routes behind a session read their parameters too.
    let email = "fuzz@example.org";
    let signed_up = app
        .api
        .post_json(
            "/v1/accounts",
            &json!({"email": email, "password": "correct horse battery staple"}),
        )
        .await;
    assert_eq!(signed_up.status, StatusCode::ACCEPTED);
    let link = app.link_token(email, 1).await;
    let session = app
        .api
        .post_json("/v1/sessions/magic-link/consume", &json!({"token": link}))
        .await;
    assert_eq!(session.status, StatusCode::CREATED);
    let bearer = session.json()["token"].as_str().unwrap().to_owned();
    let genuine = kopilka_accounts::plan_link::token(
        &app.state.accounts.keys,
        uuid::Uuid::now_v7(),
        kopilka_accounts::plan_link::PlanAction::Cancel,
        time::OffsetDateTime::now_utc() + time::Duration::days(1),
    );

    // Every documented route, from the OpenAPI document: a new route is fuzzed unasked.
    let document = serde_json::to_value(kopilka_api::openapi()).unwrap();
    let schemas = &document["components"]["schemas"];
    let mut failures = Vec::new();
    let mut tried = 0;
    for (template, operations) in document["paths"].as_object().unwrap() {
        for (method, operation) in operations.as_object().unwrap() {
            let method = method.to_ascii_uppercase();
            if method == "DELETE" && !template.contains('{') {
                continue; // DELETE /v1/me and /v1/sessions take no input and end the reader.
            }
            let parameters = operation["parameters"]
                .as_array()
                .cloned()
                .unwrap_or_default();
            for parameter in &parameters {
                let name = parameter["name"].as_str().unwrap();
                let place = parameter["in"].as_str().unwrap();
                // Each input alone, and around a genuine signed token (a plan link's, for a
                // plan that does not exist): what trims or decodes it must not break either.
                let inputs = NASTY.iter().map(|n| on_the_wire(n)).chain(
                    NASTY
                        .iter()
                        .filter(|n| around_genuine && **n != "LONG")
                        .flat_map(|n| [format!("{n}{genuine}"), format!("{genuine}{n}")]),
                );
                for value in inputs {
                    let nasty = &value;
                    let target = match place {
                        "path" => template.replace(&format!("{{{name}}}"), &value),
                        "query" => format!("{}?{name}={value}", template.replace(['{', '}'], "")),
                        _ => continue,
                    };
                    let (status, body) = raw_request(app.address, &method, &target, &bearer).await;
                    tried += 1;
                    if status >= 500 || (status >= 400 && !is_envelope(&body)) {
                        failures.push(format!(
                            "{method} {template} {name}={nasty:?}: {status} {}",
                            String::from_utf8_lossy(&body)
                        ));
                    }
                }
            }
            // Every string field of a JSON body, each in turn, the required others filled.
            let Some(reference) =
                operation["requestBody"]["content"]["application/json"]["schema"]["$ref"].as_str()
            else {
                continue;
            };
            let schema = &schemas[reference.rsplit('/').next().unwrap()];
            let Some(properties) = schema["properties"].as_object() else {
                continue;
            };
            let required: Vec<&str> = schema["required"]
                .as_array()
                .map(|r| r.iter().filter_map(Value::as_str).collect())
                .unwrap_or_default();
            let path = template
                .replace("{id}", "00000000-0000-0000-0000-000000000000")
                .replace("{token}", "x");
            for (field, field_schema) in properties {
                if field_schema["type"].as_str().is_some_and(|t| t != "string") {
                    continue;
                }
                for nasty in NASTY {
                    let mut body = serde_json::Map::new();
                    for (other, other_schema) in properties {
                        if required.contains(&other.as_str()) {
                            body.insert(other.clone(), placeholder(other_schema));
                        }
                    }
                    body.insert(field.clone(), json!(as_text(nasty)));
                    let answer = send(
                        app.api
                            .request(Method::from_bytes(method.as_bytes()).unwrap(), &path)
                            .bearer_auth(&bearer)
                            .json(&body),
                    )
                    .await;
                    tried += 1;
                    if answer.status.is_server_error()
                        || (answer.status.is_client_error() && !is_envelope(&answer.body))
                    {
                        failures.push(format!(
                            "{method} {path} {field}={nasty:?}: {} {}",
                            answer.status,
                            String::from_utf8_lossy(&answer.body)
                        ));
                    }
                }
            }
        }
    }
    assert!(
        tried > 1000,
        "only {tried} requests: is the document walked?"
    );
    eprintln!("{tried} fuzzed requests");
    assert!(
        failures.is_empty(),
        "{} of {tried}:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

/// `'sha256-…'` of every inline `<tag>` body in `html`.
fn inline_hashes(html: &str, tag: &str) -> Vec<String> {
    use base64::Engine as _;
    use sha2::Digest as _;
    let (open, close) = (format!("<{tag}>"), format!("</{tag}>"));
    html.split(&open)
        .skip(1)
        .filter_map(|rest| rest.split_once(&close).map(|(body, _)| body))
        .map(|body| {
            format!(
                "'sha256-{}'",
                base64::engine::general_purpose::STANDARD.encode(sha2::Sha256::digest(body))
            )
        })
        .collect()
}

/// A page's policy: nothing framed, no inline script but the page's own (by hash), no
/// inline event handlers, no eval; and every inline script and style is allowed (a page
/// its policy blocks is a broken page).
fn assert_page_policy(headers: &reqwest::header::HeaderMap, html: &str, what: &str) {
    let policy = headers
        .get("content-security-policy")
        .unwrap_or_else(|| panic!("{what} has a policy"))
        .to_str()
        .unwrap();
    assert!(policy.starts_with("default-src 'none'"), "{what}: {policy}");
    assert!(
        policy.contains("frame-ancestors 'none'"),
        "{what}: {policy}"
    );
    assert!(policy.contains("base-uri 'none'"), "{what}: {policy}");
    assert!(!policy.contains("unsafe-eval"), "{what}: {policy}");
    let script_src = policy
        .split(';')
        .find(|d| d.trim().starts_with("script-src"))
        .unwrap_or("");
    assert!(!script_src.contains("unsafe-inline"), "{what}: {policy}");
    for hash in inline_hashes(html, "script") {
        assert!(script_src.contains(&hash), "{what}: {hash} not in {policy}");
    }
    let style_src = policy
        .split(';')
        .find(|d| d.trim().starts_with("style-src"))
        .unwrap_or("");
    for hash in inline_hashes(html, "style") {
        assert!(
            style_src.contains(&hash) || style_src.contains("'unsafe-inline'"),
            "{what}: {hash} not in {policy}"
        );
    }
    let lowered = html.to_ascii_lowercase();
    for handler in [
        " onclick=",
        " onload=",
        " onerror=",
        " onsubmit=",
        "javascript:",
    ] {
        assert!(!lowered.contains(handler), "{what}: {handler}");
    }
    assert_eq!(headers["x-content-type-options"], "nosniff", "{what}");
    assert_eq!(headers["referrer-policy"], "no-referrer", "{what}");
    assert_eq!(headers["cache-control"], "no-store", "{what}");
}

#[tokio::test]
async fn every_answer_says_nosniff_no_referrer_and_no_framing_and_pages_have_their_policy() {
    let app = TestApp::spawn().await;
    for (method, path) in [
        (Method::GET, "/v1/offer"),
        (Method::GET, "/healthz"),
        (Method::GET, "/v1/nothing-here"),
        (Method::POST, "/healthz"),
        (Method::GET, "/v1/me"),
        (Method::GET, "/widget.js"),
        (Method::GET, "/openapi.json"),
        (Method::GET, "/.well-known/jwks.json"),
        (Method::GET, "/v1/checkout/return?ref=forged"),
    ] {
        let answer = send(app.api.request(method.clone(), path)).await;
        let what = format!("{method} {path} ({})", answer.status);
        assert_eq!(
            answer.headers["x-content-type-options"], "nosniff",
            "{what}"
        );
        assert_eq!(answer.headers["referrer-policy"], "no-referrer", "{what}");
        let policy = answer.headers["content-security-policy"].to_str().unwrap();
        assert!(policy.contains("default-src 'none'"), "{what}: {policy}");
        assert!(
            policy.contains("frame-ancestors 'none'"),
            "{what}: {policy}"
        );
        assert!(
            answer.headers.get("strict-transport-security").is_none(),
            "{what}: no HSTS on the test environment's http://127.0.0.1"
        );
    }
    let plan_link = kopilka_accounts::plan_link::token(
        &app.state.accounts.keys,
        uuid::Uuid::now_v7(),
        kopilka_accounts::plan_link::PlanAction::Cancel,
        time::OffsetDateTime::now_utc() + time::Duration::days(1),
    );
    for path in [
        "/v1/sessions/magic-link?token=abc-DEF_123".to_owned(),
        "/v1/reminders/unsubscribe?token=abc-DEF_123".to_owned(),
        format!("/v1/plan-links/{plan_link}"),
        // Whatever a token carries, the page shows only a token's own characters.
        "/v1/plan-links/%22%3E%3Cscript%3Ealert(1)%3C%2Fscript%3E".to_owned(),
        "/v1/sessions/magic-link?token=%22%3E%3Cscript%3Ealert(1)%3C%2Fscript%3E".to_owned(),
    ] {
        let page = app.api.get(&path).await;
        assert_eq!(page.status, StatusCode::OK, "{path}");
        assert!(
            page.headers["content-type"]
                .to_str()
                .unwrap()
                .starts_with("text/html"),
            "{path}"
        );
        let html = String::from_utf8(page.body.clone()).unwrap();
        assert!(!html.contains("alert(1)<"), "{path}: {html}");
        assert!(!html.contains("<script>alert"), "{path}: {html}");
        assert_page_policy(&page.headers, &html, &path);
        if path.starts_with("/v1/plan-links/") && path.len() > 60 {
            assert!(html.contains(&plan_link), "the page carries its token");
        }
    }
}

#[tokio::test]
async fn strict_transport_security_is_sent_in_production_only() {
    for (env, expected) in [
        (
            kopilka_config::Environment::Production,
            Some("max-age=31536000"),
        ),
        (kopilka_config::Environment::Dev, None),
        (kopilka_config::Environment::Test, None),
    ] {
        let mut settings = test_settings();
        settings.env = env;
        let app = with_layers(
            Router::new().route("/ok", get(|| async { "ok" })),
            &settings,
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        tokio::spawn(kopilka_api::serve(
            listener,
            app,
            std::future::pending(),
            Duration::from_secs(1),
        ));
        let client = ApiClient::new(format!("http://{address}"));
        for path in ["/ok", "/missing"] {
            let answer = client.get(path).await;
            assert_eq!(
                answer
                    .headers
                    .get("strict-transport-security")
                    .map(|v| v.to_str().unwrap()),
                expected,
                "{env:?} {path}"
            );
        }
    }
}
