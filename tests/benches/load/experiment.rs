//! Rows: the offer while a three-variant ask experiment runs (a bandit with a holdback, one
//! variant changing presets, one changing the words), against the bare handler in the same
//! rounds — for new visitors (each view assigns and signs a visitor cookie) and returning
//! ones (1 000 visitor cookies in rotation) — and the SQL it issued beyond the batched
//! flushes of its counts.

use std::time::Duration;

use crate::rig::Rig;
use crate::wrk;
use crate::{Row, median, offer_rounds, statements};

const RUN: Duration = Duration::from_secs(3);
const ROUNDS: usize = 4;
const CONNECTIONS: u32 = 32;
const VISITORS: usize = 1_000;

fn spec() -> serde_json::Value {
    serde_json::json!({
        "name": "bench-three", "method": "bandit", "holdback_percent": 5,
        "targeting": {"currencies": ["usd"]},
        "variants": [
            {"key": "control", "control": true},
            {"key": "higher", "presets": {"usd": {"once": [1500, 3000, 6000]}}},
            {"key": "words", "copy": {
                "en": {"headline": "Keep us independent", "body": "Readers fund every story."},
                "ru": {"headline": "Сохраните нас независимыми", "body": "Читатели оплачивают каждый текст."}}}
        ]
    })
}

fn admin(rig: &Rig, args: &[&str]) {
    let out = rig.kopilka(args).output().expect("kopilka runs");
    assert!(
        out.status.success(),
        "kopilka {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

pub async fn experiment_rows(rig: &Rig) -> Vec<Row> {
    let file = wrk::data_file("experiment.json", [spec().to_string()]);
    let file = file.display().to_string();
    admin(rig, &["admin", "experiments", "create", "--file", &file]);
    admin(rig, &["admin", "experiments", "start", "bench-three"]);
    let offer = "/v1/offer?currency=usd&country=DE";
    // Served within seconds (NOTIFY); then 1 000 visitors' cookies, as browsers keep them.
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        let body: serde_json::Value = rig
            .http
            .get(format!("{}{offer}", rig.base))
            .send()
            .await
            .expect("the offer answers")
            .json()
            .await
            .expect("JSON");
        if body["experiment"]["name"] == "bench-three" {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the experiment is served"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let mut cookies = Vec::with_capacity(VISITORS);
    while cookies.len() < VISITORS {
        let answer = rig
            .http
            .get(format!("{}{offer}", rig.base))
            .send()
            .await
            .expect("the offer answers");
        if let Some(cookie) = answer
            .headers()
            .get_all("set-cookie")
            .iter()
            .filter_map(|v| v.to_str().ok())
            .find(|v| v.starts_with("__Host-kopilka_visitor="))
            .and_then(|v| v.split(';').next())
        {
            cookies.push(cookie.to_owned());
        }
    }
    let cookies = wrk::data_file("visitors.txt", cookies);
    let cookie_args = vec![
        cookies.display().to_string(),
        "Cookie".into(),
        String::new(),
    ];
    let ([bare, fresh, returning], started) =
        offer_rounds(rig, offer, cookie_args, ROUNDS, RUN, CONNECTIONS).await;
    // Let the last counts reach Postgres (one flush), then read what was issued.
    tokio::time::sleep(Duration::from_secs(6)).await;
    let took = started.elapsed();
    let (issued, texts) = statements(rig).await;
    let flushes: i64 = texts
        .iter()
        .filter(|t| t.contains("INSERT INTO experiment_counts"))
        .filter_map(|t| t.split('×').next()?.trim().parse::<i64>().ok())
        .sum();
    let counted: i64 = sqlx::query_scalar(
        "SELECT coalesce(sum(views), 0)::bigint FROM experiment_counts c
         JOIN experiments e ON e.id = c.experiment_id WHERE e.name = 'bench-three'",
    )
    .fetch_one(&rig.pool)
    .await
    .expect("the counts");
    // The same time idle, the experiment still running: the background's own statements.
    sqlx::query("SELECT pg_stat_statements_reset()")
        .execute(&rig.pool)
        .await
        .expect("statistics reset");
    tokio::time::sleep(took).await;
    let (idle, _) = statements(rig).await;
    admin(rig, &["admin", "experiments", "stop", "bench-three"]);
    let beyond = (issued - flushes).saturating_sub(idle);
    let failed: u64 = [&bare, &fresh, &returning]
        .iter()
        .flat_map(|runs| runs.iter().map(|r| r.failed))
        .sum();
    assert_eq!(failed, 0, "every request answered 2xx");
    let offers: u64 = fresh.iter().chain(&returning).map(|r| r.requests).sum();
    // A view is a visitor's first of the day: every new visitor's request is one (the
    // returning visitors were counted when their cookies were gathered).
    let first_views: u64 = fresh.iter().map(|r| r.requests).sum();
    let ratio = |runs: &[wrk::Run], figure: fn(&wrk::Run) -> f64| {
        median(
            runs.iter()
                .zip(&bare)
                .map(|(run, base)| figure(run) / figure(base))
                .collect(),
        )
    };
    let rps = |runs: &[wrk::Run]| median(runs.iter().map(|r| r.rps).collect());
    let bare_rps = rps(&bare);
    let (fresh_ratio, returning_ratio) = (ratio(&fresh, |r| r.rps), ratio(&returning, |r| r.rps));
    let (fresh_p99, returning_p99) = (ratio(&fresh, |r| r.p99_ms), ratio(&returning, |r| r.p99_ms));
    #[allow(clippy::cast_precision_loss)]
    let per_10k = beyond as f64 * 10_000.0 / offers.max(1) as f64;
    vec![
        Row {
            measure: "`GET /v1/offer`, a three-variant experiment running, returning visitors (1 000 cookies)",
            result: format!("{:.0} req/s", rps(&returning)),
            baseline: format!("bare handler: {bare_rps:.0} req/s"),
            ratio: format!("{returning_ratio:.2}× throughput, {returning_p99:.2}× p99"),
            goal: "≥ 0.9× throughput",
            meets: returning_ratio >= 0.9,
        },
        Row {
            measure: "`GET /v1/offer`, a three-variant experiment running, a new visitor every view (cookie signed)",
            result: format!("{:.0} req/s", rps(&fresh)),
            baseline: format!("bare handler: {bare_rps:.0} req/s"),
            ratio: format!("{fresh_ratio:.2}× throughput, {fresh_p99:.2}× p99"),
            goal: "≥ 0.9× throughput",
            meets: fresh_ratio >= 0.9,
        },
        Row {
            measure: "SQL statements per 10 000 offers with the experiment, beyond its batched flushes and the background",
            result: format!(
                "{per_10k:.2} ({issued} in all, {flushes} flushes; {counted} views counted, {first_views} first views sent)"
            ),
            baseline: format!("idle as long: {idle}"),
            ratio: format!("{beyond} beyond"),
            goal: "0 (± one refresh); every first view counted",
            meets: beyond <= 2 && u64::try_from(counted).unwrap_or(0) >= first_views,
        },
    ]
}
