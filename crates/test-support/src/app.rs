//! The app in-process on port 0, on a database of its own.

use std::net::SocketAddr;

use kopilka_api::AppState;
use kopilka_config::Settings;
use secrecy::SecretString;
use tokio::sync::oneshot;

use crate::{ApiClient, TestDatabase, fresh_database, test_settings};

/// A running app: the router served on a free port, with its own fresh database.
pub struct TestApp {
    /// Where it listens.
    pub address: SocketAddr,
    /// A client for it.
    pub api: ApiClient,
    /// The settings it runs with.
    pub settings: Settings,
    /// Its database (a fresh one, unless spawned with [`TestApp::spawn_on`]).
    pub db: Option<TestDatabase>,
    /// The app's own pool.
    pub pool: sqlx::PgPool,
    /// The app's state (the goal cache, the Stripe client).
    pub state: AppState,
    /// The Stripe simulator the app talks to.
    pub stripe: kopilka_stripe_sim::Spawned,
    /// The BTCPay Server simulator the app talks to (its store, API key and webhook secret
    /// are the app's `[btcpay]` settings); it delivers webhooks to the app once
    /// [`TestApp::deliver_btcpay_webhooks_here`] registered one.
    pub btcpay: kopilka_btcpay_sim::Spawned,
    /// Where the app's emails are written (one `.eml` per message), unless a test configured
    /// an SMTP server.
    pub mail_dir: tempfile::TempDir,
    shutdown: Option<oneshot::Sender<()>>,
}

impl TestApp {
    /// The app with test settings on a fresh database.
    pub async fn spawn() -> Self {
        Self::spawn_with(|_| {}).await
    }

    /// The app on a fresh database, after `configure` adjusted the test settings.
    pub async fn spawn_with(configure: impl FnOnce(&mut Settings)) -> Self {
        let db = fresh_database().await;
        let mut app = Self::spawn_on(db.url.clone(), configure).await;
        app.db = Some(db);
        app
    }

    /// The app on the database at `url` (e.g. a cluster a test stops and starts itself).
    ///
    /// # Panics
    /// When the app cannot start.
    pub async fn spawn_on(url: SecretString, configure: impl FnOnce(&mut Settings)) -> Self {
        crate::init_test_logging();
        let stripe = kopilka_stripe_sim::spawn(
            "127.0.0.1:0".parse().expect("an address"),
            kopilka_stripe_sim::SimOptions::default(),
        )
        .await
        .expect("the Stripe simulator starts");
        let btcpay_options = kopilka_btcpay_sim::SimOptions::default();
        let btcpay = kopilka_btcpay_sim::spawn(
            "127.0.0.1:0".parse().expect("an address"),
            btcpay_options.clone(),
        )
        .await
        .expect("the BTCPay simulator starts");
        let mut settings = test_settings();
        let mail_dir = tempfile::tempdir().expect("a mail folder");
        settings.smtp.file_dir = mail_dir.path().to_owned();
        settings.database.url = Some(url.clone());
        settings.stripe.secret_key =
            Some(SecretString::from(stripe.simulator.secret_key().to_owned()));
        settings.stripe.webhook_secret = vec![SecretString::from(
            stripe.simulator.webhook_secret().to_owned(),
        )];
        settings.stripe.api_base = Some(stripe.simulator.base_url().parse().expect("a URL"));
        settings.btcpay.url = Some(btcpay.simulator.base_url().parse().expect("a URL"));
        settings.btcpay.store_id = Some(btcpay_options.store_id);
        settings.btcpay.api_key = Some(SecretString::from(btcpay_options.api_key));
        settings.btcpay.webhook_secret = vec![SecretString::from(btcpay_options.webhook_secret)];
        configure(&mut settings);
        settings.validate().expect("test settings are valid");
        let pool = kopilka_store::connect(&settings.database, &url).expect("a pool");
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("a free port");
        let address = listener.local_addr().expect("a local address");
        let state = AppState::new(pool.clone(), settings.clone());
        // The tasks end with the test's runtime.
        let _background = state.start_background();
        let worker = kopilka_jobs::Worker::new(pool.clone(), &settings).expect("a worker");
        tokio::spawn(kopilka_jobs::run_forever(
            worker,
            std::time::Duration::from_millis(200),
            std::future::pending(),
        ));
        let app = kopilka_api::router(state.clone());
        let (shutdown, stop) = oneshot::channel::<()>();
        let grace = settings.server.shutdown_grace();
        tokio::spawn(async move {
            let stop = async {
                let _ = stop.await;
            };
            if let Err(err) = kopilka_api::serve(listener, app, stop, grace).await {
                panic!("test server failed: {err}");
            }
        });
        Self {
            address,
            api: ApiClient::new(format!("http://{address}")),
            settings,
            db: None,
            pool,
            state,
            stripe,
            btcpay,
            mail_dir,
            shutdown: Some(shutdown),
        }
    }
}

