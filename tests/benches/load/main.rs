//! `scripts/bench`: Kopilka's hot paths against baselines measured in the same run, on the
//! same machine, with the same load generator, all on loopback. Every speed goal is a ratio
//! (the machine is shared and noisy); each row prints its raw figures, its ratio, its goal
//! and a verdict. The table is printed and saved as `target/bench/latest.md`.
//!
//! Runs the release `kopilka` binary (API, simulator, worker, admin) against a private,
//! durable Postgres (fsync on) and the aiosmtpd SMTP sink; `wrk` and `pgbench` load it.
#![allow(
    clippy::float_arithmetic,
    clippy::cast_precision_loss,
    clippy::cast_possible_truncation,
    clippy::cast_sign_loss,
    clippy::print_stdout,
    unsafe_code,
    reason = "a benchmark: ratios of measured figures, printed; SIGINT to its own wrk"
)]

mod experiment;
mod flood;
mod rig;
mod wrk;

use std::fmt::Write as _;
use std::time::{Duration, Instant};

use futures_util::StreamExt as _;
use kopilka_paywall::{KeyRecord, Keyring, SupporterClaims};
use rig::Rig;
use secrecy::ExposeSecret as _;
use serde_json::{Value, json};
use wrk::Load;

/// One line of the table.
struct Row {
    measure: &'static str,
    result: String,
    baseline: String,
    ratio: String,
    goal: &'static str,
    meets: bool,
}

/// How long each offer run lasts, and how many rounds alternate baseline and offer.
const OFFER_RUN: Duration = Duration::from_secs(3);
const OFFER_ROUNDS: usize = 6;
const OFFER_CONNECTIONS: u32 = 32;
const SUPPORTER_TOKENS: usize = 1_000;
const VERIFICATIONS: usize = 20_000;
/// The login storm: each idle or storm run of the offer, and how many pairs.
const STORM_RUN: Duration = Duration::from_secs(4);
const STORM_ROUNDS: usize = 4;
const WEBHOOK_EVENTS: usize = 20_000;
const DUE_REMINDERS: usize = 10_000;
const PLAIN_CLIENT_MESSAGES: usize = 1_000;

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let started = time::OffsetDateTime::now_utc();
    let rig = Rig::start().await;
    let pid = rig.server_pid();
    eprintln!("bench: the API is process {pid}");
    let mut rows = Vec::new();

    // Idle: started, keys loaded, nothing served yet.
    rig.http
        .get(format!("{}/.well-known/jwks.json", rig.base))
        .send()
        .await
        .expect("the keys load");
    tokio::time::sleep(Duration::from_millis(500)).await;
    let (idle_kib, _) = rig::memory_kib(pid);

    let records = signing_keys(&rig).await;
    let mut loaded_kib = 0;
    if wanted("offer") {
        let tokens = wrk::data_file("tokens.txt", supporter_tokens(&records, SUPPORTER_TOKENS));
        eprintln!("bench: offer against the bare handler ({OFFER_ROUNDS} rounds)");
        rows.extend(offer_rows(&rig, &tokens).await);
        loaded_kib = rig::memory_kib(pid).1;
    }
    if wanted("experiment") {
        eprintln!("bench: the offer with a three-variant experiment running");
        rows.extend(experiment::experiment_rows(&rig).await);
    }
    let due = format!("{DUE_REMINDERS} due reminders against a plain SMTP client");
    for (name, what) in [
        ("tokens", "token verifications on one core"),
        ("webhooks", "webhook ingest against pgbench"),
        ("reminders", due.as_str()),
        (
            "reconcile",
            "admin reconcile over 10 000 and 100 000 objects",
        ),
        ("storm", "login storm"),
        (
            "flood",
            "a flood of junk writes against the well-behaved client",
        ),
    ] {
        if !wanted(name) {
            continue;
        }
        eprintln!("bench: {what}");
        if name == "flood" {
            rows.extend(flood::flood_rows(&rig).await);
            continue;
        }
        rows.push(match name {
            "tokens" => token_row(records.clone()).await,
            "webhooks" => webhook_row(&rig).await,
            "reminders" => reminder_row(&rig).await,
            "reconcile" => reconcile_row(&rig).await,
            _ => login_storm_row(&rig).await,
        });
    }
    if wanted("offer") {
        rows.push(Row {
            measure: "server RSS idle / under the offer load",
            result: format!("{} / {}", mib(idle_kib), mib(loaded_kib)),
            baseline: "—".into(),
            ratio: "—".into(),
            goal: "< 30 MiB / < 120 MiB",
            meets: idle_kib < 30 * 1024 && loaded_kib < 120 * 1024,
        });
    }
    rig.stop().await;
    wrk::clean_up();
    report(started, &rows);
}

