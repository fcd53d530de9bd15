//! Who gets in: forged supporter tokens, password guessing, account enumeration, other
//! origins and cross-site requests riding a reader's cookie.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use futures_util::future::join_all;
use kopilka_paywall::{KeyRecord, Keyring, SupporterClaims};
use kopilka_test_support::{ApiResponse, send};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::stack::{SIGNING_SECRET, SITE, Stack};

const PASSWORD: &str = "a perfectly good passphrase";

fn now() -> i64 {
    time::OffsetDateTime::now_utc().unix_timestamp()
}

fn b64(value: &Value) -> String {
    URL_SAFE_NO_PAD.encode(value.to_string())
}

async fn offer_with_bearer(stack: &Stack, token: &str) -> ApiResponse {
    send(
        stack
            .api()
            .request(Method::GET, "/v1/offer")
            .bearer_auth(token),
    )
    .await
}

/// Signs a reader up with [`PASSWORD`] and confirms it from the mailbox; a session token.
async fn signed_in(stack: &Stack, email: &str, nth_email: usize) -> String {
    stack.sign_up_confirmed(email, PASSWORD, nth_email).await.1
}

pub async fn forged_supporter_tokens_are_401() {
    let mut stack = Stack::start_default().await;
    let email = "token-holder@example.org";
    stack.watch([email, PASSWORD]);
    let session = signed_in(&stack, email, 1).await;
    let issued = send(
        stack
            .api()
            .request(Method::GET, "/v1/entitlements")
            .bearer_auth(&session),
    )
    .await;
    assert_eq!(issued.status, StatusCode::OK);
    let genuine = issued.json()["token"].as_str().expect("a token").to_owned();
    stack.watch([genuine.as_str(), session.as_str()]);
    assert_eq!(
        offer_with_bearer(&stack, &genuine).await.status,
        StatusCode::OK
    );

    // The server's own key, derived as the server derives it: tokens it signs are genuine
    // except for what each case changes.
    let jwks = stack.api().get("/.well-known/jwks.json").await.json();
    let key = &jwks["keys"][0];
    let kid = key["kid"].as_str().expect("a kid").to_owned();
    let payload: Value = serde_json::from_slice(
        &URL_SAFE_NO_PAD
            .decode(genuine.split('.').nth(1).expect("a payload"))
            .expect("base64"),
    )
    .expect("JSON claims");
    let (iss, aud) = (
        payload["iss"].as_str().expect("iss").to_owned(),
        payload["aud"].as_str().expect("aud").to_owned(),
    );
    let ring = |secret: &[u8], kid: &str, audience: &str| {
        Keyring::new(
            secret,
            &[KeyRecord {
                kid: kid.to_owned(),
                created_at: now() - 60,
                retires_at: None,
            }],
            now(),
            &iss,
            audience,
        )
    };
    let claims = |exp: i64| SupporterClaims {
        sub: uuid::Uuid::now_v7().to_string(),
        supporter: true,
        tier: Some("month".into()),
        interval: Some("month".into()),
        paid_through: Some(now() + 86_400 * 30),
        hide_asks_until: Some(now() + 86_400 * 30),
        iss: iss.clone(),
        aud: aud.clone(),
        iat: now() - 10,
        exp,
    };
    let ours = ring(SIGNING_SECRET.as_bytes(), &kid, &aud);
    let crafted = ours.sign(&claims(now() + 3600)).expect("signs");
    let control = offer_with_bearer(&stack, &crafted).await;
    assert_eq!(
        control.json()["supporter"],
        true,
        "a token signed with the server's key is accepted, so each refusal below is about its one flaw"
    );

    let public = URL_SAFE_NO_PAD
        .decode(key["x"].as_str().expect("x"))
        .expect("base64");
    let body = b64(&serde_json::to_value(claims(now() + 3600)).expect("claims"));
    let hs256 = {
        use hmac::Mac as _;
        let head = b64(&json!({"alg": "HS256", "typ": "JWT", "kid": kid}));
        let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(&public).expect("a key");
        mac.update(format!("{head}.{body}").as_bytes());
        format!(
            "{head}.{body}.{}",
            URL_SAFE_NO_PAD.encode(mac.finalize().into_bytes())
        )
    };
    let signature = crafted.rsplit('.').next().expect("a signature");
    let cases = [
        (
            "alg none",
            format!(
                "{}.{body}.",
                b64(&json!({"alg": "none", "typ": "JWT", "kid": kid}))
            ),
        ),
        (
            "alg none, uppercase",
            format!("{}.{body}.", b64(&json!({"alg": "NONE", "kid": kid}))),
        ),
        ("HS256 keyed with the public key", hs256),
        (
            "EdDSA with another key under the same kid",
            ring(b"an attacker's own secret, 32 bytes long", &kid, &aud)
                .sign(&claims(now() + 3600))
                .expect("signs"),
        ),
        ("expired", ours.sign(&claims(now() - 1)).expect("signs")),
        (
            "another audience",
            ring(SIGNING_SECRET.as_bytes(), &kid, "https://elsewhere.example")
                .sign(&SupporterClaims {
                    aud: "https://elsewhere.example".into(),
                    ..claims(now() + 3600)
                })
                .expect("signs"),
        ),
        (
            "the genuine signature on richer claims",
            format!(
                "{}.{body}.{signature}",
                crafted.split('.').next().expect("a header")
            ),
        ),
        (
            "embedded jwk header",
            format!(
                "{}.{body}.{signature}",
                b64(&json!({"alg": "EdDSA", "kid": kid, "jwk": key}))
            ),
        ),
    ];
    for (what, token) in &cases {
        let refused = offer_with_bearer(&stack, token).await;
        assert_eq!(refused.error_code(401), "invalid_token", "{what}");
        assert_eq!(
            refused.headers["www-authenticate"], "Bearer error=\"invalid_token\"",
            "{what}"
        );
        // The same token in the cookie is no token: the page still gets its banner.
        let as_cookie = send(
            stack
                .api()
                .request(Method::GET, "/v1/offer")
                .header("cookie", format!("__Host-kopilka_supporter={token}")),
        )
        .await;
        assert_eq!(as_cookie.status, StatusCode::OK, "{what}");
        assert_eq!(as_cookie.json()["supporter"], false, "{what}");
    }
    // A key this server has not loaded (a rotation elsewhere, minutes old) is no evidence
    // against a token: it counts as none, as a bad cookie does, and grants nothing.
    let unknown_kid = ring(SIGNING_SECRET.as_bytes(), "k-never-issued", &aud)
        .sign(&claims(now() + 3600))
        .expect("signs");
    let answer = offer_with_bearer(&stack, &unknown_kid).await;
    assert_eq!(answer.status, StatusCode::OK);
    assert_eq!(
        answer.json()["supporter"],
        false,
        "an unknown kid grants nothing"
    );
    stack.watch([unknown_kid]);
    stack.watch(cases.iter().map(|(_, t)| t.clone()));
    stack.finish().await;
}