impl Drop for TestApp {
    fn drop(&mut self) {
        if let Some(shutdown) = self.shutdown.take() {
            let _ = shutdown.send(());
        }
    }
}

/// Reading the app's emails (written as `.eml` files when no SMTP server is configured).
impl TestApp {
    /// Every email written so far, raw, oldest first.
    #[must_use]
    pub fn emails(&self) -> Vec<String> {
        let mut files: Vec<_> = std::fs::read_dir(self.mail_dir.path())
            .map(|dir| {
                dir.filter_map(Result::ok)
                    .filter(|e| e.path().extension().is_some_and(|x| x == "eml"))
                    .filter_map(|e| Some((e.metadata().ok()?.modified().ok()?, e.path())))
                    .collect()
            })
            .unwrap_or_default();
        files.sort();
        files
            .into_iter()
            .filter_map(|(_, path)| std::fs::read_to_string(path).ok())
            // A file the mailer has created and not written yet reads empty; mail-parser
            // panics on the `To` of an empty message (it indexes its first part).
            .filter(|raw| !raw.trim().is_empty())
            .collect()
    }

    /// Waits for the `n`th account email — a sign-in, verification or "already registered"
    /// link; receipts and notices are not counted — addressed to `to` (counting from 1) and
    /// returns it parsed.
    ///
    /// # Panics
    /// When it does not arrive within 20 seconds.
    pub async fn email_to(&self, to: &str, n: usize) -> crate::ReceivedEmail {
        crate::eventually(
            &format!("email #{n} to the test address"),
            std::time::Duration::from_secs(20),
            || async {
                self.emails()
                    .iter()
                    .map(|raw| crate::ReceivedEmail::parse(raw))
                    .filter(|m| m.to.eq_ignore_ascii_case(to) && is_link_email(m))
                    .nth(n - 1)
            },
        )
        .await
    }

    /// How many account (link) emails went to `to` so far.
    #[must_use]
    pub fn emails_to(&self, to: &str) -> usize {
        self.emails()
            .iter()
            .map(|raw| crate::ReceivedEmail::parse(raw))
            .filter(|m| m.to.eq_ignore_ascii_case(to) && is_link_email(m))
            .count()
    }

    /// The `token` of the link in the `n`th email to `to`.
    ///
    /// # Panics
    /// When the email has no link with a token.
    pub async fn link_token(&self, to: &str, n: usize) -> String {
        let email = self.email_to(to, n).await;
        let start = email.text.find("token=").expect("a link with a token") + "token=".len();
        email.text[start..]
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_'))
            .collect()
    }
}

/// `GET` a path of the simulator at `base` (`/v1/…` with `secret_key`, or `/_sim/…`) as JSON.
///
/// # Panics
/// When the simulator does not answer JSON.
pub async fn sim_get(base: &str, secret_key: &str, path: &str) -> serde_json::Value {
    reqwest::Client::new()
        .get(format!("{base}{path}"))
        .bearer_auth(secret_key)
        .send()
        .await
        .expect("the simulator answers")
        .json()
        .await
        .expect("JSON from the simulator")
}

