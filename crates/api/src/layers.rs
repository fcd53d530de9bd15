//! The tower-http stack every request passes through, and the one rule that keeps every
//! error an envelope, whichever layer produced it.

use axum::Router;
use axum::body::Body;
use axum::extract::{DefaultBodyLimit, MatchedPath};
use axum::http::{HeaderName, HeaderValue, Method, Request, Response, StatusCode, header};
use kopilka_config::Settings;
use tower::ServiceBuilder;
use tower_http::catch_panic::CatchPanicLayer;
use tower_http::compression::CompressionLayer;
use tower_http::limit::RequestBodyLimitLayer;
use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer};
use tower_http::set_header::SetResponseHeaderLayer;
use tower_http::timeout::TimeoutLayer;
use tower_http::trace::TraceLayer;

use crate::error::envelope;

const REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// The route label of requests no route matched (their raw path is never logged).
pub(crate) const UNMATCHED: &str = "unmatched";

/// The route template a request matched (`/v1/plan-links/{token}`), or [`UNMATCHED`]: what
/// logs and metrics name a request by, so no token, address or query in a path reaches them.
pub(crate) fn route_of<B>(request: &Request<B>) -> &str {
    request
        .extensions()
        .get::<MatchedPath>()
        .map_or(UNMATCHED, MatchedPath::as_str)
}

/// The request's method for logs and metrics: a standard one, or `OTHER` (an extension
/// method is any token a client likes, so it could carry text into the logs).
pub(crate) fn method_of<B>(request: &Request<B>) -> &'static str {
    match *request.method() {
        Method::GET => "GET",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::PATCH => "PATCH",
        Method::DELETE => "DELETE",
        Method::HEAD => "HEAD",
        Method::OPTIONS => "OPTIONS",
        _ => "OTHER",
    }
}

/// Whether a client's `x-request-id` may be kept: 8 to 64 hex digits and dashes (a UUID,
/// a proxy's hex id). Anything else is replaced by a fresh id, so no text a client chooses
/// (a token, an address) can ride into the logs on it.
fn acceptable_request_id(value: &HeaderValue) -> bool {
    let bytes = value.as_bytes();
    (8..=64).contains(&bytes.len()) && bytes.iter().all(|b| b.is_ascii_hexdigit() || *b == b'-')
}

/// Drops a client's request id that [`acceptable_request_id`] refuses (one is generated).
fn strict_request_id(mut request: Request<Body>) -> Request<Body> {
    if request
        .headers()
        .get_all(REQUEST_ID)
        .iter()
        .any(|v| !acceptable_request_id(v))
        || request.headers().get_all(REQUEST_ID).iter().count() > 1
    {
        request.headers_mut().remove(REQUEST_ID);
    }
    request
}

/// A caught panic's answer: its message is not logged (it may carry request data); the
/// envelope rule logs the 500 with the request's span.
fn panic_response(_panic: Box<dyn std::any::Any + Send + 'static>) -> Response<String> {
    let mut response = Response::new(String::new());
    *response.status_mut() = StatusCode::INTERNAL_SERVER_ERROR;
    response
}

/// The policy of every answer that is not one of Kopilka's pages (JSON, the script, errors,
/// redirects): it loads nothing, runs nothing and may not be framed. Pages send their own
/// (see `pages`), which this does not replace.
const API_POLICY: &str =
    "default-src 'none'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'";

/// `Strict-Transport-Security` for production (`KOPILKA_ENV=production`, whose public URL
/// is always https): browsers then refuse plain HTTP to this host for a year. Not in dev or
/// test, which run on plain `http://127.0.0.1`, where pinning HTTPS would lock a developer
/// out of every local port's plain HTTP. No `includeSubDomains`: Kopilka may live on the
/// newsroom's own domain, whose other hosts are not ours to pin.
pub(crate) fn strict_transport_security(settings: &Settings) -> Option<HeaderValue> {
    (settings.env == kopilka_config::Environment::Production)
        .then(|| HeaderValue::from_static("max-age=31536000"))
}