async fn sign_in(stack: &Stack, email: &str, password: &str, ip: &str) -> StatusCode {
    send(
        stack
            .api()
            .request(Method::POST, "/v1/sessions")
            .header("x-forwarded-for", ip)
            .json(&json!({"email": email, "password": password})),
    )
    .await
    .status
}

pub async fn guessing_is_throttled_and_the_emailed_link_still_works() {
    let mut stack = Stack::options()
        .worker_in_serve(true)
        .env("KOPILKA__SERVER__CLIENT_IP_HEADER", "x-forwarded-for")
        .env("KOPILKA__SERVER__TRUSTED_PROXIES", "127.0.0.1/32,::1/128")
        .env("KOPILKA__ACCOUNTS__BACKOFF_BASE_SECS", "600")
        .start()
        .await;
    let email = "guessed-at@example.org";
    stack.watch([email, PASSWORD]);
    signed_in(&stack, email, 1).await;

    // 1 000 wrong passwords for one account, 25 at a time, from one address.
    let mut statuses = vec![];
    for batch in 0..40 {
        let guesses = (0..25).map(|i| {
            let password = format!("guess {batch}-{i}");
            let stack = &stack;
            async move { sign_in(stack, email, &password, "198.51.100.7").await }
        });
        statuses.extend(join_all(guesses).await);
    }
    let checked = statuses
        .iter()
        .filter(|s| **s == StatusCode::UNAUTHORIZED)
        .count();
    let throttled = statuses
        .iter()
        .filter(|s| **s == StatusCode::TOO_MANY_REQUESTS)
        .count();
    assert_eq!(checked + throttled, 1000, "only 401 or 429");
    assert_eq!(
        checked, 6,
        "five free failures and the one that started the backoff"
    );
    // Even the right password waits now (from anywhere), so guessing gains nothing.
    assert_eq!(
        sign_in(&stack, email, PASSWORD, "203.0.113.50").await,
        StatusCode::TOO_MANY_REQUESTS
    );
    // The emailed link still signs the reader in.
    let link = stack
        .api()
        .post_json("/v1/sessions/magic-link", &json!({"email": email}))
        .await;
    assert!(link.status.is_success());
    let token = stack.link_token(email, 2).await;
    let session = stack
        .api()
        .post_json("/v1/sessions/magic-link/consume", &json!({"token": token}))
        .await;
    assert_eq!(session.status, StatusCode::CREATED);
    let me = send(
        stack
            .api()
            .request(Method::GET, "/v1/me")
            .bearer_auth(session.json()["token"].as_str().expect("a token")),
    )
    .await;
    assert_eq!(me.status, StatusCode::OK);

    // One address trying many accounts: after the per-address allowance, refused.
    let mut many = vec![];
    for n in 0..120 {
        many.push(
            sign_in(
                &stack,
                &format!("victim{n}@example.org"),
                "guess",
                "192.0.2.99",
            )
            .await,
        );
    }
    let checked = many
        .iter()
        .filter(|s| **s == StatusCode::UNAUTHORIZED)
        .count();
    assert!(many.iter().all(|s| matches!(s.as_u16(), 401 | 429)));
    assert_eq!(
        checked, 31,
        "thirty free failures per address and the one that started it"
    );
    // Another address is not affected.
    assert_eq!(
        sign_in(&stack, "victim200@example.org", "guess", "192.0.2.100").await,
        StatusCode::UNAUTHORIZED
    );
    stack.finish().await;
}

