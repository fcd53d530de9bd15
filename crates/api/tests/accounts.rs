//! Reader accounts over HTTP: sign-up, sign-in with a password or an emailed link, sessions,
//! throttling, enumeration, what an unverified account may see, remind-me-later, banner
//! state, self-service plans and GDPR — against Postgres, the simulator and real emails
//! (written as `.eml` files and parsed).

use kopilka_test_support::{ApiResponse, TestApp, eventually, send};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use std::time::Duration;

const PASSWORD: &str = "correct horse battery staple";

async fn sign_up(app: &TestApp, email: &str, password: &str) -> ApiResponse {
    app.api
        .post_json(
            "/v1/accounts",
            &json!({"email": email, "password": password}),
        )
        .await
}

async fn sign_in(app: &TestApp, email: &str, password: &str) -> ApiResponse {
    app.api
        .post_json(
            "/v1/sessions",
            &json!({"email": email, "password": password}),
        )
        .await
}

/// Uses an emailed link as its reader does, typing the password they chose at sign-up (it
/// confirms that password when the link is a verification link).
async fn consume(app: &TestApp, token: &str) -> ApiResponse {
    app.api
        .post_json(
            "/v1/sessions/magic-link/consume",
            &json!({"token": token, "password": PASSWORD}),
        )
        .await
}

/// Signs in through the `n`th emailed link to `email`; returns the session token.
async fn sign_in_by_link(app: &TestApp, email: &str, n: usize) -> String {
    let token = app.link_token(email, n).await;
    let session = consume(app, &token).await;
    assert_eq!(
        session.status,
        StatusCode::CREATED,
        "{}",
        String::from_utf8_lossy(&session.body)
    );
    session.json()["token"].as_str().unwrap().to_owned()
}

async fn request_link(app: &TestApp, email: &str) -> ApiResponse {
    app.api
        .post_json("/v1/sessions/magic-link", &json!({"email": email}))
        .await
}

async fn as_reader(
    app: &TestApp,
    method: Method,
    path: &str,
    token: &str,
    body: Option<Value>,
) -> ApiResponse {
    let mut request = app.api.request(method, path).bearer_auth(token);
    if let Some(body) = body {
        request = request.json(&body);
    }
    send(request).await
}

async fn scalar_i64(app: &TestApp, sql: &str) -> i64 {
    sqlx::query_scalar(sqlx::AssertSqlSafe(sql.to_owned()))
        .fetch_one(&app.pool)
        .await
        .unwrap()
}

#[tokio::test]
async fn a_reader_signs_up_signs_in_lists_and_revokes_sessions_and_signs_out() {
    let app = TestApp::spawn().await;
    let email = "reader@example.org";
    let signed_up = sign_up(&app, email, PASSWORD).await;
    assert_eq!(signed_up.status, StatusCode::ACCEPTED);
    assert_eq!(signed_up.json(), json!({"status": "check_email"}));
    let verify = app.email_to(email, 1).await;
    assert!(
        verify.subject.contains("Confirm your address"),
        "{}",
        verify.subject
    );

    // The password works only once the mailbox has confirmed it.
    assert_eq!(
        sign_in(&app, email, PASSWORD).await.error_code(401),
        "invalid_credentials"
    );
    // The verification link, used with the password, proves the address and confirms it;
    // a session from it sees what is linked.
    let second = sign_in_by_link(&app, email, 1).await;
    let me = as_reader(&app, Method::GET, "/v1/me", &second, None)
        .await
        .json();
    assert_eq!(
        (me["verified"].as_bool(), me["sees_linked"].as_bool()),
        (Some(true), Some(true))
    );

    // Then the password signs in, with a cookie and a bearer token.
    let first = sign_in(&app, email, PASSWORD).await;
    assert_eq!(first.status, StatusCode::CREATED);
    let cookie = first.headers["set-cookie"].to_str().unwrap().to_owned();
    for part in [
        "__Host-kopilka_session=",
        "Secure",
        "HttpOnly",
        "SameSite=Lax",
        "Path=/",
    ] {
        assert!(cookie.contains(part), "{cookie}");
    }
    assert!(
        !cookie.contains("Domain"),
        "a __Host- cookie has no Domain: {cookie}"
    );
    let token = first.json()["token"].as_str().unwrap().to_owned();
    let me = as_reader(&app, Method::GET, "/v1/me", &token, None)
        .await
        .json();
    assert_eq!(me["email"], email);
    assert_eq!(
        (me["verified"].as_bool(), me["sees_linked"].as_bool()),
        (Some(true), Some(true))
    );
    let third = sign_in(&app, email, PASSWORD).await.json()["token"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(
        as_reader(&app, Method::GET, "/v1/me", &third, None)
            .await
            .json()["sees_linked"],
        true
    );

    let sessions = as_reader(&app, Method::GET, "/v1/me/sessions", &second, None)
        .await
        .json();
    assert_eq!(sessions.as_array().unwrap().len(), 3);
    let current: Vec<_> = sessions
        .as_array()
        .unwrap()
        .iter()
        .filter(|s| s["current"] == true)
        .collect();
    assert_eq!(current.len(), 1);
    let seen_by_first = as_reader(&app, Method::GET, "/v1/me/sessions", &token, None)
        .await
        .json();
    let first_id = seen_by_first
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["current"] == true)
        .unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();

    // Revoking a session from another device ends it.
    let revoked = as_reader(
        &app,
        Method::DELETE,
        &format!("/v1/me/sessions/{first_id}"),
        &second,
        None,
    )
    .await;
    assert_eq!(revoked.status, StatusCode::NO_CONTENT);
    let gone = as_reader(&app, Method::GET, "/v1/me", &token, None).await;
    assert_eq!(gone.error_code(401), "unauthenticated");
    let again = as_reader(
        &app,
        Method::DELETE,
        &format!("/v1/me/sessions/{first_id}"),
        &second,
        None,
    )
    .await;
    assert_eq!(again.error_code(404), "not_found");

    // Signing out ends this session and clears the cookie.
    let out = as_reader(&app, Method::DELETE, "/v1/sessions", &second, None).await;
    assert_eq!(out.status, StatusCode::NO_CONTENT);
    assert!(
        out.headers["set-cookie"]
            .to_str()
            .unwrap()
            .contains("Max-Age=0")
    );
    assert_eq!(
        as_reader(&app, Method::GET, "/v1/me", &second, None)
            .await
            .error_code(401),
        "unauthenticated"
    );
    assert_eq!(
        as_reader(&app, Method::GET, "/v1/me", &third, None)
            .await
            .status,
        StatusCode::OK
    );

    // Wrong passwords and bad input.
    assert_eq!(
        sign_in(&app, email, "not the password")
            .await
            .error_code(401),
        "invalid_credentials"
    );
    assert_eq!(
        sign_up(&app, "someone@example.org", "short")
            .await
            .error_code(422),
        "password_too_short"
    );
    assert_eq!(
        sign_up(&app, "not an address", PASSWORD)
            .await
            .error_code(422),
        "invalid_email"
    );
    assert_eq!(
        app.api.get("/v1/me").await.error_code(401),
        "unauthenticated"
    );
}

