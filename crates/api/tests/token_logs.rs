//! No link, token or address in any log or metric label: every route that takes a token in
//! its path or query (plan links, the magic-link page and its consumption, the reminder's
//! unsubscribe, the checkout return) is driven with known tokens, beside a smuggled request
//! id, an address in a query and unmatched paths; the captured logs (debug, every crate)
//! and the metrics hold none of them. Also: plan links are single use and revoked when the
//! plan ends or the reader is erased; the checkout return leaves the newsroom's page a clean
//! URL and tells the widget the outcome through a cookie.

use std::sync::{Arc, Mutex};

use kopilka_accounts::plan_link::{self, PlanAction};
use kopilka_test_support::{TestApp, send};
use reqwest::{Method, StatusCode};
use serde_json::json;

/// Every line written by the subscriber.
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for Captured {
    type Writer = Self;

    fn make_writer(&'a self) -> Self::Writer {
        self.clone()
    }
}

const PAGE: &str = "https://news.example.org/story/42?utm_source=x";
const METRICS_TOKEN: &str = "metrics-token-for-tests-0123456789";

fn no_redirects() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
}

/// The value of cookie `name` in a response's `Set-Cookie` headers, with its attributes.
fn set_cookie(headers: &reqwest::header::HeaderMap, name: &str) -> Option<String> {
    headers
        .get_all("set-cookie")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find(|v| v.starts_with(&format!("{name}=")))
        .map(str::to_owned)
}

