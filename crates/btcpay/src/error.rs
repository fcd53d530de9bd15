//! What went wrong talking to BTCPay. BTCPay's free-text messages are never kept: a
//! refusal can echo what was sent (an address), and this error is logged and mapped to
//! answers. BTCPay's error `code` and the JSON paths of validation errors are kept, when
//! they are words of BTCPay's vocabulary.

/// One entry of BTCPay's validation answer (`400 [{"path","message"}]`): the JSON path of
/// the property at fault. The message is dropped (see the module's docs).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ValidationError {
    /// The property's JSON path, e.g. `amount`, `checkout.expirationMinutes`.
    pub path: String,
}

/// What went wrong talking to BTCPay Server.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// BTCPay answered 4xx: the request was refused (bad key, unknown invoice, invalid
    /// amount…). Do not retry as is.
    #[error("BTCPay refused the request ({status}{}{})", code.as_deref().map(|c| format!(" {c}")).unwrap_or_default(), fields(validation))]
    Refused {
        /// The HTTP status.
        status: u16,
        /// BTCPay's error code (`invoice-not-found`, `unauthenticated`, …), when it sent one.
        code: Option<String>,
        /// The properties a `400` validation answer named.
        validation: Vec<ValidationError>,
    },
    /// BTCPay could not be reached, timed out, rate-limited us or failed on its side (5xx):
    /// retry later.
    #[error("BTCPay is unavailable: {0}")]
    Unavailable(String),
    /// BTCPay's answer did not have the expected shape.
    #[error("unexpected answer from BTCPay: {0}")]
    Unexpected(String),
    /// The client could not be built or the request could not be formed (bad base URL,
    /// a non-positive amount).
    #[error("BTCPay client: {0}")]
    Config(String),
}

fn fields(validation: &[ValidationError]) -> String {
    if validation.is_empty() {
        return String::new();
    }
    let paths: Vec<&str> = validation.iter().map(|v| v.path.as_str()).collect();
    format!(", invalid {}", paths.join(", "))
}

impl ClientError {
    /// BTCPay's error code, if BTCPay refused the request with one.
    #[must_use]
    pub fn code(&self) -> Option<&str> {
        match self {
            Self::Refused { code, .. } => code.as_deref(),
            _ => None,
        }
    }

    /// Whether the request may succeed later as it is (BTCPay down, slow or overloaded).
    #[must_use]
    pub fn is_unavailable(&self) -> bool {
        matches!(self, Self::Unavailable(_))
    }

    /// The error an answer with `status` and `body` means (`status` is not 2xx).
    pub(crate) fn from_answer(status: u16, body: &[u8]) -> Self {
        if status >= 500 || status == 429 || status == 408 {
            return Self::Unavailable(format!("BTCPay answered {status}"));
        }
        #[derive(serde::Deserialize)]
        struct Problem {
            code: Option<String>,
        }
        #[derive(serde::Deserialize)]
        struct Invalid {
            path: Option<String>,
        }
        let (code, validation) = if let Ok(problem) = serde_json::from_slice::<Problem>(body) {
            (vocabulary(problem.code.as_deref()), Vec::new())
        } else if let Ok(list) = serde_json::from_slice::<Vec<Invalid>>(body) {
            let paths = list
                .into_iter()
                .filter_map(|i| vocabulary(i.path.as_deref()))
                .map(|path| ValidationError { path })
                .collect();
            (None, paths)
        } else {
            (None, Vec::new())
        };
        Self::Refused {
            status,
            code,
            validation,
        }
    }
}

/// Only a word of BTCPay's own vocabulary (letters, digits, `-_.[]`) passes.
fn vocabulary(word: Option<&str>) -> Option<String> {
    word.filter(|w| {
        !w.is_empty()
            && w.len() <= 100
            && w.bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.' | b'[' | b']'))
    })
    .map(str::to_owned)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_problem_keeps_its_code_and_drops_its_message() {
        let err = ClientError::from_answer(
            404,
            br#"{"code":"invoice-not-found","message":"reader@example.org was here"}"#,
        );
        assert_eq!(err.code(), Some("invoice-not-found"));
        assert!(!err.to_string().contains("reader@"));
    }

    #[test]
    fn a_validation_answer_keeps_its_paths() {
        let err = ClientError::from_answer(
            400,
            br#"[{"path":"amount","message":"Positive value required"},{"path":"who knows?","message":"x"}]"#,
        );
        match err {
            ClientError::Refused { validation, .. } => {
                assert_eq!(
                    validation,
                    vec![ValidationError {
                        path: "amount".into()
                    }]
                );
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn server_failures_and_rate_limits_are_unavailable() {
        assert!(ClientError::from_answer(502, b"").is_unavailable());
        assert!(ClientError::from_answer(429, b"").is_unavailable());
        assert!(!ClientError::from_answer(401, b"{}").is_unavailable());
    }
}