#[tokio::test]
async fn an_emailed_link_works_once_and_not_after_it_expires() {
    let app = TestApp::spawn().await;
    app.deliver_webhooks_here(Some((0, false))).await;
    let email = "donor@example.org";
    app.give(email, "once", 2500).await;

    assert_eq!(request_link(&app, email).await.status, StatusCode::ACCEPTED);
    let token = app.link_token(email, 1).await;
    let message = app.email_to(email, 1).await;
    assert!(
        message.text.contains(&format!(
            "{}v1/sessions/magic-link?token=",
            app.settings.public_url
        )),
        "links are built from public_url: {}",
        message.text
    );
    assert!(message.html.contains("Sign in"));

    // Opening the link (as a mail scanner would) uses nothing.
    let page = app
        .api
        .get(&format!("/v1/sessions/magic-link?token={token}"))
        .await;
    assert_eq!(page.status, StatusCode::OK);
    assert!(String::from_utf8_lossy(&page.body).contains("magic-link/consume"));

    assert_eq!(consume(&app, &token).await.status, StatusCode::CREATED);
    assert_eq!(
        consume(&app, &token).await.error_code(400),
        "invalid_link",
        "a replay is refused"
    );

    // A second link, expired before use.
    request_link(&app, email).await;
    let late = app.link_token(email, 2).await;
    sqlx::query(
        "UPDATE email_links SET expires_at = now() - interval '1 second' WHERE used_at IS NULL",
    )
    .execute(&app.pool)
    .await
    .unwrap();
    assert_eq!(consume(&app, &late).await.error_code(400), "invalid_link");

    // Forged and tampered tokens.
    let mut tampered = late.clone();
    tampered.replace_range(5..6, if &late[5..6] == "A" { "B" } else { "A" });
    assert_eq!(
        consume(&app, &tampered).await.error_code(400),
        "invalid_link"
    );
    assert_eq!(
        consume(&app, "nonsense").await.error_code(400),
        "invalid_link"
    );
    // Only hashes are stored.
    let stored: Vec<Vec<u8>> = sqlx::query_scalar("SELECT token_hash FROM email_links")
        .fetch_all(&app.pool)
        .await
        .unwrap();
    assert!(
        stored
            .iter()
            .all(|h| h.len() == 32 && !String::from_utf8_lossy(h).contains(&token))
    );
}

#[tokio::test]
async fn links_per_address_are_rate_limited_silently() {
    let app = TestApp::spawn_with(|s| s.accounts.links_per_hour = 2).await;
    let email = "busy@example.org";
    // Sign-up issues its link within the request, so every attempt has happened on return.
    for _ in 0..4 {
        assert_eq!(
            sign_up(&app, email, PASSWORD).await.status,
            StatusCode::ACCEPTED
        );
    }
    assert_eq!(
        scalar_i64(&app, "SELECT count(*) FROM email_links").await,
        2,
        "two links, then nothing issued"
    );
    let pool = app.pool.clone();
    eventually("the link emails sent", Duration::from_secs(20), || {
        let pool = pool.clone();
        async move {
            let waiting: i64 = sqlx::query_scalar(
                "SELECT count(*) FROM jobs WHERE kind = 'accounts.email_link' AND status <> 'done'",
            )
            .fetch_one(&pool)
            .await
            .ok()?;
            (waiting == 0).then_some(())
        }
    })
    .await;
    assert_eq!(app.emails_to(email), 2, "two emails, then nothing");
}

/// Status, body and headers that could differ between an existing and an unknown address.
fn shape(response: &ApiResponse) -> (u16, String, Vec<String>) {
    let mut headers: Vec<String> = response
        .headers
        .iter()
        .filter(|(name, _)| !matches!(name.as_str(), "date" | "x-request-id" | "content-length"))
        .map(|(name, value)| format!("{name}: {}", value.to_str().unwrap_or("")))
        .collect();
    headers.sort();
    (
        response.status.as_u16(),
        String::from_utf8_lossy(&response.body).into_owned(),
        headers,
    )
}

#[tokio::test]
async fn answers_are_the_same_for_existing_and_unknown_addresses() {
    let app = TestApp::spawn().await;
    let known = "known@example.org";
    sign_up(&app, known, PASSWORD).await;
    sign_in_by_link(&app, known, 1).await;
    // A reader without a password (from a reminder) too.
    app.api
        .post_json(
            "/v1/reminders",
            &json!({"email": "quiet@example.org", "remind_on": tomorrow_plus(10)}),
        )
        .await;

    for existing in [known, "quiet@example.org"] {
        let unknown = "nobody-here@example.org";
        assert_eq!(
            shape(&sign_up(&app, existing, PASSWORD).await),
            shape(&sign_up(&app, unknown, PASSWORD).await),
            "sign-up"
        );
        assert_eq!(
            shape(&sign_in(&app, existing, "wrong password").await),
            shape(&sign_in(&app, "nobody-else@example.org", "wrong password").await),
            "sign-in"
        );
        assert_eq!(
            shape(&request_link(&app, existing).await),
            shape(&request_link(&app, "nobody-either@example.org").await),
            "magic link"
        );
        assert_eq!(
            shape(
                &app.api
                    .post_json(
                        "/v1/reminders",
                        &json!({"email": existing, "remind_on": tomorrow_plus(5)})
                    )
                    .await
            ),
            shape(
                &app.api
                    .post_json(
                        "/v1/reminders",
                        &json!({"email": "new-reader@example.org", "remind_on": tomorrow_plus(5)})
                    )
                    .await
            ),
            "reminders"
        );
    }
    // The known account's password did not change through the second sign-up.
    assert_eq!(
        sign_in(&app, known, PASSWORD).await.status,
        StatusCode::CREATED
    );
    let already = app.email_to(known, 2).await;
    assert!(
        already.subject.contains("already have an account"),
        "{}",
        already.subject
    );
}

fn tomorrow_plus(days: i64) -> String {
    (time::OffsetDateTime::now_utc().date() + time::Duration::days(1 + days)).to_string()
}

