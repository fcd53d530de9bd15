//! Issue #19, items 3–5, against the real binary: a password a reader can manage (changed,
//! reset through a fresh emailed link, never a common one; every other session ends; "sign
//! out everywhere"; a refused length never compared as another password); text nobody has
//! proven never speaks for the newsroom in an email; a signed-in reader's checkout is theirs
//! whatever address is typed.

use std::time::Duration;

use kopilka_test_support::{ApiResponse, ReceivedEmail, eventually, send};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::stack::Stack;

const PASSWORD: &str = "a passphrase of my own making";
const CHANGED: &str = "changed with the old one at hand";
const RESET: &str = "reset from the mailbox, old one forgotten";

async fn as_reader(stack: &Stack, method: Method, path: &str, token: &str) -> ApiResponse {
    send(stack.api().request(method, path).bearer_auth(token)).await
}

async fn me(stack: &Stack, token: &str) -> StatusCode {
    as_reader(stack, Method::GET, "/v1/me", token).await.status
}

async fn change_password(stack: &Stack, token: &str, body: &Value) -> ApiResponse {
    send(
        stack
            .api()
            .request(Method::POST, "/v1/me/password")
            .bearer_auth(token)
            .json(body),
    )
    .await
}

async fn sign_in(stack: &Stack, email: &str, password: &str) -> ApiResponse {
    stack
        .api()
        .post_json(
            "/v1/sessions",
            &json!({"email": email, "password": password}),
        )
        .await
}

/// The session token of a 201 sign-in.
fn session(answer: &ApiResponse) -> String {
    assert_eq!(
        answer.status,
        StatusCode::CREATED,
        "{}",
        String::from_utf8_lossy(&answer.body)
    );
    answer.json()["token"]
        .as_str()
        .expect("a session token")
        .to_owned()
}

/// Live sessions of every reader, as the database holds them.
async fn live_sessions(stack: &Stack) -> i64 {
    stack
        .count("SELECT count(*) FROM sessions WHERE revoked_at IS NULL")
        .await
}

