//! `GET /ui`: the operator console, for people who would rather look at
//! the cluster than curl it. A static page (HTML, CSS and JavaScript
//! written by hand, embedded in the binary: nothing is fetched from
//! anywhere but this node) that reads the public API with the key its user
//! types in: members, leader and replication lag, rooms with their rates
//! and retention, consumers, and a live tail of a room over SSE.
//!
//! The page itself needs no key; every figure on it comes from an API call
//! that does.

use axum::http::header;
use axum::response::IntoResponse;

const INDEX: &str = include_str!("ui/index.html");
const SCRIPT: &str = include_str!("ui/app.js");
const STYLE: &str = include_str!("ui/app.css");

/// The page, as static text with its content type. `no-cache` makes a
/// browser ask again after an upgrade instead of running an old script
/// against a new API.
fn asset(content_type: &'static str, body: &'static str) -> impl IntoResponse {
    ([(header::CONTENT_TYPE, content_type), (header::CACHE_CONTROL, "no-cache")], body)
}

/// `GET /ui`: the console page.
pub async fn index() -> impl IntoResponse {
    asset("text/html; charset=utf-8", INDEX)
}

/// `GET /ui/app.js`: its script.
pub async fn script() -> impl IntoResponse {
    asset("text/javascript; charset=utf-8", SCRIPT)
}

/// `GET /ui/app.css`: its style sheet.
pub async fn style() -> impl IntoResponse {
    asset("text/css; charset=utf-8", STYLE)
}