#[tokio::test]
async fn failed_logins_are_throttled_and_an_emailed_link_still_works() {
    let app = TestApp::spawn_with(|s| {
        s.accounts.free_failures_per_account = 3;
        s.accounts.free_failures_per_ip = 7;
        s.accounts.backoff_base_secs = 60;
    })
    .await;
    let email = "target@example.org";
    sign_up(&app, email, PASSWORD).await;
    for _ in 0..3 {
        assert_eq!(
            sign_in(&app, email, "guess").await.error_code(401),
            "invalid_credentials"
        );
    }
    assert_eq!(
        sign_in(&app, email, "guess").await.error_code(401),
        "invalid_credentials",
        "the 4th failure starts the backoff"
    );
    let throttled = sign_in(&app, email, PASSWORD).await;
    assert_eq!(throttled.error_code(429), "too_many_attempts");
    let retry: u64 = throttled.headers["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=61).contains(&retry), "{retry}");
    // The same for an unknown address (no enumeration through the throttle).
    for _ in 0..4 {
        sign_in(&app, "ghost@example.org", "guess").await;
    }
    assert_eq!(
        sign_in(&app, "ghost@example.org", "guess")
            .await
            .error_code(429),
        "too_many_attempts"
    );

    // The throttled reader can still sign in through an emailed link.
    request_link(&app, email).await;
    let token = sign_in_by_link(&app, email, 2).await;
    assert_eq!(
        as_reader(&app, Method::GET, "/v1/me", &token, None)
            .await
            .status,
        StatusCode::OK
    );

    // Many addresses from one IP: the IP is throttled too (8 failures so far, 7 free).
    let from_ip = sign_in(&app, "fresh-address@example.org", "guess").await;
    assert_eq!(from_ip.error_code(429), "too_many_attempts");
    let counters: i64 = scalar_i64(
        &app,
        "SELECT count(*) FROM login_throttles WHERE key LIKE '%@%'",
    )
    .await;
    assert_eq!(counters, 0, "no address is stored in the throttle table");
}

#[tokio::test]
async fn a_strangers_sign_up_with_a_donors_address_never_lets_them_in() {
    let app = TestApp::spawn().await;
    app.deliver_webhooks_here(Some((0, false))).await;
    let donor = "donor@example.org";
    app.give(donor, "once", 2500).await;
    app.give(donor, "month", 500).await;

    // Someone else signs up with the donor's address: their password never signs in.
    sign_up(&app, donor, "attacker password").await;
    assert_eq!(
        sign_in(&app, donor, "attacker password")
            .await
            .error_code(401),
        "invalid_credentials"
    );
    assert_eq!(
        scalar_i64(&app, "SELECT count(*) FROM sessions").await,
        0,
        "no session exists for the address"
    );

    // The donor finds the verification email that sign-up sent and uses it, without the
    // stranger's password (they do not know it): signed in by the mailbox, and the
    // stranger's password is gone.
    let stranger_link = app.link_token(donor, 1).await;
    let used = app
        .api
        .post_json(
            "/v1/sessions/magic-link/consume",
            &json!({"token": stranger_link}),
        )
        .await;
    assert_eq!(used.status, StatusCode::CREATED);
    assert_eq!(used.json()["password_confirmed"], false);
    assert_eq!(
        scalar_i64(&app, "SELECT count(*) FROM credentials").await,
        0,
        "the unconfirmed password was dropped"
    );
    assert_eq!(
        sign_in(&app, donor, "attacker password")
            .await
            .error_code(401),
        "invalid_credentials"
    );

    // The donor, from their mailbox, sees both gifts with what a receipt needs.
    let owner = used.json()["token"].as_str().unwrap().to_owned();
    let history = as_reader(&app, Method::GET, "/v1/me/contributions", &owner, None)
        .await
        .json();
    assert_eq!(history["sees_linked"], true);
    let gifts = history["contributions"].as_array().unwrap();
    assert_eq!(gifts.len(), 2);
    let once = gifts.iter().find(|g| g["interval"] == "once").unwrap();
    assert_eq!(
        (once["amount_minor"].as_i64(), once["currency"].as_str()),
        (Some(2500), Some("usd"))
    );
    assert_eq!(once["movements"][0]["kind"], "payment");
    assert!(once["paid_at"].is_string());
    assert_eq!(history["plans"].as_array().unwrap().len(), 1);
}

#[tokio::test]
async fn remind_me_later_is_stored_moved_unsubscribed_and_suppressed_by_a_gift() {
    let app = TestApp::spawn().await;
    app.deliver_webhooks_here(Some((0, false))).await;
    let email = "later@example.org";
    let remind = |on: String| {
        let app = &app;
        async move {
            app.api
                .post_json("/v1/reminders", &json!({"email": email, "remind_on": on}))
                .await
        }
    };
    let first = remind(tomorrow_plus(6)).await;
    assert_eq!(first.status, StatusCode::ACCEPTED);
    assert_eq!(first.json(), json!({"status": "scheduled"}));
    remind(tomorrow_plus(20)).await;
    let pending: Vec<(uuid::Uuid, time::Date)> =
        sqlx::query_as("SELECT id, remind_on FROM reminders WHERE status = 'pending'")
            .fetch_all(&app.pool)
            .await
            .unwrap();
    assert_eq!(pending.len(), 1, "one pending reminder per address");
    assert_eq!(
        pending[0].1.to_string(),
        tomorrow_plus(20),
        "the second request moved it"
    );

    assert_eq!(
        remind(tomorrow_plus(-1)).await.error_code(422),
        "remind_on_out_of_range"
    );
    assert_eq!(
        remind(tomorrow_plus(400)).await.error_code(422),
        "remind_on_out_of_range"
    );
    assert_eq!(
        remind("next tuesday".into()).await.error_code(422),
        "invalid_remind_on"
    );

    // The unsubscribe page changes nothing; the one-click POST does, once and idempotently.
    let token = app
        .state
        .accounts
        .unsubscribe_token(kopilka_domain::id::ReminderId::from_uuid(pending[0].0));
    let page = app
        .api
        .get(&format!("/v1/reminders/unsubscribe?token={token}"))
        .await;
    assert_eq!(page.status, StatusCode::OK);
    assert_eq!(
        scalar_i64(
            &app,
            "SELECT count(*) FROM reminders WHERE status = 'pending'"
        )
        .await,
        1
    );
    let one_click = app
        .api
        .post_raw(
            &format!("/v1/reminders/unsubscribe?token={token}"),
            "application/x-www-form-urlencoded",
            b"List-Unsubscribe=One-Click".to_vec(),
        )
        .await;
    assert_eq!(one_click.status, StatusCode::OK);
    assert_eq!(one_click.json()["status"], "unsubscribed");
    let twice = app
        .api
        .post_raw(
            &format!("/v1/reminders/unsubscribe?token={token}"),
            "application/x-www-form-urlencoded",
            Vec::new(),
        )
        .await;
    assert_eq!(twice.status, StatusCode::OK);
    assert_eq!(
        scalar_i64(
            &app,
            "SELECT count(*) FROM reminders WHERE status = 'unsubscribed'"
        )
        .await,
        1
    );
    let forged = app
        .api
        .post_raw(
            "/v1/reminders/unsubscribe?token=forged",
            "text/plain",
            Vec::new(),
        )
        .await;
    assert_eq!(forged.error_code(400), "invalid_link");

    // A new reminder, then a gift before it is due: suppressed, and the banner remembers.
    remind(tomorrow_plus(3)).await;
    app.give(email, "once", 1000).await;
    let pool = app.pool.clone();
    eventually("the reminder suppressed", Duration::from_secs(10), || {
        let pool = pool.clone();
        async move {
            let reason: Option<String> =
                sqlx::query_scalar("SELECT reason FROM reminders WHERE status = 'suppressed'")
                    .fetch_optional(&pool)
                    .await
                    .ok()
                    .flatten();
            (reason.as_deref() == Some("gave")).then_some(())
        }
    })
    .await;
    let due = {
        let mut conn = app.pool.acquire().await.unwrap();
        kopilka_accounts::reminder::due(
            &mut conn,
            time::OffsetDateTime::now_utc().date() + time::Duration::days(400),
            100,
        )
        .await
        .unwrap()
    };
    assert!(due.is_empty(), "nothing due: {due:?}");
    assert_eq!(
        scalar_i64(
            &app,
            "SELECT count(*) FROM banner_states WHERE gave_at IS NOT NULL"
        )
        .await,
        1
    );
}

#[tokio::test]
async fn the_banner_state_follows_the_reader_across_devices() {
    let app = TestApp::spawn().await;
    // Anonymous: a signed cookie.
    let snooze = (time::OffsetDateTime::now_utc() + time::Duration::days(7))
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap();
    let put = send(
        app.api
            .request(Method::PUT, "/v1/banner")
            .json(&json!({"snoozed_until": snooze})),
    )
    .await;
    assert_eq!(put.status, StatusCode::OK);
    let cookie = put.headers["set-cookie"]
        .to_str()
        .unwrap()
        .split(';')
        .next()
        .unwrap()
        .to_owned();
    assert!(cookie.starts_with("__Host-kopilka_banner="));
    let back = send(
        app.api
            .request(Method::GET, "/v1/banner")
            .header("cookie", &cookie),
    )
    .await
    .json();
    assert_eq!(
        back["snoozed_until"].as_str().map(|s| &s[..16]),
        Some(&snooze[..16])
    );
    let tampered = cookie.replace("banner=", "banner=x");
    let ignored = send(
        app.api
            .request(Method::GET, "/v1/banner")
            .header("cookie", tampered),
    )
    .await
    .json();
    assert_eq!(
        ignored["snoozed_until"],
        Value::Null,
        "a forged cookie counts for nothing"
    );
    let past = send(
        app.api
            .request(Method::PUT, "/v1/banner")
            .json(&json!({"snoozed_until": "2020-01-01T00:00:00Z"})),
    )
    .await;
    assert_eq!(past.error_code(422), "invalid_snooze");

    // Signed in: stored on the server, the same on the reader's other device.
    let email = "two-devices@example.org";
    sign_up(&app, email, PASSWORD).await;
    let phone = sign_in_by_link(&app, email, 1).await;
    let laptop = sign_in(&app, email, PASSWORD).await.json()["token"]
        .as_str()
        .unwrap()
        .to_owned();
    let closed = as_reader(
        &app,
        Method::PUT,
        "/v1/banner",
        &phone,
        Some(json!({"closed": true})),
    )
    .await;
    assert_eq!(closed.status, StatusCode::OK);
    assert!(closed.headers.get("set-cookie").is_none());
    let seen = as_reader(&app, Method::GET, "/v1/me", &laptop, None)
        .await
        .json();
    assert!(seen["banner"]["closed_at"].is_string(), "{seen}");
    let reopened = as_reader(
        &app,
        Method::PUT,
        "/v1/banner",
        &laptop,
        Some(json!({"closed": false})),
    )
    .await
    .json();
    assert_eq!(reopened["closed_at"], Value::Null);
}

#[tokio::test]
async fn cookie_authenticated_changes_must_come_from_the_site() {
    let app = TestApp::spawn_with(|s| {
        s.server.cors_allowed_origins = vec!["https://news.example.org".into()];
    })
    .await;
    let email = "csrf@example.org";
    sign_up(&app, email, PASSWORD).await;
    sign_in_by_link(&app, email, 1).await;
    let signed_in = sign_in(&app, email, PASSWORD).await;
    let cookie = signed_in.headers["set-cookie"]
        .to_str()
        .unwrap()
        .split(';')
        .next()
        .unwrap()
        .to_owned();
    let token = signed_in.json()["token"].as_str().unwrap().to_owned();
    let change = |origin: Option<&str>, fetch_site: Option<&str>| {
        let mut request = app
            .api
            .request(Method::PATCH, "/v1/me")
            .header("cookie", &cookie)
            .json(&json!({"name": "Ana"}));
        if let Some(origin) = origin {
            request = request.header("origin", origin);
        }
        if let Some(site) = fetch_site {
            request = request.header("sec-fetch-site", site);
        }
        send(request)
    };
    assert_eq!(
        change(Some("https://evil.example"), Some("cross-site"))
            .await
            .error_code(403),
        "cross_site_request"
    );
    assert_eq!(
        change(Some("https://evil.example"), None)
            .await
            .error_code(403),
        "cross_site_request"
    );
    assert_eq!(
        change(None, Some("same-origin")).await.status,
        StatusCode::NO_CONTENT
    );
    assert_eq!(
        change(Some("https://news.example.org"), Some("same-site"))
            .await
            .status,
        StatusCode::NO_CONTENT
    );
    assert_eq!(
        change(None, None).await.status,
        StatusCode::NO_CONTENT,
        "not from a browser"
    );
    // A bearer token is not sent by browsers on their own, so no origin check applies.
    let bearer = send(
        app.api
            .request(Method::PATCH, "/v1/me")
            .bearer_auth(&token)
            .header("origin", "https://evil.example")
            .json(&json!({"locale": "ru"})),
    )
    .await;
    assert_eq!(bearer.status, StatusCode::NO_CONTENT);
    // Reads with the cookie work from anywhere (CORS decides what a page may read).
    let read = send(
        app.api
            .request(Method::GET, "/v1/me")
            .header("cookie", &cookie)
            .header("origin", "https://evil.example"),
    )
    .await;
    assert_eq!(read.status, StatusCode::OK);
    assert_eq!(read.json()["locale"], "ru");
}

#[tokio::test]
async fn a_reader_changes_cancels_and_resumes_their_plan() {
    let app = TestApp::spawn().await;
    app.deliver_webhooks_here(Some((0, false))).await;
    let email = "monthly@example.org";
    app.give(email, "month", 500).await;
    request_link(&app, email).await;
    let token = sign_in_by_link(&app, email, 1).await;
    let plans = as_reader(&app, Method::GET, "/v1/me/contributions", &token, None)
        .await
        .json()["plans"]
        .clone();
    let plan = plans[0]["id"].as_str().unwrap().to_owned();

    let changed = as_reader(
        &app,
        Method::PATCH,
        &format!("/v1/me/recurring/{plan}"),
        &token,
        Some(json!({"amount_minor": 1000})),
    )
    .await;
    assert_eq!(
        changed.status,
        StatusCode::OK,
        "{}",
        String::from_utf8_lossy(&changed.body)
    );
    assert_eq!(changed.json()["amount_minor"], 1000);
    let too_small = as_reader(
        &app,
        Method::PATCH,
        &format!("/v1/me/recurring/{plan}"),
        &token,
        Some(json!({"amount_minor": 1})),
    )
    .await;
    assert_eq!(too_small.error_code(422), "amount_out_of_range");

    let cancelled = as_reader(
        &app,
        Method::POST,
        &format!("/v1/me/recurring/{plan}/cancel"),
        &token,
        None,
    )
    .await;
    assert_eq!(cancelled.status, StatusCode::OK);
    assert_eq!(cancelled.json()["cancel_at_period_end"], true);
    let resumed = as_reader(
        &app,
        Method::POST,
        &format!("/v1/me/recurring/{plan}/resume"),
        &token,
        None,
    )
    .await;
    assert_eq!(resumed.json()["cancel_at_period_end"], false);

    // The card: Stripe's portal page, on the payment-method flow, back to public_url.
    let card = as_reader(
        &app,
        Method::POST,
        &format!("/v1/me/recurring/{plan}/card"),
        &token,
        None,
    )
    .await;
    assert_eq!(
        card.status,
        StatusCode::OK,
        "{}",
        String::from_utf8_lossy(&card.body)
    );
    let portal_url = card.json()["url"].as_str().unwrap().to_owned();
    let portal_id = portal_url.rsplit('/').next().unwrap().to_owned();
    assert!(portal_id.starts_with("bps_"), "{portal_url}");
    let page = reqwest::get(&portal_url)
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        page.contains("payment_method_update") && page.contains(app.settings.public_url.as_str()),
        "{page}"
    );
    let card_link = kopilka_accounts::plan_link::token(
        &app.state.accounts.keys,
        plan.parse().unwrap(),
        kopilka_accounts::plan_link::PlanAction::UpdateCard,
        time::OffsetDateTime::now_utc() + time::Duration::days(14),
    );
    let from_email = send(
        app.api
            .request(Method::POST, &format!("/v1/plan-links/{card_link}")),
    )
    .await;
    assert_eq!(from_email.status, StatusCode::OK);
    assert!(
        from_email.json()["url"]
            .as_str()
            .unwrap()
            .contains("/portal/bps_")
    );

    // Another reader cannot touch it.
    let other = "other@example.org";
    app.give(other, "once", 1000).await;
    request_link(&app, other).await;
    let stranger = sign_in_by_link(&app, other, 1).await;
    let refused = as_reader(
        &app,
        Method::POST,
        &format!("/v1/me/recurring/{plan}/cancel"),
        &stranger,
        None,
    )
    .await;
    assert_eq!(refused.error_code(404), "not_found");

    // A signed one-click link from an email cancels at period end without signing in.
    let link = kopilka_accounts::plan_link::token(
        &app.state.accounts.keys,
        plan.parse().unwrap(),
        kopilka_accounts::plan_link::PlanAction::Cancel,
        time::OffsetDateTime::now_utc() + time::Duration::days(14),
    );
    assert_eq!(
        app.api.get(&format!("/v1/plan-links/{link}")).await.status,
        StatusCode::OK
    );
    let clicked = send(
        app.api
            .request(Method::POST, &format!("/v1/plan-links/{link}")),
    )
    .await;
    assert_eq!(
        clicked.status,
        StatusCode::OK,
        "{}",
        String::from_utf8_lossy(&clicked.body)
    );
    assert_eq!(clicked.json()["cancel_at_period_end"], true);
    let expired = kopilka_accounts::plan_link::token(
        &app.state.accounts.keys,
        plan.parse().unwrap(),
        kopilka_accounts::plan_link::PlanAction::Cancel,
        time::OffsetDateTime::now_utc() - time::Duration::minutes(1),
    );
    assert_eq!(
        send(
            app.api
                .request(Method::POST, &format!("/v1/plan-links/{expired}"))
        )
        .await
        .error_code(400),
        "invalid_link"
    );
}

