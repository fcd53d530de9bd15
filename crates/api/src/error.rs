use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use kopilka_store::StoreError;
use serde::{Deserialize, Serialize};

/// Every error the API answers, mapped in one place to a status and a stable `snake_case`
/// code. Internal details are logged (with the request id of the surrounding span), never
/// sent.
#[derive(Debug, thiserror::Error)]
pub enum AppError {
    /// No such route or resource.
    #[error("not found")]
    NotFound,
    /// The route exists but not with this method.
    #[error("method not allowed")]
    MethodNotAllowed,
    /// The request cannot be read (malformed JSON, bad encoding).
    #[error("{message}")]
    BadRequest {
        /// Stable machine-readable code.
        code: &'static str,
        /// What to fix.
        message: String,
    },
    /// The request reads fine but its values are refused (below minimum, unknown currency…).
    #[error("{message}")]
    Unprocessable {
        /// Stable machine-readable code.
        code: &'static str,
        /// What to fix.
        message: String,
    },
    /// The request conflicts with an earlier one (idempotency).
    #[error("{message}")]
    Conflict {
        /// Stable machine-readable code.
        code: &'static str,
        /// What happened.
        message: String,
    },
    /// A service we depend on (Stripe) refused or failed; 502, or 503 when `retry` is true.
    #[error("{message}")]
    Upstream {
        /// Stable machine-readable code.
        code: &'static str,
        /// What happened, for the widget.
        message: String,
        /// Whether retrying (with the same Idempotency-Key) may succeed.
        retry: bool,
    },
    /// No valid session, or wrong credentials (401).
    #[error("{message}")]
    Unauthorized {
        /// Stable machine-readable code.
        code: &'static str,
        /// What to do.
        message: String,
    },
    /// Refused for this caller (403), e.g. a cross-site request with a session cookie.
    #[error("{message}")]
    Forbidden {
        /// Stable machine-readable code.
        code: &'static str,
        /// Why.
        message: String,
    },
    /// Gone for good (410), e.g. a single-use link used before or revoked.
    #[error("{message}")]
    Gone {
        /// Stable machine-readable code.
        code: &'static str,
        /// What to do instead.
        message: String,
    },
    /// A payment must be completed on the provider's page first (402): the error carries
    /// the page's `url` (e.g. a plan switch whose invoice was declined or needs 3-D Secure).
    #[error("{message}")]
    PaymentRequired {
        /// Stable machine-readable code.
        code: &'static str,
        /// What happened and what to do.
        message: String,
        /// The page where the payment is completed, when the provider gave one.
        url: Option<String>,
    },
    /// Too many attempts (429), with `Retry-After`.
    #[error("{message}")]
    TooManyRequests {
        /// Stable machine-readable code.
        code: &'static str,
        /// What to do.
        message: String,
        /// Seconds until a retry makes sense.
        retry_after_secs: u64,
    },
    /// Refused by the card-testing shield for a while (403 `blocked`, `Retry-After`).
    #[error("checkout is not available from here for now; try again later")]
    Blocked {
        /// Seconds until the block ends.
        retry_after_secs: u64,
    },
    /// A challenge must be solved first (403): the error carries `challenge` for the widget.
    #[error("{message}")]
    Challenge {
        /// `challenge_required` or `challenge_failed`.
        code: &'static str,
        /// What to do.
        message: String,
        /// The provider and site key to render the challenge with.
        challenge: Option<ChallengeInfo>,
    },
    /// The body is larger than the configured limit.
    #[error("request body too large")]
    PayloadTooLarge,
    /// The body is not `application/json`.
    #[error("expected a request with Content-Type: application/json")]
    UnsupportedMediaType,
    /// This instance has taken on all the work it may at once (bounded queues, counters);
    /// 503 with `Retry-After`.
    #[error("the service is busy; try again shortly")]
    Busy {
        /// Seconds until a retry makes sense.
        retry_after_secs: u64,
    },
    /// Postgres is unreachable; the client may retry.
    #[error("the service is temporarily unavailable")]
    Unavailable,
    /// A bug or an unexpected failure; logged, never described to the client.
    #[error("internal error")]
    Internal(#[source] Box<dyn std::error::Error + Send + Sync>),
}

/// The error envelope: `{"error":{"code":"…","message":"…"}}`.
#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ErrorBody {
    /// The error.
    pub error: ErrorDetail,
}

