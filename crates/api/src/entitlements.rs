//! The supporter token: `GET /v1/entitlements` signs one for the signed-in reader, and
//! `GET /.well-known/jwks.json` publishes the public keys a site or CDN verifies it with.
//! The keyring lives in memory and is reloaded from the key ids in Postgres every minute,
//! so `kopilka admin keys rotate` reaches every instance without a restart.

use std::sync::{Arc, RwLock};
use std::time::Duration;

use axum::extract::State;
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};
use kopilka_config::Settings;
use kopilka_paywall::{KeyRecord, Keyring, SupporterClaims};
use kopilka_store::PgPool;
use serde::Serialize;
use time::OffsetDateTime;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::identity::SignedIn;
use crate::{ApiJson, AppError, AppState, ErrorBody};

/// The supporter-token cookie (host-only) for same-site use.
pub(crate) const SUPPORTER_COOKIE: &str = "__Host-kopilka_supporter";

/// The live keyring, shared by every request; replaced whole when reloaded.
#[derive(Clone)]
pub struct SharedKeyring(Arc<RwLock<Arc<Keyring>>>);

impl std::fmt::Debug for SharedKeyring {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SharedKeyring")
    }
}

fn issuer(settings: &Settings) -> String {
    settings.public_url.origin().ascii_serialization()
}

fn audience(settings: &Settings) -> String {
    settings
        .paywall
        .audience
        .clone()
        .unwrap_or_else(|| issuer(settings))
}

impl SharedKeyring {
    /// An empty keyring (nothing signs or verifies until [`Self::reload`]).
    #[must_use]
    pub fn empty(settings: &Settings) -> Self {
        Self(Arc::new(RwLock::new(Arc::new(Keyring::new(
            settings.paywall.secret_bytes(),
            &[],
            0,
            &issuer(settings),
            &audience(settings),
        )))))
    }

    /// The current keyring.
    #[must_use]
    pub fn get(&self) -> Arc<Keyring> {
        Arc::clone(
            &self
                .0
                .read()
                .unwrap_or_else(std::sync::PoisonError::into_inner),
        )
    }

    /// Reloads the key ids (creating the first key on a new database).
    ///
    /// # Errors
    /// Storage errors.
    pub async fn reload(&self, pool: &PgPool, settings: &Settings) -> Result<(), AppError> {
        let now = OffsetDateTime::now_utc();
        let mut tx = pool
            .begin()
            .await
            .map_err(|e| AppError::from(kopilka_store::StoreError::from(e)))?;
        let keys = kopilka_accounts::signing_key::ensure_one(&mut tx, now).await?;
        tx.commit()
            .await
            .map_err(|e| AppError::from(kopilka_store::StoreError::from(e)))?;
        let records: Vec<KeyRecord> = keys
            .into_iter()
            .map(|k| KeyRecord {
                kid: k.kid,
                created_at: k.created_at.unix_timestamp(),
                retires_at: k.retires_at.map(OffsetDateTime::unix_timestamp),
            })
            .collect();
        let ring = Keyring::new(
            settings.paywall.secret_bytes(),
            &records,
            now.unix_timestamp(),
            &issuer(settings),
            &audience(settings),
        );
        let mut current = self
            .0
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        // Unchanged keys keep the keyring, and with it the remembered tokens.
        if !current.same_keys(&ring) {
            *current = Arc::new(ring);
        }
        Ok(())
    }

    /// Reloads now and then every `every`, forever.
    pub fn spawn_reloader(
        &self,
        pool: PgPool,
        settings: Arc<Settings>,
        every: Duration,
    ) -> tokio::task::JoinHandle<()> {
        let ring = self.clone();
        tokio::spawn(async move {
            loop {
                if let Err(err) = ring.reload(&pool, &settings).await {
                    tracing::warn!(error = %err, "signing keys not reloaded");
                }
                tokio::time::sleep(every).await;
            }
        })
    }
}

/// The keyring, loaded first if this instance has not loaded it yet (a request right after
/// start-up).
async fn loaded(state: &AppState) -> Result<Arc<Keyring>, AppError> {
    let ring = state.keyring.get();
    if ring.signing_kid().is_some() {
        return Ok(ring);
    }
    state.keyring.reload(&state.pool, &state.settings).await?;
    Ok(state.keyring.get())
}