pub async fn a_changed_or_reset_password_ends_every_other_session_and_common_ones_are_refused() {
    let mut stack = Stack::options()
        .worker_in_serve(true)
        .env("KOPILKA__ACCOUNTS__LINKS_PER_HOUR", "100")
        .start()
        .await;
    let email = "manages-passwords@example.org";
    stack.watch([email, PASSWORD, CHANGED, RESET, "manages-passwords"]);

    // A common breached password, or a simple variant of one, is refused for a new account
    // before anything is looked up; nothing is created.
    for common in ["password", "P@ssw0rd", "drowssap"] {
        let refused = stack
            .api()
            .post_json(
                "/v1/accounts",
                &json!({"email": "common-choice@example.org", "password": common}),
            )
            .await;
        assert_eq!(refused.error_code(422), "password_too_common", "{common}");
    }
    assert_eq!(stack.count("SELECT count(*) FROM readers").await, 0);

    // Three sessions: the verification link's, a phone's and a laptop's.
    let (_, by_link) = stack.sign_up_confirmed(email, PASSWORD, 1).await;
    let phone = session(&sign_in(&stack, email, PASSWORD).await);
    let laptop = session(&sign_in(&stack, email, PASSWORD).await);
    stack.watch([by_link.as_str(), phone.as_str(), laptop.as_str()]);
    assert_eq!(live_sessions(&stack).await, 3);

    // A password session must prove the current password; a wrong one is 401; a common
    // new one or one of a refused length is 422 — and none of these changes anything.
    assert_eq!(
        change_password(&stack, &laptop, &json!({"new_password": CHANGED}))
            .await
            .error_code(403),
        "reauthentication_required"
    );
    assert_eq!(
        change_password(
            &stack,
            &laptop,
            &json!({"current_password": "not my passphrase", "new_password": CHANGED})
        )
        .await
        .error_code(401),
        "invalid_credentials"
    );
    for (new, code) in [
        ("P@ssw0rd", "password_too_common"),
        ("Password", "password_too_common"),
        ("short", "password_too_short"),
    ] {
        assert_eq!(
            change_password(
                &stack,
                &laptop,
                &json!({"current_password": PASSWORD, "new_password": new})
            )
            .await
            .error_code(422),
            code,
            "{new}"
        );
    }
    assert_eq!(live_sessions(&stack).await, 3, "the refusals ended nothing");

    // Changed with the current password: every other session ends, this one stays.
    let changed = change_password(
        &stack,
        &laptop,
        &json!({"current_password": PASSWORD, "new_password": CHANGED}),
    )
    .await;
    assert_eq!(changed.status, StatusCode::OK, "{:?}", changed.json());
    assert_eq!(changed.json()["sessions_ended"], 2);
    assert_eq!(
        me(&stack, &laptop).await,
        StatusCode::OK,
        "this session stays"
    );
    assert_eq!(me(&stack, &phone).await, StatusCode::UNAUTHORIZED);
    assert_eq!(me(&stack, &by_link).await, StatusCode::UNAUTHORIZED);
    assert_eq!(
        sign_in(&stack, email, PASSWORD).await.error_code(401),
        "invalid_credentials",
        "the old password opens nothing"
    );
    let tablet = session(&sign_in(&stack, email, CHANGED).await);
    stack.watch([tablet.as_str()]);

    // Forgotten: a fresh sign-in link from the mailbox (the second email with a link, after
    // the verification), then a new password without the old one.
    let asked = stack
        .api()
        .post_json("/v1/sessions/magic-link", &json!({"email": email}))
        .await;
    assert_eq!(asked.status, StatusCode::ACCEPTED);
    let link = stack.link_token(email, 2).await;
    stack.watch([link.as_str()]);
    let fresh = session(
        &stack
            .api()
            .post_json("/v1/sessions/magic-link/consume", &json!({"token": link}))
            .await,
    );
    stack.watch([fresh.as_str()]);
    let reset = change_password(&stack, &fresh, &json!({"new_password": RESET})).await;
    assert_eq!(reset.status, StatusCode::OK, "{:?}", reset.json());
    assert_eq!(
        reset.json()["sessions_ended"],
        2,
        "the laptop's and the tablet's"
    );
    assert_eq!(me(&stack, &fresh).await, StatusCode::OK);
    assert_eq!(me(&stack, &laptop).await, StatusCode::UNAUTHORIZED);
    assert_eq!(me(&stack, &tablet).await, StatusCode::UNAUTHORIZED);
    for old in [PASSWORD, CHANGED] {
        assert_eq!(
            sign_in(&stack, email, old).await.error_code(401),
            "invalid_credentials"
        );
    }
    let desk = session(&sign_in(&stack, email, RESET).await);
    stack.watch([desk.as_str()]);
    // A used link is spent: it cannot start another reset.
    assert_eq!(
        stack
            .api()
            .post_json("/v1/sessions/magic-link/consume", &json!({"token": link}))
            .await
            .error_code(400),
        "invalid_link"
    );

    // Sign out everywhere: every session, the asking one too.
    assert_eq!(live_sessions(&stack).await, 2);
    let everywhere = as_reader(&stack, Method::DELETE, "/v1/me/sessions", &desk).await;
    assert_eq!(everywhere.status, StatusCode::NO_CONTENT);
    assert_eq!(me(&stack, &desk).await, StatusCode::UNAUTHORIZED);
    assert_eq!(me(&stack, &fresh).await, StatusCode::UNAUTHORIZED);
    assert_eq!(live_sessions(&stack).await, 0);
    // The password itself still works after signing out everywhere.
    session(&sign_in(&stack, email, RESET).await);

    // A password of a refused length is simply wrong at sign-in: never compared as the
    // padding an account's password might be (eight x's).
    let padded = "eight-xs@example.org";
    let xs = "xxxxxxxx";
    stack.watch([padded]);
    stack.sign_up_confirmed(padded, xs, 1).await;
    session(&sign_in(&stack, padded, xs).await);
    for guess in ["a", "", "xxxxxxx", &"x".repeat(257)] {
        assert_eq!(
            sign_in(&stack, padded, guess).await.error_code(401),
            "invalid_credentials",
            "{guess:?}"
        );
    }
    assert_eq!(
        live_sessions(&stack).await,
        3,
        "the reader's new one, the padded account's link and password sessions"
    );
    stack.finish().await;
}

