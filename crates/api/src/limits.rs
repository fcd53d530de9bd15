//! No free work for strangers (issue #19): every public write counts against its client's
//! budget (IP; IPv6 per /64), the budget of the address it names, and the route's global
//! budget (`[limits]`), shared by every instance through Postgres without a query on the
//! request's path ([`kopilka_store::limits`]). Over a budget: 429 `rate_limited` with
//! `Retry-After`, the same answer whether the address has an account or not. Clients and
//! addresses are counted under keyed HMACs, never as themselves.
//!
//! Work a request leaves running after its answer is bounded too ([`PublicLimits::task`]):
//! past `limits.background_tasks`, 503 `busy` with `Retry-After` — never an unbounded pile
//! of tasks, never accepted work dropped.

use std::net::IpAddr;
use std::sync::Arc;

use kopilka_accounts::keys::{Keys, Purpose};
use kopilka_config::{LimitsSettings, RouteLimit, Settings};
use kopilka_domain::Email;
use kopilka_store::PgPool;
use kopilka_store::limits::{Budget, Limiter, Refusal};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::error::AppError;

/// A public write.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Route {
    Checkout,
    SignUp,
    SignInLink,
    SignIn,
    Reminder,
    PlanLink,
    PassCode,
}

impl Route {
    fn name(self) -> &'static str {
        match self {
            Self::Checkout => "checkout",
            Self::SignUp => "sign_up",
            Self::SignInLink => "sign_in_link",
            Self::SignIn => "sign_in",
            Self::Reminder => "reminder",
            Self::PlanLink => "plan_link",
            Self::PassCode => "pass_code",
        }
    }

    /// Every public write, in a fixed order (see [`Route::index`]).
    const ALL: [Self; 7] = [
        Self::Checkout,
        Self::SignUp,
        Self::SignInLink,
        Self::SignIn,
        Self::Reminder,
        Self::PlanLink,
        Self::PassCode,
    ];

    /// Its place in [`Route::ALL`].
    fn index(self) -> usize {
        Self::ALL.iter().position(|r| *r == self).unwrap_or(0)
    }

    fn limit(self, settings: &LimitsSettings) -> RouteLimit {
        match self {
            Self::Checkout => settings.checkout,
            Self::SignUp => settings.sign_up,
            Self::SignInLink => settings.sign_in_link,
            Self::SignIn => settings.sign_in,
            Self::Reminder => settings.reminder,
            Self::PlanLink => settings.plan_link,
            Self::PassCode => settings.pass_code,
        }
    }
}

/// The budgets of every public write, and the bound on work left running.
pub struct PublicLimits {
    limiter: Arc<Limiter>,
    /// Each route's global budgets (its window's and, with a burst factor, its second's)
    /// under their keys, made once: a flood's refusals build no key.
    globals: [Vec<(String, Budget)>; 7],
    settings: LimitsSettings,
    keys: Keys,
    tasks: Arc<Semaphore>,
    writes: Arc<Semaphore>,
}

