//! A typed client for the API, speaking its JSON and its error envelope.

use reqwest::{Method, StatusCode, header::HeaderMap};
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;

/// The API at one base URL.
#[derive(Debug, Clone)]
pub struct ApiClient {
    base: String,
    http: reqwest::Client,
}

/// A response read whole, so tests can assert on status, headers and body.
#[derive(Debug, Clone)]
pub struct ApiResponse {
    /// The status.
    pub status: StatusCode,
    /// The headers.
    pub headers: HeaderMap,
    /// The raw body.
    pub body: Vec<u8>,
}

impl ApiClient {
    /// A client for the API at `base` (e.g. `http://127.0.0.1:41234`).
    #[must_use]
    pub fn new(base: impl Into<String>) -> Self {
        Self {
            base: base.into(),
            http: reqwest::Client::builder()
                .redirect(reqwest::redirect::Policy::none())
                .build()
                .expect("an HTTP client"),
        }
    }

    /// A request builder for anything the typed methods do not cover.
    pub fn request(&self, method: Method, path: &str) -> reqwest::RequestBuilder {
        self.http.request(method, format!("{}{path}", self.base))
    }

    /// `GET path`.
    pub async fn get(&self, path: &str) -> ApiResponse {
        send(self.request(Method::GET, path)).await
    }

    /// `POST path` with a JSON body.
    pub async fn post_json(&self, path: &str, body: &impl Serialize) -> ApiResponse {
        send(self.request(Method::POST, path).json(body)).await
    }

    /// `POST path` with raw bytes and a content type.
    pub async fn post_raw(&self, path: &str, content_type: &str, body: Vec<u8>) -> ApiResponse {
        send(
            self.request(Method::POST, path)
                .header(reqwest::header::CONTENT_TYPE, content_type)
                .body(body),
        )
        .await
    }

    /// `GET /healthz`.
    pub async fn healthz(&self) -> ApiResponse {
        self.get("/healthz").await
    }

    /// `GET /readyz`.
    pub async fn readyz(&self) -> ApiResponse {
        self.get("/readyz").await
    }
}

/// Sends `request` and reads the whole response.
///
/// # Panics
/// When the server cannot be reached at all: every test needs it up.
pub async fn send(request: reqwest::RequestBuilder) -> ApiResponse {
    let response = request.send().await.expect("the server answers");
    let status = response.status();
    let headers = response.headers().clone();
    let body = response.bytes().await.expect("a readable body").to_vec();
    ApiResponse {
        status,
        headers,
        body,
    }
}

impl ApiResponse {
    /// The body as JSON.
    ///
    /// # Panics
    /// When it is not JSON.
    #[must_use]
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|err| {
            panic!(
                "body is not JSON ({err}): {}",
                String::from_utf8_lossy(&self.body)
            )
        })
    }

    /// The body as `T`.
    ///
    /// # Panics
    /// When it does not deserialise.
    #[must_use]
    pub fn parse<T: DeserializeOwned>(&self) -> T {
        serde_json::from_slice(&self.body).unwrap_or_else(|err| {
            panic!(
                "unexpected body ({err}): {}",
                String::from_utf8_lossy(&self.body)
            )
        })
    }

    /// Asserts the answer is the error envelope with `status` and returns its code.
    ///
    /// # Panics
    /// When it is not.
    #[must_use]
    pub fn error_code(&self, status: u16) -> String {
        assert_eq!(
            self.status.as_u16(),
            status,
            "body: {}",
            String::from_utf8_lossy(&self.body)
        );
        let content_type = self
            .headers
            .get(reqwest::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("");
        assert!(
            content_type.starts_with("application/json"),
            "content-type {content_type:?}"
        );
        let body = self.json();
        let error = body
            .get("error")
            .and_then(Value::as_object)
            .expect("an error envelope");
        // Exactly code and message; a 402 also names the page where the payment is made, a
        // 403 challenge the challenge to solve.
        let challenge = status == 403
            && matches!(
                error.get("code").and_then(Value::as_str),
                Some("challenge_required" | "challenge_failed")
            );
        let expected = if status == 402 || challenge { 3 } else { 2 };
        assert_eq!(
            error.len(),
            expected,
            "envelope has exactly code and message (and url on a 402, challenge on a 403 challenge): {body}"
        );
        if status == 402 {
            assert!(error.get("url").is_some_and(Value::is_string), "{body}");
        }
        if challenge {
            assert!(
                error.get("challenge").is_some_and(Value::is_object),
                "{body}"
            );
        }
        let message = error
            .get("message")
            .and_then(Value::as_str)
            .expect("a message");
        assert!(!message.is_empty(), "the message says something");
        error
            .get("code")
            .and_then(Value::as_str)
            .expect("a code")
            .to_owned()
    }
}