/// Whether `value` appears anywhere in a message: its subject, decoded text and HTML
/// parts, any header, or the raw bytes as sent.
fn mentions(message: &ReceivedEmail, raw: &str, value: &str) -> bool {
    let needle = value.to_lowercase();
    [
        message.subject.as_str(),
        message.text.as_str(),
        message.html.as_str(),
        raw,
    ]
    .into_iter()
    .chain(message.headers.iter().map(|(_, v)| v.as_str()))
    .any(|part| part.to_lowercase().contains(&needle))
}

/// Every message to `email` so far, decoded and raw, oldest first.
fn mail_to(stack: &Stack, email: &str) -> Vec<(ReceivedEmail, String)> {
    stack
        .smtp
        .raw_messages()
        .into_iter()
        .map(|raw| (ReceivedEmail::parse(&raw), raw))
        .filter(|(m, _)| m.to.eq_ignore_ascii_case(email))
        .collect()
}

/// Waits until `email` has received `n` messages; returns them.
async fn wait_for_mail(stack: &Stack, email: &str, n: usize) -> Vec<(ReceivedEmail, String)> {
    eventually(
        &format!("{n} emails to {email}"),
        Duration::from_secs(30),
        || async {
            let all = mail_to(stack, email);
            (all.len() >= n).then_some(all)
        },
    )
    .await
}

