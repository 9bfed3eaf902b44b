//! The server half of the cluster's internal transport (`/raft/*`):
//! openraft's RPCs, write forwarding and read indexes, all bincode. Guarded
//! by the cluster secret when one is configured.

use std::time::Duration;

use axum::body::Bytes;
use axum::extract::{Request, State};
use axum::http::StatusCode;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use serde::de::DeserializeOwned;
use serde::Serialize;

use super::AppState;
use crate::codec;
use crate::node::forward::ForwardRequest;
use crate::raft::network::SECRET_HEADER;

/// Refuses internal requests that do not carry the cluster secret.
pub async fn require_secret(State(app): State<AppState>, request: Request, next: Next) -> Response {
    if let Some(secret) = &app.node.config.cluster_secret {
        let given = request.headers().get(SECRET_HEADER).map(|v| v.as_bytes()).unwrap_or_default();
        if !constant_time_eq(given, secret.as_bytes()) {
            let body = serde_json::json!({ "error": "missing or wrong cluster secret", "code": 401 });
            return (StatusCode::UNAUTHORIZED, axum::Json(body)).into_response();
        }
    }
    next.run(request).await
}

/// Compares two byte strings in time that depends only on their lengths.
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

fn decode<T: DeserializeOwned>(body: &[u8]) -> Result<T, Box<Response>> {
    codec::decode(body)
        .map_err(|e| Box::new((StatusCode::BAD_REQUEST, format!("undecodable body: {e}")).into_response()))
}

fn encode<T: Serialize>(value: &T) -> Response {
    match codec::encode(value) {
        Ok(bytes) => bytes.into_response(),
        Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()).into_response(),
    }
}

/// `POST /raft/append`
pub async fn append(State(app): State<AppState>, body: Bytes) -> Response {
    match decode(&body) {
        Ok(rpc) => encode(&app.node.raft.append_entries(rpc).await),
        Err(response) => *response,
    }
}

/// `POST /raft/vote`
pub async fn vote(State(app): State<AppState>, body: Bytes) -> Response {
    match decode(&body) {
        Ok(rpc) => encode(&app.node.raft.vote(rpc).await),
        Err(response) => *response,
    }
}

/// `POST /raft/snapshot` (one chunk)
pub async fn snapshot(State(app): State<AppState>, body: Bytes) -> Response {
    match decode(&body) {
        Ok(rpc) => encode(&app.node.raft.install_snapshot(rpc).await),
        Err(response) => *response,
    }
}

/// `POST /raft/forward`: a follower's writes, proposed here if we lead,
/// answered one by one in order.
pub async fn forward(State(app): State<AppState>, body: Bytes) -> Response {
    match decode::<ForwardRequest>(&body) {
        Ok(fwd) => {
            let timeout = Duration::from_millis(fwd.timeout_ms).min(app.node.config.write_timeout);
            // All to the local proposer at once: they land in the same
            // group-commit batch.
            let proposals = fwd.requests.into_iter().map(|r| app.node.propose_forwarded(r, timeout));
            encode(&futures_util::future::join_all(proposals).await)
        }
        Err(response) => *response,
    }
}

/// `POST /raft/read-index`: the leader's linearizable read point.
pub async fn read_index(State(app): State<AppState>) -> Response {
    let answer: Result<u64, String> = app.node.local_read_index().await.map_err(|e| e.to_string());
    encode(&answer)
}