/// Wraps `routes` in the API's layers, outermost first: the security headers every answer
/// carries unless it set its own (`X-Content-Type-Options: nosniff`, `Referrer-Policy:
/// no-referrer`, the [`API_POLICY`] CSP, HSTS in production), request id (a client's only when
/// it is a plain hex id), tracing (the span carries the request id, method and matched
/// route template — never the raw path or query, which may hold tokens), compression, the
/// error envelope, panic catching (the panic's message is not logged), CORS for the
/// widget's routes from the configured allowlist, the request timeout and the body limit.
pub fn with_layers(routes: Router, settings: &Settings) -> Router {
    let server = &settings.server;
    let outer = ServiceBuilder::new()
        .layer(SetResponseHeaderLayer::if_not_present(
            header::X_CONTENT_TYPE_OPTIONS,
            HeaderValue::from_static("nosniff"),
        ))
        .layer(SetResponseHeaderLayer::if_not_present(
            header::REFERRER_POLICY,
            HeaderValue::from_static("no-referrer"),
        ))
        .layer(SetResponseHeaderLayer::if_not_present(
            header::CONTENT_SECURITY_POLICY,
            HeaderValue::from_static(API_POLICY),
        ))
        .option_layer(strict_transport_security(settings).map(|value| {
            SetResponseHeaderLayer::overriding(header::STRICT_TRANSPORT_SECURITY, value)
        }))
        .map_request(strict_request_id)
        .layer(SetRequestIdLayer::new(REQUEST_ID, MakeRequestUuid))
        .layer(
            TraceLayer::new_for_http()
                .make_span_with(|request: &Request<Body>| {
                    let request_id = request
                        .headers()
                        .get(REQUEST_ID)
                        .and_then(|v| v.to_str().ok())
                        .unwrap_or("-");
                    tracing::info_span!(
                        "request",
                        request_id,
                        method = method_of(request),
                        route = route_of(request),
                    )
                })
                .on_failure(log_failure),
        )
        .layer(PropagateRequestIdLayer::new(REQUEST_ID))
        .layer(CompressionLayer::new());
    let inner = ServiceBuilder::new()
        .layer(CatchPanicLayer::custom(panic_response))
        .layer(crate::cross_origin::widget_cors(
            &server.cors_allowed_origins,
            REQUEST_ID,
        ))
        // 503, not 408: a 408 invites clients to resend, which a POST must not do blindly.
        .layer(TimeoutLayer::with_status_code(
            StatusCode::SERVICE_UNAVAILABLE,
            server.request_timeout(),
        ))
        // The outer limit is the largest any route takes (webhooks); each route's extractor
        // holds its own (DefaultBodyLimit), so ordinary JSON stays at body_limit_bytes.
        .layer(RequestBodyLimitLayer::new(server.webhook_body_limit_bytes));
    // Router::layer turns every body into axum's Body, so the envelope rule sees one type;
    // it sits outside everything that can answer an error by itself.
    routes
        .layer(DefaultBodyLimit::max(server.body_limit_bytes))
        .layer(inner)
        .layer(axum::middleware::map_response(errors_as_envelopes))
        .layer(outer)
}

/// A failed request's log line. A 503 is not one: it is the answer of an overloaded path
/// (`busy`, counted in `kopilka_busy_total`) or of the timeout (logged by
/// [`errors_as_envelopes`]), and a line per refused request would turn a flood into a flood
/// of logs. Anything else (a 500, a broken connection) is an error.
#[allow(
    clippy::needless_pass_by_value,
    reason = "tower-http's OnFailure passes the class by value"
)]
fn log_failure(
    class: tower_http::classify::ServerErrorsFailureClass,
    latency: std::time::Duration,
    _span: &tracing::Span,
) {
    use tower_http::classify::ServerErrorsFailureClass;
    if matches!(class, ServerErrorsFailureClass::StatusCode(status) if status == StatusCode::SERVICE_UNAVAILABLE)
    {
        return;
    }
    tracing::error!(
        classification = %class,
        latency_ms = u64::try_from(latency.as_millis()).unwrap_or(u64::MAX),
        "response failed"
    );
}

/// Layers outside our handlers (routing's 405, the timeout's 503, the body limit's 413, a
/// caught panic's 500) answer with empty or plain-text bodies; turn every such error into
/// the envelope so a client needs one parser.
async fn errors_as_envelopes(response: Response<Body>) -> axum::response::Response {
    let status = response.status();
    let is_json = response
        .headers()
        .get(header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"application/json"));
    if !(status.is_client_error() || status.is_server_error()) || is_json {
        return response;
    }
    let (code, message) = match status {
        StatusCode::NOT_FOUND => ("not_found", "not found"),
        StatusCode::METHOD_NOT_ALLOWED => ("method_not_allowed", "method not allowed"),
        StatusCode::REQUEST_TIMEOUT => ("request_timeout", "the request took too long"),
        StatusCode::SERVICE_UNAVAILABLE => (
            "service_unavailable",
            "the service is temporarily unavailable",
        ),
        StatusCode::PAYLOAD_TOO_LARGE => ("payload_too_large", "request body too large"),
        StatusCode::UNSUPPORTED_MEDIA_TYPE => ("unsupported_media_type", "unsupported media type"),
        s if s.is_server_error() => ("internal_error", "internal error"),
        _ => ("bad_request", "bad request"),
    };
    if status == StatusCode::INTERNAL_SERVER_ERROR {
        tracing::error!("a request failed without a handled error (panic or layer failure)");
    }
    if status == StatusCode::SERVICE_UNAVAILABLE {
        tracing::warn!("request timed out");
    }
    let mut enveloped = envelope(status, code, message.to_owned());
    // Keep what the layers added (Allow, CORS, Vary, request id); only the body changes.
    for (name, value) in response.headers() {
        if name != header::CONTENT_TYPE && name != header::CONTENT_LENGTH {
            enveloped.headers_mut().append(name, value.clone());
        }
    }
    enveloped
}
