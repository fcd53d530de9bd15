//! What the load benchmark runs against, all on loopback: a private Postgres with durable
//! settings (fsync on, as in production) and `pg_stat_statements`, the Stripe simulator and
//! the API (both the release `kopilka` binary, each its own process), and the SMTP sink.

use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use kopilka_store::PrivatePostgres;
use kopilka_test_support::SmtpSink;
use secrecy::{ExposeSecret as _, SecretString};
use sqlx::PgPool;
use tokio::process::Child;

/// The API's public URL (never reached: links only); tokens carry its origin.
pub const PUBLIC_URL: &str = "https://support.example.org";
/// Benchmark-only secrets.
pub const SIGNING_SECRET: &str = "benchmark signing secret, thirty-two bytes or more";
const ACCOUNTS_SECRET: &str = "benchmark accounts secret, thirty-two bytes or more";
pub const WEBHOOK_SECRET: &str = "whsec_kopilka_bench";
const SIM_SECRET_KEY: &str = "sk_test_kopilka_bench";
const DATABASE: &str = "kopilka";

/// The running parts.
pub struct Rig {
    /// The API, e.g. `http://127.0.0.1:41234`.
    pub base: String,
    /// The simulator, e.g. `http://127.0.0.1:41235`.
    pub sim: String,
    /// A pool on the API's database (for seeding and checking).
    pub pool: PgPool,
    /// A pool on the cluster's `postgres` database (statistics).
    pub admin: PgPool,
    /// The SMTP sink the worker delivers to.
    pub smtp: SmtpSink,
    /// An HTTP client for setup requests.
    pub http: reqwest::Client,
    server: Child,
    sim_child: Child,
    env: Vec<(String, String)>,
    db_url: SecretString,
    _pg: PrivatePostgres,
    pg_dir: PathBuf,
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port()
}

