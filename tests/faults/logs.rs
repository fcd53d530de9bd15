//! Who gave is dangerous data: the logs of every process, at debug, through a whole journey
//! and the abuse around it, hold no address, password, token or secret. (Every other row
//! runs the same search over its own logs when it finishes.)

use kopilka_accounts::plan_link::{self, PlanAction};
use kopilka_test_support::{eventually, send};
use reqwest::{Method, StatusCode};
use serde_json::json;
use std::time::Duration;

use crate::stack::Stack;

pub async fn a_full_journey_with_abuse_logs_no_secret_or_personal_data() {
    let mut stack = Stack::options()
        .worker_in_serve(true)
        .env("KOPILKA__ACCOUNTS__LINKS_PER_HOUR", "100")
        .start()
        .await;
    stack.deliver_webhooks_to(0).await;
    let email = "dangerous-donor@example.org";
    let password = "correct-horse-battery-staple-42";
    stack.watch([email, password, "dangerous-donor"]);

    // Gives monthly with the address, on the simulator's page.
    let started = stack
        .api()
        .post_json(
            "/v1/checkout",
            &json!({"interval": "month", "amount_minor": 700, "currency": "usd", "email": email}),
        )
        .await;
    assert_eq!(started.status, StatusCode::CREATED);
    let session_id = started.json()["checkout_url"]
        .as_str()
        .expect("a URL")
        .rsplit('/')
        .next()
        .expect("an id")
        .to_owned();
    stack
        .sim_control(&format!("/_sim/checkout/{session_id}/pay"), &json!({}))
        .await;
    let pool = stack.pool.clone();
    eventually("the plan applied", Duration::from_secs(30), || async {
        let plans: i64 =
            sqlx::query_scalar("SELECT count(*) FROM recurring_plans WHERE status = 'active'")
                .fetch_one(&pool)
                .await
                .ok()?;
        (plans == 1).then_some(())
    })
    .await;

    // The plan's emailed one-click links: page, use, a second use refused; and the return
    // from Stripe's page through Kopilka, the page's URL left clean.
    let plan: uuid::Uuid = sqlx::query_scalar("SELECT id FROM recurring_plans")
        .fetch_one(&stack.pool)
        .await
        .expect("the plan");
    let keys = kopilka_accounts::Keys::new(crate::stack::ACCOUNTS_SECRET.as_bytes());
    let until = time::OffsetDateTime::now_utc() + time::Duration::days(14);
    for action in [PlanAction::UpdateCard, PlanAction::Cancel] {
        let link = plan_link::token(&keys, plan, action, until);
        stack.watch([link.as_str()]);
        let page = stack.api().get(&format!("/v1/plan-links/{link}")).await;
        assert_eq!(page.status, StatusCode::OK);
        let first = send(
            stack
                .api()
                .request(Method::POST, &format!("/v1/plan-links/{link}")),
        )
        .await;
        assert_eq!(first.status, StatusCode::OK, "{action:?}");
        if let Some(url) = first.json()["url"].as_str() {
            stack.watch([url]);
        }
        let again = send(
            stack
                .api()
                .request(Method::POST, &format!("/v1/plan-links/{link}")),
        )
        .await;
        assert_eq!(again.error_code(410), "link_used");
    }
    let page = format!("{}/story/7?utm_campaign=x", crate::stack::SITE);
    let once = stack
        .api()
        .post_json(
            "/v1/checkout",
            &json!({"interval": "once", "amount_minor": 500, "currency": "usd", "return_url": page}),
        )
        .await;
    assert_eq!(once.status, StatusCode::CREATED);
    let once_session = once.json()["checkout_url"]
        .as_str()
        .expect("a URL")
        .rsplit('/')
        .next()
        .expect("an id")
        .to_owned();
    let stripe_session = stack
        .sim_get(&format!("/v1/checkout/sessions/{once_session}"))
        .await;
    let success = stripe_session["success_url"]
        .as_str()
        .expect("a success URL");
    let at = success
        .find("/v1/checkout/return?ref=")
        .expect("Kopilka's route");
    stack.watch([&success[at + "/v1/checkout/return?ref=".len()..]]);
    let back = stack.api().get(&success[at..]).await;
    assert_eq!(back.status, StatusCode::SEE_OTHER);
    assert_eq!(
        back.headers["location"],
        page.as_str(),
        "the page's own URL"
    );
    let cookie = back.headers["set-cookie"]
        .to_str()
        .expect("a cookie")
        .split(';')
        .next()
        .expect("a value")
        .to_owned();
    stack.watch([cookie.trim_start_matches("__Host-kopilka_checkout=")]);
    let outcome = send(
        stack
            .api()
            .request(Method::GET, "/v1/checkout/outcome")
            .header("cookie", &cookie),
    )
    .await;
    assert_eq!(outcome.json(), json!({"outcome": "success"}));

    // Signs up, gets it wrong, then right, then by link; takes a supporter token.
    let (verify, _) = stack.sign_up_confirmed(email, password, 1).await;
    stack.watch([verify.as_str()]);
    let wrong = stack
        .api()
        .post_json(
            "/v1/sessions",
            &json!({"email": email, "password": "nope-nope-nope"}),
        )
        .await;
    assert_eq!(wrong.status, StatusCode::UNAUTHORIZED);
    let right = stack
        .api()
        .post_json(
            "/v1/sessions",
            &json!({"email": email, "password": password}),
        )
        .await;
    assert_eq!(right.status, StatusCode::CREATED);
    let session = right.json()["token"].as_str().expect("a token").to_owned();
    stack.watch([session.as_str()]);
    let entitlements = send(
        stack
            .api()
            .request(Method::GET, "/v1/entitlements")
            .bearer_auth(&session),
    )
    .await;
    let supporter = entitlements.json()["token"]
        .as_str()
        .expect("a token")
        .to_owned();
    stack.watch([supporter.as_str()]);
    let offer = send(
        stack
            .api()
            .request(Method::GET, "/v1/offer?view=1")
            .bearer_auth(&supporter),
    )
    .await;
    assert_eq!(offer.json()["supporter"], true);

    // Abuse around it: a forged token, a wrong link, a tampered webhook, bad bodies with
    // the address in them, a cross-site change.
    // One signature character changed (not the last: it carries padding bits).
    let at = supporter.len() - 10;
    let swapped = if &supporter[at..=at] == "A" { "B" } else { "A" };
    let forged = format!("{}{swapped}{}", &supporter[..at], &supporter[at + 1..]);
    stack.watch([forged.as_str()]);
    assert_eq!(
        send(
            stack
                .api()
                .request(Method::GET, "/v1/offer")
                .bearer_auth(&forged)
        )
        .await
        .status,
        StatusCode::UNAUTHORIZED
    );
    let bad_link = format!("{verify}x");
    assert!(
        stack
            .api()
            .post_json(
                "/v1/sessions/magic-link/consume",
                &json!({"token": bad_link})
            )
            .await
            .status
            .is_client_error()
    );
    let tampered = stack
        .deliver_signed(0, &format!("{{\"email\":\"{email}\"}}"), "t=1,v1=00")
        .await;
    assert_eq!(tampered.status, StatusCode::BAD_REQUEST);
    for body in [
        format!("{{\"email\": \"{email}\", \"password\": 5}}"),
        format!("{{\"email\": \"{email}\""),
        format!("{{\"email\": \"{email}\", \"remind_on\": \"tomorrow\"}}"),
    ] {
        for path in ["/v1/accounts", "/v1/sessions", "/v1/reminders"] {
            let answer = stack
                .api()
                .post_raw(path, "application/json", body.clone().into_bytes())
                .await;
            assert!(answer.status.is_client_error(), "{path}");
        }
    }
    let cross = send(
        stack
            .api()
            .request(Method::PATCH, "/v1/me")
            .header("cookie", format!("__Host-kopilka_session={session}"))
            .header("origin", "https://evil.example.com")
            .json(&json!({"name": email})),
    )
    .await;
    assert_eq!(cross.status, StatusCode::FORBIDDEN);

    // Remind me later, the reminder sent, one-click unsubscribe from its header.
    let remind_on = (time::OffsetDateTime::now_utc() + time::Duration::days(2)).date();
    let reminded = stack
        .api()
        .post_json(
            "/v1/reminders",
            &json!({"email": email, "remind_on": remind_on.to_string()}),
        )
        .await;
    assert!(reminded.status.is_success());
    let as_of =
        (time::OffsetDateTime::now_utc() + time::Duration::days(2) + time::Duration::hours(2))
            .format(&time::format_description::well_known::Rfc3339)
            .expect("formats");
    stack.run(&["worker", "--once", "--as-of", &as_of]).await;
    // The sink may take a moment to store what it accepted: wait for the state.
    let smtp = &stack.smtp;
    let reminder = kopilka_test_support::eventually(
        "the reminder email",
        std::time::Duration::from_secs(20),
        || async {
            smtp.messages().into_iter().find(|m| {
                m.header("Message-ID")
                    .is_some_and(|id| id.contains("reminder-"))
            })
        },
    )
    .await;
    let unsubscribe = reminder
        .header("List-Unsubscribe")
        .expect("a List-Unsubscribe header")
        .trim_matches(|c| c == '<' || c == '>')
        .to_owned();
    let token = unsubscribe
        .split("token=")
        .nth(1)
        .expect("a token")
        .to_owned();
    stack.watch([token.as_str()]);
    let path = unsubscribe
        .find("/v1/")
        .map(|at| unsubscribe[at..].to_owned())
        .expect("a path");
    let done = stack
        .api()
        .post_raw(
            &path,
            "application/x-www-form-urlencoded",
            b"List-Unsubscribe=One-Click".to_vec(),
        )
        .await;
    assert!(done.status.is_success(), "{:?}", done.body);

    // Export and erase.
    let export = send(
        stack
            .api()
            .request(Method::GET, "/v1/me/export")
            .bearer_auth(&session),
    )
    .await;
    assert_eq!(export.status, StatusCode::OK);
    let erased = send(
        stack
            .api()
            .request(Method::DELETE, "/v1/me")
            .bearer_auth(&session),
    )
    .await;
    assert!(erased.status.is_success());

    // Every message the reader got carried the address; the logs must not.
    let subjects: Vec<String> = stack
        .smtp
        .messages()
        .into_iter()
        .map(|m| m.subject)
        .collect();
    assert!(
        subjects.len() >= 3,
        "the journey sent its emails (receipt, confirmation, reminder): {subjects:?}"
    );
    let logs = stack.logs();
    assert!(
        logs.contains("/v1/checkout") && logs.contains("/v1/sessions"),
        "the request lines are in the captured logs, so the search below means something"
    );
    let lines = stack.finish().await;
    assert!(lines > 20, "debug logs were captured: {lines} lines");
}
