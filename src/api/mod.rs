//! The HTTP surface of a node: the public API (DESIGN §4), cluster
//! administration, and the internal Raft transport, on one axum router.

mod admin;
pub mod auth;
mod command;
pub mod error;
pub mod event_json;
pub mod input;
mod internal;
mod kv;
mod metrics;
pub mod stream;
mod subscribe;

use std::sync::Arc;
use std::time::Duration;

use axum::extract::{DefaultBodyLimit, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post};
use axum::{Json, Router};
use serde_json::json;

pub use internal::constant_time_eq;

use self::auth::Auth;

use crate::command::{Reply, Request};
use crate::node::Node;
use error::ApiError;

/// Largest body on the internal routes (snapshot chunks, big appends).
const INTERNAL_BODY_LIMIT: usize = 256 * 1024 * 1024;

/// What every handler gets.
#[derive(Clone)]
pub struct AppState {
    /// This node.
    pub node: Arc<Node>,
    /// The API keys.
    pub auth: Arc<Auth>,
    /// Client for relaying admin requests to the leader.
    pub http: reqwest::Client,
}

/// The whole router of a node, with `auth` guarding the public API.
pub fn router(node: Arc<Node>, auth: Auth) -> Router {
    let http = reqwest::Client::builder().timeout(Duration::from_secs(300)).build().unwrap_or_default();
    let state = AppState { node: node.clone(), auth: Arc::new(auth), http };
    // Bodies are read whole and then checked, so that an oversized event
    // gets a JSON error naming the limit rather than a bare 413.
    let public_limit = node.config.max_event_bytes.saturating_mul(MAX_BATCH_FACTOR).max(16 * 1024 * 1024);

    let internal = Router::new()
        .route("/raft/append", post(internal::append))
        .route("/raft/vote", post(internal::vote))
        .route("/raft/snapshot", post(internal::snapshot))
        .route("/raft/forward", post(internal::forward))
        .route("/raft/read-index", post(internal::read_index))
        .layer(axum::middleware::from_fn_with_state(state.clone(), internal::require_secret))
        .layer(DefaultBodyLimit::max(INTERNAL_BODY_LIMIT));

    let public = Router::new()
        .route("/health", get(health))
        .route("/ready", get(ready))
        .route("/stream/list", get(stream::list))
        .route("/stream/{room}", post(stream::create_room).put(stream::get_or_create_room).delete(stream::delete_room))
        .route("/stream/{room}/publish", post(stream::publish))
        .route("/stream/{room}/batch", post(stream::batch))
        .route("/stream/{room}/history", get(stream::history))
        .route("/stream/{room}/stats", get(stream::stats))
        .route("/stream/{room}/ws", get(subscribe::ws))
        .route("/stream/{room}/ws/{subscriber_id}", get(subscribe::ws_subscriber))
        .route("/stream/{room}/sse", get(subscribe::sse))
        .route("/stream/{room}/consume/{subscriber_id}", get(stream::consume))
        .route("/api/v1/command", post(command::command))
        .route("/kv/set", post(kv::set_route))
        .route("/kv/get/{key}", get(kv::get_route))
        .route("/kv/exists/{key}", get(kv::exists_route))
        .route("/kv/del/{key}", delete(kv::delete_route))
        .route("/metrics", get(metrics::metrics))
        .route("/admin/cluster", get(admin::status))
        .route("/admin/cluster/init", post(admin::init))
        .route("/admin/cluster/learners", post(admin::add_learner))
        .route("/admin/cluster/voters", post(admin::promote))
        .route("/admin/cluster/members/{id}", delete(admin::remove))
        .fallback(not_found)
        .layer(DefaultBodyLimit::max(public_limit));

    public.merge(internal).with_state(state)
}

/// Gets `request` committed and applied through this node; a refusal by
/// the state machine becomes its 4xx.
async fn write(app: &AppState, request: Request) -> Result<Reply, ApiError> {
    match app.node.write(request).await? {
        Reply::Rejected(rejection) => Err(rejection.into()),
        reply => Ok(reply),
    }
}

/// A reply of another kind than the request asks for: a bug, so a 500.
fn unexpected(what: &str, reply: Reply) -> ApiError {
    ApiError::internal(format!("unexpected reply to {what}: {reply:?}"))
}

/// Batch bodies may hold this many maximum-size events.
const MAX_BATCH_FACTOR: usize = 4;

async fn not_found() -> Response {
    let body = json!({ "error": "no such endpoint", "code": 404 });
    (StatusCode::NOT_FOUND, Json(body)).into_response()
}

/// `GET /health`: the process is up and serving.
async fn health(State(app): State<AppState>) -> Json<serde_json::Value> {
    Json(json!({ "status": "ok", "id": app.node.id() }))
}

/// `GET /ready`: a leader is known and this node has applied its log.
async fn ready(State(app): State<AppState>) -> Response {
    let status = app.node.status();
    if app.node.is_ready() {
        Json(json!({ "ready": true, "id": status.id, "leader": status.leader })).into_response()
    } else {
        let body = json!({
            "error": format!("not ready: state {}, leader {:?}", status.state, status.leader),
            "code": 503,
        });
        (StatusCode::SERVICE_UNAVAILABLE, Json(body)).into_response()
    }
}