/// `POST` JSON to a control path (`/_sim/…`) of the simulator at `base`.
///
/// # Panics
/// When the simulator refuses.
pub async fn sim_control(base: &str, path: &str, body: &serde_json::Value) -> serde_json::Value {
    let response = reqwest::Client::new()
        .post(format!("{base}{path}"))
        .json(body)
        .send()
        .await
        .expect("the simulator answers");
    assert!(
        response.status().is_success(),
        "{path}: {}",
        response.status()
    );
    response.json().await.expect("JSON from the simulator")
}

/// Driving the Stripe simulator the app talks to.
impl TestApp {
    /// `GET` a simulator path (`/v1/…` with its secret key, or `/_sim/…`) as JSON.
    pub async fn sim_get(&self, path: &str) -> serde_json::Value {
        sim_get(
            &self.stripe.simulator.base_url(),
            self.stripe.simulator.secret_key(),
            path,
        )
        .await
    }

    /// `POST` JSON to a simulator control path (`/_sim/…`).
    pub async fn sim_control(&self, path: &str, body: &serde_json::Value) -> serde_json::Value {
        sim_control(&self.stripe.simulator.base_url(), path, body).await
    }

    /// Points the simulator's webhook deliveries at this app, with `duplicates` extra copies
    /// and shuffled bursts when `shuffle`; `None` stops deliveries.
    pub async fn deliver_webhooks_here(&self, delivery: Option<(u32, bool)>) {
        let body = match delivery {
            Some((duplicates, shuffle)) => serde_json::json!({
                "webhook_url": format!("http://{}/v1/webhooks/stripe", self.address),
                "duplicates": duplicates,
                "shuffle": shuffle,
            }),
            None => serde_json::json!({"webhook_url": ""}),
        };
        self.sim_control("/_sim/delivery", &body).await;
    }

    /// A contribution given with `email` at checkout, paid on the simulator's page, and
    /// applied from its webhooks (deliveries must be on); returns the checkout's answer.
    ///
    /// # Panics
    /// When the checkout is refused or not applied within 20 seconds.
    pub async fn give(&self, email: &str, interval: &str, amount: i64) -> serde_json::Value {
        self.give_in(email, interval, amount, "usd").await
    }

    /// [`Self::give`] in `currency`.
    ///
    /// # Panics
    /// When the checkout is refused or not applied within 20 seconds.
    pub async fn give_in(
        &self,
        email: &str,
        interval: &str,
        amount: i64,
        currency: &str,
    ) -> serde_json::Value {
        let started = self
            .api
            .post_json(
                "/v1/checkout",
                &serde_json::json!({"interval": interval, "amount_minor": amount, "currency": currency, "email": email}),
            )
            .await;
        assert_eq!(started.status, reqwest::StatusCode::CREATED);
        let url = started.json()["checkout_url"].as_str().unwrap().to_owned();
        let session = url.rsplit('/').next().unwrap().to_owned();
        self.sim_control(
            &format!("/_sim/checkout/{session}/pay"),
            &serde_json::json!({}),
        )
        .await;
        let contribution = started.json()["contribution_id"]
            .as_str()
            .unwrap()
            .to_owned();
        let pool = self.pool.clone();
        crate::eventually(
            "the gift applied",
            std::time::Duration::from_secs(20),
            || {
                let pool = pool.clone();
                let contribution = contribution.clone();
                async move {
                    // Paid, and named its reader: the address given on Stripe's page names
                    // the reader when the checkout's completion is applied, which may come
                    // after the payment's own events.
                    let status: Option<String> = sqlx::query_scalar(
                        "SELECT status FROM contributions WHERE id = $1::uuid AND reader_id IS NOT NULL",
                    )
                    .bind(&contribution)
                    .fetch_optional(&pool)
                    .await
                    .ok()
                    .flatten();
                    let plans: i64 = sqlx::query_scalar(
                        "SELECT count(*) FROM recurring_plans WHERE contribution_id = $1::uuid",
                    )
                    .bind(&contribution)
                    .fetch_one(&pool)
                    .await
                    .unwrap_or(0);
                    (status.as_deref() == Some("paid") && (interval == "once" || plans == 1))
                        .then_some(())
                }
            },
        )
        .await;
        started.json()
    }