/// An admitted public write: holds its place among the writes in flight until dropped
/// (keep it for the handler's whole run).
#[must_use = "hold it while the write is handled"]
pub(crate) struct Admitted(#[allow(dead_code)] OwnedSemaphorePermit);

impl PublicLimits {
    /// Limits as `settings` configure them.
    #[must_use]
    pub fn new(settings: &Settings) -> Self {
        Self {
            globals: Route::ALL.map(|route| global_hits(route, &settings.limits)),
            limiter: Limiter::new(settings.limits.max_keys),
            settings: settings.limits,
            keys: Keys::from_settings(&settings.accounts),
            tasks: Arc::new(Semaphore::new(settings.limits.background_tasks)),
            writes: Arc::new(Semaphore::new(settings.limits.writes_in_flight)),
        }
    }

    /// Counts one request of `route` from `ip` naming `email`, or refuses it (429; 503 when
    /// this instance can hold no more counters, or as many public writes are in flight as
    /// it may handle at once). Hold the answer while the write is handled.
    pub(crate) fn admit(
        &self,
        route: Route,
        ip: Option<IpAddr>,
        email: Option<&Email>,
    ) -> Result<Admitted, AppError> {
        let name = route.name();
        let owned = self.hits(route, ip, email);
        let hits: Vec<(&str, Budget)> = owned.iter().map(|(k, b)| (k.as_str(), *b)).collect();
        let now = kopilka_store::limits::unix_now();
        let refused = |refusal| match refusal {
            Refusal::Over { retry_after } => {
                metrics::counter!("kopilka_rate_limited_total", "route" => name).increment(1);
                AppError::TooManyRequests {
                    code: "rate_limited",
                    message: "too many requests; try again later".into(),
                    retry_after_secs: retry_after.as_secs(),
                }
            }
            Refusal::Full { retry_after } => AppError::Busy {
                retry_after_secs: retry_after.as_secs(),
            },
        };
        // A place first: a refusal for a full house counts against no budget. But a request
        // over its budget is told so (429 until its window turns) whether or not the house
        // is full: a flood's refused requests never take places, and never hear "come back
        // in a second".
        let Ok(place) = Arc::clone(&self.writes).try_acquire_owned() else {
            self.limiter.peek(&hits, now).map_err(refused)?;
            metrics::counter!("kopilka_busy_total").increment(1);
            return Err(AppError::Busy {
                retry_after_secs: 1,
            });
        };
        self.limiter.admit(&hits, now).map_err(refused)?;
        Ok(Admitted(place))
    }

    /// Refuses a request of `route` from `ip` when the route's or the client's budget is
    /// already spent, counting nothing: the check [`refuse_spent`] makes before a body is
    /// read. The handler's [`Self::admit`] still counts (and checks the address's budget).
    fn refuse_spent(&self, route: Route, ip: Option<IpAddr>) -> Result<(), AppError> {
        let refused = |refusal| {
            let (Refusal::Over { retry_after } | Refusal::Full { retry_after }) = refusal;
            metrics::counter!("kopilka_rate_limited_total", "route" => route.name()).increment(1);
            AppError::TooManyRequests {
                code: "rate_limited",
                message: "too many requests; try again later".into(),
                retry_after_secs: retry_after.as_secs(),
            }
        };
        let now = kopilka_store::limits::unix_now();
        // The route's own budgets first, from keys made once: in a flood they are spent
        // first, and the refusal then costs no client key (no HMAC, no allocation).
        let globals = &self.globals[route.index()];
        let mut hits = [(
            "",
            Budget {
                limit: 0,
                window_secs: 1,
            },
        ); 2];
        for (slot, (key, budget)) in hits.iter_mut().zip(globals) {
            *slot = (key.as_str(), *budget);
        }
        self.limiter
            .peek(&hits[..globals.len()], now)
            .map_err(refused)?;
        let Some(ip) = ip else {
            return Ok(());
        };
        let limit = route.limit(&self.settings);
        let client = format!(
            "{}:client:{}",
            route.name(),
            kopilka_contributions::shield::client_key(&self.keys, ip)
        );
        self.limiter
            .peek(
                &[(
                    client.as_str(),
                    Budget {
                        limit: limit.per_client,
                        window_secs: limit.window_secs,
                    },
                )],
                now,
            )
            .map_err(refused)
    }

    /// The budgets a request of `route` from `ip` naming `email` counts against: the
    /// route's window and second, the client's and the address's, each under its key.
    fn hits(
        &self,
        route: Route,
        ip: Option<IpAddr>,
        email: Option<&Email>,
    ) -> Vec<(String, Budget)> {
        let limit = route.limit(&self.settings);
        let budget = |n: u32| Budget {
            limit: n,
            window_secs: limit.window_secs,
        };
        let name = route.name();
        let mut hits = self.globals[route.index()].clone();
        if let Some(ip) = ip {
            hits.push((
                format!(
                    "{name}:client:{}",
                    kopilka_contributions::shield::client_key(&self.keys, ip)
                ),
                budget(limit.per_client),
            ));
        }
        if let Some(email) = email.filter(|_| limit.per_address > 0) {
            hits.push((
                format!(
                    "{name}:address:{}",
                    self.keys
                        .digest(Purpose::AddressKey, email.expose().as_bytes())
                ),
                budget(limit.per_address),
            ));
        }
        hits
    }

    /// A place for work that outlives its request's answer, or 503 `busy` when every place
    /// is taken. Hold the permit until the work is done.
    pub(crate) fn task(&self) -> Result<OwnedSemaphorePermit, AppError> {
        Arc::clone(&self.tasks).try_acquire_owned().map_err(|_| {
            metrics::counter!("kopilka_busy_total").increment(1);
            AppError::Busy {
                retry_after_secs: 1,
            }
        })
    }

    /// Starts sharing this instance's counts through Postgres.
    pub(crate) fn spawn_flusher(&self, pool: PgPool) -> tokio::task::JoinHandle<()> {
        self.limiter.spawn_flusher(pool, self.settings.flush())
    }
}

/// A route's global budgets under their keys: its window's, and (with a burst factor) its
/// second's.
fn global_hits(route: Route, settings: &LimitsSettings) -> Vec<(String, Budget)> {
    let limit = route.limit(settings);
    let name = route.name();
    let mut hits = vec![(
        format!("{name}:global"),
        Budget {
            limit: limit.global,
            window_secs: limit.window_secs,
        },
    )];
    if settings.burst_factor > 0 {
        let per_second = u64::from(limit.global) * u64::from(settings.burst_factor)
            / u64::from(limit.window_secs.max(1));
        hits.push((
            format!("{name}:global:second"),
            Budget {
                limit: u32::try_from(per_second.max(1)).unwrap_or(u32::MAX),
                window_secs: 1,
            },
        ));
    }
    hits
}

/// A public write's route, by its method and matched template; `None` for every other.
fn public_write(method: &axum::http::Method, template: &str) -> Option<Route> {
    if method != axum::http::Method::POST {
        return None;
    }
    match template {
        "/v1/checkout" => Some(Route::Checkout),
        "/v1/accounts" => Some(Route::SignUp),
        "/v1/sessions/magic-link" => Some(Route::SignInLink),
        "/v1/sessions" => Some(Route::SignIn),
        "/v1/reminders" => Some(Route::Reminder),
        "/v1/passes/redeem" | "/v1/passes/revoke" => Some(Route::PassCode),
        _ => None,
    }
}

/// Middleware on every route: a public write whose route's or client's budget is spent is
/// refused (429) before its body is read, parsed or validated — a flood's refusals cost no
/// JSON parsing and no address HMAC. Everything else passes untouched; the handler still
/// counts the request (and checks the address's budget) when it is admitted.
pub(crate) async fn refuse_spent(
    axum::extract::State(state): axum::extract::State<crate::AppState>,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    use axum::extract::FromRequestParts as _;
    use axum::response::IntoResponse as _;
    // Every other route (the offer among them) passes at the cost of one match: the
    // client's address is read only for a public write.
    let Some(route) = public_write(request.method(), crate::layers::route_of(&request)) else {
        return next.run(request).await;
    };
    let (mut parts, body) = request.into_parts();
    let Ok(crate::ClientIp(ip)) = crate::ClientIp::from_request_parts(&mut parts, &state).await;
    if let Err(refused) = state.limits.refuse_spent(route, ip) {
        return refused.into_response();
    }
    next.run(axum::extract::Request::from_parts(parts, body))
        .await
}
