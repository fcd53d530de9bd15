//! The supporter token over HTTP: signed for the signed-in reader, verified by a site with
//! nothing but the published JWKS; a refund ends supporter status in the next token; a key
//! rotation keeps old tokens verifying through the grace period and not after.

use std::time::Duration;

use jsonwebtoken::jwk::JwkSet;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use kopilka_test_support::{TestApp, eventually, send};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

/// Verifies `token` as a site or CDN would: with the JWKS alone.
async fn verify_with_jwks(app: &TestApp, token: &str) -> Result<Value, String> {
    let jwks = app.api.get("/.well-known/jwks.json").await;
    assert_eq!(jwks.status, StatusCode::OK);
    assert!(
        jwks.headers["cache-control"]
            .to_str()
            .unwrap()
            .contains("max-age")
    );
    let set: JwkSet = jwks.parse();
    let kid = jsonwebtoken::decode_header(token)
        .map_err(|e| e.to_string())?
        .kid
        .ok_or("no kid")?;
    let jwk = set.find(&kid).ok_or("kid not published")?;
    let key = DecodingKey::from_jwk(jwk).map_err(|e| e.to_string())?;
    let origin = app.settings.public_url.origin().ascii_serialization();
    let mut validation = Validation::new(Algorithm::EdDSA);
    validation.set_audience(&[&origin]);
    validation.set_issuer(&[&origin]);
    jsonwebtoken::decode::<Value>(token, &key, &validation)
        .map(|data| data.claims)
        .map_err(|e| e.to_string())
}

async fn entitlements(app: &TestApp, session: &str) -> Value {
    let answer = send(
        app.api
            .request(Method::GET, "/v1/entitlements")
            .bearer_auth(session),
    )
    .await;
    assert_eq!(
        answer.status,
        StatusCode::OK,
        "{}",
        String::from_utf8_lossy(&answer.body)
    );
    let cookie = answer.headers["set-cookie"].to_str().unwrap();
    assert!(
        cookie.starts_with("__Host-kopilka_supporter=") && cookie.contains("Secure"),
        "{cookie}"
    );
    answer.json()
}

#[tokio::test]
async fn a_monthly_supporters_token_verifies_with_the_published_keys_alone() {
    let app = TestApp::spawn().await;
    app.deliver_webhooks_here(Some((0, false))).await;
    let email = "monthly-supporter@example.org";
    app.give(email, "month", 500).await;
    let session = app.signed_in_by_link(email).await;
    let answer = entitlements(&app, &session).await;
    let claims = verify_with_jwks(&app, answer["token"].as_str().unwrap())
        .await
        .unwrap();
    assert_eq!(claims["supporter"], true);
    assert_eq!(claims["tier"], "month");
    assert!(
        claims["paid_through"].as_i64().unwrap() > time::OffsetDateTime::now_utc().unix_timestamp()
    );
    assert!(
        !claims.to_string().contains('@'),
        "no address in the token: {claims}"
    );
    let lifetime = claims["exp"].as_i64().unwrap() - claims["iat"].as_i64().unwrap();
    assert_eq!(lifetime, 24 * 3600);

    // A stranger who signs up with the address learns nothing from a token.
    app.api
        .post_json(
            "/v1/accounts",
            &json!({"email": email, "password": "a password of theirs"}),
        )
        .await;
    let theirs = app
        .api
        .post_json(
            "/v1/sessions",
            &json!({"email": email, "password": "a password of theirs"}),
        )
        .await;
    // Their password is not confirmed from the mailbox, so it opens nothing: no session,
    // no token.
    assert_eq!(theirs.error_code(401), "invalid_credentials");
}

#[tokio::test]
async fn a_refund_makes_the_next_token_say_not_a_supporter() {
    let app = TestApp::spawn().await;
    app.deliver_webhooks_here(Some((0, false))).await;
    let email = "one-off@example.org";
    app.give(email, "once", 2500).await;
    let session = app.signed_in_by_link(email).await;
    let before = entitlements(&app, &session).await;
    assert_eq!(before["claims"]["supporter"], true);
    assert_eq!(before["claims"]["tier"], "once");

    // "Paid" may come from the payment's own event before the checkout's names the intent.
    let pi: String = eventually(
        "the payment intent recorded",
        Duration::from_secs(20),
        || async {
            sqlx::query_scalar::<_, Option<String>>(
                "SELECT stripe_payment_intent_id FROM contributions",
            )
            .fetch_one(&app.pool)
            .await
            .ok()
            .flatten()
        },
    )
    .await;
    app.state
        .stripe
        .as_ref()
        .unwrap()
        .refund(&pi, "refund-all", None)
        .await
        .unwrap();
    let pool = app.pool.clone();
    eventually("the refund applied", Duration::from_secs(20), || {
        let pool = pool.clone();
        async move {
            let status: String = sqlx::query_scalar("SELECT status FROM contributions")
                .fetch_one(&pool)
                .await
                .ok()?;
            (status == "refunded").then_some(())
        }
    })
    .await;
    let after = entitlements(&app, &session).await;
    assert_eq!(after["claims"]["supporter"], false);
    assert!(after["claims"].get("tier").is_none());
}