pub(crate) fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(entitlements))
        .routes(routes!(jwks))
}

/// `GET /v1/entitlements`.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Entitlements {
    /// The supporter token (EdDSA JWT); verify it with `/.well-known/jwks.json`.
    pub token: String,
    /// What it says.
    #[schema(value_type = Object)]
    pub claims: SupporterClaims,
    /// After a pass code's redemption by an anonymous holder: the token that renews this
    /// one at `GET /v1/passes/entitlements` (also set as the `__Host-kopilka_pass` cookie).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub holder_token: Option<String>,
}

/// A fresh supporter token for the signed-in reader (24 h by default), also set as the
/// `__Host-kopilka_supporter` cookie. An account whose address is not proven gets a token
/// that says `supporter: false` whatever the address gave.
#[utoipa::path(get, path = "/v1/entitlements", tag = "paywall",
    responses((status = 200, body = Entitlements), (status = 401, body = ErrorBody), (status = 503, body = ErrorBody)))]
async fn entitlements(
    State(state): State<AppState>,
    reader: SignedIn,
) -> Result<Response, AppError> {
    let now = OffsetDateTime::now_utc();
    let mut conn = crate::me::conn(&state).await?;
    let status = if reader.sees_linked {
        Some(
            kopilka_recurring::supporter_status(
                &mut conn,
                reader.reader_id,
                now,
                state.settings.offer.supporter_days,
            )
            .await?,
        )
    } else {
        None
    };
    let banner = kopilka_accounts::banner::load(&mut conn, reader.reader_id).await?;
    drop(conn);
    signed_answer(
        &state,
        reader.reader_id.to_string(),
        status,
        banner.hides_asks_until(),
        None,
        now,
    )
    .await
}

/// A supporter token for `sub` in `status` (none: not a supporter), hiding asks until
/// `hides_asks_until` or the end of what was paid, signed and set as the supporter cookie.
pub(crate) async fn signed_answer(
    state: &AppState,
    sub: String,
    status: Option<kopilka_recurring::SupporterStatus>,
    hides_asks_until: Option<OffsetDateTime>,
    holder_token: Option<String>,
    now: OffsetDateTime,
) -> Result<Response, AppError> {
    let supporter = status.is_some_and(|s| s.supporter);
    let tier = status.filter(|_| supporter).and_then(|s| {
        if s.pass {
            Some("pass".to_owned())
        } else {
            s.interval.map(|i| i.to_string())
        }
    });
    let paid_through = status
        .and_then(|s| s.paid_through)
        .map(OffsetDateTime::unix_timestamp);
    let hide_asks_until = [
        hides_asks_until,
        status.and_then(|s| s.paid_through).filter(|_| supporter),
    ]
    .into_iter()
    .flatten()
    .filter(|until| *until > now)
    .max()
    .map(OffsetDateTime::unix_timestamp);
    let ring = loaded(state).await?;
    let exp = now + time::Duration::hours(i64::from(state.settings.paywall.token_hours));
    let claims = SupporterClaims {
        sub,
        supporter,
        tier: tier.clone(),
        interval: tier,
        paid_through,
        hide_asks_until,
        iss: ring.issuer().to_owned(),
        aud: ring.audience().to_owned(),
        iat: now.unix_timestamp(),
        exp: exp.unix_timestamp(),
    };
    let token = ring.sign(&claims).map_err(|_| AppError::Unavailable)?;
    let cookie = crate::identity::host_cookie(SUPPORTER_COOKIE, &token, exp);
    let mut response = ApiJson(Entitlements {
        token,
        claims,
        holder_token,
    })
    .into_response();
    response.headers_mut().insert(header::SET_COOKIE, cookie);
    response
        .headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    Ok(response)
}

/// The public keys of the supporter token: the current and previous ones (and any still in
/// their grace period after a rotation). Cacheable for five minutes.
#[utoipa::path(get, path = "/.well-known/jwks.json", tag = "paywall",
    responses((status = 200, description = "A JWK Set (OKP, Ed25519)", body = Object)))]
async fn jwks(State(state): State<AppState>) -> Result<Response, AppError> {
    let ring = loaded(&state).await?;
    Ok((
        [(header::CACHE_CONTROL, "public, max-age=300")],
        axum::Json(ring.jwks().clone()),
    )
        .into_response())
}