/// The inside of the error envelope.
#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ErrorDetail {
    /// Stable `snake_case` code a client can switch on.
    pub code: String,
    /// A sentence for a developer.
    pub message: String,
    /// Where to go to resolve it (only on 402 `plan_change_payment_incomplete`: Stripe's
    /// hosted invoice page).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    /// The challenge to solve (only on 403 `challenge_required` and `challenge_failed`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub challenge: Option<ChallengeInfo>,
}

/// A challenge the widget renders: the provider's script, then its widget with `site_key`;
/// the token it yields goes back as `challenge_token`.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ChallengeInfo {
    /// `turnstile` or `hcaptcha`.
    pub provider: String,
    /// The public site key.
    pub site_key: String,
    /// The provider's script (explicit rendering).
    pub script_url: String,
}

impl AppError {
    /// The HTTP status.
    #[must_use]
    pub fn status(&self) -> StatusCode {
        match self {
            Self::NotFound => StatusCode::NOT_FOUND,
            Self::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            Self::BadRequest { .. } => StatusCode::BAD_REQUEST,
            Self::Unprocessable { .. } => StatusCode::UNPROCESSABLE_ENTITY,
            Self::Conflict { .. } => StatusCode::CONFLICT,
            Self::Unauthorized { .. } => StatusCode::UNAUTHORIZED,
            Self::Forbidden { .. } | Self::Blocked { .. } | Self::Challenge { .. } => {
                StatusCode::FORBIDDEN
            }
            Self::TooManyRequests { .. } => StatusCode::TOO_MANY_REQUESTS,
            Self::Gone { .. } => StatusCode::GONE,
            Self::PaymentRequired { .. } => StatusCode::PAYMENT_REQUIRED,
            Self::Upstream { retry: false, .. } => StatusCode::BAD_GATEWAY,
            Self::PayloadTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            Self::UnsupportedMediaType => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            Self::Unavailable | Self::Busy { .. } | Self::Upstream { retry: true, .. } => {
                StatusCode::SERVICE_UNAVAILABLE
            }
            Self::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// The stable code.
    #[must_use]
    pub fn code(&self) -> &'static str {
        match self {
            Self::NotFound => "not_found",
            Self::MethodNotAllowed => "method_not_allowed",
            Self::BadRequest { code, .. }
            | Self::Unprocessable { code, .. }
            | Self::Conflict { code, .. }
            | Self::Unauthorized { code, .. }
            | Self::Forbidden { code, .. }
            | Self::Challenge { code, .. }
            | Self::TooManyRequests { code, .. }
            | Self::Gone { code, .. }
            | Self::PaymentRequired { code, .. }
            | Self::Upstream { code, .. } => code,
            Self::PayloadTooLarge => "payload_too_large",
            Self::UnsupportedMediaType => "unsupported_media_type",
            Self::Unavailable => "service_unavailable",
            Self::Busy { .. } => "busy",
            Self::Blocked { .. } => "blocked",
            Self::Internal(_) => "internal_error",
        }
    }

    /// A 500 carrying `err` for the log.
    pub fn internal(err: impl std::error::Error + Send + Sync + 'static) -> Self {
        Self::Internal(Box::new(err))
    }
}

/// `outer: inner: innermost`, each error's Display.
fn error_chain(err: &(dyn std::error::Error + 'static)) -> String {
    let mut chain = err.to_string();
    let mut source = err.source();
    while let Some(inner) = source {
        chain.push_str(": ");
        chain.push_str(&inner.to_string());
        source = inner.source();
    }
    chain
}

/// The envelope for `status` with `code` and `message`.
pub(crate) fn envelope(status: StatusCode, code: &str, message: String) -> Response {
    let body = ErrorBody {
        error: ErrorDetail {
            code: code.to_owned(),
            message,
            url: None,
            challenge: None,
        },
    };
    (status, Json(body)).into_response()
}

impl IntoResponse for AppError {
    fn into_response(self) -> Response {
        match &self {
            // Display only: Debug of a database error carries its DETAIL, which may hold PII.
            Self::Internal(source) => {
                tracing::error!(error = %error_chain(source.as_ref()), "internal error");
            }
            Self::Unavailable => tracing::warn!("database unavailable"),
            _ => {}
        }
        let mut response = match &self {
            Self::PaymentRequired { url, .. } => {
                let body = ErrorBody {
                    error: ErrorDetail {
                        code: self.code().to_owned(),
                        message: self.to_string(),
                        url: url.clone(),
                        challenge: None,
                    },
                };
                (self.status(), Json(body)).into_response()
            }
            Self::Challenge { challenge, .. } => {
                let body = ErrorBody {
                    error: ErrorDetail {
                        code: self.code().to_owned(),
                        message: self.to_string(),
                        url: None,
                        challenge: challenge.clone(),
                    },
                };
                (self.status(), Json(body)).into_response()
            }
            _ => envelope(self.status(), self.code(), self.to_string()),
        };
        let retry_after = match &self {
            Self::Unavailable | Self::Upstream { retry: true, .. } => Some(5),
            Self::TooManyRequests {
                retry_after_secs, ..
            }
            | Self::Busy { retry_after_secs }
            | Self::Blocked { retry_after_secs } => Some((*retry_after_secs).max(1)),
            _ => None,
        };
        // RFC 6750: a refused bearer token says so in WWW-Authenticate.
        if let Self::Unauthorized {
            code: "invalid_token",
            ..
        } = &self
        {
            response.headers_mut().insert(
                axum::http::header::WWW_AUTHENTICATE,
                axum::http::HeaderValue::from_static("Bearer error=\"invalid_token\""),
            );
        }
        if let Some(secs) = retry_after {
            response
                .headers_mut()
                .insert(axum::http::header::RETRY_AFTER, secs.into());
        }
        response
    }
}

impl From<kopilka_contributions::ContributionError> for AppError {
    fn from(err: kopilka_contributions::ContributionError) -> Self {
        use kopilka_contributions::ContributionError as E;
        match err {
            E::Refused(refusal) => Self::Unprocessable {
                code: refusal.code,
                message: refusal.message,
            },
            E::Blocked { retry_after_secs } => Self::Blocked { retry_after_secs },
            E::KeyReused => Self::Conflict {
                code: "idempotency_key_reused",
                message: err.to_string(),
            },
            E::InProgress => Self::Conflict {
                code: "request_in_progress",
                message: err.to_string(),
            },
            E::StripeUnavailable(_) | E::BtcpayUnavailable(_) => Self::Upstream {
                code: "payment_provider_unavailable",
                message: "the payment provider is unavailable; retry with the same Idempotency-Key"
                    .into(),
                retry: true,
            },
            // Stripe's own amount rules, where Kopilka's table could not know them (a
            // currency the account converts to another for settlement): the reader's input.
            E::StripeRefused(source) if source.code() == Some("amount_too_small") => {
                Self::Unprocessable {
                    code: "amount_below_stripe_minimum",
                    message: "the amount is below the least Stripe charges in this currency for this account; choose a larger amount".into(),
                }
            }
            E::StripeRefused(source) if source.code() == Some("amount_too_large") => {
                Self::Unprocessable {
                    code: "amount_above_stripe_maximum",
                    message: "the amount is above the most Stripe charges at once in this currency".into(),
                }
            }
            E::StripeRefused(source) => {
                tracing::error!(error = %source, "Stripe refused a request");
                Self::Upstream {
                    code: "payment_provider_error",
                    message: "the payment provider refused the request".into(),
                    retry: false,
                }
            }
            E::BtcpayRefused(source) => {
                tracing::error!(error = %source, "BTCPay refused a request");
                Self::Upstream {
                    code: "payment_provider_error",
                    message: "the payment provider refused the request".into(),
                    retry: false,
                }
            }
            E::NoStripe => Self::Upstream {
                code: "payment_provider_not_configured",
                message: "payments are not configured".into(),
                retry: false,
            },
            E::Store(store) | E::Queue(kopilka_queue::QueueError::Store(store)) => store.into(),
            E::Account(account) => account.into(),
        }
    }
}

impl From<kopilka_accounts::AccountError> for AppError {
    fn from(err: kopilka_accounts::AccountError) -> Self {
        use kopilka_accounts::AccountError as E;
        match err {
            E::Refused { code, message } => Self::Unprocessable { code, message },
            E::InvalidCredentials => Self::Unauthorized {
                code: "invalid_credentials",
                message: err.to_string(),
            },
            E::Throttled { retry_after } => Self::TooManyRequests {
                code: "too_many_attempts",
                message: err.to_string(),
                retry_after_secs: retry_after.as_secs().saturating_add(1),
            },
            E::ReauthenticationRequired => Self::Forbidden {
                code: "reauthentication_required",
                message: err.to_string(),
            },
            E::InvalidLink => Self::BadRequest {
                code: "invalid_link",
                message: err.to_string(),
            },
            E::NotFound => Self::NotFound,
            E::Store(store) => store.into(),
            E::Queue(kopilka_queue_error) => Self::internal(kopilka_queue_error),
            E::Hashing(_) => Self::internal(err),
        }
    }
}

impl From<kopilka_recurring::RecurringError> for AppError {
    fn from(err: kopilka_recurring::RecurringError) -> Self {
        use kopilka_recurring::RecurringError as E;
        match err {
            E::NotFound => Self::NotFound,
            E::Refused(message) => Self::Unprocessable {
                code: "plan_change_refused",
                message,
            },
            E::PaymentIncomplete { url } => Self::PaymentRequired {
                code: "plan_change_payment_incomplete",
                message: "the switch needs its first payment: the card was declined or the bank asks the donor to confirm it; the plan is unchanged until it is paid at url".into(),
                url,
            },
            E::LinkInvalid => Self::BadRequest {
                code: "invalid_link",
                message: err.to_string(),
            },
            E::LinkUsed => Self::Gone {
                code: "link_used",
                message: err.to_string(),
            },
            E::LinkRevoked => Self::Gone {
                code: "link_revoked",
                message: err.to_string(),
            },
            E::NothingToPay => Self::Gone {
                code: "nothing_to_pay",
                message: err.to_string(),
            },
            E::Stripe(kopilka_stripe::ClientError::Unavailable(_)) => Self::Upstream {
                code: "payment_provider_unavailable",
                message: "the payment provider is unavailable; retry shortly".into(),
                retry: true,
            },
            E::Stripe(source) => {
                tracing::error!(error = %source, "Stripe refused a plan change");
                Self::Upstream {
                    code: "payment_provider_error",
                    message: "the payment provider refused the request".into(),
                    retry: false,
                }
            }
            E::Contribution(inner) => inner.into(),
            E::Account(inner) => inner.into(),
            E::Queue(inner) => Self::internal(inner),
            E::Store(inner) => inner.into(),
        }
    }
}

impl From<kopilka_jobs::privacy::PrivacyError> for AppError {
    fn from(err: kopilka_jobs::privacy::PrivacyError) -> Self {
        use kopilka_jobs::privacy::PrivacyError as E;
        match err {
            E::NotFound => Self::NotFound,
            E::NoStripe => Self::Upstream {
                code: "payment_provider_not_configured",
                message:
                    "payments are not configured, so plans cannot be ended; nothing was erased"
                        .into(),
                retry: false,
            },
            // Stripe's own text is not logged (it can echo an address); its code is.
            E::Stripe(source) => {
                tracing::warn!(stripe_code = source.code(), "erasure: Stripe failed");
                Self::Upstream {
                    code: "payment_provider_unavailable",
                    message: "the payment provider could not end your plans and payment \
                              details; nothing was erased; retry"
                        .into(),
                    retry: true,
                }
            }
            E::Storage(_) => Self::internal(err),
        }
    }
}

impl From<StoreError> for AppError {
    fn from(err: StoreError) -> Self {
        if err.is_unavailable() {
            tracing::warn!(error = %err, "database unavailable");
            Self::Unavailable
        } else {
            Self::internal(err)
        }
    }
}