pub async fn a_name_given_for_an_unproven_address_appears_in_no_email() {
    let mut stack = Stack::options()
        .worker_in_serve(true)
        .env("KOPILKA__ACCOUNTS__LINKS_PER_HOUR", "100")
        .start()
        .await;
    let victim = "named-by-a-stranger@example.org";
    let stranger_password = "the stranger's own choice";
    // Distinctive words, so any trace of them in a message is found.
    let planted = ["Quetzalcoatl Zebedee", "Xanthippe Ozymandias"];
    stack.watch([victim, stranger_password]);

    // A stranger signs up with the victim's address and a name, twice.
    for (sent, name) in (1..).zip(planted) {
        let up = stack
            .api()
            .post_json(
                "/v1/accounts",
                &json!({"email": victim, "password": stranger_password, "name": name}),
            )
            .await;
        assert_eq!(up.status, StatusCode::ACCEPTED);
        wait_for_mail(&stack, victim, sent).await;
    }
    // Anyone asks for a sign-in link and a reminder to the address.
    let asked = stack
        .api()
        .post_json("/v1/sessions/magic-link", &json!({"email": victim}))
        .await;
    assert_eq!(asked.status, StatusCode::ACCEPTED);
    let tomorrow = time::OffsetDateTime::now_utc().date() + time::Duration::days(1);
    let reminder = stack
        .api()
        .post_json(
            "/v1/reminders",
            &json!({"email": victim, "remind_on": tomorrow.to_string()}),
        )
        .await;
    assert_eq!(reminder.status, StatusCode::ACCEPTED);
    wait_for_mail(&stack, victim, 3).await;
    let due = format!("{tomorrow}T09:00:00Z");
    let worker = stack.run(&["worker", "--once", "--as-of", &due]).await;
    assert!(worker.status.success(), "{}", worker.stderr);
    let before_proof = wait_for_mail(&stack, victim, 4).await;
    let subjects: Vec<&str> = before_proof
        .iter()
        .map(|(m, _)| m.subject.as_str())
        .collect();
    assert!(
        subjects.iter().filter(|s| s.starts_with("Confirm")).count() >= 1
            && subjects.iter().any(|s| s.starts_with("Your sign-in link"))
            && subjects
                .iter()
                .any(|s| s.starts_with("You asked us to remind")),
        "a verification, a sign-in link and a reminder: {subjects:?}"
    );

    // The owner proves the address from the mailbox without the stranger's password: signed
    // in, and the name is dropped; later emails greet generically too.
    // The newest verification link (the second sign-up's).
    let link = stack.link_token(victim, 2).await;
    let used = stack
        .api()
        .post_json("/v1/sessions/magic-link/consume", &json!({"token": link}))
        .await;
    let owner = session(&used);
    stack.watch([link.as_str(), owner.as_str()]);
    assert_eq!(used.json()["password_confirmed"], false);
    let profile = as_reader(&stack, Method::GET, "/v1/me", &owner).await;
    assert_eq!(
        profile.json()["name"],
        Value::Null,
        "the planted name is gone"
    );
    let again = stack
        .api()
        .post_json("/v1/sessions/magic-link", &json!({"email": victim}))
        .await;
    assert_eq!(again.status, StatusCode::ACCEPTED);
    let all = wait_for_mail(&stack, victim, before_proof.len() + 1).await;
    for (message, raw) in &all {
        for name in planted {
            for word in name.split(' ').chain([name]) {
                assert!(
                    !mentions(message, raw, word),
                    "{word:?} in the email {:?}",
                    message.subject
                );
            }
        }
        assert!(
            message.text.starts_with("Hello,"),
            "greets generically: {:?}",
            message.text.lines().next()
        );
    }
    let dump = stack.pg_dump();
    assert!(
        planted.iter().all(|name| !dump.contains(name)),
        "the dropped names are kept nowhere"
    );

    // The same check sees a name where one belongs: a reader who proves the address with
    // their own sign-up's password is greeted by it.
    let ada = "proven-ada@example.org";
    let ada_name = "Adalberta Quixote";
    stack.watch([ada]);
    let up = stack
        .api()
        .post_json(
            "/v1/accounts",
            &json!({"email": ada, "password": PASSWORD, "name": ada_name}),
        )
        .await;
    assert_eq!(up.status, StatusCode::ACCEPTED);
    let token = stack.link_token(ada, 1).await;
    let (first, first_raw) = wait_for_mail(&stack, ada, 1).await.remove(0);
    assert!(
        !mentions(&first, &first_raw, "Adalberta"),
        "not before the proof"
    );
    let proven = stack
        .api()
        .post_json(
            "/v1/sessions/magic-link/consume",
            &json!({"token": token, "password": PASSWORD}),
        )
        .await;
    stack.watch([session(&proven)]);
    assert_eq!(proven.json()["password_confirmed"], true);
    stack
        .api()
        .post_json("/v1/sessions/magic-link", &json!({"email": ada}))
        .await;
    let (greeted, raw) = wait_for_mail(&stack, ada, 2).await.remove(1);
    assert!(mentions(&greeted, &raw, ada_name));
    assert!(
        greeted.text.starts_with(&format!("Hello {ada_name},")),
        "{}",
        greeted.text
    );
    stack.finish().await;
}

/// The checkout session's id from a 201 checkout answer.
fn checkout_session(answer: &ApiResponse) -> String {
    assert_eq!(
        answer.status,
        StatusCode::CREATED,
        "{}",
        String::from_utf8_lossy(&answer.body)
    );
    answer.json()["checkout_url"]
        .as_str()
        .expect("a checkout URL")
        .rsplit('/')
        .next()
        .expect("an id")
        .to_owned()
}

/// How many paid contributions belong to the reader with `email`.
async fn paid_for(stack: &Stack, email: &str) -> i64 {
    sqlx::query_scalar(
        "SELECT count(*) FROM contributions c JOIN readers r ON r.id = c.reader_id
         WHERE r.email = $1 AND c.status = 'paid'",
    )
    .bind(email)
    .fetch_one(&stack.pool)
    .await
    .expect("counted")
}