/// Every text, varchar and jsonb value in the database that contains `needle`, as
/// `table.column`.
async fn where_is(app: &TestApp, needle: &str) -> Vec<String> {
    let columns: Vec<(String, String)> = sqlx::query_as(
        "SELECT table_name::text, column_name::text FROM information_schema.columns
         WHERE table_schema = 'public' AND data_type IN ('text', 'character varying', 'jsonb', 'json', 'character')",
    )
    .fetch_all(&app.pool)
    .await
    .unwrap();
    let mut found = Vec::new();
    for (table, column) in columns {
        let sql = format!(
            "SELECT count(*) FROM \"{table}\" WHERE \"{column}\"::text ILIKE '%' || $1 || '%'"
        );
        let n: i64 = sqlx::query_scalar(sqlx::AssertSqlSafe(sql))
            .bind(needle)
            .fetch_one(&app.pool)
            .await
            .unwrap();
        if n > 0 {
            found.push(format!("{table}.{column}"));
        }
    }
    found
}

#[tokio::test]
async fn erasure_removes_every_copy_of_the_address_and_keeps_the_ledger() {
    let app = TestApp::spawn().await;
    app.deliver_webhooks_here(Some((0, false))).await;
    let email = "erase-me@example.org";
    app.give(email, "once", 2500).await;
    app.give(email, "month", 700).await;
    app.api
        .post_json(
            "/v1/reminders",
            &json!({"email": email, "remind_on": tomorrow_plus(30)}),
        )
        .await;
    request_link(&app, email).await;
    let token = sign_in_by_link(&app, email, 1).await;
    assert_eq!(
        where_is(&app, email).await,
        ["readers.email"],
        "the address lives in the reader table only"
    );

    let export = as_reader(&app, Method::GET, "/v1/me/export", &token, None).await;
    assert_eq!(export.status, StatusCode::OK);
    let export = export.json();
    assert_eq!(export["account"]["email"], email);
    assert_eq!(export["contributions"].as_array().unwrap().len(), 2);
    assert_eq!(export["plans"].as_array().unwrap().len(), 1);
    assert_eq!(export["account"]["reminders"].as_array().unwrap().len(), 1);

    let ledger = "SELECT coalesce(sum(amount_minor), 0)::bigint FROM ledger_entries";
    let before = scalar_i64(&app, ledger).await;
    let customers: Vec<String> = sqlx::query_scalar("SELECT DISTINCT stripe_customer_id FROM contributions WHERE stripe_customer_id IS NOT NULL")
        .fetch_all(&app.pool)
        .await
        .unwrap();
    assert!(!customers.is_empty());

    let erased = as_reader(&app, Method::DELETE, "/v1/me", &token, None).await;
    assert_eq!(erased.status, StatusCode::OK);
    let erased = erased.json();
    assert_eq!(
        (
            &erased["erased"],
            &erased["plans_cancelled"],
            &erased["customers_deleted"],
            &erased["checkouts_expired"]
        ),
        (&json!(true), &json!(1), &json!(customers.len()), &json!(0)),
        "{erased}"
    );
    let retained: Vec<&str> = erased["stripe_retains"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|r| r["object"].as_str())
        .collect();
    assert_eq!(retained, ["charge", "invoice"], "{erased}");
    assert_eq!(
        scalar_i64(&app, ledger).await,
        before,
        "the ledger is untouched"
    );
    assert_eq!(
        scalar_i64(
            &app,
            "SELECT count(*) FROM contributions WHERE status = 'paid'"
        )
        .await,
        2
    );
    let copies = where_is(&app, email).await;
    assert!(
        copies.is_empty(),
        "no copy of the address anywhere: {copies:?}"
    );
    assert!(where_is(&app, "erase-me").await.is_empty());
    assert_eq!(
        as_reader(&app, Method::GET, "/v1/me", &token, None)
            .await
            .error_code(401),
        "unauthenticated"
    );
    for table in [
        "sessions",
        "reminders",
        "credentials",
        "email_links",
        "banner_states",
    ] {
        assert_eq!(
            scalar_i64(&app, &format!("SELECT count(*) FROM {table}")).await,
            0,
            "{table}"
        );
    }

    // Stripe's customers are deleted before anything was forgotten.
    for customer in customers {
        let stored = app.sim_get(&format!("/v1/customers/{customer}")).await;
        assert_eq!(stored["deleted"], true, "{stored}");
    }
    // Signing up again with the address starts from nothing.
    let n = app.emails_to(email) + 1;
    sign_up(&app, email, PASSWORD).await;
    sign_in_by_link(&app, email, n).await;
    let fresh = sign_in(&app, email, PASSWORD).await.json()["token"]
        .as_str()
        .unwrap()
        .to_owned();
    let history = as_reader(&app, Method::GET, "/v1/me/contributions", &fresh, None)
        .await
        .json();
    assert_eq!(history["contributions"], json!([]));
}

