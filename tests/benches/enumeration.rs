//! Timing enumeration: for sign-up, password sign-in, sign-in links and reminders, are the
//! answers for an address with an account and for an unknown address distinguishable by
//! their latency? Requests alternate between the two kinds (so drift hits both alike); the
//! latencies are compared with a Mann-Whitney U test. The verdict per endpoint: no
//! detectable difference when p ≥ 0.01, or when the medians differ by less than 1 ms (below
//! what the Internet's jitter lets an attacker see).
//!
//! Runs against the real app (release build), Postgres and the Stripe simulator on loopback:
//! `cargo bench -p kopilka-tests --bench enumeration` (`DATABASE_URL` unset: a private
//! Postgres). Prints a table; saves it as `target/bench/enumeration.md`.
#![allow(
    clippy::float_arithmetic,
    clippy::cast_precision_loss,
    clippy::print_stdout,
    reason = "statistics over latencies, printed"
)]

use std::time::{Duration, Instant};

use kopilka_test_support::{ApiClient, TestApp};
use serde_json::json;

/// Samples per kind and endpoint (argon2 makes password endpoints slow).
const SLOW_SAMPLES: usize = 150;
const FAST_SAMPLES: usize = 600;

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let app = TestApp::spawn_with(|s| {
        // Throttling and the link limit would answer differently by design; switched off
        // so the comparison sees only the account lookup.
        s.accounts.free_failures_per_account = u32::MAX / 2;
        s.accounts.free_failures_per_ip = u32::MAX / 2;
        s.accounts.links_per_hour = u32::MAX / 2;
    })
    .await;
    let api = &app.api;
    let known = "known-reader@example.org";
    api.post_json(
        "/v1/accounts",
        &json!({"email": known, "password": "correct horse battery"}),
    )
    .await;

    let mut rows = Vec::new();
    rows.push(
        compare("POST /v1/accounts", SLOW_SAMPLES, |i, existing| {
            let email = if existing {
                known.to_owned()
            } else {
                format!("new-{i}@example.org")
            };
            post(
                api,
                "/v1/accounts",
                json!({"email": email, "password": "another password"}),
            )
        })
        .await,
    );
    rows.push(
        compare(
            "POST /v1/sessions (wrong password)",
            SLOW_SAMPLES,
            |i, existing| {
                let email = if existing {
                    known.to_owned()
                } else {
                    format!("nobody-{i}@example.org")
                };
                post(
                    api,
                    "/v1/sessions",
                    json!({"email": email, "password": "wrong password"}),
                )
            },
        )
        .await,
    );
    rows.push(
        compare(
            "POST /v1/sessions/magic-link",
            FAST_SAMPLES,
            |i, existing| {
                let email = if existing {
                    known.to_owned()
                } else {
                    format!("nobody-{i}@example.org")
                };
                post(api, "/v1/sessions/magic-link", json!({"email": email}))
            },
        )
        .await,
    );
    let on = (time::OffsetDateTime::now_utc().date() + time::Duration::days(10)).to_string();
    rows.push(
        compare("POST /v1/reminders", FAST_SAMPLES, |i, existing| {
            let email = if existing {
                known.to_owned()
            } else {
                format!("someone-{i}@example.org")
            };
            post(
                api,
                "/v1/reminders",
                json!({"email": email, "remind_on": on}),
            )
        })
        .await,
    );

    let cores = std::thread::available_parallelism().map_or(1, std::num::NonZero::get);
    let mut table = format!(
        "Timing enumeration, {} ({cores} cores, loopback)\n\n| endpoint | samples per kind | median existing | median unknown | difference | Mann-Whitney p | verdict |\n|---|---|---|---|---|---|---|\n",
        time::OffsetDateTime::now_utc().date()
    );
    for row in &rows {
        table.push_str(row);
        table.push('\n');
    }
    println!("{table}");
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/bench");
    if std::fs::create_dir_all(&dir).is_ok() {
        let _ = std::fs::write(dir.join("enumeration.md"), &table);
    }
}

async fn post(api: &ApiClient, path: &str, body: serde_json::Value) -> Duration {
    let started = Instant::now();
    let response = api.post_json(path, &body).await;
    let took = started.elapsed();
    assert!(
        response.status.as_u16() < 500,
        "{path}: {}",
        String::from_utf8_lossy(&response.body)
    );
    took
}