#[tokio::test]
async fn a_rotated_key_keeps_verifying_through_its_grace_and_not_after() {
    let app = TestApp::spawn().await;
    let email = "rotation@example.org";
    app.api
        .post_json(
            "/v1/accounts",
            &json!({"email": email, "password": "correct horse battery"}),
        )
        .await;
    // Confirmed from the mailbox: the verification link used with the password.
    let link = app.link_token(email, 1).await;
    let confirmed = app
        .api
        .post_json(
            "/v1/sessions/magic-link/consume",
            &json!({"token": link, "password": "correct horse battery"}),
        )
        .await;
    assert_eq!(confirmed.json()["password_confirmed"], true);
    let session = app
        .api
        .post_json(
            "/v1/sessions",
            &json!({"email": email, "password": "correct horse battery"}),
        )
        .await
        .json()["token"]
        .as_str()
        .unwrap()
        .to_owned();
    let first = entitlements(&app, &session).await["token"]
        .as_str()
        .unwrap()
        .to_owned();
    let first_kid = jsonwebtoken::decode_header(&first).unwrap().kid.unwrap();

    let rotate = || async {
        let mut tx = app.pool.begin().await.unwrap();
        let rotation = kopilka_accounts::signing_key::rotate(
            &mut tx,
            time::OffsetDateTime::now_utc(),
            time::Duration::hours(48),
        )
        .await
        .unwrap();
        tx.commit().await.unwrap();
        app.state
            .keyring
            .reload(&app.pool, &app.settings)
            .await
            .unwrap();
        rotation
    };
    let rotation = rotate().await;
    assert!(
        rotation.retiring.is_empty(),
        "the previous key stays, published"
    );
    let second = entitlements(&app, &session).await["token"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(
        jsonwebtoken::decode_header(&second).unwrap().kid.unwrap(),
        rotation.signing
    );
    assert!(
        verify_with_jwks(&app, &first).await.is_ok(),
        "the old token still verifies"
    );
    assert!(verify_with_jwks(&app, &second).await.is_ok());

    // A second rotation starts the first key's grace period; once it is over, the key is
    // gone from the JWKS and its tokens no longer verify.
    let again = rotate().await;
    assert_eq!(again.retiring, std::slice::from_ref(&first_kid));
    assert!(
        verify_with_jwks(&app, &first).await.is_ok(),
        "within the grace period"
    );
    sqlx::query("UPDATE signing_keys SET retires_at = now() - interval '1 second' WHERE kid = $1")
        .bind(&first_kid)
        .execute(&app.pool)
        .await
        .unwrap();
    app.state
        .keyring
        .reload(&app.pool, &app.settings)
        .await
        .unwrap();
    assert_eq!(
        verify_with_jwks(&app, &first).await.unwrap_err(),
        "kid not published"
    );
    assert!(verify_with_jwks(&app, &second).await.is_ok());
    let jwks = app.api.get("/.well-known/jwks.json").await.json();
    assert_eq!(jwks["keys"].as_array().unwrap().len(), 2);
    assert!(jwks.to_string().contains("\"crv\":\"Ed25519\""));
    assert!(
        !jwks.to_string().contains("\"d\""),
        "no private part is ever published"
    );
}

#[tokio::test]
async fn entitlements_need_a_session() {
    let app = TestApp::spawn().await;
    assert_eq!(
        app.api.get("/v1/entitlements").await.error_code(401),
        "unauthenticated"
    );
}

/// `GET /v1/offer` with `headers` (name, value).
async fn offer(
    app: &TestApp,
    query: &str,
    headers: &[(&str, &str)],
) -> kopilka_test_support::ApiResponse {
    let mut request = app.api.request(Method::GET, &format!("/v1/offer{query}"));
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    send(request).await
}

#[tokio::test]
async fn the_offer_hides_the_banner_for_a_supporter_token_and_shows_it_otherwise() {
    let app = TestApp::spawn().await;
    app.deliver_webhooks_here(Some((0, false))).await;
    let anonymous = offer(&app, "", &[]).await.json();
    assert_eq!(
        (anonymous["show"].as_bool(), anonymous["reason"].as_str()),
        (Some(true), Some("ask"))
    );
    assert_eq!(anonymous["supporter"], false);

    let email = "offer-supporter@example.org";
    app.give(email, "year", 5000).await;
    let session = app.signed_in_by_link(email).await;
    let token = entitlements(&app, &session).await["token"]
        .as_str()
        .unwrap()
        .to_owned();
    let bearer = format!("Bearer {token}");
    let supporter = offer(&app, "?view=1", &[("authorization", &bearer)]).await;
    let body = supporter.json();
    assert_eq!(
        (
            body["show"].as_bool(),
            body["reason"].as_str(),
            body["supporter"].as_bool()
        ),
        (Some(false), Some("supporter"), Some(true))
    );
    assert_eq!(body["meter"], Value::Null, "supporters bypass the meter");
    assert!(supporter.headers.get("set-cookie").is_none());
    let cookie = format!("__Host-kopilka_supporter={token}");
    assert_eq!(
        offer(&app, "", &[("cookie", &cookie)]).await.json()["supporter"],
        true
    );
    // A forged bearer token is refused; a forged cookie counts as no token.
    let forged_token = format!("{}x", &token[..token.len() - 1]);
    let forged = format!("Bearer {forged_token}");
    let refused = offer(&app, "", &[("authorization", &forged)]).await;
    assert_eq!(refused.error_code(401), "invalid_token");
    assert_eq!(
        refused.headers["www-authenticate"],
        "Bearer error=\"invalid_token\""
    );
    let forged_cookie = format!("__Host-kopilka_supporter={forged_token}");
    assert_eq!(
        offer(&app, "", &[("cookie", &forged_cookie)]).await.json()["show"],
        true
    );
    // A session token (not a JWT) as the bearer is simply not a supporter token.
    let session_bearer = format!("Bearer {session}");
    assert_eq!(
        offer(&app, "", &[("authorization", &session_bearer)])
            .await
            .json()["show"],
        true
    );
}

#[tokio::test]
async fn a_snooze_hides_the_ask_and_the_meter_counts_views_in_a_signed_cookie() {
    let app = TestApp::spawn_with(|s| {
        s.paywall.meter_mode = "metered".into();
        s.paywall.free_articles = 2;
    })
    .await;
    // Three article views: 1 left, 0 left, then the dismissible wall.
    let mut cookie = String::new();
    let mut seen = Vec::new();
    for _ in 0..3 {
        let answer = offer(&app, "?view=1", &[("cookie", &cookie)]).await;
        let body = answer.json();
        seen.push((
            body["meter"]["remaining"].as_u64().unwrap(),
            body["meter"]["wall"].as_str().unwrap().to_owned(),
        ));
        cookie = answer.headers["set-cookie"]
            .to_str()
            .unwrap()
            .split(';')
            .next()
            .unwrap()
            .to_owned();
        assert!(cookie.starts_with("__Host-kopilka_meter="));
    }
    assert_eq!(
        seen,
        [
            (1, "none".to_owned()),
            (0, "none".to_owned()),
            (0, "dismissible".to_owned())
        ]
    );
    // Without view=1 nothing is counted.
    let peek = offer(&app, "", &[("cookie", &cookie)]).await;
    assert!(peek.headers.get("set-cookie").is_none());
    assert_eq!(peek.json()["meter"]["wall"], "dismissible");
    // A tampered meter starts afresh, never unlimited.
    let tampered = cookie.replace("meter=", "meter=AA");
    let fresh = offer(&app, "?view=1", &[("cookie", &tampered)])
        .await
        .json();
    assert_eq!(fresh["meter"]["remaining"], 1);

    // A snoozed anonymous reader: no ask, the banner cookie says so.
    let snooze = (time::OffsetDateTime::now_utc() + time::Duration::days(3))
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap();
    let put = send(
        app.api
            .request(Method::PUT, "/v1/banner")
            .json(&json!({"snoozed_until": snooze})),
    )
    .await;
    let banner = put.headers["set-cookie"]
        .to_str()
        .unwrap()
        .split(';')
        .next()
        .unwrap()
        .to_owned();
    let hidden = offer(&app, "", &[("cookie", &banner)]).await.json();
    assert_eq!(
        (hidden["show"].as_bool(), hidden["reason"].as_str()),
        (Some(false), Some("hidden"))
    );
}
