//! The whole product as a reader, Stripe and an operator meet it: `kopilka serve` (one or
//! more processes), `kopilka stripe-sim`, an SMTP server and a database of its own, all on
//! loopback. Every process's log is kept; [`Stack::finish`] searches them for every secret and
//! piece of PII the test used, and for panics.

use std::time::Duration;

use kopilka_test_support::{ApiClient, ApiResponse, SmtpSink, TestDatabase, eventually};
use kopilka_tests::{Running, free_port, kopilka};
use reqwest::StatusCode;
use secrecy::ExposeSecret as _;
use serde_json::Value;
use sqlx::PgPool;

pub const WEBHOOK_SECRET: &str = "whsec_faults_current_secret";
pub const SIM_SECRET_KEY: &str = "sk_test_faults_simulator_key";
pub const ACCOUNTS_SECRET: &str = "faults-accounts-secret-0123456789-abcdefghij";
pub const SIGNING_SECRET: &str = "faults-signing-secret-0123456789-abcdefghijk";
pub const SITE: &str = "https://news.example.org";
pub const BTCPAY_API_KEY: &str = "faults-btcpay-api-key-0123456789";
pub const BTCPAY_STORE: &str = "FaultsStore111111111111111111111111111111111";
pub const BTCPAY_WEBHOOK_SECRET: &str = "faults-btcpay-webhook-secret-0123";

/// Logs at debug for Kopilka's own crates and tower-http (the request lines); libraries that
/// would only add noise stay at warn.
const LOG_FILTER: &str = "debug,sqlx=warn,hyper=warn,hyper_util=warn,h2=warn,tower=warn,\
                          reqwest=warn,rustls=warn,lettre=warn,mio=warn";

/// What a stack is started with.
#[derive(Default)]
pub struct Options {
    servers: usize,
    worker_in_serve: bool,
    env: Vec<(String, String)>,
    database_url: Option<secrecy::SecretString>,
    btcpay: bool,
}

impl Options {
    /// Two or more `serve` processes on the same database.
    pub fn servers(mut self, n: usize) -> Self {
        self.servers = n;
        self
    }

    /// Whether `serve` also runs the worker (off: jobs wait for `worker` processes).
    pub fn worker_in_serve(mut self, on: bool) -> Self {
        self.worker_in_serve = on;
        self
    }

    /// One more setting for every process (`KOPILKA__…`).
    pub fn env(mut self, key: &str, value: &str) -> Self {
        self.env.push((key.to_owned(), value.to_owned()));
        self
    }

    /// A BTCPay Server too (`kopilka btcpay-sim`), configured as the crypto rail; no store
    /// webhook until the test registers one.
    pub fn btcpay(mut self) -> Self {
        self.btcpay = true;
        self
    }

    /// A database the test runs itself (e.g. a cluster it restarts), already migrated.
    pub fn database(mut self, url: secrecy::SecretString) -> Self {
        self.database_url = Some(url);
        self
    }

    pub async fn start(self) -> Stack {
        Stack::start(self).await
    }
}

pub struct Stack {
    /// A pool on the stack's database, for assertions.
    pub pool: PgPool,
    pub smtp: SmtpSink,
    /// One client per `serve` process.
    pub apis: Vec<ApiClient>,
    /// Their base URLs, e.g. `http://127.0.0.1:41234`.
    pub bases: Vec<String>,
    pub sim_base: String,
    /// The BTCPay simulator's base URL, when the stack has one.
    pub btcpay_base: Option<String>,
    db: Option<TestDatabase>,
    sim: Option<Running>,
    btcpay: Option<Running>,
    servers: Vec<Option<Running>>,
    env: Vec<(String, String)>,
    /// What no log line may contain.
    watched: Vec<String>,
    /// Logs of processes already stopped.
    old_logs: String,
    http: reqwest::Client,
}

impl Stack {
    /// One `serve` process with the worker inside it.
    pub async fn start_default() -> Self {
        Options::default().worker_in_serve(true).start().await
    }

    pub fn options() -> Options {
        Options::default()
    }