/// Alternates `samples` requests of each kind and compares the latencies.
async fn compare<F, Fut>(name: &str, samples: usize, mut request: F) -> String
where
    F: FnMut(usize, bool) -> Fut,
    Fut: std::future::Future<Output = Duration>,
{
    // Warm up both paths (connections, caches, the dummy hash).
    for i in 0..10 {
        request(1_000_000 + i, true).await;
        request(1_000_000 + i, false).await;
    }
    let mut existing = Vec::with_capacity(samples);
    let mut unknown = Vec::with_capacity(samples);
    for i in 0..samples {
        // Alternate which goes first, so neither always follows the other.
        if i % 2 == 0 {
            existing.push(request(i, true).await.as_secs_f64() * 1000.0);
            unknown.push(request(i, false).await.as_secs_f64() * 1000.0);
        } else {
            unknown.push(request(i, false).await.as_secs_f64() * 1000.0);
            existing.push(request(i, true).await.as_secs_f64() * 1000.0);
        }
    }
    let (m_existing, m_unknown) = (median(&mut existing.clone()), median(&mut unknown.clone()));
    let p = mann_whitney_p(&existing, &unknown);
    let difference = m_existing - m_unknown;
    let verdict = if p >= 0.01 || difference.abs() < 1.0 {
        "no detectable difference"
    } else {
        "DISTINGUISHABLE"
    };
    format!(
        "| {name} | {samples} | {m_existing:.2} ms | {m_unknown:.2} ms | {difference:+.2} ms | {p:.3} | {verdict} |"
    )
}

fn median(values: &mut [f64]) -> f64 {
    values.sort_by(f64::total_cmp);
    let n = values.len();
    if n % 2 == 1 {
        values[n / 2]
    } else {
        f64::midpoint(values[n / 2 - 1], values[n / 2])
    }
}

/// Two-sided p-value of the Mann-Whitney U test (normal approximation with tie correction).
fn mann_whitney_p(a: &[f64], b: &[f64]) -> f64 {
    let mut all: Vec<(f64, bool)> = a
        .iter()
        .map(|&x| (x, true))
        .chain(b.iter().map(|&x| (x, false)))
        .collect();
    all.sort_by(|x, y| x.0.total_cmp(&y.0));
    let n = all.len();
    let mut ranks = vec![0.0; n];
    let mut ties = 0.0;
    let mut i = 0;
    while i < n {
        let mut j = i;
        while j + 1 < n && all[j + 1].0 == all[i].0 {
            j += 1;
        }
        let rank = (i + j) as f64 / 2.0 + 1.0;
        for r in &mut ranks[i..=j] {
            *r = rank;
        }
        let t = (j - i + 1) as f64;
        ties += t * t * t - t;
        i = j + 1;
    }
    let (n1, n2) = (a.len() as f64, b.len() as f64);
    let r1: f64 = all
        .iter()
        .zip(&ranks)
        .filter(|((_, first), _)| *first)
        .map(|(_, r)| r)
        .sum();
    let u = r1 - n1 * (n1 + 1.0) / 2.0;
    let mean = n1 * n2 / 2.0;
    let total = n1 + n2;
    let sigma = (n1 * n2 / 12.0 * ((total + 1.0) - ties / (total * (total - 1.0)))).sqrt();
    if sigma == 0.0 {
        return 1.0;
    }
    let z = (u - mean).abs() / sigma;
    2.0 * (1.0 - standard_normal_cdf(z))
}

/// Φ(z), by the Abramowitz–Stegun 7.1.26 approximation of erf (error < 1.5e-7).
fn standard_normal_cdf(z: f64) -> f64 {
    let x = z / std::f64::consts::SQRT_2;
    let t = 1.0 / (1.0 + 0.327_591_1 * x.abs());
    let poly = t
        * (0.254_829_592
            + t * (-0.284_496_736
                + t * (1.421_413_741 + t * (-1.453_152_027 + t * 1.061_405_429))));
    let erf = 1.0 - poly * (-x * x).exp();
    let erf = if x >= 0.0 { erf } else { -erf };
    0.5 * (1.0 + erf)
}
