//! What the world outside does: Postgres restarting, processes killed, the mail server down
//! or refusing, Stripe failing or slow.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use kopilka_store::PrivatePostgres;
use kopilka_test_support::{ApiResponse, eventually, send};
use kopilka_tests::Running;
use reqwest::{Method, StatusCode};
use serde_json::json;

use crate::stack::Stack;

fn now() -> i64 {
    time::OffsetDateTime::now_utc().unix_timestamp()
}

fn paid_checkout(event_id: &str, contribution: uuid::Uuid, amount: i64) -> String {
    json!({"id": event_id, "object": "event", "type": "checkout.session.completed", "created": now(),
           "livemode": false, "api_version": "2026-09-30.endive",
           "data": {"object": {"id": format!("cs_{event_id}"), "object": "checkout.session",
               "client_reference_id": contribution.to_string(), "payment_status": "paid",
               "payment_intent": format!("pi_{event_id}"), "amount_total": amount, "currency": "eur"}}})
    .to_string()
}

async fn checkout(stack: &Stack, key: &str, amount: i64) -> ApiResponse {
    send(
        stack
            .api()
            .request(Method::POST, "/v1/checkout")
            .header("idempotency-key", key)
            .json(&json!({"interval": "once", "amount_minor": amount, "currency": "usd"})),
    )
    .await
}

/// What one request during the restart got: its status, or that the connection failed.
fn outcome(answer: Result<reqwest::Response, reqwest::Error>) -> Option<StatusCode> {
    answer.ok().map(|r| r.status())
}