#[tokio::test]
async fn a_password_chosen_by_someone_else_never_becomes_the_owners() {
    let app = TestApp::spawn().await;
    app.deliver_webhooks_here(Some((0, false))).await;
    let donor = "target-donor@example.org";
    app.give(donor, "once", 2500).await;
    // The attacker sets a password on the donor's address first: it cannot sign in.
    sign_up(&app, donor, "attacker password").await;
    assert_eq!(
        sign_in(&app, donor, "attacker password")
            .await
            .error_code(401),
        "invalid_credentials"
    );
    // The donor signs up with their own password (it replaces the unconfirmed one) and
    // confirms it from their mailbox.
    app.email_to(donor, 1).await;
    let n = app.emails_to(donor) + 1;
    assert_eq!(n, 2, "the stranger's sign-up sent the first link");
    sign_up(&app, donor, PASSWORD).await;
    let owner = sign_in_by_link(&app, donor, n).await;
    assert_eq!(
        as_reader(&app, Method::GET, "/v1/me/contributions", &owner, None)
            .await
            .json()["sees_linked"],
        true
    );
    // The attacker's earlier link, if the donor uses it too, no longer confirms anything.
    let earlier = app.link_token(donor, n - 1).await;
    let late = app
        .api
        .post_json(
            "/v1/sessions/magic-link/consume",
            &json!({"token": earlier, "password": "attacker password"}),
        )
        .await;
    assert_eq!(
        late.status,
        StatusCode::CREATED,
        "the donor's mailbox signs in"
    );
    assert_eq!(late.json()["password_confirmed"], false);
    assert_eq!(
        sign_in(&app, donor, "attacker password")
            .await
            .error_code(401),
        "invalid_credentials"
    );
    assert_eq!(
        sign_in(&app, donor, PASSWORD).await.status,
        StatusCode::CREATED
    );
}

