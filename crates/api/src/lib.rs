//! Kopilka's HTTP API: the one [`router`], the one error envelope
//! (`{"error":{"code","message"}}`, see [`AppError`]), the tower-http layers every request
//! passes through, Prometheus metrics and the OpenAPI document at `/openapi.json`.
//!
//! Handlers are thin: extract, call one use-case function, map the result. Routes live
//! beside their handlers (one module per area) and are merged here.

mod accounts;
mod checkout;
mod cross_origin;
mod entitlements;
mod error;
mod extract;
mod health;
mod identity;
mod layers;
mod limits;
mod me;
mod metrics;
mod offer;
mod openapi;
mod pages;
mod passes;
mod reminders;
mod revocation;
mod serve;
mod shield;
mod visitor;
mod webhooks;
mod widget;

use std::sync::Arc;

use axum::Router;
use axum::routing::get;
use kopilka_config::Settings;
use kopilka_store::PgPool;
use utoipa::OpenApi as _;
use utoipa_axum::router::OpenApiRouter;

pub use entitlements::SharedKeyring;
pub use error::{AppError, ErrorBody, ErrorDetail};
pub use extract::ApiJson;
pub use identity::{ClientIp, MaybeSignedIn, SignedIn, client_address};
pub use layers::with_layers;
pub use limits::PublicLimits;
pub use metrics::admin_router;
pub use offer::OfferBodies;
pub use revocation::RevokedSupporters;
pub use serve::{serve, serve_admin};
pub use shield::Shield;
pub use widget::WIDGET_JS;

/// What every handler may reach: one shared [`Parts`], so extracting it per request is one
/// reference count, not one per field (measured: cloning the fields cost 3 % of the offer's
/// CPU).
#[derive(Clone)]
pub struct AppState(Arc<Parts>);

impl std::ops::Deref for AppState {
    type Target = Parts;

    fn deref(&self) -> &Parts {
        &self.0
    }
}

/// The parts of [`AppState`].
pub struct Parts {
    /// The Postgres pool.
    pub pool: PgPool,
    /// The validated settings.
    pub settings: Arc<Settings>,
    /// Stripe, when a key is configured.
    pub stripe: Option<kopilka_stripe::StripeClient>,
    /// BTCPay Server (the crypto rail), when a store is configured.
    pub btcpay: Option<kopilka_btcpay::BtcpayClient>,
    /// The funding goal's latest figure (read by the offer, never computed per request).
    pub goal: kopilka_recurring::GoalCache,
    /// Reader accounts: token keys, the bounded password hasher, limits.
    pub accounts: kopilka_accounts::Accounts,
    /// The supporter token's live keys (reloaded from Postgres every minute).
    pub keyring: entitlements::SharedKeyring,
    /// The offer's reader-independent parts, pre-rendered.
    pub offers: offer::OfferBodies,
    /// Wakes workers after a webhook's event is stored (coalesced `NOTIFY`).
    pub wakeups: kopilka_queue::Wakeups,
    /// Checks webhook signatures against the configured endpoint secrets.
    pub webhooks: kopilka_stripe::WebhookVerifier,
    /// Checks BTCPay Server's `BTCPay-Sig` against the configured store webhook secrets.
    pub btcpay_webhooks: kopilka_btcpay::WebhookVerifier,
    /// Supporter tokens of erased readers, refused without a query.
    pub revoked: revocation::RevokedSupporters,
    /// The budgets of every public write, shared through Postgres.
    pub limits: limits::PublicLimits,
    /// The card-testing shield's state (refreshed from Postgres) and challenge.
    pub shield: Arc<shield::Shield>,
    /// The running ask experiments, in memory (reloaded on `NOTIFY` and a poll).
    pub experiments: kopilka_experiments::live::LiveExperiments,
}

impl AppState {
    /// State over `pool` and `settings`, with the Stripe client the settings describe.
    #[must_use]
    pub fn new(pool: PgPool, settings: Settings) -> Self {
        let stripe = kopilka_stripe::StripeClient::from_settings(&settings.stripe)
            .inspect_err(|err| tracing::error!(error = %err, "Stripe client not built"))
            .ok()
            .flatten();
        Self(Arc::new(Parts {
            wakeups: kopilka_queue::Wakeups::new(pool.clone()),
            webhooks: kopilka_stripe::WebhookVerifier::from_settings(&settings.stripe),
            btcpay_webhooks: kopilka_btcpay::WebhookVerifier::from_settings(&settings.btcpay),
            btcpay: kopilka_btcpay::BtcpayClient::from_settings(&settings.btcpay),
            pool,
            accounts: kopilka_accounts::Accounts::from_settings(&settings.accounts),
            keyring: entitlements::SharedKeyring::empty(&settings),
            offers: offer::OfferBodies::new(&settings),
            limits: limits::PublicLimits::new(&settings),
            shield: Arc::new(shield::Shield::new(&settings)),
            experiments: kopilka_experiments::live::LiveExperiments::default(),
            settings: Arc::new(settings),
            stripe,
            goal: kopilka_recurring::GoalCache::default(),
            revoked: revocation::RevokedSupporters::default(),
        }))
    }

