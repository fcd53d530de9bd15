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
        let mut settings = test_settings();
        settings.database.url = Some(url.clone());
        settings.stripe.secret_key =
            Some(SecretString::from(stripe.simulator.secret_key().to_owned()));
        settings.stripe.webhook_secret = vec![SecretString::from(
            stripe.simulator.webhook_secret().to_owned(),
        )];
        settings.stripe.api_base = Some(stripe.simulator.base_url().parse().expect("a URL"));
        configure(&mut settings);
        settings.validate().expect("test settings are valid");
        let pool = kopilka_store::connect(&settings.database, &url).expect("a pool");
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("a free port");
        let address = listener.local_addr().expect("a local address");
        let state = AppState::new(pool.clone(), settings.clone());
        state.start_background();
        tokio::spawn(kopilka_jobs::run_forever(
            pool.clone(),
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
