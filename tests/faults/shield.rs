//! Issue #19, item 2, against the real binary: a card tester declined card after card on
//! two `serve` processes is blocked by both (the state is shared through Postgres), checkout
//! goes under attack (no challenge configured: the minimum rises, nothing else), and the
//! operator's `admin abuse status|unblock|block` see and steer it, each run audited. No IP
//! and no card fingerprint is kept, in the database or the logs.

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::stack::Stack;

const TESTER: &str = "203.0.113.9";

async fn checkout(
    stack: &Stack,
    server: usize,
    ip: &str,
    amount: i64,
) -> kopilka_test_support::ApiResponse {
    kopilka_test_support::send(
        stack.apis[server]
            .request(Method::POST, "/v1/checkout")
            .header("x-forwarded-for", ip)
            .json(&json!({"interval": "once", "amount_minor": amount, "currency": "usd"})),
    )
    .await
}

/// Waits until both servers answer a checkout from `ip` with `status` (each re-reads the
/// shield every 100 ms): the state, not a sleep.
async fn both_answer(stack: &Stack, ip: &str, amount: i64, status: u16) {
    kopilka_test_support::eventually(
        &format!("both servers answering {status} to {ip}"),
        std::time::Duration::from_secs(20),
        || async {
            for server in 0..2 {
                if checkout(stack, server, ip, amount).await.status.as_u16() != status {
                    return None;
                }
            }
            Some(())
        },
    )
    .await;
}

async fn status(stack: &mut Stack) -> Value {
    let out = stack
        .run(&[
            "admin",
            "abuse",
            "status",
            "--format",
            "json",
            "--actor",
            "fault-suite",
        ])
        .await;
    assert!(out.status.success(), "{}", out.stderr);
    serde_json::from_str(out.stdout.trim()).expect("one JSON document")
}