    /// Starts what runs beside the requests: the goal's refresher, the keyring's reloader and
    /// the revoked supporters' listener (which holds a pooled connection for its `LISTEN`).
    /// Stop them with [`Background::stop`] before closing the pool: `PgPool::close` waits
    /// for every connection to come back.
    pub fn start_background(&self) -> Background {
        let poll = std::time::Duration::from_secs(self.settings.paywall.keys_reload_secs.max(1));
        let flush_every = std::time::Duration::from_secs(self.settings.experiments.flush_secs);
        let (stop_flushing, stop) = tokio::sync::watch::channel(false);
        Background {
            tasks: vec![
                self.revoked
                    .spawn_listener(self.pool.clone(), poll, self.experiments.clone()),
                self.keyring
                    .spawn_reloader(self.pool.clone(), Arc::clone(&self.settings), poll),
                self.goal
                    .spawn_refresher(self.pool.clone(), self.settings.offer.clone()),
                self.limits.spawn_flusher(self.pool.clone()),
                self.shield.spawn_refresher(self.pool.clone()),
            ],
            flusher: self
                .experiments
                .spawn_flusher(self.pool.clone(), flush_every, stop),
            stop_flushing,
        }
    }
}

/// The tasks [`AppState::start_background`] started.
#[must_use = "stop the tasks before closing the pool"]
pub struct Background {
    tasks: Vec<tokio::task::JoinHandle<()>>,
    /// The experiments' counts: told to stop, it flushes once more and ends (never aborted
    /// mid-flush), so a restart loses none of the counted views.
    flusher: tokio::task::JoinHandle<()>,
    stop_flushing: tokio::sync::watch::Sender<bool>,
}

impl Background {
    /// Stops every task and waits until each has ended (and returned its connection), then
    /// flushes the experiments' last counts.
    pub async fn stop(self) {
        for task in &self.tasks {
            task.abort();
        }
        for task in self.tasks {
            let _ = task.await;
        }
        let _ = self.stop_flushing.send(true);
        let _ = self.flusher.await;
    }
}

/// The whole API: every route, the OpenAPI document, metrics, the 404 envelope and the
/// layers.
pub fn router(state: AppState) -> Router {
    let settings = Arc::clone(&state.settings);
    let (routes, document) =
        api_routes_with(settings.server.webhook_body_limit_bytes).split_for_parts();
    let document = Arc::new(document);
    let mut routes = routes
        .route(
            "/openapi.json",
            get(move || {
                let document = Arc::clone(&document);
                async move { axum::Json(document) }
            }),
        )
        .merge(widget::routes(&settings));
    // Metrics are for operators: on the admin listener (`admin_router`), and here only to
    // the configured bearer token; without one the public API answers 404.
    if let Some(token) = &settings.server.metrics_token {
        let token = Arc::new(token.clone());
        routes = routes.route(
            "/metrics",
            get(move |headers: axum::http::HeaderMap| {
                metrics::render_to_bearer(axum::extract::State(Arc::clone(&token)), headers)
            }),
        );
    }
    if settings.server.baseline_route {
        let body = axum::body::Bytes::from(offer::constant_body(&settings));
        routes = routes.route(
            "/_baseline",
            get(move || std::future::ready(baseline(body.clone()))),
        );
    }
    let routes = routes
        .route_layer(axum::middleware::from_fn_with_state(
            state.clone(),
            limits::refuse_spent,
        ))
        .route_layer(axum::middleware::from_fn(metrics::track))
        .fallback(|| async { AppError::NotFound })
        .with_state(state);
    with_layers(routes, &settings)
}

/// `GET /_baseline` (with `server.baseline_route`): a constant, the size and shape of an
/// anonymous offer, for `scripts/bench` to measure the offer's own work against.
fn baseline(body: axum::body::Bytes) -> impl axum::response::IntoResponse {
    (
        [
            (axum::http::header::CONTENT_TYPE, "application/json"),
            (axum::http::header::CACHE_CONTROL, "private, no-store"),
        ],
        body,
    )
}

/// The OpenAPI document of every documented route.
#[must_use]
pub fn openapi() -> utoipa::openapi::OpenApi {
    api_routes().split_for_parts().1
}

/// Documented routes, each registered with its OpenAPI operation.
fn api_routes() -> OpenApiRouter<AppState> {
    api_routes_with(1024 * 1024)
}

fn api_routes_with(webhook_limit: usize) -> OpenApiRouter<AppState> {
    OpenApiRouter::with_openapi(openapi::ApiDoc::openapi())
        .merge(health::routes())
        .merge(offer::routes())
        .merge(checkout::routes())
        .merge(webhooks::routes(webhook_limit))
        .merge(accounts::routes())
        .merge(me::routes())
        .merge(reminders::routes())
        .merge(entitlements::routes())
        .merge(passes::routes())
}
