//! The flood row (issue #19): 10 000 junk public writes a second — sign-in link requests,
//! sign-ups, checkouts and reminders for random addresses from random clients — against an
//! instance with production's budgets, while a well-behaved client reads `GET /v1/offer` and
//! `GET /v1/me` at a steady pace. Their p99 during the flood against idle, in pairs; their
//! answers ≥ 500; the pool never timing out; and every sign-in link request that was
//! accepted (202) for an address with an account issued and emailed.
//!
//! Each pair runs on a freshly started instance (and emptied shared counters), so every
//! flood meets every budget unspent: the flood's first second — when the budgets admit
//! their fill of real work — is inside every measured run, not only the first.

use std::process::{Child, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use secrecy::ExposeSecret as _;

use crate::rig::Rig;
use crate::wrk::{self, Load};
use crate::{Row, median};

/// Junk requests a second, across the four routes.
const FLOOD_RATE: f64 = 10_000.0;
/// wrk's connections for the flood and each one's pause between requests: 1 100 × 1000 /
/// 100 is 11 000 a second before each answer's own time, so about 10 000 with it. Many
/// connections, as a botnet has: wrk waits for each answer before the next request, so with
/// few connections the slow answers (a sign-up waits for the hasher) would pace the flood.
const FLOOD_CONNECTIONS: u32 = 1_100;
const FLOOD_PAUSE_MS: u32 = 100;
/// Each idle or flood run, and how many pairs.
const RUN: Duration = Duration::from_secs(6);
const PAIRS: usize = 3;
/// The well-behaved client: per route, 4 connections pausing 5 ms between requests.
const CLIENT_CONNECTIONS: u32 = 4;
const CLIENT_PAUSE_MS: u32 = 5;
/// Sign-in link requests for addresses with an account, a second, during each flood (each
/// address asked once in the whole row, so the hourly link limit never applies).
const KNOWN_RATE: f64 = 100.0;
const KNOWN_READERS: usize = 3_000;

/// Production's budgets (`config/default.toml`, `[limits]`): the test environment the rig
/// runs in raises them all.
const PRODUCTION_LIMITS: [(&str, u32, u32, u32); 6] = [
    ("CHECKOUT", 20, 10, 3000),
    ("SIGN_UP", 10, 3, 600),
    ("SIGN_IN_LINK", 10, 3, 1200),
    ("SIGN_IN", 30, 10, 3000),
    ("REMINDER", 10, 3, 1200),
    ("PLAN_LINK", 60, 0, 6000),
];

/// A `kopilka serve` with production's budgets that believes `X-Forwarded-For` from
/// loopback (so the flood's clients are many), logging to a file of its own.
struct Shielded {
    child: Child,
    base: String,
    log: std::path::PathBuf,
}

impl Shielded {
    async fn start(rig: &Rig, n: usize) -> Self {
        // Counters other rows (or the last pair) left would spend the budgets in advance.
        sqlx::query("DELETE FROM rate_limits")
            .execute(&rig.pool)
            .await
            .expect("the shared counters emptied");
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port")
            .port();
        let log = std::env::temp_dir().join(format!("kopilka-bench-flood-{n}.log"));
        let mut command = rig.kopilka(&["serve"]);
        command
            .env("KOPILKA__SERVER__ADDR", format!("127.0.0.1:{port}"))
            .env("KOPILKA__SERVER__CLIENT_IP_HEADER", "x-forwarded-for")
            .env("KOPILKA__SERVER__TRUSTED_PROXIES", "127.0.0.1/32")
            .env("KOPILKA__WORKER__IN_SERVE", "false")
            // Production's spread of each budget and bound on writes in flight (the test
            // environment turns both off).
            .env("KOPILKA__LIMITS__BURST_FACTOR", "10")
            .env("KOPILKA__LIMITS__WRITES_IN_FLIGHT", "6");
        for (route, client, address, global) in PRODUCTION_LIMITS {
            for (key, value) in [
                ("PER_CLIENT", client),
                ("PER_ADDRESS", address),
                ("GLOBAL", global),
            ] {
                command.env(
                    format!("KOPILKA__LIMITS__{route}__{key}"),
                    value.to_string(),
                );
            }
        }
        command
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).expect("the flood server's log"));
        let child = command.spawn().expect("the flood server starts");
        let base = format!("http://127.0.0.1:{port}");
        let url = format!("{base}/healthz");
        kopilka_test_support::eventually(
            "the flood server to listen",
            Duration::from_secs(30),
            || {
                let (http, url) = (rig.http.clone(), url.clone());
                async move {
                    http.get(&url)
                        .send()
                        .await
                        .ok()
                        .filter(|r| r.status().is_success())
                        .map(|_| ())
                }
            },
        )
        .await;
        Self { child, base, log }
    }

    /// Lines of its log that say a request found no database connection in time (the
    /// pool exhausted) or that an accepted link request's work failed.
    fn trouble(&self) -> (usize, usize) {
        let log = std::fs::read_to_string(&self.log).unwrap_or_default();
        (
            log.matches("database unavailable").count(),
            log.matches("sign-in link not issued").count(),
        )
    }

    /// CPU seconds the server process has used so far (user + system), from `/proc`.
    fn cpu_secs(&self) -> f64 {
        let stat =
            std::fs::read_to_string(format!("/proc/{}/stat", self.child.id())).unwrap_or_default();
        // Fields after the command's closing parenthesis: state is field 3, utime 14, stime 15.
        let fields: Vec<&str> = stat
            .rsplit_once(')')
            .map_or("", |(_, rest)| rest)
            .split_whitespace()
            .collect();
        let ticks = |i: usize| {
            fields
                .get(i)
                .and_then(|f| f.parse::<f64>().ok())
                .unwrap_or(0.0)
        };
        // SAFETY: sysconf reads a constant of the running system.
        let per_sec = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
        (ticks(11) + ticks(12)) / per_sec.max(1.0)
    }

    /// SIGTERM (in-flight requests finish), then waits.
    fn stop(mut self) {
        if let Ok(pid) = libc::pid_t::try_from(self.child.id()) {
            // SAFETY: signalling our own child process.
            unsafe { libc::kill(pid, libc::SIGTERM) };
        }
        let _ = self.child.wait();
        let _ = std::fs::remove_file(&self.log);
    }
}

