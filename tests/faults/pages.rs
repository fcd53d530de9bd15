//! Issue #19, item 8, against the real binary: every HTML page and every JSON answer carries
//! its security headers (CSP with `frame-ancestors 'none'`, `nosniff`, `Referrer-Policy`),
//! and no token or path parameter a hostile client can type — Unicode spaces, NUL, broken
//! percent-encoding, traversal, 10 000 characters — produces a 500.

use reqwest::{Method, StatusCode};

use crate::stack::Stack;

/// The tokens and path segments a hostile client types.
fn hostile() -> Vec<String> {
    vec![
        "\u{2003}\u{3000}token".into(),
        "%E2%80%83%E3%80%80token".into(),
        "%00".into(),
        "%zz".into(),
        "..%2F..%2Fetc%2Fpasswd".into(),
        "%F0%9F%92%B8".into(),
        "a".repeat(10_000),
        "%C0%AF".into(),
        "%FF%FE".into(),
        "-_-_".into(),
    ]
}

fn headers_of(answer: &kopilka_test_support::ApiResponse, what: &str) {
    let header = |name: &str| {
        answer
            .headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned()
    };
    assert_eq!(header("x-content-type-options"), "nosniff", "{what}");
    assert_eq!(header("referrer-policy"), "no-referrer", "{what}");
    let policy = header("content-security-policy");
    assert!(policy.contains("default-src 'none'"), "{what}: {policy}");
    assert!(
        policy.contains("frame-ancestors 'none'"),
        "{what}: {policy}"
    );
    assert!(
        answer.headers.get("strict-transport-security").is_none(),
        "{what}: HSTS only in production"
    );
}

pub async fn every_page_sends_its_security_headers_and_no_hostile_token_is_a_500() {
    let stack = Stack::start_default().await;
    let api = stack.api();
    // The pages Kopilka serves itself, and JSON answers.
    for path in [
        "/v1/sessions/magic-link?token=abc",
        "/v1/reminders/unsubscribe?token=abc",
        "/v1/plan-links/abc",
        "/v1/offer",
        "/healthz",
        "/no/such/route",
    ] {
        let answer = api.get(path).await;
        assert!(answer.status.as_u16() < 500, "{path}: {}", answer.status);
        headers_of(&answer, path);
    }
    // Hostile tokens in every place a token is taken.
    for token in hostile() {
        for (method, path) in [
            (
                Method::GET,
                format!("/v1/sessions/magic-link?token={token}"),
            ),
            (
                Method::GET,
                format!("/v1/reminders/unsubscribe?token={token}"),
            ),
            (
                Method::POST,
                format!("/v1/reminders/unsubscribe?token={token}"),
            ),
            (Method::GET, format!("/v1/plan-links/{token}")),
            (Method::POST, format!("/v1/plan-links/{token}")),
            (Method::GET, format!("/v1/checkout/return?ref={token}")),
            (Method::PATCH, format!("/v1/me/recurring/{token}")),
            (Method::POST, format!("/v1/me/recurring/{token}/cancel")),
        ] {
            let mut request = api.request(method.clone(), &path);
            if method != Method::GET {
                request = request
                    .header("content-type", "application/json")
                    .body("{}");
            }
            let answer = kopilka_test_support::send(request).await;
            let shown: String = path.chars().take(60).collect();
            assert!(
                answer.status.as_u16() < 500,
                "{method} {shown}…: {}",
                answer.status
            );
            // A page (GET) may show its form; a write with a made-up token does nothing.
            if method != Method::GET {
                assert_ne!(
                    answer.status,
                    StatusCode::OK,
                    "{method} {shown}… did something"
                );
            }
            headers_of(&answer, &shown);
        }
    }
    stack.finish().await;
}