pub async fn postgres_restarted_mid_webhook_and_mid_checkout_leaves_no_partial_write() {
    let cluster = tokio::task::spawn_blocking(PrivatePostgres::start_throwaway)
        .await
        .expect("joins")
        .expect("a private cluster");
    let url = cluster.url("postgres");
    {
        let pool = sqlx::PgPool::connect(secrecy::ExposeSecret::expose_secret(&url))
            .await
            .expect("connects");
        kopilka_store::migrate(&pool).await.expect("migrates");
        pool.close().await;
    }
    let stack = Arc::new(Stack::options().database(url).start().await);
    let contributions: Vec<uuid::Uuid> = {
        let mut ids = vec![];
        for _ in 0..400 {
            let id = uuid::Uuid::now_v7();
            sqlx::query("INSERT INTO contributions (id, interval, amount_minor, currency) VALUES ($1, 'once', 900, 'eur')")
                .bind(id)
                .execute(&stack.pool)
                .await
                .expect("seeds");
            ids.push(id);
        }
        ids
    };
    stack.pool.close().await;

    // Webhooks and checkouts keep arriving while Postgres stops and starts.
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let load = |kind: &'static str| {
        let stack = Arc::clone(&stack);
        let stop = Arc::clone(&stop);
        let contributions = contributions.clone();
        tokio::spawn(async move {
            let mut answers: Vec<(String, Option<StatusCode>)> = vec![];
            let mut n = 0;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) && n < contributions.len() {
                let answer = if kind == "webhook" {
                    let id = format!("evt_restart_{n}");
                    let body = paid_checkout(&id, contributions[n], 900);
                    let header =
                        kopilka_stripe::sign(crate::stack::WEBHOOK_SECRET, now(), body.as_bytes());
                    let sent = stack
                        .api()
                        .request(Method::POST, "/v1/webhooks/stripe")
                        .header("stripe-signature", header)
                        .header("content-type", "application/json")
                        .body(body)
                        .send()
                        .await;
                    (id, outcome(sent))
                } else {
                    let key = format!("restart-{n}");
                    let sent = stack.api()
                        .request(Method::POST, "/v1/checkout")
                        .header("idempotency-key", &key)
                        .json(&json!({"interval": "once", "amount_minor": 1000 + n, "currency": "usd"}))
                        .send()
                        .await;
                    (key, outcome(sent))
                };
                answers.push(answer);
                n += 1;
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            answers
        })
    };
    let webhooks = load("webhook");
    let checkouts = load("checkout");
    tokio::time::sleep(Duration::from_millis(600)).await;
    let cluster = tokio::task::spawn_blocking(move || {
        cluster.stop();
        // Longer than the pool's acquire timeout, so requests meet the outage.
        std::thread::sleep(Duration::from_secs(4));
        cluster.start().expect("Postgres starts again");
        cluster
    })
    .await
    .expect("joins");
    tokio::time::sleep(Duration::from_millis(1500)).await;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let webhooks = webhooks.await.expect("joins");
    let checkouts = checkouts.await.expect("joins");

    // Every answer was a success or a 5xx; some requests met the outage.
    let mut met_outage = 0;
    for (what, status) in webhooks.iter().chain(&checkouts) {
        let status = status.unwrap_or_else(|| panic!("{what}: the server dropped the connection"));
        assert!(
            status.is_success() || status.is_server_error(),
            "{what}: {status}"
        );
        if status.is_server_error() {
            met_outage += 1;
        }
    }
    assert!(
        met_outage > 0,
        "the restart fell between requests; nothing was tested"
    );

    // The server recovers by itself.
    eventually(
        "readiness after the restart",
        Duration::from_secs(30),
        || async { (stack.api().readyz().await.status == StatusCode::OK).then_some(()) },
    )
    .await;
    let pool = sqlx::postgres::PgPoolOptions::new()
        .max_connections(2)
        .connect(secrecy::ExposeSecret::expose_secret(
            &cluster.url("postgres"),
        ))
        .await
        .expect("connects after the restart");
    // Each acknowledged event is stored with its job; each refused one is not half-stored.
    let stored: HashMap<String, i64> = sqlx::query_as::<_, (String, i64)>(
        "SELECT e.id, (SELECT count(*) FROM jobs j WHERE j.payload->>'event_id' = e.id)
         FROM provider_events e",
    )
    .fetch_all(&pool)
    .await
    .expect("reads events")
    .into_iter()
    .collect();
    for (id, status) in &webhooks {
        if status.is_some_and(|s| s.is_success()) {
            assert!(
                stored.contains_key(id),
                "{id} was acknowledged but not stored"
            );
        }
    }
    for (id, jobs) in &stored {
        assert_eq!(*jobs, 1, "{id} is stored with exactly one job");
    }
    // Stripe retries what was refused; the retry is stored once.
    for (n, (id, status)) in webhooks.iter().enumerate() {
        if status.is_some_and(|s| s.is_server_error()) {
            let answer = stack
                .deliver(0, &paid_checkout(id, contributions[n], 900))
                .await;
            assert_eq!(answer.status, StatusCode::OK, "{id} after the restart");
        }
    }
    // Checkouts: a refused one retried with its key answers; every contribution from a
    // checkout ends with exactly one Stripe session, and none is left half-made.
    for (key, status) in &checkouts {
        if status.is_some_and(|s| s.is_server_error()) {
            let n: i64 = key.trim_start_matches("restart-").parse().expect("n");
            let retried = checkout(&stack, key, 1000 + n).await;
            assert_eq!(
                retried.status,
                StatusCode::CREATED,
                "{key} after the restart"
            );
        }
    }
    let (requests, answered, sessions): (i64, i64, i64) = sqlx::query_as(
        "SELECT count(*), count(*) FILTER (WHERE r.response_status = 201),
                count(DISTINCT c.stripe_checkout_session_id)
         FROM checkout_requests r JOIN contributions c ON c.id = r.contribution_id",
    )
    .fetch_one(&pool)
    .await
    .expect("reads checkouts");
    assert_eq!(
        usize::try_from(requests).ok(),
        Some(checkouts.len()),
        "one record per key"
    );
    assert_eq!(answered, requests, "every key ends answered");
    assert_eq!(sessions, requests, "one session per checkout");
    let at_stripe = stack.sim_get("/v1/checkout/sessions?limit=100").await["data"]
        .as_array()
        .map_or(0, Vec::len);
    assert_eq!(
        i64::try_from(at_stripe).expect("small"),
        sessions.min(100),
        "no session at Stripe without its contribution"
    );
    pool.close().await;
    let stack = Arc::into_inner(stack).expect("the load tasks are done");
    stack.finish().await;
    tokio::task::spawn_blocking(move || drop(cluster))
        .await
        .expect("joins");
}