pub async fn a_signed_in_readers_checkout_is_theirs_whatever_address_is_typed() {
    let mut stack = Stack::start_default().await;
    stack.deliver_webhooks_to(0).await;
    let reader = "signed-in-giver@example.org";
    let typed = "typed-by-someone@example.org";
    let anonymous_typed = "typed-anonymously@example.org";
    let payer = "paid-on-stripes-page@example.org";
    stack.watch([reader, typed, anonymous_typed, payer, PASSWORD]);
    let (_, token) = stack.sign_up_confirmed(reader, PASSWORD, 1).await;
    stack.watch([token.as_str()]);
    let reader_id = as_reader(&stack, Method::GET, "/v1/me", &token)
        .await
        .json()["id"]
        .clone();

    // Two gifts from the signed-in session, each typing another address: one paid as
    // Stripe's page is prefilled, one whose payer Stripe reports with the typed address.
    for (n, paid_as) in [None, Some(typed)].into_iter().enumerate() {
        let started = send(
            stack
                .api()
                .request(Method::POST, "/v1/checkout")
                .bearer_auth(&token)
                .header("idempotency-key", format!("signed-in-gift-{n}"))
                .json(&json!({"interval": "once", "amount_minor": 1200 + n, "currency": "usd", "email": typed})),
        )
        .await;
        let id = checkout_session(&started);
        let at_stripe = stack.sim_get(&format!("/v1/checkout/sessions/{id}")).await;
        assert_eq!(
            at_stripe["customer_email"], reader,
            "Stripe's page has the reader's own address"
        );
        let owner: Option<String> =
            sqlx::query_scalar("SELECT reader_id::text FROM contributions WHERE id = $1::uuid")
                .bind(started.json()["contribution_id"].as_str().expect("an id"))
                .fetch_one(&stack.pool)
                .await
                .expect("the contribution");
        assert_eq!(owner.as_deref(), reader_id.as_str(), "linked at once");
        let body = paid_as.map_or_else(|| json!({}), |email| json!({"email": email}));
        stack
            .sim_control(&format!("/_sim/checkout/{id}/pay"), &body)
            .await;
    }
    // Both receipts go to the reader's own address.
    let receipts = eventually("two receipts", Duration::from_secs(60), || async {
        let receipts: Vec<ReceivedEmail> = mail_to(&stack, reader)
            .into_iter()
            .map(|(m, _)| m)
            .filter(|m| m.subject.starts_with("Your receipt"))
            .collect();
        (receipts.len() == 2).then_some(receipts)
    })
    .await;
    assert!(receipts.iter().any(|m| m.subject.contains("12.00")));
    assert!(receipts.iter().any(|m| m.subject.contains("12.01")));
    assert_eq!(paid_for(&stack, reader).await, 2);

    // An anonymous gift typing one address, paid on Stripe's page with another: the payer's
    // address is the donor's, and gets the receipt (so the typed address is not merely
    // ignored by a receipt path that never sends).
    let anonymous = stack
        .api()
        .post_json(
            "/v1/checkout",
            &json!({"interval": "once", "amount_minor": 1300, "currency": "usd", "email": anonymous_typed}),
        )
        .await;
    let id = checkout_session(&anonymous);
    stack
        .sim_control(
            &format!("/_sim/checkout/{id}/pay"),
            &json!({"email": payer}),
        )
        .await;
    eventually("the payer's receipt", Duration::from_secs(60), || async {
        mail_to(&stack, payer)
            .into_iter()
            .any(|(m, _)| m.subject.starts_with("Your receipt"))
            .then_some(())
    })
    .await;
    assert_eq!(paid_for(&stack, payer).await, 1);

    // Nothing was sent to either typed address, in any header or body; neither is a reader
    // nor stored anywhere.
    for raw in stack.smtp.raw_messages() {
        let raw = raw.to_lowercase();
        assert!(
            !raw.contains(typed) && !raw.contains(anonymous_typed),
            "a typed address in a message"
        );
    }
    assert_eq!(
        stack.count("SELECT count(*) FROM readers").await,
        2,
        "the reader and the payer"
    );
    let dump = stack.pg_dump();
    assert!(!dump.contains(typed), "the typed address is stored");
    assert!(
        !dump.contains(anonymous_typed),
        "the anonymous typed address is stored"
    );
    stack.finish().await;
}
