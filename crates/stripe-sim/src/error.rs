//! Stripe's error JSON: `{"error":{"type","code","message","param"}}` with Stripe's statuses.

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::json;

/// An error as Stripe would answer it.
#[derive(Debug, Clone)]
pub struct StripeError {
    status: StatusCode,
    kind: &'static str,
    code: Option<&'static str>,
    message: String,
    param: Option<String>,
}

impl StripeError {
    /// 400 `invalid_request_error` about `param`.
    pub fn invalid(param: &str, message: impl Into<String>) -> Self {
        Self {
            status: StatusCode::BAD_REQUEST,
            kind: "invalid_request_error",
            code: Some("parameter_invalid"),
            message: message.into(),
            param: Some(param.to_owned()),
        }
    }

    /// 400 `parameter_missing`.
    pub fn missing(param: &str) -> Self {
        Self {
            code: Some("parameter_missing"),
            ..Self::invalid(param, format!("Missing required param: {param}."))
        }
    }

    /// 400 with a specific Stripe error code.
    pub fn coded(code: &'static str, param: Option<&str>, message: impl Into<String>) -> Self {
        Self {
            status: StatusCode::BAD_REQUEST,
            kind: "invalid_request_error",
            code: Some(code),
            message: message.into(),
            param: param.map(str::to_owned),
        }
    }

    /// 402 `card_error` `card_declined`: a payment Stripe tried and the card refused
    /// (e.g. `payment_behavior=error_if_incomplete`).
    pub fn card_declined() -> Self {
        Self {
            status: StatusCode::PAYMENT_REQUIRED,
            kind: "card_error",
            code: Some("card_declined"),
            message: "Your card was declined.".into(),
            param: None,
        }
    }

    /// 404 `resource_missing`.
    pub fn no_such(kind: &str, id: &str) -> Self {
        Self {
            status: StatusCode::NOT_FOUND,
            kind: "invalid_request_error",
            code: Some("resource_missing"),
            message: format!("No such {kind}: '{id}'"),
            param: Some("id".into()),
        }
    }

    /// 401 for a missing or wrong API key.
    pub fn unauthorized() -> Self {
        Self {
            status: StatusCode::UNAUTHORIZED,
            kind: "invalid_request_error",
            code: None,
            message: "Invalid API Key provided. Use the simulator's secret key.".into(),
            param: None,
        }
    }

    /// An `api_error`: Stripe failed on its side (5xx).
    pub fn api_error(status: StatusCode) -> Self {
        Self {
            status,
            kind: "api_error",
            code: None,
            message: "An error occurred with our connection to Stripe. Request req_simulated failed (injected by the simulator).".into(),
            param: None,
        }
    }

    /// An `idempotency_error` (400 for a reused key, 409 while the first use runs).
    pub fn idempotency(status: StatusCode, message: impl Into<String>) -> Self {
        Self {
            status,
            kind: "idempotency_error",
            code: None,
            message: message.into(),
            param: None,
        }
    }
}

impl IntoResponse for StripeError {
    fn into_response(self) -> Response {
        let body = json!({
            "error": {
                "type": self.kind,
                "code": self.code,
                "message": self.message,
                "param": self.param,
                "doc_url": self.code.map(|c| format!("https://docs.stripe.com/error-codes/{}", c.replace('_', "-"))),
            }
        });
        (self.status, Json(body)).into_response()
    }
}
