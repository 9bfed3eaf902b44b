//! The HTTP surface of a node: the public API (`docs/api.md`), cluster
//! administration, and the internal Raft transport, on one axum router.
//!
//! Handlers parse and validate (`input`), check the caller's key (`auth`),
//! call the room and KV operations (`crate::service`) and render the answer
//! (`event_json` for events, serde for the rest). Every error answer is an
//! [`ApiError`].

mod admin;
pub mod auth;
mod command;
mod consumer_ws;
mod consumers;
pub mod error;
pub mod event_json;
pub mod input;
mod internal;
mod kv;
mod metrics;
mod publish_ws;
pub mod stream;
mod subscribe;
mod ui;

use std::sync::Arc;

use axum::extract::{DefaultBodyLimit, State};
use axum::routing::{delete, get, post};
use axum::{Json, Router};
use serde_json::json;

pub use internal::constant_time_eq;

use self::auth::Auth;

use crate::node::Node;
use crate::peer::PeerClient;
use crate::service::{Consumers, Kv, Rooms};
use error::ApiError;

/// Largest body on the internal routes (snapshot chunks, big appends).
const INTERNAL_BODY_LIMIT: usize = 256 * 1024 * 1024;

/// Batch bodies may hold this many maximum-size events.
const MAX_BATCH_FACTOR: usize = 4;

/// What every handler gets.
#[derive(Clone)]
pub struct AppState {
    /// This node.
    pub node: Arc<Node>,
    /// The API keys.
    pub auth: Arc<Auth>,
    /// Room operations.
    pub rooms: Rooms,
    /// KV operations.
    pub kv: Kv,
    /// Durable consumer operations.
    pub consumers: Consumers,
    /// Client for relaying admin requests to the leader.
    pub peers: PeerClient,
}

/// The whole router of a node, with `auth` guarding the public API.
pub fn router(node: Arc<Node>, auth: Arc<Auth>) -> Router {
    let state = AppState {
        node: node.clone(),
        auth,
        rooms: Rooms::new(node.clone()),
        kv: Kv::new(node.clone()),
        consumers: Consumers::new(node.clone()),
        peers: node.peers.clone(),
    };
    // Bodies are read whole and then checked, so that an oversized event
    // gets a JSON error naming the limit rather than a bare 413.
    let public_limit = node.config.max_event_bytes.saturating_mul(MAX_BATCH_FACTOR).max(16 * 1024 * 1024);

    let internal = Router::new()
        .route("/raft/append", post(internal::append))
        .route("/raft/vote", post(internal::vote))
        .route("/raft/snapshot", post(internal::snapshot))
        .route("/raft/forward", post(internal::forward))
        .route("/raft/read-index", post(internal::read_index))
        .layer(axum::middleware::from_fn_with_state(state.clone(), internal::require_member))
        .layer(DefaultBodyLimit::max(INTERNAL_BODY_LIMIT));
    // Asked by nodes finding out whether they are stale: the secret only.
    let introductions = Router::new()
        .route("/raft/identity", post(internal::identity))
        .layer(axum::middleware::from_fn_with_state(state.clone(), internal::require_secret));

    let public = Router::new()
        .route("/health", get(health))
        .route("/ready", get(ready))
        .route("/stream/list", get(stream::list))
        .route(
            "/stream/{room}",
            post(stream::create_room)
                .put(stream::get_or_create_room)
                .patch(stream::update_room)
                .delete(stream::delete_room),
        )
        .route("/stream/{room}/publish", post(stream::publish))
        .route("/stream/{room}/batch", post(stream::batch))
        .route("/stream/{room}/history", get(stream::history))
        .route("/stream/{room}/stats", get(stream::stats))
        .route("/stream/{room}/ws", get(subscribe::ws))
        .route("/stream/{room}/ws/{subscriber_id}", get(subscribe::ws_subscriber))
        .route("/stream/{room}/sse", get(subscribe::sse))
        .route("/stream/{room}/consume/{subscriber_id}", get(stream::consume))
        .route("/stream/{room}/consumers", get(consumers::list))
        .route("/stream/{room}/consumers/{name}", get(consumers::info).put(consumers::put).delete(consumers::delete))
        .route("/stream/{room}/consumers/{name}/fetch", post(consumers::fetch))
        .route("/stream/{room}/consumers/{name}/ack", post(consumers::ack))
        .route("/stream/{room}/consumers/{name}/nak", post(consumers::nak))
        .route("/stream/{room}/consumers/{name}/ws", get(consumer_ws::push_ws))
        .route("/publish/ws", get(publish_ws::publish_ws))
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
        .route("/admin/snapshot", post(admin::snapshot))
        .route("/admin/backup", get(admin::backup))
        .route("/ui", get(ui::index))
        .route("/ui/", get(ui::index))
        .route("/ui/app.js", get(ui::script))
        .route("/ui/app.css", get(ui::style))
        .fallback(not_found)
        .layer(DefaultBodyLimit::max(public_limit));

    public.merge(internal).merge(introductions).with_state(state)
}

async fn not_found() -> ApiError {
    ApiError::not_found("no such endpoint")
}

/// `GET /health`: the process is up and serving, and the protocol it
/// speaks (leaders check it before proposing newer requests).
async fn health(State(app): State<AppState>) -> Json<serde_json::Value> {
    Json(json!({ "status": "ok", "id": app.node.id(), "protocol": crate::command::PROTOCOL }))
}

/// `GET /ready`: a leader is known and this node has applied its log.
async fn ready(State(app): State<AppState>) -> Result<Json<serde_json::Value>, ApiError> {
    let status = app.node.status();
    if app.node.is_ready() {
        Ok(Json(json!({ "ready": true, "id": status.id, "leader": status.leader })))
    } else {
        Err(ApiError::unavailable(format!("not ready: state {}, leader {:?}", status.state, status.leader)))
    }
}
