//! Which routes a newsroom's page may call from its own origin, and the CORS layer that
//! says so. Credentialed CORS answers only the routes the widget calls; everything else
//! (`/v1/me…`, plan links, sign-in, webhooks) is same-origin only: no CORS headers, and a
//! cross-origin preflight is that route's own 404/405, which allows nothing.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use axum::http::{HeaderName, HeaderValue, Method, Request, Response, header};
use tower::{Layer, Service};
use tower_http::cors::{AllowOrigin, Cors, CorsLayer};

use crate::layers::route_of;

/// The routes the widget calls from a newsroom's page (see `widget/widget.js`): the offer,
/// the banner's state (`GET`, `PUT`), the checkout and its outcome, remind me later, the
/// sign-in link request, the supporter token, and a pass code's redemption (with the holder's
/// token renewal).
pub(crate) const WIDGET_ROUTES: &[&str] = &[
    "/v1/offer",
    "/v1/banner",
    "/v1/checkout",
    "/v1/checkout/outcome",
    "/v1/reminders",
    "/v1/sessions/magic-link",
    "/v1/entitlements",
    "/v1/passes/redeem",
    "/v1/passes/entitlements",
];

/// Whether `path` is one of [`WIDGET_ROUTES`].
pub(crate) fn widget_route(path: &str) -> bool {
    WIDGET_ROUTES.contains(&path)
}

/// Credentialed CORS for `origins` (`server.cors_allowed_origins`), on the widget's routes
/// only.
pub(crate) fn widget_cors(origins: &[String], request_id: HeaderName) -> WidgetCorsLayer {
    let origins: Arc<[HeaderValue]> = origins
        .iter()
        .filter_map(|origin| HeaderValue::from_str(origin).ok())
        .collect();
    WidgetCorsLayer(
        CorsLayer::new()
            .allow_origin(AllowOrigin::predicate(move |origin, _| {
                origins.contains(origin)
            }))
            .allow_methods([Method::GET, Method::POST, Method::PUT])
            .allow_headers([
                header::CONTENT_TYPE,
                header::AUTHORIZATION,
                HeaderName::from_static("idempotency-key"),
            ])
            .allow_credentials(true)
            .expose_headers([request_id]),
    )
}

/// [`CorsLayer`] for the routes [`widget_route`] names; other routes pass by it untouched.
/// Applied per route (`Router::layer`), so it sees the matched route template.
#[derive(Clone)]
pub(crate) struct WidgetCorsLayer(CorsLayer);

impl<S: Clone> Layer<S> for WidgetCorsLayer {
    type Service = WidgetCors<S>;

    fn layer(&self, inner: S) -> WidgetCors<S> {
        WidgetCors {
            with_cors: self.0.layer(inner.clone()),
            plain: inner,
        }
    }
}

/// The service of [`WidgetCorsLayer`].
#[derive(Clone)]
pub(crate) struct WidgetCors<S> {
    with_cors: Cors<S>,
    plain: S,
}

type Answer<R, E> = Pin<Box<dyn Future<Output = Result<R, E>> + Send>>;

impl<S, B, ResBody> Service<Request<B>> for WidgetCors<S>
where
    S: Service<Request<B>, Response = Response<ResBody>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    ResBody: Default + Send + 'static,
{
    type Response = Response<ResBody>;
    type Error = S::Error;
    type Future = Answer<Self::Response, Self::Error>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        match self.plain.poll_ready(cx) {
            Poll::Ready(Ok(())) => self.with_cors.poll_ready(cx),
            other => other,
        }
    }

    fn call(&mut self, request: Request<B>) -> Self::Future {
        if widget_route(route_of(&request)) {
            Box::pin(self.with_cors.call(request))
        } else {
            Box::pin(self.plain.call(request))
        }
    }
}