/// Whether row group `name` runs: all of them, unless `KOPILKA_BENCH_ONLY` lists some
/// (offer, experiment, tokens, webhooks, reminders, reconcile, storm, flood), e.g. while profiling one.
fn wanted(name: &str) -> bool {
    std::env::var("KOPILKA_BENCH_ONLY")
        .map_or(true, |only| only.split(',').any(|n| n.trim() == name))
}

fn mib(kib: u64) -> String {
    format!("{:.1} MiB", kib as f64 / 1024.0)
}

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    let middle = values.len() / 2;
    if values.len().is_multiple_of(2) {
        (values[middle - 1] + values[middle]) / 2.0
    } else {
        values[middle]
    }
}

fn verdict(meets: bool) -> &'static str {
    if meets { "meets" } else { "**misses**" }
}

fn report(started: time::OffsetDateTime, rows: &[Row]) {
    let cores = std::thread::available_parallelism().map_or(1, std::num::NonZero::get);
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|info| {
            info.lines()
                .find_map(|l| l.strip_prefix("model name"))
                .map(|rest| rest.trim_start_matches([' ', '\t', ':']).to_owned())
        })
        .unwrap_or_else(|| "unknown CPU".into());
    let date = started
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default();
    let mut table = format!(
        "Load benchmark, {date}: {cores} cores ({cpu}), loopback, release build, durable Postgres.\n\n\
         | measure | result | baseline (same run) | ratio | goal | verdict |\n|---|---|---|---|---|---|\n"
    );
    for row in rows {
        let _ = writeln!(
            table,
            "| {} | {} | {} | {} | {} | {} |",
            row.measure,
            row.result,
            row.baseline,
            row.ratio,
            row.goal,
            verdict(row.meets)
        );
    }
    let met = rows.iter().filter(|r| r.meets).count();
    let _ = writeln!(table, "\n{met} of {} goals met.", rows.len());
    println!("\n{table}");
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/bench");
    std::fs::create_dir_all(&dir).expect("target/bench");
    std::fs::write(dir.join("latest.md"), &table).expect("the table is saved");
    println!("saved to target/bench/latest.md");
}

async fn signing_keys(rig: &Rig) -> Vec<KeyRecord> {
    let rows: Vec<(String, i64, Option<i64>)> = sqlx::query_as(
        "SELECT kid, extract(epoch FROM created_at)::bigint, extract(epoch FROM retires_at)::bigint
         FROM signing_keys ORDER BY created_at",
    )
    .fetch_all(&rig.pool)
    .await
    .expect("the signing keys");
    assert!(!rows.is_empty(), "the API made a signing key");
    rows.into_iter()
        .map(|(kid, created_at, retires_at)| KeyRecord {
            kid,
            created_at,
            retires_at,
        })
        .collect()
}

fn now() -> i64 {
    time::OffsetDateTime::now_utc().unix_timestamp()
}

/// The API's keyring, as the API derives it.
fn keyring(records: &[KeyRecord]) -> Keyring {
    Keyring::new(
        rig::SIGNING_SECRET.as_bytes(),
        records,
        now(),
        rig::PUBLIC_URL,
        rig::PUBLIC_URL,
    )
}

/// `n` distinct supporter tokens, as `GET /v1/entitlements` would issue them.
fn supporter_tokens(records: &[KeyRecord], n: usize) -> Vec<String> {
    let ring = keyring(records);
    let now = now();
    (0..n)
        .map(|i| {
            ring.sign(&SupporterClaims {
                sub: uuid::Uuid::from_u128(0x0190_a8e2_0000_7000_8000_0000_0000_0000 + i as u128)
                    .to_string(),
                supporter: true,
                tier: Some("month".into()),
                interval: Some("month".into()),
                paid_through: Some(now + 86_400 * 20),
                hide_asks_until: Some(now + 86_400 * 20),
                iss: rig::PUBLIC_URL.into(),
                aud: rig::PUBLIC_URL.into(),
                iat: now,
                exp: now + 86_400,
            })
            .expect("signs")
        })
        .collect()
}