/// Everything about an answer but its request id.
fn shape(answer: &ApiResponse) -> (u16, String, Vec<String>) {
    let mut headers: Vec<String> = answer
        .headers
        .iter()
        .filter(|(name, _)| !matches!(name.as_str(), "x-request-id" | "date" | "content-length"))
        .map(|(name, value)| {
            let value = value.to_str().unwrap_or("");
            // A cookie's value differs per answer; whether one is set must not.
            let value = if name == "set-cookie" {
                value.split('=').next().unwrap_or("")
            } else {
                value
            };
            format!("{name}: {value}")
        })
        .collect();
    headers.sort();
    (
        answer.status.as_u16(),
        String::from_utf8_lossy(&answer.body).into_owned(),
        headers,
    )
}

pub async fn answers_do_not_tell_whether_an_address_has_an_account() {
    let mut stack = Stack::options()
        .worker_in_serve(true)
        .env("KOPILKA__ACCOUNTS__LINKS_PER_HOUR", "100")
        .start()
        .await;
    let known = "known-reader@example.org";
    let quiet = "reminded-only@example.org";
    stack.watch([known, quiet, PASSWORD]);
    signed_in(&stack, known, 1).await;
    let in_days = |d: i64| {
        (time::OffsetDateTime::now_utc() + time::Duration::days(d))
            .date()
            .to_string()
    };
    stack
        .api()
        .post_json(
            "/v1/reminders",
            &json!({"email": quiet, "remind_on": in_days(10)}),
        )
        .await;
    for (n, existing) in [known, quiet].into_iter().enumerate() {
        let unknown = format!("nobody-{n}@example.org");
        stack.watch([unknown.as_str()]);
        let requests: [(&str, Value, Value); 4] = [
            (
                "/v1/accounts",
                json!({"email": existing, "password": PASSWORD}),
                json!({"email": unknown, "password": PASSWORD}),
            ),
            (
                "/v1/sessions",
                json!({"email": existing, "password": "not it"}),
                json!({"email": unknown, "password": "not it"}),
            ),
            (
                "/v1/sessions/magic-link",
                json!({"email": existing}),
                json!({"email": unknown}),
            ),
            (
                "/v1/reminders",
                json!({"email": existing, "remind_on": in_days(5)}),
                json!({"email": unknown, "remind_on": in_days(5)}),
            ),
        ];
        for (path, with_account, without) in requests {
            let a = stack.api().post_json(path, &with_account).await;
            let b = stack.api().post_json(path, &without).await;
            assert_eq!(shape(&a), shape(&b), "{path} for {existing}");
            assert!(a.status.as_u16() < 500, "{path}");
        }
        // Signing up with a password, then signing in with it at once: the same refusal
        // whether or not the address already had a confirmed password.
        let chosen = "a password chosen just now";
        let mut answers = vec![];
        for address in [existing, unknown.as_str()] {
            stack
                .api()
                .post_json(
                    "/v1/accounts",
                    &json!({"email": address, "password": chosen}),
                )
                .await;
            let signed = stack
                .api()
                .post_json(
                    "/v1/sessions",
                    &json!({"email": address, "password": chosen}),
                )
                .await;
            answers.push(shape(&signed));
        }
        assert_eq!(
            answers[0], answers[1],
            "sign-up then sign-in for {existing}"
        );
        assert_eq!(answers[0].0, 401);
    }
    // The known reader's password still works: the second sign-up changed nothing.
    assert_eq!(
        stack
            .api()
            .post_json(
                "/v1/sessions",
                &json!({"email": known, "password": PASSWORD})
            )
            .await
            .status,
        StatusCode::CREATED
    );
    stack.finish().await;
}

