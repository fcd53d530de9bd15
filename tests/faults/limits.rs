//! Issue #19's limits against the real binary: two `serve` processes on one database share
//! every budget through Postgres; over a budget the answer is 429 with `Retry-After`, alike
//! for an address with an account and one without; no client IP and no address is in the
//! counters' keys.

use reqwest::{Method, StatusCode};
use serde_json::json;

use crate::stack::Stack;

const KNOWN: &str = "limits-known@example.org";
const UNKNOWN: &str = "limits-unknown@example.org";

/// A link request for `email` from `ip`, to server `server`.
async fn ask(
    stack: &Stack,
    server: usize,
    email: &str,
    ip: &str,
) -> kopilka_test_support::ApiResponse {
    kopilka_test_support::send(
        stack.apis[server]
            .request(Method::POST, "/v1/sessions/magic-link")
            .header("x-forwarded-for", ip)
            .json(&json!({"email": email})),
    )
    .await
}

/// Waits until the shared global counter of sign-in link requests says `hits` (each server
/// flushes its counts every 50 ms): the state, not a sleep.
async fn shared(stack: &Stack, hits: i64) {
    let pool = stack.pool.clone();
    kopilka_test_support::eventually(
        &format!("the shared counter at {hits}"),
        std::time::Duration::from_secs(20),
        || async {
            let now: i64 = sqlx::query_scalar(
                "SELECT coalesce(sum(hits), 0)::bigint FROM rate_limits WHERE key = 'sign_in_link:global'",
            )
            .fetch_one(&pool)
            .await
            .ok()?;
            (now == hits).then_some(())
        },
    )
    .await;
}

pub async fn two_servers_share_each_budget_and_refuse_alike_for_every_address() {
    let mut stack = Stack::options()
        .worker_in_serve(true)
        .servers(2)
        .env("KOPILKA__SERVER__CLIENT_IP_HEADER", "x-forwarded-for")
        .env("KOPILKA__SERVER__TRUSTED_PROXIES", "127.0.0.1/32")
        .env("KOPILKA__LIMITS__FLUSH_MS", "50")
        .env("KOPILKA__LIMITS__SIGN_IN_LINK__PER_CLIENT", "4")
        .env("KOPILKA__LIMITS__SIGN_IN_LINK__PER_ADDRESS", "3")
        .env("KOPILKA__LIMITS__SIGN_IN_LINK__GLOBAL", "40")
        .env("KOPILKA__LIMITS__SIGN_IN_LINK__WINDOW_SECS", "3600")
        .start()
        .await;
    stack.watch([
        KNOWN,
        UNKNOWN,
        "203.0.113.",
        "limits-known",
        "limits-unknown",
    ]);
    let up = stack
        .api()
        .post_json(
            "/v1/accounts",
            &json!({"email": KNOWN, "password": "correct horse battery staple"}),
        )
        .await;
    assert_eq!(up.status, StatusCode::ACCEPTED);

    // Per address, across both servers: three, then 429 — for both addresses alike. The
    // refusing server admitted two of the three itself: it counts the other's too. (It
    // learns them from its own last flush, so the check does not race the other's.)
    let mut hits = 0;
    for email in [KNOWN, UNKNOWN] {
        let mut statuses = vec![];
        for (n, server) in [0, 1, 0, 0].into_iter().enumerate() {
            let answer = ask(&stack, server, email, &format!("203.0.113.{}", 10 + n)).await;
            if answer.status == StatusCode::TOO_MANY_REQUESTS {
                assert_eq!(answer.error_code(429), "rate_limited");
                assert!(answer.headers.contains_key("retry-after"));
            } else {
                hits += 1;
                shared(&stack, hits).await;
            }
            statuses.push(answer.status.as_u16());
        }
        assert_eq!(statuses, [202, 202, 202, 429], "{email}");
    }
    // Per client, across both servers: four, then 429 (the refusing server admitted two);
    // another client passes.
    let mut statuses = vec![];
    for (n, server) in [1, 0, 1, 0, 0].into_iter().enumerate() {
        let answer = ask(
            &stack,
            server,
            &format!("client-{n}@example.org"),
            "203.0.113.99",
        )
        .await;
        if answer.status == StatusCode::ACCEPTED {
            hits += 1;
            shared(&stack, hits).await;
        }
        statuses.push(answer.status.as_u16());
    }
    assert_eq!(statuses, [202, 202, 202, 202, 429]);
    assert_eq!(
        ask(&stack, 1, "client-other@example.org", "203.0.113.100")
            .await
            .status,
        StatusCode::ACCEPTED
    );
    // The known address's accepted requests each sent a link (after the sign-up's own).
    stack.link_token(KNOWN, 4).await;
    // The counters' keys name no address and no IP.
    let dump = stack.pg_dump();
    for secret in [KNOWN, UNKNOWN, "203.0.113.99"] {
        let in_counters = dump
            .lines()
            .filter(|line| line.contains("sign_in_link:"))
            .any(|line| line.contains(secret));
        assert!(!in_counters, "{secret} in the counters");
    }
    stack.finish().await;
}