/// One run of the well-behaved client: both routes' figures.
struct Reading {
    offer: wrk::Run,
    me: wrk::Run,
}

/// One route's figures of a [`Reading`].
type Route = fn(&Reading) -> &wrk::Run;

fn offer_of(reading: &Reading) -> &wrk::Run {
    &reading.offer
}

fn me_of(reading: &Reading) -> &wrk::Run {
    &reading.me
}

/// The well-behaved client reads both routes for [`RUN`], at once.
async fn well_behaved(base: &str, session_file: &str, duration: Duration) -> Reading {
    let load = |path: &str, session: &str| Load {
        url: format!("{base}{path}"),
        script: wrk::PACED,
        args: vec![CLIENT_PAUSE_MS.to_string(), session.to_owned()],
        threads: 1,
        connections: CLIENT_CONNECTIONS,
        duration,
    };
    let offer = wrk::start(&load("/v1/offer?currency=usd", ""));
    let me = wrk::start(&load("/v1/me", session_file));
    Reading {
        offer: wrk::finish(offer).await,
        me: wrk::finish(me).await,
    }
}

/// What the sign-in link requests for known addresses got.
#[derive(Default, Clone, Copy)]
struct Asked {
    accepted: usize,
    refused: usize,
    busy: usize,
    other: usize,
}

