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

/// The cookies Kopilka reads, parsed once per request: the offer reads five of them on every
/// page view, and parsing the `Cookie` header five times cost more than the rest of the
/// view. The first of each name counts (as [`cookie`] finds it).
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct Jar<'a> {
    /// `__Host-kopilka_session`.
    pub session: Option<&'a str>,
    /// `__Host-kopilka_supporter`.
    pub supporter: Option<&'a str>,
    /// `__Host-kopilka_banner`.
    pub banner: Option<&'a str>,
    /// `__Host-kopilka_meter`.
    pub meter: Option<&'a str>,
    /// `__Host-kopilka_visitor`.
    pub visitor: Option<&'a str>,
}

impl<'a> Jar<'a> {
    /// The request's cookies of those names, their values as sent.
    pub fn parse(headers: &'a HeaderMap) -> Self {
        let mut jar = Self::default();
        for value in headers.get_all(header::COOKIE) {
            let Ok(text) = value.to_str() else {
                continue;
            };
            for pair in text.split(';') {
                let Some((name, value)) = pair.split_once('=') else {
                    continue;
                };
                let value = value.trim();
                let slot = match name.trim() {
                    SESSION_COOKIE => &mut jar.session,
                    crate::entitlements::SUPPORTER_COOKIE => &mut jar.supporter,
                    crate::reminders::BANNER_COOKIE => &mut jar.banner,
                    crate::offer::METER_COOKIE => &mut jar.meter,
                    crate::visitor::VISITOR_COOKIE => &mut jar.visitor,
                    _ => continue,
                };
                slot.get_or_insert(value);
            }
        }
        jar
    }
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

/// Whether a cookie-authenticated request may act. An `Origin` a browser sends must be the
/// API's own or, on a route the widget calls, a configured site (`/v1/me…` and the plan
/// routes are same-origin only); a foreign one is refused for every change, and for any
/// request claiming `Sec-Fetch-Site: none` (a typed URL or bookmark has no foreign origin:
/// that is no browser's navigation). A change without `Origin` needs `Sec-Fetch-Site`
/// `same-origin` or `none`, or neither header (not a browser, so not a forged cross-site
/// request). Reads pass otherwise: CORS decides what a page may read.
pub(crate) fn same_site_request(
    method: &Method,
    path: &str,
    headers: &HeaderMap,
    settings: &kopilka_config::Settings,
) -> bool {
    let change = !matches!(*method, Method::GET | Method::HEAD | Method::OPTIONS);
    let fetch_site = headers.get("sec-fetch-site").map(HeaderValue::as_bytes);
    match headers.get(header::ORIGIN) {
        Some(origin) => {
            let ours = origin.as_bytes()
                == settings
                    .public_url
                    .origin()
                    .ascii_serialization()
                    .as_bytes();
            let configured = crate::cross_origin::widget_route(path)
                && settings
                    .server
                    .cors_allowed_origins
                    .iter()
                    .any(|o| o.as_bytes() == origin.as_bytes());
            ours || configured || !(change || fetch_site == Some(b"none"))
        }
        None => !change || matches!(fetch_site, None | Some(b"same-origin" | b"none")),
    }
}

/// Whether a change carries JSON or no declared body: a cookie-authenticated change with a
/// form's or `text/plain` body is what a cross-site page can send without asking CORS.
fn json_or_no_body(method: &Method, headers: &HeaderMap) -> bool {
    if matches!(*method, Method::GET | Method::HEAD | Method::OPTIONS) {
        return true;
    }
    headers
        .get(header::CONTENT_TYPE)
        .is_none_or(|value| is_json(value.as_bytes()))
}

/// `application/json` or `application/*+json`, with any parameters.
pub(crate) fn is_json(content_type: &[u8]) -> bool {
    let Ok(text) = std::str::from_utf8(content_type) else {
        return false;
    };
    let essence = text
        .split(';')
        .next()
        .unwrap_or_default()
        .trim()
        .to_ascii_lowercase();
    essence == "application/json"
        || (essence.starts_with("application/") && essence.ends_with("+json"))
}

async fn signed_in(parts: &Parts, state: &AppState) -> Result<Option<SignedIn>, AppError> {
    let Some((token, via_cookie)) = session_token(&parts.headers) else {
        return Ok(None);
    };
    if via_cookie
        && !same_site_request(
            &parts.method,
            parts.uri.path(),
            &parts.headers,
            &state.settings,
        )
    {
        return Err(AppError::Forbidden {
            code: "cross_site_request",
            message: "a cookie-authenticated change must come from the newsroom's own site".into(),
        });
    }
    if via_cookie && !json_or_no_body(&parts.method, &parts.headers) {
        return Err(AppError::UnsupportedMediaType);
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

impl ClientIp {
    /// The key every per-client limit counts this client under: an IPv4 address as it is,
    /// an IPv6 address as its /64 ([`kopilka_domain::client::throttle_key`]).
    #[must_use]
    pub fn throttle_key(self) -> Option<IpAddr> {
        self.0.map(kopilka_domain::client::throttle_key)
    }
}

/// The client's address: the TCP `peer`, unless the peer is one of
/// `server.trusted_proxies`; then the right-most address of the configured header's
/// `forwarded` values (in the order they came) that is not itself a trusted proxy (every
/// proxy appends the address it was reached from, so the entries left of the first
/// untrusted one are whatever the client chose to send). If every entry is trusted, the
/// left-most; an entry that is not an address ends the walk at the last trusted hop.
#[must_use]
pub fn client_address<'a>(
    peer: IpAddr,
    forwarded: impl DoubleEndedIterator<Item = &'a str>,
    server: &kopilka_config::ServerSettings,
) -> IpAddr {
    let peer = peer.to_canonical();
    if server.client_ip_header.is_none() || !server.is_trusted_proxy(peer) {
        return peer;
    }
    let mut client = peer;
    // A proxy chain is short; a header of thousands of entries is not walked to its end.
    for entry in forwarded.rev().flat_map(|v| v.rsplit(',')).take(32) {
        let Some(ip) = forwarded_address(entry) else {
            break;
        };
        client = ip;
        if !server.is_trusted_proxy(ip) {
            break;
        }
    }
    client
}

/// One entry of a forwarded header: `203.0.113.7`, `2001:db8::1`, or with a port
/// (`203.0.113.7:443`, `[2001:db8::1]:443`), as some proxies write it.
fn forwarded_address(entry: &str) -> Option<IpAddr> {
    let entry = entry.trim();
    entry
        .parse::<IpAddr>()
        .or_else(|_| entry.parse::<SocketAddr>().map(|a| a.ip()))
        .ok()
        .map(|ip| ip.to_canonical())
}

impl<S: Send + Sync> FromRequestParts<S> for ClientIp
where
    AppState: axum::extract::FromRef<S>,
{
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let state = <AppState as axum::extract::FromRef<S>>::from_ref(state);
        let server = &state.settings.server;
        let Some(ConnectInfo(peer)) = parts.extensions.get::<ConnectInfo<SocketAddr>>() else {
            return Ok(Self(None));
        };
        let forwarded = server
            .client_ip_header
            .as_deref()
            .map(|name| {
                parts
                    .headers
                    .get_all(name)
                    .iter()
                    .filter_map(|v| v.to_str().ok())
                    .collect::<Vec<_>>()
            })
            .unwrap_or_default();
        Ok(Self(Some(client_address(
            peer.ip(),
            forwarded.into_iter(),
            server,
        ))))
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

#[cfg(test)]
mod tests {
    use std::net::IpAddr;

    #[test]
    fn the_jar_reads_each_cookie_once_as_the_cookie_helper_does() {
        let mut headers = axum::http::HeaderMap::new();
        headers.append(
            axum::http::header::COOKIE,
            "a=1; __Host-kopilka_visitor=\"v1\"; __Host-kopilka_meter=m;  __Host-kopilka_visitor=v2"
                .parse()
                .unwrap(),
        );
        headers.append(
            axum::http::header::COOKIE,
            "__Host-kopilka_session=s; broken; __Host-kopilka_banner=b=c"
                .parse()
                .unwrap(),
        );
        let jar = super::Jar::parse(&headers);
        assert_eq!(jar.visitor, Some("\"v1\""));
        assert_eq!(jar.meter, Some("m"));
        assert_eq!(jar.session, Some("s"));
        assert_eq!(jar.banner, Some("b=c"));
        assert_eq!(jar.supporter, None);
        for name in [
            "__Host-kopilka_visitor",
            "__Host-kopilka_meter",
            "__Host-kopilka_session",
            "__Host-kopilka_banner",
        ] {
            let helper = super::cookie(&headers, name);
            let parsed = match name {
                "__Host-kopilka_visitor" => jar.visitor,
                "__Host-kopilka_meter" => jar.meter,
                "__Host-kopilka_session" => jar.session,
                _ => jar.banner,
            };
            assert_eq!(helper.as_deref(), parsed, "{name}");
        }
    }

    use super::client_address;

    fn server(header: Option<&str>, proxies: &[&str]) -> kopilka_config::ServerSettings {
        let mut settings = kopilka_config::Settings::for_env(
            kopilka_config::Environment::Test,
            std::path::Path::new("/nonexistent"),
        )
        .expect("test settings")
        .server;
        settings.client_ip_header = header.map(str::to_owned);
        settings.trusted_proxies = proxies.iter().map(|p| p.parse().unwrap()).collect();
        settings
    }

    fn client(peer: &str, forwarded: &[&str], server: &kopilka_config::ServerSettings) -> String {
        client_address(
            peer.parse::<IpAddr>().unwrap(),
            forwarded.iter().copied(),
            server,
        )
        .to_string()
    }

    #[test]
    fn a_forwarded_header_counts_only_from_a_trusted_proxy() {
        let lb = server(Some("x-forwarded-for"), &["10.0.0.0/8", "fd00::/8"]);
        // Directly connected: the header is whatever the client wrote.
        assert_eq!(
            client("198.51.100.9", &["203.0.113.7"], &lb),
            "198.51.100.9"
        );
        // Through the load balancer: the address it saw.
        assert_eq!(client("10.1.2.3", &["203.0.113.7"], &lb), "203.0.113.7");
        // A forged left part is skipped: the right-most untrusted entry counts.
        assert_eq!(
            client("10.1.2.3", &["1.2.3.4, 203.0.113.7, 10.9.9.9"], &lb),
            "203.0.113.7"
        );
        // Several header lines read as one list, in order.
        assert_eq!(
            client("10.1.2.3", &["1.2.3.4", "203.0.113.7, 10.0.0.5"], &lb),
            "203.0.113.7"
        );
        // Garbage ends the walk at the last trusted hop.
        assert_eq!(client("10.1.2.3", &["203.0.113.7, junk"], &lb), "10.1.2.3");
        assert_eq!(client("10.1.2.3", &[], &lb), "10.1.2.3");
        // Ports and brackets some proxies add; IPv4-mapped peers.
        assert_eq!(
            client("10.1.2.3", &["[2001:db8::5]:443"], &lb),
            "2001:db8::5"
        );
        assert_eq!(
            client("::ffff:10.1.2.3", &["203.0.113.8:1234"], &lb),
            "203.0.113.8"
        );
        // Every entry trusted: the left-most.
        assert_eq!(client("10.1.2.3", &["10.0.0.7, 10.0.0.8"], &lb), "10.0.0.7");
        // No header configured: the peer, whatever is sent.
        let direct = server(None, &[]);
        assert_eq!(client("10.1.2.3", &["203.0.113.7"], &direct), "10.1.2.3");
    }

    #[test]
    fn a_cdn_header_names_the_client() {
        let cdn = server(Some("cf-connecting-ip"), &["173.245.48.0/20"]);
        assert_eq!(
            client("173.245.48.1", &["2001:db8:1::1"], &cdn),
            "2001:db8:1::1"
        );
        assert_eq!(
            client("203.0.113.1", &["2001:db8:1::1"], &cdn),
            "203.0.113.1"
        );
    }
}