#[tokio::test]
async fn a_burst_of_parallel_guesses_cannot_outrun_the_backoff() {
    let app = TestApp::spawn_with(|s| {
        s.accounts.free_failures_per_account = 3;
        s.accounts.backoff_base_secs = 60;
    })
    .await;
    let email = "burst@example.org";
    sign_up(&app, email, PASSWORD).await;
    let guesses: Vec<_> = (0..24)
        .map(|i| {
            let api = app.api.clone();
            tokio::spawn(async move {
                api.post_json(
                    "/v1/sessions",
                    &json!({"email": email, "password": format!("guess {i}")}),
                )
                .await
                .status
            })
        })
        .collect();
    let mut checked = 0;
    for guess in guesses {
        let status = guess.await.unwrap();
        assert!(matches!(status.as_u16(), 401 | 429), "{status}");
        if status == StatusCode::UNAUTHORIZED {
            checked += 1;
        }
    }
    assert_eq!(
        checked, 4,
        "three free failures and the one that started the backoff"
    );
}

/// The reader's one plan, as `GET /v1/me/contributions` shows it.
async fn my_plan(app: &TestApp, token: &str) -> Value {
    as_reader(app, Method::GET, "/v1/me/contributions", token, None)
        .await
        .json()["plans"][0]
        .clone()
}

/// The subscription's newest invoice at the simulator.
async fn latest_invoice(app: &TestApp, subscription: &str) -> Value {
    let sub = app
        .sim_get(&format!("/v1/subscriptions/{subscription}"))
        .await;
    let invoice = sub["latest_invoice"].as_str().unwrap().to_owned();
    app.sim_get(&format!("/v1/invoices/{invoice}")).await
}

#[tokio::test]
async fn interval_switches_credit_unused_time_and_an_unpaid_switch_changes_nothing() {
    let app = TestApp::spawn().await;
    app.deliver_webhooks_here(Some((0, false))).await;
    let email = "switcher@example.org";
    app.give(email, "month", 1000).await;
    request_link(&app, email).await;
    let token = sign_in_by_link(&app, email, 1).await;
    let plan = my_plan(&app, &token).await;
    let id = plan["id"].as_str().unwrap().to_owned();
    let sub = plan["stripe_subscription_id"].as_str().unwrap().to_owned();
    let patch = |body: Value| {
        let (app, token, path) = (&app, &token, format!("/v1/me/recurring/{id}"));
        async move { as_reader(app, Method::PATCH, &path, token, Some(body)).await }
    };

    // The bank asks for 3-D Secure: the switch to annual waits, the plan is as it was, and
    // the answer gives the donor Stripe's page to complete it.
    app.sim_control(
        &format!("/_sim/subscriptions/{sub}/card"),
        &json!({"outcome": "require_action"}),
    )
    .await;
    let waiting = patch(json!({"amount_minor": 12000, "interval": "year"})).await;
    assert_eq!(
        waiting.error_code(402),
        "plan_change_payment_incomplete",
        "{}",
        String::from_utf8_lossy(&waiting.body)
    );
    let url = waiting.json()["error"]["url"].as_str().unwrap().to_owned();
    let invoice = latest_invoice(&app, &sub).await;
    assert_eq!(url, invoice["hosted_invoice_url"].as_str().unwrap());
    // A month of $10 unused: $120 − $10.
    assert_eq!(invoice["amount_due"], 11000, "{invoice}");
    assert_eq!(invoice["status"], "open");
    let unchanged = app.sim_get(&format!("/v1/subscriptions/{sub}")).await;
    assert_eq!(
        unchanged["items"]["data"][0]["price"]["recurring"]["interval"],
        "month"
    );
    assert!(unchanged["pending_update"].is_object(), "{unchanged}");
    let plan = my_plan(&app, &token).await;
    assert_eq!(
        (plan["interval"].as_str(), plan["amount_minor"].as_i64()),
        (Some("month"), Some(1000))
    );

    // The donor confirms on the hosted page: the switch applies, Kopilka hears of it.
    let paid = reqwest::Client::new()
        .post(format!("{url}/pay"))
        .send()
        .await
        .unwrap();
    assert!(paid.status().is_success());
    eventually(
        "the plan to become annual",
        Duration::from_secs(20),
        || async {
            let plan = my_plan(&app, &token).await;
            (plan["interval"] == "year" && plan["amount_minor"] == 12000).then_some(())
        },
    )
    .await;
    assert_eq!(latest_invoice(&app, &sub).await["status"], "paid");

    // A declined card: nothing changes either.
    app.sim_control(
        &format!("/_sim/subscriptions/{sub}/card"),
        &json!({"outcome": "decline"}),
    )
    .await;
    let declined = patch(json!({"amount_minor": 1000, "interval": "month"})).await;
    // Back to monthly, the year's credit covers the month: nothing is charged, so even a
    // declining card does not stop it; what is left of the credit stays on the balance.
    assert_eq!(
        declined.status,
        StatusCode::OK,
        "{}",
        String::from_utf8_lossy(&declined.body)
    );
    assert_eq!(declined.json()["interval"], "month");
    let invoice = latest_invoice(&app, &sub).await;
    assert_eq!(
        (invoice["amount_due"].as_i64(), invoice["status"].as_str()),
        (Some(0), Some("paid"))
    );
    let customer = app
        .sim_get(&format!(
            "/v1/customers/{}",
            invoice["customer"].as_str().unwrap()
        ))
        .await;
    assert_eq!(
        customer["balance"], -11000,
        "a $120 year just begun, less one $10 month"
    );

    // Monthly → $300 a year with the declining card: $300 − $10 unused − $110 on the
    // balance is $180 to pay; declined, so 402 and still monthly.
    let refused = patch(json!({"amount_minor": 30000, "interval": "year"})).await;
    assert_eq!(refused.error_code(402), "plan_change_payment_incomplete");
    let invoice = latest_invoice(&app, &sub).await;
    assert_eq!(
        (invoice["amount_due"].as_i64(), invoice["status"].as_str()),
        (Some(18000), Some("open"))
    );
    let plan = my_plan(&app, &token).await;
    assert_eq!(
        (plan["interval"].as_str(), plan["amount_minor"].as_i64()),
        (Some("month"), Some(1000))
    );
}

#[tokio::test]
async fn a_plan_amount_stripe_would_refuse_is_422_and_changes_nothing() {
    let app = TestApp::spawn_with(|settings| {
        let isk: kopilka_domain::Currency = "isk".parse().unwrap();
        let rules = isk.charge_rules().unwrap();
        let interval = kopilka_config::IntervalOffer {
            presets: vec![50_000],
            default_minor: 50_000,
            minimum_minor: rules.minimum_minor,
            maximum_minor: rules.maximum_minor,
        };
        settings.offer.currencies.insert(
            isk,
            kopilka_config::CurrencyOffer {
                default_interval: kopilka_domain::Interval::Month,
                once: interval.clone(),
                month: interval.clone(),
                year: interval,
            },
        );
        settings.offer.rates.insert(isk, "0.0072".parse().unwrap());
    })
    .await;
    app.deliver_webhooks_here(Some((0, false))).await;
    let email = "krona@example.org";
    // 500 kr a month: Stripe's ISK has two decimals that are always 00.
    app.give_in(email, "month", 50_000, "isk").await;
    request_link(&app, email).await;
    let token = sign_in_by_link(&app, email, 1).await;
    let plan = my_plan(&app, &token).await;
    let id = plan["id"].as_str().unwrap().to_owned();
    let sub = plan["stripe_subscription_id"].as_str().unwrap().to_owned();
    let path = format!("/v1/me/recurring/{id}");

    let fractional = as_reader(
        &app,
        Method::PATCH,
        &path,
        &token,
        Some(json!({"amount_minor": 60_050})),
    )
    .await;
    assert_eq!(fractional.error_code(422), "amount_not_a_valid_multiple");
    let at_stripe = app.sim_get(&format!("/v1/subscriptions/{sub}")).await;
    assert_eq!(
        at_stripe["items"]["data"][0]["price"]["unit_amount"], 50_000,
        "nothing reached Stripe"
    );

    let whole = as_reader(
        &app,
        Method::PATCH,
        &path,
        &token,
        Some(json!({"amount_minor": 60_000})),
    )
    .await;
    assert_eq!(
        whole.status,
        StatusCode::OK,
        "{}",
        String::from_utf8_lossy(&whole.body)
    );
    assert_eq!(whole.json()["amount_minor"], 60_000);
}

