use axum::extract::FromRequest;
use axum::extract::rejection::JsonRejection;
use axum::http::StatusCode;

use crate::AppError;

/// `axum::Json` whose rejections are the API's envelope: malformed JSON (including invalid
/// UTF-8) is 400 `malformed_json`, well-formed JSON of the wrong shape is 422
/// `invalid_body`, a missing JSON content type is 415 and a body over the limit is 413.
#[derive(Debug, Clone, Copy, Default, FromRequest)]
#[from_request(via(axum::Json), rejection(AppError))]
pub struct ApiJson<T>(pub T);

impl From<JsonRejection> for AppError {
    fn from(rejection: JsonRejection) -> Self {
        match rejection {
            JsonRejection::JsonDataError(err) => Self::Unprocessable {
                code: "invalid_body",
                message: err.body_text(),
            },
            JsonRejection::JsonSyntaxError(err) => Self::BadRequest {
                code: "malformed_json",
                message: err.body_text(),
            },
            JsonRejection::MissingJsonContentType(_) => Self::UnsupportedMediaType,
            JsonRejection::BytesRejection(err) if err.status() == StatusCode::PAYLOAD_TOO_LARGE => {
                Self::PayloadTooLarge
            }
            other => Self::BadRequest {
                code: "unreadable_body",
                message: other.body_text(),
            },
        }
    }
}

impl<T: serde::Serialize> axum::response::IntoResponse for ApiJson<T> {
    fn into_response(self) -> axum::response::Response {
        axum::Json(self.0).into_response()
    }
}
