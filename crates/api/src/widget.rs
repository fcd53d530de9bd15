//! `GET /widget.js`, the embeddable donation widget (one dependency-free script, en and
//! ru), and under `kopilka dev` the demo article page at `/` that embeds it.

use std::fmt::Write as _;
use std::sync::LazyLock;

use axum::Router;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use kopilka_config::{Environment, Settings};
use sha2::{Digest, Sha256};

use crate::AppState;

/// The script, as shipped.
pub const WIDGET_JS: &str = include_str!("widget/widget.js");

/// A strong validator of the script: its SHA-256, quoted.
static ETAG: LazyLock<String> = LazyLock::new(|| {
    let digest = Sha256::digest(WIDGET_JS.as_bytes());
    let mut tag = String::from("\"");
    for byte in &digest[..16] {
        let _ = write!(tag, "{byte:02x}");
    }
    tag.push('"');
    tag
});

/// The widget's routes; the demo page only under `kopilka dev`.
pub(crate) fn routes(settings: &Settings) -> Router<AppState> {
    let router = Router::new().route("/widget.js", get(widget));
    if settings.env == Environment::Dev {
        router.route("/", get(demo))
    } else {
        router
    }
}

/// The script, cacheable for five minutes and revalidated by its ETag.
async fn widget(headers: HeaderMap) -> Response {
    let etag = ETAG.as_str();
    let fresh = headers
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.split(',').any(|t| t.trim() == etag || t.trim() == "*"));
    let common = [
        (header::CACHE_CONTROL, "public, max-age=300"),
        (header::ETAG, etag),
        (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
    ];
    if fresh {
        return (StatusCode::NOT_MODIFIED, common).into_response();
    }
    (
        common,
        [(header::CONTENT_TYPE, "text/javascript; charset=utf-8")],
        WIDGET_JS,
    )
        .into_response()
}

/// `?lang=ru` shows the Russian widget.
#[derive(serde::Deserialize)]
struct DemoQuery {
    #[serde(default)]
    lang: Option<String>,
}

/// A demo article page that embeds the widget as a newsroom's site would. With a
/// challenge configured, its policy lets the provider's script, frame and requests in, as a
/// newsroom's own page must (see the README).
async fn demo(State(state): State<AppState>, Query(query): Query<DemoQuery>) -> Response {
    let page = &crate::pages::DEMO;
    let mut response = if query.lang.as_deref() == Some("ru") {
        page.answer(
            include_str!("widget/demo.html").replace("<html lang=\"en\">", "<html lang=\"ru\">"),
        )
    } else {
        page.as_is()
    };
    let origin = state
        .settings
        .abuse
        .challenge
        .configured()
        .and_then(|c| url::Url::parse(&c.script_url).ok())
        .map(|url| url.origin().ascii_serialization());
    if let Some(origin) = origin
        && let Some(policy) = response
            .headers()
            .get(header::CONTENT_SECURITY_POLICY)
            .and_then(|v| v.to_str().ok())
    {
        let widened = format!(
            "{}; frame-src {origin}",
            policy
                .replacen(
                    "script-src 'self'",
                    &format!("script-src 'self' {origin}"),
                    1
                )
                .replacen(
                    "connect-src 'self'",
                    &format!("connect-src 'self' {origin}"),
                    1
                )
        );
        if let Ok(value) = axum::http::HeaderValue::from_str(&widened) {
            response
                .headers_mut()
                .insert(header::CONTENT_SECURITY_POLICY, value);
        }
    }
    response
}