/// A link request from client `ip` (behind the configured forwarding header).
async fn request_link_from(app: &TestApp, email: &str, ip: &str) -> ApiResponse {
    send(
        app.api
            .request(Method::POST, "/v1/sessions/magic-link")
            .header("x-forwarded-for", ip)
            .json(&json!({"email": email})),
    )
    .await
}

fn small_link_budgets(settings: &mut kopilka_config::Settings) {
    settings.server.client_ip_header = Some("x-forwarded-for".into());
    settings.limits.sign_in_link = kopilka_config::RouteLimit {
        per_client: 5,
        per_address: 3,
        global: 20,
        window_secs: 600,
    };
}

/// Issue #19: sign-in link requests count per address, per client and in all; over any
/// budget the answer is 429 `rate_limited` with `Retry-After`, the same for an address with
/// an account and one without; another client still gets through; refused requests are not
/// counted; and every accepted request for a known address sends its link.
#[tokio::test]
async fn link_requests_are_limited_per_address_per_client_and_in_all_alike_for_every_address() {
    let app = TestApp::spawn_with(small_link_budgets).await;
    let known = "limited-known@example.org";
    assert_eq!(
        sign_up(&app, known, PASSWORD).await.status,
        StatusCode::ACCEPTED
    );
    let mut admitted = 0;
    // Per address: three from three clients, the fourth refused — alike for both.
    for address in [known, "limited-unknown@example.org"] {
        let mut statuses = Vec::new();
        for n in 1..=4 {
            let answer = request_link_from(&app, address, &format!("198.51.100.{n}")).await;
            if answer.status == StatusCode::TOO_MANY_REQUESTS {
                assert_eq!(answer.error_code(429), "rate_limited");
                let wait: u64 = answer.headers["retry-after"]
                    .to_str()
                    .unwrap()
                    .parse()
                    .unwrap();
                assert!((1..=600).contains(&wait), "{wait}");
            } else {
                admitted += 1;
            }
            statuses.push(answer.status.as_u16());
        }
        assert_eq!(statuses, [202, 202, 202, 429], "{address}");
    }
    // Per client (IPv6 per /64): five addresses from one /64, the sixth refused; another
    // client passes.
    let mut statuses = Vec::new();
    for n in 1..=6 {
        let ip = format!("2001:db8:1:2::{n}");
        let answer = request_link_from(&app, &format!("per-client-{n}@example.org"), &ip).await;
        statuses.push(answer.status.as_u16());
    }
    assert_eq!(statuses, [202, 202, 202, 202, 202, 429]);
    admitted += 5;
    let other = request_link_from(&app, "other-client@example.org", "203.0.113.9").await;
    assert_eq!(other.status, StatusCode::ACCEPTED);
    admitted += 1;
    // In all: twenty per window, whoever asks.
    let mut n = 0;
    loop {
        n += 1;
        let answer = request_link_from(
            &app,
            &format!("global-{n}@example.org"),
            &format!("192.0.2.{n}"),
        )
        .await;
        if answer.status == StatusCode::TOO_MANY_REQUESTS {
            break;
        }
        assert_eq!(answer.status, StatusCode::ACCEPTED);
        admitted += 1;
        assert!(n < 100, "the global budget never refused");
    }
    assert_eq!(admitted, 20, "refused requests are not counted");
    // The known address's three accepted requests each sent a link (the sign-up's
    // verification email came first).
    app.link_token(known, 4).await;
}

/// Work a link request leaves behind is bounded: with one place and that place held (its
/// lookup waits on a lock), the next request is 503 `busy` with `Retry-After` — and the
/// accepted one still sends its link once the lock goes.
#[tokio::test]
async fn a_full_background_pool_refuses_clearly_and_the_accepted_work_still_happens() {
    let app = TestApp::spawn_with(|settings| settings.limits.background_tasks = 1).await;
    let known = "bounded-known@example.org";
    assert_eq!(
        sign_up(&app, known, PASSWORD).await.status,
        StatusCode::ACCEPTED
    );
    app.link_token(known, 1).await;
    let mut lock = app.pool.begin().await.unwrap();
    sqlx::query("LOCK TABLE readers IN ACCESS EXCLUSIVE MODE")
        .execute(&mut *lock)
        .await
        .unwrap();
    assert_eq!(request_link(&app, known).await.status, StatusCode::ACCEPTED);
    let busy = request_link(&app, "bounded-other@example.org").await;
    assert_eq!(busy.error_code(503), "busy");
    assert!(busy.headers.contains_key("retry-after"));
    lock.rollback().await.unwrap();
    app.link_token(known, 2).await;
    // The place is free again.
    eventually("the place frees", Duration::from_secs(10), || async {
        (request_link(&app, "bounded-later@example.org").await.status == StatusCode::ACCEPTED)
            .then_some(())
    })
    .await;
}

/// Issue #19: a name typed with an address nobody has proven appears in no email — the
/// verification email greets generically — and if the mailbox's owner proves the address
/// without the sign-up's password, the name is dropped; a sign-up proven with its own
/// password keeps it.
#[tokio::test]
async fn a_name_given_with_an_unproven_address_never_speaks_for_the_newsroom() {
    let app = TestApp::spawn().await;
    let victim = "named-victim@example.org";
    let planted = "Mallory-Says-Donate-To-Us";
    let signed = app
        .api
        .post_json(
            "/v1/accounts",
            &json!({"email": victim, "password": "attacker's own password", "name": planted}),
        )
        .await;
    assert_eq!(signed.status, StatusCode::ACCEPTED);
    let verify = app.email_to(victim, 1).await;
    assert!(!verify.text.contains(planted) && !verify.html.contains(planted));
    assert!(verify.text.starts_with("Hello,"), "{}", verify.text);
    // The owner clicks without the attacker's password: signed in, the name gone.
    let token = app.link_token(victim, 1).await;
    let used = app
        .api
        .post_json("/v1/sessions/magic-link/consume", &json!({"token": token}))
        .await;
    assert_eq!(used.status, StatusCode::CREATED);
    assert_eq!(
        request_link(&app, victim).await.status,
        StatusCode::ACCEPTED
    );
    let later = app.email_to(victim, 2).await;
    assert!(!later.text.contains(planted) && !later.html.contains(planted));
    let stored: Option<String> = sqlx::query_scalar("SELECT name FROM readers WHERE email = $1")
        .bind(victim)
        .fetch_one(&app.pool)
        .await
        .unwrap();
    assert_eq!(stored, None);

    // A reader who proves the address with their own sign-up's password keeps the name.
    let ada = "named-ada@example.org";
    app.api
        .post_json(
            "/v1/accounts",
            &json!({"email": ada, "password": PASSWORD, "name": "Ada"}),
        )
        .await;
    assert!(!app.email_to(ada, 1).await.text.contains("Ada"));
    sign_in_by_link(&app, ada, 1).await;
    assert_eq!(request_link(&app, ada).await.status, StatusCode::ACCEPTED);
    assert!(app.email_to(ada, 2).await.text.starts_with("Hello Ada,"));
}

