//! Who is asking: the signed-in reader (session cookie or bearer token), the client's IP,
//! and the CSRF rule for cookie-authenticated changes. A handler's signature says who may
//! call it: [`SignedIn`] requires a session, [`MaybeSignedIn`] accepts anyone.

use std::net::{IpAddr, SocketAddr};

use axum::extract::{ConnectInfo, FromRequestParts};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, Method, header};
use kopilka_domain::id::ReaderId;
use secrecy::{ExposeSecret, SecretString};
use time::OffsetDateTime;

use crate::{AppError, AppState};

/// The session cookie: host-only, Secure, HttpOnly, SameSite=Lax.
pub(crate) const SESSION_COOKIE: &str = "__Host-kopilka_session";

/// A reader with a live session.
#[derive(Debug, Clone, Copy)]
pub struct SignedIn {
    /// Their session.
    pub session_id: uuid::Uuid,
    /// Who they are.
    pub reader_id: ReaderId,
    /// Whether they may see what is linked to their address (see the accounts crate).
    pub sees_linked: bool,
}

/// A reader who may or may not be signed in.
#[derive(Debug, Clone, Copy)]
pub struct MaybeSignedIn(pub Option<SignedIn>);

/// The client's IP, for throttling (the configured proxy header, else the peer).
#[derive(Debug, Clone, Copy)]
pub struct ClientIp(pub Option<IpAddr>);

/// The value of cookie `name` in the request's `Cookie` headers.
pub(crate) fn cookie(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(cookie::Cookie::split_parse)
        .filter_map(Result::ok)
        .find(|c| c.name() == name)
        .map(|c| c.value().to_owned())
}

/// The session token of a request, and whether it came in a cookie.
fn session_token(headers: &HeaderMap) -> Option<(SecretString, bool)> {
    let bearer = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(|t| (SecretString::from(t.trim().to_owned()), false));
    bearer.or_else(|| cookie(headers, SESSION_COOKIE).map(|t| (SecretString::from(t), true)))
}

/// Cookie-authenticated changes must come from the API's own origin or a configured site:
/// `Sec-Fetch-Site: same-origin|none`, else an `Origin` on the allowlist. A request with
/// neither header is not from a browser, so it cannot be a forged cross-site one.
pub(crate) fn same_site_request(
    method: &Method,
    headers: &HeaderMap,
    settings: &kopilka_config::Settings,
) -> bool {
    if matches!(*method, Method::GET | Method::HEAD | Method::OPTIONS) {
        return true;
    }
    let fetch_site = headers.get("sec-fetch-site").and_then(|v| v.to_str().ok());
    if matches!(fetch_site, Some("same-origin" | "none")) {
        return true;
    }
    match headers.get(header::ORIGIN).and_then(|v| v.to_str().ok()) {
        Some(origin) => {
            origin == settings.public_url.origin().ascii_serialization()
                || settings
                    .server
                    .cors_allowed_origins
                    .iter()
                    .any(|o| o == origin)
        }
        None => fetch_site.is_none(),
    }
}

async fn signed_in(parts: &Parts, state: &AppState) -> Result<Option<SignedIn>, AppError> {
    let Some((token, via_cookie)) = session_token(&parts.headers) else {
        return Ok(None);
    };
    if via_cookie && !same_site_request(&parts.method, &parts.headers, &state.settings) {
        return Err(AppError::Forbidden {
            code: "cross_site_request",
            message: "a cookie-authenticated change must come from the newsroom's own site".into(),
        });
    }
    let mut conn = state
        .pool
        .acquire()
        .await
        .map_err(|e| AppError::from(kopilka_store::StoreError::from(e)))?;
    let found = kopilka_accounts::session::authenticate(
        &mut conn,
        &token,
        state.settings.accounts.session_idle(),
        OffsetDateTime::now_utc(),
    )
    .await?;
    Ok(found.map(|s| SignedIn {
        session_id: s.session_id,
        reader_id: s.reader_id,
        sees_linked: s.sees_linked,
    }))
}

impl FromRequestParts<AppState> for SignedIn {
    type Rejection = AppError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, AppError> {
        signed_in(parts, state)
            .await?
            .ok_or(AppError::Unauthorized {
                code: "unauthenticated",
                message: "sign in first".into(),
            })
    }
}

impl FromRequestParts<AppState> for MaybeSignedIn {
    type Rejection = AppError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, AppError> {
        // A stale or revoked token is simply "not signed in" here.
        match signed_in(parts, state).await {
            Ok(found) => Ok(Self(found)),
            Err(AppError::Forbidden { .. }) => Ok(Self(None)),
            Err(err) => Err(err),
        }
    }
}

impl<S: Send + Sync> FromRequestParts<S> for ClientIp
where
    AppState: axum::extract::FromRef<S>,
{
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let state = <AppState as axum::extract::FromRef<S>>::from_ref(state);
        let from_header = state
            .settings
            .server
            .client_ip_header
            .as_deref()
            .and_then(|name| parts.headers.get(name))
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.rsplit(',').next())
            .and_then(|v| v.trim().parse().ok());
        let peer = parts
            .extensions
            .get::<ConnectInfo<SocketAddr>>()
            .map(|ConnectInfo(addr)| addr.ip());
        Ok(Self(from_header.or(peer)))
    }
}

/// `Set-Cookie` for a new session.
pub(crate) fn session_cookie(token: &SecretString, expires_at: OffsetDateTime) -> HeaderValue {
    host_cookie(SESSION_COOKIE, token.expose_secret(), expires_at)
}

/// `Set-Cookie` for every cookie Kopilka sets: `__Host-` rules (Secure, Path=/, no Domain),
/// HttpOnly, SameSite=Lax, until `expires_at`.
pub(crate) fn host_cookie(name: &str, value: &str, expires_at: OffsetDateTime) -> HeaderValue {
    let cookie = cookie::Cookie::build((name.to_owned(), value.to_owned()))
        .path("/")
        .secure(true)
        .http_only(true)
        .same_site(cookie::SameSite::Lax)
        .expires(expires_at)
        .build();
    HeaderValue::from_str(&cookie.to_string()).unwrap_or_else(|_| HeaderValue::from_static(""))
}

/// `Set-Cookie` that removes the session cookie.
pub(crate) fn cleared_session_cookie() -> HeaderValue {
    HeaderValue::from_static(
        "__Host-kopilka_session=; Path=/; Secure; HttpOnly; SameSite=Lax; Max-Age=0",
    )
}