pub async fn other_origins_and_cross_site_cookie_posts_are_refused() {
    let mut stack = Stack::start_default().await;
    let email = "cookie-holder@example.org";
    stack.watch([email, PASSWORD]);
    signed_in(&stack, email, 1).await;
    let signed = stack
        .api()
        .post_json(
            "/v1/sessions",
            &json!({"email": email, "password": PASSWORD}),
        )
        .await;
    assert_eq!(signed.status, StatusCode::CREATED);
    let cookie = signed.headers["set-cookie"]
        .to_str()
        .expect("a cookie")
        .split(';')
        .next()
        .expect("name=value")
        .to_owned();
    stack.watch([cookie.as_str()]);
    let evil = "https://evil.example.com";

    // CORS: a page elsewhere may not read answers or send credentials.
    for path in ["/v1/offer", "/v1/checkout", "/v1/me", "/v1/entitlements"] {
        let preflight = send(
            stack
                .api()
                .request(Method::OPTIONS, path)
                .header("origin", evil)
                .header("access-control-request-method", "POST")
                .header("access-control-request-headers", "content-type"),
        )
        .await;
        assert!(
            preflight
                .headers
                .get("access-control-allow-origin")
                .is_none(),
            "{path}: {:?}",
            preflight.headers
        );
        let read = send(
            stack
                .api()
                .request(Method::GET, path)
                .header("origin", evil),
        )
        .await;
        assert!(
            read.headers.get("access-control-allow-origin").is_none(),
            "{path}"
        );
        let from_site = send(
            stack
                .api()
                .request(Method::OPTIONS, path)
                .header("origin", SITE)
                .header("access-control-request-method", "POST"),
        )
        .await;
        // The widget's routes take the newsroom's site; a reader's own data is same-origin
        // only, from any site.
        let expected = (path != "/v1/me").then_some(SITE);
        assert_eq!(
            from_site
                .headers
                .get("access-control-allow-origin")
                .map(|v| v.to_str().unwrap_or("")),
            expected,
            "{path}: {:?}",
            from_site.headers
        );
    }

    // Changes riding the cookie from another site: refused, and nothing changed.
    let cross_site = |method: Method,
                      path: &str,
                      body: Option<Value>,
                      origin: Option<&str>,
                      site: Option<&str>| {
        let mut request = stack.api().request(method, path).header("cookie", &cookie);
        if let Some(body) = body {
            request = request.json(&body);
        }
        if let Some(origin) = origin {
            request = request.header("origin", origin);
        }
        if let Some(site) = site {
            request = request.header("sec-fetch-site", site);
        }
        send(request)
    };
    let attempts = [
        (
            Method::PATCH,
            "/v1/me",
            Some(json!({"name": "Pwned"})),
            Some(evil),
            None,
        ),
        (
            Method::PATCH,
            "/v1/me",
            Some(json!({"name": "Pwned"})),
            None,
            Some("cross-site"),
        ),
        (
            Method::PATCH,
            "/v1/me",
            Some(json!({"name": "Pwned"})),
            Some("null"),
            None,
        ),
        (
            Method::DELETE,
            "/v1/me",
            None,
            Some(evil),
            Some("cross-site"),
        ),
        (Method::DELETE, "/v1/sessions", None, Some(evil), None),
        // A typed URL has no foreign origin: Sec-Fetch-Site: none with one is forged.
        (
            Method::PATCH,
            "/v1/me",
            Some(json!({"name": "Pwned"})),
            Some(evil),
            Some("none"),
        ),
        // The newsroom's site may call the widget's routes, not change a reader's data.
        (
            Method::PATCH,
            "/v1/me",
            Some(json!({"name": "Pwned"})),
            Some(SITE),
            Some("same-site"),
        ),
        (
            Method::POST,
            "/v1/checkout",
            Some(json!({"interval": "once", "amount_minor": 500, "currency": "usd"})),
            Some(evil),
            Some("cross-site"),
        ),
    ];
    for (method, path, body, origin, site) in attempts {
        let what = format!("{method} {path} origin={origin:?} site={site:?}");
        let answer = cross_site(method, path, body, origin, site).await;
        if path == "/v1/checkout" {
            // Checkout needs no session; from elsewhere it is answered but not readable.
            assert!(
                answer.headers.get("access-control-allow-origin").is_none(),
                "{what}"
            );
            continue;
        }
        assert_eq!(answer.error_code(403), "cross_site_request", "{what}");
    }
    let me = send(
        stack
            .api()
            .request(Method::GET, "/v1/me")
            .header("cookie", &cookie),
    )
    .await;
    assert_eq!(me.status, StatusCode::OK, "the session survived");
    assert_eq!(me.json()["name"], Value::Null, "the name was not changed");
    assert_eq!(
        stack
            .count("SELECT count(*) FROM readers WHERE erased_at IS NULL")
            .await,
        1,
        "the reader was not erased"
    );
    // A body that is not JSON (what a cross-site form or text/plain fetch sends without a
    // preflight) is refused, even from Kopilka's own pages.
    let text = send(
        stack
            .api()
            .request(Method::PATCH, "/v1/me")
            .header("cookie", &cookie)
            .header("sec-fetch-site", "same-origin")
            .header("content-type", "text/plain")
            .body(r#"{"name":"Pwned"}"#),
    )
    .await;
    assert_eq!(text.error_code(415), "unsupported_media_type");
    // From Kopilka's own origin, the same change goes through.
    let same_origin = cross_site(
        Method::PATCH,
        "/v1/me",
        Some(json!({"name": "Ana"})),
        None,
        Some("same-origin"),
    )
    .await;
    assert_eq!(same_origin.status, StatusCode::NO_CONTENT);
    stack.finish().await;
}

pub async fn a_strangers_password_never_becomes_the_mailbox_owners() {
    let mut stack = Stack::options().worker_in_serve(true).start().await;
    let victim = "mailbox-owner@example.org";
    let stranger_password = "the stranger's own password";
    stack.watch([victim, stranger_password]);
    // The stranger signs up with the victim's address; the victim gets the email.
    let up = stack
        .api()
        .post_json(
            "/v1/accounts",
            &json!({"email": victim, "password": stranger_password}),
        )
        .await;
    assert_eq!(up.status, StatusCode::ACCEPTED);
    assert_eq!(
        sign_in(&stack, victim, stranger_password, "203.0.113.9").await,
        StatusCode::UNAUTHORIZED,
        "an unconfirmed password opens nothing"
    );
    // The victim uses the link with a password of their own guessing, or none at all.
    let token = stack.link_token(victim, 1).await;
    let used = stack
        .api()
        .post_json(
            "/v1/sessions/magic-link/consume",
            &json!({"token": token, "password": "what the victim would type"}),
        )
        .await;
    assert_eq!(used.status, StatusCode::CREATED, "the mailbox signs in");
    assert_eq!(used.json()["password_confirmed"], false);
    assert_eq!(
        sign_in(&stack, victim, stranger_password, "203.0.113.9").await,
        StatusCode::UNAUTHORIZED,
        "the stranger's password was dropped"
    );
    assert_eq!(stack.count("SELECT count(*) FROM credentials").await, 0);
    stack.finish().await;
}