/// Statements the API's database ran since the last reset.
async fn statements(rig: &Rig) -> (i64, Vec<String>) {
    let rows: Vec<(String, i64)> = sqlx::query_as(
        "SELECT s.query, s.calls FROM pg_stat_statements s JOIN pg_database d ON d.oid = s.dbid
         WHERE d.datname = current_database() ORDER BY s.calls DESC",
    )
    .fetch_all(&rig.pool)
    .await
    .expect("pg_stat_statements");
    let mine = |q: &str| q.contains("pg_stat_statements");
    let total = rows.iter().filter(|(q, _)| !mine(q)).map(|(_, c)| c).sum();
    let texts = rows
        .into_iter()
        .filter(|(q, _)| !mine(q))
        .map(|(q, c)| {
            format!(
                "{c}× {}",
                q.split_whitespace().collect::<Vec<_>>().join(" ")
            )
        })
        .collect();
    (total, texts)
}

/// With `KOPILKA_BENCH_SQL` set, prints the statements that took the most time since the
/// last reset (for profiling), then resets the statistics.
async fn top_statements(rig: &Rig, during: &str) {
    if std::env::var_os("KOPILKA_BENCH_SQL").is_some() {
        let rows: Vec<(String, i64, f64)> = sqlx::query_as(
            "SELECT s.query, s.calls, s.total_exec_time FROM pg_stat_statements s
             JOIN pg_database d ON d.oid = s.dbid WHERE d.datname = current_database()
             ORDER BY s.total_exec_time DESC LIMIT 8",
        )
        .fetch_all(&rig.pool)
        .await
        .expect("pg_stat_statements");
        eprintln!("bench: the slowest statements during {during}:");
        for (query, calls, ms) in rows {
            let query = query.split_whitespace().collect::<Vec<_>>().join(" ");
            eprintln!(
                "  {ms:>9.0} ms {calls:>7}× {}",
                query.chars().take(160).collect::<String>()
            );
        }
    }
    sqlx::query("SELECT pg_stat_statements_reset()")
        .execute(&rig.pool)
        .await
        .expect("statistics reset");
}