#[tokio::test]
async fn routes_with_tokens_log_their_template_and_never_the_token() {
    let captured = Captured::default();
    tracing_subscriber::fmt()
        .with_env_filter("debug")
        .with_writer(captured.clone())
        .with_ansi(false)
        .init();

    let app = TestApp::spawn_with(|settings| {
        settings.offer.return_origins = vec!["https://news.example.org".into()];
        settings.server.metrics_token = Some(METRICS_TOKEN.to_owned().into());
    })
    .await;
    app.deliver_webhooks_here(Some((0, false))).await;
    let email = "token-route-donor@example.org";
    let mut secrets: Vec<String> = vec![email.into(), "token-route-donor".into()];
    let base = format!("http://{}", app.address);

    // A monthly plan, so there is something for plan links to act on.
    let given = app.give(email, "month", 700).await;
    let contribution = given["contribution_id"].as_str().unwrap().to_owned();
    let plan: uuid::Uuid =
        sqlx::query_scalar("SELECT id FROM recurring_plans WHERE contribution_id = $1::uuid")
            .bind(&contribution)
            .fetch_one(&app.pool)
            .await
            .unwrap();
    let keys = &app.state.accounts.keys;
    let now = time::OffsetDateTime::now_utc();
    let in_two_weeks = now + time::Duration::days(14);

    // Plan links: the page (GET), the action (POST) once, then refused as used.
    let cancel = plan_link::token(keys, plan, PlanAction::Cancel, in_two_weeks);
    let card = plan_link::token(keys, plan, PlanAction::UpdateCard, in_two_weeks);
    secrets.extend([cancel.clone(), card.clone()]);
    for token in [&cancel, &card] {
        let page = app.api.get(&format!("/v1/plan-links/{token}")).await;
        assert_eq!(page.status, StatusCode::OK);
    }
    let used = app
        .api
        .post_raw(&format!("/v1/plan-links/{card}"), "text/plain", Vec::new())
        .await;
    assert_eq!(used.status, StatusCode::OK, "{:?}", used.json());
    let portal = used.json()["url"]
        .as_str()
        .expect("Stripe's page")
        .to_owned();
    secrets.push(portal);
    let again = app
        .api
        .post_raw(&format!("/v1/plan-links/{card}"), "text/plain", Vec::new())
        .await;
    assert_eq!(again.error_code(410), "link_used", "a link works once");
    let cancelled = app
        .api
        .post_raw(
            &format!("/v1/plan-links/{cancel}"),
            "text/plain",
            Vec::new(),
        )
        .await;
    assert_eq!(cancelled.status, StatusCode::OK, "{:?}", cancelled.json());
    assert_eq!(
        app.api
            .post_raw(
                &format!("/v1/plan-links/{cancel}"),
                "text/plain",
                Vec::new()
            )
            .await
            .error_code(410),
        "link_used"
    );
    // The uses are stored keyed, never as the token.
    let uses: Vec<String> = sqlx::query_scalar("SELECT use_key FROM plan_link_uses")
        .fetch_all(&app.pool)
        .await
        .unwrap();
    assert_eq!(uses.len(), 2);
    assert!(uses.iter().all(|u| u != &cancel && u != &card));
    let forged = format!("{cancel}AAAA");
    secrets.push(forged.clone());
    assert_eq!(
        app.api
            .post_raw(
                &format!("/v1/plan-links/{forged}"),
                "text/plain",
                Vec::new()
            )
            .await
            .error_code(400),
        "invalid_link"
    );
    assert_eq!(
        app.api
            .get(&format!("/v1/plan-links/{forged}"))
            .await
            .status,
        StatusCode::OK,
        "the page says nothing about the token"
    );

    // The magic link: its page (GET ?token=) and its consumption.
    assert_eq!(
        app.api
            .post_json("/v1/sessions/magic-link", &json!({"email": email}))
            .await
            .status,
        StatusCode::ACCEPTED
    );
    let link = app.link_token(email, 1).await;
    secrets.push(link.clone());
    let page = app
        .api
        .get(&format!("/v1/sessions/magic-link?token={link}"))
        .await;
    assert_eq!(page.status, StatusCode::OK);
    let session = app
        .api
        .post_json("/v1/sessions/magic-link/consume", &json!({"token": link}))
        .await;
    assert_eq!(session.status, StatusCode::CREATED);
    secrets.push(session.json()["token"].as_str().unwrap().to_owned());

    // The reminder's unsubscribe: page and one-click POST, both with ?token=.
    assert!(
        app.api
            .post_json(
                "/v1/reminders",
                &json!({"email": email, "remind_on": (now.date() + time::Duration::days(9)).to_string()}),
            )
            .await
            .status
            .is_success()
    );
    let reminder: uuid::Uuid = sqlx::query_scalar("SELECT id FROM reminders")
        .fetch_one(&app.pool)
        .await
        .unwrap();
    let unsubscribe = app
        .state
        .accounts
        .unsubscribe_token(kopilka_domain::id::ReminderId::from_uuid(reminder));
    secrets.push(unsubscribe.clone());
    assert_eq!(
        app.api
            .get(&format!("/v1/reminders/unsubscribe?token={unsubscribe}"))
            .await
            .status,
        StatusCode::OK
    );
    assert_eq!(
        app.api
            .post_raw(
                &format!("/v1/reminders/unsubscribe?token={unsubscribe}"),
                "application/x-www-form-urlencoded",
                b"List-Unsubscribe=One-Click".to_vec(),
            )
            .await
            .status,
        StatusCode::OK
    );

    // The checkout return: Stripe's success URL is Kopilka's route; it sets the outcome
    // cookie and sends the reader to the page exactly as it was.
    let started = app
        .api
        .post_json(
            "/v1/checkout",
            &json!({"interval": "once", "amount_minor": 900, "currency": "usd", "return_url": PAGE}),
        )
        .await;
    assert_eq!(started.status, StatusCode::CREATED);
    let session_id = started.json()["checkout_url"]
        .as_str()
        .unwrap()
        .rsplit('/')
        .next()
        .unwrap()
        .to_owned();
    let other_contribution = started.json()["contribution_id"]
        .as_str()
        .unwrap()
        .to_owned();
    let stripe_session = app
        .sim_get(&format!("/v1/checkout/sessions/{session_id}"))
        .await;
    let mut returns = Vec::new();
    for (field, outcome) in [("success_url", "success"), ("cancel_url", "cancelled")] {
        let url = stripe_session[field].as_str().expect(field).to_owned();
        let public = app.settings.public_url.as_str().trim_end_matches('/');
        assert!(
            url.starts_with(&format!("{public}/v1/checkout/return?ref=")),
            "{field}: {url}"
        );
        let url = url.replacen(public, &base, 1);
        assert!(
            !url.contains(&other_contribution) && !url.contains("CHECKOUT_SESSION_ID"),
            "{url}"
        );
        let reference = url.split("ref=").nth(1).unwrap().to_owned();
        secrets.push(reference);
        let back = no_redirects().get(&url).send().await.unwrap();
        assert_eq!(back.status(), StatusCode::SEE_OTHER, "{field}");
        let location = back.headers()["location"].to_str().unwrap().to_owned();
        assert_eq!(
            location, PAGE,
            "the page gets its own URL back, nothing added"
        );
        let cookie = set_cookie(back.headers(), "__Host-kopilka_checkout").expect("a cookie");
        for attribute in ["Secure", "HttpOnly", "SameSite=Lax", "Path=/"] {
            assert!(cookie.contains(attribute), "{cookie}");
        }
        assert!(!cookie.contains("Domain="), "host-only: {cookie}");
        let value = cookie
            .split(';')
            .next()
            .unwrap()
            .trim_start_matches("__Host-kopilka_checkout=")
            .to_owned();
        secrets.push(value.clone());
        returns.push((outcome, value));
    }
    for (outcome, value) in &returns {
        let asked = send(
            app.api
                .request(Method::GET, "/v1/checkout/outcome")
                .header("cookie", format!("__Host-kopilka_checkout={value}")),
        )
        .await;
        assert_eq!(asked.status, StatusCode::OK);
        assert_eq!(asked.json(), json!({"outcome": outcome}));
        let cleared = asked
            .headers
            .get("set-cookie")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default();
        assert!(cleared.contains("Max-Age=0"), "read once: {cleared}");
    }
    assert_eq!(
        app.api.get("/v1/checkout/outcome").await.json(),
        json!({"outcome": null})
    );
    let tampered = format!("{}x", returns[0].1);
    assert_eq!(
        send(
            app.api
                .request(Method::GET, "/v1/checkout/outcome")
                .header("cookie", format!("__Host-kopilka_checkout={tampered}")),
        )
        .await
        .json(),
        json!({"outcome": null})
    );
    // No open redirect: only a reference Kopilka signed, to a configured origin.
    for forged in [
        "/v1/checkout/return?ref=forged-reference-0123456789".to_owned(),
        format!(
            "/v1/checkout/return?ref=x&to={}",
            "https%3A%2F%2Fevil.example.com%2F"
        ),
    ] {
        let refused = no_redirects()
            .get(format!("{base}{forged}"))
            .send()
            .await
            .unwrap();
        assert_eq!(refused.status(), StatusCode::BAD_REQUEST, "{forged}");
        assert!(refused.headers().get("location").is_none());
    }
    secrets.push("forged-reference-0123456789".into());

    // Around them: a request id smuggling a token, an address in a query, unmatched paths.
    let smuggled = "smuggled-token-via-request-id";
    secrets.push(smuggled.into());
    send(
        app.api
            .request(Method::GET, "/healthz")
            .header("x-request-id", smuggled),
    )
    .await;
    let in_query = "query-donor@example.org";
    secrets.push(in_query.into());
    app.api.get(&format!("/v1/offer?email={in_query}")).await;
    let unmatched = "unmatched-secret-path-token";
    secrets.push(unmatched.into());
    assert_eq!(
        app.api
            .get(&format!(
                "/v1/plan-links/{unmatched}/extra?token={unmatched}"
            ))
            .await
            .status,
        StatusCode::NOT_FOUND
    );
    app.api
        .post_raw(
            &format!("/v1/sessions/magic-link/{unmatched}"),
            "application/json",
            b"{}".to_vec(),
        )
        .await;

    // An extension method is any token a client likes: it is logged and counted as OTHER.
    let method = "SMUGGLEDMETHODTOKEN";
    secrets.push(method.into());
    for path in ["/v1/plan-links/abcdef", "/v1/nowhere"] {
        send(
            app.api
                .request(Method::from_bytes(method.as_bytes()).unwrap(), path),
        )
        .await;
    }

    // A handler that panics with request data in its message: a 500 envelope, and the
    // message reaches neither the answer nor the logs.
    let marker = "panic-marker-token-0123456789";
    secrets.push(marker.into());
    let boom = kopilka_api::with_layers(
        axum::Router::new().route(
            "/v1/boom/{token}",
            axum::routing::get(
                |axum::extract::Path(token): axum::extract::Path<String>| async move {
                    panic!("a handler failed holding {token}");
                    #[allow(unreachable_code)]
                    ""
                },
            ),
        ),
        &app.settings,
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let boom_at = listener.local_addr().unwrap();
    let boom_server = tokio::spawn(async move { axum::serve(listener, boom).await });
    let failed = reqwest::get(format!("http://{boom_at}/v1/boom/{marker}"))
        .await
        .unwrap();
    assert_eq!(failed.status(), StatusCode::INTERNAL_SERVER_ERROR);
    let body = failed.text().await.unwrap();
    assert!(
        body.contains("internal_error") && !body.contains(marker),
        "{body}"
    );
    boom_server.abort();

    // Metrics: route templates only.
    let metrics = send(
        app.api
            .request(Method::GET, "/metrics")
            .bearer_auth(METRICS_TOKEN),
    )
    .await;
    let metrics = String::from_utf8(metrics.body).unwrap();
    assert!(
        metrics.contains("route=\"/v1/plan-links/{token}\""),
        "{metrics}"
    );

    let logs = String::from_utf8_lossy(&captured.0.lock().unwrap()).into_owned();
    assert!(
        logs.contains("/v1/plan-links/{token}")
            && logs.contains("/v1/checkout/return")
            && logs.contains("/v1/reminders/unsubscribe")
            && logs.contains("route=\"unmatched\"")
            && logs.contains("a request failed without a handled error"),
        "the requests were logged by their route template: {}",
        logs.lines()
            .filter(|l| l.contains("route"))
            .take(30)
            .collect::<Vec<_>>()
            .join("\n")
    );
    for secret in &secrets {
        for (what, text) in [("log", &logs), ("metrics", &metrics)] {
            let hit = text.lines().find(|line| line.contains(secret.as_str()));
            assert!(
                hit.is_none(),
                "a {what} line carries {secret:?}: {}",
                hit.unwrap_or_default()
            );
        }
    }
    assert!(!logs.contains("@example.org"), "no address at all");
}

#[tokio::test]
async fn plan_links_stop_working_when_the_plan_ends_or_the_reader_is_erased() {
    let app = TestApp::spawn().await;
    app.deliver_webhooks_here(Some((0, false))).await;
    let keys = &app.state.accounts.keys;
    let in_two_weeks = (time::OffsetDateTime::now_utc() + time::Duration::days(14))
        .replace_nanosecond(0)
        .unwrap();
    let plan_of = |contribution: String| {
        let pool = app.pool.clone();
        async move {
            sqlx::query_as::<_, (uuid::Uuid, uuid::Uuid)>(
                "SELECT p.id, c.reader_id FROM recurring_plans p
                 JOIN contributions c ON c.id = p.contribution_id WHERE c.id = $1::uuid",
            )
            .bind(contribution)
            .fetch_one(&pool)
            .await
            .unwrap()
        }
    };

    // A plan that has ended: its links are refused, and nothing is recorded as used.
    let ended = app.give("ended-plan@example.org", "month", 500).await;
    let (ended_plan, _) = plan_of(ended["contribution_id"].as_str().unwrap().into()).await;
    let link = plan_link::token(keys, ended_plan, PlanAction::Cancel, in_two_weeks);
    sqlx::query("UPDATE recurring_plans SET status = 'canceled' WHERE id = $1")
        .bind(ended_plan)
        .execute(&app.pool)
        .await
        .unwrap();
    let refused = send(
        app.api
            .request(Method::POST, &format!("/v1/plan-links/{link}")),
    )
    .await;
    assert_eq!(refused.error_code(410), "link_revoked");

    // An erased reader's plan: the links are refused too.
    let erased = app.give("erased-reader@example.org", "month", 500).await;
    let (plan, reader) = plan_of(erased["contribution_id"].as_str().unwrap().into()).await;
    let card = plan_link::token(keys, plan, PlanAction::UpdateCard, in_two_weeks);
    kopilka_jobs::privacy::erase_reader(
        &app.pool,
        app.state.stripe.as_ref(),
        &app.state.accounts.keys,
        kopilka_domain::id::ReaderId::from_uuid(reader),
        time::OffsetDateTime::now_utc(),
        time::Duration::hours(24),
    )
    .await
    .unwrap();
    let refused = send(
        app.api
            .request(Method::POST, &format!("/v1/plan-links/{card}")),
    )
    .await;
    assert_eq!(refused.error_code(410), "link_revoked");
    let used: i64 = sqlx::query_scalar("SELECT count(*) FROM plan_link_uses")
        .fetch_one(&app.pool)
        .await
        .unwrap();
    assert_eq!(used, 0, "a refused link records no use");

    // Two clicks at once on a live plan's link: exactly one acts.
    let live = app.give("two-clicks@example.org", "month", 500).await;
    let (live_plan, _) = plan_of(live["contribution_id"].as_str().unwrap().into()).await;
    let cancel = plan_link::token(keys, live_plan, PlanAction::Cancel, in_two_weeks);
    let path = format!("/v1/plan-links/{cancel}");
    let (a, b) = tokio::join!(
        send(app.api.request(Method::POST, &path)),
        send(app.api.request(Method::POST, &path))
    );
    let mut statuses = [a.status.as_u16(), b.status.as_u16()];
    statuses.sort_unstable();
    assert_eq!(
        statuses,
        [200, 410],
        "one click acts, the other is told it was used"
    );

    // The daily job forgets the uses of links that have expired.
    let mut conn = app.pool.acquire().await.unwrap();
    let forgotten = plan_link::forget_expired_uses(&mut conn, in_two_weeks, 100)
        .await
        .unwrap();
    assert_eq!(forgotten, 0, "the link is still valid until then");
    let later = in_two_weeks + time::Duration::seconds(1);
    let forgotten = plan_link::forget_expired_uses(&mut conn, later, 100)
        .await
        .unwrap();
    assert_eq!(forgotten, 1);
}