    /// Starts a checkout through the API, does `action` (`pay`, `decline`,
    /// `pay-then-dispute`) on the simulator's page, and returns the session as Stripe has it.
    ///
    /// # Panics
    /// When the checkout is refused.
    pub async fn checkout_and(
        &self,
        interval: &str,
        amount_minor: i64,
        currency: &str,
        action: &str,
    ) -> serde_json::Value {
        let started = self
            .api
            .post_json("/v1/checkout", &serde_json::json!({"interval": interval, "amount_minor": amount_minor, "currency": currency}))
            .await;
        assert_eq!(
            started.status.as_u16(),
            201,
            "{}",
            String::from_utf8_lossy(&started.body)
        );
        let url = started.json()["checkout_url"]
            .as_str()
            .expect("a checkout URL")
            .to_owned();
        let session = url.rsplit('/').next().expect("a session id").to_owned();
        self.sim_control(
            &format!("/_sim/checkout/{session}/{action}"),
            &serde_json::json!({}),
        )
        .await;
        self.sim_get(&format!("/v1/checkout/sessions/{session}"))
            .await
    }
}

/// Driving the BTCPay Server simulator the app talks to.
impl TestApp {
    /// `POST` JSON to a BTCPay simulator control path (`/_sim/…`).
    pub async fn btcpay_control(&self, path: &str, body: &serde_json::Value) -> serde_json::Value {
        sim_control(&self.btcpay.simulator.base_url(), path, body).await
    }

    /// Registers a store webhook on the simulator delivering every event to this app's
    /// `POST /v1/webhooks/btcpay`, signed with the first configured webhook secret (as an
    /// operator does in BTCPay's Store → Webhooks); returns the webhook with its secret.
    ///
    /// # Panics
    /// When no webhook secret is configured.
    pub async fn deliver_btcpay_webhooks_here(&self) -> serde_json::Value {
        use secrecy::ExposeSecret as _;
        let secret = self
            .settings
            .btcpay
            .webhook_secret
            .first()
            .expect("a BTCPay webhook secret")
            .expose_secret()
            .to_owned();
        self.btcpay_control(
            "/_sim/webhook",
            &serde_json::json!({
                "url": format!("http://{}/v1/webhooks/btcpay", self.address),
                "secret": secret,
            }),
        )
        .await
    }

    /// Marks invoice `invoice_id` `status` (`Settled`, `Invalid`) through Greenfield's
    /// `POST /api/v1/invoices/{id}/status`, as an operator does in BTCPay.
    ///
    /// # Panics
    /// When the simulator refuses.
    pub async fn btcpay_mark(&self, invoice_id: &str, status: &str) {
        let sim = &self.btcpay.simulator;
        let marked = reqwest::Client::new()
            .post(format!(
                "{}/api/v1/invoices/{invoice_id}/status",
                sim.base_url()
            ))
            .header("authorization", format!("token {}", sim.api_key()))
            .json(&serde_json::json!({ "status": status }))
            .send()
            .await
            .expect("the simulator answers");
        assert!(marked.status().is_success(), "{}", marked.status());
    }
}

/// Signing in as a reader would.
impl TestApp {
    /// A session token for `email`'s reader, by an emailed sign-in link (the reader must
    /// exist); counts the link emails before asking, so a fast mailer cannot be missed.
    ///
    /// # Panics
    /// When no link arrives or the link does not sign in.
    pub async fn signed_in_by_link(&self, email: &str) -> String {
        let n = self.emails_to(email) + 1;
        self.api
            .post_json(
                "/v1/sessions/magic-link",
                &serde_json::json!({ "email": email }),
            )
            .await;
        let token = self.link_token(email, n).await;
        self.api
            .post_json(
                "/v1/sessions/magic-link/consume",
                &serde_json::json!({ "token": token }),
            )
            .await
            .json()["token"]
            .as_str()
            .expect("a session token")
            .to_owned()
    }
}

/// Whether `email` is an account link email (its `Message-ID` is `<link-…>`).
fn is_link_email(email: &crate::ReceivedEmail) -> bool {
    email
        .headers
        .iter()
        .any(|(name, value)| name.eq_ignore_ascii_case("message-id") && value.contains("link-"))
}