/// Runs each of `loads` once a round for `rounds` rounds, all back to back, in turn forwards
/// and backwards, so a drift of the machine's speed hits all alike (ratios are then taken
/// within a round); the runs of each load, in order.
async fn alternating<const N: usize>(rounds: usize, loads: [Load<'_>; N]) -> [Vec<wrk::Run>; N] {
    let mut runs: [Vec<wrk::Run>; N] = std::array::from_fn(|_| Vec::new());
    for round in 0..rounds {
        let order: Vec<usize> = if round.is_multiple_of(2) {
            (0..N).collect()
        } else {
            (0..N).rev().collect()
        };
        for which in order {
            runs[which].push(wrk::run(&loads[which]).await);
        }
    }
    runs
}

/// The bare handler, `path`, and `path` with a header from a file (`header_args`, see
/// [`wrk::HEADER_FROM_FILE`]): each warmed up for 2 s (connections, caches, tokens
/// remembered), the statement statistics reset, then `rounds` alternating runs of `run`.
/// Returns the runs of each, and when the rounds began.
async fn offer_rounds(
    rig: &Rig,
    path: &str,
    header_args: Vec<String>,
    rounds: usize,
    run: Duration,
    connections: u32,
) -> ([Vec<wrk::Run>; 3], Instant) {
    let load = |path: &str, script, args: Vec<String>, duration| Load {
        url: format!("{}{path}", rig.base),
        script,
        args,
        threads: 1,
        connections,
        duration,
    };
    let loads = |duration| {
        [
            load("/_baseline", wrk::GET, vec![], duration),
            load(path, wrk::GET, vec![], duration),
            load(path, wrk::HEADER_FROM_FILE, header_args.clone(), duration),
        ]
    };
    for warm_up in loads(Duration::from_secs(2)) {
        wrk::run(&warm_up).await;
    }
    sqlx::query("SELECT pg_stat_statements_reset()")
        .execute(&rig.pool)
        .await
        .expect("statistics reset");
    let started = Instant::now();
    (alternating(rounds, loads(run)).await, started)
}

/// Rows 1–3: the offer (anonymous, and with supporter tokens in rotation) against the bare
/// handler, in rounds; each ratio is the median of the rounds' own ratios (raw figures: the
/// medians of the runs). Then the statements they issued.
async fn offer_rows(rig: &Rig, tokens: &std::path::Path) -> Vec<Row> {
    // A reader's country, as the site passes it: the rails are chosen per request.
    let offer = "/v1/offer?currency=usd&country=DE";
    let token_args = vec![
        tokens.display().to_string(),
        "Authorization".into(),
        "Bearer ".into(),
    ];
    let ([bare, anonymous, supporters], rounds_started) = offer_rounds(
        rig,
        offer,
        token_args,
        OFFER_ROUNDS,
        OFFER_RUN,
        OFFER_CONNECTIONS,
    )
    .await;
    let (issued, texts) = statements(rig).await;
    // The background refreshers (the card-testing shield's state, once a second as in
    // production) run whether or not anyone reads the offer: their statements in as long
    // again with no load are the baseline, and only statements beyond it are the offer's.
    let rounds_took = rounds_started.elapsed();
    sqlx::query("SELECT pg_stat_statements_reset()")
        .execute(&rig.pool)
        .await
        .expect("statistics reset");
    tokio::time::sleep(rounds_took).await;
    let (idle_issued, _) = statements(rig).await;
    // One refresh tick (two statements) either side is the clocks' jitter.
    let beyond = issued.saturating_sub(idle_issued);
    let failed: u64 = [&bare, &anonymous, &supporters]
        .iter()
        .flat_map(|runs| runs.iter().map(|r| r.failed))
        .sum();
    assert_eq!(failed, 0, "every offer and baseline request answered 2xx");
    let offers: u64 = anonymous
        .iter()
        .chain(&supporters)
        .map(|r| r.requests)
        .sum();
    let rps = |runs: &[wrk::Run]| median(runs.iter().map(|r| r.rps).collect());
    let p99 = |runs: &[wrk::Run]| median(runs.iter().map(|r| r.p99_ms).collect());
    let (bare_rps, bare_p99) = (rps(&bare), p99(&bare));
    let (anon_rps, anon_p99) = (rps(&anonymous), p99(&anonymous));
    let token_rps = rps(&supporters);
    let within_rounds = |runs: &[wrk::Run], figure: fn(&wrk::Run) -> f64| {
        median(
            runs.iter()
                .zip(&bare)
                .map(|(run, base)| figure(run) / figure(base))
                .collect(),
        )
    };
    let anon_ratio = within_rounds(&anonymous, |r| r.rps);
    let anon_p99_ratio = within_rounds(&anonymous, |r| r.p99_ms);
    let token_ratio = within_rounds(&supporters, |r| r.rps);
    let per_10k = beyond as f64 * 10_000.0 / offers.max(1) as f64;
    if beyond > 2 {
        eprintln!(
            "bench: statements during the offer runs:\n  {}",
            texts.join("\n  ")
        );
    }
    vec![
        Row {
            measure: "`GET /v1/offer` (card and crypto rails, passes), anonymous: req/s and p99",
            result: format!("{anon_rps:.0} req/s, p99 {anon_p99:.2} ms"),
            baseline: format!("bare handler: {bare_rps:.0} req/s, p99 {bare_p99:.2} ms"),
            ratio: format!("{anon_ratio:.2}× throughput, {anon_p99_ratio:.2}× p99"),
            goal: "≥ 0.9× throughput, p99 ≤ 1.5×",
            meets: anon_ratio >= 0.9 && anon_p99_ratio <= 1.5,
        },
        Row {
            measure: "`GET /v1/offer`, 1 000 supporter tokens in rotation: req/s",
            result: format!("{token_rps:.0} req/s"),
            baseline: format!("bare handler: {bare_rps:.0} req/s"),
            ratio: format!("{token_ratio:.2}×"),
            goal: "≥ 0.6×",
            meets: token_ratio >= 0.6,
        },
        Row {
            measure: "SQL statements per 10 000 offer requests (beyond the background refreshes)",
            result: format!("{per_10k:.2} ({issued} during {offers} offers)"),
            baseline: format!("idle as long: {idle_issued} (background refreshes)"),
            ratio: format!("{beyond} beyond"),
            goal: "0 (± one refresh)",
            meets: beyond <= 2,
        },
    ]
}

/// Row 4: supporter tokens verified from cold (each distinct, so each signature is checked)
/// on one thread.
async fn token_row(records: Vec<KeyRecord>) -> Row {
    let per_sec = tokio::task::spawn_blocking(move || {
        let tokens = supporter_tokens(&records, VERIFICATIONS);
        let ring = keyring(&records);
        let now = now();
        let started = Instant::now();
        for token in &tokens {
            assert!(ring.verify(token, now).is_ok(), "a good token verifies");
        }
        VERIFICATIONS as f64 / started.elapsed().as_secs_f64()
    })
    .await
    .expect("joins");
    Row {
        measure: "supporter-token verifications/s, one core (each token new)",
        result: format!("{per_sec:.0}/s"),
        baseline: "—".into(),
        ratio: "—".into(),
        goal: "≥ 20 000/s",
        meets: per_sec >= 20_000.0,
    }
}

/// One seeded payment's charge, as the simulator serves it (a real Stripe-shaped object).
async fn seeded_payments(rig: &Rig, count: usize) -> Vec<String> {
    let answer: Value = rig
        .http
        .post(format!("{}/_sim/seed/payments", rig.sim))
        .json(&json!({"count": count, "amount": 1500, "currency": "usd"}))
        .send()
        .await
        .expect("the simulator answers")
        .json()
        .await
        .expect("JSON");
    let ids: Vec<String> = answer["payment_intents"]
        .as_array()
        .expect("the seeded ids")
        .iter()
        .filter_map(|id| id.as_str().map(str::to_owned))
        .collect();
    // The ledger holds each, as webhooks would have recorded them: no drift.
    for chunk in ids.chunks(10_000) {
        sqlx::query(
            "INSERT INTO ledger_entries (id, kind, stripe_id, payment_intent_id, amount_minor, currency, occurred_at)
             SELECT gen_random_uuid(), 'payment', pi, pi, 1500, 'usd', now() FROM unnest($1::text[]) AS pi",
        )
        .bind(chunk)
        .execute(&rig.pool)
        .await
        .expect("ledger rows");
    }
    ids
}

fn pgbench() -> std::path::PathBuf {
    let from_env =
        std::env::var_os("KOPILKA_PG_BIN").map(|d| std::path::PathBuf::from(d).join("pgbench"));
    let mut installed: Vec<_> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path().join("bin/pgbench"))
        .filter(|p| p.is_file())
        .collect();
    installed.sort();
    from_env
        .filter(|p| p.is_file())
        .or_else(|| installed.pop())
        .unwrap_or_else(|| "pgbench".into())
}