pub async fn killed_and_racing_workers_do_each_job_once() {
    let mut stack = Stack::options().start().await;
    const EVENTS: i64 = 300;
    for n in 0..EVENTS {
        let id = uuid::Uuid::now_v7();
        sqlx::query("INSERT INTO contributions (id, interval, amount_minor, currency) VALUES ($1, 'once', $2, 'eur')")
            .bind(id)
            .bind(100 + n)
            .execute(&stack.pool)
            .await
            .expect("seeds");
        // As Stripe sends it: the payer's address in customer_details, so a receipt follows.
        let mut event: serde_json::Value =
            serde_json::from_str(&paid_checkout(&format!("evt_race_{n}"), id, 100 + n))
                .expect("JSON");
        event["data"]["object"]["customer_details"] =
            json!({"email": format!("payer-{n}@example.org")});
        let answer = stack.deliver(0, &event.to_string()).await;
        assert_eq!(answer.status, StatusCode::OK);
    }
    stack.watch((0..EVENTS).map(|n| format!("payer-{n}@example.org")));
    // Two workers race for the same jobs; one is killed mid-run.
    let first = Running::start(stack.command(&["worker"]));
    let second = Running::start(stack.command(&["worker"]));
    let pool = stack.pool.clone();
    eventually(
        "the workers to be under way",
        Duration::from_secs(60),
        || async {
            let done: i64 = sqlx::query_scalar("SELECT count(*) FROM jobs WHERE status = 'done'")
                .fetch_one(&pool)
                .await
                .ok()?;
            (done >= 20).then_some(())
        },
    )
    .await;
    stack.keep_log(&first.stderr());
    first.kill().await;
    // A third joins while the second is still running.
    let third = Running::start(stack.command(&["worker"]));
    let deadline = std::time::Instant::now() + Duration::from_secs(120);
    loop {
        let left: i64 = sqlx::query_scalar("SELECT count(*) FROM jobs WHERE status = 'queued'")
            .fetch_one(&pool)
            .await
            .expect("counts");
        if left == 0 {
            break;
        }
        if std::time::Instant::now() > deadline {
            let states: Vec<(String, i64, Option<String>)> = sqlx::query_as(
                "SELECT status, count(*), max(last_error) FROM jobs GROUP BY status",
            )
            .fetch_all(&pool)
            .await
            .expect("reads");
            panic!(
                "{left} jobs still queued: {states:?}\nsecond worker:\n{}\nthird worker:\n{}",
                second
                    .stderr()
                    .lines()
                    .rev()
                    .take(20)
                    .collect::<Vec<_>>()
                    .join("\n"),
                third
                    .stderr()
                    .lines()
                    .rev()
                    .take(20)
                    .collect::<Vec<_>>()
                    .join("\n")
            );
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    stack.keep_log(&second.stderr());
    stack.keep_log(&third.stderr());
    second.kill().await;
    third.kill().await;
    // What the killed worker held is taken over once its lease has run out.
    stack.work_through(10).await;
    assert_eq!(
        stack
            .count("SELECT count(*) FROM jobs WHERE status <> 'done'")
            .await,
        0,
        "every job done"
    );
    assert_eq!(
        stack
            .count("SELECT count(*) FROM ledger_entries WHERE kind = 'payment'")
            .await,
        EVENTS,
        "each payment recorded once"
    );
    // Every receipt went out. A worker killed between the mail server's accept and its
    // commit resends that one with the same Message-ID (so clients show one): at most one
    // per job it held (its lanes).
    let messages = stack.smtp.messages();
    let ids: HashSet<String> = messages
        .iter()
        .map(|m| m.header("Message-ID").unwrap_or_default().to_owned())
        .collect();
    let events = usize::try_from(EVENTS).expect("small");
    assert_eq!(ids.len(), events, "one receipt per payment");
    let recipients: HashSet<&str> = messages.iter().map(|m| m.to.as_str()).collect();
    assert_eq!(recipients.len(), events);
    assert!(
        messages.len() <= events + 4,
        "duplicates only from the killed worker's lanes: {}",
        messages.len()
    );
    assert_eq!(
        stack
            .count("SELECT coalesce(sum(amount_minor), 0)::bigint FROM ledger_entries")
            .await,
        (0..EVENTS).map(|n| 100 + n).sum::<i64>()
    );
    assert_eq!(
        stack
            .count("SELECT count(*) FROM contributions WHERE status = 'paid'")
            .await,
        EVENTS
    );
    stack.finish().await;
}

fn in_days(days: i64) -> time::Date {
    (time::OffsetDateTime::now_utc() + time::Duration::days(days)).date()
}

pub async fn smtp_down_421_and_550_during_reminders_lose_and_double_nothing() {
    let mut stack = Stack::options().start().await;
    let addresses: Vec<String> = (0..30).map(|n| format!("reader{n}@example.org")).collect();
    for address in &addresses {
        let answer = stack
            .api()
            .post_json(
                "/v1/reminders",
                &json!({"email": address, "remind_on": in_days(3).to_string()}),
            )
            .await;
        assert!(answer.status.is_success(), "{:?}", answer.body);
    }
    stack.watch(&addresses);
    let refused = &addresses[7];
    stack.smtp.reject(refused);
    let as_of = |days: i64, hours: i64| {
        (time::OffsetDateTime::now_utc()
            + time::Duration::days(days)
            + time::Duration::hours(hours))
        .format(&time::format_description::well_known::Rfc3339)
        .expect("formats")
    };
    // Down: every reminder waits for its retry; nothing is sent, nothing marked sent.
    stack.smtp.stop().await;
    let down = stack
        .run(&["worker", "--once", "--as-of", &as_of(3, 1)])
        .await;
    assert!(down.stdout.contains(" 0 done"), "{}", down.stdout);
    // Up but answering 421: still waiting.
    stack.smtp.resume().await;
    stack.smtp.fail_transiently(true);
    let busy = stack
        .run(&["worker", "--once", "--as-of", &as_of(3, 2)])
        .await;
    assert!(busy.stdout.contains(" 0 done"), "{}", busy.stdout);
    assert_eq!(stack.smtp.count(), 0);
    assert_eq!(
        stack
            .count("SELECT count(*) FROM reminders WHERE status = 'pending'")
            .await,
        30
    );
    // Back, with one address refused for good (550).
    stack.smtp.fail_transiently(false);
    for hours in [4, 8, 16] {
        stack
            .run(&["worker", "--once", "--as-of", &as_of(3, hours)])
            .await;
    }
    let delivered: Vec<String> = stack.smtp.messages().iter().map(|m| m.to.clone()).collect();
    let distinct: HashSet<&String> = delivered.iter().collect();
    assert_eq!(
        (delivered.len(), distinct.len()),
        (29, 29),
        "each once: {delivered:?}"
    );
    assert!(!delivered.iter().any(|to| to.contains(refused.as_str())));
    assert_eq!(
        stack
            .count("SELECT count(*) FROM reminders WHERE status = 'sent'")
            .await,
        29
    );
    assert_eq!(
        stack
            .count("SELECT count(*) FROM reminders WHERE status = 'suppressed' AND reason = 'mail_suppressed'")
            .await,
        1
    );
    // Later runs send nothing more.
    stack
        .run(&["worker", "--once", "--as-of", &as_of(5, 0)])
        .await;
    assert_eq!(stack.smtp.count(), 29);
    stack.finish().await;
}

pub async fn stripe_failing_or_slow_at_checkout_is_a_clear_5xx_and_retries_are_idempotent() {
    let stack = Stack::options()
        .env("KOPILKA__STRIPE__TIMEOUT_SECS", "2")
        .start()
        .await;
    // Stripe answers 500: a 503 the widget can retry; no session anywhere.
    stack
        .sim_control("/_sim/faults", &json!({"count": 5, "status": 500}))
        .await;
    let failed = checkout(&stack, "fault-500", 1500).await;
    assert_eq!(failed.error_code(503), "payment_provider_unavailable");
    assert!(failed.headers.get("retry-after").is_some());
    stack
        .sim_control("/_sim/faults", &json!({"count": 0}))
        .await;
    assert_eq!(sessions(&stack).await, 0);
    assert_eq!(
        stack
            .count(
                "SELECT count(*) FROM contributions WHERE stripe_checkout_session_id IS NOT NULL"
            )
            .await,
        0
    );
    let retried = checkout(&stack, "fault-500", 1500).await;
    assert_eq!(retried.status, StatusCode::CREATED, "{:?}", retried.body);

    // Stripe slow past our timeout: it made the session, we never heard. The retry with
    // the same key gets that same session, not a second one.
    stack
        .sim_control("/_sim/faults", &json!({"count": 1, "delay_ms": 5000}))
        .await;
    let slow = checkout(&stack, "fault-slow", 2500).await;
    assert_eq!(slow.error_code(503), "payment_provider_unavailable");
    assert_eq!(
        sessions(&stack).await,
        2,
        "Stripe made the slow one's session"
    );
    let again = checkout(&stack, "fault-slow", 2500).await;
    assert_eq!(again.status, StatusCode::CREATED, "{:?}", again.body);
    assert_eq!(sessions(&stack).await, 2, "the retry reused it");
    // Replaying the answered key returns the same answer.
    let replay = checkout(&stack, "fault-slow", 2500).await;
    assert_eq!(replay.json(), again.json());
    assert_eq!(
        stack.count("SELECT count(*) FROM contributions").await,
        2,
        "one contribution per key"
    );
    assert_eq!(
        stack
            .count("SELECT count(*) FROM contributions WHERE stripe_checkout_session_id IS NULL")
            .await,
        0,
        "none left without its session"
    );
    // A different body under a used key is refused, creating nothing.
    let misuse = checkout(&stack, "fault-slow", 9999).await;
    assert_eq!(misuse.error_code(409), "idempotency_key_reused");
    assert_eq!(stack.count("SELECT count(*) FROM contributions").await, 2);
    stack.finish().await;
}

/// How many checkout sessions the simulator holds.
async fn sessions(stack: &Stack) -> usize {
    stack.sim_get("/v1/checkout/sessions?limit=100").await["data"]
        .as_array()
        .map_or(0, Vec::len)
}