/// Issue #19: a signed-in reader's checkout links to them whatever address is typed (and
/// Stripe's page gets their own); an anonymous checkout's typed address creates no reader
/// until the payment completes with the address the payer gave on Stripe's page.
#[tokio::test]
async fn a_signed_in_checkout_is_the_readers_and_a_typed_address_alone_names_nobody() {
    let app = TestApp::spawn().await;
    let reader = "checkout-owner@example.org";
    assert_eq!(
        sign_up(&app, reader, PASSWORD).await.status,
        StatusCode::ACCEPTED
    );
    let token = sign_in_by_link(&app, reader, 1).await;
    let typed = "someone-else@example.org";
    let started = send(
        app.api
            .request(Method::POST, "/v1/checkout")
            .bearer_auth(&token)
            .json(&json!({"interval": "once", "amount_minor": 1000, "currency": "usd", "email": typed})),
    )
    .await;
    assert_eq!(started.status, StatusCode::CREATED);
    let url = started.json()["checkout_url"].as_str().unwrap().to_owned();
    let session_id = url.rsplit('/').next().unwrap().to_owned();
    let session = app
        .sim_get(&format!("/v1/checkout/sessions/{session_id}"))
        .await;
    assert_eq!(
        session["customer_email"], reader,
        "Stripe's page has their own address"
    );
    let owner: Option<String> = sqlx::query_scalar(
        "SELECT r.email FROM contributions c JOIN readers r ON r.id = c.reader_id
         WHERE c.id = $1::uuid",
    )
    .bind(started.json()["contribution_id"].as_str().unwrap())
    .fetch_optional(&app.pool)
    .await
    .unwrap();
    assert_eq!(owner.as_deref(), Some(reader));
    let strangers: i64 = sqlx::query_scalar("SELECT count(*) FROM readers WHERE email = $1")
        .bind(typed)
        .fetch_one(&app.pool)
        .await
        .unwrap();
    assert_eq!(strangers, 0, "the typed address is stored nowhere");

    // Anonymous: the typed address creates nothing until Stripe says who paid.
    let anonymous = "anonymous-typed@example.org";
    let started = app
        .api
        .post_json(
            "/v1/checkout",
            &json!({"interval": "once", "amount_minor": 1000, "currency": "usd", "email": anonymous}),
        )
        .await;
    assert_eq!(started.status, StatusCode::CREATED);
    let readers: i64 = sqlx::query_scalar("SELECT count(*) FROM readers WHERE email = $1")
        .bind(anonymous)
        .fetch_one(&app.pool)
        .await
        .unwrap();
    assert_eq!(readers, 0);
}

fn session_token(answer: &ApiResponse) -> String {
    assert_eq!(
        answer.status,
        StatusCode::CREATED,
        "{}",
        String::from_utf8_lossy(&answer.body)
    );
    answer.json()["token"].as_str().unwrap().to_owned()
}

/// Issue #19, item 3: a password a reader can manage — changed with the current one, or
/// reset after a fresh emailed link; never a common breached one; every other session ends
/// on a change; "sign out everywhere"; an idle session ends; and a password of a refused
/// length is never compared as another password.
#[tokio::test]
async fn a_reader_changes_resets_and_signs_out_everywhere_and_idle_sessions_end() {
    let app = TestApp::spawn().await;
    let email = "manages-password@example.org";
    assert_eq!(
        sign_up(&app, email, PASSWORD).await.status,
        StatusCode::ACCEPTED
    );
    let by_link = sign_in_by_link(&app, email, 1).await;
    let phone = session_token(&sign_in(&app, email, PASSWORD).await);
    let laptop = session_token(&sign_in(&app, email, PASSWORD).await);
    let change = |token: String, body: Value| {
        let app = &app;
        async move { as_reader(app, Method::POST, "/v1/me/password", &token, Some(body)).await }
    };
    let me = |token: String| {
        let app = &app;
        async move {
            as_reader(app, Method::GET, "/v1/me", &token, None)
                .await
                .status
        }
    };
    // A password session must give the current password.
    assert_eq!(
        change(
            laptop.clone(),
            json!({"new_password": "a brand new passphrase"})
        )
        .await
        .error_code(403),
        "reauthentication_required"
    );
    assert_eq!(
        change(
            laptop.clone(),
            json!({"current_password": "not the password", "new_password": "a brand new passphrase"})
        )
        .await
        .error_code(401),
        "invalid_credentials"
    );
    assert_eq!(
        change(
            laptop.clone(),
            json!({"current_password": PASSWORD, "new_password": "P@ssw0rd"})
        )
        .await
        .error_code(422),
        "password_too_common"
    );
    let changed = change(
        laptop.clone(),
        json!({"current_password": PASSWORD, "new_password": "a brand new passphrase"}),
    )
    .await;
    assert_eq!(changed.status, StatusCode::OK, "{:?}", changed.json());
    assert_eq!(changed.json()["sessions_ended"], 2);
    assert_eq!(
        me(laptop.clone()).await,
        StatusCode::OK,
        "this session stays"
    );
    let mine = as_reader(&app, Method::GET, "/v1/me/contributions", &laptop, None).await;
    assert_eq!(mine.status, StatusCode::OK, "and still sees what is linked");
    assert_eq!(me(phone).await, StatusCode::UNAUTHORIZED);
    assert_eq!(me(by_link).await, StatusCode::UNAUTHORIZED);
    assert_eq!(
        sign_in(&app, email, PASSWORD).await.status,
        StatusCode::UNAUTHORIZED
    );
    session_token(&sign_in(&app, email, "a brand new passphrase").await);

    // Forgotten: a fresh emailed link, then a new password without the old one.
    assert_eq!(request_link(&app, email).await.status, StatusCode::ACCEPTED);
    let token = app.link_token(email, 2).await;
    let fresh = session_token(
        &app.api
            .post_json("/v1/sessions/magic-link/consume", &json!({"token": token}))
            .await,
    );
    let reset = change(fresh.clone(), json!({"new_password": "forgot it, so this"})).await;
    assert_eq!(reset.status, StatusCode::OK, "{:?}", reset.json());
    session_token(&sign_in(&app, email, "forgot it, so this").await);

    // Sign out everywhere: every session, this one too.
    let everywhere = as_reader(&app, Method::DELETE, "/v1/me/sessions", &fresh, None).await;
    assert_eq!(everywhere.status, StatusCode::NO_CONTENT);
    assert_eq!(me(fresh).await, StatusCode::UNAUTHORIZED);
    assert_eq!(me(laptop).await, StatusCode::UNAUTHORIZED);

    // An idle session ends (here: unused for eight days; the default is seven).
    let idle = session_token(&sign_in(&app, email, "forgot it, so this").await);
    assert_eq!(me(idle.clone()).await, StatusCode::OK);
    sqlx::query(
        "UPDATE sessions SET last_seen_at = now() - interval '8 days' WHERE revoked_at IS NULL",
    )
    .execute(&app.pool)
    .await
    .unwrap();
    assert_eq!(me(idle).await, StatusCode::UNAUTHORIZED);
}

/// A password of a length Kopilka refuses is simply wrong at sign-in: it is never compared
/// as another password (an account whose password is eight x's does not sign in with `a`).
#[tokio::test]
async fn a_refused_password_length_is_never_compared_as_another_password() {
    let app = TestApp::spawn().await;
    let email = "eight-x@example.org";
    let xs = "xxxxxxxx";
    assert_eq!(sign_up(&app, email, xs).await.status, StatusCode::ACCEPTED);
    let token = app.link_token(email, 1).await;
    let confirmed = app
        .api
        .post_json(
            "/v1/sessions/magic-link/consume",
            &json!({"token": token, "password": xs}),
        )
        .await;
    assert_eq!(confirmed.status, StatusCode::CREATED);
    session_token(&sign_in(&app, email, xs).await);
    for guess in ["a", "", &"x".repeat(300)] {
        assert_eq!(
            sign_in(&app, email, guess).await.error_code(401),
            "invalid_credentials",
            "{guess:?}"
        );
    }
}