/// Flushes what earlier rows wrote, so no checkpoint lands inside the next measurement.
async fn checkpoint(rig: &Rig) {
    sqlx::query("CHECKPOINT")
        .execute(&rig.pool)
        .await
        .expect("a checkpoint");
}

/// Transactions per second of pgbench running `script` over `connections` for 5 s.
async fn pgbench_tps(rig: &Rig, script: &std::path::Path, connections: u32) -> f64 {
    checkpoint(rig).await;
    let output = tokio::process::Command::new(pgbench())
        .args(["-n", "-M", "prepared", "-j", "1", "-T", "5"])
        .arg(format!("-c{connections}"))
        .arg("-f")
        .arg(script)
        .arg(rig.db_url().expose_secret())
        .output()
        .await
        .expect("pgbench runs");
    let text = String::from_utf8_lossy(&output.stdout);
    let failed = text
        .lines()
        .any(|l| l.starts_with("number of failed transactions: ") && !l.contains(": 0 "));
    let tps = text
        .lines()
        .find_map(|l| l.strip_prefix("tps = "))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .filter(|_| !failed);
    tps.unwrap_or_else(|| {
        panic!(
            "pgbench failed: {text}{}",
            String::from_utf8_lossy(&output.stderr)
        )
    })
}

/// Row 5: signed webhook events (10 % sent twice) against pgbench inserting a row of the
/// same JSON into a plain table, with the same connections and durability.
async fn webhook_row(rig: &Rig) -> Row {
    // Nothing else has been charged yet: the newest charge is this one.
    seeded_payments(rig, 1).await;
    let charges: Value = rig
        .http
        .get(format!("{}/v1/charges?limit=1", rig.sim))
        .bearer_auth("sk_test_kopilka_bench")
        .send()
        .await
        .expect("the simulator answers")
        .json()
        .await
        .expect("JSON");
    let charge = charges["data"][0].clone();
    assert!(charge.is_object(), "the seeded charge: {charges}");
    let event = |id: &str| {
        json!({
            "id": id, "object": "event", "api_version": "2025-08-27.basil", "created": now(),
            "data": {"object": charge}, "livemode": false, "pending_webhooks": 1,
            "request": {"id": null, "idempotency_key": null}, "type": "charge.succeeded",
        })
    };
    let connections = 16;

    // Baseline: the same JSON, pretty-printed so no `:` is taken for a pgbench variable.
    let body = serde_json::to_string_pretty(&event("evt_baseline")).expect("JSON");
    let bytes = body.len();
    sqlx::query("CREATE TABLE bench_inbox (id text PRIMARY KEY, payload jsonb NOT NULL, received_at timestamptz NOT NULL DEFAULT now())")
        .execute(&rig.pool)
        .await
        .expect("the baseline's table");
    let literal = body.replace('\'', "''");
    let id = "('evt_pgb_' || CAST(:client_id AS text) || '_' || CAST(:n AS text))";
    let single = wrk::data_file(
        "insert.sql",
        [
            r"\set n random(1, 2000000000)".to_owned(),
            format!(
                "INSERT INTO bench_inbox (id, payload) VALUES ({id}, CAST('{literal}' AS jsonb)) ON CONFLICT DO NOTHING;"
            ),
        ],
    );
    let tps = pgbench_tps(rig, &single, connections).await;
    // Kopilka: every tenth request repeats an earlier event; the last one is new.
    let now = now();
    let lines: Vec<String> = (0..WEBHOOK_EVENTS)
        .map(|i| {
            let body = event(&format!("evt_bench_{i:08}")).to_string();
            format!(
                "{}\t{body}",
                kopilka_stripe::webhook::sign(rig::WEBHOOK_SECRET, now, body.as_bytes())
            )
        })
        .collect();
    let mut sequence = Vec::with_capacity(WEBHOOK_EVENTS * 10 / 9 + 1);
    for (i, line) in lines.iter().enumerate() {
        if i % 9 == 8 && i + 1 < lines.len() {
            sequence.push(lines[(i * 7919) % i].clone());
        }
        sequence.push(line.clone());
    }
    let sent = sequence.len();
    let file = wrk::data_file("webhooks.txt", sequence);
    checkpoint(rig).await;
    let started = Instant::now();
    let child = wrk::start(&Load {
        url: format!("{}/v1/webhooks/stripe", rig.base),
        script: wrk::WEBHOOKS,
        args: vec![file.display().to_string(), "1".into()],
        threads: 1,
        connections,
        duration: Duration::from_secs(300),
    });
    let stored = loop {
        let stored: i64 = sqlx::query_scalar("SELECT count(*) FROM provider_events")
            .fetch_one(&rig.pool)
            .await
            .expect("counted");
        if stored as usize >= WEBHOOK_EVENTS || started.elapsed() > Duration::from_secs(280) {
            break stored;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let elapsed = started.elapsed();
    tokio::time::sleep(Duration::from_millis(300)).await;
    wrk::interrupt(&child);
    let run = wrk::finish(child).await;
    assert_eq!(
        stored as usize, WEBHOOK_EVENTS,
        "every distinct event stored once"
    );
    assert_eq!(run.failed, 0, "every webhook answered 2xx");
    let per_sec = sent as f64 / elapsed.as_secs_f64();
    // For reference, not the goal: the inbox's own transaction (the event, its job, in one
    // transaction; the same statements the API sends) straight from pgbench.
    let inbox = wrk::data_file(
        "inbox.sql",
        [
            r"\set n random(1, 2000000000)".to_owned(),
            "BEGIN;".to_owned(),
            format!(
                "INSERT INTO provider_events (id, type, created, livemode, api_version, object_id, payload) VALUES ({id}, 'charge.succeeded', 1, false, null, 'ch_x', CAST('{literal}' AS jsonb)) ON CONFLICT (provider, id) DO NOTHING;"
            ),
            format!(
                "WITH new AS (INSERT INTO jobs (id, kind, payload, dedup_key, run_at, max_attempts) VALUES (gen_random_uuid(), 'bench', jsonb_build_object('event_id', {id}), 'bench:' || {id}, now(), 10) ON CONFLICT (dedup_key) DO NOTHING RETURNING kind) SELECT count(kind) FROM new;"
            ),
            "COMMIT;".to_owned(),
        ],
    );
    let inbox_tps = pgbench_tps(rig, &inbox, connections).await;
    for cleanup in [
        "DROP TABLE bench_inbox",
        // The events would be applied by the reminder row's worker run; not its work.
        "DELETE FROM jobs WHERE kind = 'stripe_event'",
        "DELETE FROM jobs WHERE kind = 'bench'",
        "DELETE FROM provider_events WHERE id LIKE 'evt\\_pgb\\_%'",
    ] {
        sqlx::query(cleanup)
            .execute(&rig.pool)
            .await
            .expect("the baselines' rows removed");
    }

    Row {
        measure: "webhook ingest: signed events/s (10 % duplicates), ack p99",
        result: format!(
            "{per_sec:.0} events/s ({sent} sent, {stored} stored), p99 {:.1} ms",
            run.p99_ms
        ),
        baseline: format!(
            "pgbench insert of the same {bytes}-byte JSONB row: {tps:.0} TPS (the inbox's own transaction in pgbench: {inbox_tps:.0} TPS)"
        ),
        ratio: format!(
            "{:.2}× ({:.2}× of its own transaction)",
            per_sec / tps,
            per_sec / inbox_tps
        ),
        goal: "≥ 0.5×, ack p99 < 50 ms",
        meets: per_sec >= 0.5 * tps && run.p99_ms < 50.0,
    }
}

/// Row 6: due reminders sent by `kopilka worker --once` against a plain client sending the
/// same message to the same sink.
async fn reminder_row(rig: &Rig) -> Row {
    let tomorrow = time::OffsetDateTime::now_utc().date() + time::Duration::days(1);
    let base = rig.base.clone();
    let stored: Vec<u16> = futures_util::stream::iter(0..DUE_REMINDERS)
        .map(|i| {
            let request = rig
                .http
                .post(format!("{base}/v1/reminders"))
                .json(&json!({"email": format!("reader-{i:05}@example.org"), "remind_on": tomorrow.to_string()}));
            async move { request.send().await.map_or(0, |r| r.status().as_u16()) }
        })
        .buffer_unordered(16)
        .collect()
        .await;
    assert!(
        stored.iter().all(|s| (200..300).contains(s)),
        "every reminder stored"
    );
    top_statements(rig, "the reminders' seeding").await;
    let before = rig.smtp.count();
    let as_of = format!("{tomorrow}T00:05:00Z");
    let command = rig.kopilka(&["worker", "--once", "--as-of", &as_of]);
    let (status, elapsed, _, out) = tokio::task::spawn_blocking(move || rig::run_measured(command))
        .await
        .expect("joins");
    assert!(status.success(), "the worker ran: {out}");
    top_statements(rig, "the worker's run").await;
    let delivered = rig.smtp.count() - before;
    assert_eq!(
        delivered, DUE_REMINDERS,
        "every due reminder delivered once: {out}"
    );
    let per_sec = delivered as f64 / elapsed.as_secs_f64();

    let sample = rig.smtp.raw_messages().pop().expect("a delivered reminder");
    let port: u16 = rig
        .smtp
        .url()
        .rsplit(':')
        .next()
        .and_then(|p| p.parse().ok())
        .expect("the sink's port");
    let plain = plain_client_rate(port, sample.into_bytes()).await;
    Row {
        measure: "reminders delivered/s, 10 000 due (`worker --once`)",
        result: format!(
            "{per_sec:.0}/s ({delivered} in {:.1} s)",
            elapsed.as_secs_f64()
        ),
        baseline: format!("plain SMTP client to the same sink: {plain:.0} messages/s"),
        ratio: format!("{:.2}×", per_sec / plain),
        goal: "≥ 0.5×",
        meets: per_sec >= 0.5 * plain,
    }
}

/// Messages per second a plain client (lettre, one connection, one after another) gets the
/// sink to accept.
async fn plain_client_rate(port: u16, raw: Vec<u8>) -> f64 {
    use lettre::AsyncTransport as _;
    let transport =
        lettre::AsyncSmtpTransport::<lettre::Tokio1Executor>::builder_dangerous("127.0.0.1")
            .port(port)
            .build();
    let envelope = lettre::address::Envelope::new(
        Some("support@example.org".parse().expect("an address")),
        vec!["plain-client@example.org".parse().expect("an address")],
    )
    .expect("an envelope");
    let started = Instant::now();
    for _ in 0..PLAIN_CLIENT_MESSAGES {
        transport
            .send_raw(&envelope, &raw)
            .await
            .expect("the sink accepts");
    }
    PLAIN_CLIENT_MESSAGES as f64 / started.elapsed().as_secs_f64()
}

/// One `admin reconcile` run: seconds, peak RSS (KiB), objects checked, drift found.
async fn reconcile_once(rig: &Rig) -> (f64, u64, u64, usize) {
    let command = rig.kopilka(&["admin", "reconcile", "--format", "json"]);
    let (status, elapsed, peak_kib, out) =
        tokio::task::spawn_blocking(move || rig::run_measured(command))
            .await
            .expect("joins");
    assert!(status.success(), "reconcile ran: {out}");
    let report: Value = serde_json::from_str(out.trim()).expect("reconcile's JSON");
    (
        elapsed.as_secs_f64(),
        peak_kib,
        report["checked"].as_u64().unwrap_or(0),
        report["drift"].as_array().map_or(0, Vec::len),
    )
}

/// Row 7: reconcile over 10 000, then 100 000 simulator payments.
async fn reconcile_row(rig: &Rig) -> Row {
    seeded_payments(rig, 10_000).await;
    let (small_secs, small_kib, small_checked, small_drift) = reconcile_once(rig).await;
    seeded_payments(rig, 90_000).await;
    let (secs, kib, checked, drift) = reconcile_once(rig).await;
    assert!(checked >= 100_000, "every payment checked ({checked})");
    assert_eq!(small_drift + drift, 0, "a matching ledger shows no drift");
    let growth = kib as f64 / small_kib as f64;
    Row {
        measure: "`admin reconcile`: time and peak RSS, 10 000 → 100 000 objects",
        result: format!(
            "{small_checked}: {small_secs:.1} s, {}; {checked}: {secs:.1} s, {}",
            mib(small_kib),
            mib(kib)
        ),
        baseline: "—".into(),
        ratio: format!("RSS {growth:.2}× from 10k to 100k"),
        goal: "≤ 60 s, RSS < 100 MiB and flat (≤ 1.25×)",
        meets: secs <= 60.0 && kib < 100 * 1024 && growth <= 1.25,
    }
}

/// Row 8: the offer's p99 while sign-ins arrive at twice the rate the hasher can serve,
/// against its p99 idle. Idle and storm runs alternate in pairs (in turn idle first and storm
/// first); the ratio is the median of the pairs' own ratios, so one quiet idle run cannot
/// decide it.
async fn login_storm_row(rig: &Rig) -> Row {
    let login =
        json!({"email": "nobody@example.org", "password": "not the right password"}).to_string();
    let capacity = wrk::run(&Load {
        url: format!("{}/v1/sessions", rig.base),
        script: wrk::POST_JSON,
        args: vec![login.clone()],
        threads: 1,
        connections: 8,
        duration: Duration::from_secs(5),
    })
    .await
    .rps;
    let offer = || Load {
        url: format!("{}/v1/offer?currency=usd", rig.base),
        script: wrk::GET,
        args: vec![],
        threads: 1,
        connections: 8,
        duration: STORM_RUN,
    };
    let storm_rate = 2.0 * capacity;
    let (mut idle, mut during, mut sent) = (vec![], vec![], 0);
    for round in 0..STORM_ROUNDS {
        for storming in if round.is_multiple_of(2) {
            [false, true]
        } else {
            [true, false]
        } {
            if storming {
                let (run, answers) = offer_during_storm(rig, &login, storm_rate, offer()).await;
                during.push(run);
                sent += answers;
            } else {
                idle.push(wrk::run(&offer()).await);
            }
        }
    }
    let ratio = median(
        during
            .iter()
            .zip(&idle)
            .map(|(storm, quiet)| storm.p99_ms / quiet.p99_ms)
            .collect(),
    );
    let p99 = |runs: &[wrk::Run]| median(runs.iter().map(|r| r.p99_ms).collect());
    Row {
        measure: "login storm at 2× hashing capacity: offer p99 during / idle",
        result: format!(
            "p99 {:.2} ms during ({sent} sign-ins sent at {storm_rate:.0}/s), {:.2} ms idle \
             (medians of {STORM_ROUNDS} pairs)",
            p99(&during),
            p99(&idle)
        ),
        baseline: format!("hashing capacity: {capacity:.1} sign-ins/s"),
        ratio: format!("{ratio:.2}×"),
        goal: "≤ 2×",
        meets: ratio <= 2.0,
    }
}

/// One offer run while failed sign-ins arrive at `rate` per second (from a second before it
/// to its end); with how many were sent.
async fn offer_during_storm(
    rig: &Rig,
    login: &str,
    rate: f64,
    offer: Load<'_>,
) -> (wrk::Run, usize) {
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let storm = {
        let stop = std::sync::Arc::clone(&stop);
        let http = rig.http.clone();
        let url = format!("{}/v1/sessions", rig.base);
        let login = login.to_owned();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs_f64(1.0 / rate));
            let mut sent = tokio::task::JoinSet::new();
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                tick.tick().await;
                let request = http
                    .post(&url)
                    .header("content-type", "application/json")
                    .body(login.clone());
                sent.spawn(async move { request.send().await.map_or(0, |r| r.status().as_u16()) });
            }
            sent.join_all().await.len()
        })
    };
    tokio::time::sleep(Duration::from_secs(1)).await;
    let run = wrk::run(&offer).await;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    (run, storm.await.expect("the storm ends"))
}