impl Rig {
    /// Starts everything and waits until the API answers.
    pub async fn start() -> Self {
        let pg_dir = std::env::temp_dir().join(format!("kopilka-bench-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&pg_dir);
        let dir = pg_dir.clone();
        let pg = tokio::task::spawn_blocking(move || PrivatePostgres::start_persistent(&dir))
            .await
            .expect("joins")
            .expect("the private Postgres starts");
        let admin_url = pg.url("postgres");
        let admin = connect(&admin_url).await;
        sqlx::query("ALTER SYSTEM SET shared_preload_libraries = 'pg_stat_statements'")
            .execute(&admin)
            .await
            .expect("pg_stat_statements configured");
        admin.close().await;
        let pg = tokio::task::spawn_blocking(move || {
            pg.stop();
            pg.start().expect("Postgres restarts");
            pg
        })
        .await
        .expect("joins");
        let admin = connect(&pg.url("postgres")).await;
        kopilka_store::create_database(&pg.url("postgres"), DATABASE, None)
            .await
            .expect("the database is created");
        let db_url = pg.url(DATABASE);
        let pool = connect(&db_url).await;
        kopilka_store::migrate(&pool).await.expect("migrations");
        sqlx::query("CREATE EXTENSION pg_stat_statements")
            .execute(&pool)
            .await
            .expect("pg_stat_statements installed");

        let smtp = SmtpSink::start().await;
        let sim_port = free_port();
        let sim = format!("http://127.0.0.1:{sim_port}");
        let mut sim_child =
            kopilka_tests::kopilka(&["stripe-sim", "--addr", &format!("127.0.0.1:{sim_port}")]);
        sim_child
            .env("KOPILKA_SIM_SECRET_KEY", SIM_SECRET_KEY)
            .env("KOPILKA_SIM_WEBHOOK_SECRET", WEBHOOK_SECRET)
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        let sim_child = sim_child.spawn().expect("the simulator starts");

        let api_port = free_port();
        let base = format!("http://127.0.0.1:{api_port}");
        let env: Vec<(String, String)> = [
            // `test` lets the API reach the simulator over plain HTTP; the rest is set back to
            // the production defaults (pool size, timeouts, logs).
            ("KOPILKA_ENV", "test".into()),
            ("KOPILKA__DATABASE__MAX_CONNECTIONS", "10".into()),
            ("KOPILKA__DATABASE__ACQUIRE_TIMEOUT_SECS", "3".into()),
            ("KOPILKA__SERVER__REQUEST_TIMEOUT_SECS", "30".into()),
            ("KOPILKA__LOG__FORMAT", "json".into()),
            (
                "KOPILKA__LOG__FILTER",
                "info,sqlx=warn,tower_http=info".into(),
            ),
            ("DATABASE_URL", db_url.expose_secret().to_owned()),
            ("KOPILKA__SERVER__ADDR", format!("127.0.0.1:{api_port}")),
            ("KOPILKA__SERVER__BASELINE_ROUTE", "true".into()),
            ("KOPILKA__PUBLIC_URL", PUBLIC_URL.into()),
            ("KOPILKA__STRIPE__SECRET_KEY", SIM_SECRET_KEY.into()),
            ("KOPILKA__STRIPE__API_BASE", sim.clone()),
            ("KOPILKA__STRIPE__WEBHOOK_SECRET", WEBHOOK_SECRET.into()),
            // Both rails configured, with countries to match (issue #20: the offer with both
            // rails still ≥ 0.9× the bare handler). The offer calls no BTCPay: nothing
            // listens at this address.
            ("KOPILKA__BTCPAY__URL", "http://127.0.0.1:9/".into()),
            ("KOPILKA__BTCPAY__STORE_ID", "BenchStore".into()),
            ("KOPILKA__BTCPAY__API_KEY", "bench-btcpay-api-key".into()),
            (
                "KOPILKA__BTCPAY__WEBHOOK_SECRET",
                "bench-btcpay-webhook-secret".into(),
            ),
            ("KOPILKA__RAILS__CRYPTO_COUNTRIES", "RU,BY,KZ".into()),
            ("KOPILKA__RAILS__CARD_OFF_COUNTRIES", "RU,BY".into()),
            ("KOPILKA__SMTP__URL", smtp.url()),
            ("KOPILKA__ACCOUNTS__SECRET", ACCOUNTS_SECRET.into()),
            ("KOPILKA__PAYWALL__SIGNING_SECRET", SIGNING_SECRET.into()),
            // The login storm must reach the hasher: throttling would answer it cheaply.
            (
                "KOPILKA__ACCOUNTS__FREE_FAILURES_PER_IP",
                "100000000".into(),
            ),
            (
                "KOPILKA__ACCOUNTS__FREE_FAILURES_PER_ACCOUNT",
                "100000000".into(),
            ),
            // Background refreshes would blur the statement count; none falls in the run.
            ("KOPILKA__OFFER__GOAL__REFRESH_SECS", "3600".into()),
            // The shield refreshes as in production (test's 100 ms would be ten a second).
            ("KOPILKA__ABUSE__REFRESH_MS", "1000".into()),
            ("KOPILKA__PAYWALL__KEYS_RELOAD_SECS", "3600".into()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v))
        .collect();
        let mut server = kopilka_tests::kopilka(&["serve"]);
        let log = std::fs::File::create(std::env::temp_dir().join("kopilka-bench-api.log"))
            .expect("the API's log file");
        server
            .envs(env.iter().cloned())
            .stdout(Stdio::null())
            .stderr(log);
        let server = server.spawn().expect("the API starts");

        let http = reqwest::Client::new();
        for url in [format!("{base}/healthz"), format!("{sim}/_sim/clock")] {
            kopilka_test_support::eventually(&url, Duration::from_secs(30), || {
                let http = http.clone();
                let url = url.clone();
                async move {
                    http.get(&url)
                        .send()
                        .await
                        .ok()
                        .filter(|r| r.status().is_success())
                        .map(|_| ())
                }
            })
            .await;
        }
        Self {
            base,
            sim,
            pool,
            admin,
            smtp,
            http,
            server,
            sim_child,
            env,
            db_url,
            _pg: pg,
            pg_dir,
        }
    }

    /// The API process's id.
    pub fn server_pid(&self) -> u32 {
        self.server.id().expect("the API runs")
    }

    /// `kopilka <args>` configured like the API (same database, simulator, SMTP sink).
    pub fn kopilka(&self, args: &[&str]) -> std::process::Command {
        let mut command = std::process::Command::new(kopilka_tests::kopilka_binary());
        command
            .args(args)
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("KOPILKA_CONFIG_DIR", kopilka_tests::config_dir())
            .envs(self.env.iter().cloned())
            .stdin(Stdio::null());
        command
    }

    /// The database's URL (for `pgbench`).
    pub fn db_url(&self) -> &SecretString {
        &self.db_url
    }

    /// Stops the processes and removes the cluster's folder.
    pub async fn stop(mut self) {
        let _ = self.server.kill().await;
        let _ = self.sim_child.kill().await;
        self.pool.close().await;
        self.admin.close().await;
        let dir = self.pg_dir.clone();
        tokio::task::spawn_blocking(move || drop(self._pg))
            .await
            .expect("joins");
        let _ = std::fs::remove_dir_all(dir);
    }
}

async fn connect(url: &SecretString) -> PgPool {
    sqlx::postgres::PgPoolOptions::new()
        .max_connections(16)
        .connect(url.expose_secret())
        .await
        .expect("connects to the private Postgres")
}

/// `VmRSS` and `VmHWM` (peak) of process `pid`, in KiB.
pub fn memory_kib(pid: u32) -> (u64, u64) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|rest| rest.split_whitespace().next())
            .and_then(|n| n.parse().ok())
            .unwrap_or(0)
    };
    (field("VmRSS:"), field("VmHWM:"))
}

/// Runs `command` to its end: its status, wall time, peak RSS (KiB, the last `VmHWM` read
/// while it ran, every 10 ms) and what it printed.
pub fn run_measured(
    mut command: std::process::Command,
) -> (std::process::ExitStatus, Duration, u64, String) {
    let started = std::time::Instant::now();
    let mut child = command
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("starts");
    let mut stdout = child.stdout.take().expect("piped");
    let reader = std::thread::spawn(move || {
        let mut text = String::new();
        let _ = std::io::Read::read_to_string(&mut stdout, &mut text);
        text
    });
    let mut peak_kib = 0;
    let status = loop {
        if let Some(status) = child.try_wait().expect("waits") {
            break status;
        }
        peak_kib = peak_kib.max(memory_kib(child.id()).1);
        std::thread::sleep(Duration::from_millis(10));
    };
    let elapsed = started.elapsed();
    (status, elapsed, peak_kib, reader.join().expect("joins"))
}
