//! `GET /ui`: the operator console, for people who would rather look at
//! the cluster than curl it. A static page (HTML, CSS and JavaScript
//! written by hand, embedded in the binary: nothing is fetched from
//! anywhere but this node) that reads the public API with the key its user
//! types in: members, leader and replication lag, rooms with their rates
//! and retention, consumers, and a live tail of a room over SSE.
//!
//! The page itself needs no key; every figure on it comes from an API call
//! that does.

use axum::http::header::{self, HeaderValue};
use axum::response::{IntoResponse, Response};

const INDEX: &str = include_str!("ui/index.html");
const SCRIPT: &str = include_str!("ui/app.js");
const STYLE: &str = include_str!("ui/app.css");

/// What the page may load and talk to: its own script and style and the
/// API of the node that served it; no inline script, no other origin, no
/// framing by another site.
const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; script-src 'self'; style-src 'self'; \
     connect-src 'self'; img-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

/// An embedded file with its content type. `no-cache` makes a browser ask
/// again after an upgrade instead of running an old script against a new
/// API.
fn asset(content_type: &'static str, body: &'static str) -> Response {
    let headers = [
        (header::CONTENT_TYPE, content_type),
        (header::CACHE_CONTROL, "no-cache"),
        (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
    ];
    (headers, body).into_response()
}

/// `GET /ui`: the console page.
pub async fn index() -> Response {
    let mut response = asset("text/html; charset=utf-8", INDEX);
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_SECURITY_POLICY, HeaderValue::from_static(CONTENT_SECURITY_POLICY));
    headers.insert(header::REFERRER_POLICY, HeaderValue::from_static("no-referrer"));
    response
}

/// `GET /ui/app.js`: its script.
pub async fn script() -> Response {
    asset("text/javascript; charset=utf-8", SCRIPT)
}

/// `GET /ui/app.css`: its style sheet.
pub async fn style() -> Response {
    asset("text/css; charset=utf-8", STYLE)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_page_loads_its_own_files_and_sets_data_as_text_only() {
        assert!(INDEX.contains(r#"src="/ui/app.js""#) && INDEX.contains(r#"href="/ui/app.css""#));
        for (name, text) in [("index.html", INDEX), ("app.js", SCRIPT), ("app.css", STYLE)] {
            assert!(!text.contains("http://") && !text.contains("https://"), "{name} refers to another origin");
        }
        assert!(!SCRIPT.contains("innerHTML") && !SCRIPT.contains("outerHTML"), "app.js must not set HTML");
        assert!(
            !INDEX.contains("<script>") && !INDEX.contains("style="),
            "no inline script or style (the policy forbids them)"
        );
    }

    #[tokio::test]
    async fn the_page_is_served_with_its_policy_and_revalidated() {
        let page = index().await;
        assert_eq!(page.headers()[header::CONTENT_SECURITY_POLICY], CONTENT_SECURITY_POLICY);
        for (response, kind) in [(page, "text/html"), (script().await, "text/javascript"), (style().await, "text/css")]
        {
            assert!(response.headers()[header::CONTENT_TYPE].to_str().unwrap().starts_with(kind));
            assert_eq!(response.headers()[header::CACHE_CONTROL], "no-cache");
        }
    }
}