/// A flood run: the junk and the known-address link requests start together with the
/// measurement and end after it.
async fn flooded(
    rig: &Rig,
    server: &Shielded,
    session_file: &str,
    next_known: &Arc<AtomicUsize>,
) -> (Reading, wrk::Run, Asked, f64) {
    let day = (time::OffsetDateTime::now_utc().date() + time::Duration::days(30)).to_string();
    let junk = wrk::start_as_attacker(&Load {
        url: server.base.clone(),
        script: wrk::JUNK,
        args: vec![FLOOD_PAUSE_MS.to_string(), day],
        threads: 2,
        connections: FLOOD_CONNECTIONS,
        duration: RUN + Duration::from_secs(5),
    });
    let stop = Arc::new(AtomicBool::new(false));
    let known = {
        let stop = Arc::clone(&stop);
        let next = Arc::clone(next_known);
        let http = rig.http.clone();
        let url = format!("{}/v1/sessions/magic-link", server.base);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs_f64(1.0 / KNOWN_RATE));
            let mut sent = tokio::task::JoinSet::new();
            while !stop.load(Ordering::Relaxed) {
                tick.tick().await;
                let n = next.fetch_add(1, Ordering::Relaxed);
                assert!(n < KNOWN_READERS, "more known readers needed");
                let request = http
                    .post(&url)
                    .header(
                        "x-forwarded-for",
                        format!("172.16.{}.{}", n / 250, n % 250 + 1),
                    )
                    .json(&serde_json::json!({"email": known_address(n)}));
                sent.spawn(async move { request.send().await.map_or(0, |r| r.status().as_u16()) });
            }
            let mut asked = Asked::default();
            for status in sent.join_all().await {
                match status {
                    202 => asked.accepted += 1,
                    429 => asked.refused += 1,
                    503 => asked.busy += 1,
                    _ => asked.other += 1,
                }
            }
            asked
        })
    };
    let cpu_before = server.cpu_secs();
    let reading = well_behaved(&server.base, session_file, RUN).await;
    let cpu = server.cpu_secs() - cpu_before;
    stop.store(true, Ordering::Relaxed);
    let asked = known.await.expect("the known-address requests end");
    wrk::interrupt(&junk);
    let junk = wrk::finish(junk).await;
    (reading, junk, asked, cpu / RUN.as_secs_f64())
}

/// The floor: the same flood's rate and shape against `GET /healthz`, which does nothing
/// (no body, no budget, no query). What any server on this machine pays merely to receive
/// the flood's requests beside the well-behaved client's: the junk run's figures against
/// this one are what Kopilka's handling of the junk adds.
async fn floor(server: &Shielded, session_file: &str) -> (Reading, wrk::Run) {
    let flood = wrk::start_as_attacker(&Load {
        url: format!("{}/healthz", server.base),
        script: wrk::PACED,
        args: vec![FLOOD_PAUSE_MS.to_string(), String::new()],
        threads: 2,
        connections: FLOOD_CONNECTIONS,
        duration: RUN + Duration::from_secs(5),
    });
    let reading = well_behaved(&server.base, session_file, RUN).await;
    wrk::interrupt(&flood);
    (reading, wrk::finish(flood).await)
}

fn known_address(n: usize) -> String {
    format!("flood-known-{n:05}@example.org")
}

/// Sign-in links issued so far to the known addresses.
async fn links_issued(rig: &Rig) -> i64 {
    sqlx::query_scalar(
        "SELECT count(*) FROM email_links l JOIN readers r ON r.id = l.reader_id
         WHERE r.email LIKE 'flood-known-%' AND l.purpose = 'sign_in'",
    )
    .fetch_one(&rig.pool)
    .await
    .expect("counted")
}

/// Link emails to the known addresses whose job is done (a link email is recorded by its
/// job, not in `email_sends`).
async fn links_sent(rig: &Rig) -> i64 {
    sqlx::query_scalar(
        "SELECT count(*) FROM jobs j JOIN email_links l ON l.id::text = j.payload->>'link_id'
         JOIN readers r ON r.id = l.reader_id
         WHERE r.email LIKE 'flood-known-%' AND l.purpose = 'sign_in' AND j.status = 'done'",
    )
    .fetch_one(&rig.pool)
    .await
    .expect("counted")
}

