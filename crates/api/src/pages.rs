//! The HTML pages Kopilka serves itself (an emailed link's page, unsubscribe, a plan link's
//! page, the demo article) and the Content-Security-Policy each is sent with: nothing loads
//! but the page's own inline script and style, each allowed by its SHA-256 (no
//! `'unsafe-inline'` script anywhere), no page may be framed, and forms and `fetch` go only
//! to Kopilka itself.

use std::sync::LazyLock;

use axum::http::{HeaderValue, header};
use axum::response::{Html, IntoResponse, Response};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use sha2::{Digest, Sha256};

/// A page template and its policy, computed once from the template itself, so an edited
/// script or style is allowed exactly as it now reads.
pub(crate) struct Page {
    template: &'static str,
    policy: HeaderValue,
}

/// The emailed sign-in link's page.
pub(crate) static MAGIC_LINK: LazyLock<Page> =
    LazyLock::new(|| Page::new(include_str!("pages/magic_link.html")));
/// The reminder's unsubscribe page.
pub(crate) static UNSUBSCRIBE: LazyLock<Page> =
    LazyLock::new(|| Page::new(include_str!("pages/unsubscribe.html")));
/// A plan link's page.
pub(crate) static PLAN_LINK: LazyLock<Page> =
    LazyLock::new(|| Page::new(include_str!("pages/plan_link.html")));
/// The demo article page (`kopilka dev` only): it loads `/widget.js` from Kopilka, and the
/// widget adds its own `<style>` element, which only `'unsafe-inline'` styles allow.
pub(crate) static DEMO: LazyLock<Page> = LazyLock::new(|| {
    Page {
        template: include_str!("widget/demo.html"),
        policy: HeaderValue::from_str(&format!(
            "default-src 'none'; script-src 'self'{}; style-src 'self' 'unsafe-inline'; connect-src 'self'; img-src 'self' data:; form-action 'self'; base-uri 'none'; frame-ancestors 'none'",
            hashes(include_str!("widget/demo.html"), "script")
        ))
        .unwrap_or_else(|_| HeaderValue::from_static("default-src 'none'")),
    }
});

impl Page {
    fn new(template: &'static str) -> Self {
        let scripts = hashes(template, "script");
        let styles = hashes(template, "style");
        let mut policy = String::from("default-src 'none'");
        if !scripts.is_empty() {
            policy.push_str(&format!("; script-src{scripts}"));
        }
        if !styles.is_empty() {
            policy.push_str(&format!("; style-src{styles}"));
        }
        policy.push_str(
            "; connect-src 'self'; form-action 'self'; base-uri 'none'; frame-ancestors 'none'",
        );
        Self {
            template,
            policy: HeaderValue::from_str(&policy)
                .unwrap_or_else(|_| HeaderValue::from_static("default-src 'none'")),
        }
    }

    /// The page with `{{TOKEN}}` replaced by `token`'s URL-safe base64 characters (every
    /// token Kopilka signs is made of them, so nothing else can be markup), never cached,
    /// never named in a `Referer`, under its policy.
    pub(crate) fn with_token(&self, token: &str) -> Response {
        let token: String = token
            .chars()
            .filter(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_'))
            .collect();
        self.answer(self.template.replace("{{TOKEN}}", &token))
    }

    /// The page as it is.
    pub(crate) fn as_is(&self) -> Response {
        self.answer(self.template.to_owned())
    }

    /// `html` (this page's template, adapted) under this page's policy.
    pub(crate) fn answer(&self, html: String) -> Response {
        (
            [
                (header::CACHE_CONTROL, HeaderValue::from_static("no-store")),
                (
                    header::REFERRER_POLICY,
                    HeaderValue::from_static("no-referrer"),
                ),
                (header::CONTENT_SECURITY_POLICY, self.policy.clone()),
            ],
            Html(html),
        )
            .into_response()
    }
}

/// ` 'sha256-…'` for the body of every inline `<tag>` element of `html` (a `<script src>`
/// has no body and needs `'self'` instead).
fn hashes(html: &str, tag: &str) -> String {
    let open = format!("<{tag}>");
    let close = format!("</{tag}>");
    let mut found = String::new();
    let mut rest = html;
    while let Some(start) = rest.find(&open) {
        let body = &rest[start + open.len()..];
        let Some(end) = body.find(&close) else {
            break;
        };
        let digest = Sha256::digest(&body.as_bytes()[..end]);
        found.push_str(&format!(" 'sha256-{}'", STANDARD.encode(digest)));
        rest = &body[end + close.len()..];
    }
    found
}

#[cfg(test)]
mod tests {
    use super::hashes;

    #[test]
    fn every_inline_block_is_hashed_and_nothing_else() {
        let html = "<style>a{}</style><script src=\"/x.js\"></script><script>go()</script><script>\n1\n</script>";
        // printf 'go()' | openssl dgst -sha256 -binary | base64
        assert_eq!(
            hashes(html, "script"),
            " 'sha256-5KYv+PUboo5h+0+YAtGRPbwv5d/QxzHslP4YGnUaxRw=' 'sha256-PBL+VNcqg2ezLpeQ7yj8J15XmnKAnnIb2qth9B/WTJ4='"
        );
        assert_eq!(hashes(html, "style").matches("sha256-").count(), 1);
        assert_eq!(hashes("<p>no script</p>", "script"), "");
    }
}