    async fn start(options: Options) -> Self {
        let (db, url) = match options.database_url {
            Some(url) => (None, url),
            None => {
                let db = kopilka_test_support::fresh_database().await;
                let url = db.url.clone();
                (Some(db), url)
            }
        };
        let pool = sqlx::postgres::PgPoolOptions::new()
            .max_connections(4)
            .connect_lazy(url.expose_secret())
            .expect("a pool");
        let smtp = SmtpSink::start().await;
        let sim_port = free_port();
        let sim_base = format!("http://127.0.0.1:{sim_port}");
        let mut sim = kopilka(&["stripe-sim", "--addr", &format!("127.0.0.1:{sim_port}")]);
        sim.env("KOPILKA_SIM_SECRET_KEY", SIM_SECRET_KEY)
            .env("KOPILKA_SIM_WEBHOOK_SECRET", WEBHOOK_SECRET);
        let sim = Running::start(sim);
        let mut env: Vec<(String, String)> = [
            ("KOPILKA_ENV", "test"),
            ("KOPILKA__LOG__FORMAT", "json"),
            ("KOPILKA__LOG__FILTER", LOG_FILTER),
            ("DATABASE_URL", url.expose_secret()),
            ("KOPILKA__STRIPE__SECRET_KEY", SIM_SECRET_KEY),
            ("KOPILKA__STRIPE__API_BASE", &sim_base),
            ("KOPILKA__STRIPE__WEBHOOK_SECRET", WEBHOOK_SECRET),
            ("KOPILKA__SMTP__URL", &smtp.url()),
            ("KOPILKA__ACCOUNTS__SECRET", ACCOUNTS_SECRET),
            ("KOPILKA__PAYWALL__SIGNING_SECRET", SIGNING_SECRET),
            ("KOPILKA__SERVER__CORS_ALLOWED_ORIGINS", SITE),
            ("KOPILKA__OFFER__RETURN_ORIGINS", SITE),
            (
                "KOPILKA__WORKER__IN_SERVE",
                if options.worker_in_serve {
                    "true"
                } else {
                    "false"
                },
            ),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect();
        let (btcpay, btcpay_base) = if options.btcpay {
            let port = free_port();
            let base = format!("http://127.0.0.1:{port}");
            let sim = kopilka(&[
                "btcpay-sim",
                "--addr",
                &format!("127.0.0.1:{port}"),
                "--api-key",
                BTCPAY_API_KEY,
                "--store-id",
                BTCPAY_STORE,
            ]);
            env.extend(
                [
                    ("KOPILKA__BTCPAY__URL", base.as_str()),
                    ("KOPILKA__BTCPAY__STORE_ID", BTCPAY_STORE),
                    ("KOPILKA__BTCPAY__API_KEY", BTCPAY_API_KEY),
                    ("KOPILKA__BTCPAY__WEBHOOK_SECRET", BTCPAY_WEBHOOK_SECRET),
                ]
                .map(|(k, v)| (k.to_owned(), v.to_owned())),
            );
            (Some(Running::start(sim)), Some(base))
        } else {
            (None, None)
        };
        env.extend(options.env);
        let watched = vec![
            BTCPAY_API_KEY.to_owned(),
            BTCPAY_WEBHOOK_SECRET.to_owned(),
            url.expose_secret().to_owned(),
            WEBHOOK_SECRET.to_owned(),
            SIM_SECRET_KEY.to_owned(),
            ACCOUNTS_SECRET.to_owned(),
            SIGNING_SECRET.to_owned(),
        ];
        let mut stack = Self {
            pool,
            smtp,
            apis: vec![],
            bases: vec![],
            sim_base,
            btcpay_base,
            db,
            sim: Some(sim),
            btcpay,
            servers: vec![],
            env,
            watched,
            old_logs: String::new(),
            http: reqwest::Client::new(),
        };
        for _ in 0..options.servers.max(1) {
            stack.start_server().await;
        }
        let clock = format!("{}/_sim/clock", stack.sim_base);
        let http = stack.http.clone();
        eventually("the simulator to listen", Duration::from_secs(30), || {
            let (http, clock) = (http.clone(), clock.clone());
            async move { http.get(&clock).send().await.ok().map(|_| ()) }
        })
        .await;
        if let Some(base) = stack.btcpay_base.clone() {
            let clock = format!("{base}/_sim/clock");
            eventually(
                "the BTCPay simulator to listen",
                Duration::from_secs(30),
                || {
                    let (http, clock) = (http.clone(), clock.clone());
                    async move { http.get(&clock).send().await.ok().map(|_| ()) }
                },
            )
            .await;
        }
        stack
    }

    /// `POST` to a BTCPay simulator control path (`/_sim/…`).
    pub async fn btcpay_control(&self, path: &str, body: &Value) -> Value {
        let base = self.btcpay_base.as_deref().expect("a stack with BTCPay");
        kopilka_test_support::sim_control(base, path, body).await
    }

    /// The first server's client.
    pub fn api(&self) -> &ApiClient {
        &self.apis[0]
    }

    /// Starts one more `serve` process on the same database and waits until it answers;
    /// returns its index.
    pub async fn start_server(&mut self) -> usize {
        let port = free_port();
        let mut command = self.command(&["serve"]);
        command.env("KOPILKA__SERVER__ADDR", format!("127.0.0.1:{port}"));
        let running = Running::start(command);
        let base = format!("http://127.0.0.1:{port}");
        let api = ApiClient::new(base.clone());
        eventually("the server to listen", Duration::from_secs(30), || async {
            let answer = api
                .request(reqwest::Method::GET, "/healthz")
                .send()
                .await
                .ok()?;
            (answer.status() == StatusCode::OK).then_some(())
        })
        .await;
        self.apis.push(api);
        self.bases.push(base);
        self.servers.push(Some(running));
        self.servers.len() - 1
    }

    /// SIGKILLs server `index` (its log is kept for the leak search).
    pub async fn kill_server(&mut self, index: usize) {
        if let Some(server) = self.servers[index].take() {
            self.old_logs.push_str(&server.stderr());
            server.kill().await;
        }
    }

    /// `kopilka <args>` with the stack's settings (its database, simulator, SMTP server).
    pub fn command(&self, args: &[&str]) -> tokio::process::Command {
        let mut command = kopilka(args);
        command.envs(self.env.iter().cloned());
        command
    }

    /// Runs `kopilka <args>` to its end and returns what it printed; its log is searched too.
    pub async fn run(&mut self, args: &[&str]) -> kopilka_tests::Output {
        let output = kopilka_tests::run(self.command(args)).await;
        self.old_logs.push_str(&output.stderr);
        output
    }

    /// Keeps a process's log for the leak search (a worker the test ran itself).
    pub fn keep_log(&mut self, log: &str) {
        self.old_logs.push_str(log);
    }

    /// `worker --once` in rounds, the k-th as of k × `minutes` from now (so retries come
    /// due), until a round finds nothing due (at most 10 rounds).
    pub async fn work_through(&mut self, minutes: i64) {
        for round in 1..=10 {
            let as_of = (time::OffsetDateTime::now_utc()
                + time::Duration::minutes(minutes * round))
            .format(&time::format_description::well_known::Rfc3339)
            .expect("formats");
            let out = self.run(&["worker", "--once", "--as-of", &as_of]).await;
            assert!(out.status.success(), "worker --once: {}", out.stderr);
            if out.stdout.contains(" 0 done, 0 to retry") {
                return;
            }
        }
    }

    /// Adds strings no log may contain (addresses, passwords, tokens the test used).
    pub fn watch<S: AsRef<str>>(&mut self, values: impl IntoIterator<Item = S>) {
        self.watched
            .extend(values.into_iter().map(|v| v.as_ref().to_owned()));
    }

    /// A signed webhook delivery to server `index`.
    pub async fn deliver(&self, index: usize, body: &str) -> ApiResponse {
        let now = time::OffsetDateTime::now_utc().unix_timestamp();
        self.deliver_signed(
            index,
            body,
            &kopilka_stripe::sign(WEBHOOK_SECRET, now, body.as_bytes()),
        )
        .await
    }

    /// A webhook delivery with the given `Stripe-Signature` header.
    pub async fn deliver_signed(&self, index: usize, body: &str, header: &str) -> ApiResponse {
        kopilka_test_support::send(
            self.apis[index]
                .request(reqwest::Method::POST, "/v1/webhooks/stripe")
                .header("stripe-signature", header)
                .header("content-type", "application/json")
                .body(body.to_owned()),
        )
        .await
    }

    /// `POST` to a simulator control path (`/_sim/…`).
    pub async fn sim_control(&self, path: &str, body: &Value) -> Value {
        kopilka_test_support::sim_control(&self.sim_base, path, body).await
    }

    /// `GET` a Stripe-shaped simulator path with the secret key.
    pub async fn sim_get(&self, path: &str) -> Value {
        kopilka_test_support::sim_get(&self.sim_base, SIM_SECRET_KEY, path).await
    }

    /// Points the simulator's webhook deliveries at server `index`.
    pub async fn deliver_webhooks_to(&self, index: usize) {
        let url = format!("{}/v1/webhooks/stripe", self.bases[index]);
        self.sim_control("/_sim/delivery", &serde_json::json!({"webhook_url": url}))
            .await;
    }

    /// The token in the `n`th email with a link token to `email` (its link's `token=`
    /// parameter); other emails (receipts) are not counted.
    pub async fn link_token(&self, email: &str, n: usize) -> String {
        let smtp = &self.smtp;
        let message = eventually("the emailed link", Duration::from_secs(20), || async {
            smtp.messages()
                .into_iter()
                // Only emails with a link token count: a receipt may come before or
                // after a sign-up email (it waits for the invoice's payment event).
                .filter(|m| m.to.eq_ignore_ascii_case(email) && m.text.contains("token="))
                .nth(n - 1)
        })
        .await;
        let at = message.text.find("token=").expect("a link with a token") + "token=".len();
        message.text[at..]
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
            .collect()
    }

    /// Signs `email` up with `password`, then uses the verification link (the `n`th email
    /// with a link token to the address) with that password, as its owner does; returns the link's token and the
    /// session's.
    pub async fn sign_up_confirmed(
        &self,
        email: &str,
        password: &str,
        n: usize,
    ) -> (String, String) {
        let up = self
            .api()
            .post_json(
                "/v1/accounts",
                &serde_json::json!({"email": email, "password": password}),
            )
            .await;
        assert_eq!(up.status, StatusCode::ACCEPTED);
        let link = self.link_token(email, n).await;
        let session = self
            .api()
            .post_json(
                "/v1/sessions/magic-link/consume",
                &serde_json::json!({"token": link, "password": password}),
            )
            .await;
        assert_eq!(session.status, StatusCode::CREATED, "{:?}", session.body);
        assert_eq!(session.json()["password_confirmed"], true);
        let token = session.json()["token"]
            .as_str()
            .expect("a token")
            .to_owned();
        (link, token)
    }

    /// A count from the stack's database.
    pub async fn count(&self, sql: &str) -> i64 {
        sqlx::query_scalar(sqlx::AssertSqlSafe(sql.to_owned()))
            .fetch_one(&self.pool)
            .await
            .unwrap_or_else(|e| panic!("{sql}: {e}"))
    }

    /// The whole database as `pg_dump` writes it (schema and data).
    pub fn pg_dump(&self) -> String {
        let url = self
            .env
            .iter()
            .find(|(k, _)| k == "DATABASE_URL")
            .map(|(_, v)| secrecy::SecretString::from(v.clone()))
            .expect("the stack's database");
        kopilka_test_support::pg_dump(&url)
    }

    /// Every log line so far, from every process.
    pub fn logs(&self) -> String {
        let mut logs = self.old_logs.clone();
        for server in self.servers.iter().flatten() {
            logs.push_str(&server.stderr());
        }
        if let Some(sim) = &self.sim {
            logs.push_str(&sim.stderr());
        }
        if let Some(sim) = &self.btcpay {
            logs.push_str(&sim.stderr());
        }
        logs
    }

    /// Stops everything and searches the logs: no watched string (secrets, addresses,
    /// passwords, tokens), no panic. Returns the logs' line count.
    pub async fn finish(mut self) -> usize {
        let logs = self.logs();
        for server in self.servers.iter_mut().filter_map(Option::take) {
            server.kill().await;
        }
        if let Some(sim) = self.sim.take() {
            sim.kill().await;
        }
        if let Some(sim) = self.btcpay.take() {
            sim.kill().await;
        }
        self.pool.close().await;
        drop(self.db.take());
        assert_no_leaks(&logs, &self.watched);
        logs.lines().count()
    }
}

/// No line of `logs` contains a watched value (compared case-insensitively: addresses are
/// stored lowercased), and nothing panicked.
pub fn assert_no_leaks(logs: &str, watched: &[String]) {
    let lower = logs.to_lowercase();
    for value in watched.iter().filter(|v| v.len() >= 6) {
        let needle = value.to_lowercase();
        if let Some(at) = lower.find(&needle) {
            let line = lower[..at].matches('\n').count();
            panic!(
                "a secret or personal value appears in the logs, line {line}: {}",
                logs.lines().nth(line).unwrap_or_default()
            );
        }
    }
    assert!(
        !logs.contains("panicked at"),
        "a process panicked:\n{}",
        logs.lines()
            .filter(|l| l.contains("panicked"))
            .collect::<Vec<_>>()
            .join("\n")
    );
}