pub async fn a_card_tester_on_two_servers_is_blocked_by_both_and_the_operator_steers_the_shield() {
    let mut stack = Stack::options()
        .worker_in_serve(true)
        .servers(2)
        .env("KOPILKA__SERVER__CLIENT_IP_HEADER", "x-forwarded-for")
        .env("KOPILKA__SERVER__TRUSTED_PROXIES", "127.0.0.1/32")
        .env("KOPILKA__ABUSE__CLIENT_FAILURES", "3")
        .env("KOPILKA__ABUSE__ATTACK_FAILURES", "3")
        .env("KOPILKA__ABUSE__ADDRESS_FAILURES", "1000")
        .env("KOPILKA__ABUSE__CARD_FAILURES", "1000")
        .env("KOPILKA__ABUSE__REFRESH_MS", "100")
        .start()
        .await;
    stack.watch([TESTER, "198.51.100.7"]);
    stack.deliver_webhooks_to(0).await;

    // Three declined cards, alternately through each server.
    let mut fingerprints = vec![];
    for n in 0..3_usize {
        let started = checkout(&stack, n % 2, TESTER, 100).await;
        assert_eq!(started.status, StatusCode::CREATED);
        let session = started.json()["checkout_url"]
            .as_str()
            .unwrap()
            .rsplit('/')
            .next()
            .unwrap()
            .to_owned();
        stack
            .sim_control(
                &format!("/_sim/checkout/{session}/decline"),
                &json!({"card": format!("40000000000{:05}", 7 + n)}),
            )
            .await;
        let want = i64::try_from(n + 1).unwrap();
        kopilka_test_support::eventually(
            "the decline counted",
            std::time::Duration::from_secs(20),
            || async {
                (stack.count("SELECT count(*) FROM payment_failures").await == want).then_some(())
            },
        )
        .await;
    }
    // Both servers refuse the tester; checkout is under attack: with no challenge
    // configured, another client needs no challenge but the raised minimum (5 × $1).
    both_answer(&stack, TESTER, 5000, 403).await;
    let blocked = checkout(&stack, 1, TESTER, 5000).await;
    assert_eq!(blocked.error_code(403), "blocked");
    assert!(blocked.headers.contains_key("retry-after"));
    both_answer(&stack, "198.51.100.7", 300, 422).await;
    assert_eq!(
        checkout(&stack, 0, "198.51.100.7", 300)
            .await
            .error_code(422),
        "amount_below_minimum"
    );
    assert_eq!(
        checkout(&stack, 1, "198.51.100.7", 500).await.status,
        StatusCode::CREATED
    );

    let shown = status(&mut stack).await;
    assert_eq!(shown["under_attack"], json!(true), "{shown}");
    assert_eq!(shown["why"], json!("failures"));
    assert_eq!(shown["failures"], json!(3));
    assert_eq!(shown["challenge"], Value::Null);
    let blocks = shown["blocks"].as_array().unwrap();
    assert_eq!(blocks.len(), 1, "{shown}");
    assert_eq!(blocks[0]["kind"], json!("client"));
    assert_eq!(blocks[0]["reason"], json!("client_failures"));
    assert_eq!(
        blocks[0]["key"].as_str().unwrap().len(),
        64,
        "a keyed HMAC, not the IP"
    );

    // The operator lifts the block by IP, and declares the attack over.
    let out = stack
        .run(&[
            "admin",
            "abuse",
            "unblock",
            "--ip",
            TESTER,
            "--format",
            "json",
            "--actor",
            "fault-suite",
        ])
        .await;
    assert!(out.status.success(), "{}", out.stderr);
    let lifted: Value = serde_json::from_str(out.stdout.trim()).unwrap();
    assert_eq!(lifted["was_blocked"], json!(true));
    let out = stack
        .run(&[
            "admin",
            "abuse",
            "unblock",
            "--under-attack",
            "--actor",
            "fault-suite",
        ])
        .await;
    assert!(out.status.success(), "{}", out.stderr);
    both_answer(&stack, TESTER, 300, 201).await;
    let calm = status(&mut stack).await;
    assert_eq!(calm["under_attack"], json!(false), "{calm}");
    assert_eq!(calm["blocks"], json!([]));

    // The operator holds checkout under attack: the raised minimum is back at once.
    let out = stack
        .run(&[
            "admin",
            "abuse",
            "block",
            "--under-attack",
            "--for",
            "1h",
            "--actor",
            "fault-suite",
        ])
        .await;
    assert!(out.status.success(), "{}", out.stderr);
    both_answer(&stack, "198.51.100.7", 300, 422).await;
    assert_eq!(status(&mut stack).await["why"], json!("forced"));
    // A malformed key is refused, and nothing is audited for it.
    let out = stack
        .run(&[
            "admin",
            "abuse",
            "block",
            "--key",
            "client:nothex",
            "--actor",
            "fault-suite",
        ])
        .await;
    assert!(!out.status.success());

    let audited: Vec<String> = sqlx::query_scalar(
        "SELECT action FROM audit_log WHERE actor = 'admin:fault-suite' ORDER BY id",
    )
    .fetch_all(&stack.pool)
    .await
    .unwrap();
    assert_eq!(
        audited,
        [
            "abuse.status",
            "abuse.unblock",
            "abuse.calm",
            "abuse.status",
            "abuse.attack",
            "abuse.status"
        ]
    );

    // Stripe's fingerprints of the tried cards are nowhere; nor is the tester's IP.
    let attempts: Vec<String> = sqlx::query_scalar("SELECT attempt FROM payment_failures")
        .fetch_all(&stack.pool)
        .await
        .unwrap();
    for attempt in attempts {
        let charge = stack.sim_get(&format!("/v1/charges/{attempt}")).await;
        fingerprints.push(
            charge["payment_method_details"]["card"]["fingerprint"]
                .as_str()
                .unwrap()
                .to_owned(),
        );
    }
    assert_eq!(fingerprints.len(), 3);
    let dump = stack.pg_dump();
    for secret in fingerprints.iter().map(String::as_str).chain([TESTER]) {
        assert!(!dump.contains(secret), "{secret} is in the database");
    }
    stack.watch(fingerprints);
    stack.finish().await;
}