/// Waits (up to `within`) until `count` reaches `target`; its last value.
async fn settle<F, Fut>(target: i64, within: Duration, count: F) -> i64
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = i64>,
{
    let started = Instant::now();
    loop {
        let now = count().await;
        if now >= target || started.elapsed() > within {
            return now;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Seeds the known readers and the well-behaved client's session; the session's file.
async fn seed(rig: &Rig) -> std::path::PathBuf {
    sqlx::query(
        "INSERT INTO readers (id, email)
         SELECT gen_random_uuid(), 'flood-known-' || lpad(g::text, 5, '0') || '@example.org'
         FROM generate_series(0, $1 - 1) g ON CONFLICT DO NOTHING",
    )
    .bind(i64::try_from(KNOWN_READERS).expect("fits"))
    .execute(&rig.pool)
    .await
    .expect("the known readers");
    let mut conn = rig.pool.acquire().await.expect("a connection");
    let email = kopilka_domain::Email::parse("flood-reader@example.org").expect("an address");
    let reader = kopilka_accounts::reader::find_or_create(&mut conn, &email)
        .await
        .expect("the reader");
    let session = kopilka_accounts::session::begin(
        &mut conn,
        reader,
        kopilka_accounts::session::Proof::Mailbox,
        Duration::from_secs(86_400),
        time::OffsetDateTime::now_utc(),
    )
    .await
    .expect("a session");
    wrk::data_file(
        "flood-session.txt",
        [session.token.expose_secret().to_owned()],
    )
}

/// Rows 9 and 10: the flood against idle (the goal) and against the floor.
pub async fn flood_rows(rig: &Rig) -> Vec<Row> {
    let session_file = seed(rig).await.display().to_string();
    let worker = {
        let mut command = rig.kopilka(&["worker"]);
        command.stdout(Stdio::null()).stderr(Stdio::null());
        command.spawn().expect("the worker starts")
    };
    let next_known = Arc::new(AtomicUsize::new(0));
    let (mut idle, mut during, mut junk) = (vec![], vec![], vec![]);
    let (mut floors, mut floor_floods) = (vec![], vec![]);
    let mut asked = Asked::default();
    let (mut server_cores, mut idle_cores) = (vec![], vec![]);
    let (mut unavailable, mut not_issued, mut issued_short) = (0, 0, 0);
    for pair in 0..PAIRS {
        let server = Shielded::start(rig, pair).await;
        // Warm-up: connections, the offer's caches, the session remembered.
        well_behaved(&server.base, &session_file, Duration::from_secs(1)).await;
        for flooding in if pair.is_multiple_of(2) {
            [false, true]
        } else {
            [true, false]
        } {
            if flooding {
                let (reading, run, got, cores) =
                    flooded(rig, &server, &session_file, &next_known).await;
                server_cores.push(cores);
                during.push(reading);
                junk.push(run);
                asked.accepted += got.accepted;
                asked.refused += got.refused;
                asked.busy += got.busy;
                asked.other += got.other;
            } else {
                let before = server.cpu_secs();
                idle.push(well_behaved(&server.base, &session_file, RUN).await);
                idle_cores.push((server.cpu_secs() - before) / RUN.as_secs_f64());
            }
        }
        let (reading, flood) = floor(&server, &session_file).await;
        floors.push(reading);
        floor_floods.push(flood);
        // Every accepted link request's work finishes before the instance stops (it runs
        // after the answer): waited for, not assumed.
        let target = i64::try_from(asked.accepted).expect("fits");
        let issued = settle(target, Duration::from_secs(30), || links_issued(rig)).await;
        issued_short += usize::from(issued < target);
        let (pool, links) = server.trouble();
        unavailable += pool;
        not_issued += links;
        server.stop();
    }
    let accepted = i64::try_from(asked.accepted).expect("fits");
    let issued = links_issued(rig).await;
    let sent = settle(issued.max(accepted), Duration::from_secs(60), || {
        links_sent(rig)
    })
    .await;
    let mut worker = worker;
    let _ = worker.kill();
    let _ = worker.wait();
    // The messages themselves, at the SMTP sink.
    let delivered = rig
        .smtp
        .raw_messages()
        .iter()
        .filter(|raw| {
            raw.lines()
                .any(|l| l.starts_with("To: flood-known-") || l.starts_with("To: <flood-known-"))
        })
        .count();

    let ratio = |route: Route| {
        median(
            during
                .iter()
                .zip(&idle)
                .map(|(flood, quiet)| route(flood).p99_ms / route(quiet).p99_ms)
                .collect(),
        )
    };
    let p99 =
        |runs: &[Reading], route: Route| median(runs.iter().map(|r| route(r).p99_ms).collect());
    let (offer, me): (Route, Route) = (offer_of, me_of);
    let (offer_ratio, me_ratio) = (ratio(offer), ratio(me));
    let worst = |route: Route| {
        during
            .iter()
            .zip(&idle)
            .map(|(flood, quiet)| route(flood).p99_ms / route(quiet).p99_ms)
            .fold(0.0, f64::max)
    };
    let server_errors: u64 = idle
        .iter()
        .chain(&during)
        .map(|r| r.offer.server_errors + r.me.server_errors)
        .sum();
    let client_failed: u64 = idle
        .iter()
        .chain(&during)
        .map(|r| r.offer.failed + r.me.failed)
        .sum();
    let junk_rate = median(junk.iter().map(|r| r.rps).collect());
    let junk_sent: u64 = junk.iter().map(|r| r.requests).sum();
    let every_link = accepted == issued && issued == sent && sent as usize == delivered;
    eprintln!(
        "bench: flood: known-address link requests {} accepted, {} refused 429, {} busy 503, {} other; \
         {issued} links issued, {sent} sent, {delivered} at the sink; {unavailable} pool timeouts, \
         {not_issued} link tasks failed, {issued_short} pairs short of links; the server used \
         {:.2} cores flooded ({:.1} µs a junk request), {:.2} idle",
        asked.accepted,
        asked.refused,
        asked.busy,
        asked.other,
        median(server_cores.clone()),
        (median(server_cores.clone()) - median(idle_cores.clone())) * 1e6 / junk_rate.max(1.0),
        median(idle_cores.clone()),
    );
    let floor_ratio = |route: Route| {
        median(
            during
                .iter()
                .zip(&floors)
                .map(|(flood, floor)| route(flood).p99_ms / route(floor).p99_ms)
                .collect(),
        )
    };
    let (offer_floor, me_floor) = (floor_ratio(offer), floor_ratio(me));
    let floor_rate = median(floor_floods.iter().map(|r| r.rps).collect());
    let floor_errors: u64 = floors
        .iter()
        .map(|r| r.offer.server_errors + r.me.server_errors)
        .sum();
    let against_floor = Row {
        measure: "the same flood against the floor (the same rate of `GET /healthz`, which does \
                  nothing): what Kopilka's handling of junk adds to the well-behaved p99",
        result: format!(
            "floor flood {floor_rate:.0} req/s; offer p99 {:.2} ms, me p99 {:.2} ms during the \
             floor flood (idle {:.2} ms, {:.2} ms: the floor alone is {:.1}× and {:.1}× idle)",
            p99(&floors, offer),
            p99(&floors, me),
            p99(&idle, offer),
            p99(&idle, me),
            p99(&floors, offer) / p99(&idle, offer),
            p99(&floors, me) / p99(&idle, me),
        ),
        baseline: "the same client during the floor flood, same instance".into(),
        ratio: format!("offer {offer_floor:.2}×, me {me_floor:.2}×"),
        goal: "p99 ≤ 2× the floor's each; no 5xx",
        meets: offer_floor <= 2.0
            && me_floor <= 2.0
            && server_errors == 0
            && floor_errors == 0
            && floor_rate >= 0.9 * junk_rate,
    };
    let against_idle = Row {
        measure: "flood of junk writes (links, sign-ups, checkouts, reminders; production budgets): \
                  well-behaved `GET /v1/offer` and `GET /v1/me` p99 during / idle",
        result: format!(
            "{junk_rate:.0} junk/s ({junk_sent} sent); offer p99 {:.2} ms during, {:.2} ms idle; \
             me p99 {:.2} ms during, {:.2} ms idle (medians of {PAIRS} pairs); client 5xx: \
             {server_errors} (≥ 400: {client_failed}); pool timeouts: {unavailable}; link requests \
             for known addresses: {} accepted → {issued} issued → {sent} sent → {delivered} \
             delivered",
            p99(&during, offer),
            p99(&idle, offer),
            p99(&during, me),
            p99(&idle, me),
            asked.accepted,
        ),
        baseline: "the same client, idle, same instance".into(),
        ratio: format!(
            "offer {offer_ratio:.2}×, me {me_ratio:.2}× (worst pair: {:.2}×, {:.2}×)",
            worst(offer),
            worst(me)
        ),
        goal: "≥ 10 000 junk/s; p99 ≤ 2× each; no 5xx; no pool timeout; every accepted link sent",
        meets: junk_rate >= FLOOD_RATE
            && offer_ratio <= 2.0
            && me_ratio <= 2.0
            && server_errors == 0
            && unavailable == 0
            && not_issued == 0
            && every_link
            && asked.accepted > 0,
    };
    vec![against_idle, against_floor]
}
